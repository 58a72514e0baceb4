"""Hostile data trees: pipes, link loops, links out of the dataset, file names that are not UTF-8, odd headers.

Each is recorded with its reason and skipped; none stops, hangs or crashes ingest or the stage fingerprint, and
nothing outside the dataset is read. ``tiny_dataset`` (3 patients, tiny CT series, a notes table or folder, a
labels table) is shared with the fuzzing test and ``benchmarks/fuzz.py``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from dicom_fixtures import uniform, write_series

from clinicmm.config import load_dataset
from clinicmm.ingest.cohort import Cohort, build_cohort, ingest
from clinicmm.ingest.walk import real_path, walk
from clinicmm.pipeline.registry import tree_digest

PATIENTS = ("P0", "P1", "P2")
LABELS = ("BRCA", "LUAD", "COAD")
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types (FIFOs, symlinks) needed")


def tiny_dataset(root: Path, notes: str = "table", patients=PATIENTS, slices: int = 4) -> Path:
    """``root/data/dataset.yaml`` over ``img/<patient>/`` (one CT series each), notes and ``labels.csv``.

    ``notes``: 'table' (``notes.csv``) or 'folder' (``notes/<patient>/note.txt``). Returns the YAML path.
    """
    data = root / "data"
    for i, pid in enumerate(patients):
        write_series(data / "img" / pid, uniform(40.0 * i, (slices, 8, 8)), shuffle=False, patient=pid)
    texts = [f"Pathology for case {i}: carcinoma of type {LABELS[i % 3].lower()} seen." for i in range(len(patients))]
    if notes == "folder":
        for pid, text in zip(patients, texts):
            (data / "notes" / pid).mkdir(parents=True)
            (data / "notes" / pid / "note.txt").write_text(text, encoding="utf-8")
    else:
        pd.DataFrame({"patient_id": list(patients), "text": texts}).to_csv(data / "notes.csv", index=False)
    labels = [LABELS[i % 3] for i in range(len(patients))]
    pd.DataFrame({"patient_id": list(patients), "cancer_type": labels}).to_csv(data / "labels.csv", index=False)
    spec = {
        "name": "tiny",
        "labels": {"path": "labels.csv"},
        "imaging": {"root": "img", "min_slices": 2},
        "notes": {"path": "notes" if notes == "folder" else "notes.csv"},
    }
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return data / "dataset.yaml"


def in_thread(fn, timeout: float = 120.0):
    """``fn()`` in a daemon thread: a call that blocks forever (opening a FIFO) fails the test instead of hanging it."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout:.0f} s: it blocked (hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def skipped(cohort: Cohort) -> list[dict]:
    return cohort.report["skipped"]


# ------------------------------------------------------------------------------------------ special files


def test_a_named_pipe_under_the_imaging_root_or_notes_folder_is_skipped_without_being_opened(tmp_path):
    yaml_path = tiny_dataset(tmp_path, notes="folder")
    os.mkfifo(yaml_path.parent / "img" / "P1" / "pipe.dcm")
    os.mkfifo(yaml_path.parent / "notes" / "P2" / "pipe.txt")
    cohort = in_thread(lambda: build_cohort(load_dataset(yaml_path)))
    reasons = {Path(s["source"]).name: s["reason"] for s in skipped(cohort)}
    assert "named pipe" in reasons["pipe.dcm"] and "without opening" in reasons["pipe.dcm"]
    assert "named pipe" in reasons["pipe.txt"]
    m = cohort.manifest.set_index("patient_id")
    assert m.loc["P1", "has_image"] and m.loc["P2", "has_note"]  # the rest of each patient still loads


def test_a_pipe_named_as_the_notes_table_is_an_input_error_not_a_hang(tmp_path):
    from clinicmm.errors import InputError

    yaml_path = tiny_dataset(tmp_path)
    (yaml_path.parent / "notes.csv").unlink()
    os.mkfifo(yaml_path.parent / "notes.csv")
    with pytest.raises(InputError, match="named pipe"):
        in_thread(lambda: build_cohort(load_dataset(yaml_path)))


# ----------------------------------------------------------------------------------------------- symlinks


def test_symlink_loops_are_skipped_by_ingest_and_the_fingerprint_never_crashes(tmp_path):
    yaml_path = tiny_dataset(tmp_path, notes="folder")
    data = yaml_path.parent
    os.symlink("loop_b", data / "img" / "P0" / "loop_a")
    os.symlink("loop_a", data / "img" / "P0" / "loop_b")
    os.symlink("..", data / "img" / "P1" / "up")  # a folder link to a folder holding it
    os.symlink("self.txt", data / "notes" / "P0" / "self.txt")
    spec = load_dataset(yaml_path)
    roots = [data]
    listing = tree_digest(data / "img", roots=roots) + tree_digest(data / "notes", roots=roots)
    assert any(line.startswith("P0/loop_a\tskipped:") and "loop" in line for line in listing)
    assert any(line.startswith("P1/up\tskipped:") and "loop" in line for line in listing)
    cohort = build_cohort(spec)
    reasons = {Path(s["source"]).name: s["reason"] for s in skipped(cohort)}
    for name in ("loop_a", "loop_b", "up", "self.txt"):
        assert "loop" in reasons[name], name
    assert cohort.manifest.set_index("patient_id").loc["P1", "has_image"]


def test_links_out_of_the_dataset_are_refused_and_never_read_links_inside_are_followed(tmp_path):
    yaml_path = tiny_dataset(tmp_path, notes="folder")
    data = yaml_path.parent
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "passwd"
    secret.write_text("root:x:0:0:SECRET-CONTENT\n")
    os.symlink(secret, data / "notes" / "P0" / "stolen.txt")
    os.symlink(outside, data / "notes" / "P9")  # a whole patient folder out of the dataset
    os.symlink(outside, data / "img" / "P1" / "outside_dir")
    shared = data / "shared"
    shared.mkdir()
    (shared / "extra.txt").write_text("Radiology for case 2: mass in the lung seen today.")
    os.symlink(shared / "extra.txt", data / "notes" / "P2" / "extra.txt")  # inside the YAML's folder: fine

    cohort = build_cohort(load_dataset(yaml_path))
    notes = cohort.notes
    assert not notes["text"].str.contains("SECRET").any()
    assert notes.set_index("note_id").loc["P2/extra.txt", "status"] == "ok"
    refused = [s for s in skipped(cohort) if "outside the dataset" in s["reason"]]
    assert {Path(s["source"]).name for s in refused} == {"stolen.txt", "P9", "outside_dir"}
    text = json.dumps(cohort.report)
    assert str(outside) not in text and "SECRET" not in text and "passwd" not in text
    # the fingerprint does not read the file out there either: changing it changes nothing
    before = tree_digest(data / "notes", roots=[data])
    secret.write_text("changed\n")
    assert tree_digest(data / "notes", roots=[data]) == before


def test_a_link_to_a_file_under_the_same_root_is_read_once_where_it_lies(tmp_path):
    yaml_path = tiny_dataset(tmp_path)
    img = yaml_path.parent / "img"
    first = sorted((img / "P0").iterdir())[0]
    os.symlink(first, img / "P1" / "copy.dcm")
    cohort = build_cohort(load_dataset(yaml_path))
    series = cohort.series.set_index("patient_id")
    assert series.loc["P1", "status"] == "ok" and series.loc["P0", "status"] == "ok"  # no duplicated slice
    assert any(Path(s["source"]).name == "copy.dcm" and "read where it lies" in s["reason"] for s in skipped(cohort))


def test_walk_lists_regular_files_in_os_walk_order_and_every_other_entry_with_a_reason(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b" / "c.txt").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    os.symlink("nowhere", tmp_path / "broken")
    walked = walk(tmp_path)
    assert [os.path.relpath(f, tmp_path) for f in walked.files] == ["a.txt", "b/c.txt"]
    reasons = {os.path.basename(p): r for p, r in walked.skipped}
    assert set(reasons) == {"fifo", "broken"}
    assert "broken symbolic link" in reasons["broken"] and "named pipe" in reasons["fifo"]


# ------------------------------------------------------------------------------------ names and headers


def test_a_file_name_that_is_not_utf8_is_ingested_written_and_loaded_back_as_the_real_path(tmp_path):
    yaml_path = tiny_dataset(tmp_path, notes="folder")
    data = yaml_path.parent
    img = os.fsencode(data / "img" / "P0")
    victim = sorted(os.listdir(img))[0]
    bad_dicom = os.path.join(img, b"slice\xff.dcm")
    os.rename(os.path.join(img, victim), bad_dicom)
    bad_note = os.path.join(os.fsencode(data / "notes" / "P1"), b"n\xffte.txt")
    os.rename(os.path.join(os.fsencode(data / "notes" / "P1"), b"note.txt"), bad_note)
    with open(os.path.join(os.fsencode(data / "img" / "P2"), b"junk\xfe.bin"), "wb") as f:
        f.write(b"not dicom")

    cohort = ingest(load_dataset(yaml_path), tmp_path / "out")  # wrote every table and the report
    loaded = Cohort.load(tmp_path / "out")
    files = next(f for p, f in zip(loaded.series["patient_id"], loaded.series["files"]) if p == "P0")
    assert os.fsdecode(bad_dicom) in list(files) and all(os.path.isfile(f) for f in files)  # the real paths
    assert list(files) == list(
        next(f for p, f in zip(cohort.series["patient_id"], cohort.series["files"]) if p == "P0")
    )
    ok_notes = loaded.notes[loaded.notes["status"] == "ok"].set_index("note_id")
    shown = ok_notes.loc["P1/n\\xffte.txt", "source"]  # printable in the tables, and back to the file on disk
    assert shown.endswith("n\\xffte.txt") and real_path(shown) == os.fsdecode(bad_note)
    assert os.path.isfile(real_path(shown))
    pd.testing.assert_frame_equal(loaded.notes, cohort.notes, check_dtype=False)
    junk = next(s for s in skipped(cohort) if "junk" in s["source"])
    assert junk["source"].endswith("junk\\xfe.bin") and "not a DICOM file" in junk["reason"]
    json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert "junk\\xfe.bin" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_a_patient_id_with_a_backslash_keeps_its_image_linked_to_its_label(tmp_path):
    yaml_path = tiny_dataset(tmp_path, patients=("AB\\CD", "P1", "P2"))
    cohort = build_cohort(load_dataset(yaml_path))
    m = cohort.manifest.set_index("patient_id")
    assert "AB\\CD" in m.index and m.loc["AB\\CD", "has_image"] and m.loc["AB\\CD", "label"] == "BRCA"
    assert "AB" not in m.index and "['AB', 'CD']" not in m.index


@pytest.mark.parametrize("how", ["nan", "inf", "zero", "wrong_vr", "one_value"])
def test_bad_pixel_spacing_skips_the_series_naming_the_tag(tmp_path, how):
    yaml_path = tiny_dataset(tmp_path)
    for path in sorted((yaml_path.parent / "img" / "P1").iterdir()):
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        if how == "wrong_vr":
            ds.add_new(0x00280030, "FD", [0.5, 0.5])
        else:
            value = {"nan": "nan\\nan", "inf": "inf\\1", "zero": "0\\0", "one_value": "0.7"}[how]
            ds.add(pydicom.DataElement(0x00280030, "DS", value, validation_mode=0))
        ds.save_as(path)
    cohort = build_cohort(load_dataset(yaml_path))
    assert not cohort.manifest.set_index("patient_id").loc["P1", "has_image"]
    reasons = [s["reason"] for s in skipped(cohort) if s["patient_id"] == "P1" or "P1" in s["source"]]
    assert reasons and all("(0028,0030)" in r for r in reasons)
    assert cohort.manifest.set_index("patient_id").loc["P0", "has_image"]


def test_registry_digest_is_unchanged_for_an_ordinary_tree(tmp_path):
    """The walker gives the fingerprint the listing ``os.walk`` gave: existing workdirs stay current."""
    from clinicmm.files import digest_files

    yaml_path = tiny_dataset(tmp_path)
    img = yaml_path.parent / "img"
    (img / "P0" / ".DS_Store").write_bytes(b"finder")  # hidden files always entered the fingerprint
    expected = sorted(
        f"{Path(r, n).relative_to(img)}\t{digest_files([Path(r, n)])}" for r, _, fs in os.walk(img) for n in fs
    )
    assert tree_digest(img) == expected == tree_digest(img, roots=[yaml_path.parent])
    assert tree_digest(yaml_path.parent / "labels.csv") == [
        f"labels.csv\t{digest_files([yaml_path.parent / 'labels.csv'])}"
    ]
    assert np.all([line.count("\t") == 1 for line in expected])


def test_the_stage_fingerprint_of_a_hostile_tree_is_computed_and_reads_nothing_outside(tmp_path):
    from clinicmm.config import load_workflow
    from clinicmm.pipeline.registry import inputs_digest

    yaml_path = tiny_dataset(tmp_path, notes="folder")
    data = yaml_path.parent
    secret = tmp_path / "secret.txt"
    secret.write_text("one")
    os.symlink("loop_b", data / "img" / "P0" / "loop_a")
    os.symlink("loop_a", data / "img" / "P0" / "loop_b")
    os.symlink("..", data / "notes" / "P1" / "up")
    os.symlink(secret, data / "notes" / "P2" / "secret.txt")
    os.mkfifo(data / "img" / "P2" / "pipe.dcm")
    bad = os.path.join(os.fsencode(data / "notes" / "P0"), b"n\xff.txt")
    with open(bad, "wb") as f:
        f.write(b"text")
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump({"name": "w", "dataset": str(yaml_path), "workdir": "work"}))
    wf = load_workflow(tmp_path / "wf.yaml")
    first = in_thread(lambda: inputs_digest(wf))
    secret.write_text("two")  # out of the dataset: not part of its inputs
    assert inputs_digest(wf) == first
    with open(bad, "wb") as f:
        f.write(b"edited")  # a file with an odd name is an input like any other
    assert inputs_digest(wf) != first


def test_follow_symlinks_outside_opts_in_and_a_looping_yaml_path_is_a_config_error(tmp_path):
    from clinicmm.errors import ConfigError

    yaml_path = tiny_dataset(tmp_path, notes="folder")
    data = yaml_path.parent
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "note.txt").write_text("Radiology for case 9: mass seen in the lung.")
    os.symlink(outside / "note.txt", data / "notes" / "P1" / "linked.txt")
    refused = build_cohort(load_dataset(yaml_path))
    rows = refused.notes.set_index("note_id")
    assert "P1/linked.txt" not in rows.index or rows.loc["P1/linked.txt", "status"] == "skipped"
    assert any(Path(s["source"]).name == "linked.txt" and "outside" in s["reason"] for s in skipped(refused))
    spec = yaml.safe_load(yaml_path.read_text()) | {"follow_symlinks_outside": True}
    yaml_path.write_text(yaml.safe_dump(spec))
    followed = build_cohort(load_dataset(yaml_path)).notes.set_index("note_id")
    assert followed.loc["P1/linked.txt", "status"] == "ok"  # the user said the link is theirs to follow

    os.symlink(data / "loop", data / "loop")
    spec["notes"] = {"path": "loop"}
    yaml_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="symbolic link loop"):
        load_dataset(yaml_path)
