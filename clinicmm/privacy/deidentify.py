"""``clinicmm deidentify IN OUT``: a de-identified copy of a DICOM tree or of a whole dataset.

IN is a folder (or file) of DICOM, or a ``dataset.yaml``. For a dataset, OUT gets the DICOM tree, the labels,
the notes table (text scrubbed, see :mod:`clinicmm.privacy.deid_notes`) and the genomics tables, every patient id
replaced by its keyed pseudonym and every date moved by the patient's keyed day shift (dates of birth removed,
not shifted), plus a ``dataset.yaml`` that trains exactly like the original. IN is only read; OUT must be new or
empty. The per-file report names the source files and real ids, so it is written beside OUT
(``OUT-deid-report.csv``), not inside it; when notes were scrubbed its first row (kind ``notice``) says what the
pattern-based scrubber cannot promise (:func:`clinicmm.privacy.deid_notes.limits`).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

from clinicmm.csvsafe import write_csv
from clinicmm.errors import ConfigError, InputError
from clinicmm.ingest.notes import decode
from clinicmm.ingest.segments import segment_columns
from clinicmm.privacy.deid_dicom import deidentify_file
from clinicmm.privacy.deid_notes import (
    NerUnavailable,
    default_ner,
    is_birth_date_column,
    limits,
    ner_scrubber,
    presidio_analyzer,
    scrub,
    shift_date_value,
    shift_dates,
)
from clinicmm.privacy.pseudonym import day_shift, pseudonym

PSEUDONYM_PATTERN = r"^(P-[0-9a-f]{16})"
COUNTS = (
    "removed",
    "emptied",
    "replaced",
    "uids_remapped",
    "dates_shifted",
    "sequences_cleaned",
    "private_removed",
    "names",
    "ids",
    "contacts",
    "addresses",
    "dobs",
    "ages",
    "ner",
)


def _check_folders(sources: list[Path], out: Path) -> None:
    out = out.resolve()
    for src in sources:
        src = src.resolve()
        folder = src if src.is_dir() else src.parent
        if out == folder or out.is_relative_to(folder) or folder.is_relative_to(out):
            raise InputError(
                f"{out}: OUT overlaps the input {folder}; choose an OUT outside it (IN is never written to)."
            )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty folder; choose a new OUT (nothing is overwritten).")


def _files(root: Path) -> list[Path]:
    return [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())


def deidentify_dicom(
    root: Path, out: Path, key: bytes, patient_tag: str = "PatientID", progress: bool = True, base: Path | None = None
):
    """De-identify every file under ``root`` into ``out/<pseudonym>/<series UID>/<SOP UID>.dcm``.

    The report's ``source`` is relative to ``root``, its ``output`` to ``base`` (default ``out``).

    Returns (report rows, {patient id: {"names", "ids"}} found in the headers, for the notes).
    """
    from tqdm.auto import tqdm

    rows, found = [], {}
    files = _files(root)
    for path in tqdm(files, desc="deidentify DICOM", unit="file", file=sys.stderr, disable=None if progress else True):
        ds, row = deidentify_file(path, key, patient_tag)
        row = {
            "kind": "dicom",
            "source": str(path.relative_to(root) if root.is_dir() else path.name),
            "output": "",
        } | row
        if ds is not None:
            target = out / row["pseudonym"] / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=False)
            row["output"] = str(target.relative_to(base or out))
            ids = found.setdefault(row["patient"], {"names": set(), "ids": set()})
            for k in ("names", "ids"):
                ids[k] |= row["_found"][k]
        row.pop("_found", None)
        rows.append(row)
    return rows, found


# -------------------------------------------------------------------------------------------- tables


def _read(path: Path, encoding: str = "auto") -> pd.DataFrame:
    import io

    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab", ".txt", ".maf", ".seg"):
        lines = _text(path, encoding).splitlines(keepends=True)
        start = next(
            (i for i, line in enumerate(lines) if not line.startswith("#")), len(lines)
        )  # MAF '#version' lines
        text = io.StringIO("".join(lines[start:]))
        return pd.read_csv(text, sep="," if suffix == ".csv" else "\t", dtype=str, keep_default_na=False)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False).astype(str)
    if suffix == ".parquet":
        return pd.read_parquet(path).astype(str)
    raise InputError(f"{path}: cannot read {suffix!r} tables; use .csv, .tsv, .jsonl or .parquet.")


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab", ".txt", ".maf", ".seg"):
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _write_table(frame: pd.DataFrame, src: Path, out: Path) -> dict:
    """Write the de-identified ``frame`` of ``src`` into ``out``; its row of the report."""
    _write(frame, out / src.name)
    return {
        "kind": "table",
        "source": str(src),
        "output": str(out / src.name),
        "status": "written",
        "reason": f"{len(frame)} rows",
    }


def _copy_file(src: Path, folder: Path) -> dict:
    """Copy a file that holds no patient data (a probe -> gene map, an HGNC table) into ``folder``; its row of the
    report."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / src.name)
    return {"kind": "table", "source": str(src), "output": str(folder / src.name), "status": "copied",
            "reason": "no patient data (probe map or gene table)"}  # fmt: skip


def _column(frame: pd.DataFrame, name: str | None, path: Path, key: str) -> str | None:
    if name is not None and name not in frame.columns:
        raise InputError(f"{path}: no column {name!r} ({key}); columns are {', '.join(frame.columns[:12])}.")
    return name


class _Patients:
    """Pseudonyms and day shifts by patient id, and what is known to identify each patient."""

    def __init__(self, key: bytes, found: dict, known: dict[str, set[str]] | None = None, ner=None):
        self.key, self.found, self.known = key, found, known or {}
        self.ner = ner  # the optional named-entity pass over the notes (deid_notes.ner_scrubber)

    def pseudo(self, pid: str) -> str:
        return pseudonym(pid, self.key) if pid else pid

    def days(self, pid: str) -> int:
        return day_shift(pid, self.key)

    def names(self, pid: str) -> set[str]:
        return self.found.get(pid, {}).get("names", set()) | self.known.get(pid, set())

    def ids(self, pid: str) -> set[str]:
        return self.found.get(pid, {}).get("ids", set())


def deidentify_table(
    path: Path,
    out: Path,
    people: _Patients,
    patient_col: str,
    text_col: str | None = None,
    date_cols: tuple[str | None, ...] = (),
    encoding: str = "auto",
) -> dict:
    """Pseudonymise the patient column, shift the date columns, scrub the text column, empty date-of-birth columns
    (dob, date_of_birth ...: removed, not shifted); ids in other cells replaced."""
    frame = _read(path, encoding)
    _column(frame, patient_col, path, "patient column")
    counts: Counter = Counter()
    out_rows = []
    for _, row in frame.iterrows():
        pid = str(row[patient_col]).strip()
        names = people.names(pid)
        new = row.copy()
        for col in frame.columns:
            value = str(row[col])
            if col == patient_col:
                new[col] = people.pseudo(pid)
            elif col == text_col:
                new[col] = scrub(
                    value, people.days(pid), names, people.ids(pid), {pid: people.pseudo(pid)}, counts, people.ner
                )
            elif col in date_cols:
                new[col] = shift_date_value(value, people.days(pid))
                counts["dates_shifted"] += bool(value)
            elif is_birth_date_column(col):
                new[col] = ""
                counts["dobs"] += bool(value.strip())
            else:  # ids inside other cells (a note id 'MRN-N1'), dates in undeclared date columns
                new[col] = shift_dates(
                    value.replace(pid, people.pseudo(pid)) if pid else value, people.days(pid), counts
                )
        out_rows.append(new)
    _write(pd.DataFrame(out_rows, columns=frame.columns), out)
    return {
        "kind": "table",
        "source": str(path),
        "output": str(out),
        "status": "written",
        "reason": f"{len(frame)} rows",
    } | dict(counts)


def _text(path: Path, encoding: str) -> str:
    """The file's text as ingest decodes it, but never failing on bad bytes: every note must be copied, scrubbed."""
    return decode(path.read_bytes(), encoding, str(path), lenient=True)[0]


def deidentify_note_folder(root: Path, out: Path, people: _Patients, spec) -> dict:
    """Notes as ``root/<patient id>/<note file>``: folders renamed to the pseudonym, dates in file names shifted,
    texts scrubbed and written as UTF-8."""
    counts, n = Counter(), 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pid = folder.name
        for file in sorted(f for f in folder.glob(spec.file_glob) if f.is_file() and not f.name.startswith(".")):
            name = shift_dates(file.name.replace(pid, people.pseudo(pid)), people.days(pid), counts)
            text = scrub(
                _text(file, spec.encoding),
                people.days(pid),
                people.names(pid),
                people.ids(pid),
                {pid: people.pseudo(pid)},
                counts,
                people.ner,
            )
            target = out / people.pseudo(pid) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            n += 1
    return {
        "kind": "table",
        "source": str(root),
        "output": str(out),
        "status": "written",
        "reason": f"{n} note files",
    } | dict(counts)


def _sample_patient(pattern: str | None):
    rx = re.compile(pattern) if pattern else None

    def split(sample: str) -> tuple[str, int, int]:
        m = rx.search(sample) if rx else None
        return (m.group(1), m.start(1), m.end(1)) if m else (sample, 0, len(sample))

    return split


def _pseudo_sample(sample: str, people: _Patients, split) -> str:
    pid, a, b = split(sample)
    return sample[:a] + people.pseudo(pid) + sample[b:]


def deidentify_genomics(spec, out: Path, people: _Patients) -> list[dict]:
    """Sample ids (and the patient id inside them) pseudonymised in the expression matrix, every omics layer and
    the MAF; a layer's feature map (probe -> gene, no patient in it) is copied as it is."""
    g = spec.genomics
    split, rows = _sample_patient(g.sample_pattern()), []
    tables = [("genomics.expression", g.expression)] if g.expression is not None else []
    tables += [(f"genomics.layers[{i}]", layer) for i, layer in enumerate(g.layers)]
    names = [spec.resolve(t.path).name for _, t in tables] + (
        [spec.resolve(g.mutations.path).name] if g.mutations else []
    )
    maps = {spec.resolve(p) for p in [*(getattr(t, "feature_map", None) for _, t in tables), g.genes.hgnc_table] if p}
    copied = [m.name for m in maps]  # one file named by two layers is copied once
    for files in (names, copied):
        if len(set(files)) < len(files):
            raise InputError(
                "deidentify writes every genomics table (and each probe map) into OUT under its file name, and two "
                f"of them share one ({', '.join(sorted({n for n in files if files.count(n) > 1}))}); rename one "
                "before de-identifying."
            )
    for key, e in tables:
        if e.sample_sheet is not None:
            raise InputError(
                f"{key}.sample_sheet: a folder of one file per sample (a GDC download) is not de-identified by this "
                "command; join it into one table first, or de-identify the sample sheet's ids yourself."
            )
        src, frame = spec.resolve(e.path), _read(spec.resolve(e.path))
        if getattr(e, "segments", None):  # a segment table: its sample column as the reader finds it
            found = segment_columns([str(c) for c in frame.columns], e.sample_column)
            column = (
                frame.columns[found["sample"]]
                if found and found["sample"] is not None
                else _column(frame, e.sample_column, src, "sample_column")
            )
            frame[column] = [_pseudo_sample(s, people, split) for s in frame[column]]
        elif e.orientation == "samples_x_genes":
            frame[e.sample_column] = [
                _pseudo_sample(s, people, split) for s in frame[_column(frame, e.sample_column, src, "sample_column")]
            ]
        else:
            frame.columns = [frame.columns[0], *(_pseudo_sample(c, people, split) for c in frame.columns[1:])]
        rows.append(_write_table(frame, src, out))
    rows += [_copy_file(m, out / "feature_maps") for m in sorted(maps)]  # the probe maps and gene table, public data
    if spec.genomics.mutations is not None:
        m = spec.genomics.mutations
        if spec.resolve(m.path).is_dir():
            raise InputError(
                "genomics.mutations.path: a folder of MAFs (a GDC download) is not de-identified by this command; "
                "join the MAFs into one table first."
            )
        src, frame = spec.resolve(m.path), _read(spec.resolve(m.path))
        frame[m.sample_column] = [
            _pseudo_sample(s, people, split) for s in frame[_column(frame, m.sample_column, src, "sample_column")]
        ]
        rows.append(_write_table(frame, src, out))
    return rows


# ------------------------------------------------------------------------------------------ dataset


def read_names(path: Path) -> dict[str, set[str]]:
    """A names table: the first column the patient id, every other column a name (or its parts) of that patient."""
    frame = _read(Path(path))
    if frame.shape[1] < 2:
        raise InputError(f"{path}: a names table needs a patient id column and at least one name column.")
    names: dict[str, set[str]] = {}
    for row in frame.itertuples(index=False):
        parts = {p for v in row[1:] for p in str(v).replace("^", " ").replace(",", " ").split() if len(p) >= 2}
        names.setdefault(str(row[0]).strip(), set()).update(parts)
    return names


def notes_ner(ner: bool | None):
    """The named-entity pass for the notes: ``None`` presidio when it loads (see
    :func:`~clinicmm.privacy.deid_notes.default_ner`), ``True`` presidio or a ConfigError saying what to install,
    ``False`` none (the patterns alone)."""
    if ner is None:
        return default_ner()
    if not ner:
        return None
    try:
        return ner_scrubber(presidio_analyzer())
    except NerUnavailable as exc:
        raise ConfigError(f"the named-entity pass of the notes was asked for, but {exc}.") from None


def _dataset(
    spec, out: Path, key: bytes, progress: bool, known: dict | None = None, ner: bool | None = None
) -> tuple[list[dict], dict]:
    data = spec.model_dump(mode="json", exclude_none=True)
    rows, found = [], {}
    if spec.imaging is not None:
        rows, found = deidentify_dicom(
            spec.resolve(spec.imaging.root), out / "dicom", key, spec.imaging.patient_tag, progress, out
        )
        data["imaging"]["root"] = "dicom"
    people = _Patients(key, found, known, notes_ner(ner) if spec.notes is not None else None)
    if spec.labels is not None:
        src = spec.resolve(spec.labels.path)
        rows.append(
            deidentify_table(
                src, out / src.name, people, spec.labels.patient_column, date_cols=(spec.labels.date_column,)
            )
        )
        data["labels"]["path"] = src.name
    if spec.notes is not None:
        src = spec.resolve(spec.notes.path)
        if src.is_dir():
            rows.append(deidentify_note_folder(src, out / "notes", people, spec.notes))
            data["notes"]["path"] = "notes"
        else:
            n = spec.notes
            rows.append(
                deidentify_table(
                    src, out / src.name, people, n.patient_column, n.text_column, (n.date_column,), encoding=n.encoding
                )
            )
            data["notes"]["path"] = src.name
        data["notes"]["encoding"] = "auto"  # written as UTF-8
        rows.insert(
            0,
            {
                "kind": "notice",
                "source": "",
                "output": "",
                "status": "read me",
                "reason": limits(people.ner is not None),
            },
        )
    if spec.genomics is not None:
        rows += deidentify_genomics(spec, out, people)
        for part in ("expression", "mutations"):
            if part in data["genomics"]:
                data["genomics"][part]["path"] = Path(data["genomics"][part]["path"]).name
        for layer in data["genomics"].get("layers") or []:
            layer["path"] = Path(layer["path"]).name
            if layer.get("feature_map"):
                layer["feature_map"] = f"feature_maps/{Path(layer['feature_map']).name}"
        if (data["genomics"].get("genes") or {}).get("hgnc_table"):
            data["genomics"]["genes"]["hgnc_table"] = (
                f"feature_maps/{Path(data['genomics']['genes']['hgnc_table']).name}"
            )
        if spec.genomics.sample_pattern():  # the pseudonym, not the first N characters of it, is the patient
            data["genomics"]["patient_id_pattern"] = PSEUDONYM_PATTERN
            data["genomics"].pop("patient_id_length", None)
    (out / "dataset.yaml").write_text(
        "# De-identified by `clinicmm deidentify`: ids are keyed pseudonyms, dates shifted, dates of birth removed.\n"
        + (
            "# Notes were scrubbed by patterns: not a guarantee that no identifier is left; review before sharing.\n"
            if spec.notes is not None
            else ""
        )
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return rows, data


def deidentify(
    src: Path,
    out: Path,
    key: bytes,
    report: Path | None = None,
    progress: bool = True,
    names: Path | None = None,
    ner: bool | None = None,
) -> dict:
    """De-identify ``src`` (a DICOM folder/file or a dataset.yaml) into ``out``; returns counts and the report path.

    ``names``: a table of known patient names (see :func:`read_names`) scrubbed from notes besides the DICOM ones.
    ``ner``: the named-entity pass over the notes (:func:`notes_ner`; default: presidio when it loads). With notes,
    ``limits`` in the result (and the report's first row) says what the scrubber cannot promise.
    """
    from clinicmm.config import load_dataset

    src, out = Path(src), Path(out)
    is_dataset = src.is_file() and src.suffix.lower() in (".yaml", ".yml")
    spec = load_dataset(src) if is_dataset else None
    roots = [src] if spec is None else [spec.base_dir] + [spec.resolve(p) for p in _declared(spec)]
    _check_folders(roots, out)
    report = Path(report) if report else out.parent / f"{out.name}-deid-report.csv"
    if report.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"{report}: the report names source files and real ids; write it outside OUT.")
    out.mkdir(parents=True, exist_ok=True)
    if spec is None:
        rows, _ = deidentify_dicom(src, out, key, progress=progress)
    else:
        rows, _ = _dataset(spec, out, key, progress, read_names(names) if names else None, ner)
    frame = pd.DataFrame(rows)
    for c in COUNTS:
        frame[c] = frame[c].fillna(0).astype(int) if c in frame.columns else 0
    report.parent.mkdir(parents=True, exist_ok=True)
    write_csv(frame, report, index=False)  # a report people open in a spreadsheet: formula prefixes neutralised
    dicom = frame[frame["kind"] == "dicom"]
    return {
        "report": str(report),
        "dicom": {s: int((dicom["status"] == s).sum()) for s in ("written", "refused", "skipped", "failed")},
        "patients": int(dicom["pseudonym"].nunique()) if "pseudonym" in dicom else 0,
        "tables": int((frame["kind"] == "table").sum()),
        "counts": {c: int(frame[c].sum()) for c in COUNTS},
    } | {"limits": notice for notice in frame.loc[frame["kind"] == "notice", "reason"][:1]}


def _declared(spec) -> list[Path]:
    from clinicmm.config import declared_paths

    return [p for _, p in declared_paths(spec)]
