"""Validated configuration: ``DatasetSpec`` (dataset.yaml) and ``WorkflowSpec`` (workflow YAML).

Paths inside a YAML file are relative to that file's folder. Unknown keys are errors (``extra="forbid"``) so a
typo fails at once with the valid names listed, instead of being silently ignored. The models live in
:mod:`~clinicmm.config.dataset` and :mod:`~clinicmm.config.workflow`; :mod:`~clinicmm.config.loading` reads them.
"""

from clinicmm.config.dataset import (
    DatasetSpec,
    ExpressionSpec,
    GeneNamesSpec,
    GenomicsSpec,
    ImagingSpec,
    LabelsSpec,
    MutationsSpec,
    NotesSpec,
    NotesWindowSpec,
    OmicsLayerSpec,
    Spec,
    SplitSpec,
)
from clinicmm.config.loading import (
    declared_paths,
    dump,
    load_dataset,
    load_workflow,
)
from clinicmm.config.workflow import (
    DEFAULT_MODELS,
    DEFAULT_TRACKING_URI,
    NON_SILENT_CLASSES,
    CalibrationSpec,
    CompareSpec,
    EncodersSpec,
    GenomicsEncoderSpec,
    ImageEncoderSpec,
    ImageTrainSpec,
    LoraSpec,
    PrivacySpec,
    RuntimeSpec,
    ServingSpec,
    TextEncoderSpec,
    TextSectionsSpec,
    TrackingSpec,
    TrainingSpec,
    ViTSpec,
    WorkflowSpec,
)
from clinicmm.keys import MODEL_NAMES

__all__ = [
    "CalibrationSpec",
    "CompareSpec",
    "DEFAULT_MODELS",
    "DEFAULT_TRACKING_URI",
    "DatasetSpec",
    "EncodersSpec",
    "ExpressionSpec",
    "OmicsLayerSpec",
    "GeneNamesSpec",
    "GenomicsEncoderSpec",
    "GenomicsSpec",
    "ImageEncoderSpec",
    "ImageTrainSpec",
    "ImagingSpec",
    "LabelsSpec",
    "LoraSpec",
    "MODEL_NAMES",
    "MutationsSpec",
    "NON_SILENT_CLASSES",
    "NotesSpec",
    "NotesWindowSpec",
    "PrivacySpec",
    "RuntimeSpec",
    "ServingSpec",
    "Spec",
    "SplitSpec",
    "TextEncoderSpec",
    "TextSectionsSpec",
    "TrackingSpec",
    "TrainingSpec",
    "ViTSpec",
    "WorkflowSpec",
    "declared_paths",
    "dump",
    "load_dataset",
    "load_workflow",
]
