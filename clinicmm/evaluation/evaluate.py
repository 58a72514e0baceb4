"""The test split: each trained model's metrics and plots, the comparison table, the modality ablation.

``evaluate(wf, data)`` writes ``workdir/evaluate/`` (``results.csv`` / ``.json``, ``confusion_<model>.png``,
``roc_<model>.png``, reliability diagrams, ``comparison.png``, ``availability.png``, ``ablation.csv`` / ``.md``)
and logs each model's metrics to its run; with ``split.leave_one_site_out`` it also runs
:mod:`clinicmm.evaluation.loso`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.config import WorkflowSpec
from clinicmm.csvsafe import write_csv
from clinicmm.files import atomic_write_bytes
from clinicmm.keys import Col, Split

RESULT_COLUMNS = (
    "macro_f1",
    "accuracy",
    "auroc_ovr",
    "ece",
    "ece_uncalibrated",
    "coverage_target",
    "coverage",
    "mean_set_size",
    "abstention_rate",
    "accuracy_non_abstained",
)


def bundle_dir(wf: WorkflowSpec, name: str) -> Path:
    """Where the train stage saved model ``name``'s bundle (``StageError`` naming the command when it has not)."""
    from clinicmm.training.data import need

    return need(wf.work / "train" / name, "train")


def evaluate_model(wf: WorkflowSpec, data, name: str, out: Path) -> tuple[dict[str, float], dict]:
    """One model's test metrics and plots (confusion matrix, per-class ROC, reliability), logged to its run, and
    its missing-modality ablation row (the same predictions, then each modality removed in turn)."""
    from clinicmm.evaluation.ablation import ablation_row, probs_and_without
    from clinicmm.tracking import runs
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.tracking.plots import confusion_png, reliability_png, roc_png
    from clinicmm.training.calibration import expected_calibration_error
    from clinicmm.training.data import dims_of
    from clinicmm.training.metrics import classification_metrics, confusion

    bundle = ModelBundle.load(bundle_dir(wf, name))
    items, y = data.items(Split.TEST, bundle.scaler)
    raw, without = probs_and_without(
        bundle.build_model(), items, bundle.knowledge.to_hetero(), dims_of(data.encoded.vectors)
    )
    probs = bundle.calibration.apply(raw)  # what the registered model serves
    metrics = classification_metrics(y, probs, bundle.classes) | {"ece": expected_calibration_error(probs, y)}
    metrics |= {"ece_uncalibrated": expected_calibration_error(raw, y)} | bundle.calibration.test_metrics(probs, y)
    title = f"{name}: test split (n={len(y)})"
    pngs = [
        confusion_png(
            confusion(y, probs.argmax(1), len(bundle.classes)), bundle.classes, title, out / f"confusion_{name}.png"
        ),
        roc_png(y, probs, bundle.classes, title, out / f"roc_{name}.png"),
        reliability_png(raw, y, f"{title}, uncalibrated", out / f"reliability_uncalibrated_{name}.png"),
        reliability_png(probs, y, f"{title}, T={bundle.calibration.temperature:.2f}", out / f"reliability_{name}.png"),
    ]
    runs.log_evaluation(wf, name, metrics, pngs)
    return metrics, {"model": name, "n": len(y), **ablation_row(y, raw, without)}  # argmax: calibration-free


def evaluate(wf: WorkflowSpec, data) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Every trained model of ``wf`` on the test split of ``data`` (a :class:`~clinicmm.training.data.TrainingData`):
    the results table (one row per model) and each model's metrics; files written, metrics logged."""
    from clinicmm.evaluation import loso
    from clinicmm.evaluation.ablation import write_ablation
    from clinicmm.tracking import runs
    from clinicmm.tracking.plots import availability_png, comparison_png

    out = wf.work / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    table, metrics_by_model, ablation = [], {}, []
    for name in wf.models:
        metrics, row = evaluate_model(wf, data, name, out)
        metrics_by_model[name] = metrics
        ablation.append(row)
        table.append({"model": name, "n_test": row["n"], **{k: metrics.get(k, np.nan) for k in RESULT_COLUMNS}})
    manifest = data.cohort.manifest
    availability_png(manifest[manifest[Col.STATUS] == "ok"], out / "availability.png")
    results = pd.DataFrame(table)
    write_csv(results, out / "results.csv", index=False)
    atomic_write_bytes(out / "results.json", json.dumps(metrics_by_model, indent=1, default=str).encode())
    comparison_png(dict(zip(results["model"], results["macro_f1"])), "macro-F1", out / "comparison.png")
    write_ablation(ablation, out)  # each modality removed in turn: ablation.csv / ablation.md
    if loso.wanted(wf):  # split.leave_one_site_out: every site held out in turn, evaluate/sites/
        loso.leave_one_site_out(wf, data=data)
    runs.log_comparison(wf, out)
    return results, metrics_by_model
