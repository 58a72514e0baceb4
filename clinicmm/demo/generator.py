"""Write the demo cohort: a hospital-like folder of DICOM, notes and genomics tables plus its ``dataset.yaml``.

``generate_demo(out)`` writes the generative story of :mod:`clinicmm.demo.design` (its docstring has the rates):
each modality alone tells apart only pairs of types (image: site, notes: histology, genomics: programme), each is
noisy, one type is rare, ``missing_rate`` of the patients miss one modality and ``single_rate`` have one only.
``inject_bad=True`` plants one of each bad input that a real export has (a truncated DICOM file, non-DICOM files
in the DICOM tree, an empty note, a duplicated gene column, an unlabelled patient).

The demo's own knowledge-graph edges (``demo_edges.tsv``: each programme gene, a gene of the programme's Reactome
pathway, ``driver_of`` both types of its programme) describe the synthetic cohort, not biology, so they are not
part of the shipped graph (``KnowledgeGraph.default()``): the generator copies them next to ``dataset.yaml``, and a
workflow over the demo adds them the way a hospital adds its own graph files, ``knowledge: [demo_edges.tsv]``
(``workflows/demo.yaml``).

The same arguments give byte-identical files: every random draw comes from ``numpy`` generators seeded with
``(seed, patient, stream)``, UIDs are hashed from them and dates are fixed offsets, never the clock.
``demo_truth.json`` records the truth (types, missing modalities, bad inputs) for tests; clinicmm never reads it.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clinicmm.demo import dicom_writer, notes_writer, omics_writer
from clinicmm.demo.design import CANCER_TYPES, TYPE_SHARES, CancerType
from clinicmm.errors import InputError
from clinicmm.keys import MODALITIES, Modality

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

MARKER = ".clinicmm-demo"
TRUTH = "demo_truth.json"
EDGES = "demo_edges.tsv"  # the demo's gene -> cancer-type edges, for the workflow's knowledge: list
ENTRIES = ("dataset.yaml", "labels.csv", "dicom", "notes.csv", "expression.tsv", "mutations.maf", EDGES, TRUTH, MARKER)
PATTERN = r"^(DEMO-\d{4})"
IMAGE_STREAM, NOTE_STREAM, OMICS_STREAM = 1, 2, 3
PROGRESS_ABOVE = 50
NOTE_COLUMNS = ("note_id", "patient_id", "note_type", "note_date", "text")


@dataclass(frozen=True)
class PatientPlan:
    """One demo patient: id, true type, the modalities it lacks (none, one, or all but one), its study day offset."""

    number: int
    patient_id: str
    ctype: CancerType
    missing: tuple[Modality, ...]
    day: int
    batch: int = 0  # sequencing batch of its omics sample (independent of the type)

    @property
    def sample_id(self) -> str:
        return f"{self.patient_id}-01A"


@dataclass
class Tables:
    """What the patient loop collects before the tables are written."""

    series: dict[str, list[Path]] = field(default_factory=dict)  # patient -> slice files
    notes: list[dict[str, str]] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    expression: list[np.ndarray] = field(default_factory=list)
    mutations: list[dict[str, str]] = field(default_factory=list)
    alterations: dict[str, omics_writer.Alterations] = field(default_factory=dict)  # patient -> its programme genes


def generate_demo(
    out: Path,
    patients: int = 200,
    seed: int = 0,
    missing_rate: float = 0.15,
    inject_bad: bool = False,
    slices: int = 16,
    size: int = 64,
    single_rate: float | None = None,
) -> Path:
    """Write the demo cohort under ``out`` and return the path of its ``dataset.yaml``.

    ``out`` must be new, empty or a previous demo (it holds the ``.clinicmm-demo`` marker); a previous demo's
    files are replaced, anything else in the folder is left alone. The demo's graph edges go to
    ``out/demo_edges.tsv``: list that file under a workflow's ``knowledge:`` to train on the demo as designed.
    ``missing_rate``: share of patients lacking exactly one modality; ``single_rate`` (default: ``missing_rate``):
    share with one modality only (capped so that the two shares add up to at most all patients).
    """
    single = missing_rate if single_rate is None else single_rate
    _check_args(patients, seed, missing_rate, slices, size, single)
    plan = plan_cohort(patients, seed, missing_rate, single)
    targets = _bad_targets(plan, seed) if inject_bad else {}
    out = _prepare_folder(Path(out))
    genes, background = omics_writer.gene_panel(_rng(seed, 0, OMICS_STREAM))
    tables = _write_patients(out, plan, seed, slices, size, genes, background)
    bad = _inject(out, tables, targets, background, seed) if inject_bad else []
    unlabelled = next((b["patient_id"] for b in bad if b["kind"] == "unlabelled_patient"), None)
    duplicate = next((b["column"] for b in bad if b["kind"] == "duplicate_gene_column"), None)
    _write_tables(out, plan, tables, genes, unlabelled, duplicate)
    (out / "dataset.yaml").write_text(dataset_yaml(slices), encoding="utf-8")
    (out / EDGES).write_bytes(demo_edges().read_bytes())
    _write_truth(out, plan, tables, bad, seed, (missing_rate, single), unlabelled)
    return out / "dataset.yaml"


def demo_edges() -> Traversable:
    """The shipped demo edges file (``clinicmm/demo/data/demo_edges.tsv``; ``edges.tsv`` columns).

    Every gene of a programme (:mod:`clinicmm.demo.design`) ``driver_of`` both cancer types of its programme,
    where the shipped ``edges.tsv`` has no such sourced edge; source label ``clinicmm demo programme``.
    """
    return resources.files("clinicmm.demo").joinpath(f"data/{EDGES}")


# ------------------------------------------------------------------------------------------ planning


def _check_args(patients: int, seed: int, missing_rate: float, slices: int, size: int, single_rate: float) -> None:
    problems = []
    if not 1 <= patients <= 9999:
        problems.append(f"patients must be 1..9999 (got {patients})")
    if seed < 0:
        problems.append(f"seed must be >= 0 (got {seed})")
    if not 0.0 <= missing_rate < 1.0:
        problems.append(f"missing_rate must be in [0, 1) (got {missing_rate})")
    if not 0.0 <= single_rate < 1.0:
        problems.append(f"single_rate must be in [0, 1) (got {single_rate})")
    if missing_rate + single_rate >= 1.0:
        problems.append(f"missing_rate + single_rate must leave complete patients (got {missing_rate} + {single_rate})")
    if slices < 2 or size < 16:
        problems.append(f"slices must be >= 2 and size >= 16 (got slices={slices}, size={size})")
    if problems:
        raise InputError("generate_demo: " + "; ".join(problems) + ".")


def _rng(seed: int, number: int, stream: int) -> np.random.Generator:
    """The generator of one patient's stream, independent of every other patient and stream."""
    return np.random.default_rng([seed, number, stream])


def type_counts(patients: int) -> list[int]:
    """Patients per type (``CANCER_TYPES`` order) from ``TYPE_SHARES`` by largest remainder; at least
    ``min(4, patients // types)`` each, so the rare type can be stratified in small cohorts."""
    shares = np.array([TYPE_SHARES[t.code] for t in CANCER_TYPES])
    floor = min(4, patients // len(CANCER_TYPES))
    raw = shares / shares.sum() * patients
    counts = np.maximum(np.floor(raw).astype(int), floor)
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    k = 0
    while counts.sum() < patients:
        counts[order[k % len(order)]] += 1
        k += 1
    while counts.sum() > patients:  # the floors overshot: take from the largest
        counts[int(np.argmax(counts))] -= 1
    return counts.tolist()


def plan_cohort(patients: int, seed: int, missing_rate: float, single_rate: float = 0.0) -> list[PatientPlan]:
    """Types by ``TYPE_SHARES``, shuffled; ``round(missing_rate * patients)`` patients lack one modality and
    ``round(single_rate * patients)`` (at most the rest) have one only, the modality cycled in both."""
    rng = _rng(seed, 0, 0)
    codes = [t for t, n in zip(CANCER_TYPES, type_counts(patients)) for _ in range(n)]
    order = rng.permutation(patients)
    n_missing = int(round(missing_rate * patients))
    n_single = min(int(round(single_rate * patients)), patients - n_missing)
    chosen = rng.choice(patients, size=n_missing + n_single, replace=False)
    offset = int(rng.integers(len(MODALITIES)))
    missing: dict[int, tuple[Modality, ...]] = {}
    for j, i in enumerate(chosen):
        m = MODALITIES[(j + offset) % len(MODALITIES)]
        missing[int(i)] = (m,) if j < n_missing else tuple(x for x in MODALITIES if x != m)
    days = rng.integers(0, 730, patients)
    batches = rng.integers(0, omics_writer.BATCHES, patients)
    return [
        PatientPlan(i + 1, f"DEMO-{i + 1:04d}", codes[order[i]], missing.get(i, ()), int(days[i]), int(batches[i]))
        for i in range(patients)
    ]


def _bad_targets(plan: list[PatientPlan], seed: int) -> dict[str, PatientPlan]:
    """Four different complete patients for the patient-bound bad inputs."""
    complete = [p for p in plan if not p.missing]
    kinds = ("truncated_dicom", "text_as_dcm", "empty_note", "unlabelled_patient")
    if len(complete) < len(kinds):
        raise InputError(
            f"generate_demo: inject_bad needs at least {len(kinds)} patients with every modality "
            f"(got {len(complete)}); raise patients or lower missing_rate / single_rate."
        )
    picks = _rng(seed, 0, 4).choice(len(complete), size=len(kinds), replace=False)
    return {kind: complete[int(i)] for kind, i in zip(kinds, picks)}


# ------------------------------------------------------------------------------------------- writing


def _prepare_folder(out: Path) -> Path:
    """Create ``out``, or clear a previous demo in it; refuse a folder with anything else."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder. Choose a folder path for the demo cohort.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InputError(
                f"{out}: folder is not empty and holds no previous demo (no {MARKER} marker). "
                "Choose a new or empty folder; the demo generator never overwrites your files."
            )
        for name in ENTRIES:
            _remove(out / name)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("Written by clinicmm's demo generator; the demo in this folder may be replaced.\n")
    return out


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _progress(plan: list[PatientPlan]) -> Iterable[PatientPlan]:
    """A tqdm bar on stderr above :data:`PROGRESS_ABOVE` patients (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(
        plan, desc="demo cohort", unit="patient", file=sys.stderr, disable=None if len(plan) > PROGRESS_ABOVE else True
    )


def _write_patients(
    out: Path, plan: list[PatientPlan], seed: int, slices: int, size: int, genes: list[str], background: list[str]
) -> Tables:
    """Write each patient's DICOM series and collect its notes and genomics rows."""
    (out / "dicom").mkdir()
    tables = Tables()
    base = omics_writer.base_levels(len(genes), _rng(seed, 0, OMICS_STREAM + 10))
    batches = omics_writer.batch_offsets(len(genes), _rng(seed, 0, OMICS_STREAM + 11))
    for p in _progress(plan):
        if Modality.IMAGE not in p.missing:
            tables.series[p.patient_id] = _write_image(out / "dicom", p, seed, slices, size)
        if Modality.NOTE not in p.missing:
            tables.notes += notes_writer.patient_notes(p.patient_id, p.ctype, p.day, _rng(seed, p.number, NOTE_STREAM))
        rng = _rng(seed, p.number, OMICS_STREAM)
        alt = omics_writer.draw_alterations(p.ctype, rng)  # drawn for every patient: the truth records them
        tables.alterations[p.patient_id] = alt
        if Modality.OMICS not in p.missing:
            tables.samples.append(p.sample_id)
            tables.expression.append(omics_writer.expression_row(alt, genes, base, batches[p.batch], rng))
            tables.mutations += omics_writer.mutation_rows(p.sample_id, alt, background, rng)
    return tables


def _write_image(root: Path, p: PatientPlan, seed: int, slices: int, size: int) -> list[Path]:
    rng = _rng(seed, p.number, IMAGE_STREAM)
    meta = dicom_writer.series_meta(p.patient_id, p.ctype.site, seed, size, p.day, rng)
    layout = dicom_writer.LAYOUTS[int(rng.choice(len(dicom_writer.LAYOUTS), p=[0.6, 0.2, 0.2]))]
    volume = dicom_writer.ct_volume(p.ctype.site, slices, size, rng)
    return dicom_writer.write_series(root, meta, volume, layout)


def _write_tables(
    out: Path, plan: list[PatientPlan], tables: Tables, genes: list[str], unlabelled: str | None, duplicate: str | None
) -> None:
    """labels.csv (without the unlabelled patient), notes.csv, expression.tsv, mutations.maf."""
    labels = [{"patient_id": p.patient_id, "cancer_type": p.ctype.code} for p in plan if p.patient_id != unlabelled]
    _write_csv(out / "labels.csv", ("patient_id", "cancer_type"), labels)
    _write_csv(out / "notes.csv", NOTE_COLUMNS, tables.notes)
    matrix = np.vstack(tables.expression) if tables.expression else np.zeros((0, len(genes)))
    omics_writer.write_expression(out / "expression.tsv", tables.samples, matrix, genes, duplicate)
    omics_writer.write_maf(out / "mutations.maf", tables.mutations)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------- bad inputs


def _inject(out: Path, tables: Tables, targets: dict[str, PatientPlan], background: list[str], seed: int) -> list[dict]:
    """Plant each bad input once (files now, table rows/columns before they are written); list them."""
    bad = _inject_dicom(out, tables, targets)
    bad.append(_empty_note(tables, targets["empty_note"]))
    gene = str(_rng(seed, 0, 5).choice(background))
    bad.append({"kind": "duplicate_gene_column", "patient_id": None, "file": "expression.tsv", "column": gene})
    bad.append(
        {"kind": "unlabelled_patient", "patient_id": targets["unlabelled_patient"].patient_id, "file": "labels.csv"}
    )
    return bad


def _inject_dicom(out: Path, tables: Tables, targets: dict[str, PatientPlan]) -> list[dict]:
    """A slice cut to half its bytes, a README in the DICOM root, a plain-text file named ``.dcm``."""
    p = targets["truncated_dicom"]
    files = tables.series[p.patient_id]
    victim = files[len(files) // 2]
    dicom_writer.truncate(victim)
    readme = out / "dicom" / "README.txt"
    readme.write_text("Synthetic CT series of the clinicmm demo cohort, one folder per patient.\n")
    q = targets["text_as_dcm"]
    fake = tables.series[q.patient_id][0].parent / "export_log.dcm"
    fake.write_text("Export log: series transferred from PACS without errors.\n")
    return [
        {"kind": "truncated_dicom", "patient_id": p.patient_id, "file": victim.relative_to(out).as_posix()},
        {"kind": "non_dicom_file", "patient_id": None, "file": readme.relative_to(out).as_posix()},
        {"kind": "text_as_dcm", "patient_id": q.patient_id, "file": fake.relative_to(out).as_posix()},
    ]


def _empty_note(tables: Tables, p: PatientPlan) -> dict:
    """Add a note with empty text after the patient's other notes; ``row`` is 1-based, header excluded."""
    last = max(i for i, row in enumerate(tables.notes) if row["patient_id"] == p.patient_id)
    row = {**tables.notes[last], "note_id": f"{p.patient_id}-N9", "note_type": "radiology", "text": ""}
    tables.notes.insert(last + 1, row)
    return {
        "kind": "empty_note",
        "patient_id": p.patient_id,
        "file": "notes.csv",
        "note_id": row["note_id"],
        "row": last + 2,
    }


# ------------------------------------------------------------------------------------- yaml and truth


def dataset_yaml(slices: int) -> str:
    """The cohort's dataset.yaml (paths relative to it), loadable by ``clinicmm.config.load_dataset``."""
    return f"""# Synthetic demo cohort written by clinicmm's demo generator (every patient is invented).
# Its knowledge-graph edges are in {EDGES}: add that file to the workflow's knowledge: list.
name: demo
labels:
  path: labels.csv
  patient_column: patient_id
  label_column: cancer_type
imaging:
  root: dicom
  patient_tag: PatientID
  modalities: [CT]
  min_slices: {min(4, slices)}
notes:
  path: notes.csv
  patient_column: patient_id
  text_column: text
  note_id_column: note_id
  note_type_column: note_type
genomics:
  expression:
    path: expression.tsv
    sample_column: sample_id
    orientation: samples_x_genes
    unit: tpm
  mutations:
    path: mutations.maf
    sample_column: Tumor_Sample_Barcode
    gene_column: Hugo_Symbol
    class_column: Variant_Classification
  patient_id_pattern: '{PATTERN}'
"""


def _write_truth(
    out: Path,
    plan: list[PatientPlan],
    tables: Tables,
    bad: list[dict],
    seed: int,
    rates: tuple[float, float],
    unlabelled: str | None,
) -> None:
    truth = {
        "about": "Ground truth of the clinicmm demo cohort for tests; clinicmm itself never reads this file.",
        "seed": seed,
        "missing_rate": rates[0],
        "single_rate": rates[1],
        "patients": {
            p.patient_id: {
                "cancer_type": p.ctype.code,
                "site": p.ctype.site,
                "histology": p.ctype.histology,
                "programme": p.ctype.programme,
                # the lacking modalities joined by '+' (one, or all but one), null when complete
                "missing": "+".join(map(str, p.missing)) or None,
                "modalities": [str(m) for m in MODALITIES if m not in p.missing],
                "batch": p.batch,
                "up_genes": list(tables.alterations[p.patient_id].up),
                "mutated_genes": list(tables.alterations[p.patient_id].mutated),
                "labelled": p.patient_id != unlabelled,
            }
            for p in plan
        },
        "bad_inputs": bad,
    }
    (out / TRUTH).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
