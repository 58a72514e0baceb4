"""The ``clinicmm`` command line. Each verb loads its config, makes one library call and prints a summary.

A ``ClinicmmError`` becomes one red line on stderr and exit code 1; ``--debug`` shows the traceback. Heavy
libraries are imported inside the commands so that ``clinicmm --help`` answers at once.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from clinicmm.errors import ClinicmmError

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
_state = {"debug": False}

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A YAML file.")]


def _setup_logging() -> None:
    from rich.logging import RichHandler

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    handler = RichHandler(console=err, show_path=False)
    handler.addFilter(lambda record: "nvImageCodec" not in record.getMessage())  # MONAI noise on every CPU machine
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def handled(fn):
    """Run a command; a ClinicmmError becomes one line and exit 1 (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except ClinicmmError as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    _state["debug"] = debug


# ------------------------------------------------------------------------------------------------ verbs


@app.command("demo-data")
@handled
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the demo cohort into (new or a previous demo).")],
    patients: Annotated[int, typer.Option(min=12, help="Number of patients.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files.")] = 0,
    missing_rate: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of patients lacking one modality.")] = 0.15,
    inject_bad: Annotated[bool, typer.Option(help="Add one of each bad input (truncated DICOM, non-DICOM file, ...).")] = False,
) -> None:
    """Write a synthetic demo cohort (real DICOM series, notes CSV, expression TSV, MAF, labels, dataset.yaml).

    Example: [bold]clinicmm demo-data demo_data --patients 200 --seed 0[/]
    """
    from clinicmm.demo.generator import generate_demo

    path = generate_demo(out_dir, patients=patients, seed=seed, missing_rate=missing_rate, inject_bad=inject_bad)
    out.print(f"wrote demo cohort of {patients} patients: [bold]{path}[/]")


def _is_workflow(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "dataset" in data and "workdir" in data


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
    from clinicmm.cohort import ingest
    from clinicmm.config import load_dataset, load_workflow
    from clinicmm.workflow import ingest_stage

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


def _workflow(path: Path):
    from clinicmm.config import load_workflow
    from clinicmm.tracking.setup import configure

    wf = load_workflow(path)
    configure(wf.tracking)
    return wf


@app.command()
@handled
def encode(workflow: ExistingFile) -> None:
    """Encode every patient's image, notes and genomics (cached: an unchanged rerun encodes nothing).

    Example: [bold]clinicmm encode workflows/demo.yaml[/]
    """
    from clinicmm.workflow import encode_stage

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

    Example: [bold]clinicmm train workflows/demo.yaml[/]
    """
    from clinicmm.workflow import train_stage

    for name, r in train_stage(_workflow(workflow), progress).items():
        out.print(f"{name}: {r['epochs']} epochs, best val macro-F1 {r['best'].get('val_macro_f1', float('nan')):.3f}")


@app.command()
@handled
def evaluate(workflow: ExistingFile) -> None:
    """Score the test split with every trained model; print and log the comparison.

    Example: [bold]clinicmm evaluate workflows/demo.yaml[/]
    """
    from clinicmm.workflow import evaluate_stage

    _print_results(evaluate_stage(_workflow(workflow)))


def _print_results(results) -> None:
    table = Table(title="test split")
    for col in ("model", "n_test", "macro_f1", "accuracy", "auroc_ovr", "ece"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for _, r in results.iterrows():
        cells = [f"{r[c]:.3f}" for c in ("macro_f1", "accuracy", "auroc_ovr", "ece")]
        table.add_row(r["model"], str(r["n_test"]), *cells)
    out.print(table)


@app.command()
@handled
def register(workflow: ExistingFile) -> None:
    """Log the primary model as an MLflow pyfunc, register it and set its alias (default: champion).

    Example: [bold]clinicmm register workflows/demo.yaml[/]
    """
    from clinicmm.workflow import register_stage

    r = register_stage(_workflow(workflow))
    out.print(f"registered [bold]{r['name']}[/] version {r['version']} as [bold]{r['uri']}[/]", soft_wrap=True)


@app.command()
@handled
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Model version to point the alias at.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to set, e.g. champion or challenger.")] = "champion",
    tracking_uri: Annotated[Optional[str], typer.Option(help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")] = None,
) -> None:
    """Point a registry alias at a model version (aliases, not the deprecated stages).

    Example: [bold]clinicmm promote clinicmm-demo 2 --alias challenger[/]
    """
    from clinicmm.tracking.runs import promote as promote_fn

    previous = promote_fn(name, version, alias, tracking_uri)
    was = f" (was version {previous})" if previous else ""
    out.print(f"[bold]models:/{name}@{alias}[/] → version {version}{was}", soft_wrap=True)


@app.command()
@handled
def predict(
    dataset: ExistingFile,
    model: Annotated[str, typer.Option("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")],
    out_file: Annotated[Path, typer.Option("--out", help="CSV to write.")] = Path("predictions.csv"),
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    dicom_sr: Annotated[Optional[Path], typer.Option("--dicom-sr", help="Also write one DICOM SR per patient into this folder.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="Default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db")] = None,
) -> None:
    """Predict the cancer type of every patient of a dataset with a registered model.

    Example: [bold]clinicmm predict demo_data/dataset.yaml --model models:/clinicmm-demo@champion --out preds.csv[/]
    """
    from clinicmm.config import TrackingSpec
    from clinicmm.tracking.setup import configure
    from clinicmm.predict import predict as predict_fn

    configure(TrackingSpec(uri=tracking_uri))
    result = predict_fn(model, dataset, out_file, overwrite, dicom_sr)
    scored = int((result["status"] == "scored").sum())
    out.print(f"scored {scored} of {len(result)} patients → [bold]{out_file}[/]")
    if scored < len(result):
        out.print(f"{len(result) - scored} not scored; the 'reason' column says why")
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
    or a kill resumes where it stopped. Example: [bold]clinicmm run workflows/demo.yaml[/]
    """
    from clinicmm.config import load_workflow
    from clinicmm.workflow import run as run_all

    shown_uri = load_workflow(workflow).tracking.tracking_uri()  # as the user wrote it (before it is made absolute)
    wf = _workflow(workflow)
    summary = run_all(wf, progress, force)
    out.print("stages: " + ", ".join(f"{k} {v}" for k, v in summary["stages"].items()), soft_wrap=True)
    _print_results(summary["results"])
    r = summary["registered"]
    out.print(f"registered [bold]{r['name']}[/] version {r['version']} → [bold]{r['uri']}[/]", soft_wrap=True)
    out.print(f"predictions for {summary['scored']} of {summary['patients']} patients: [bold]{summary['predictions']}[/]", soft_wrap=True)
    if shown_uri.startswith("sqlite:///"):
        out.print(f"browse the runs: [bold]mlflow ui --backend-store-uri {shown_uri}[/]", soft_wrap=True)


@kg_app.command("inspect")
@handled
def kg_inspect(
    extra: Annotated[Optional[list[Path]], typer.Argument(help="Extra .gmt or .tsv triple files to add.")] = None,
) -> None:
    """Print node and edge counts of the knowledge graph per type and source.

    Example: [bold]clinicmm kg inspect my_pathways.gmt[/]
    """
    from clinicmm.knowledge.graph import KnowledgeGraph

    kg = KnowledgeGraph.default()
    for path in extra or []:
        kg.add_gmt(path) if path.suffix.lower() == ".gmt" else kg.add_triples(path)
    out.print(kg.summary().to_string(index=False))
