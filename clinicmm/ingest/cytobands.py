"""Cytogenetic bands: which genes a copy-number feature named by a chromosome arm or band covers.

Copy number often comes by region rather than by gene: arm-level calls (``1p``, ``8q``: TCGA's aneuploidy
tables, GISTIC's broad results) or focal bands (``8q24.21``, GISTIC's peaks). A feature so named covers every gene
whose cytogenetic location lies inside it, and the band nomenclature is a hierarchy read left to right —
chromosome, arm, region, band, sub-band (``17q21.31`` lies in ``17q21.3``, ``17q21``, ``17q2`` and ``17q``) — so
"inside" is a prefix of the location after the arm. Names read: ``8q``, ``chr8q``, ``8q24``, ``8q24.21``, ``Xp``
(case of ``chr`` ignored); a whole chromosome (``8``) or a range (``8q22-q24``) is not read, so it links no gene.

The genes' locations are HGNC's (CC0), shipped as ``data/gene_locations.tsv.gz`` (37,975 approved symbols; see
``data/SOURCES.md``). A gene whose location is a range (``1p36.33-p36.32``) counts in the band it starts in; one
on both sex chromosomes' pseudo-autosomal regions (``Xp22.33 and Yp11.2``) in both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache
from importlib import resources

import pandas as pd

SHIPPED_LOCATIONS = "gene_locations.tsv.gz"
# chromosome, arm, then region / band / sub-band digits (17q21.31); a feature name may start with "chr"
BAND = re.compile(r"^(?:chr)?(?P<chromosome>[1-9]|1\d|2[0-2]|X|Y)(?P<arm>[pq])(?P<band>\d+(?:\.\d+)?)?$", re.IGNORECASE)


def parse_band(name: str) -> tuple[str, str, str] | None:
    """``(chromosome, arm, band)`` of an arm or band name (``("8", "q", "24.21")``, ``("1", "p", "")``); None
    for anything else, a gene symbol included (symbols never end in p/q plus digits after a chromosome number)."""
    match = BAND.match(str(name).strip())
    if match is None:
        return None
    return match["chromosome"].upper(), match["arm"].lower(), match["band"] or ""


class GeneLocations:
    """Approved symbol -> cytogenetic location, indexed by chromosome arm for :meth:`genes_in`."""

    def __init__(self, table: pd.DataFrame) -> None:
        self._arms: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for symbol, location in zip(table["symbol"], table["location"]):
            for part in str(location).split(" and "):  # pseudo-autosomal genes: "Xp22.33 and Yp11.2"
                band = parse_band(re.split(r"[-\s]", part.strip(), maxsplit=1)[0])  # a range starts its band
                if band is not None:
                    self._arms[band[:2]].append((band[2], str(symbol)))

    @classmethod
    def shipped(cls) -> GeneLocations:
        """The locations shipped with clinicmm (read once per process)."""
        return _shipped()

    def genes_in(self, name: str) -> list[str]:
        """The symbols located inside the arm or band ``name`` (sorted); [] when the name is none."""
        band = parse_band(name)
        if band is None:
            return []
        chromosome, arm, prefix = band
        return sorted({s for b, s in self._arms.get((chromosome, arm), ()) if b.startswith(prefix)})


@lru_cache(maxsize=1)
def _shipped() -> GeneLocations:
    source = resources.files("clinicmm.ingest") / "data" / SHIPPED_LOCATIONS
    with resources.as_file(source) as path:
        return GeneLocations(pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False))
