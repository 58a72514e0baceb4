"""The demo cohort's generative story: six cancer types, what each modality reveals, and how it goes missing.

Six OncoTree types sit on three body sites, three histologies and three molecular programmes. Each modality,
read perfectly, separates only *pairs* of types; read as written it is also noisy, sparse or missing:

| type | share | body site (image) | histology (notes) | programme (genomics: Reactome pathway) |
| ---- | ----- | ----------------- | ----------------- | -------------------------------------- |
| LUAD | 0.21  | chest             | adenocarcinoma    | MAPK: Signalling to ERKs (R-HSA-187687) |
| LUSC | 0.20  | chest             | squamous          | NRF2: Glutathione conjugation (R-HSA-156590) |
| STAD | 0.18  | abdomen           | adenocarcinoma    | cell cycle: G0 and Early G1 (R-HSA-1538133) |
| KIRP | 0.06  | abdomen           | papillary         | NRF2: Glutathione conjugation |
| HNSC | 0.18  | neck              | squamous          | cell cycle: G0 and Early G1 |
| THCA | 0.17  | neck              | papillary         | MAPK: Signalling to ERKs |

KIRP is the rare type (``TYPE_SHARES``: about 6% of the cohort, counts fixed by largest remainder).

**Genomics** (``omics_writer``). A programme is a real Reactome pathway of the shipped subset
(``clinicmm/knowledge/data/reactome_subset.gmt``); its *gene pool* is the pathway's genes that no other
programme's pathway holds (27-37 genes). Tumours of one programme deregulate the same pathway through different
genes: each patient over-expresses its own random 3-5 pool genes (log2 +1.5..2.5) and carries a non-silent
mutation in 0-2 other pool genes (60%: one, 15%: two); 10% of tumours are "quiet" (no programme signal at all).
So a per-gene model sees sparse, patient-specific signals, while pathway membership is shared: knowing which
genes belong together (the knowledge graph's pathway and ``driver_of`` edges) is what pools them. Every sample
also has per-gene noise (sd 0.8 log2), a library-size shift, and a batch effect: one of three sequencing batches,
drawn independently of the type, adds its own per-gene offsets (sd 0.4 log2). Background genes are 300 other
Reactome genes with 2-4 random background mutations (some silent).

**Notes** (``notes_writer``). 1-3 notes per patient. A pathology report is written for 70% of them; its FINAL
DIAGNOSIS names the histology for 55%, hedges it for 25% ("suspicious for", "cannot be excluded": hypothetical
mentions the graph linker does not link) and omits it for 20% ("carcinoma, see comment"). The microscopy
description is typical of the histology for half of the reports, generic otherwise. Radiology and consult notes
restate the histology 30% of the time. 30% of patients have a negated mention of another histology, 25% a
family-history or rule-out phrase; organ words appear for 15%.

**Imaging** (``dicom_writer``). A CT volume whose anatomy shows the body site (lungs, liver, airway and spine) and a
faint lesion (about half the contrast of before, absent in 15%) with stronger noise (sd 35 HU). The site is only
in the pixels: ``BodyPartExamined`` is not written, so the image node links to no body-site concept through a
header that would hand the site to every model.

**Missingness** (``generator.plan_cohort``). ``missing_rate`` of the patients lack exactly one modality (the
modality cycled) and ``single_rate`` (default: the same share) have one modality only (the kept one cycled); the
CLI default of 0.15 gives 15% + 15% = 30% incomplete patients, each modality absent for about 15%.

Why: in a real cohort no single modality is complete or clean, programmes are read through different genes in
different tumours, and some types are rare. With the old demo any two modalities named the type and every model
scored ~1.0; this story leaves room for fusion and for prior knowledge to matter without designing the answer.
The demo's own edges (``data/demo_edges.tsv``: every pool gene ``driver_of`` both types of its programme,
invented for this cohort and never part of ``KnowledgeGraph.default()``; a demo workflow adds them through
``knowledge:``) are ``demo_edges_rows()``; a test checks that the shipped file matches them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Site:
    name: str  # concept name in the knowledge graph
    lesion_centre: tuple[float, float, float]  # (z, y, x) as fractions of the volume
    lesion_radius: float  # fraction of the in-plane size
    lesion_hu: float  # lesion attenuation in Hounsfield units (before the demo's contrast reduction)
    background_hu: float  # soft tissue around it


@dataclass(frozen=True)
class Programme:
    name: str
    pathway: str  # Reactome stable id in the shipped subset GMT
    pathway_name: str


@dataclass(frozen=True)
class CancerType:
    code: str  # OncoTree code
    name: str
    site: str  # key of SITES
    histology: str  # concept name of the histology
    programme: str  # key of PROGRAMMES
    site_words: tuple[str, ...]  # organ words a note may mention


SITES: dict[str, Site] = {
    "chest": Site("chest", (0.45, 0.35, 0.30), 0.12, 60.0, -700.0),
    "abdomen": Site("abdomen", (0.55, 0.55, 0.65), 0.16, 20.0, 40.0),
    "neck": Site("neck", (0.40, 0.45, 0.50), 0.09, 120.0, 10.0),
}

PROGRAMMES: dict[str, Programme] = {
    "mapk": Programme("MAPK / RTK signalling", "R-HSA-187687", "Signalling to ERKs"),
    "nrf2": Programme("NRF2 oxidative stress response", "R-HSA-156590", "Glutathione conjugation"),
    "cellcycle": Programme("cell cycle", "R-HSA-1538133", "G0 and Early G1"),
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
TYPE_SHARES: dict[str, float] = {"LUAD": 0.21, "LUSC": 0.20, "STAD": 0.18, "KIRP": 0.06, "HNSC": 0.18, "THCA": 0.17}
RARE_TYPE = "KIRP"

TYPE_BY_CODE: dict[str, CancerType] = {t.code: t for t in CANCER_TYPES}
HISTOLOGIES: tuple[str, ...] = ("adenocarcinoma", "squamous cell carcinoma", "papillary carcinoma")
SYMBOL = re.compile(r"^[A-Z][A-Z0-9-]*$")  # HGNC-like; skips entries such as '5S rRNA' or 'POU5F1 (OCT4)'
EDGE_SOURCE = "clinicmm demo programme"


@cache
def reactome_sets() -> dict[str, tuple[str, ...]]:
    """Reactome id -> sorted gene symbols of the shipped subset GMT (name, id, genes...)."""
    text = (resources.files("clinicmm.knowledge") / "data" / "reactome_subset.gmt").read_text(encoding="utf-8")
    sets = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) > 2:
            sets[fields[1]] = tuple(sorted({g for g in fields[2:] if SYMBOL.match(g)}))
    return sets


@cache
def programme_pool(key: str) -> tuple[str, ...]:
    """The programme's genes: its pathway's genes that no other programme's pathway holds, sorted."""
    sets = reactome_sets()
    others = {g for k, p in PROGRAMMES.items() if k != key for g in sets[p.pathway]}
    return tuple(g for g in sets[PROGRAMMES[key].pathway] if g not in others)


def programme_genes() -> list[str]:
    """Every gene of every programme's pool, sorted."""
    return sorted({g for key in PROGRAMMES for g in programme_pool(key)})


def demo_edges_rows() -> list[tuple[str, str]]:
    """(gene, cancer type) ``driver_of`` pairs: every pool gene to both types of its programme."""
    return [
        (gene, t.code) for key in PROGRAMMES for gene in programme_pool(key) for t in CANCER_TYPES if t.programme == key
    ]
