"""Given splits: when the dataset names ``split.column``, each patient's split is read from the labels file.

Hospitals and published benchmarks (TCGA-style) come with their own train / val / test split per patient; results
are comparable with others' only when that split is used as given, not redrawn. A bad cell never stops the
cohort: its row is recorded in the ingest report with the file, row and column, and its patient is left out of
every split (it can still be predicted, not used to train or evaluate).
"""

from __future__ import annotations

import pandas as pd

from clinicmm.config import DatasetSpec
from clinicmm.errors import InputError, where
from clinicmm.keys import Col, Split, Status

GIVEN = {"train": Split.TRAIN, "val": Split.VAL, "valid": Split.VAL, "validation": Split.VAL, "test": Split.TEST}
ACCEPTED = "train, val (or valid, validation), test; any case"


def read_given_splits(spec: DatasetSpec, table: pd.DataFrame | None = None) -> tuple[dict[str, str], list[dict]]:
    """Patient -> split from ``split.column``, and the skipped rows (empty or unknown value, conflicting repeat).

    A patient listed again with another split keeps the first, as the labels do. Rows without a patient id are
    skipped silently: the labels reader records them already. ``table``: the labels file already read
    (``labels.read_labels_table``); read here when not given.
    """
    from clinicmm.ingest.labels import read_labels_table, skip_row

    path, column = spec.resolve(spec.labels.path), spec.split.column
    table = read_labels_table(spec, table)
    for key, col in (("labels.patient_column", spec.labels.patient_column), ("split.column", column)):
        if col not in table.columns:
            raise InputError(
                f"{where(path, column=col)} not found (named by {key} in the dataset YAML); columns in the file: "
                f"{', '.join(table.columns)}. Fix the YAML or the header."
            )
    given: dict[str, str] = {}
    unknown: list[tuple[int, str, str]] = []  # (row, patient, value): worded once every row is read
    skipped = []
    for i, (pid, value) in enumerate(zip(table[spec.labels.patient_column], table[column]), start=1):
        pid, value = str(pid).strip(), str(value).strip()
        if not pid:
            continue
        split = GIVEN.get(value.lower())
        if split is None:
            unknown.append((i, pid, value))
        elif given.setdefault(pid, split.value) != split.value:
            reason = (
                f"patient listed again with split {value!r} in column {column!r} ({given[pid]!r} first); kept the first"
            )
            skipped.append(skip_row("labels", path, i, pid, reason))
    for i, pid, value in unknown:
        skipped.append(skip_row("labels", path, i, pid, _unknown_reason(value, column, given.get(pid))))
    return given, sorted(skipped, key=lambda s: s["row"])


def _unknown_reason(value: str, column: str, kept: str | None) -> str:
    what = f"empty split in column {column!r}" if not value else f"unknown split {value!r} in column {column!r}"
    fate = f"the patient keeps split {kept!r} from another row" if kept else "the patient is left out of every split"
    return f"{what} (accepted: {ACCEPTED}); {fate}. Fill the cell with an accepted value"


def assign_given_splits(
    spec: DatasetSpec, manifest: pd.DataFrame, given: dict[str, str]
) -> tuple[pd.DataFrame, list[str]]:
    """Each usable labelled patient's split as ``given`` (:func:`read_given_splits`); notes for the ingest report.

    Patients without a given split are left out of every split and counted in a note. An empty train, val or test
    split does not stop ingest; each gets a note saying what it leaves undone.
    """
    manifest = manifest.copy()
    manifest[Col.SPLIT.value] = ""
    usable = manifest[(manifest[Col.STATUS] == Status.OK) & (manifest[Col.LABEL] != "")]
    splits = usable[Col.PATIENT].map(given)
    manifest.loc[usable.index, Col.SPLIT.value] = splits.fillna("")
    source = f"{spec.resolve(spec.labels.path).name} column {spec.split.column!r}"
    counts = {s.value: int((splits == s.value).sum()) for s in Split}
    notes = [f"split as given by {source}: " + ", ".join(f"{s} {n}" for s, n in counts.items())]
    if splits.isna().any():
        notes.append(
            f"{int(splits.isna().sum())} labelled patient(s) have no valid split in {source}: left out of every "
            "split (see the skipped inputs); fill the column to use them"
        )
    effects = {
        Split.TRAIN: "there is nothing to train on",
        Split.VAL: "each model stops early on a share of its training patients instead, and stays uncalibrated",
        Split.TEST: "evaluate has nothing to score",
    }
    notes += [
        f"no patient in the {s.value} split ({source}): {effect}; mark some patients {s.value!r} in that column"
        for s, effect in effects.items()
        if not counts[s.value]
    ]
    return manifest, notes
