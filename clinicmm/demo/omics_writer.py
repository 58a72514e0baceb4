"""Synthetic expression (TPM) and mutation (MAF) tables for the demo cohort: they reveal the programme only.

Each gene has a log-normal base level, per-sample noise, a library-size shift and a batch effect (three batches,
per-gene offsets, drawn independently of the type). A sample's programme is a Reactome pathway
(:func:`clinicmm.demo.design.programme_pool`): the patient over-expresses its own random 3-5 genes of the pool and
mutates 0-2 others, so patients of one type share the pathway, not the genes; 10% of tumours show no programme
signal. Background genes come from the shipped Reactome subset, and background mutations (some silent) fall on
them at random, so nothing depends on body site or histology. Rates: the constants below and ``design``'s
docstring.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from clinicmm.demo.design import SYMBOL, CancerType, programme_genes, programme_pool

N_BACKGROUND = 300
UP_GENES = (3, 5)  # each patient over-expresses this many (inclusive) of its programme's pool
UP_LOG2 = (1.5, 2.5)  # ... by this log2 shift
MUTATED_GENES_P = (0.25, 0.60, 0.15)  # P(0, 1, 2 non-silent pool mutations)
QUIET_RATE = 0.10  # tumours without any programme signal
NOISE_LOG2 = 0.8  # per-gene, per-sample noise
BATCHES, BATCH_LOG2 = 3, 0.4  # sequencing batches and their per-gene offsets (sd)
MAF_COLUMNS = (
    "Hugo_Symbol",
    "Entrez_Gene_Id",
    "Tumor_Sample_Barcode",
    "Variant_Classification",
    "Variant_Type",
    "Chromosome",
    "Start_Position",
    "Reference_Allele",
    "Tumor_Seq_Allele2",
    "HGVSp_Short",
)
CHROMOSOME = {  # real chromosomes of the programme genes; others get a stable pseudo-locus
    "BRAF": "7",
    "KRAS": "12",
    "NRAS": "1",
    "EGFR": "7",
    "RET": "10",
    "KEAP1": "19",
    "CUL3": "2",
    "FH": "1",
    "PIK3CA": "3",
    "CDKN2A": "9",
    "ERBB2": "17",
}
HOTSPOTS = {"BRAF": "p.V600E", "KRAS": "p.G12D", "NRAS": "p.Q61K", "EGFR": "p.L858R", "PIK3CA": "p.H1047R"}
AMINO = "ACDEFGHIKLMNPQRSTVWY"
DRIVER_CLASSES = ("Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del")
BACKGROUND_CLASSES = ("Missense_Mutation", "Silent", "Silent", "Nonsense_Mutation")


def reactome_genes() -> list[str]:
    """Sorted human gene symbols of the shipped Reactome subset (GMT: name, id, genes...)."""
    text = (resources.files("clinicmm.knowledge") / "data" / "reactome_subset.gmt").read_text(encoding="utf-8")
    return sorted({g for line in text.splitlines() for g in line.split("\t")[2:] if SYMBOL.match(g)})


def gene_panel(rng: np.random.Generator, n_background: int = N_BACKGROUND) -> tuple[list[str], list[str]]:
    """(all genes sorted, background genes): every programme gene plus ``n_background`` Reactome genes."""
    signal = set(programme_genes())
    pool = [g for g in reactome_genes() if g not in signal]
    background = sorted(rng.choice(pool, size=min(n_background, len(pool)), replace=False).tolist())
    return sorted(signal | set(background)), background


def base_levels(n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """log2 base expression per gene (log-normal TPM around 2^3)."""
    return rng.normal(3.0, 1.8, n_genes)


def batch_offsets(n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """(BATCHES, genes) log2 offsets of each sequencing batch."""
    return rng.normal(0.0, BATCH_LOG2, (BATCHES, n_genes))


@dataclass(frozen=True)
class Alterations:
    """One tumour's programme genes: over-expressed and mutated (both subsets of its programme's pool)."""

    up: tuple[str, ...]
    mutated: tuple[str, ...]


def draw_alterations(ctype: CancerType, rng: np.random.Generator) -> Alterations:
    """The patient's own genes of its programme: 3-5 up, 0-2 others mutated; none for a quiet tumour."""
    quiet = rng.random() < QUIET_RATE
    pool = programme_pool(ctype.programme)
    order = rng.permutation(len(pool))
    n_up = int(rng.integers(UP_GENES[0], UP_GENES[1] + 1))
    n_mut = int(rng.choice(len(MUTATED_GENES_P), p=MUTATED_GENES_P))
    if quiet:
        return Alterations((), ())
    up = tuple(sorted(pool[i] for i in order[:n_up]))
    mutated = tuple(sorted(pool[i] for i in order[n_up : n_up + n_mut]))
    return Alterations(up, mutated)


def expression_row(
    alt: Alterations, genes: list[str], base: np.ndarray, batch: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One sample's TPM values: base + noise + its batch's offsets + library size, its ``up`` genes raised."""
    up = set(alt.up)
    lift = rng.uniform(*UP_LOG2, len(genes))
    shift = np.array([1.0 if g in up else 0.0 for g in genes]) * lift
    log2 = base + batch + rng.normal(0.0, NOISE_LOG2, len(genes)) + shift + rng.normal(0.0, 0.15)  # last: library
    return np.clip(2.0**log2 - 1.0, 0.0, None)


def _locus(gene: str) -> tuple[str, int]:
    h = zlib.crc32(gene.encode())
    return CHROMOSOME.get(gene, str(h % 22 + 1)), 1_000_000 + h % 100_000_000


def _protein_change(gene: str, cls: str, rng: np.random.Generator) -> str:
    pos = int(rng.integers(20, 900))
    ref = AMINO[int(rng.integers(len(AMINO)))]
    if cls == "Missense_Mutation":
        return HOTSPOTS.get(gene) or f"p.{ref}{pos}{AMINO[int(rng.integers(len(AMINO)))]}"
    return {"Nonsense_Mutation": f"p.{ref}{pos}*", "Frame_Shift_Del": f"p.{ref}{pos}fs", "Silent": f"p.{ref}{pos}="}[
        cls
    ]


def _maf_row(sample: str, gene: str, cls: str, rng: np.random.Generator) -> dict[str, str]:
    chrom, start = _locus(gene)
    start += int(rng.integers(0, 5000))
    ref, alt = rng.choice(list("ACGT"), size=2, replace=False).tolist()
    deletion = cls == "Frame_Shift_Del"
    return dict(
        zip(
            MAF_COLUMNS,
            (
                gene,
                "0",
                sample,
                cls,
                "DEL" if deletion else "SNP",
                chrom,
                str(start),
                ref,
                "-" if deletion else alt,
                _protein_change(gene, cls, rng),
            ),
        )
    )


def mutation_rows(
    sample: str, alt: Alterations, background: list[str], rng: np.random.Generator
) -> list[dict[str, str]]:
    """The sample's MAF rows: its programme mutations (non-silent) plus 2–4 background ones."""
    rows = [_maf_row(sample, gene, str(rng.choice(DRIVER_CLASSES, p=[0.7, 0.15, 0.15])), rng) for gene in alt.mutated]
    for gene in rng.choice(background, size=int(rng.integers(2, 5)), replace=False):
        rows.append(_maf_row(sample, str(gene), str(rng.choice(BACKGROUND_CLASSES)), rng))
    return rows


def write_expression(
    path: Path, samples: list[str], matrix: np.ndarray, genes: list[str], duplicate: str | None
) -> None:
    """samples x genes TSV; ``duplicate`` (a gene) is written a second time as the last column, if given."""
    header, values = list(genes), matrix
    if duplicate is not None:
        j = genes.index(duplicate)
        header.append(duplicate)
        values = np.column_stack([matrix, matrix[:, j] * 1.1])
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(["sample_id", *header]) + "\n")
        for sample, row in zip(samples, values):
            fh.write("\t".join([sample, *(f"{v:.3f}" for v in row)]) + "\n")


def write_maf(path: Path, rows: list[dict[str, str]]) -> None:
    """Tab-separated MAF with the :data:`MAF_COLUMNS` header."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MAF_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
