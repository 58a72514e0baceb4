"""The dataset YAML: where each modality of a hospital's data lives and which columns mean what."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Spec(BaseModel):
    """Every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- dataset


class LabelsSpec(Spec):
    path: Path
    patient_column: str = "patient_id"
    label_column: str = "cancer_type"
    date_column: str | None = Field(
        None, description="Date of the label (diagnosis), YYYY-MM-DD; the reference of notes.window."
    )
    site_column: str | None = Field(
        None, description="Site / institution of each patient: splits are then by site (no site in two splits)."
    )


class ImagingSpec(Spec):
    root: Path = Field(description="Folder searched recursively for DICOM files (any nesting, any suffix).")
    patient_tag: str = Field("PatientID", description="DICOM keyword that holds the patient id.")
    modalities: list[str] = Field(
        default_factory=lambda: ["CT", "MR", "PT", "NM", "CR", "DX", "MG", "US", "XA", "RF", "SC", "OT", "IO", "PX"],
        description="DICOM Modality values to use; default: every image modality the index knows. CT/MR/PT/NM are "
        "volumes; CR, DX, MG, US, XA, RF, SC, OT, IO, PX are 2D.",
    )
    min_slices: int = Field(
        1,
        ge=1,
        description="Fewest slices (or frames) a multi-slice volume needs; a single image (2D, one-file series) is "
        "exempt.",
    )
    volume: Literal["first", "mean"] | Annotated[int, Field(ge=1)] = Field(
        "first",
        description="A series holding several volumes (time points, echoes, diffusion b-values, Siemens mosaics "
        "over time): 'first', 'mean' (voxel-wise mean of all volumes) or N, the N-th volume counting from 1.",
    )
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


class NotesWindowSpec(Spec):
    """Which notes count, by date, against the patient's label date (``labels.date_column``): no leakage."""

    days_before: int | None = Field(
        None, ge=0, description="Oldest note kept, in days before the label date (null: any)."
    )
    until_days_before: int = Field(
        0,
        description="Newest note kept, in days before the label date: 0 keeps notes of that day, 1 only earlier ones.",
    )


class NotesSpec(Spec):
    path: Path = Field(
        description="A table (.csv .tsv .jsonl .parquet) or a folder with one folder of note files per patient."
    )
    patient_column: str = "patient_id"
    text_column: str = "text"
    note_id_column: str | None = None
    note_type_column: str | None = None
    date_column: str | None = Field(None, description="Column holding each note's date.")
    date_format: str | None = Field(
        None, description="strptime format of the dates, e.g. '%d/%m/%Y'; default ISO 8601."
    )
    encoding: str = Field(
        "auto", description="Text encoding; auto: UTF-8, else detected per file (charset-normalizer)."
    )
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
            raise ValueError(
                "notes.window needs note dates: set notes.date_column (or a 'date' group in file_name_pattern)"
            )
        if self.note_types is not None and not (self.note_type_column or "(?P<type>" in (self.file_name_pattern or "")):
            raise ValueError("notes.note_types needs note types: set notes.note_type_column (or a 'type' group)")
        return self


class ExpressionSpec(Spec):
    path: Path
    sample_column: str = "sample_id"
    orientation: Literal["samples_x_genes", "genes_x_samples"] = "samples_x_genes"
    unit: Literal["counts", "tpm", "fpkm", "log", "normalized"] = "tpm"
    sample_sheet: Path | None = Field(
        None,
        description="A GDC sample sheet (File Name, Sample ID; File ID): path is then the folder of the downloaded "
        "files, one per sample (STAR gene counts, miRNA quantifications, SeSAMe betas, gene-level copy number), "
        "each found by its name and read as that sample's values.",
    )
    quantity: str | None = Field(
        None,
        description="genes_x_samples tables with several columns per sample under a second header row (Firehose: "
        "Beta_value / Gene_Symbol / ..., read_count / reads_per_million_miRNA_mapped / cross-mapped): the one read. "
        "Default: Beta_value, normalized_count or reads_per_million_miRNA_mapped when present, else the first. "
        "With sample_sheet: the column of each file (default by unit: tpm_unstranded, unstranded, fpkm_unstranded; "
        "else reads_per_million_miRNA_mapped, beta_value, copy_number, value, or a two-column file's second).",
    )


LAYER_KINDS = ("expression", "methylation", "copy_number", "mirna", "protein", "other")


class OmicsLayerSpec(ExpressionSpec):
    """One named omics table (``genomics.layers``): read like ``expression``, its columns named ``<name>:<feature>``."""

    name: str = Field(
        ...,
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="Short lower-case name (e.g. mrna, methylation, cnv, mirna, rppa): the prefix of its columns "
        "and its name in the ingest report and the link counts.",
    )
    kind: Literal["expression", "methylation", "copy_number", "mirna", "protein", "other"] = Field(
        ..., description="What the values measure: " + ", ".join(LAYER_KINDS) + "."
    )
    unit: Literal["counts", "tpm", "fpkm", "log", "normalized"] = Field(
        "normalized",
        description="counts / tpm / fpkm get log2(x + 1); log (e.g. copy-number log2 ratios, M-values) and "
        "normalized (e.g. methylation beta values, RPPA) are used as given. Every feature is then z-scored on "
        "the training patients.",
    )
    features: Literal["gene", "probe", "mirna", "cytoband"] = Field(
        "gene",
        description="How the column names name genes: gene (symbols or Ensembl / NCBI ids, harmonised to HGNC), "
        "mirna (miRBase names, linked to the HGNC MIR genes), probe (array probe ids, mapped with feature_map), "
        "cytoband (copy number by chromosome arm or band: 1p, 8q, chr8q, 8q24.21; each stands for the genes "
        "located in it, by HGNC's locations).",
    )
    feature_map: Path | None = Field(
        None,
        description="A feature -> gene table as published: an Illumina manifest (IlmnID / Name, UCSC_RefGene_Name), "
        "a GEO platform table, a UCSC Xena probeMap (#id, gene), or any CSV/TSV whose first two columns are a "
        "feature id and its gene symbol(s) (several joined by ';', ',', '|' or '///'). A gene's value is the mean "
        "of its mapped features; unmapped features stay as they are and link nothing. features: probe needs one "
        "unless the table names each probe's genes itself (Firehose methylation's Gene_Symbol columns).",
    )
    segments: Literal["hg19", "hg38", "GRCh37", "GRCh38"] | None = Field(
        None,
        description="The table lists copy-number segments (a row per segment: sample, chromosome, start, end, "
        "value; GDC's Copy Number Segment files, cBioPortal's and Firehose's .seg tables, IGV's .seg) in this "
        "assembly's coordinates: the GDC's are hg38 (GRCh38), cBioPortal's and Firehose's legacy ones hg19 "
        "(GRCh37). Each cytogenetic band gets the length-weighted mean of a sample's segments over it, and the "
        "layer's features are the bands (features: cytoband is implied).",
    )

    @model_validator(mode="before")
    @classmethod
    def _segments_are_bands(cls, data):
        if isinstance(data, dict) and data.get("segments") is not None and "features" not in data:
            data = {**data, "features": "cytoband"}
        return data

    @model_validator(mode="after")
    def _segment_layer(self) -> OmicsLayerSpec:
        if self.segments is None:
            return self
        if self.features != "cytoband":
            raise ValueError(
                f"layer {self.name!r}: segments give one value per cytogenetic band, so features must be "
                f"'cytoband' (or left out), not {self.features!r}"
            )
        if self.unit in ("counts", "tpm", "fpkm"):
            raise ValueError(
                f"layer {self.name!r}: segment values are copy-number log2 ratios or copy numbers, not {self.unit}; "
                "set unit: log (log2 ratios) or normalized"
            )
        if self.feature_map is not None:
            raise ValueError(f"layer {self.name!r}: a segment table's bands need no feature_map; remove it")
        return self


class MutationsSpec(Spec):
    path: Path
    format: Literal["maf", "matrix"] = Field(
        "maf",
        description="maf: a mutation list, one row per mutation (sample_column, gene_column, class_column); "
        "matrix: one row per sample, one column per gene, 1 (or a count > 0, true, yes) for a gene carrying a "
        "non-silent mutation and 0 / blank for none, e.g. TCGA-style mutation flags; its sample ids are the "
        "sample_column when the header has it, else the first column.",
    )
    sample_column: str = "Tumor_Sample_Barcode"
    gene_column: str = "Hugo_Symbol"
    class_column: str = "Variant_Classification"


class GeneNamesSpec(Spec):
    """Gene harmonisation at ingest (clinicmm/ingest/gene_names.py): every gene name -> current HGNC symbol."""

    harmonize: bool = Field(
        True, description="Map previous symbols, aliases, Ensembl and NCBI gene ids to current HGNC symbols."
    )
    hgnc_table: Path | None = Field(
        None, description="An HGNC download (hgnc_complete_set.txt or a custom download); default: the shipped copy."
    )
    unmapped: Literal["keep", "drop"] = Field(
        "keep", description="Genes the table cannot resolve: keep as named, or drop."
    )


class GenomicsSpec(Spec):
    expression: ExpressionSpec | None = None
    mutations: MutationsSpec | None = None
    layers: list[OmicsLayerSpec] = Field(
        default_factory=list,
        description="Further omics tables (methylation, copy number, miRNA, protein ...), each named; their "
        "columns join the expression columns as <name>:<feature>.",
    )
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
        if self.expression is None and self.mutations is None and not self.layers:
            raise ValueError("genomics needs 'expression', 'mutations', 'layers' or several of them")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(
                f"genomics.layers: each layer needs its own name; repeated: {sorted({n for n in names if names.count(n) > 1})}"
            )
        if self.patient_id_pattern is not None and self.patient_id_length is not None:
            raise ValueError("set genomics.patient_id_pattern or genomics.patient_id_length, not both")
        return self

    def sample_pattern(self) -> str | None:
        """The regex that finds the patient id in a sample id (None: the sample id is the patient id)."""
        return f"^(.{{{self.patient_id_length}}})" if self.patient_id_length else self.patient_id_pattern


class SplitSpec(Spec):
    val: float = Field(0.15, gt=0, lt=0.5, description="Share of patients in val (random split; ignored with column).")
    test: float = Field(0.2, gt=0, lt=0.5, description="Share of patients in test (random split; ignored with column).")
    seed: int = 0
    column: str | None = Field(
        None,
        description="Column of the labels file that gives each patient's split (train, val / valid / validation, "
        "test; any case): a hospital's or a benchmark's own split, used as given; val and test are then ignored.",
    )
    leave_one_site_out: bool = Field(
        False, description="With labels.site_column: evaluate also holds out each site in turn, reported per site."
    )


class DatasetSpec(Spec):
    name: str
    labels: LabelsSpec | None = Field(None, description="Needed to train and evaluate; optional to predict.")
    imaging: ImagingSpec | None = None
    notes: NotesSpec | None = None
    genomics: GenomicsSpec | None = None
    split: SplitSpec = SplitSpec()
    follow_symlinks_outside: bool = Field(
        False,
        description="Follow symbolic links whose target lies outside the dataset's folders (the YAML's folder and "
        "every path it names). Default: such links are skipped with a reason that does not say where they point.",
    )
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

    @model_validator(mode="after")
    def _one_way_to_split(self) -> DatasetSpec:
        if self.split.column and self.labels and self.labels.site_column:
            raise ValueError(
                f"split.column ({self.split.column!r}: each patient's split as given) and labels.site_column "
                f"({self.labels.site_column!r}: split by site) both choose the splits; keep one of them: remove "
                "labels.site_column to use the given split, or split.column to split by site"
            )
        if self.split.column and self.labels is None:
            raise ValueError("split.column names a column of the labels file: add labels (with its path)")
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the YAML, made absolute against the YAML file's folder; a link loop is a ConfigError."""
        try:
            return path if path.is_absolute() else (self.base_dir / path).resolve()
        except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
            from clinicmm.errors import ConfigError

            raise ConfigError(
                f"{self.base_dir / path}: a symbolic link loop (the link leads back to itself); point the dataset "
                "YAML at the real folder or file"
            ) from None
