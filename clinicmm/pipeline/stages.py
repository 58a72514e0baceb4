"""The workflow's stages, one function each, in the order of :data:`clinicmm.pipeline.registry.ORDER`:
ingest → (finetune-text) → (train-image) → encode → train → evaluate → register → predict.

Each reads the previous stage's files under the workflow's ``workdir``, calls one library function of its stage
package, records itself in the stage registry and returns a typed result:

```
workdir/ingest/    cohort.parquet, series/notes/expression/samples/mutations.parquet, report.json, report.md
workdir/finetune_text/  adapter/ (only with encoders.text.lora)
workdir/train_image/    weights.safetensors, head.safetensors, curves.png (only with encoders.image.train)
workdir/cache/     embedding cache (image/, note/), keyed by encoder fingerprint + input content
workdir/encode/    embeddings.npz, evidence.json, genomics.json, encoders.json
workdir/train/     <model>/ bundle (model.json, calibration.json, weights.safetensors, genomics.json, graph/), history.json
workdir/evaluate/  results.csv, results.json, confusion_<model>.png, comparison.png
workdir/register/  (the registered name, version and URI: in its stage.json)
workdir/predict/   predictions.csv of the workflow's own dataset
workdir/<stage>/stage.json  the stage registry's record of a finished stage (clinicmm.pipeline.registry)
workdir/runs.json  the MLflow run ids of this workflow (parent and one child per model)
```
The CLI verbs call these functions and print their results; no logic lives in the CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.config import WorkflowSpec, dump, load_dataset
from clinicmm.files import atomic_write_bytes, digest_bytes, digest_files
from clinicmm.keys import Modality, Split
from clinicmm.pipeline import distributed
from clinicmm.pipeline import registry as stages
from clinicmm.pipeline.lock import locked

log = logging.getLogger("clinicmm")


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


# ---------------------------------------------------------------------------------------------- ingest


@locked("ingest")
def ingest_stage(wf: WorkflowSpec, progress: bool = True):
    """Index, link, split and check the dataset; returns the :class:`~clinicmm.ingest.cohort.Cohort`."""
    from clinicmm.ingest.cohort import ingest, shown_hints

    cohort = ingest(load_dataset(wf.dataset_path), wf.work / "ingest")
    r = cohort.report
    # every written table, not only the manifest: a changed note text or expression value must make encode stale
    tables = [cohort.table_path(wf.work / "ingest", name) for name in cohort.written()]
    content = digest_bytes(digest_files(tables), json.dumps(r, sort_keys=True, default=str))
    stages.mark_done(wf, "ingest", {"patients": r["patients"], "skipped": len(r["skipped"])}, content)
    log.info(
        "ingest: %d usable patients (%d labelled), %d skipped inputs",
        r["patients"]["usable"],
        r["patients"]["labelled"],
        len(r["skipped"]),
    )
    for hint in shown_hints(r):  # data and labels that name their patients differently
        log.warning(hint)
    return cohort


# ---------------------------------------------------------------------------- encoders trained on labels


@locked("finetune-text")
def finetune_text_stage(wf: WorkflowSpec, progress: bool = True):
    """LoRA adapter of the text encoder on the train split's notes (``encoders.text.lora``); returns its
    :class:`~clinicmm.encode.text.finetune.TextAdapter`."""
    from clinicmm.encode.text.finetune import finetune_text

    record = finetune_text(wf, progress)
    stages.mark_done(wf, "finetune-text", asdict(record), digest_bytes(*stages.tree_digest(Path(record.adapter))))
    return record


@locked("train-image")
def train_image_stage(wf: WorkflowSpec, progress: bool = True):
    """The image network and head trained on the train split's labels (``encoders.image.train``), logged to an
    MLflow run of its own; returns its :class:`~clinicmm.encode.imaging.train.ImageTraining`."""
    from clinicmm.encode.imaging.train import folder, train_image
    from clinicmm.tracking.runs import log_train_image

    record = train_image(wf, progress)
    record.run_id = log_train_image(wf, asdict(record), folder(wf) / "curves.png")
    stages.mark_done(wf, "train-image", asdict(record), digest_files([record.weights, record.head]))
    return record


# ---------------------------------------------------------------------------------------------- encode


@locked("encode")
def encode_stage(wf: WorkflowSpec, progress: bool = True):
    """Every patient's embeddings and graph links; returns the :class:`~clinicmm.encode.featurizer.EncodedCohort`."""
    from clinicmm.encode.featurizer import EncodedCohort, Featurizer, encode_cohort
    from clinicmm.encode.genomics import fit_genomics
    from clinicmm.encode.shards import encode_sharded
    from clinicmm.ingest.cohort import Cohort
    from clinicmm.knowledge.graph import load_knowledge
    from clinicmm.pseudo import naming, workflow_key
    from clinicmm.training.data import need

    cohort = Cohort.load(need(wf.work / "ingest", "ingest"))
    pre = fit_genomics(wf, cohort)
    featurizer = Featurizer(wf.encoders, load_knowledge(wf), pre, cache_dir=wf.work / "cache", progress=progress)
    out = wf.work / "encode"
    patients = cohort.patients(labelled=False)
    names = naming(workflow_key(wf), patients)  # evidence.json names patients by keyed pseudonym, never by id
    if distributed.world_size() > 1:  # under torchrun: each rank encodes its shard, rank 0 checks and merges
        encoded = encode_sharded(
            cohort,
            featurizer,
            patients,
            out / "shards",
            stages.fingerprint(wf, "encode"),
            distributed.rank(),
            distributed.world_size(),
            distributed.barrier,
            names,
        )
        if encoded is None:  # not rank 0: wait until rank 0 has written the merged embeddings
            distributed.barrier()
            return EncodedCohort.load(out, names[1])
    else:
        encoded = encode_cohort(cohort, featurizer, patients)
    encoded.save(out, names[0])
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


@dataclass
class TrainedModel:
    """One model the train stage fitted: its epochs, its best epoch's row of history and its bundle folder."""

    epochs: int
    best: dict
    bundle: str


@locked("train")
def train_stage(wf: WorkflowSpec, progress: bool = True) -> dict[str, TrainedModel]:
    """Fit every model of the workflow on the same split through :func:`clinicmm.training.fit.fit_model`; one
    MLflow child run each, a calibrated bundle each."""
    import mlflow

    from clinicmm.fusion.models.wrappers import ensemble_of, offset_of, reads_gene_sets
    from clinicmm.tracking import runs
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.calibration import fit_calibration
    from clinicmm.training.data import TrainingData
    from clinicmm.training.fit import fit_model, predict_proba, trained_epochs

    distributed.check_launch(wf.training)
    data = TrainingData(wf)
    train_rows, (val_items_rows, val_y) = data.rows(Split.TRAIN), data.rows(Split.VAL)
    val_y = np.array(val_y)
    results: dict[str, TrainedModel] = {}
    tracked = distributed.is_zero()  # under DDP every rank fits; rank 0 alone logs, saves and records
    with runs.workflow_run(wf, data.cohort) if tracked else contextlib.nullcontext():
        if tracked:
            _log_upstream_stages(wf, data)
        for name in wf.models:
            with runs.child_run(wf, name) if tracked else contextlib.nullcontext() as child:
                t = wf.training
                fitted = fit_model(
                    name,
                    data,
                    train_rows,
                    (val_items_rows, val_y),
                    t,
                    runs.epoch_logger(child) if tracked else None,
                    progress,
                    distributed.checkpoint_dir(wf, name),
                )
                if not tracked:
                    continue
                val_items, _ = data.items(Split.VAL, fitted.scaler)
                val_probs = predict_proba(fitted.model, val_items, fitted.hetero, fitted.dims)
                bundle = ModelBundle(
                    name,
                    data.classes,
                    fitted.dims,
                    t.hidden,
                    t.dropout,
                    wf.encoders,
                    data.fingerprints,
                    fitted.scaler,
                    fitted.model.state_dict(),
                    data.kg,
                    data.genomics,
                    extra={"workflow": wf.name},
                    calibration=fit_calibration(name, val_probs, val_y, wf.calibration),
                    offset=offset_of(fitted.model),
                    ensemble=ensemble_of(fitted.model),
                    gene_set_input=reads_gene_sets(fitted.model),
                )
                out = bundle.save(wf.work / "train" / name)
                runs.log_calibration(name, bundle.calibration, val_probs, val_y, out)
                _write_json(out / "history.json", fitted.history)
                runs.log_training(child, name, fitted.model, fitted.history, out)
                best = min(fitted.history, key=lambda h: h["val_loss"]) if fitted.history else {}
                best = best | {"n_val": len(val_y)}  # the champion's margin: one standard error on this many patients
                results[name] = TrainedModel(trained_epochs(fitted.history), best, str(out))
                members = bundle.ensemble
                log.info(
                    "train %s%s: %d epochs, best val_loss %.3f, val macro-F1 %.3f",
                    name,
                    f" (ensemble of {members} networks)" if members > 1 else "",
                    trained_epochs(fitted.history),
                    best.get("val_loss", np.nan),
                    best.get("val_macro_f1", np.nan),
                )
        if not tracked:
            distributed.barrier()  # leave together with rank 0 once it has saved and recorded the models
            return {}
        mlflow.log_dict({n: {"epochs": r.epochs, **r.best} for n, r in results.items()}, "training_summary.json")
    distributed.drop_checkpoints(wf)  # every model finished: a forced rerun trains afresh
    weights = [
        digest_files([Path(r.bundle) / f for f in ("weights.safetensors", "model.json", "calibration.json")])
        for r in results.values()
    ]
    stages.mark_done(
        wf, "train", {n: {"epochs": r.epochs, **r.best} for n, r in results.items()}, digest_bytes(*weights)
    )
    distributed.barrier()
    return results


def _log_upstream_stages(wf: WorkflowSpec, data) -> None:
    """Nested runs for ingest and encode (they ran before the parent run existed): counts and fingerprints."""
    from clinicmm.tracking import runs

    report = data.cohort.report
    ingest_metrics = {f"patients_{k}": v for k, v in report["patients"].items()} | {
        "skipped_inputs": len(report["skipped"])
    }
    ingest_metrics |= {f"{m}_present": c["present"] for m, c in report["modalities"].items()}
    runs.log_stage(wf, "ingest", ingest_metrics, artifacts={"ingest_summary.json": runs.ingest_summary(report)})
    stats = data.encoded.stats
    encode_metrics = {f"{m}_{k}": v for m, s in stats.items() for k, v in s.items()}
    runs.log_stage(wf, "encode", encode_metrics, params={f"fingerprint.{m}": fp for m, fp in data.fingerprints.items()})
    if wf.encoders.image.train is not None:  # the train-image run, when that stage ran
        runs.attach_to_parent(stages.summary(wf, "train-image").get("run_id"), runs.read_runs(wf)["parent"])


# ------------------------------------------------------------------------------- interrupted attempts


def _record_time(wf: WorkflowSpec, name: str) -> float:
    """When stage ``name`` last recorded that it finished (0: never)."""
    path = stages.record_path(wf, name)
    return path.stat().st_mtime if path.is_file() else 0.0


def _supersede_orphan(wf: WorkflowSpec, name: str) -> None:
    """The stage run an attempt killed after logging it but before recording the stage is ended as KILLED, so
    that the stage's new run is its one FINISHED run (a run logged before the stage's last record is history and
    stays)."""
    from mlflow.exceptions import MlflowException

    from clinicmm.errors import StageError
    from clinicmm.tracking import runs

    try:
        run_id = runs.read_runs(wf).get("stages", {}).get(name)
        if not run_id:
            return
        client, _ = runs.client_for(wf)
        run = client.get_run(run_id)
    except (StageError, MlflowException, ValueError):
        return
    if run.info.status == "FINISHED" and run.info.start_time / 1000 > _record_time(wf, name):
        log.info("%s: the MLflow run of an interrupted attempt (%s) is ended as KILLED", name, run_id)
        runs.supersede(wf, run_id)


def _adopt_interrupted(wf: WorkflowSpec, model: str, metrics: dict, reason: str):
    """What a register stage killed half way left behind, for ``model``'s training run: a model version it
    registered is **reused** (alias, tags and description completed; no second version), and a logged model it
    logged but never registered is **deleted** (nothing references it). Returns the reused
    :class:`~clinicmm.serve.register.Registration`, or None when there is nothing to reuse."""
    from clinicmm.serve.register import complete
    from clinicmm.tracking import runs

    client, recorded = runs.client_for(wf)
    run_id = recorded["models"].get(model)
    if run_id is None:
        return None
    since = _record_time(wf, "register")
    name = wf.tracking.registered_model
    try:
        every = list(client.search_model_versions(f"name='{name}'"))
    except Exception:  # no such registered model yet
        every = []
    versions = [v for v in every if v.run_id == run_id]
    # a version names its logged model by model_id or, in a sqlite store, only by its source models:/<model id>
    referenced = {v.model_id for v in every} | {str(v.source).removeprefix("models:/") for v in every}
    for logged in client.search_logged_models([recorded["experiment_id"]], f"source_run_id = '{run_id}'"):
        if logged.model_id not in referenced and logged.creation_timestamp / 1000 > since:
            log.info("register: deleting logged model %s, logged by an interrupted attempt and never registered",
                     logged.model_id)  # fmt: skip
            client.delete_logged_model(logged.model_id)
    orphans = [v for v in versions if v.creation_timestamp / 1000 > since and v.status == "READY"]
    if not orphans:
        return None
    version = str(max(int(v.version) for v in orphans))
    log.info("register: reusing version %s of %s, registered by an interrupted attempt", version, name)
    return complete(wf, client, version, model, metrics, reason, recorded["tracking_uri"])


def finished_runs(wf: WorkflowSpec) -> tuple[dict[str, float], frozenset[str]]:
    """For :func:`clinicmm.tracking.runs.end_interrupted`: the runs of the last *finished* training (its parent and
    model runs, each with the time before which it must have started) and the runs to keep whatever their parent
    (the ``train-image`` run, which the next training adopts)."""
    from clinicmm.errors import StageError
    from clinicmm.tracking import runs

    finished: dict[str, float] = {}
    trained = _record_time(wf, "train")
    try:
        recorded = runs.read_runs(wf)
        if trained:
            finished = {r: trained for r in [recorded.get("parent"), *recorded.get("models", {}).values()] if r}
    except (StageError, ValueError):
        pass
    keep = frozenset(r for r in [stages.summary(wf, "train-image").get("run_id")] if r)
    return finished, keep


# -------------------------------------------------------------------------------------------- evaluate


@locked("evaluate")
def evaluate_stage(wf: WorkflowSpec, progress: bool = True) -> pd.DataFrame:
    """Test-split metrics and plots of every trained model, the comparison table and the availability chart."""
    from clinicmm.evaluation.evaluate import evaluate
    from clinicmm.tracking import runs
    from clinicmm.training.data import TrainingData

    _supersede_orphan(wf, "evaluate")
    results, metrics_by_model = evaluate(wf, TrainingData(wf))
    runs.log_stage(wf, "evaluate", {f"{r['model']}.test_macro_f1": r["macro_f1"] for _, r in results.iterrows()})
    stages.mark_done(
        wf,
        "evaluate",
        {"results": results.to_dict(orient="records")},
        digest_bytes(json.dumps(_rounded(metrics_by_model), sort_keys=True)),
    )
    return results


# the evaluate digest reads metrics to this many decimals: the same models scored with another CPU thread count (the
# default follows the machine's load per stage) sum in another order, moving probabilities by ~5e-7 and metrics in
# their last bits, which would make register and predict stale after a resumed evaluate that changed nothing
DIGEST_DECIMALS = 6


def _rounded(value):
    """``value`` (nested dicts / lists of metrics) with every float rounded to :data:`DIGEST_DECIMALS` decimals."""
    if isinstance(value, float):
        return round(value, DIGEST_DECIMALS) if value == value else "nan"
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


# -------------------------------------------------------------------------------------------- register


@locked("register")
def register_stage(wf: WorkflowSpec, progress: bool = True):
    """Log the champion (``primary_model``: ``auto`` picks it by validation, :mod:`clinicmm.training.champion`) as an
    MLflow pyfunc, register it and point the alias at the new version; returns the
    :class:`~clinicmm.serve.register.Registration` (which model, and why)."""
    from clinicmm.evaluation.evaluate import bundle_dir
    from clinicmm.serve.register import register
    from clinicmm.tracking import runs
    from clinicmm.training.champion import choose
    from clinicmm.training.data import need

    results = json.loads(need(wf.work / "evaluate" / "results.json", "evaluate").read_text())
    champion = choose(list(wf.models), stages.summary(wf, "train"), wf.primary_model)
    log.info("register: %s (%s)", champion.model, champion.reason)
    metrics = results.get(champion.model, {})
    _supersede_orphan(wf, "register")
    registered = _adopt_interrupted(wf, champion.model, metrics, champion.reason) or register(
        wf, champion.model, bundle_dir(wf, champion.model), metrics, champion.reason
    )
    params = {
        "name": registered.name,
        "version": registered.version,
        "alias": registered.alias,
        "model": champion.model,
    }
    runs.log_stage(wf, "register", params=params, tags={"clinicmm.champion_reason": champion.reason})
    stages.mark_done(wf, "register", registered.to_dict(), digest_bytes(registered.name, registered.version))
    return registered


# --------------------------------------------------------------------------------------------- predict


@dataclass
class Predicted:
    """The predict stage's outcome: where the predictions are and how many patients were scored."""

    predictions: str
    scored: int
    patients: int


def registered(wf: WorkflowSpec):
    """The registration the register stage recorded (registering now when it has not run)."""
    from clinicmm.serve.register import Registration

    summary = stages.summary(wf, "register")
    return Registration(**summary) if summary else register_stage(wf)


@locked("predict")
def predict_stage(wf: WorkflowSpec, progress: bool = True) -> Predicted:
    """Score the workflow's own dataset with the model the register stage registered."""
    import os

    from clinicmm.privacy.tracking import log_safe_table
    from clinicmm.serve.predict import predict
    from clinicmm.serve.pyfunc import CACHE_ENV
    from clinicmm.tracking import runs

    model = registered(wf)
    _supersede_orphan(wf, "predict")
    out = wf.work / "predict" / "predictions.csv"
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(wf.work / "cache")  # same encoders, same fingerprints: the encode stage's cache hits
    try:
        preds = predict(model.uri, wf.dataset_path, out, overwrite=True)
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous
    result = Predicted(str(out), int((preds["status"] == "scored").sum()), len(preds))
    run_id = runs.log_stage(
        wf, "predict", {"patients": result.patients, "scored": result.scored}, params={"model_uri": model.uri}
    )
    log_safe_table(wf, run_id, preds, "predictions_pseudonymised.csv")  # ids keyed-hashed, free text left out
    stages.mark_done(wf, "predict", asdict(result))
    return result


FUNCTIONS = {
    "ingest": ingest_stage,
    "finetune-text": finetune_text_stage,
    "train-image": train_image_stage,
    "encode": encode_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
    "register": register_stage,
    "predict": predict_stage,
}
