"""The demo cohort's cancer types and what each modality reveals about them.

Six OncoTree types sit on three body sites, three histologies and three molecular programmes, laid out so that
each modality alone tells apart only *pairs* of types, while any two modalities together name the type:

| type | body site (image) | histology (notes) | programme (genomics) |
| ---- | ----------------- | ----------------- | -------------------- |
| LUAD | chest             | adenocarcinoma    | MAPK / RTK           |
| LUSC | chest             | squamous          | NRF2 oxidative stress|
| STAD | abdomen           | adenocarcinoma    | cell cycle / PI3K    |
| KIRP | abdomen           | papillary         | NRF2 oxidative stress|
| HNSC | neck              | squamous          | cell cycle / PI3K    |
| THCA | neck              | papillary         | MAPK / RTK           |

So a single-modality model tops out near half the types, and only fusion can be right on all of them. The
body sites, histologies and programmes are concepts and genes of the shipped knowledge graph; with the demo's own
edges (``data/demo_edges.tsv``: each programme gene ``driver_of`` both types of its programme, invented for this
cohort and never part of ``KnowledgeGraph.default()``; a demo workflow adds them through ``knowledge:``) the
graph's edges carry exactly the links a fused model needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    name: str  # concept name in the knowledge graph
    body_part: str  # DICOM BodyPartExamined (CS, upper case)
    lesion_centre: tuple[float, float, float]  # (z, y, x) as fractions of the volume
    lesion_radius: float  # fraction of the in-plane size
    lesion_hu: float  # lesion attenuation in Hounsfield units
    background_hu: float  # soft tissue around it


@dataclass(frozen=True)
class Programme:
    name: str
    up_genes: tuple[str, ...]  # over-expressed in this programme
    mutated_genes: tuple[str, ...]  # frequently mutated (non-silent) in this programme


@dataclass(frozen=True)
class CancerType:
    code: str  # OncoTree code
    name: str
    site: str  # key of SITES
    histology: str  # concept name of the histology
    programme: str  # key of PROGRAMMES
    site_words: tuple[str, ...]  # organ words a note may mention


SITES: dict[str, Site] = {
    "chest": Site("chest", "CHEST", (0.45, 0.35, 0.30), 0.12, 60.0, -700.0),
    "abdomen": Site("abdomen", "ABDOMEN", (0.55, 0.55, 0.65), 0.16, 20.0, 40.0),
    "neck": Site("neck", "NECK", (0.40, 0.45, 0.50), 0.09, 120.0, 10.0),
}

PROGRAMMES: dict[str, Programme] = {
    "mapk": Programme(
        "MAPK / RTK signalling",
        ("DUSP6", "ETV4", "FOSL1", "MAP2K1", "RET", "EGFR", "BRAF"),
        ("BRAF", "KRAS", "NRAS", "EGFR", "RET"),
    ),
    "nrf2": Programme(
        "NRF2 oxidative stress response",
        ("NQO1", "GCLM", "HMOX1", "TXNRD1", "G6PD", "AKR1C1", "SOX2"),
        ("KEAP1", "CUL3", "FH"),
    ),
    "cellcycle": Programme(
        "cell cycle / PI3K",
        ("CCND1", "CDK6", "CDK4", "E2F1", "CCNE1", "MYC", "ERBB2"),
        ("PIK3CA", "CDKN2A", "ERBB2"),
    ),
}

CANCER_TYPES: tuple[CancerType, ...] = (
    CancerType("LUAD", "Lung Adenocarcinoma", "chest", "adenocarcinoma", "mapk", ("lung", "right upper lobe")),
    CancerType(
        "LUSC", "Lung Squamous Cell Carcinoma", "chest", "squamous cell carcinoma", "nrf2", ("lung", "bronchus")
    ),
    CancerType(
        "STAD", "Stomach Adenocarcinoma", "abdomen", "adenocarcinoma", "cellcycle", ("stomach", "gastric antrum")
    ),
    CancerType(
        "KIRP", "Papillary Renal Cell Carcinoma", "abdomen", "papillary carcinoma", "nrf2", ("kidney", "renal cortex")
    ),
    CancerType(
        "HNSC",
        "Head and Neck Squamous Cell Carcinoma",
        "neck",
        "squamous cell carcinoma",
        "cellcycle",
        ("larynx", "oral cavity"),
    ),
    CancerType("THCA", "Papillary Thyroid Cancer", "neck", "papillary carcinoma", "mapk", ("thyroid", "thyroid lobe")),
)

TYPE_BY_CODE: dict[str, CancerType] = {t.code: t for t in CANCER_TYPES}
HISTOLOGIES: tuple[str, ...] = ("adenocarcinoma", "squamous cell carcinoma", "papillary carcinoma")


def programme_genes() -> list[str]:
    """Every gene a programme over-expresses or mutates, sorted."""
    genes = {g for p in PROGRAMMES.values() for g in (*p.up_genes, *p.mutated_genes)}
    return sorted(genes)
