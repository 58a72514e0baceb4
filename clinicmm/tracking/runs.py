"""The workflow's MLflow runs: one parent run per training, one child run per model.

Run ids are kept in ``workdir/runs.json`` so that ``evaluate`` and ``register`` (separate CLI verbs) log to the
runs ``train`` created. What goes to MLflow is configuration, counts, metrics, plots and model files: never a
patient id, name or note text (the ingest report is logged as counts only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from clinicmm import __version__
from clinicmm.config import WorkflowSpec, dump
from clinicmm.errors import StageError
from clinicmm.files import atomic_write_bytes
from clinicmm.tracking.setup import configure, experiment_id, flatten

log = logging.getLogger("clinicmm")

PID_TAG, HOST_TAG = "clinicmm.pid", "clinicmm.host"  # which process created a run (no patient data)
THREADS_TAG = "clinicmm.threads"  # the CPU threads it ran with (runtime.threads)
INTERRUPTED_TAG = "clinicmm.interrupted"  # "signal": ended by a signal handler, not yet tidied; "true": tidied
SIGNALLED = "signal"
_open_runs: set[str] = set()  # runs created through the client and not yet terminated (ended on a signal)


def process_tags() -> dict[str, str]:
    """The tags that say which process created a run, so that a later run can tell a dead one's runs."""
    import torch

    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), THREADS_TAG: str(torch.get_num_threads())}


def _runs_file(wf: WorkflowSpec) -> Path:
    return wf.work / "runs.json"


def read_runs(wf: WorkflowSpec) -> dict:
    path = _runs_file(wf)
    if not path.is_file():
        raise StageError(f"{path} is missing: run `clinicmm train` for this workflow first.")
    return json.loads(path.read_text())


def _write_runs(wf: WorkflowSpec, runs: dict) -> None:
    atomic_write_bytes(_runs_file(wf), json.dumps(runs, indent=1).encode())


def dataset_digest(cohort) -> str:
    """sha256 of the cohort's (patient, label, split) rows: changes with the data, reveals no id."""
    m = cohort.manifest.sort_values("patient_id")
    text = "\n".join(f"{p}\t{lab}\t{s}" for p, lab, s in zip(m["patient_id"], m["label"], m["split"]))
    return hashlib.sha256(text.encode()).hexdigest()


def ingest_summary(report: dict) -> dict:
    """The ingest report without anything identifying: counts only."""
    skipped: dict[str, int] = {}
    for s in report.get("skipped", []):
        skipped[s["modality"]] = skipped.get(s["modality"], 0) + 1
    keep = ("dataset", "patients", "modalities", "splits", "labels", "genes")  # genes: resolution counts
    return {k: report.get(k) for k in keep} | {"skipped_by_modality": skipped, "issues": len(report.get("issues", []))}


def dataset_source(dataset_path):
    """The MLflow ``DatasetSource`` of a dataset YAML (its file URI): what every logged input of it names."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # MLflow registers its local-file source twice and warns that it picks one
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(Path(dataset_path).resolve().as_uri())


def _log_dataset(cohort, digest: str, dataset_path=None) -> None:
    """``mlflow.log_input`` of the cohort's (split, label, patients) counts, its source the dataset YAML."""
    import mlflow
    import pandas as pd

    m = cohort.manifest
    counts = (
        m[m["split"] != ""]
        .groupby(["split", "label"])
        .size()
        .reset_index(name="patients")
        .astype({"patients": "float64"})
    )
    source = dataset_source(dataset_path) if dataset_path is not None else None
    dataset = mlflow.data.from_pandas(pd.DataFrame(counts), source=source, name="cohort", digest=digest[:16])
    mlflow.log_input(dataset, context="training")


@contextlib.contextmanager
def top_run(wf: WorkflowSpec, cohort, run_name: str, stage: str):
    """Open a top-level run of ``wf`` (the workflow's, or compare's): tracking configured, the experiment made
    active, the config as params, version / dataset-digest / stage tags and the ingest counts.

    Yields ``(run, tracking URI, dataset digest)``.
    """
    import mlflow

    uri = configure(wf.tracking)
    exp = experiment_id(wf.tracking.experiment, uri)
    digest = dataset_digest(cohort)
    mlflow.set_experiment(experiment_id=exp)  # child runs and logged models follow the active experiment
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=process_tags()) as run:
        mlflow.log_params(flatten(dump(wf)))
        mlflow.set_tags(
            {"clinicmm.version": __version__, "clinicmm.dataset_digest": digest, "clinicmm.stage": stage}
            | process_tags()
        )
        mlflow.log_dict(ingest_summary(cohort.report), "ingest/summary.json")
        yield run, uri, digest


@contextlib.contextmanager
def workflow_run(wf: WorkflowSpec, cohort):
    """Start the workflow's parent run and record its id."""
    import mlflow

    with top_run(wf, cohort, wf.name, "workflow") as (run, uri, digest):
        mlflow.log_dict(dump(wf), "config/workflow.json")
        _log_dataset(cohort, digest, wf.dataset_path)
        _write_runs(
            wf, {"tracking_uri": uri, "experiment_id": run.info.experiment_id, "parent": run.info.run_id, "models": {}}
        )
        yield run


@contextlib.contextmanager
def child_run(wf: WorkflowSpec, name: str):
    import mlflow

    with mlflow.start_run(run_name=name, nested=True, tags=process_tags()) as run:
        mlflow.set_tags({"clinicmm.model": name, "clinicmm.stage": "train"} | process_tags())
        runs = read_runs(wf)
        runs["models"][name] = run.info.run_id
        _write_runs(wf, runs)
        yield run


def epoch_logger(run):
    """A callback that logs one epoch's losses and val macro-F1 to ``run`` as MLflow metrics."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()

    def log(row: dict) -> None:
        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, int(row["epoch"])) for k, v in row.items() if k != "epoch" and v == v]
        client.log_batch(run.info.run_id, metrics=metrics)

    return log


def log_training(run, name: str, model, history: list[dict], bundle_dir: Path) -> None:
    import mlflow

    from clinicmm.fusion.models.wrappers import ensemble_of
    from clinicmm.tracking.plots import curves_png

    mlflow.log_params({"model": name, "n_parameters": sum(p.numel() for p in model.parameters())})
    if history:
        best = min(history, key=lambda h: h["val_loss"])
        mlflow.log_metrics(
            {"best_val_loss": best["val_loss"], "best_val_macro_f1": best["val_macro_f1"], "best_epoch": best["epoch"]}
        )
        members = ensemble_of(model)
        mlflow.log_artifact(str(curves_png(history, name, bundle_dir / "curves.png", members)), "plots")


def client_for(wf: WorkflowSpec):
    import mlflow
    from mlflow import MlflowClient

    runs = read_runs(wf)
    mlflow.set_tracking_uri(runs["tracking_uri"])
    mlflow.set_registry_uri(runs["tracking_uri"])
    # MLflow 3 files a logged model under the *active* experiment, not the resumed run's: set it explicitly
    mlflow.set_experiment(experiment_id=runs["experiment_id"])
    return MlflowClient(runs["tracking_uri"]), runs


def log_evaluation(wf: WorkflowSpec, name: str, metrics: dict[str, float], pngs: list[Path]) -> None:
    client, runs = client_for(wf)
    run_id = runs["models"].get(name)
    if run_id is None:
        raise StageError(f"no MLflow run recorded for model {name!r} in {_runs_file(wf)}: run `clinicmm train` again.")
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"test_{k}", v, ts, 0) for k, v in metrics.items() if v == v])
    for png in pngs:
        client.log_artifact(run_id, str(png), "plots")


def log_comparison(wf: WorkflowSpec, folder: Path) -> None:
    import pandas as pd
    from mlflow.entities import Metric

    client, runs = client_for(wf)
    results = pd.read_csv(folder / "results.csv")
    ts = int(time.time() * 1000)
    metrics = [Metric(f"test_macro_f1.{m}", float(v), ts, 0) for m, v in zip(results["model"], results["macro_f1"])]
    client.log_batch(runs["parent"], metrics=metrics)
    ablation = [n for n in ("ablation.csv", "ablation.md") if (folder / n).is_file()]  # missing-modality tables
    for name in ("results.csv", "comparison.png", "availability.png", *ablation):
        client.log_artifact(runs["parent"], str(folder / name), "evaluation")


def promote(name: str, version: str, alias: str, tracking_uri: str | None = None) -> str | None:
    """Point ``alias`` of registered model ``name`` at ``version``; returns the version it pointed at before."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clinicmm.config import TrackingSpec
    from clinicmm.errors import ModelError

    client = MlflowClient(configure(TrackingSpec(uri=tracking_uri)))
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelError(
            f"model {name!r} has no version {version!r} in this registry ({exc.error_code}). "
            "List them with `mlflow models` or the MLflow UI."
        ) from None
    try:
        previous = client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, alias, version)
    return previous


def log_stage(
    wf: WorkflowSpec,
    stage: str,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    artifacts: dict[str, dict] | None = None,
    tags: dict[str, str] | None = None,
    files: dict[str, list[Path]] | None = None,
) -> str:
    """A finished child run of the workflow's parent run for one stage (counts and settings only, no ids);
    ``files``: artifact folder -> local files to log there before the run is marked finished."""
    from mlflow.entities import Metric, Param

    client, runs = client_for(wf)
    run = client.create_run(
        runs["experiment_id"],
        run_name=stage,
        tags={"mlflow.parentRunId": runs["parent"], "clinicmm.stage": stage} | process_tags() | (tags or {}),
    )
    run_id = run.info.run_id
    _open_runs.add(run_id)
    ts = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items() if v == v],
        params=[Param(k, str(v)[:500]) for k, v in (params or {}).items()],
    )
    for name, data in (artifacts or {}).items():
        client.log_dict(run_id, data, name)
    for folder, paths in (files or {}).items():
        for path in paths:
            client.log_artifact(run_id, str(path), folder)
    client.set_terminated(run_id)
    _open_runs.discard(run_id)
    runs.setdefault("stages", {})[stage] = run_id
    _write_runs(wf, runs)
    return run_id


def log_train_image(wf: WorkflowSpec, record: dict, curves: Path) -> str:
    """An MLflow run ``train-image``: settings, per-epoch metrics, counts and the loss curves (``curves``, a PNG
    path to write; no patient ids). Returns its id."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from clinicmm.tracking.plots import curves_png

    uri = configure(wf.tracking)
    exp = experiment_id(wf.tracking.experiment, uri)
    spec = dump(wf.encoders.image)
    params = flatten({k: v for k, v in spec.items() if k not in ("weights", "train")}, "image.") | flatten(
        {k: v for k, v in spec["train"].items() if k != "output"}, "train."
    )
    params |= {"classes": len(record["classes"]), "pretrained_weights": spec["weights"] is not None}
    client = MlflowClient()
    run = client.create_run(
        exp,
        run_name="train-image",
        tags={"clinicmm.stage": "train-image", "clinicmm.workflow": wf.name} | process_tags(),
    )
    run_id = run.info.run_id
    _open_runs.add(run_id)
    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, int(row["epoch"])) for row in record["history"] for k, v in row.items()
               if k != "epoch" and v == v]  # fmt: skip
    metrics += [Metric(f"series_{k}", float(v), ts, 0) for k, v in record["series"].items()]
    metrics.append(Metric("best_epoch", float(record["best_epoch"]), ts, 0))
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)[:500]) for k, v in params.items()])
    rows = [{**h, "val_macro_f1": h["val_accuracy"]} for h in record["history"]]  # curves_png's third line
    png = curves_png(rows, "image encoder (val accuracy in green)", curves)
    client.log_artifact(run_id, str(png), "plots")
    client.set_terminated(run_id)
    _open_runs.discard(run_id)
    return run_id


def attach_to_parent(run_id: str | None, parent_run_id: str) -> None:
    """Make a run that ran before the workflow's parent run existed (``train-image``) a child of it."""
    from mlflow import MlflowClient

    if run_id:
        MlflowClient().set_tag(run_id, "mlflow.parentRunId", parent_run_id)


def log_calibration(name: str, calibration, val_probs, val_y, out: Path) -> None:
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
        mlflow.log_artifact(
            str(reliability_png(val_probs, val_y, f"{title}, uncalibrated", out / "reliability_val_uncalibrated.png")),
            "plots",
        )
        calibrated = calibration.apply(val_probs)
        mlflow.log_artifact(
            str(
                reliability_png(
                    calibrated, val_y, f"{title}, T={calibration.temperature:.2f}", out / "reliability_val.png"
                )
            ),
            "plots",
        )


# ------------------------------------------------------------------------------------------ interruptions


def end_open_runs(status: str = "KILLED") -> list[str]:
    """End every run this process has open (the active fluent runs, innermost first, and those created through
    the client) with ``status``; best effort, never raises. Returns their ids."""
    import sys

    if "mlflow" not in sys.modules:  # this process never used MLflow: no run to end (and no import in a handler)
        return []
    import mlflow
    from mlflow import MlflowClient

    ended = []
    with contextlib.suppress(Exception):
        while (active := mlflow.active_run()) is not None:
            ended.append(active.info.run_id)
            with contextlib.suppress(Exception):  # the next start tidies what this run's attempt left finished
                MlflowClient().set_tag(active.info.run_id, INTERRUPTED_TAG, SIGNALLED)
            mlflow.end_run(status)
    for run_id in list(_open_runs):
        with contextlib.suppress(Exception):
            MlflowClient().set_tag(run_id, INTERRUPTED_TAG, SIGNALLED)
            MlflowClient().set_terminated(run_id, status)
            ended.append(run_id)
        _open_runs.discard(run_id)
    return ended


def _on_signal(signum, frame) -> None:
    ended = end_open_runs("KILLED")
    if ended:
        log.warning("%s: %d MLflow run(s) ended as KILLED", signal.Signals(signum).name, len(ended))
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)  # die of the signal itself, as without the handler
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def ended_on_signal():
    """For the block, SIGTERM and SIGINT first end this process's open MLflow runs as KILLED (not left RUNNING),
    then stop the process as they would have (SIGINT: ``KeyboardInterrupt``). A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _alive(pid: int, started_ms: int) -> bool:
    """True when process ``pid`` of this host runs and started before ``started_ms`` (else the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    try:  # Linux: the process's start time, to tell a reused pid
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= started_ms / 1000 + 1
    except (OSError, ValueError, IndexError, StopIteration):
        return True


def end_interrupted(
    wf: WorkflowSpec, finished: dict[str, float] | None = None, keep: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Tidy the runs an interrupted clinicmm process left in ``wf``'s experiment; returns ``{run id: status}``.

    A run left RUNNING by a process of this host that no longer runs (tags ``clinicmm.pid`` / ``clinicmm.host``)
    is ended as KILLED, and so are the runs nested under it (the stage runs of a killed training), except ``keep``
    (finished stages' runs that a later parent adopts, e.g. ``train-image``). ``finished`` maps runs of work that
    completed to the time (epoch s) their work was recorded finished: such a run that started before it and is
    not FINISHED (a trained model's run that a killed register stage had reopened) is set back to FINISHED.
    Runs of live processes and of other hosts are left alone.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = configure(wf.tracking)
    exp = mlflow.get_experiment_by_name(wf.tracking.experiment)
    if exp is None:
        return {}
    client = MlflowClient(uri)
    host = socket.gethostname()
    changed: dict[str, str] = {}
    done = set()
    for run_id, before in (finished or {}).items():
        with contextlib.suppress(Exception):
            run = client.get_run(run_id)
            if run.info.start_time / 1000 > before:
                continue
            done.add(run_id)
            if INTERRUPTED_TAG in run.data.tags:
                client.delete_tag(run_id, INTERRUPTED_TAG)
            if run.info.status != "FINISHED":
                client.set_terminated(run_id, "FINISHED")
                changed[run_id] = "FINISHED"
    stuck = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    # runs a signal handler ended: their attempt's finished runs (nested under them) are tidied like a dead one's
    signalled = client.search_runs([exp.experiment_id], f"tags.`{INTERRUPTED_TAG}` = '{SIGNALLED}'", max_results=1000)
    dead = [r.info.run_id for r in signalled if r.info.run_id not in done]
    for run in stuck:
        tags = run.data.tags
        if run.info.run_id in done or tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        if int(tags[PID_TAG]) != os.getpid() and not _alive(int(tags[PID_TAG]), run.info.start_time):
            dead.append(run.info.run_id)
    seen: set[str] = set()
    while dead:
        run_id = dead.pop()
        if run_id in seen:
            continue
        seen.add(run_id)
        client.set_tag(run_id, INTERRUPTED_TAG, "true")
        client.set_terminated(run_id, "KILLED")
        changed[run_id] = "KILLED"
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)
        dead += [c.info.run_id for c in children if c.info.run_id not in keep | done]
    if changed:
        log.info(
            "MLflow: %d run(s) of an interrupted clinicmm process ended as KILLED, %d set back to FINISHED",
            sum(v == "KILLED" for v in changed.values()),
            sum(v == "FINISHED" for v in changed.values()),
        )
    return changed


def supersede(wf: WorkflowSpec, run_id: str) -> None:
    """End a finished stage run of an attempt that was killed before its stage record was written as KILLED (the
    stage runs again and logs a new one)."""
    from mlflow import MlflowClient

    client = MlflowClient(configure(wf.tracking))
    client.set_tag(run_id, INTERRUPTED_TAG, "true")
    client.set_terminated(run_id, "KILLED")
