"""The ``clinicmm`` command line. Each verb loads its config, makes one library call and prints a summary.

A ``ClinicmmError`` becomes one red line on stderr and exit code 1; ``--debug`` shows the traceback. Heavy
libraries are imported inside the commands so that ``clinicmm --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clinicmm.errors import ClinicmmError
from clinicmm.pipeline import distributed, runtime

app = typer.Typer(
    name="clinicmm",
    help="Multimodal cancer-type prediction: DICOM imaging + clinical notes + genomics, fused on a knowledge graph.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
kg_app = typer.Typer(help="Inspect the knowledge graph.", no_args_is_help=True)
app.add_typer(kg_app, name="kg")
out = Console()
err = Console(stderr=True)
_state: dict = {"debug": False, "verbose": False, "held": None}  # held: the running command's ExitStack (its lock)
QUIET_RUN_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"  # MLflow's "View run ... at: http://..." per ended run

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A YAML file.")]


def _setup_logging() -> None:
    from rich.logging import RichHandler

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # With a tracking server, MLflow prints two lines ("View run ... at", "View experiment at") for every run it
    # ends: dozens per `clinicmm run`. Off unless --verbose, or the variable is set to false in the environment.
    if _state["verbose"]:
        os.environ[QUIET_RUN_LINKS] = "false"
    else:
        os.environ.setdefault(QUIET_RUN_LINKS, "true")
    handler = RichHandler(console=err, show_path=False)
    handler.addFilter(lambda record: "nvImageCodec" not in record.getMessage())  # MONAI noise on every CPU machine
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.INFO if _state["verbose"] and noisy == "mlflow" else logging.WARNING)


def handled(fn):
    """Run a command; a ClinicmmError becomes one line and exit 1 (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from clinicmm.tracking.runs import ended_on_signal

        _setup_logging()
        try:
            # SIGTERM / SIGINT end the open MLflow runs as KILLED, not left RUNNING; the command's locks are released
            with ended_on_signal(), contextlib.ExitStack() as held:
                _state["held"] = held
                _state["verb"] = fn.__name__.removesuffix("_cmd").replace("_", "-")  # named in the workdir lock
                try:
                    return fn(*args, **kwargs)
                finally:
                    _state["held"] = None
        except ClinicmmError as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # [image]: text
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            err.print("[bold red]interrupted[/]: run the same command again to resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Also show MLflow's own messages: its info log and, with a tracking server, a 'View run' link "
            "per run (off by default; or set MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false).",
        ),
    ] = False,
) -> None:
    _state["debug"] = debug
    _state["verbose"] = verbose


# ------------------------------------------------------------------------------------------------ verbs


@app.command("demo-data")
@handled
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the demo cohort into (new or a previous demo).")],
    patients: Annotated[int, typer.Option(min=12, help="Number of patients.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files.")] = 0,
    missing_rate: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of patients lacking exactly one modality.")
    ] = 0.15,
    single_rate: Annotated[
        Optional[float],
        typer.Option(min=0.0, max=0.9, help="Share of patients with one modality only (default: --missing-rate)."),
    ] = None,
    inject_bad: Annotated[
        bool, typer.Option(help="Add one of each bad input (truncated DICOM, non-DICOM file, ...).")
    ] = False,
) -> None:
    """Write a synthetic demo cohort (real DICOM series, notes CSV, expression TSV, MAF, labels, dataset.yaml).

    Example: [bold]clinicmm demo-data demo_data --patients 200 --seed 0[/]
    """
    from clinicmm.demo.generator import generate_demo

    path = generate_demo(
        out_dir, patients=patients, seed=seed, missing_rate=missing_rate, single_rate=single_rate, inject_bad=inject_bad
    )
    out.print(f"wrote demo cohort of {patients} patients: [bold]{path}[/]")


def _is_workflow(path: Path) -> bool:
    from clinicmm.config.loading import read_yaml

    try:
        data = read_yaml(path)  # size- and alias-limited: a hostile file is refused, not expanded
    except ClinicmmError:
        return False  # loading it as a dataset then says what is wrong
    return "dataset" in data and "workdir" in data


@app.command()
@handled
def validate(config: ExistingFile) -> None:
    """Check a dataset or workflow YAML (and the files it names) without running anything.

    Example: [bold]clinicmm validate workflows/demo.yaml[/]
    """
    from clinicmm.config import load_dataset, load_workflow

    if _is_workflow(config):
        wf = load_workflow(config)
        load_dataset(wf.dataset_path)
        out.print(f"[green]ok[/]: workflow {wf.name!r} and dataset {wf.dataset_path}")
    else:
        spec = load_dataset(config)
        out.print(f"[green]ok[/]: dataset {spec.name!r}")


@app.command("ingest")
@handled
def ingest_cmd(
    config: ExistingFile,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (dataset YAML only).")] = None,
) -> None:
    """Link every modality per patient, split by patient, write the manifest and the ingest report.

    CONFIG is a dataset.yaml (output in --out, default .clinicmm/<name>/ingest) or a workflow YAML (output in
    its workdir). Example: [bold]clinicmm ingest demo_data/dataset.yaml --out work/ingest[/]
    """
    from clinicmm.config import load_dataset, load_workflow
    from clinicmm.ingest.cohort import ingest
    from clinicmm.pipeline.stages import ingest_stage

    if _is_workflow(config):
        wf = load_workflow(config)
        cohort, target = ingest_stage(wf), wf.work / "ingest"
    else:
        spec = load_dataset(config)
        target = out_dir or Path(".clinicmm") / spec.name / "ingest"
        cohort = ingest(spec, target)
    _print_ingest(cohort.report, target)


def _print_ingest(report: dict, target: Path) -> None:
    p = report["patients"]
    table = Table(title=f"ingest: {report['dataset']}")
    for col in ("modality", "present", "missing"):
        table.add_column(col)
    for m, c in report["modalities"].items():
        table.add_row(m, str(c["present"]), str(c["missing"]))
    out.print(table)
    out.print(f"patients: {p['usable']} usable, {p['labelled']} labelled; splits {report['splits']}")
    out.print(f"skipped inputs: {len(report['skipped'])} (reasons in {target / 'report.md'})")
    from clinicmm.ingest.cohort import shown_hints

    for hint in shown_hints(report):  # ids that do not meet: nothing would train
        out.print(f"[yellow]{escape(hint)}[/yellow]")


def _workflow(path: Path):
    from clinicmm.config import load_workflow

    return _configured(load_workflow(path), path)


def _configured(wf, path: Path):
    """Point MLflow at the workflow's store (which exports the absolute URI as MLFLOW_TRACKING_URI), join a
    torchrun job when started by one, lock the workdir for this process (rank 0; a second process on it fails
    at once) and end the MLflow runs a killed earlier process left RUNNING."""
    from clinicmm.pipeline.lock import workdir_lock
    from clinicmm.pipeline.run import tidy_interrupted
    from clinicmm.tracking.setup import configure

    configure(wf.tracking)
    runtime.apply(wf.runtime.threads)
    if distributed.init(wf.training, path) and not distributed.is_zero():  # started by torchrun or srun
        out.quiet = True  # one console report, from rank 0
    lock = workdir_lock(wf.work, _state.get("verb") or "clinicmm")
    if _state["held"] is not None:  # held until the command returns
        _state["held"].enter_context(lock)
    tidy_interrupted(wf)
    return wf


@app.command("finetune-text")
@handled
def finetune_text_cmd(
    workflow: ExistingFile, progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True
) -> None:
    """Fine-tune the note encoder with LoRA (peft) on the train split's notes; needs encoders.text.lora.

    Writes the adapter to WORKDIR/finetune_text/adapter (or encoders.text.adapter_path); the encode stage then
    merges it into the model and, its fingerprint having changed, recomputes the note embeddings.
    Example (with [bold]lora: {r: 8, epochs: 2}[/] under encoders.text): [bold]clinicmm finetune-text workflows/demo.yaml[/]
    """
    from clinicmm.pipeline.stages import finetune_text_stage

    r = finetune_text_stage(_workflow(workflow), progress)
    out.print(
        f"finetune-text: {r.notes} train notes, loss {r.epoch_loss[0]:.3f} → {r.epoch_loss[-1]:.3f}; "
        f"adapter [bold]{r.adapter}[/]",
        soft_wrap=True,
    )


@app.command("train-image")
@handled
def train_image_cmd(
    workflow: ExistingFile, progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True
) -> None:
    """Train the image network (+ a linear head) on the train split's labels; needs encoders.image.train.

    The validation split picks the best epoch (early stopping); the train split is augmented (MONAI random flips,
    affine, intensity). Preprocessed volumes are cached under WORKDIR/cache/image_preprocessed, so later epochs
    and reruns decode no DICOM. Writes WORKDIR/train_image/weights.safetensors, which the encode stage loads
    (the image embeddings are then recomputed), and an MLflow run "train-image".
    Example (with [bold]train: {epochs: 10}[/] under encoders.image): [bold]clinicmm train-image workflows/demo.yaml[/]
    """
    from clinicmm.pipeline.stages import train_image_stage

    r = train_image_stage(_workflow(workflow), progress)
    h, s = r.history, r.series
    out.print(
        f"train-image: {s['train']} train / {s['val']} val series ({s['decoded']} decoded, {s['cached']} from "
        f"cache, {s['failed']} failed), {len(h)} epochs, train loss {h[0]['train_loss']:.3f} → "
        f"{h[-1]['train_loss']:.3f}, best epoch {r.best_epoch}; weights [bold]{r.weights}[/]",
        soft_wrap=True,
    )


@app.command("explain")
@handled
def explain_cmd(
    workflow: ExistingFile,
    patient: Annotated[str, typer.Option("--patient", help="The patient id (column patient_id of the labels).")],
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", help="Folder for the PNG (default WORKDIR/explain).")
    ] = None,
) -> None:
    """Grad-CAM of a patient's image: a PNG of the most salient slice, logged to the train-image MLflow run.

    Explains the trained image encoder's own classifier, so it needs [bold]clinicmm train-image[/] first (an
    untrained encoder's saliency is not meaningful). The file is named by the patient's keyed pseudonym, not the id.
    Example: [bold]clinicmm explain workflows/demo.yaml --patient PATIENT_ID[/] (an id of the dataset's labels table)
    """
    from clinicmm.pipeline.run import explain_image

    r = explain_image(_workflow(workflow), patient, out_dir, str(workflow))
    out.print(
        f"Grad-CAM: image classifier predicts {r['predicted']} (p={r['probability']:.2f}); most salient slice "
        f"{r['slice'] + 1}: [bold]{r['png']}[/]" + (f" (logged to MLflow run {r['run_id']})" if r["run_id"] else ""),
        soft_wrap=True,
    )


@app.command()
@handled
def encode(workflow: ExistingFile) -> None:
    """Encode every patient's image, notes and genomics (cached: an unchanged rerun encodes nothing).

    Example: [bold]clinicmm encode workflows/demo.yaml[/]; sharded by rank over N processes:
    [bold]torchrun --nproc_per_node N -m clinicmm encode workflows/demo.yaml[/]
    """
    from clinicmm.pipeline.stages import encode_stage

    encoded = encode_stage(_workflow(workflow))
    _print_encode(encoded.stats)


def _print_encode(stats: dict) -> None:
    for m, s in stats.items():
        if "computed" in s:
            out.print(f"{m}: {s['computed']} computed from the fitted preprocessor (no encoder network)")
        else:
            out.print(f"{m}: {s['encoded']} encoded, {s['cached']} from cache, {s['failed']} failed")


@app.command()
@handled
def train(workflow: ExistingFile, progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True) -> None:
    """Train every model the workflow lists (single modalities, concatenation, KG-GNN) on the same split.

    Example: [bold]clinicmm train workflows/demo.yaml[/]; with DDP over N processes (training.strategy: ddp,
    training.devices: N): [bold]torchrun --nproc_per_node N -m clinicmm train workflows/demo.yaml[/]
    """
    from clinicmm.pipeline.stages import train_stage

    for name, r in train_stage(_workflow(workflow), progress).items():
        kept = (
            " (no epoch of its correction beat the logreg it starts from: kept logreg)"
            if r.best.get("epoch") == -1
            else ""
        )
        out.print(f"{name}: {r.epochs} epochs, best val macro-F1 {r.best.get('val_macro_f1', float('nan')):.3f}{kept}")


@app.command()
@handled
def evaluate(
    workflow: ExistingFile,
    external: Annotated[
        Optional[Path],
        typer.Option(
            "--external",
            exists=True,
            dir_okay=False,
            help="A second, labelled dataset.yaml: external validation instead of the test split.",
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", help="With --external: the model to score with (default: the workflow's models:/NAME@ALIAS)."
        ),
    ] = None,
) -> None:
    """Score the test split with every trained model; print and log the comparison.

    With --external, the registered model scores a second dataset instead; its results go to
    workdir/external/<name>/ and an MLflow run tagged external, apart from the internal test results.
    Example: [bold]clinicmm evaluate workflows/demo.yaml --external other/dataset.yaml[/]
    """
    if model is not None and external is None:
        from clinicmm.errors import ConfigError

        raise ConfigError(
            "--model applies to external validation only: add --external DATASET.yaml (the test split is "
            "scored with the workflow's own trained models)."
        )
    if external is not None:
        from clinicmm.evaluation.external import evaluate_external

        wf = _workflow(workflow)
        if model is not None:
            _check_model_uri(model)
        _print_external(evaluate_external(wf, external, model))
        return
    from clinicmm.pipeline.stages import evaluate_stage

    _print_results(evaluate_stage(_workflow(workflow)))


def _print_external(r: dict) -> None:
    m = r["metrics"]
    out.print(f"external dataset [bold]{r['dataset']}[/] scored by {r['model_uri']}", soft_wrap=True)
    out.print(
        f"patients {int(m['n_patients'])}, scored {int(m['n_scored'])}, evaluated {int(m['n_evaluated'])} "
        f"({int(m['n_label_unknown_to_model'])} with a label the model does not know)"
    )
    out.print(
        f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, AUROC {m['auroc_ovr']:.3f}, ECE {m['ece']:.3f}"
    )
    for note in r["notes"]:
        out.print(f"note: {note}")
    out.print(
        f"results in [bold]{r['folder']}[/] (MLflow run {r['run_id']}, tag clinicmm.evaluation=external)",
        soft_wrap=True,
    )


@app.command()
@handled
def robustness(
    workflow: ExistingFile,
    perturbation: Annotated[
        Optional[list[str]],
        typer.Option(
            "--perturbation",
            "-p",
            help="Only these (repeatable): image_noise, image_shift, note_sections, genes_masked, no_image, no_note, no_omics.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random perturbations.")] = 0,
) -> None:
    """Score every trained model on perturbed test inputs (image noise and intensity shift, dropped note sections,
    masked genes, each modality removed); print the accuracy and macro-F1 drop per perturbation.

    Writes workdir/robustness/robustness.csv, .md and .png and logs them to a 'robustness' MLflow run.
    Example: [bold]clinicmm robustness workflows/demo.yaml -p image_noise -p no_omics[/]
    """
    from clinicmm.evaluation.robustness import robustness_stage

    table = robustness_stage(_workflow(workflow), perturbation, seed)
    grid = Table(title="robustness (test split)")
    for col in ("perturbation", "model", "n", "accuracy", "macro-F1", "Δ accuracy", "Δ macro-F1"):
        grid.add_column(col, justify="left" if col in ("perturbation", "model") else "right", no_wrap=True)
    for r in table.itertuples():
        grid.add_row(
            r.perturbation,
            r.model,
            str(r.n_test),
            *(f"{v:.3f}" for v in (r.accuracy, r.macro_f1, r.accuracy_drop, r.macro_f1_drop)),
        )
    out.print(grid)


RESULT_HEADERS = {  # results.csv column -> a header short enough for an 80-column terminal
    "macro_f1": "F1", "accuracy": "acc", "auroc_ovr": "AUROC", "ece": "ECE", "coverage": "cover",
    "mean_set_size": "set", "abstention_rate": "abstain",
}  # fmt: skip


def _print_results(results) -> None:
    table = Table(title="test split (F1: macro-F1; cover / set: conformal coverage and mean set size)")
    table.add_column("model", no_wrap=True)
    table.add_column("n", justify="right")
    for header in RESULT_HEADERS.values():
        table.add_column(header, justify="right")
    for _, r in results.iterrows():
        cells = [f"{r.get(c, float('nan')):.3f}" for c in RESULT_HEADERS]
        table.add_row(r["model"], str(r["n_test"]), *cells)
    out.print(table)


@app.command()
@handled
def register(workflow: ExistingFile) -> None:
    """Register the champion (the simplest model within one standard error of the best validation macro-F1; or
    primary_model) as an MLflow pyfunc and set its alias.

    Example: [bold]clinicmm register workflows/demo.yaml[/]
    """
    from clinicmm.pipeline.stages import register_stage

    r = register_stage(_workflow(workflow))
    out.print(
        f"registered [bold]{r.name}[/] version {r.version} as [bold]{r.uri}[/]: {r.model} ({r.reason})", soft_wrap=True
    )


@app.command()
@handled
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Model version to point the alias at.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to set, e.g. champion or challenger.")] = "champion",
    tracking_uri: Annotated[
        Optional[str], typer.Option(help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")
    ] = None,
) -> None:
    """Point a registry alias at a model version (aliases, not the deprecated stages).

    Example: [bold]clinicmm promote clinicmm-demo 2 --alias challenger[/]
    """
    from clinicmm.config import TrackingSpec
    from clinicmm.tracking.runs import promote as promote_fn
    from clinicmm.tracking.setup import configure

    configure(TrackingSpec(uri=tracking_uri))
    known = _registered_versions(name)  # an unknown name, then an unknown version, is one line naming what exists
    if version not in known:
        from clinicmm.errors import ModelError

        raise ModelError(
            f"model {name!r} has no version {version!r} in this registry (versions: {', '.join(known) or 'none'}); "
            f"list them with their aliases: clinicmm versions {name}" + _uri_option(tracking_uri)
        )
    previous = promote_fn(name, version, alias, tracking_uri)
    was = f" (was version {previous})" if previous else ""
    out.print(f"[bold]models:/{name}@{alias}[/] → version {version}{was}", soft_wrap=True)


@app.command()
@handled
def versions(
    name: Annotated[
        Optional[str], typer.Argument(help="Registered model name; without it, every registered model.")
    ] = None,
    tracking_uri: Annotated[
        Optional[str], typer.Option(help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")
    ] = None,
) -> None:
    """List a registered model's versions with their aliases (or, without NAME, the registered models).

    Example: [bold]clinicmm versions clinicmm-demo[/], then [bold]clinicmm promote clinicmm-demo 2 --alias champion[/]
    """
    from mlflow import MlflowClient

    from clinicmm.config import TrackingSpec
    from clinicmm.tracking.setup import configure

    uri = configure(TrackingSpec(uri=tracking_uri))
    client = MlflowClient(uri, registry_uri=uri)
    if name is None:
        table = Table(title=f"registered models in {uri}")
        for col in ("name", "latest version", "aliases"):
            table.add_column(col)
        for m in client.search_registered_models():
            latest = max((int(v.version) for v in m.latest_versions or []), default=None)
            table.add_row(m.name, str(latest or "-"), _aliases(m.aliases))
        out.print(table)
        return
    found = _registered_versions(name)
    by_version: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    table = Table(title=f"{name}: versions in {uri}")
    for col in ("version", "aliases", "model", "test macro-F1", "created (UTC)", "run"):
        table.add_column(col, no_wrap=col in ("version", "created (UTC)"))
    for version, v in found.items():
        table.add_row(
            version, ", ".join(sorted(by_version.get(version, []))) or "-", v.tags.get("clinicmm.model", "-"),
            v.tags.get("test_macro_f1", "-"), _utc(v.creation_timestamp), v.run_id or "-",
        )  # fmt: skip
    out.print(table)
    out.print(
        f"models:/{name}@ALIAS or models:/{name}/VERSION; move an alias: clinicmm promote {name} VERSION --alias ALIAS"
        + _uri_option(tracking_uri),
        soft_wrap=True,
    )


def _aliases(aliases) -> str:
    pairs = aliases.items() if isinstance(aliases, dict) else [(a.alias, a.version) for a in aliases or []]
    return ", ".join(f"{a} → {v}" for a, v in sorted(pairs)) or "-"


def _utc(millis) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(int(millis) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if millis else "-"


def _uri_option(tracking_uri: Optional[str]) -> str:
    return f" --tracking-uri {tracking_uri}" if tracking_uri else ""


def _registered_versions(name: str) -> dict:
    """``version -> ModelVersion`` of registered model ``name`` (oldest first), in the configured registry;
    ModelError naming the registered models when there is none of that name."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clinicmm.errors import ModelError

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=20))
        raise ModelError(
            f"no registered model {name!r} in {mlflow.get_registry_uri()} (registered: {', '.join(names) or 'none'}); "
            "check the name, or point --tracking-uri / $MLFLOW_TRACKING_URI at the store it was registered in"
        ) from None
    if "'" in name:  # no quoting in MLflow's filter strings: filter here
        found = [v for v in client.search_model_versions() if v.name == name]
    else:
        found = client.search_model_versions(f"name = '{name}'")
    return {str(v.version): v for v in sorted(found, key=lambda v: int(v.version))}


def _check_model_uri(model: str, tracking_uri: Optional[str] = None) -> None:
    """A --model value MLflow would fail on with an unhelpful message, as one line ("cannot load model ...", as
    :func:`clinicmm.serve.predict.load_registered` says it) naming what to pass instead: a bare registered-model
    name (a models:/ URI is needed), an unknown model, alias or version. Other schemes (runs:/, a local folder,
    s3://, ...) are left to MLflow."""
    from clinicmm.errors import ConfigError, ModelError

    said = f"cannot load model {model!r}"
    if "://" not in model and ":/" not in model and not Path(model).exists():
        raise ConfigError(
            f"{said}: not a model URI; for the registered model of that name pass models:/{model}@champion (an "
            f"alias) or models:/{model}/VERSION; list them with: clinicmm versions {model}{_uri_option(tracking_uri)}"
        )
    if not model.startswith("models:/"):
        return
    ref = model[len("models:/") :]
    name, at, alias = ref.partition("@")
    version = ""
    if not at:
        name, _, version = ref.partition("/")
    if not name or (at and not alias) or (not at and not version.isdigit() and version != "latest"):
        raise ConfigError(
            f"{said}: expected models:/NAME@ALIAS or models:/NAME/VERSION (e.g. models:/{name or 'NAME'}@champion)"
        )
    try:
        known = _registered_versions(name)
    except ModelError as exc:
        raise ModelError(f"{said}: {exc}") from None
    if version and version != "latest" and version not in known:
        raise ModelError(
            f"{said}: model {name!r} has no version {version} (versions: {', '.join(known) or 'none'}); "
            f"list them with: clinicmm versions {name}{_uri_option(tracking_uri)}"
        )
    if at:
        from mlflow import MlflowClient

        aliases = MlflowClient().get_registered_model(name).aliases
        if alias not in aliases:
            raise ModelError(
                f"{said}: model {name!r} has no alias {alias!r} (aliases: {_aliases(aliases)}); "
                f"set one with: clinicmm promote {name} VERSION --alias {alias}{_uri_option(tracking_uri)}"
            )


@app.command()
@handled
def predict(
    dataset: ExistingFile,
    model: Annotated[str, typer.Option("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")],
    out_file: Annotated[Path, typer.Option("--out", help="CSV to write.")] = Path("predictions.csv"),
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    dicom_sr: Annotated[
        Optional[Path], typer.Option("--dicom-sr", help="Also write one DICOM SR per patient into this folder.")
    ] = None,
    tracking_uri: Annotated[
        Optional[str], typer.Option(help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")
    ] = None,
) -> None:
    """Predict the cancer type of every patient of a dataset with a registered model.

    Each row carries calibrated probabilities, the top-3 differential and the conformal prediction set.

    Its decision is 'predict', or 'abstain: refer for review' below the model's calibration.abstain_below.

    Example: [bold]clinicmm predict demo_data/dataset.yaml --model models:/clinicmm-demo@champion --out preds.csv[/]
    """
    import pandas as pd

    from clinicmm.config import TrackingSpec
    from clinicmm.serve.predict import predict as predict_fn
    from clinicmm.serve.scoring import LOW_PANEL_SHARE
    from clinicmm.tracking.setup import configure

    configure(TrackingSpec(uri=tracking_uri))
    _check_model_uri(model, tracking_uri)
    result = predict_fn(model, dataset, out_file, overwrite, dicom_sr)
    scored = int((result["status"] == "scored").sum())
    out.print(f"scored {scored} of {len(result)} patients → [bold]{out_file}[/]")
    if scored < len(result):
        out.print(f"{len(result) - scored} not scored; the 'reason' column says why")
    low = int((pd.to_numeric(result["omics_measured"], errors="coerce") < LOW_PANEL_SHARE).sum())
    if low:
        out.print(
            f"{low} scored on under {LOW_PANEL_SHARE:.0%} of the model's omics features (another panel: the rest "
            "imputed); the 'omics_measured' and 'reason' columns say which"
        )
    if dicom_sr is not None:
        out.print(f"DICOM SR reports in [bold]{dicom_sr}[/] (index: sr_index.csv)")


@app.command()
@handled
def run(
    workflow: ExistingFile,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Rerun every stage, even those up to date.")] = False,
) -> None:
    """Run every stage: ingest → encode → train → evaluate → register → predict.

    A stage whose inputs and config are unchanged since it last finished is skipped, so a rerun after a crash
    or a kill resumes where it stopped. Example: [bold]clinicmm run workflows/demo.yaml[/]. Several processes
    or machines: [bold]torchrun --nproc_per_node N -m clinicmm run workflows/demo.yaml[/] (README: Running on a cluster).
    """
    from clinicmm.config import load_workflow
    from clinicmm.pipeline.run import run as run_all

    wf = load_workflow(workflow)
    shown_uri = wf.tracking.tracking_uri()  # as the user wrote it: configure() exports the absolute URI
    wf = _configured(wf, workflow)
    summary = run_all(wf, progress, force)
    if not distributed.is_zero():  # the other ranks of a torchrun job: rank 0 reports
        return
    out.print("stages: " + ", ".join(f"{k} {v}" for k, v in summary.stages.items()), soft_wrap=True)
    _print_results(summary.results)
    r, p = summary.registered, summary.predicted
    out.print(
        f"registered [bold]{r.name}[/] version {r.version} → [bold]{r.uri}[/]: {r.model} ({r.reason})", soft_wrap=True
    )
    out.print(f"predictions for {p.scored} of {p.patients} patients: [bold]{p.predictions}[/]", soft_wrap=True)
    if shown_uri.startswith("sqlite:///"):
        out.print(f"browse the runs: [bold]mlflow ui --backend-store-uri {shown_uri}[/]", soft_wrap=True)


@app.command()
@handled
def compare(
    workflow: ExistingFile,
    folds: Annotated[
        Optional[int], typer.Option(min=2, max=20, help="Number of stratified folds (default: compare.folds, 5).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    knowledge_ablation: Annotated[
        bool,
        typer.Option(
            "--knowledge-ablation",
            help="Also train each graph model on a degree-preserving rewired graph (compare.knowledge_ablation).",
        ),
    ] = False,
) -> None:
    """Cross-validate every model of the workflow (and the logistic-regression baseline) on the same folds.

    Stratified k-fold over the labelled patients (runs ingest and encode first if they are not up to date);
    every model is trained by the same loop in every fold and scored with all modalities and with each one
    removed. Writes table.md/.csv (mean ± sd over folds, pooled bootstrap 95% CIs, paired difference to the
    reference model), ablation.md/.csv and bar plots under WORKDIR/compare/, logged to one MLflow parent run
    with a child per model x fold. A 'champion' row gives what primary_model: auto achieves (the model chosen in each
    fold on its validation patients), and the patients every model misclassifies are counted (hard_cases.csv, by
    pseudonym) with the ceiling they leave. With --knowledge-ablation each graph model also trains on a rewired graph
    (same degrees, scrambled biology) and knowledge_ablation.md gives the paired difference. Example:
    [bold]clinicmm compare workflows/demo.yaml --folds 5[/]
    """
    from clinicmm.pipeline.run import compare as compare_fn

    wf = _workflow(workflow)
    if knowledge_ablation:
        wf = wf.model_copy(update={"compare": wf.compare.model_copy(update={"knowledge_ablation": True})})
    result = compare_fn(wf, folds, progress)
    _print_compare(result, wf.training.offset)


def early_lines(early: dict[str, int], folds: int, offset: str, kept: dict[str, int] | None = None) -> list[str]:
    """What ``compare`` says of models whose best epoch was among the first two (``early``: model -> folds): a
    warning for a network alone; for one that corrects logreg (``training.offset``) a plain note, since it starts
    at the linear model and an early stop just leaves it there (``kept``: model -> folds where no trained epoch
    beat that start, so the fitted model was logreg itself, ``training.keep_start``)."""
    from clinicmm.evaluation.compare import is_correction

    lines = []
    for model, n in early.items():
        if is_correction(model, offset):
            same = (kept or {}).get(model, 0)
            lines.append(
                f"{model}: its correction of logreg stopped improving within two epochs in {n} of {folds} folds "
                + (
                    f"(there it stays close to logreg; in {same} it is logreg)"
                    if same
                    else "(there it stays close to logreg)"
                )
            )
        else:
            lines.append(
                f"[yellow]{model}: best epoch among the first two in {n} of {folds} folds[/] (it stops learning "
                "almost at once: overfits or learns too fast; compare it with logreg)"
            )
    return lines


def _print_compare(result, offset: str = "none") -> None:
    from clinicmm.keys import MODALITIES

    names = {"macro_f1": "macro-F1", "accuracy": "accuracy", "auroc_ovr": "AUROC"}
    table = Table(title=f"{result.folds}-fold CV, {result.patients} patients: mean ± sd [pooled 95% CI]")
    for col in ("model", *names.values(), f"Δ macro-F1 vs {result.reference}"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for _, r in result.table.iterrows():
        cells = [
            f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_sd']:.3f} [{r[f'{m}_ci_low']:.2f}, {r[f'{m}_ci_high']:.2f}]"
            for m in names
        ]
        delta = (
            "–"
            if r["model"] == result.reference
            else f"{r['delta_macro_f1']:+.3f} [{r['delta_ci_low']:+.2f}, {r['delta_ci_high']:+.2f}]"
        )
        table.add_row(r["model"], *cells, delta)
    out.print(table)
    ablation = Table(title="missing modalities: pooled macro-F1 (drop when removed)")
    for col in ("model", "all", *(f"− {m.value}" for m in MODALITIES)):
        ablation.add_column(col, justify="left" if col == "model" else "right")
    for _, r in result.ablation.iterrows():
        cells = [
            "–"
            if r[f"minus_{m.value}"] != r[f"minus_{m.value}"]
            else f"{r[f'minus_{m.value}']:.3f} ({r[f'drop_{m.value}']:+.3f})"
            for m in MODALITIES
        ]
        ablation.add_row(r["model"], f"{r['all']:.3f}", *cells)
    out.print(ablation)
    if result.knowledge is not None and len(result.knowledge):
        graph = Table(title="knowledge ablation: pooled macro-F1 on the real graph vs a degree-preserving rewired one")
        from clinicmm.evaluation.compare import paired_text

        for col in ("model", "real graph", "rewired", "Δ [95% CI]", "Δ vs concat [95% CI]"):
            graph.add_column(col, justify="left" if col == "model" else "right")
        for _, r in result.knowledge.iterrows():
            graph.add_row(
                r["model"],
                f"{r['macro_f1_graph']:.3f}",
                f"{r['macro_f1_rewired']:.3f}",
                paired_text(r, "delta"),
                paired_text(r, "delta_concat"),
            )
        out.print(graph)
    if result.chosen:
        from clinicmm.evaluation.compare import champion_picks

        picks = champion_picks(result.chosen)
        out.print(f"champion (what primary_model: auto registers, chosen per fold on validation): {picks} folds")
    if result.hard:
        out.print(
            f"[yellow]{result.hard} of {result.patients} patients are misclassified by every model[/]: a model right "
            f"on every other patient would score macro-F1 {result.ceiling:.3f}; review them (label, histology) in "
            "hard_cases.csv (by pseudonym) before tuning",
            soft_wrap=True,
        )
    for line in early_lines(result.early, result.folds, offset, result.kept_start):
        out.print(line, soft_wrap=True)
    out.print(f"tables and plots: [bold]{result.out}[/] (MLflow parent run {result.parent_run})", soft_wrap=True)


@app.command("deidentify")
@handled
def deidentify_cmd(
    source: Annotated[
        Path, typer.Argument(exists=True, help="A DICOM folder or file, or a dataset.yaml (then its tables too).")
    ],
    out_dir: Annotated[
        Path, typer.Argument(help="New or empty folder for the de-identified copy (never inside SOURCE).")
    ],
    key_file: Annotated[
        Optional[Path],
        typer.Option(
            help="Pseudonym key file. Unset: $CLINICMM_PHI_KEY, else OUT-privacy.key (created once; keep it)."
        ),
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option(help="Per-file report CSV (names sources and real ids); default OUT-deid-report.csv."),
    ] = None,
    names: Annotated[
        Optional[Path],
        typer.Option(
            exists=True,
            dir_okay=False,
            help="CSV of known names: patient id, then name columns; scrubbed from notes too.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """De-identify DICOM (PS3.15 Basic Application Level Confidentiality Profile) and, for a dataset.yaml, its notes and tables.

    Private tags are removed, UIDs remapped consistently (series and studies still group), patient ids replaced by
    keyed pseudonyms, dates shifted per patient (DICOM and notes alike); a file with BurnedInAnnotation YES is
    refused. Notes lose the names in the patient's DICOM headers, MRN-like numbers, phones and e-mails. SOURCE is
    only read. Example: [bold]clinicmm deidentify demo_data/dataset.yaml demo_deid[/]
    """
    from clinicmm.privacy.deidentify import deidentify
    from clinicmm.privacy.pseudonym import load_key

    key = load_key(key_file, out_dir.parent / f"{out_dir.name}-privacy.key")
    r = deidentify(source, out_dir, key, report, progress, names)
    d, c = r["dicom"], r["counts"]
    out.print(
        f"DICOM: {d['written']} files written for {r['patients']} patients, {d['refused']} refused (burned-in "
        f"annotation), {d['skipped']} skipped, {d['failed']} failed; {r['tables']} tables",
        soft_wrap=True,
    )
    out.print(
        f"removed {c['removed']}, emptied {c['emptied']}, replaced {c['replaced']}, private {c['private_removed']}, "
        f"UIDs {c['uids_remapped']}, dates shifted {c['dates_shifted']}; notes: {c['names']} names, {c['ids']} ids, "
        f"{c['contacts']} contacts",
        soft_wrap=True,
    )
    out.print(
        f"→ [bold]{out_dir}[/]; report [bold]{r['report']}[/] (keep it, and the key, with the originals)",
        soft_wrap=True,
    )


@kg_app.command("inspect")
@handled
def kg_inspect(
    extra: Annotated[
        Optional[list[Path]], typer.Argument(help="Extra .gmt gene sets, .tsv triples or .obo ontologies to add.")
    ] = None,
    reactome: Annotated[str, typer.Option(help="Shipped Reactome pathways: subset or human.")] = "subset",
) -> None:
    """Print node and edge counts of the knowledge graph per type and per source.

    Example: [bold]clinicmm kg inspect --reactome human my_pathways.gmt my_ontology.obo[/]
    """
    from clinicmm.knowledge.graph import KnowledgeGraph

    kg = KnowledgeGraph.default(reactome)
    for path in extra or []:
        kg.add_file(path)
    out.print(kg.summary().to_string(index=False))
    out.print("\nper source (nodes: the source that added each node first; edges: per relation)")
    out.print(kg.by_source().to_string(index=False), soft_wrap=True)
