"""Names shared by every stage: modalities, statuses, manifest columns, graph node and edge types.

One place defines each contract; import from here rather than writing the strings again.
"""

from __future__ import annotations

from enum import StrEnum


class Modality(StrEnum):
    IMAGE = "image"
    NOTE = "note"
    OMICS = "omics"


MODALITIES: tuple[Modality, ...] = (Modality.IMAGE, Modality.NOTE, Modality.OMICS)
MODALITY_NAMES: tuple[str, ...] = tuple(m.value for m in MODALITIES)  # the same, as plain strings


class Status(StrEnum):
    """Status of one input file / row / series in an index."""

    OK = "ok"
    SKIPPED = "skipped"


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Col(StrEnum):
    """Column names of the cohort manifest and the per-modality indexes."""

    PATIENT = "patient_id"
    LABEL = "label"
    SPLIT = "split"
    STATUS = "status"
    REASON = "reason"
    SOURCE = "source"  # file the row came from
    ROW = "row"  # row number in that file (1-based, header excluded), when it came from a table
    # imaging index (one row per series)
    SERIES_UID = "series_uid"
    STUDY_UID = "study_uid"
    SERIES_DIR = "series_dir"
    FILES = "files"  # list of file paths of the series, sorted
    N_SLICES = "n_slices"
    MODALITY_TAG = "dicom_modality"
    BODY_PART = "body_part"
    IMAGE_KIND = "image_kind"  # 'volume' (one file per slice), 'multiframe' (one file) or '2d'
    SOP_UID = "sop_uids"  # SOPInstanceUIDs of the files, in the order of FILES
    SYNTAX = "transfer_syntax"
    SLICE_MM = "slice_thickness"
    STUDY_DATE = "study_date"
    DESCRIPTION = "series_description"
    # notes index (one row per note)
    NOTE_ID = "note_id"
    NOTE_TYPE = "note_type"
    NOTE_DATE = "note_date"  # ISO date (YYYY-MM-DD) or ''
    TEXT = "text"
    # genomics index (one row per sample)
    SAMPLE = "sample_id"
    # manifest: which modalities a patient has
    HAS_IMAGE = "has_image"
    HAS_NOTE = "has_note"
    HAS_OMICS = "has_omics"


HAS = {Modality.IMAGE: Col.HAS_IMAGE, Modality.NOTE: Col.HAS_NOTE, Modality.OMICS: Col.HAS_OMICS}


class Node(StrEnum):
    """Node types of the fused heterogeneous graph (knowledge nodes + patient/evidence nodes)."""

    GENE = "gene"
    PATHWAY = "pathway"
    CANCER = "cancer_type"
    CONCEPT = "concept"
    PATIENT = "patient"
    IMAGE = "image"
    NOTE = "note"
    OMICS = "omics"


EVIDENCE_NODE = {Modality.IMAGE: Node.IMAGE, Modality.NOTE: Node.NOTE, Modality.OMICS: Node.OMICS}
KNOWLEDGE_NODES: tuple[Node, ...] = (Node.GENE, Node.PATHWAY, Node.CANCER, Node.CONCEPT)


class Rel(StrEnum):
    """Relation names of the knowledge graph and of the patient evidence edges."""

    MEMBER_OF = "member_of"  # gene -> pathway
    DRIVER_OF = "driver_of"  # gene -> cancer_type
    INDICATES = "indicates"  # concept -> cancer_type
    ALTERED = "altered"  # omics -> gene (mutated or strongly changed)
    MENTIONS = "mentions"  # note -> concept (positive, non-negated mentions)
    SHOWS = "shows"  # image -> concept (body site)
    OF = "of"  # evidence -> patient


class Model(StrEnum):
    """The fusion models a workflow may name (``models:``): the one list the config checks and the registry builds."""

    IMAGE = "image"
    NOTE = "note"
    OMICS = "omics"
    CONCAT = "concat"
    KG_GNN = "kg_gnn"
    ATTENTION = "attention"
    KG_RGCN = "kg_rgcn"
    LOGREG = "logreg"  # multinomial logistic regression on the concatenated embeddings (fitted in closed form)
    GBT = "gbt"  # gradient-boosted trees on the concatenated embeddings (fitted by scikit-learn, held as tensors)
    KG_PATHWAY = "kg_pathway"  # concat + the omics pooled over the graph's pathways and cancer-type gene sets
    KG_LOGREG = "kg_logreg"  # logreg + the same pooled gene-set view (closed form)


MODEL_NAMES: tuple[str, ...] = tuple(m.value for m in Model)
