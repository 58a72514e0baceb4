"""Robustness, measured: how much each trained model loses when its test inputs are damaged or missing.

Each perturbation changes the test patients' raw inputs and re-encodes only the modality it touches, through
the same :class:`~clinicmm.encode.featurizer.Featurizer` as the encode stage:

| name | what changes |
| --- | --- |
| ``image_noise`` | Gaussian noise (MONAI ``RandGaussianNoised``, std 0.1 of the intensity window) on each volume |
| ``image_shift`` | intensity shift (MONAI ``ShiftIntensityd``, +0.1 of the window, about +40 HU by default) |
| ``note_sections`` | half of each note's sections (``FINDINGS:``, ``IMPRESSION:`` ...) dropped |
| ``genes_masked`` | half of the model's genes masked (expression unmeasured, so imputed from the rest; mutations unseen) |
| ``no_image`` / ``no_note`` / ``no_omics`` | the modality removed for every test patient |

The ``no_*`` rows re-encode nothing: they score the clean inputs through the evaluate stage's ablation path
(:func:`clinicmm.training.fit.predict_proba` with ``without=``), so they match its ``minus_*`` columns.

The table (``workdir/robustness/robustness.csv`` and ``.md``, a heatmap, and an MLflow child run tagged
``robustness``) gives accuracy and macro-F1 per model and perturbation and their drop from the clean inputs.
Perturbed inputs are encoded with no embedding cache, so they can never be served as a clean input's
embedding later (the cache key is the encoder and the *input file* bytes, which a perturbation does not change).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.csvsafe import csv_text
from clinicmm.errors import ConfigError
from clinicmm.keys import Modality, Split

log = logging.getLogger("clinicmm")
NOISE_STD = 0.1  # of the [0, 1] intensity window
SHIFT = 0.1
DROP_SHARE = 0.5
MASK_SHARE = 0.5


@dataclass
class Context:
    """What a perturbation needs: the cohort's raw inputs, the test patients, a cache-less featurizer."""

    cohort: object
    patients: list[str]
    featurizer: object  # Featurizer with cache_dir=None
    seed: int


# ------------------------------------------------------------------------------------------- the edits


def _sections(text: str) -> list[str]:
    """The note's sections as text pieces (the shared section rules of :mod:`clinicmm.encode.text.sections`)."""
    from clinicmm.knowledge.sections import split_sections

    found = split_sections(text)
    return [text[sec.start : sec.end] for sec in found] if len(found) > 1 else [text]


def drop_sections(text: str, rng: np.random.Generator, share: float = DROP_SHARE) -> str:
    """``text`` without ``round(share * n)`` of its n sections (at least one, never all); a note without
    section headers loses that share of its lines instead; a one-line note is kept whole."""
    parts = _sections(text)
    if len(parts) < 2:
        parts = [p for p in text.splitlines(keepends=True) if p.strip()]
    if len(parts) < 2:
        return text
    n_drop = min(len(parts) - 1, max(1, round(share * len(parts))))
    dropped = set(rng.choice(len(parts), size=n_drop, replace=False).tolist())
    return "\n".join(p.strip("\n") for i, p in enumerate(parts) if i not in dropped)


def _image_step(kind: str):
    from monai.transforms import RandGaussianNoised, ShiftIntensityd

    from clinicmm.encode.imaging.transforms import IMAGE_KEY

    if kind == "noise":
        return RandGaussianNoised(keys=IMAGE_KEY, prob=1.0, mean=0.0, std=NOISE_STD)
    return ShiftIntensityd(keys=IMAGE_KEY, offset=SHIFT)


def _perturb_images(kind: str) -> Callable:
    def apply(enc, ctx: Context):
        from monai.transforms import Compose

        from clinicmm.ingest.cohort import patient_inputs

        inputs = patient_inputs(ctx.cohort, ctx.patients)
        encoder = ctx.featurizer.image_encoder
        clean = encoder.pipeline
        encoder.pipeline = Compose([clean, _image_step(kind)])  # on the volume, before the network
        # seeded after composing: Compose() reseeds its random transforms from MONAI's global seed (None: at random)
        encoder.pipeline.set_random_state(seed=ctx.seed)
        try:
            vectors, links, _ = ctx.featurizer.images(inputs["series"], inputs["body_parts"])
        finally:
            encoder.pipeline = clean
        return _replace(enc, Modality.IMAGE, vectors, links)

    return apply


def _perturb_notes(enc, ctx: Context):
    from clinicmm.ingest.cohort import patient_inputs

    rng = np.random.default_rng(ctx.seed)
    texts = [[drop_sections(t, rng) for t in ts] for ts in patient_inputs(ctx.cohort, ctx.patients)["texts"]]
    vectors, links, _ = ctx.featurizer.notes(texts)
    return _replace(enc, Modality.NOTE, vectors, links)


def _perturb_genes(enc, ctx: Context):
    pre = ctx.featurizer.preprocessor
    genes = sorted(set(pre.genes) | set(pre.mutation_genes))
    rng = np.random.default_rng(ctx.seed)
    masked = set(rng.choice(genes, size=round(MASK_SHARE * len(genes)), replace=False).tolist()) if genes else set()
    expr, muts = ctx.cohort.expression, ctx.cohort.mutations
    if expr is not None:
        expr = expr.copy()
        expr.loc[:, [g for g in expr.columns if g in masked]] = np.nan  # unmeasured: imputed from the rest
    if muts is not None:
        muts = muts[~muts["gene"].isin(masked)]
    present = enc.has(Modality.OMICS.value)
    vectors, links, _ = ctx.featurizer.omics(ctx.patients, expr, muts, present)
    return _replace(enc, Modality.OMICS, vectors, links)


def _replace(enc, modality: Modality, vectors: np.ndarray, links: list[list[str]]):
    out = copy.copy(enc)
    out.vectors = {**enc.vectors, modality.value: vectors.astype(np.float32)}
    out.links = {**enc.links, modality.value: links}
    return out


# name -> (modality, edit of the test inputs); no edit: the modality removed by the ablation path at scoring
PERTURBATIONS: dict[str, tuple[Modality, Callable | None]] = {
    "image_noise": (Modality.IMAGE, _perturb_images("noise")),
    "image_shift": (Modality.IMAGE, _perturb_images("shift")),
    "note_sections": (Modality.NOTE, _perturb_notes),
    "genes_masked": (Modality.OMICS, _perturb_genes),
    "no_image": (Modality.IMAGE, None),
    "no_note": (Modality.NOTE, None),
    "no_omics": (Modality.OMICS, None),
}


def removed(name: str) -> str | None:
    """The modality perturbation ``name`` removes (scored with ``predict_proba(without=…)``), else None."""
    modality, apply = PERTURBATIONS[name]
    return modality.value if apply is None else None


# -------------------------------------------------------------------------------------------- scoring


def _subset(encoded, rows: list[int]):
    from clinicmm.encode.featurizer import EncodedCohort

    return EncodedCohort(
        [encoded.patients[r] for r in rows],
        {m: v[rows] for m, v in encoded.vectors.items()},
        {m: [links[r] for r in rows] for m, links in encoded.links.items()},
    )


def variants(data, names: list[str], seed: int) -> dict[str, tuple[str, object]]:
    """perturbation -> (modality, EncodedCohort of the test patients); 'clean' first. A removal (``no_*``) gets the
    clean inputs (see :func:`removed`). A perturbation whose modality no test patient has is left out (it would
    change nothing)."""
    from clinicmm.encode.featurizer import Featurizer
    from clinicmm.encode.genomics import GenomicsPreprocessor

    rows, _ = data.rows(Split.TEST)
    clean = _subset(data.encoded, rows)
    pre = GenomicsPreprocessor.from_dict(data.genomics) if data.genomics else None
    featurizer = Featurizer(data.wf.encoders, data.kg, pre, cache_dir=None)  # no cache: see the module docstring
    ctx = Context(data.cohort, clean.patients, featurizer, seed)
    out = {"clean": ("", clean)}
    for name in names:
        modality, apply = PERTURBATIONS[name]
        if not clean.has(modality.value).any():
            log.info("robustness: %s skipped, no test patient has %s data", name, modality.value)
            continue
        log.info("robustness: %s", name)
        out[name] = (modality.value, clean if apply is None else apply(clean, ctx))
    return out


def _scorer(data, model_name: str) -> Callable:
    """``(encoded, without) -> {accuracy, macro_f1}`` for one trained model on the test patients (loaded once);
    ``without``: a modality removed as the evaluate stage's ablation removes it."""
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import dims_of, to_evidence
    from clinicmm.training.fit import predict_proba
    from clinicmm.training.metrics import classification_metrics

    bundle = ModelBundle.load(data.wf.work / "train" / model_name)
    model, hetero = bundle.build_model(), bundle.knowledge.to_hetero()
    _, y = data.rows(Split.TEST)

    def score(encoded, without: str | None = None) -> dict[str, float]:
        items = to_evidence(encoded, range(len(y)), y, bundle.knowledge, bundle.scaler)
        probs = predict_proba(model, items, hetero, dims_of(encoded.vectors), without=without)
        m = classification_metrics(np.asarray(y), probs, bundle.classes)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}

    return score


def robustness_table(data, names: list[str], seed: int = 0) -> pd.DataFrame:
    """One row per (perturbation, model): n_test, accuracy, macro-F1 and their drops from the clean inputs."""
    rows = []
    versions = variants(data, names, seed)
    for model in data.wf.models:
        score = _scorer(data, model)
        base = score(versions["clean"][1])
        for name, (modality, encoded) in versions.items():
            m = base if name == "clean" else score(encoded, removed(name))
            rows.append(
                {
                    "perturbation": name,
                    "modality": modality,
                    "model": model,
                    "n_test": len(encoded.patients),
                    **m,
                    "accuracy_drop": base["accuracy"] - m["accuracy"],
                    "macro_f1_drop": base["macro_f1"] - m["macro_f1"],
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ the stage


def check_names(names: list[str] | None) -> list[str]:
    names = list(PERTURBATIONS) if not names else names
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ConfigError(
            f"unknown perturbation(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(PERTURBATIONS)}"
        )
    return names


def table_markdown(table: pd.DataFrame, cols: list[str]) -> str:
    """A Markdown table of ``cols`` (floats to 3 decimals)."""

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    return table_markdown(
        table, ["perturbation", "model", "n_test", "accuracy", "macro_f1", "accuracy_drop", "macro_f1_drop"]
    )


def robustness_stage(wf, perturbations: list[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Score every trained model on perturbed test inputs; write and log the table (needs train)."""
    from clinicmm.files import atomic_write_bytes
    from clinicmm.training.data import TrainingData

    names = check_names(perturbations)
    data = TrainingData(wf)
    table = robustness_table(data, names, seed)
    out = wf.work / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "robustness.csv", csv_text(table, index=False).encode())
    atomic_write_bytes(out / "robustness.md", to_markdown(table).encode())
    drop_png(table, out / "robustness.png")
    _log(wf, table, out, names, seed)
    return table


def drop_png(table: pd.DataFrame, path: Path) -> Path:
    """Heatmap of the macro-F1 drop: perturbations down, models across."""
    from clinicmm.tracking.plots import save_figure, subplots

    grid = table[table["perturbation"] != "clean"].pivot(index="perturbation", columns="model", values="macro_f1_drop")
    grid = grid.reindex(
        index=[p for p in PERTURBATIONS if p in grid.index], columns=list(dict.fromkeys(table["model"]))
    )
    fig, ax = subplots(figsize=(2.4 + 0.9 * grid.shape[1], 1.2 + 0.45 * max(grid.shape[0], 1)))
    limit = max(float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size else 0.0, 0.05)
    ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        colour = "white" if abs(v) > limit / 2 else "black"
        ax.text(j, i, "" if math.isnan(v) else f"{v:+.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_title("macro-F1 drop (test split)")
    return save_figure(fig, path)


def _log(wf, table: pd.DataFrame, out: Path, names: list[str], seed: int) -> None:
    """A 'robustness' child run of the workflow's run: the drops as metrics, the table and heatmap as files."""
    from clinicmm.tracking import runs

    metrics = {
        f"{r.model}.{r.perturbation}.macro_f1_drop": r.macro_f1_drop
        for r in table.itertuples()
        if r.perturbation != "clean"
    }
    metrics |= {
        f"{r.model}.{r.perturbation}.accuracy_drop": r.accuracy_drop
        for r in table.itertuples()
        if r.perturbation != "clean"
    }
    params = {
        "perturbations": ",".join(names),
        "seed": seed,
        "noise_std": NOISE_STD,
        "shift": SHIFT,
        "note_section_drop": DROP_SHARE,
        "gene_mask": MASK_SHARE,
    }
    runs.log_stage(
        wf,
        "robustness",
        metrics,
        params,
        tags={"clinicmm.evaluation": "robustness"},
        files={"robustness": [out / name for name in ("robustness.csv", "robustness.md", "robustness.png")]},
    )
