"""Ingest: read every modality a dataset names, link them per patient, split, and report.

``ingest(spec, out)`` writes ``out/`` with the cohort manifest (``cohort.parquet``, one row per patient),
the per-modality indexes (``series``, ``notes``, ``expression``, ``samples``, ``mutations`` as parquet) and the
ingest report (``report.json`` and a readable ``report.md``). A bad file or row is recorded with its reason
in its index and in the report, and skipped; it never stops the rest of the cohort.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.config import DatasetSpec
from clinicmm.errors import InputError, StageError
from clinicmm.ingest.labels import read_labels, read_labels_table, skip_row, table_issues
from clinicmm.ingest.walk import printable
from clinicmm.keys import HAS, MODALITIES, Col, Modality, Split, Status

TABLES = ("series", "notes", "expression", "samples", "mutations")
SHOWN_REASONS = 20  # skipped inputs a failed ingest's error message lists; the report has them all


@dataclass
class Cohort:
    """The linked cohort: the manifest plus each modality's index."""

    manifest: pd.DataFrame
    series: pd.DataFrame | None = None
    notes: pd.DataFrame | None = None
    expression: pd.DataFrame | None = None  # index: patient_id, columns: genes
    samples: pd.DataFrame | None = None
    mutations: pd.DataFrame | None = None
    report: dict = field(default_factory=dict)

    def patients(self, split: str | None = None, labelled: bool = True) -> list[str]:
        m = self.manifest[self.manifest[Col.STATUS] == Status.OK]
        if labelled:
            m = m[m[Col.LABEL] != ""]
        if split is not None:
            m = m[m[Col.SPLIT] == split]
        return m[Col.PATIENT].tolist()

    def save(self, out: Path, failed: bool = False) -> None:
        """Write the tables and the report. ``failed`` (no usable patient): the indexes and the report, so the
        reasons can be read, but no manifest -- a later stage must not take a failed ingest for a cohort."""
        from clinicmm.files import atomic_write_bytes

        out.mkdir(parents=True, exist_ok=True)
        for name in ("manifest", *TABLES):
            table = getattr(self, name)
            if table is not None and not (failed and name == "manifest"):
                _write_parquet(table, self.table_path(out, name))
            else:  # a table from an earlier ingest of another dataset must not be loaded with this one
                self.table_path(out, name).unlink(missing_ok=True)
        atomic_write_bytes(out / "report.json", json.dumps(self.report, indent=2, default=str).encode())
        atomic_write_bytes(out / "report.md", printable(render_report(self.report)).encode())

    @staticmethod
    def table_path(folder: Path, name: str) -> Path:
        return Path(folder) / f"{'cohort' if name == 'manifest' else name}.parquet"

    def written(self) -> list[str]:
        """The tables ``save`` writes: the manifest and every index this cohort has."""
        return [n for n in ("manifest", *TABLES) if getattr(self, n) is not None]

    @classmethod
    def load(cls, folder: Path) -> Cohort:
        folder = Path(folder)
        if not (folder / "cohort.parquet").is_file():
            raise StageError(f"{folder}: no cohort.parquet here. Run `clinicmm ingest` first.")
        tables = {n: _read_parquet(folder / f"{n}.parquet") for n in TABLES if (folder / f"{n}.parquet").is_file()}
        report = json.loads((folder / "report.json").read_text()) if (folder / "report.json").is_file() else {}
        return cls(manifest=_read_parquet(folder / "cohort.parquet"), report=report, **tables)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    """Write a table; any file name survives (see :func:`escape_table`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    table, escaped = escape_table(table)
    if escaped:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(table)
        meta = dict(arrow.schema.metadata or {}) | {ESCAPED_KEY: json.dumps(escaped).encode()}
        pq.write_table(arrow.replace_schema_metadata(meta), tmp)
    else:
        table.to_parquet(tmp)
    tmp.replace(path)


def _read_parquet(path: Path) -> pd.DataFrame:
    """A table :func:`_write_parquet` wrote, with its escaped columns turned back into the real strings."""
    import pyarrow.parquet as pq

    table = pd.read_parquet(path)
    meta = pq.read_schema(path).metadata or {}
    for column in json.loads(meta.get(ESCAPED_KEY, b"[]")):
        if column in table.columns:  # object dtype: pandas' str dtype (arrow) cannot hold the real names
            values = [_map_strings(v, _unescape) for v in table[column]]
            table[column] = pd.Series(values, index=table.index, dtype=object)
    return table


# ------------------------------------------------------------------------------ any file name, any text

ESCAPED_KEY = b"clinicmm.escaped_columns"
_ESCAPES = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _escape(text: str) -> str:
    """A string with lone surrogates (a file name byte that is not UTF-8, a JSON ``"\\ud800"``) as valid UTF-8.

    Reversible (:func:`_unescape`): backslashes are doubled, a surrogate-escaped byte becomes ``\\xNN`` (as
    ``printable`` shows it) and any other lone surrogate ``\\uNNNN``. Used only on the columns that need it.
    """
    out = []
    for ch in text.replace("\\", "\\\\"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _unescape(text: str) -> str:
    def back(m: re.Match) -> str:
        code = m.group(1)
        if code == "\\":
            return "\\"
        return chr(0xDC00 + int(code[1:], 16)) if code[0] == "x" else chr(int(code[1:], 16))

    return _ESCAPES.sub(back, text)


def _map_strings(value, fn):
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_map_strings(v, fn) for v in value]
    return value


def _needs_escape(value) -> bool:
    if isinstance(value, str):
        return _has_surrogate(value)
    if isinstance(value, list | tuple | np.ndarray):
        return any(_needs_escape(v) for v in value)
    return False


def escape_table(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with every string column that holds a lone surrogate escaped (:func:`_escape`), and those columns.

    A file whose name is not valid UTF-8 is listed by Python with surrogate escapes, which parquet (UTF-8 only)
    refuses; escaped, the table is written, shows the bad byte as ``\\xNN`` to people, and :meth:`Cohort.load`
    turns the column back into the real paths. Columns without such a string are left as they are.
    """
    escaped = [str(c) for c in table.columns if table[c].dtype == object and any(map(_needs_escape, table[c]))]
    if not escaped:
        return table, []
    table = table.copy()
    for column in escaped:
        table[column] = pd.Series([_map_strings(v, _escape) for v in table[column]], index=table.index, dtype=object)
    return table, escaped


# --------------------------------------------------------------------------------------------- reading


def _skipped_rows(modality: str, index: pd.DataFrame | None) -> list[dict]:
    if index is None or index.empty:
        return []
    bad = index[index[Col.STATUS] != Status.OK]
    rows = bad[Col.ROW] if Col.ROW in bad.columns else [None] * len(bad)
    return [
        skip_row(modality, s, None if r is None or pd.isna(r) else int(r), p, reason)
        for s, r, p, reason in zip(bad[Col.SOURCE], rows, bad[Col.PATIENT], bad[Col.REASON])
    ]


def dataset_roots(spec: DatasetSpec) -> list[Path]:
    """The folders and files symbolic links in the data may lead into: the YAML's folder and every path it names."""
    from clinicmm.config import declared_paths

    return [Path(spec.base_dir), *(spec.resolve(p) for _, p in declared_paths(spec))]


def read_modalities(spec: DatasetSpec) -> dict[str, pd.DataFrame | None]:
    """Index every modality the spec names (each reader records its own bad inputs)."""
    tables: dict[str, pd.DataFrame | None] = dict.fromkeys(TABLES)
    roots = dataset_roots(spec)
    if spec.imaging:
        from clinicmm.ingest.dicom import index_dicom

        tables["series"] = index_dicom(
            spec.imaging, spec.resolve(spec.imaging.root), roots=roots, follow_outside=spec.follow_symlinks_outside
        )
    if spec.notes:
        from clinicmm.ingest.notes import read_notes

        tables["notes"] = read_notes(
            spec.notes, spec.resolve(spec.notes.path), roots=roots, follow_outside=spec.follow_symlinks_outside
        )
    if spec.genomics:
        from clinicmm.ingest.genomics import read_genomics

        tables.update(read_genomics(spec, roots=roots, follow_outside=spec.follow_symlinks_outside))
    return tables


def _select_notes(spec: DatasetSpec, notes: pd.DataFrame | None, labels_table: pd.DataFrame | None) -> list[str]:
    """Leave out notes outside ``notes.window`` (against the label dates); the readers' decoding notes."""
    if notes is None:
        return []
    from clinicmm.ingest.notes import apply_window

    return list(notes.attrs.get("issues", [])) + apply_window(notes, spec, labels_table)


# -------------------------------------------------------------------------------------------- linking


def _present(tables: dict[str, pd.DataFrame | None]) -> dict[Modality, set[str]]:
    def ok_patients(table: pd.DataFrame | None) -> set[str]:
        if table is None or table.empty:
            return set()
        return set(table.loc[table[Col.STATUS] == Status.OK, Col.PATIENT].astype(str)) - {""}

    omics = set(tables["expression"].index) if tables["expression"] is not None else set()
    mutations = tables["mutations"]
    if mutations is not None and tables["expression"] is None:  # a flag matrix's all-zero rows were measured too
        omics = ok_patients(mutations) | set(mutations.attrs.get("measured", ()))
    return {
        Modality.IMAGE: ok_patients(tables["series"]),
        Modality.NOTE: ok_patients(tables["notes"]),
        Modality.OMICS: omics,
    }


def link(
    labels: dict[str, str], present: dict[Modality, set[str]], labels_file: str = "labels"
) -> tuple[pd.DataFrame, list[dict]]:
    """One manifest row per patient seen anywhere; status says whether it can be used."""
    patients = sorted(set(labels).union(*present.values()))
    rows, skipped = [], []
    for pid in patients:
        row = {Col.PATIENT.value: pid, Col.LABEL.value: labels.get(pid, "")}
        row.update({HAS[m].value: pid in present[m] for m in MODALITIES})
        reason = ""
        if not any(row[HAS[m].value] for m in MODALITIES):
            reason = "no usable image, note or genomics data (see the skipped inputs for why)"
        elif labels and pid not in labels:
            reason = "no label in the labels file; it can be predicted but not used to train or evaluate"
        row[Col.STATUS.value] = Status.SKIPPED.value if reason.startswith("no usable") else Status.OK.value
        row[Col.REASON.value] = reason
        rows.append(row)
        if reason:
            skipped.append(skip_row("cohort", labels_file if "label" in reason else "cohort", None, pid, reason))
    columns = [
        Col.PATIENT.value,
        Col.LABEL.value,
        *(HAS[m].value for m in MODALITIES),
        Col.STATUS.value,
        Col.REASON.value,
    ]
    return pd.DataFrame(rows, columns=columns), skipped  # the columns even with no patient: ingest then reports


def assign_splits(manifest: pd.DataFrame, val: float, test: float, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Patient-level stratified train/val/test split of the labelled, usable patients.

    A label with fewer than 3 patients cannot be spread over three splits: its patients all go to train and a
    note says so.
    """
    manifest = manifest.copy()
    manifest[Col.SPLIT.value] = ""
    usable = manifest[(manifest[Col.STATUS] == Status.OK) & (manifest[Col.LABEL] != "")]
    counts = usable[Col.LABEL].value_counts()
    notes = [f"label {lab!r} has only {n} patient(s): all put in train" for lab, n in counts.items() if n < 3]
    rng = np.random.default_rng(seed)
    for label, group in usable.groupby(Col.LABEL.value, sort=True):
        idx = group.index.to_numpy()[rng.permutation(len(group))]
        n = len(idx)
        n_test = int(round(n * test)) if n >= 3 else 0
        n_val = int(round(n * val)) if n >= 3 else 0
        if n >= 3:
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        manifest.loc[idx[:n_test], Col.SPLIT.value] = Split.TEST.value
        manifest.loc[idx[n_test : n_test + n_val], Col.SPLIT.value] = Split.VAL.value
        manifest.loc[idx[n_test + n_val :], Col.SPLIT.value] = Split.TRAIN.value
    return manifest, notes


def label_warnings(manifest: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """Report notes on labels that cannot train a useful classifier: one class only, a class too small to split.

    Names the classes and counts, never a patient. The random split notes its small classes itself.
    """
    usable = manifest[(manifest[Col.STATUS] == Status.OK) & (manifest[Col.LABEL] != "")]
    counts = usable[Col.LABEL].value_counts()
    notes = []
    if len(counts) == 1:
        notes.append(
            f"labels: one class only ({counts.index[0]!r}, {int(counts.iloc[0])} usable patients); a classifier needs "
            "at least two -- check labels.label_column and the labels file"
        )
    if spec.split.column or (spec.labels and spec.labels.site_column):
        notes += [
            f"label {label!r} has only {int(n)} usable patient(s), fewer than the 3 that train, val and test need; "
            "it cannot be in every split"
            for label, n in counts.items()
            if n < 3
        ]
    return notes


ID_HINT = "ids: "  # the report note on ids that do not meet; the ingest command and stage show it too


def shown_hints(report: dict) -> list[str]:
    """The report's notes worth showing beside the counts: ids of data and labels that do not meet."""
    return [note for note in report["issues"] if note.startswith(ID_HINT)]


def id_hints(manifest: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Notes for data and labels that name their patients differently: a data id that begins with the id of a
    labelled patient who has no data, then a separator (a TCGA sample barcode ``TCGA-AB-1234-01A...`` beside the
    patient ``TCGA-AB-1234``). Counts and the prefix length only, never an id."""
    if not labels:
        return []
    has_data = manifest[[HAS[m] for m in MODALITIES]].any(axis=1)
    ids = manifest[Col.PATIENT].astype(str)
    waiting = set(ids[~has_data & ids.isin(labels)])  # labelled, no data
    unlabelled = ids[has_data & ~ids.isin(labels)]
    found: dict[int, int] = {}
    for pid in unlabelled:  # a prefix ends at a separator (P1 is no prefix of P10); the first few are tried
        for n in [n for n, c in enumerate(pid) if not c.isalnum()][:8]:
            if pid[:n] in waiting:
                found[n] = found.get(n, 0) + 1
                break
    if not found:
        return []
    n, count = max(found.items(), key=lambda item: item[1])
    return [
        f"{ID_HINT}{count} patient(s) with data but no label have an id that begins with the id of a labelled patient "
        f"without data (its first {n} characters): the data names samples, the labels patients. For genomics "
        f"tables set genomics.patient_id_length: {n} (or a genomics.patient_id_pattern) in the dataset YAML so "
        "each sample id names its patient; for images or notes, give their patient column the labels' ids"
    ]


# ------------------------------------------------------------------------------------------------ API


def build_cohort(spec: DatasetSpec, split: bool = True, labels_table: pd.DataFrame | None = None) -> Cohort:
    """Read, link and split a dataset (no files written).

    ``labels_table``: the labels file already read (:func:`read_labels_table`); read here, once, when not given.
    """
    labels_table = read_labels_table(spec, labels_table)
    labels, skipped = read_labels(spec, labels_table)
    tables = read_modalities(spec)
    notes_issues = _select_notes(spec, tables["notes"], labels_table)
    for modality, name in (
        (Modality.IMAGE, "series"),
        (Modality.NOTE, "notes"),
        (Modality.OMICS, "samples"),
        (Modality.OMICS, "mutations"),
    ):
        skipped += _skipped_rows(modality.value, tables[name])
    labels_file = str(spec.resolve(spec.labels.path)) if spec.labels else "labels"
    manifest, linked_skips = link(labels, _present(tables), labels_file)
    split_notes: list[str] = []
    if split and spec.labels and spec.split.column:
        from clinicmm.ingest.splits import assign_given_splits, read_given_splits

        given, split_skips = read_given_splits(spec, labels_table)
        manifest, split_notes = assign_given_splits(spec, manifest, given)
        linked_skips += split_skips
    elif split and spec.labels and spec.labels.site_column:
        from clinicmm.ingest.sites import assign_site_splits

        manifest, split_notes = assign_site_splits(spec, manifest, labels_table)
    elif split:
        manifest, split_notes = assign_splits(manifest, spec.split.val, spec.split.test, spec.split.seed)
    else:
        manifest[Col.SPLIT.value] = ""
    from clinicmm.ingest.genomics import gene_counts, genomics_issues

    issues = genomics_issues(tables) + table_issues(labels_table) + label_warnings(manifest, spec)
    issues += id_hints(manifest, labels)
    report = make_report(spec, manifest, skipped + linked_skips, issues + notes_issues + split_notes)
    report["genes"] = gene_counts(tables)
    return Cohort(manifest=manifest, report=report, **tables)


def ingest(spec: DatasetSpec, out: Path) -> Cohort:
    """Build the cohort and write it (manifest, indexes, report) to ``out``."""
    labels_table = read_labels_table(spec)  # read once: labels, notes.window, sites and the leakage checks use it
    cohort = build_cohort(spec, labels_table=labels_table)
    if cohort.manifest.empty or not (cohort.manifest[Col.STATUS] == Status.OK).any():
        skipped = cohort.report["skipped"]
        cohort.report["error"] = "no usable patient found: nothing was written but this report and the indexes"
        cohort.save(Path(out), failed=True)  # the report is the place to read why
        more = len(skipped) - SHOWN_REASONS
        raise InputError(
            f"dataset {spec.name!r}: no usable patient found. The skipped inputs "
            f"{'below' if more <= 0 else f'(the first {SHOWN_REASONS} of {len(skipped)})'} say why; check the paths "
            f"in the dataset YAML. The full report: {Path(out) / 'report.md'}\n"
            f"{render_skipped(skipped[:SHOWN_REASONS])}"
            + (f"\n... and {more} more skipped input(s) in {Path(out) / 'report.md'}" if more > 0 else "")
        )
    from clinicmm.ingest.leakage import check_leakage

    cohort.report["leakage_checks"] = check_leakage(
        cohort, spec, labels_table
    )  # StageError (nothing written) on a leak
    cohort.save(Path(out))
    return cohort


def make_report(spec: DatasetSpec, manifest: pd.DataFrame, skipped: list[dict], issues: list[str]) -> dict:
    ok = manifest[manifest[Col.STATUS] == Status.OK]
    labelled = ok[ok[Col.LABEL] != ""]
    return {
        "dataset": spec.name,
        "patients": {"seen": len(manifest), "usable": len(ok), "labelled": len(labelled)},
        "modalities": {
            m.value: {"present": int(ok[HAS[m]].sum()), "missing": int((~ok[HAS[m]]).sum())} for m in MODALITIES
        },
        "splits": {s.value: int((labelled[Col.SPLIT] == s).sum()) for s in Split},
        "labels": {
            str(label): {
                s.value: int(((labelled[Col.LABEL] == label) & (labelled[Col.SPLIT] == s)).sum()) for s in Split
            }
            for label in sorted(labelled[Col.LABEL].unique())
        },
        "skipped": skipped,
        "issues": issues,
    }


def render_skipped(skipped: list[dict]) -> str:
    def loc(s: dict) -> str:
        return f"{s['source']}" + (f", row {s['row']}" if s.get("row") not in (None, "") else "")

    return "\n".join(f"- [{s['modality']}] {loc(s)}: {s['reason']}" for s in skipped)


def render_report(report: dict) -> str:
    """The ingest report as Markdown, for people."""
    lines = [f"# Ingest report: {report['dataset']}", ""]
    if report.get("error"):
        lines += [f"**Ingest failed: {report['error']}.** The skipped inputs below say why.", ""]
    p = report["patients"]
    lines += [f"Patients seen: {p['seen']}, usable: {p['usable']}, labelled: {p['labelled']}", ""]
    lines += ["| modality | present | missing |", "| --- | --- | --- |"]
    lines += [f"| {m} | {c['present']} | {c['missing']} |" for m, c in report["modalities"].items()]
    lines += ["", "| label | " + " | ".join(s.value for s in Split) + " |", "| --- |" + " --- |" * len(Split)]
    lines += [f"| {lab} | " + " | ".join(str(c[s.value]) for s in Split) + " |" for lab, c in report["labels"].items()]
    lines += ["", f"## Skipped inputs ({len(report['skipped'])})", "", render_skipped(report["skipped"]) or "none"]
    for table, counts in report.get("genes", {}).items():
        lines += ["", f"Genes of the {table} table: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if report["issues"]:
        lines += ["", "## Notes", ""] + [f"- {i}" for i in report["issues"]]
    if report.get("leakage_checks"):
        lines += ["", f"Leakage checks passed: {', '.join(report['leakage_checks'])}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- per-patient inputs


def series_list(value) -> list[list[str]]:
    """One patient's image input as a list of series: None -> [], one series (file paths) -> [it], several -> them."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [[str(f) for f in value]]
    return [[str(f) for f in group] for group in value if group]


def patient_inputs(cohort, patients: list[str]) -> dict[str, list]:
    """Each patient's raw inputs from the ingest indexes: series files, body part, note texts."""
    files: dict[str, list[list[str]]] = {}
    parts: dict[str, str] = {}
    if cohort.series is not None and not cohort.series.empty:
        ok = cohort.series[cohort.series[Col.STATUS] == Status.OK]
        for pid, fs, bp in zip(ok[Col.PATIENT], ok[Col.FILES], ok[Col.BODY_PART]):
            files.setdefault(pid, []).append([str(f) for f in fs])  # several with imaging.series_per_patient > 1
            parts.setdefault(pid, str(bp or ""))
    texts: dict[str, list[str]] = {}
    if cohort.notes is not None and not cohort.notes.empty:
        ok = cohort.notes[cohort.notes[Col.STATUS] == Status.OK]
        for pid, group in ok.groupby(Col.PATIENT.value, sort=False):
            texts[pid] = group[Col.TEXT].astype(str).tolist()
    return {
        "series": [(files[p][0] if len(files[p]) == 1 else files[p]) if p in files else None for p in patients],
        "body_parts": [parts.get(p, "") for p in patients],
        "texts": [texts.get(p, []) for p in patients],
    }
