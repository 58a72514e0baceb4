"""Property-based fuzzing of ingest: mutated DICOM headers and bytes, notes and labels tables, hostile file trees.

Each example builds a tiny cohort (``test_hostile_trees.tiny_dataset``: 3 patients, 3-slice 8x8 CT series, notes,
labels), applies a few mutations drawn by hypothesis -- bytes overwritten or cut off, header tags set to junk or
removed, named pipes, link loops, links out of the dataset, broken links, file names that are not UTF-8, empty
files, ragged / binary / NUL rows in the tables -- and runs ``ingest``. The properties:

* it ends, returning a cohort or raising clinicmm's own error (``ClinicmmError``), nothing else; a call that
  blocks (opening a FIFO) fails the example instead of hanging the suite;
* nothing is written outside the work folder: the dataset tree is unchanged, the file out of the dataset is
  unchanged, the temporary folder is left empty, the outputs are in ``out/``;
* every input file (each entry under the imaging root, each ``*.txt`` under a notes patient folder) is either in
  a series' ``files`` or recorded in a skipped row with a reason;
* what ingest wrote loads back (``Cohort.load``) with the same paths.

The example budget is fixed (``max_examples``, derandomized, no example database) so the test takes well under
a minute on two cores; ``benchmarks/fuzz.py`` runs the same mutations as a longer campaign, each case in a
subprocess with a timeout.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_trees import in_thread, tiny_dataset

from clinicmm.config import load_dataset
from clinicmm.errors import ClinicmmError
from clinicmm.ingest.cohort import Cohort, ingest
from clinicmm.ingest.walk import real_path

MAX_EXAMPLES = 40
TAGS = ["PatientID", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "StudyInstanceUID",
        "SeriesInstanceUID", "Modality", "NumberOfFrames", "SliceThickness", "BitsAllocated", "SOPClassUID"]  # fmt: skip
_pick = st.integers(0, 10_000)  # which file of the candidates (modulo their number)
_junk = st.binary(max_size=40).map(bytes.hex)  # bytes travel as hex so a case is JSON (benchmarks/fuzz.py)
_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["nan\\nan", "inf\\1", "0\\0", "A\\B", "", " ", "-1", "1e400", "\x00", "1.2.3" * 30]),
)
MUTATIONS = st.one_of(
    st.tuples(st.just("overwrite_bytes"), _pick, st.integers(0, 2000), _junk),
    st.tuples(st.just("truncate"), _pick, st.integers(0, 2000)),
    st.tuples(st.just("set_tag"), _pick, st.sampled_from(TAGS), _text),
    st.tuples(st.just("delete_tag"), _pick, st.sampled_from(TAGS)),
    st.tuples(st.just("fifo"), st.sampled_from(["img", "notes"]), _pick),
    st.tuples(st.just("link"), st.sampled_from(["loop", "self", "outside", "broken", "parent", "inside"]), _pick),
    st.tuples(st.just("odd_name"), st.sampled_from(["img", "notes"]), _pick, _junk),
    st.tuples(st.just("empty_file"), st.sampled_from(["img", "notes"]), _pick),
    st.tuples(st.just("table_line"), st.sampled_from(["notes", "labels"]), _pick, _junk),
    st.tuples(st.just("ragged_row"), st.sampled_from(["notes", "labels"]), st.integers(1, 5)),
    st.tuples(st.just("nul_text"), _pick),
)
CASES = st.fixed_dictionaries(
    {"notes": st.sampled_from(["table", "folder"]), "mutations": st.lists(MUTATIONS, min_size=1, max_size=4)}
)


# ------------------------------------------------------------------------------------------- mutations


def _entries(folder: Path, suffix: str) -> list[Path]:
    """Regular files with ``suffix`` under ``folder``, without following links (stable order)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(root, f) for f in sorted(files) if f.endswith(suffix) and Path(root, f).is_file()]
        found = [f for f in found if not f.is_symlink()]
    return found


def _one(files: list[Path], pick: int) -> Path | None:
    return files[pick % len(files)] if files else None


def _patient_folder(data: Path, where: str, pick: int) -> Path:
    base = data / "img" if where == "img" or not (data / "notes").is_dir() else data / "notes"
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())
    return folders[pick % len(folders)] if folders else base


def apply(data: Path, outside: Path, mutation: list | tuple) -> None:
    """Apply one drawn mutation to the dataset folder ``data`` (``outside``: a file out of the dataset)."""
    kind, *args = mutation
    dicoms = _entries(data / "img", ".dcm")
    if kind == "overwrite_bytes" and (f := _one(dicoms, args[0])):
        blob = bytearray(f.read_bytes())
        junk = bytes.fromhex(args[2])
        at = min(args[1], len(blob))
        blob[at : at + len(junk)] = junk
        f.write_bytes(bytes(blob))
    elif kind == "truncate" and (f := _one(dicoms, args[0])):
        f.write_bytes(f.read_bytes()[: args[1]])
    elif kind in ("set_tag", "delete_tag") and (f := _one(dicoms, args[0])):
        try:
            ds = pydicom.dcmread(f, force=True)
            if kind == "delete_tag":
                if args[1] in ds:
                    delattr(ds, args[1])
            else:
                tag = pydicom.datadict.tag_for_keyword(args[1])
                ds.add(pydicom.DataElement(tag, pydicom.datadict.dictionary_VR(tag), args[2], validation_mode=0))
            ds.save_as(f)
        except Exception:  # noqa: BLE001 -- a junk value pydicom cannot write: write the raw text instead
            with open(f, "ab") as fh:
                fh.write(args[2].encode("utf-8", "surrogatepass") if kind == "set_tag" else b"")
    elif kind == "fifo":
        folder = _patient_folder(data, args[0], args[1])
        pipe = folder / f"pipe{args[1]}{'.dcm' if args[0] == 'img' else '.txt'}"
        if not os.path.lexists(pipe):
            os.mkfifo(pipe)
    elif kind == "link":
        folder = _patient_folder(data, "notes" if args[1] % 2 else "img", args[1])
        name = folder / f"link{args[1]}{'.txt' if folder.parent.name == 'notes' else '.dcm'}"
        if name.exists() or name.is_symlink():
            return
        target = {
            "loop": name.with_name(name.name + ".other"),
            "self": name,
            "outside": outside,
            "broken": folder / "does-not-exist",
            "parent": folder.parent,
            "inside": _one(dicoms, args[1]) or outside,
        }[args[0]]
        os.symlink(target, name)
        if args[0] == "loop":
            os.symlink(name, target)
    elif kind == "odd_name":
        files = _entries(data / args[0], ".dcm" if args[0] == "img" else ".txt")
        if f := _one(files, args[1]):
            raw = bytes(b for b in bytes.fromhex(args[2]) if b not in (0, 0x2F)) or b"\xff"
            stem = b"." + raw if raw.startswith(b".") else raw  # hidden names are left out by design: keep visible
            suffix = b".dcm" if args[0] == "img" else b".txt"
            os.rename(os.fsencode(f), os.path.join(os.fsencode(f.parent), b"x" + stem.lstrip(b".") + suffix))
    elif kind == "empty_file":
        folder = _patient_folder(data, args[0], args[1])
        (folder / f"empty{args[1]}{'.dcm' if args[0] == 'img' else '.txt'}").write_bytes(b"")
    elif kind == "table_line":
        table = data / ("labels.csv" if args[0] == "labels" else "notes.csv")
        if table.is_file():
            lines = table.read_bytes().split(b"\n")
            lines.insert(1 + args[1] % max(len(lines) - 1, 1), bytes.fromhex(args[2]))
            table.write_bytes(b"\n".join(lines))
    elif kind == "ragged_row":
        table = data / ("labels.csv" if args[0] == "labels" else "notes.csv")
        if table.is_file():
            with open(table, "a", encoding="utf-8") as fh:
                fh.write("P1" + ",x" * args[1] + "\n")
    elif kind == "nul_text":
        table = data / "notes.csv"
        notes = _entries(data / "notes", ".txt") if (data / "notes").is_dir() else []
        if table.is_file():
            table.write_bytes(table.read_bytes().replace(b"Pathology", b"Patho\x00logy", 1))
        elif f := _one(notes, args[0]):
            f.write_bytes(b"\x00" + f.read_bytes())


# ------------------------------------------------------------------------------------------ properties


def _snapshot(folder: Path) -> dict[bytes, tuple]:
    """Every entry under ``folder`` (no link followed): its type, size and link target."""
    out = {}
    for root, dirs, files in os.walk(os.fsencode(folder)):
        for name in dirs + files:
            path = os.path.join(root, name)
            st_ = os.lstat(path)
            out[path] = (st_.st_mode, st_.st_size, os.readlink(path) if os.path.islink(path) else b"")
    return out


def _inputs(data: Path, notes_form: str) -> list[str]:
    """The entries ingest must account for: all under the imaging root, ``<patient>/*.txt`` under a notes folder."""
    found = []
    for root, dirs, files in os.walk(data / "img"):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, n) for n in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]]
    if notes_form == "folder":
        for patient in sorted((data / "notes").iterdir()):
            if patient.is_dir() and not patient.is_symlink():
                found += [str(p) for p in patient.iterdir() if p.name.endswith(".txt")]
    return [f for f in found if not os.path.basename(f).startswith(".")]


def run_case(case: dict, work: Path) -> str:
    """Build, mutate and ingest one case under ``work``; check every property. Returns 'ok' or 'error: ...'.

    Raises AssertionError when a property fails, and lets any non-clinicmm exception through (a crash).
    """
    outside = work / "outside" / "secret.txt"
    outside.parent.mkdir(parents=True)
    outside.write_text("SECRET-CONTENT\n")
    yaml_path = tiny_dataset(work, notes=case["notes"], slices=3)
    data = yaml_path.parent
    for mutation in case["mutations"]:
        apply(data, outside, mutation)
    before, secret_before = _snapshot(data), outside.read_bytes()
    spool = work / "tmp"
    spool.mkdir()
    with _tempdir(spool):
        try:
            cohort = in_thread(lambda: ingest(load_dataset(yaml_path), work / "out"))
        except ClinicmmError as exc:
            outcome, cohort = f"error: {type(exc).__name__}", None
        else:
            outcome = "ok"
    assert _snapshot(data) == before, "ingest changed the dataset folder"
    assert outside.read_bytes() == secret_before
    assert not os.listdir(spool), "ingest left temporary files behind"
    assert set(os.listdir(work)) <= {"data", "outside", "tmp", "out"}
    if cohort is None:
        return outcome
    assert "SECRET" not in (work / "out" / "report.json").read_text()  # the file out of the dataset was never read
    assert cohort.notes is None or not cohort.notes["text"].str.contains("SECRET").any()
    accounted = set()
    if cohort.series is not None:
        for files, source in zip(cohort.series["files"], cohort.series["source"]):
            accounted.update(str(f) for f in files)
            accounted.add(real_path(str(source)))
    accounted.update(real_path(s["source"]) for s in cohort.report["skipped"] if s["reason"])
    if cohort.notes is not None:
        accounted.update(real_path(str(s)) for s in cohort.notes["source"])
    missing = [f for f in _inputs(data, case["notes"]) if os.fsdecode(os.fsencode(f)) not in accounted]
    assert not missing, f"input entries neither ingested nor recorded: {[os.path.basename(m) for m in missing]}"
    loaded = Cohort.load(work / "out")
    if cohort.series is not None:
        assert [list(map(str, f)) for f in loaded.series["files"]] == [
            list(map(str, f)) for f in cohort.series["files"]
        ]
    return outcome


@contextlib.contextmanager
def _tempdir(folder: Path):
    """Point ``tempfile`` at ``folder`` for the block, so what ingest leaves there can be checked."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types (FIFOs, symlinks) needed")
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=CASES)
def test_ingest_survives_mutated_cohorts(case):
    with tempfile.TemporaryDirectory(prefix="clinicmm-fuzz-") as tmp:
        run_case(case, Path(tmp))


def test_the_properties_catch_an_input_left_unaccounted(tmp_path, monkeypatch):
    """The coverage property can fail: a walk that drops what it skips (as listing with is_file() did) is caught."""
    import clinicmm.ingest.notes as notes_module
    from clinicmm.ingest.walk import Walked, walk

    monkeypatch.setattr(notes_module, "walk", lambda *a, **k: Walked(files=walk(*a, **k).files))
    with pytest.raises(AssertionError, match="neither ingested nor recorded"):
        run_case({"notes": "folder", "mutations": [("fifo", "notes", 0)]}, tmp_path)
