"""The workflow's stages, one function each: ingest → encode → train → evaluate → register → predict.

Each stage reads the previous stage's files under the workflow's ``workdir`` and writes its own:

```
workdir/ingest/    cohort.parquet, series/notes/expression/samples/mutations.parquet, report.json, report.md
workdir/cache/     embedding cache (image/, note/), keyed by encoder fingerprint + input content
workdir/encode/    embeddings.npz, evidence.json, genomics.json, encoders.json
workdir/train_image/  weights.safetensors, head.safetensors, record.json (only with encoders.image.train)
workdir/train/     <model>/ bundle (model.json, calibration.json, weights.safetensors, genomics.json, graph/), history.json
workdir/evaluate/  results.csv, results.json, confusion_<model>.png, comparison.png
workdir/register/  stage.json (the registered name, version and URI)
workdir/predict/   predictions.csv of the workflow's own dataset
workdir/<stage>/stage.json  the fingerprint of a finished stage (see clinicmm.stages)
workdir/runs.json  the MLflow run ids of this workflow (parent and one child per model)
```
The predict stage scores with the registered model through :mod:`clinicmm.predict`. The CLI verbs call these
functions and print their summaries; no logic lives in the CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm import distributed, stages
from clinicmm.cache import atomic_write_bytes, digest_bytes, digest_files
from clinicmm.cohort import Cohort, ingest
from clinicmm.config import WorkflowSpec, dump, load_dataset
from clinicmm.errors import StageError
from clinicmm.keys import Col, Modality, Node, Split

log = logging.getLogger("clinicmm")


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise StageError(f"{path} is missing: run `clinicmm {stage}` (or `clinicmm run`) for this workflow first.")
    return path


# ---------------------------------------------------------------------------------------------- ingest


def ingest_stage(wf: WorkflowSpec) -> Cohort:
    cohort = ingest(load_dataset(wf.dataset_path), wf.work / "ingest")
    r = cohort.report
    # every written table, not only the manifest: a changed note text or expression value must make encode stale
    tables = [cohort.table_path(wf.work / "ingest", name) for name in cohort.written()]
    content = digest_bytes(digest_files(tables), json.dumps(r, sort_keys=True, default=str))
    stages.mark_done(wf, "ingest", {"patients": r["patients"], "skipped": len(r["skipped"])}, content)
    log.info("ingest: %d usable patients (%d labelled), %d skipped inputs", r["patients"]["usable"], r["patients"]["labelled"], len(r["skipped"]))
    return cohort


# ---------------------------------------------------------------------------------------------- encode


def load_knowledge(wf: WorkflowSpec):
    """The shipped graph (with the workflow's Reactome set) plus the workflow's own GMT / TSV / OBO files."""
    from clinicmm.knowledge.graph import KnowledgeGraph

    kg = KnowledgeGraph.default(wf.reactome)
    for path in wf.knowledge:
        path = wf.resolve(path)
        added = kg.add_file(path)
        log.info("knowledge: %s added %d edges", path.name, added)
    return kg


def fit_genomics(wf: WorkflowSpec, cohort: Cohort):
    """The genomics preprocessor, fitted on the train split only (None without genomics)."""
    spec = load_dataset(wf.dataset_path)
    if spec.genomics is None or (cohort.expression is None and cohort.mutations is None):
        return None
    from clinicmm.genomics.preprocess import GenomicsPreprocessor

    unit = spec.genomics.expression.unit if spec.genomics.expression else "normalized"
    g = wf.encoders.genomics
    train = set(cohort.patients(Split.TRAIN))
    expr = cohort.expression.loc[[p for p in cohort.expression.index if p in train]] if cohort.expression is not None else None
    muts = cohort.mutations[cohort.mutations[Col.PATIENT].isin(train)] if cohort.mutations is not None else None
    return GenomicsPreprocessor.from_spec(unit, g, spec.genomics.genes.harmonize).fit(expr, muts)


def encode_stage(wf: WorkflowSpec):
    from clinicmm.evidence import EncodedCohort, Featurizer, encode_cohort

    cohort = Cohort.load(_need(wf.work / "ingest", "ingest"))
    pre = fit_genomics(wf, cohort)
    featurizer = Featurizer(wf.encoders, load_knowledge(wf), pre, cache_dir=wf.work / "cache")
    out = wf.work / "encode"
    if distributed.world_size() > 1:  # under torchrun: each rank encodes its shard, rank 0 checks and merges
        encoded = distributed.encode_sharded(cohort, featurizer, cohort.patients(labelled=False), out / "shards",
                                             stages.fingerprint(wf, "encode"))
        if encoded is None:  # not rank 0: wait until rank 0 has written the merged embeddings
            distributed.barrier()
            return EncodedCohort.load(out)
    else:
        encoded = encode_cohort(cohort, featurizer, cohort.patients(labelled=False))
    encoded.save(out)
    fingerprints = _used_fingerprints(featurizer, encoded)
    _write_json(out / "encoders.json", {"fingerprints": fingerprints, "spec": dump(wf.encoders)})
    if pre is not None:
        _write_json(out / "genomics.json", pre.to_dict())
    else:
        (out / "genomics.json").unlink(missing_ok=True)
    extra = json.dumps([fingerprints, pre.to_dict() if pre is not None else None], sort_keys=True, default=str)
    stages.mark_done(wf, "encode", {"stats": encoded.stats}, digest_bytes(encoded.content_digest(), extra))
    distributed.barrier()
    return encoded


def _used_fingerprints(featurizer, encoded) -> dict[str, str]:
    used = {}
    if encoded.has(Modality.IMAGE).any():
        used[Modality.IMAGE.value] = featurizer.image_encoder.fingerprint()
    if encoded.has(Modality.NOTE).any():
        used[Modality.NOTE.value] = featurizer.text_encoder.fingerprint()
    return used


# ----------------------------------------------------------------------------------------------- train


class TrainingData:
    """Everything the train and evaluate stages share: cohort, encodings, graph, classes, split rows."""

    def __init__(self, wf: WorkflowSpec):
        from clinicmm.evidence import EncodedCohort

        self.wf = wf
        self.cohort = Cohort.load(_need(wf.work / "ingest", "ingest"))
        self.encoded = EncodedCohort.load(_need(wf.work / "encode", "encode"))
        self.kg = load_knowledge(wf)
        labels = self.cohort.manifest.set_index(Col.PATIENT.value)
        self.label = labels[Col.LABEL.value].to_dict()
        self.split = labels[Col.SPLIT.value].to_dict()
        self.classes = self.train_classes()
        if len(self.classes) < 2:
            raise StageError(f"{wf.dataset_path}: fewer than two labels in the train split; cannot train a classifier.")
        self.kg.ensure_nodes(Node.CANCER, self.classes)
        enc_dir = wf.work / "encode"
        self.genomics = json.loads((enc_dir / "genomics.json").read_text()) if (enc_dir / "genomics.json").is_file() else None
        self.fingerprints = json.loads((enc_dir / "encoders.json").read_text())["fingerprints"]

    def train_classes(self) -> list[str]:
        """The labels of the train split's encoded patients, sorted: the classes a model of this split predicts."""
        return sorted({self.label[p] for p in self.encoded.patients if self.split.get(p) == Split.TRAIN})

    def rows(self, split: Split) -> tuple[list[int], list[int]]:
        idx = {c: i for i, c in enumerate(self.classes)}
        rows = [r for r, p in enumerate(self.encoded.patients) if self.split.get(p) == split and self.label.get(p) in idx]
        return rows, [idx[self.label[self.encoded.patients[r]]] for r in rows]

    def items(self, split: Split, scaler):
        from clinicmm.training.data import to_evidence

        rows, y = self.rows(split)
        return to_evidence(self.encoded, rows, y, self.kg, scaler), np.array(y)


def train_stage(wf: WorkflowSpec, progress: bool = True) -> dict[str, dict]:
    """Fit every model of the workflow on the same split; one MLflow child run each."""
    import mlflow
    import torch

    from clinicmm.bundle import ModelBundle
    from clinicmm.fusion.kg_gnn import init_classes_from_text
    from clinicmm.fusion.registry import build_model
    from clinicmm.tracking import runs
    from clinicmm.training.data import Standardizer, class_nodes, dims_of
    from clinicmm.training.fit import fit, predict_proba

    distributed.check_launch(wf.training)
    data = TrainingData(wf)
    scaler = Standardizer.fit(data.encoded.vectors, np.array(data.rows(Split.TRAIN)[0]))
    train_items, _ = data.items(Split.TRAIN, scaler)
    val_items, val_y = data.items(Split.VAL, scaler)
    dims, hetero = dims_of(data.encoded.vectors), data.kg.to_hetero()
    nodes = class_nodes(data.kg, data.classes)
    results = {}
    tracked = distributed.is_zero()  # under DDP every rank fits; rank 0 alone logs, saves and records
    with runs.workflow_run(wf, data.cohort) if tracked else contextlib.nullcontext() as parent:
        if tracked:
            _log_upstream_stages(wf, data)
        for name in wf.models:
            with runs.child_run(wf, name) if tracked else contextlib.nullcontext() as child:
                t = wf.training
                torch.manual_seed(t.seed)  # each model's initial weights depend on the seed alone, not on run order
                model = build_model(name, dims, len(data.classes), hetero, nodes, t.hidden, t.dropout)
                init_classes_from_text(model, data.kg, t.class_init, wf.encoders.text)  # graph models (few-shot types)
                model, history = fit(model, train_items, val_items, hetero, dims, t, len(data.classes),
                                     runs.epoch_logger(child) if tracked else None, progress, distributed.checkpoint_dir(wf, name))
                if not tracked:
                    continue
                val_probs = predict_proba(model, val_items, hetero, dims)
                bundle = ModelBundle(
                    name, data.classes, dims, t.hidden, t.dropout, wf.encoders, data.fingerprints, scaler,
                    model.state_dict(), data.kg, data.genomics, extra={"workflow": wf.name},
                    calibration=_fit_calibration(wf, name, val_probs, val_y),
                )
                out = bundle.save(wf.work / "train" / name)
                _log_calibration(name, bundle.calibration, val_probs, val_y, out)
                _write_json(out / "history.json", history)
                runs.log_training(child, name, model, history, out)
                best = min(history, key=lambda h: h["val_loss"]) if history else {}
                results[name] = {"epochs": len(history), "best": best, "bundle": str(out)}
                log.info("train %s: %d epochs, best val_loss %.3f, val macro-F1 %.3f", name, len(history), best.get("val_loss", np.nan), best.get("val_macro_f1", np.nan))
        if not tracked:
            distributed.barrier()  # leave together with rank 0 once it has saved and recorded the models
            return {}
        mlflow.log_dict({n: {"epochs": r["epochs"], **r["best"]} for n, r in results.items()}, "training_summary.json")
    distributed.drop_checkpoints(wf)  # every model finished: a forced rerun trains afresh
    weights = [digest_files([Path(r["bundle"]) / f for f in ("weights.safetensors", "model.json", "calibration.json")]) for r in results.values()]
    stages.mark_done(wf, "train", {n: {"epochs": r["epochs"], **r["best"]} for n, r in results.items()}, digest_bytes(*weights))
    distributed.barrier()
    return results


def _fit_calibration(wf: WorkflowSpec, name: str, val_probs: np.ndarray, val_y: np.ndarray):
    """Temperature and conformal threshold from the validation split (identity when it has no patient)."""
    from clinicmm.training.calibration import Calibration
    from clinicmm.training.conformal import min_calibration_size

    spec = wf.calibration
    if not len(val_y):
        log.warning("calibration %s: the validation split is empty; predictions stay uncalibrated, without sets", name)
        return Calibration(abstain_below=spec.abstain_below)
    if spec.coverage is not None and len(val_y) < (need := min_calibration_size(spec.coverage)):
        log.warning("calibration %s: %d validation patients, coverage %.2f needs %d: every set holds every class; "
                    "raise split.val or lower calibration.coverage", name, len(val_y), spec.coverage, need)
    return Calibration.fit(val_probs, val_y, spec)


def _log_calibration(name: str, calibration, val_probs: np.ndarray, val_y: np.ndarray, out: Path) -> None:
    """The fitted temperature, val ECE before/after and both reliability diagrams, to the model's active run."""
    import mlflow

    from clinicmm.tracking.plots import reliability_png

    c = calibration.to_dict()
    metrics = {"temperature": c["temperature"]} | {f"val_{k}": v for k, v in c["validation"].items() if k != "n"}
    if c["conformal"] and c["conformal"]["threshold"] is not None:
        metrics["conformal_threshold"] = c["conformal"]["threshold"]
    mlflow.log_metrics(metrics)
    if len(val_y):
        title = f"{name}: validation split (n={len(val_y)})"
        mlflow.log_artifact(str(reliability_png(val_probs, val_y, f"{title}, uncalibrated", out / "reliability_val_uncalibrated.png")), "plots")
        calibrated = calibration.apply(val_probs)
        mlflow.log_artifact(str(reliability_png(calibrated, val_y, f"{title}, T={calibration.temperature:.2f}", out / "reliability_val.png")), "plots")


def _log_upstream_stages(wf: WorkflowSpec, data: TrainingData) -> None:
    """Nested runs for ingest and encode (they ran before the parent run existed): counts and fingerprints."""
    from clinicmm.tracking import runs

    report = data.cohort.report
    ingest_metrics = {f"patients_{k}": v for k, v in report["patients"].items()} | {"skipped_inputs": len(report["skipped"])}
    ingest_metrics |= {f"{m}_present": c["present"] for m, c in report["modalities"].items()}
    runs.log_stage(wf, "ingest", ingest_metrics, artifacts={"ingest_summary.json": runs.ingest_summary(report)})
    stats = data.encoded.stats
    encode_metrics = {f"{m}_{k}": v for m, s in stats.items() for k, v in s.items()}
    runs.log_stage(wf, "encode", encode_metrics, params={f"fingerprint.{m}": fp for m, fp in data.fingerprints.items()})
    from clinicmm.imaging.train import attach_to_parent

    attach_to_parent(wf, runs.read_runs(wf)["parent"])  # the train-image run, when that stage ran


# -------------------------------------------------------------------------------------------- evaluate


def _evaluate_model(wf: WorkflowSpec, data: TrainingData, name: str, out: Path) -> tuple[dict[str, float], dict]:
    """One model's test metrics and plots (confusion matrix, per-class ROC, reliability), logged to its run, and
    its missing-modality ablation row (the same predictions, then each modality removed in turn)."""
    from clinicmm.bundle import ModelBundle
    from clinicmm.tracking import runs
    from clinicmm.tracking.plots import confusion_png, reliability_png, roc_png
    from clinicmm.training.calibration import expected_calibration_error
    from clinicmm.training.data import dims_of
    from clinicmm.training.ablation import ablation_row, probs_and_without
    from clinicmm.training.metrics import classification_metrics, confusion

    bundle = ModelBundle.load(_need(wf.work / "train" / name, "train"))
    items, y = data.items(Split.TEST, bundle.scaler)
    raw, without = probs_and_without(bundle.build_model(), items, bundle.knowledge.to_hetero(), dims_of(data.encoded.vectors))
    probs = bundle.calibration.apply(raw)  # what the registered model serves
    metrics = classification_metrics(y, probs, bundle.classes) | {"ece": expected_calibration_error(probs, y)}
    metrics |= {"ece_uncalibrated": expected_calibration_error(raw, y)} | bundle.calibration.test_metrics(probs, y)
    title = f"{name}: test split (n={len(y)})"
    pngs = [
        confusion_png(confusion(y, probs.argmax(1), len(bundle.classes)), bundle.classes, title, out / f"confusion_{name}.png"),
        roc_png(y, probs, bundle.classes, title, out / f"roc_{name}.png"),
        reliability_png(raw, y, f"{title}, uncalibrated", out / f"reliability_uncalibrated_{name}.png"),
        reliability_png(probs, y, f"{title}, T={bundle.calibration.temperature:.2f}", out / f"reliability_{name}.png"),
    ]
    runs.log_evaluation(wf, name, metrics, pngs)
    return metrics, {"model": name, "n": len(y), **ablation_row(y, raw, without)}  # argmax: calibration-free


RESULT_COLUMNS = ("macro_f1", "accuracy", "auroc_ovr", "ece", "ece_uncalibrated", "coverage_target", "coverage",
                  "mean_set_size", "abstention_rate", "accuracy_non_abstained")


def evaluate_stage(wf: WorkflowSpec) -> pd.DataFrame:
    """Test-split metrics and plots of every trained model, the comparison table and the availability chart."""
    from clinicmm.tracking import runs
    from clinicmm.tracking.plots import availability_png, comparison_png

    data = TrainingData(wf)
    out = wf.work / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    table, metrics_by_model, ablation = [], {}, []
    for name in wf.models:
        metrics, row = _evaluate_model(wf, data, name, out)
        metrics_by_model[name] = metrics
        ablation.append(row)
        table.append({"model": name, "n_test": row["n"], **{k: metrics.get(k, np.nan) for k in RESULT_COLUMNS}})
    manifest = data.cohort.manifest
    availability_png(manifest[manifest[Col.STATUS] == "ok"], out / "availability.png")
    results = pd.DataFrame(table)
    results.to_csv(out / "results.csv", index=False)
    _write_json(out / "results.json", metrics_by_model)
    comparison_png(dict(zip(results["model"], results["macro_f1"])), "macro-F1", out / "comparison.png")
    from clinicmm.training.ablation import write_ablation

    write_ablation(ablation, out)  # each modality removed in turn: ablation.csv / ablation.md
    from clinicmm.evaluation import loso

    if loso.wanted(wf):  # split.leave_one_site_out: every site held out in turn, evaluate/sites/
        loso.leave_one_site_out(wf, data=data)
    runs.log_comparison(wf, out)
    runs.log_stage(wf, "evaluate", {f"{r['model']}.test_macro_f1": r["macro_f1"] for _, r in results.iterrows()})
    stages.mark_done(wf, "evaluate", {"results": results.to_dict(orient="records")}, digest_bytes(json.dumps(metrics_by_model, sort_keys=True)))
    return results


# -------------------------------------------------------------------------------------------- register


def register_stage(wf: WorkflowSpec) -> dict[str, str]:
    """Log the primary model as an MLflow pyfunc, register it and point the alias at the new version."""
    from clinicmm.tracking import runs

    bundle_dir = _need(wf.work / "train" / wf.primary_model, "train")
    results = _need(wf.work / "evaluate" / "results.json", "evaluate")
    metrics = json.loads(results.read_text()).get(wf.primary_model, {})
    registered = runs.register(wf, bundle_dir, metrics)
    runs.log_stage(wf, "register", params={k: registered[k] for k in ("name", "version", "alias")})
    stages.mark_done(wf, "register", registered, digest_bytes(registered["name"], registered["version"]))
    return registered


# --------------------------------------------------------------------------------------------- predict


def predict_stage(wf: WorkflowSpec) -> dict:
    """Score the workflow's own dataset with the model the register stage registered."""
    import os

    from clinicmm.predict import predict
    from clinicmm.tracking.pyfunc import CACHE_ENV

    registered = stages.summary(wf, "register") or register_stage(wf)
    out = wf.work / "predict" / "predictions.csv"
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(wf.work / "cache")  # same encoders, same fingerprints: the encode stage's cache hits
    try:
        preds = predict(registered["uri"], wf.dataset_path, out, overwrite=True)
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous
    result = {"predictions": str(out), "scored": int((preds["status"] == "scored").sum()), "patients": len(preds)}
    from clinicmm.tracking import runs

    run_id = runs.log_stage(wf, "predict", {"patients": result["patients"], "scored": result["scored"]}, params={"model_uri": registered["uri"]})
    from clinicmm.privacy.tracking import log_safe_table

    log_safe_table(wf, run_id, preds, "predictions_pseudonymised.csv")  # ids keyed-hashed, free text left out
    stages.mark_done(wf, "predict", result)
    return result


STAGE_FUNCTIONS = {
    "ingest": ingest_stage,
    "encode": encode_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
    "register": register_stage,
    "predict": predict_stage,
}


def run(wf: WorkflowSpec, progress: bool = True, force: bool = False) -> dict:
    """Every stage in order, skipping those whose record matches their current fingerprint.

    A rerun after a crash or a kill resumes at the first stage without a current record; ``force`` reruns all.
    Returns what the CLI prints: the per-stage status, the results table, the registration, the predictions.
    """
    from clinicmm.tracking.setup import configure

    configure(wf.tracking)
    distributed.check_launch(wf.training)  # before ingest and encode, not after them
    status = {}
    for name in stages.ORDER:
        if name == "encode" and wf.encoders.text.lora is not None:  # the LoRA adapter first: the encoder reads it
            from clinicmm.text.finetune import finetune_if_stale

            status["finetune-text"] = finetune_if_stale(wf, force, progress) if distributed.is_zero() else "rank 0"
            distributed.barrier()
        if name == "encode" and wf.encoders.image.train is not None:  # trained image weights first: encode loads them
            from clinicmm.imaging.train import train_if_stale

            status["train-image"] = train_if_stale(wf, force, progress) if distributed.is_zero() else "rank 0"
            distributed.barrier()
        # rank 0 decides for every rank (the others need not walk the inputs for an answer agree() drops)
        if distributed.agree(not force and distributed.is_zero() and stages.is_current(wf, name)):
            log.info("%s: up to date, skipped", name)
            status[name] = "skipped (up to date)"
            continue
        fn = STAGE_FUNCTIONS[name]
        if name in distributed.EVERY_RANK or distributed.is_zero():
            fn(wf, progress) if name == "train" else fn(wf)
        if name == "ingest":
            distributed.barrier()  # the other ranks encode from rank 0's ingest
        status[name] = "ran"
    # Every rank leaves together: a rank that exits (and tears down its process group) while rank 0 still
    # evaluates, registers and predicts can abort, and the launcher then stops rank 0 too.
    distributed.barrier()
    if not distributed.is_zero():  # evaluate, register and predict ran on rank 0
        return {"stages": status}
    results = pd.read_csv(wf.work / "evaluate" / "results.csv")
    return {"stages": status, "results": results, "registered": stages.summary(wf, "register"), **stages.summary(wf, "predict")}
