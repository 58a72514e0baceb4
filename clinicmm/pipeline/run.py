"""``clinicmm run``: every stage of the registry in order, skipping those whose record is current.

Also the entry points that need stages run first (``compare``) or read their records (``explain``): they live here,
above every stage package, so no stage package ever imports the pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clinicmm.config import WorkflowSpec
from clinicmm.errors import ConfigError, StageError
from clinicmm.pipeline import distributed, runtime
from clinicmm.pipeline import registry as stages
from clinicmm.pipeline.lock import workdir_lock
from clinicmm.pipeline.stages import FUNCTIONS, finished_runs

log = logging.getLogger("clinicmm")

EVERY_RANK = ("encode", "train")  # the stages every rank takes part in (the others run on rank 0 alone)


@dataclass
class RunSummary:
    """What ``clinicmm run`` prints: each stage's status, the results table, the registration, the predictions."""

    stages: dict[str, str]
    results: pd.DataFrame | None = None
    registered: object = None  # clinicmm.serve.register.Registration
    predicted: object = None  # clinicmm.pipeline.stages.Predicted


def tidy_interrupted(wf: WorkflowSpec) -> dict[str, str]:
    """End the MLflow runs a killed clinicmm process left RUNNING in the workflow's experiment (as KILLED; a
    finished training's runs reopened by a killed register stage as FINISHED). Call it holding the workdir lock,
    before a stage logs anything; a no-op on ranks other than 0. Returns ``{run id: new status}``."""
    if not distributed.is_zero():
        return {}
    from clinicmm.tracking.runs import end_interrupted

    finished, keep = finished_runs(wf)
    return end_interrupted(wf, finished, keep)


def run_stage(wf: WorkflowSpec, name: str, force: bool = False, progress: bool = True) -> str:
    """Run stage ``name`` unless it is not configured or (without ``force``) up to date; the status to print."""
    with workdir_lock(wf.work, name):
        return _run_stage(wf, name, force, progress)


def _run_stage(wf: WorkflowSpec, name: str, force: bool, progress: bool) -> str:
    runtime.apply(wf.runtime.threads)
    s = stages.stage(name)
    if not s.enabled(wf):
        return "not configured"
    # rank 0 decides for every rank (the others need not walk the inputs for an answer agree() drops)
    if distributed.agree(not force and distributed.is_zero() and stages.is_current(wf, name)):
        log.info("%s: up to date, skipped", name)
        return "skipped (up to date)"
    state = "ran"
    if name in EVERY_RANK or distributed.is_zero():
        FUNCTIONS[name](wf, progress)
    elif s.optional:
        state = "rank 0"
    if name == "ingest" or s.optional:
        distributed.barrier()  # the other ranks read rank 0's ingest, adapter and weights
    return state


def run(wf: WorkflowSpec, progress: bool = True, force: bool = False) -> RunSummary:
    """Every stage in order, skipping those whose record matches their current fingerprint.

    A rerun after a crash or a kill resumes at the first stage without a current record; ``force`` reruns all.
    The workdir is locked for the whole run (a second ``clinicmm run`` on it fails at once), the MLflow runs a
    killed earlier run left RUNNING are ended first, and SIGTERM / SIGINT end this run's open MLflow runs as
    KILLED before the process stops.
    """
    from clinicmm.tracking.runs import ended_on_signal
    from clinicmm.tracking.setup import configure

    configure(wf.tracking)
    distributed.check_launch(wf.training)  # before ingest and encode, not after them
    with workdir_lock(wf.work, "run"), ended_on_signal():
        tidy_interrupted(wf)
        status = {}
        for name in stages.ORDER:
            state = run_stage(wf, name, force, progress)
            if state != "not configured":
                status[name] = state
    # Every rank leaves together: a rank that exits (and tears down its process group) while rank 0 still
    # evaluates, registers and predicts can abort, and the launcher then stops rank 0 too.
    distributed.barrier()
    if not distributed.is_zero():  # evaluate, register and predict ran on rank 0
        return RunSummary(status)
    from clinicmm.pipeline.stages import Predicted, registered

    return RunSummary(
        status,
        pd.read_csv(wf.work / "evaluate" / "results.csv"),
        registered(wf),
        Predicted(**stages.summary(wf, "predict")),
    )


def prepare(wf: WorkflowSpec, upto: str = "encode", progress: bool = True) -> None:
    """Run the stages up to ``upto`` that are stale (compare and the notebooks start from encoded patients)."""
    runtime.apply(wf.runtime.threads)
    with workdir_lock(wf.work, "prepare"):
        for name in stages.ORDER[: stages.ORDER.index(upto) + 1]:
            if stages.stage(name).enabled(wf) and not stages.is_current(wf, name):
                log.info("running %s first", name)
                FUNCTIONS[name](wf, progress)


def compare(wf: WorkflowSpec, folds: int | None = None, progress: bool = True):
    """``clinicmm compare``: ingest and encode when stale, then :func:`clinicmm.evaluation.compare.compare`."""
    from clinicmm.evaluation.compare import compare as cross_validate
    from clinicmm.evaluation.compare import refuse_label_trained
    from clinicmm.tracking.runs import ended_on_signal

    refuse_label_trained(wf, "compare")  # before any stage runs, not after them
    with workdir_lock(wf.work, "compare"), ended_on_signal():
        tidy_interrupted(wf)
        prepare(wf, "encode", progress)
        return cross_validate(wf, folds=folds, progress=progress)


def explain_image(wf: WorkflowSpec, patient: str, out: Path | None = None, workflow: str = "WORKFLOW.yaml") -> dict:
    """``clinicmm explain``: Grad-CAM of ``patient``'s image by the trained image encoder (needs train-image)."""
    from clinicmm.serve.gradcam import UNTRAINED, explain_patient

    record = stages.record_path(wf, "train-image")
    if wf.encoders.image.train is None or not record.is_file():
        raise StageError(UNTRAINED.format(workflow=workflow))
    if not stages.is_current(wf, "train-image"):
        raise StageError(
            f"{record}: the trained image encoder is out of date (the cohort or encoders.image changed). "
            f"Run `clinicmm train-image {workflow}` again."
        )
    if wf.encoders.image.network == "vit":
        raise ConfigError(
            "encoders.image.network vit: Grad-CAM needs a convolutional network (resnet10/18/34/50, "
            "densenet121); a ViT has no convolutional feature map to weight."
        )
    with workdir_lock(wf.work, "explain"):
        return explain_patient(wf, stages.summary(wf, "train-image"), patient, out)
