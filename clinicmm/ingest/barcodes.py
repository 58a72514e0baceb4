"""TCGA barcodes: the sample type in a sample id, for choosing one tumour sample per patient."""

from __future__ import annotations

import re

# TCGA barcodes carry the sample type in their fourth field (TCGA-AB-1234-01A...): 01-09 and 40 tumour, 10-19 normal
# tissue, others controls, cell lines and xenografts (the GDC's sample type codes)
TCGA_SAMPLE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-(\d{2})", re.IGNORECASE)


def sample_type(sample_id: str) -> tuple[int, int] | None:
    """``(group, code)`` of a TCGA barcode (group 0 tumour, 1 normal tissue, 2 other); None for any other id."""
    match = TCGA_SAMPLE.match(sample_id)
    if match is None:
        return None
    code = int(match.group(1))
    return (0 if 1 <= code <= 9 or code == 40 else 1 if 10 <= code <= 19 else 2), code


def type_words(kind: tuple[int, int]) -> str:
    return f"{('tumour', 'normal-tissue', 'non-tumour')[kind[0]]} sample (TCGA sample type {kind[1]:02d})"


def type_rank(sample_id: str) -> tuple[int, int]:
    """Sort key choosing a patient's sample: the lowest TCGA sample type first (a primary tumour before its
    metastasis, a tumour before its normal tissue); an id that is no TCGA barcode ranks as a tumour."""
    return sample_type(sample_id) or (0, 0)
