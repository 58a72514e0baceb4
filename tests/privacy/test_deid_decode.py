"""De-identification reads text with ingest's decoder (``io.notes.decode``, lenient), not a second one."""

from __future__ import annotations

import re

import pytest

from clinicmm.privacy.pseudonym import pseudonym

KEY = b"k" * 32


def test_tables_are_decoded_by_io_notes_decode_leniently(tmp_path, monkeypatch):
    import clinicmm.privacy.deidentify as deid

    calls, real = [], deid.decode

    def spy(data, encoding, where, lenient=False):
        calls.append((where, lenient))
        return real(data, encoding, where, lenient)

    monkeypatch.setattr(deid, "decode", spy)
    maf = tmp_path / "calls.maf"  # a BOM before MAF's '#version' line: the line is still a comment
    maf.write_bytes("\ufeff#version 2.4\nHugo_Symbol\tTumor_Sample_Barcode\nTP53\tS1\n".encode())
    frame = deid._read(maf)
    assert calls == [(str(maf), True)]
    assert list(frame.columns) == ["Hugo_Symbol", "Tumor_Sample_Barcode"] and frame.iloc[0].tolist() == ["TP53", "S1"]


def test_a_badly_encoded_note_file_is_still_scrubbed_and_written(tmp_path):
    from clinicmm.privacy.deidentify import deidentify

    data = tmp_path / "data"
    (data / "notes" / "MRN-9").mkdir(parents=True)
    bad = "Ms Jane Roe, MR# 4410-12: carcinoma \u00e9".encode() + bytes(range(128, 256)) * 3
    (data / "notes" / "MRN-9" / "path.txt").write_bytes(bad)
    (data / "labels.csv").write_text("patient_id,cancer_type\nMRN-9,LUAD\n")
    (data / "names.csv").write_text("patient_id,name\nMRN-9,Jane Roe\n")
    (data / "dataset.yaml").write_text("name: t\nlabels: {path: labels.csv}\nnotes: {path: notes, encoding: utf-8}\n")
    deidentify(data / "dataset.yaml", tmp_path / "out", KEY, progress=False, names=data / "names.csv")
    text = (tmp_path / "out" / "notes" / pseudonym("MRN-9", KEY) / "path.txt").read_text(encoding="utf-8")
    assert "carcinoma \u00e9" in text and "\ufffd" in text and not re.search(r"Jane|Roe|4410", text), text


@pytest.mark.parametrize("encoding", ["auto", "utf-8"])
def test_a_bom_is_not_copied_into_a_deidentified_note(tmp_path, encoding):
    from clinicmm.config import NotesSpec
    from clinicmm.privacy.deidentify import _Patients, deidentify_note_folder

    (tmp_path / "in" / "P1").mkdir(parents=True)
    (tmp_path / "in" / "P1" / "n.txt").write_bytes("\ufeffAdenocarcinoma.".encode())
    spec = NotesSpec(path="in", encoding=encoding)
    deidentify_note_folder(tmp_path / "in", tmp_path / "out", _Patients(KEY, {}), spec)
    assert (tmp_path / "out" / pseudonym("P1", KEY) / "n.txt").read_bytes() == b"Adenocarcinoma."
