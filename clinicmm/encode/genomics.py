"""Turn expression and mutation tables into per-patient feature vectors and graph evidence.

:class:`GenomicsPreprocessor` works like a scikit-learn transformer: ``fit`` learns everything from the training
patients only (per-gene mean and std of the log expression, which genes are recurrently mutated), and
``features`` / ``evidence`` apply what was learnt to any split, so nothing about validation or test patients
leaks into the model.

Inputs:

* ``matrix``: expression, **indexed by patient_id** (one row per patient), columns gene symbols, raw values in
  the dataset's unit. :func:`clinicmm.ingest.genomics.expression_by_patient` turns the reader's sample-indexed
  matrix into this shape.
* ``mutations``: the frame of :func:`clinicmm.ingest.genomics.read_mutations` (columns ``patient_id``, ``gene``,
  ``non_silent`` and optionally ``variant_class`` and ``status``; only ``ok`` rows are used).

The evidence rule (``encoders.genomics`` in the workflow, :class:`clinicmm.config.GenomicsEncoderSpec`): a
patient's omics node links to every gene with a mutation of a counted class (``mutation_classes``, default the
non-silent MAF classes; a row without a class, as the registered model's ``mutations`` column gives, counts when
flagged ``non_silent``), then to at most ``max_genes`` genes whose |z| against the train split exceeds
``z_threshold``, largest first (up and down alike).

Linking to the graph: given the graph's gene names (:class:`clinicmm.encode.featurizer.Featurizer` passes them),
only features that name a graph gene compete for the ``max_genes`` budget, so a table whose strongest columns are
methylation probes or miRNAs the graph lacks still links its patients to graph genes. :func:`feature_gene` turns a
column name into a gene symbol by these rules, tried in order:

1. ``meth_<SYMBOL>`` (gene-level methylation, as TCGA / MOGONET tables name it) -> ``<SYMBOL>``;
2. a miRNA name (``hsa-mir-21``, ``hsa-miR-21-5p``, ``mir-155``, ``hsa-let-7a-1``, ``hsa-mir-181a-1``,
   ``hsa-mir-1-2``) -> its HGNC MIR gene symbol (``MIR21``, ``MIR21``, ``MIR155``, ``MIRLET7A1``,
   ``MIR181A1``, ``MIR1-2``): ``MIR`` (``MIRLET7`` for let-7) + the number and letter upper-cased, then the
   copy number, joined by ``-`` when the name has no letter. A mature name (``-5p``/``-3p``) gives the gene
   without copy number, so a mature miRNA made by several genes (``hsa-miR-181a-5p`` -> ``MIR181A``) names no
   gene and does not link;
3. any other name is taken as a gene symbol as it is.

The symbol links when it is a graph gene; else, with ``harmonize``, its current HGNC symbol (shipped table; for a
miRNA the rules do not spell as HGNC now does, such as ``hsa-mir-103-1`` -> ``MIR103A1``, the one HGNC lists the
name under) when that is a graph gene. A name HGNC does not know may be an RPPA antibody as MD Anderson's core,
TCPA and UCSC Xena name them (``Akt_pS473``, ``4E-BP1_pT37_T46-R-V``, ``Bcl-2``, ``c-Myc``): its protein part,
before the modified sites and the validation code, is looked up as written, without hyphens, then upper-cased
(:func:`antibody_spellings`; never a protein mass such as ``p27``, which upper-cased is another gene's alias).
Each feature is counted (:meth:`GenomicsPreprocessor.link_counts`) as ``linked``,
``not_in_graph`` (an HGNC gene the graph lacks) or ``unmapped`` (no rule gives an HGNC gene: an unknown or
ambiguous name, a mature miRNA of several genes), per layer: ``meth``, ``mirna`` (miRNA names and HGNC MIR
symbols, which ingest harmonisation gives), ``plain`` (the rest). Several features of one gene (its mRNA and its
``meth_`` column) give one link, ranked by the strongest.

Gene names: with ``harmonize`` (the dataset's ``genomics.genes.harmonize``) a name the model does not know is
looked up in the shipped HGNC table when applied, so a new patient's ``ENSG…`` ids or previous symbols still
meet the current symbols the model was fitted on.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clinicmm.config import NON_SILENT_CLASSES, GenomicsEncoderSpec
from clinicmm.errors import ModelError
from clinicmm.keys import Col, Status

LOG_UNITS = ("counts", "tpm", "fpkm")  # transformed with log2(x + 1)
AS_IS_UNITS = ("log", "normalized")
FORMAT_VERSION = 1
# how omics features become graph links (only graph genes compete for the budget; meth_ / miRNA names mapped;
# 3: arm / band columns of features: cytoband layers are regions): part of the encode stage's settings, so
# encodings made by an earlier rule are recomputed
EVIDENCE_VERSION = 4  # 4: RPPA antibody names link through their protein part (antibody_spellings)

METH_PREFIX = "meth_"
# hsa-mir-21, hsa-miR-21-5p, mir-155, hsa-mir-181a-1, hsa-mir-1-2, hsa-let-7a-1, hsa-miR-17* (case-insensitive)
MIRNA_NAME = re.compile(
    r"^(?:hsa-)?(?:mir-(?P<number>\d+)(?P<letter>[a-z]{0,2})|let-7(?P<let>[a-z]))"
    r"(?:-(?P<copy>\d+))?(?:-(?P<arm>[35]p))?\*?$",
    re.IGNORECASE,
)
# HGNC miRNA gene symbols (MIR21, MIR1-2, MIR181A1, MIRLET7A1); not the host genes (MIR17HG)
MIRNA_SYMBOL = re.compile(r"^MIR(?:LET7[A-Z]\d*|\d+(?!HG$)[A-Z]{0,2}(?:\d+|-\d+)?)$")
LINKED, NOT_IN_GRAPH, UNMAPPED = "linked", "not_in_graph", "unmapped"
# a copy-number arm or band (8q, 8q24.21): no single gene, so no per-patient link, but pooled over the genes it
# covers by the gene-set models (clinicmm.ingest.cytobands, :func:`feature_genes`)
REGION = "region"
LAYERS = ("plain", "meth", "mirna")  # layers of the columns of one expression table; genomics.layers add theirs
LAYER_SEPARATOR = ":"  # the columns of genomics.layers are "<layer>:<feature>" (clinicmm.ingest.genomics)
LAYER_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,31}:")
# an RPPA antibody: its protein, then the modified sites (pS473, T46, cleavedD198, Lys40), then the RPPA core's
# validation code (-R-V: rabbit, validated; -M-C: mouse, caution; ...)
ANTIBODY_VALIDATION = re.compile(r"-[RMG]-[VCE]$")
ANTIBODY_SITE = re.compile(r"^(?:p?[STYK]\d+|cleaved\w*|Lys\d+)$", re.IGNORECASE)
PROTEIN_MASS = re.compile(r"^p\d", re.IGNORECASE)  # p21, p27, p38, p70S6K: never upper-cased into a symbol


def log_counts(values):
    """log2(x + 1) of counts-like values (an array or a frame), negatives clipped to 0 (the transform of the units
    in :data:`LOG_UNITS`)."""
    return np.log2(np.clip(values, 0.0, None) + 1.0)


def feature_gene(name: str) -> str | None:
    """The gene symbol a feature column names, by the rules of the module docstring; None when it names none.

    ``meth_TP53`` -> ``TP53``; ``hsa-mir-21`` / ``hsa-miR-21-5p`` / ``mir-21`` -> ``MIR21``; ``hsa-let-7a-1`` ->
    ``MIRLET7A1``; ``hsa-mir-181a-1`` -> ``MIR181A1``; ``hsa-mir-1-2`` -> ``MIR1-2``; ``TP53`` -> ``TP53``.
    Whether the symbol is a gene at all (or a graph gene) is for the caller to check.
    """
    name = _unprefixed(name)
    if name[: len(METH_PREFIX)].lower() == METH_PREFIX:
        name = name[len(METH_PREFIX) :].strip()
        return name or None
    if match := MIRNA_NAME.match(name):
        if match["let"]:
            stem, separate = f"MIRLET7{match['let'].upper()}", False
        else:
            stem, separate = f"MIR{match['number']}{match['letter'].upper()}", not match["letter"]
        copy = match["copy"]
        return stem if not copy else f"{stem}-{copy}" if separate else f"{stem}{copy}"
    if name.lower().startswith(("hsa-", "mir-", "let-")):
        return None  # a miRNA-like name the rules do not read (hsa-mir-103-2-as): no guessing
    return name or None


def _unprefixed(name: str) -> str:
    """The feature without its ``<layer>:`` prefix (``genomics.layers`` columns)."""
    name = str(name).strip()
    return name.split(LAYER_SEPARATOR, 1)[1].strip() if LAYER_PREFIX.match(name) else name


def feature_layer(name: str) -> str:
    """The ``genomics.layers`` name of a ``<layer>:<feature>`` column; else ``meth`` (``meth_…``), ``mirna`` (a
    miRNA name or an HGNC MIR symbol) or ``plain``: for the link counts."""
    name = str(name).strip()
    if LAYER_PREFIX.match(name):
        return name.split(LAYER_SEPARATOR, 1)[0]
    if name[: len(METH_PREFIX)].lower() == METH_PREFIX:
        return "meth"
    if MIRNA_NAME.match(name) or MIRNA_SYMBOL.match(name) or name.lower().startswith(("hsa-", "mir-", "let-")):
        return "mirna"
    return "plain"


def link_gene(
    name: str, graph_genes: Collection[str], harmonize: bool = False, regions: Collection[str] = ()
) -> tuple[str | None, str]:
    """``(graph gene, "linked")``, ``(None, "not_in_graph")`` or ``(None, "unmapped")`` for one feature name.

    The symbol of :func:`feature_gene` links when it is in ``graph_genes``; with ``harmonize``, also when its
    current HGNC symbol is (or, failing that, the name's own: HGNC lists miRBase precursor names as aliases, so a
    renamed miRNA such as ``hsa-mir-103-1`` still finds ``MIR103A1``). It counts as not in the graph when HGNC
    knows it as a gene, else as unmapped.
    """
    if is_region(name, regions):
        return None, REGION
    symbol = feature_gene(name)
    if symbol is None:
        return None, UNMAPPED
    if symbol in graph_genes:
        return symbol, LINKED
    from clinicmm.ingest.gene_names import GeneHarmonizer

    hgnc = GeneHarmonizer.shipped()  # read once per process, on the first name that is no graph gene
    bare = _unprefixed(name)
    current = hgnc.resolve(symbol)[0] or (hgnc.resolve(bare)[0] if bare != symbol else None)
    if current is not None and MIRNA_NAME.match(bare) and not MIRNA_SYMBOL.match(current):
        current = None  # a miRNA is a MIR gene or nothing (HGNC lists "MIR1" as an alias of FSD1)
    # an RPPA antibody (a GENE|antibody pair is resolve's own; a miRNA-like name is never one)
    antibody = "|" not in bare and not bare.lower().startswith(("hsa-", "mir-", "let-"))
    if current is None and antibody:
        current = next((g for g in (hgnc.resolve(s)[0] for s in antibody_spellings(bare)) if g), None)
    if current is None:
        return None, UNMAPPED
    if harmonize and current in graph_genes:
        return current, LINKED
    return None, NOT_IN_GRAPH


def antibody_spellings(name: str) -> list[str]:
    """The spellings to look up for an RPPA antibody ``name``, in order: its protein part (the name before its
    modified sites and validation code: ``Akt_pS473-R-V`` -> ``Akt``, ``4E-BP1_pT37_T46`` -> ``4E-BP1``,
    ``Cyclin_B1`` stays), without hyphens (``Bcl-2`` -> ``Bcl2``), upper-cased (``AKT``, ``BCL2``), and without
    underscores upper-cased (``CYCLINB1``); a protein mass (``p27``) only as written and without hyphens, since
    upper-cased it is another gene's alias (``P27``: IFI27). Empty for a name with nothing left."""
    tokens = ANTIBODY_VALIDATION.sub("", str(name).strip()).split("_")
    kept: list[str] = []
    for token in tokens:
        if kept and ANTIBODY_SITE.match(token):
            break
        kept.append(token)
    protein = "_".join(kept).strip()
    if not protein:
        return []
    spellings = [protein, protein.replace("-", "")]
    if not PROTEIN_MASS.match(protein):
        spellings += [protein.upper(), protein.replace("-", "").upper(), protein.replace("_", "").upper()]
    return list(dict.fromkeys(s for s in spellings if s))


def is_region(name: str, regions: Collection[str]) -> bool:
    """Whether ``name`` is an arm or band column (``cnv:8q``) of one of the ``regions`` layers (``features:
    cytoband``); a column of any other layer, or without a layer, is read as a gene name."""
    if not regions:  # the usual case: no cytoband layer
        return False
    from clinicmm.ingest.cytobands import parse_band

    name = str(name).strip()
    return (
        bool(LAYER_PREFIX.match(name)) and feature_layer(name) in regions and parse_band(_unprefixed(name)) is not None
    )


def feature_genes(
    name: str, graph_genes: Collection[str], harmonize: bool = False, regions: Collection[str] = ()
) -> list[str]:
    """The graph genes one feature stands for: its gene (:func:`link_gene`), or for an arm or band column of a
    ``regions`` layer (``cnv:8q``, ``cnv:8q24.21``) every graph gene located inside it (HGNC's locations,
    :mod:`clinicmm.ingest.cytobands`); [] for none."""
    gene, how = link_gene(name, graph_genes, harmonize, regions)
    if how != REGION:
        return [gene] if gene is not None else []
    from clinicmm.ingest.cytobands import GeneLocations

    return [g for g in GeneLocations.shipped().genes_in(_unprefixed(name)) if g in graph_genes]


class GenomicsPreprocessor:
    """Z-scored log expression of the train genes plus 0/1 flags of recurrently mutated genes.

    Args:
        unit: unit of the expression values (``genomics.expression.unit``): counts/tpm/fpkm get log2(x+1),
            log/normalized are used as they are.
        z_threshold: |z| above which a gene counts as strongly changed in :meth:`evidence`.
        max_genes: at most this many strongly changed genes per patient in :meth:`evidence`.
        min_mutated: a gene becomes a mutation feature when at least this many training patients carry a
            counted mutation in it.
        mutation_classes: MAF Variant_Classification values that count (case-insensitive); default non-silent.
        max_features: keep only this many expression genes, the most variable (std of the log values) on the
            training rows; None keeps every gene that varies.
        harmonize: map gene names the model does not know through the shipped HGNC table when applied.
        impute_components: a value a patient lacks in a layer they were measured on (a feature their panel did
            not measure, an empty cell) becomes its expected value given the patient's measured features under a
            probabilistic PCA of the training z-scores with this many components (:meth:`impute`); 0 gives the
            training mean, as does a layer the patient lacks altogether. The fit keeps the loadings and the noise
            variance, no patient row.
    """

    def __init__(
        self, unit: str, z_threshold: float = 2.0, max_genes: int = 25, min_mutated: int = 2,
        mutation_classes: Sequence[str] | None = None, max_features: int | None = None, harmonize: bool = False,
        layer_units: dict[str, str] | None = None, impute_components: int = 32,
        region_layers: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        if unit not in LOG_UNITS + AS_IS_UNITS:
            raise ModelError(f"unknown expression unit {unit!r}; valid units: {', '.join(LOG_UNITS + AS_IS_UNITS)}")
        self.unit = unit
        self.z_threshold = float(z_threshold)
        self.max_genes = int(max_genes)
        self.min_mutated = int(min_mutated)
        self.mutation_classes = sorted(mutation_classes if mutation_classes is not None else NON_SILENT_CLASSES)
        self.max_features = None if max_features is None else int(max_features)
        self.harmonize = bool(harmonize)
        self.layer_units = dict(layer_units or {})
        self.region_layers = sorted(set(region_layers or ()))  # layers of arm / band columns (features: cytoband)
        for layer, layer_unit in self.layer_units.items():
            if layer_unit not in LOG_UNITS + AS_IS_UNITS:
                raise ModelError(f"genomics layer {layer!r}: unknown unit {layer_unit!r}")
        self._genes: list[str] | None = None
        self._mean = np.zeros(0)
        self._std = np.ones(0)
        self._mutation_genes: list[str] = []
        self.impute_components = int(impute_components)
        self._loadings = np.zeros((0, 0))  # features x components of the probabilistic PCA (none: mean imputation)
        self._noise = 1.0
        self._plan: tuple[list[str], np.ndarray, list[np.ndarray]] | None = None  # see _gene_plan

    @classmethod
    def from_spec(
        cls, unit: str, spec: GenomicsEncoderSpec, harmonize: bool = False, layer_units: dict[str, str] | None = None,
        region_layers: Sequence[str] | None = None,
    ) -> GenomicsPreprocessor:  # fmt: skip
        """An unfitted preprocessor with the workflow's evidence rule (``encoders.genomics``)."""
        return cls(unit, spec.z_threshold, spec.max_genes_per_patient, spec.min_mutated,
                   spec.mutation_classes, spec.max_features, harmonize, layer_units,
                   spec.impute_components, region_layers)  # fmt: skip

    # ------------------------------------------------------------------------------------------- fitting

    def fit(
        self, matrix: pd.DataFrame | None, mutations: pd.DataFrame | None, patients: Sequence[str] | None = None
    ) -> GenomicsPreprocessor:
        """Learn gene statistics and mutation genes from the training data.

        ``patients``: the training patients; when given, rows of ``matrix`` and ``mutations`` of other patients
        are ignored (pass it when the tables hold every split). Genes with zero variance (or no values) on the
        training rows are dropped.
        """
        if matrix is None and mutations is None:
            raise ModelError("GenomicsPreprocessor.fit needs an expression matrix, a mutation table or both")
        keep = None if patients is None else set(patients)
        self._fit_expression(matrix, keep)
        self._fit_mutations(mutations, keep)
        return self

    def _fit_expression(self, matrix: pd.DataFrame | None, keep: set[str] | None) -> None:
        if matrix is None:
            self._genes, self._mean, self._std = [], np.zeros(0), np.ones(0)
            self._loadings = np.zeros((0, 0))
            return
        _check_unique(matrix)
        train = matrix if keep is None else matrix[matrix.index.isin(keep)]
        logged = self._log(train)
        mean = logged.mean(axis=0, skipna=True)
        std = logged.std(axis=0, ddof=0, skipna=True)
        varies = (std > 0).to_numpy() & np.isfinite(std.to_numpy())
        if self.max_features is not None and varies.sum() > self.max_features:
            spread = np.where(varies, std.to_numpy(dtype=float), -np.inf)
            top = np.argsort(-spread, kind="stable")[: self.max_features]
            varies = np.zeros_like(varies)
            varies[top] = True  # file order kept among the chosen genes
        self._genes = [str(g) for g in logged.columns[varies]]
        self._mean = mean.to_numpy(dtype=float)[varies]
        self._std = std.to_numpy(dtype=float)[varies]
        self._fit_imputer((logged.to_numpy(dtype=float)[:, varies] - self._mean) / self._std)

    def _fit_imputer(self, z: np.ndarray) -> None:
        """Probabilistic PCA (Tipping & Bishop 1999) of the training z-scores: the loadings ``W`` (features x
        components) and the noise variance of the maximum-likelihood fit. Rows without any value are left out and
        the training rows' own gaps count as the mean (0), the usual first step of PCA imputation (refitting on
        the refilled gaps, iterative PCA, was measured and overfits here: see benchmarks/README.md)."""
        z = z[np.isfinite(z).any(axis=1)]
        n, p = z.shape
        rank = min(self.impute_components, n - 1, p - 1)
        if rank < 1:
            self._loadings, self._noise = np.zeros((p, 0)), 1.0
            return
        _, s, vt = np.linalg.svd(np.nan_to_num(z, nan=0.0), full_matrices=False)
        variance = s**2 / n  # eigenvalues of the covariance (ddof 0, as the z-scores' std)
        noise = max(float(np.sum(variance[rank:])) / (p - rank), 1e-6)  # the discarded eigenvalues, zeros included
        self._loadings = vt[:rank].T * np.sqrt(np.clip(variance[:rank] - noise, 0.0, None))
        self._noise = noise

    def _fit_mutations(self, mutations: pd.DataFrame | None, keep: set[str] | None) -> None:
        if mutations is None:
            self._mutation_genes = []
            return
        hits = self._counted(mutations)
        if keep is not None:
            hits = hits[hits[Col.PATIENT].isin(keep)]
        per_gene = hits.drop_duplicates([Col.PATIENT, "gene"])["gene"].value_counts()
        self._mutation_genes = sorted(str(g) for g in per_gene[per_gene >= self.min_mutated].index)

    # ----------------------------------------------------------------------------------------- applying

    @property
    def genes(self) -> list[str]:
        """Expression genes, in feature order (the mutation genes follow them in :meth:`features`)."""
        return list(self._fitted_genes())

    @property
    def mutation_genes(self) -> list[str]:
        self._fitted_genes()
        return list(self._mutation_genes)

    @property
    def dim(self) -> int:
        return len(self._fitted_genes()) + len(self._mutation_genes)

    def features(
        self, matrix: pd.DataFrame | None, mutations: pd.DataFrame | None, patients: Sequence[str]
    ) -> np.ndarray:
        """``(len(patients), dim)`` float32: z-scores of :attr:`genes`, then 0/1 non-silent mutation flags.

        A gene missing from ``matrix``, a missing value, or a patient without an expression row gives 0 (the
        training mean); a patient without mutation rows gets all-zero flags.
        """
        z = self.zscores(matrix, patients).to_numpy()
        flags = np.zeros((len(patients), len(self._mutation_genes)))
        if mutations is not None and self._mutation_genes:
            mutated = self._mutated_sets(mutations)
            for i, patient in enumerate(patients):
                flags[i] = [gene in mutated.get(patient, ()) for gene in self._mutation_genes]
        return np.concatenate([z, flags], axis=1).astype(np.float32)

    def zscores(self, matrix: pd.DataFrame | None, patients: Sequence[str], impute: bool = True) -> pd.DataFrame:
        """Patients x :attr:`genes` z-scores against the training statistics.

        A value the patient lacks is, with ``impute`` and a fitted imputer, its expected value given the patient's
        measured features where :meth:`impute` fills it; else (a whole layer missing, no measured feature) 0, the
        training mean."""
        genes = self._fitted_genes()
        if matrix is None or not genes:
            return pd.DataFrame(0.0, index=pd.Index(list(patients), dtype=object), columns=genes)
        z = self._raw_z(matrix, patients)
        z = self.impute(z) if impute else z
        return pd.DataFrame(np.nan_to_num(z, nan=0.0), index=pd.Index(list(patients), dtype=object), columns=genes)

    def measured(self, matrix: pd.DataFrame | None, patients: Sequence[str]) -> np.ndarray:
        """Per patient, the share of the model's expression features with a measured value (0 without a row;
        1.0 when the model has none). Scoring reports it: a low share means a different panel from training."""
        genes = self._fitted_genes()
        if not genes:
            return np.ones(len(patients))
        if matrix is None:
            return np.zeros(len(patients))
        return np.isfinite(self._raw_z(matrix, patients)).mean(axis=1)

    def impute(self, z: np.ndarray) -> np.ndarray:
        """``z`` (patients x :attr:`genes`, NaN where unmeasured) with each gap in a layer the patient measured
        (another panel, an empty cell) filled by its conditional mean under the fitted probabilistic PCA: latent
        ``s = (W_o'W_o + noise I)^-1 W_o' z_o`` from every measured feature ``o``, then ``W_m s`` for the gaps.
        A layer the patient lacks altogether (an assay not run) stays NaN, i.e. the training mean, as before:
        filling whole layers was measured and did not help (see benchmarks/README.md). One solve per pattern of
        gaps."""
        w = self._loadings
        gaps = ~np.isfinite(z)
        if not w.shape[1] or not gaps.any():
            return z
        fill = gaps.copy()
        for columns in self._gene_plan()[1]:
            fill[np.ix_(gaps[:, columns].all(axis=1), columns)] = False  # the whole layer missing: not filled
        rows = np.flatnonzero(fill.any(axis=1))
        if not len(rows):
            return z
        out = z.copy()
        groups: dict[bytes, list[int]] = {}  # rows with the same gaps (and so the same fills) share one solve
        for i in rows:
            groups.setdefault(np.packbits(gaps[i]).tobytes(), []).append(i)
        for members in groups.values():
            seen, target = ~gaps[members[0]], fill[members[0]]
            w_seen = w[seen]
            latent = np.linalg.solve(
                w_seen.T @ w_seen + self._noise * np.eye(w.shape[1]), w_seen.T @ z[np.ix_(members, seen)].T
            )
            out[np.ix_(members, target)] = (w[target] @ latent).T
        return out

    def _gene_plan(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Of :attr:`genes`: which get log2(x + 1) (:meth:`_logged`) and, per layer (:func:`feature_layer`), the
        positions of its features; worked out once per fitted gene list (per column it costs more than the rest of
        a patient's z-scores)."""
        genes = self._fitted_genes()
        if self._plan is None or self._plan[0] is not genes:
            layers = np.asarray([feature_layer(g) for g in genes])
            columns = [np.flatnonzero(layers == layer) for layer in dict.fromkeys(layers.tolist())]
            self._plan = (genes, np.asarray([self._logged(g) for g in genes], dtype=bool), columns)
        return self._plan[1], self._plan[2]

    def _raw_z(self, matrix: pd.DataFrame, patients: Sequence[str]) -> np.ndarray:
        """z-scores of :attr:`genes` for ``patients``, NaN where the matrix has no value (the transform of
        :meth:`_log`, on the fitted columns)."""
        genes = self._fitted_genes()
        _check_unique(matrix)
        aligned = self._align(matrix, genes).reindex(index=list(patients), columns=genes)
        values = aligned.to_numpy(dtype=float, copy=True)
        logged = self._gene_plan()[0]
        values[:, logged] = log_counts(values[:, logged])
        return (values - self._mean) / self._std

    def evidence(
        self,
        matrix: pd.DataFrame | None,
        mutations: pd.DataFrame | None,
        patients: Sequence[str],
        graph_genes: Collection[str] | None = None,
    ) -> dict[str, list[str]]:
        """Genes to link each patient to in the graph: every gene with a counted mutation (sorted), then up to
        ``max_genes`` genes with |z| > ``z_threshold``, largest |z| first. Other classes (Silent …) are ignored.

        With ``graph_genes`` (the graph's gene node names) only features that link to a graph gene (see
        :func:`link_gene`) compete for the ``max_genes`` budget, the genes given are graph genes (a mutated gene
        the graph lacks is left out) and several features of one gene give it once. Without, every feature
        competes under its own name (the graph drops what it does not know)."""
        z = self.zscores(matrix, patients, impute=False)  # links name measured changes, never imputed ones
        mutated = self._mutated_sets(mutations) if mutations is not None else {}
        if graph_genes is None:
            pick, to_graph = self._changed, (lambda g: g)
        else:
            graph = graph_genes if isinstance(graph_genes, (set, frozenset, dict)) else set(graph_genes)
            links = self.feature_links(graph)
            columns = [j for j, g in enumerate(z.columns) if g in links]
            targets = [links[z.columns[j]] for j in columns]

            def pick(row: pd.Series) -> list[str]:
                return self._changed_genes(row.to_numpy()[columns], targets)

            def to_graph(gene: str) -> str | None:
                return link_gene(gene, graph, self.harmonize)[0]

        out: dict[str, list[str]] = {}
        for i, patient in enumerate(patients):
            genes = sorted({g for g in map(to_graph, mutated.get(patient, ())) if g is not None})
            seen = set(genes)
            out[patient] = genes + [g for g in pick(z.iloc[i]) if g not in seen]
        return out

    def _changed(self, z: pd.Series) -> list[str]:
        strong = z[z.abs() > self.z_threshold]
        order = np.argsort(-strong.abs().to_numpy(), kind="stable")
        return [str(g) for g in strong.index[order][: self.max_genes]]

    def _changed_genes(self, z: np.ndarray, targets: list[str]) -> list[str]:
        """Up to ``max_genes`` distinct genes of the features with |z| > threshold, by their largest |z|."""
        strong = np.flatnonzero(np.abs(z) > self.z_threshold)
        order = strong[np.argsort(-np.abs(z[strong]), kind="stable")]
        out: list[str] = []
        for j in order:
            if targets[j] not in out:
                out.append(targets[j])
                if len(out) == self.max_genes:
                    break
        return out

    def feature_links(self, graph_genes: Collection[str]) -> dict[str, str]:
        """Expression feature -> the graph gene it links to (:func:`link_gene`); features that link to none are
        absent."""
        links = {}
        for name in self._fitted_genes():
            gene, _ = link_gene(name, graph_genes, self.harmonize, self.region_layers)
            if gene is not None:
                links[name] = gene
        return links

    def link_counts(self, graph_genes: Collection[str]) -> dict[str, int]:
        """How the model's expression features link to the graph: ``features`` (all of them),
        ``features_linked``, ``features_not_in_graph`` (an HGNC gene the graph lacks), ``features_unmapped`` (no
        gene), ``features_region`` (a chromosome arm or band, :func:`feature_genes`; only when there is one), and
        the same per layer (``features_linked_meth``, ``features_region_cnv`` …; layers of :func:`feature_layer`).
        Feature names only, nothing about patients."""
        layers = [*LAYERS, *(n for n in self.layer_units if n not in LAYERS)]
        kinds = (LINKED, NOT_IN_GRAPH, UNMAPPED)  # the region counts appear when a feature is one
        counts = {"features": 0} | {f"features_{k}": 0 for k in kinds}
        counts |= {f"features_{k}_{layer}": 0 for layer in layers for k in kinds}
        for name in self._fitted_genes():
            _, how = link_gene(name, graph_genes, self.harmonize, self.region_layers)
            counts["features"] += 1
            counts[f"features_{how}"] = counts.get(f"features_{how}", 0) + 1
            key = f"features_{how}_{feature_layer(name)}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _counted(self, mutations: pd.DataFrame) -> pd.DataFrame:
        """The ``ok`` rows whose class counts (a row without a class counts when flagged ``non_silent``)."""
        missing = [c for c in (Col.PATIENT, "gene", "non_silent") if c not in mutations.columns]
        if missing:
            raise ModelError(f"the mutation table lacks columns {missing}; pass read_mutations' output")
        flagged = mutations["non_silent"].astype(bool)
        if "variant_class" in mutations.columns:
            classes = mutations["variant_class"].fillna("").astype(str).str.strip().str.lower()
            counted = {c.lower() for c in self.mutation_classes}
            flagged = classes.isin(counted) | ((classes == "") & flagged)
        rows = mutations[flagged.to_numpy()]
        if Col.STATUS in mutations.columns:
            rows = rows[rows[Col.STATUS] == Status.OK]
        return rows

    def _mutated_sets(self, mutations: pd.DataFrame) -> dict[str, set[str]]:
        """patient_id -> genes with a counted mutation (names the model does not know harmonised)."""
        rows = self._counted(mutations)
        known = set(self._genes or ()) | set(self._mutation_genes)
        rename = _renamer(known) if self.harmonize else (lambda g: g)
        return {str(p): {rename(str(x)) for x in g} for p, g in rows.groupby(Col.PATIENT, sort=False)["gene"]}

    def _align(self, matrix: pd.DataFrame, genes: list[str]) -> pd.DataFrame:
        """Columns the model does not know renamed to their current symbol when that is a fitted gene the
        matrix lacks (first such column wins); without ``harmonize``, the matrix as it is."""
        if not self.harmonize:
            return matrix
        fitted, present = set(genes), set(matrix.columns)
        unknown = [c for c in matrix.columns if c not in fitted]
        if not unknown:
            return matrix
        rename = _renamer(fitted)
        mapping: dict[str, str] = {}
        taken: set[str] = set()
        for column in unknown:
            target = rename(str(column))
            if target in fitted and target not in present and target not in taken:
                mapping[column] = target
                taken.add(target)
        return matrix.rename(columns=mapping) if mapping else matrix

    def _logged(self, column) -> bool:
        """Whether the column's unit is counts-like (log2(x + 1) applies): the table's (``unit``) or its layer's."""
        unit = self.layer_units.get(feature_layer(column), self.unit) if LAYER_PREFIX.match(str(column)) else self.unit
        return unit in LOG_UNITS

    def neutral_values(self) -> dict[str, float]:
        """Each expression feature at its training mean, in the unit the model reads it (log2(x + 1) undone where
        the unit is counts-like): a patient with these values has every z-score 0. The registered model's input
        example gives them, so it is a whole panel of an average patient."""
        return {
            g: round(float(2.0**m - 1.0 if self._logged(g) else m), 6) for g, m in zip(self._fitted_genes(), self._mean)
        }

    def _log(self, matrix: pd.DataFrame) -> pd.DataFrame:
        """log2(x + 1) of the columns in a counts-like unit: the table's (``unit``) or their layer's."""
        values = matrix.astype(float)
        logged = [self._logged(c) for c in values.columns]
        if not any(logged):
            return values
        if all(logged):
            return log_counts(values)
        out = values.copy()
        columns = values.columns[np.asarray(logged)]
        out[columns] = log_counts(values[columns])
        return out

    def _fitted_genes(self) -> list[str]:
        if self._genes is None:
            raise ModelError("GenomicsPreprocessor is not fitted: call fit first (on the training patients)")
        return self._genes

    # ------------------------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description; :meth:`from_dict` rebuilds an identical preprocessor."""
        return {
            "format": FORMAT_VERSION,
            "unit": self.unit,
            "z_threshold": self.z_threshold,
            "max_genes": self.max_genes,
            "min_mutated": self.min_mutated,
            "mutation_classes": list(self.mutation_classes),
            "max_features": self.max_features,
            "harmonize": self.harmonize,
            "layer_units": dict(self.layer_units),
            "region_layers": list(self.region_layers),
            "genes": self._fitted_genes(),
            "mean": [float(v) for v in self._mean],
            "std": [float(v) for v in self._std],
            "mutation_genes": list(self._mutation_genes),
            "impute_components": self.impute_components,
            "imputer": {"loadings": self._loadings.round(7).tolist(), "noise": self._noise},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenomicsPreprocessor:
        try:
            if data["format"] != FORMAT_VERSION:
                raise ModelError(f"genomics preprocessor format {data['format']} is not supported ({FORMAT_VERSION})")
            new = cls(data["unit"], data["z_threshold"], data["max_genes"], data["min_mutated"],
                      data.get("mutation_classes"), data.get("max_features"), data.get("harmonize", False),
                      data.get("layer_units"),
                      data.get("impute_components", 0),  # described before imputation: the mean
                      data.get("region_layers"))  # fmt: skip  # described before arm / band layers: none
            new._genes = [str(g) for g in data["genes"]]
            new._mean = np.asarray(data["mean"], dtype=float)
            new._std = np.asarray(data["std"], dtype=float)
            new._mutation_genes = [str(g) for g in data["mutation_genes"]]
            imputer = data.get("imputer") or {"loadings": [], "noise": 1.0}
            loadings = np.asarray(imputer["loadings"], dtype=float)
            new._loadings = loadings if loadings.size else np.zeros((len(new._genes), 0))
            new._noise = float(imputer["noise"])
        except (KeyError, TypeError, ValueError) as exc:
            message = f"not a genomics preprocessor description (bad or missing {exc}); re-train the model"
            raise ModelError(message) from None
        if not len(new._genes) == len(new._mean) == len(new._std) == len(new._loadings):
            raise ModelError(
                "genomics preprocessor description: genes, mean, std and imputer loadings differ in length; re-train"
            )
        return new


def _check_unique(matrix: pd.DataFrame) -> None:
    if not matrix.index.is_unique:
        raise ModelError(
            "the expression matrix has repeated patient ids in its index; give one row per patient "
            "(clinicmm.ingest.genomics.expression_by_patient does this for read_expression's output)"
        )


def _renamer(known: set[str]):
    """name -> the name itself when known, else its current HGNC symbol (shipped table), else itself."""
    from clinicmm.ingest.gene_names import GeneHarmonizer

    def rename(name: str) -> str:  # the table is read on the first unknown name only
        return name if name in known else (GeneHarmonizer.shipped().resolve(name)[0] or name)

    return rename


def fit_genomics(wf, cohort, patients=None) -> GenomicsPreprocessor | None:
    """The workflow's genomics preprocessor fitted on ``patients`` (default: the cohort's train split); None
    without genomics. Leave-one-site-out and compare call it once per fold with that fold's training patients."""
    from clinicmm.config import load_dataset
    from clinicmm.keys import Split

    spec = load_dataset(wf.dataset_path)
    if spec.genomics is None or (cohort.expression is None and cohort.mutations is None):
        return None
    unit = spec.genomics.expression.unit if spec.genomics.expression else "normalized"
    layers = {layer.name: layer.unit for layer in spec.genomics.layers}
    regions = [layer.name for layer in spec.genomics.layers if layer.features == "cytoband"]
    train = set(cohort.patients(Split.TRAIN) if patients is None else patients)
    expr = (
        cohort.expression.loc[[p for p in cohort.expression.index if p in train]]
        if cohort.expression is not None
        else None
    )
    muts = cohort.mutations[cohort.mutations[Col.PATIENT].isin(train)] if cohort.mutations is not None else None
    pre = GenomicsPreprocessor.from_spec(unit, wf.encoders.genomics, spec.genomics.genes.harmonize, layers, regions)
    return pre.fit(expr, muts)
