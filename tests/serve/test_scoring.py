"""parse_frame and _omics_tables: the DataFrame interface of the registered model, row by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import uniform, write_series  # noqa: E402

from clinicmm.serve.scoring import INPUT_COLUMNS, _omics_tables, parse_frame  # noqa: E402

PARSED_KEYS = {"patients", "series", "body_parts", "texts", "expr", "mut", "errors"}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple[Path, list[Path]]:
    """One 5-slice CT series whose header says BodyPartExamined = ABDOMEN; returns its folder and files."""
    folder = tmp_path_factory.mktemp("dicom") / "series"
    files = write_series(folder, uniform(0.0, (5, 8, 8)), patient="X1", body_part="ABDOMEN")
    return folder, files


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS} for r in rows])


def test_missing_patient_id_column_names_the_expected_columns():
    with pytest.raises(ValueError) as err:
        parse_frame(pd.DataFrame({"notes": ["text"]}))
    message = str(err.value)
    assert "patient_id" in message
    assert all(c in message for c in INPUT_COLUMNS)


def test_only_patient_id_is_required():
    parsed = parse_frame(pd.DataFrame({"patient_id": ["A", "B"]}))
    assert set(parsed) == PARSED_KEYS
    assert parsed["patients"] == ["A", "B"]
    assert parsed["series"] == [None, None] and parsed["body_parts"] == ["", ""] and parsed["texts"] == [[], []]
    assert parsed["expr"] == {} and parsed["mut"] == [] and parsed["errors"] == {}


def test_empty_patient_id_becomes_the_row_number():
    parsed = parse_frame(pd.DataFrame({"patient_id": ["A", "", None], "notes": ["x", "y", np.nan]}))
    assert parsed["patients"] == ["A", "row-2", "row-3"]
    assert parsed["texts"] == [["x"], ["y"], []]  # NaN cell = not available


def test_notes_as_json_list_or_plain_text():
    notes = ["CT shows a mass.", "Biopsy: adenocarcinoma."]
    parsed = parse_frame(
        frame(
            {"patient_id": "A", "notes": json.dumps(notes)},
            {"patient_id": "B", "notes": "  One plain note, not JSON.  "},
            {"patient_id": "C", "notes": '{"not": "a list"}'},  # plain text that happens to look like JSON
        )
    )
    assert parsed["texts"] == [notes, ["One plain note, not JSON."], ['{"not": "a list"}']]
    assert parsed["errors"] == {}


def test_expression_and_mutations():
    parsed = parse_frame(
        frame(
            {"patient_id": "A", "expression": json.dumps({"EGFR": 5, "TP53": "1.5"}), "mutations": '["KRAS", "TP53"]'},
            {"patient_id": "B", "mutations": '["BRAF"]'},
        )
    )
    assert parsed["expr"] == {"A": {"EGFR": 5.0, "TP53": 1.5}}
    assert parsed["mut"] == [("A", "KRAS"), ("A", "TP53"), ("B", "BRAF")]
    assert parsed["errors"] == {}


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("expression", '{"EGFR": 1,'),
        ("expression", '["EGFR"]'),  # valid JSON, wrong kind
        ("mutations", "KRAS, TP53"),
        ("mutations", '{"KRAS": 1}'),
    ],
)
def test_bad_cell_is_a_row_error_naming_the_column(column, bad):
    parsed = parse_frame(
        frame(
            {"patient_id": "A", "notes": "fine", "mutations": '["KRAS"]'},
            {"patient_id": "B", "notes": "note of B", column: bad},
            {"patient_id": "C", "notes": '["n1", "n2"]', "expression": '{"MYC": 2}'},
        )
    )
    assert list(parsed["errors"]) == [1]
    assert repr(column) in parsed["errors"][1]
    assert parsed["patients"] == ["A", "B", "C"]
    assert parsed["texts"] == [["fine"], [], ["n1", "n2"]]  # the bad row keeps nothing; the others parse
    assert ("A", "KRAS") in parsed["mut"] and parsed["expr"]["C"] == {"MYC": 2.0}
    assert not any(p == "B" for p, _ in parsed["mut"])


def test_non_numeric_expression_value_is_a_row_error():
    parsed = parse_frame(
        frame({"patient_id": "A", "expression": '{"EGFR": "high"}'}, {"patient_id": "B", "notes": "ok"})
    )
    assert list(parsed["errors"]) == [0]
    assert parsed["texts"] == [[], ["ok"]]


def test_dicom_folder_gives_the_series_files_and_header_body_part(series):
    folder, files = series
    parsed = parse_frame(frame({"patient_id": "A", "dicom_files": str(folder)}))
    assert parsed["errors"] == {}
    assert sorted(parsed["series"][0]) == sorted(str(f) for f in files)
    assert parsed["body_parts"] == ["ABDOMEN"]  # empty column: read from the first file's header


def test_dicom_json_list_and_given_body_part(series):
    _, files = series
    listed = json.dumps([str(f) for f in files])
    parsed = parse_frame(
        frame(
            {"patient_id": "A", "dicom_files": listed},
            {"patient_id": "B", "dicom_files": listed, "body_part": "chest"},
        )
    )
    assert parsed["series"] == [[str(f) for f in files]] * 2
    assert parsed["body_parts"] == ["ABDOMEN", "CHEST"]  # the column wins over the header, upper-cased


def test_dicom_cell_that_is_neither_list_nor_folder(tmp_path, series):
    folder, _ = series
    empty = tmp_path / "empty"
    empty.mkdir()
    parsed = parse_frame(
        frame(
            {"patient_id": "A", "dicom_files": str(tmp_path / "nowhere"), "notes": "kept?"},
            {"patient_id": "B", "dicom_files": str(empty)},
            {"patient_id": "C", "dicom_files": str(folder)},
        )
    )
    assert set(parsed["errors"]) == {0, 1}
    assert all("'dicom_files'" in parsed["errors"][i] for i in (0, 1))
    assert str(tmp_path / "nowhere") in parsed["errors"][0]
    assert parsed["series"][:2] == [None, None] and parsed["texts"][0] == []
    assert parsed["series"][2] and parsed["body_parts"] == ["", "", "ABDOMEN"]


def test_omics_tables_shapes():
    parsed = parse_frame(
        frame(
            {"patient_id": "A", "expression": '{"EGFR": 1, "TP53": 2}', "mutations": '["KRAS"]'},
            {"patient_id": "B", "expression": '{"EGFR": 3, "MYC": 4}'},
            {"patient_id": "C", "mutations": '["BRAF", "TP53"]'},
            {"patient_id": "D", "notes": "no omics"},
        )
    )
    expr, mut = _omics_tables(parsed)
    assert expr.index.name == "patient_id"
    assert list(expr.index) == ["A", "B"]
    assert sorted(expr.columns) == ["EGFR", "MYC", "TP53"]
    assert expr.loc["B", "EGFR"] == 3.0 and np.isnan(expr.loc["A", "MYC"])
    assert mut.shape == (3, 6)
    assert list(mut.columns) == ["patient_id", "sample_id", "gene", "variant_class", "non_silent", "status"]
    assert mut[["patient_id", "gene"]].values.tolist() == [["A", "KRAS"], ["C", "BRAF"], ["C", "TP53"]]
    assert (mut["sample_id"] == mut["patient_id"]).all() and mut["non_silent"].all() and (mut["status"] == "ok").all()


def test_omics_tables_none_without_omics():
    assert _omics_tables(parse_frame(frame({"patient_id": "A", "notes": "x"}))) == (None, None)


def test_a_plain_note_that_starts_with_a_bracket_is_kept_as_text():
    parsed = parse_frame(
        pd.DataFrame(
            [{"patient_id": "A", "notes": "[CT chest] spiculated mass"}, {"patient_id": "B", "notes": '["n1", "n2"]'}]
        )
    )
    assert parsed["texts"] == [["[CT chest] spiculated mass"], ["n1", "n2"]]
    assert parsed["errors"] == {}


def test_a_patient_given_twice_is_a_row_error_not_a_silent_merge():
    parsed = parse_frame(
        pd.DataFrame([{"patient_id": "A", "expression": '{"MYC": 1}'}, {"patient_id": "A", "expression": '{"MYC": 9}'}])
    )
    assert parsed["expr"] == {"A": {"MYC": 1.0}}
    assert list(parsed["errors"]) == [1] and "appears again (first in row 1)" in parsed["errors"][1]


def test_notes_and_expression_can_be_given_as_files(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("FINAL DIAGNOSIS: papillary carcinoma.")
    (tmp_path / "notes" / "b.txt").write_text("IMPRESSION: neck mass.")
    (tmp_path / "one.txt").write_text("single note")
    (tmp_path / "expr.tsv").write_text("sample_id\tMYC\tTP53\nS-01\t3.5\t1\n")
    (tmp_path / "two_rows.csv").write_text("MYC,TP53\n1,2\n3,4\n")
    frame = pd.DataFrame(
        [
            {"patient_id": "A", "notes_file": str(tmp_path / "notes"), "expression_file": str(tmp_path / "expr.tsv")},
            {"patient_id": "B", "notes": "inline", "notes_file": str(tmp_path / "one.txt")},
            {"patient_id": "C", "expression_file": str(tmp_path / "two_rows.csv")},
            {"patient_id": "D", "notes_file": str(tmp_path / "missing.txt")},
        ]
    )
    parsed = parse_frame(frame)
    assert parsed["texts"][0] == ["FINAL DIAGNOSIS: papillary carcinoma.", "IMPRESSION: neck mass."]
    assert parsed["texts"][1] == ["inline", "single note"]
    assert parsed["expr"]["A"] == {"MYC": 3.5, "TP53": 1.0}
    assert "2 data rows" in parsed["errors"][2] and "expression_file" in parsed["errors"][2]
    assert "notes_file" in parsed["errors"][3]
    assert set(parsed["errors"]) == {2, 3}


def test_result_frame_carries_the_differential_set_and_decision_and_blanks_them_for_unscored_rows():
    from types import SimpleNamespace

    from clinicmm.serve.scoring import _result_frame
    from clinicmm.training.calibration import ABSTAIN, PREDICT, Calibration
    from clinicmm.training.conformal import SplitConformal

    parsed = parse_frame(
        frame({"patient_id": "A", "notes": "x"}, {"patient_id": "B", "notes": "y"}, {"patient_id": "C", "notes": "z"})
    )
    classes = ["BRCA", "LUAD", "COAD"]
    probs = np.array([[0.05, 0.9, 0.05], [0.4, 0.35, 0.25]])
    calibration = Calibration(conformal=SplitConformal("lac", 0.9, 0.7, 50), abstain_below=0.5)
    present = np.array([[False, True, False]] * 3)
    out = _result_frame(parsed, SimpleNamespace(failures=[]), classes, [0, 1], probs, present, calibration).set_index(
        "patient_id"
    )
    assert out.loc["A", ["top1", "top2", "top3"]].tolist() == ["LUAD", "BRCA", "COAD"]
    assert (
        out.loc["A", "top1_prob"] == 0.9 and out.loc["A", "prediction_set"] == "LUAD" and out.loc["A", "set_size"] == 1
    )
    assert out.loc["B", "prediction_set"] == "BRCA+LUAD" and out.loc["B", "set_size"] == 2  # p >= 1 - 0.7
    assert out.loc["A", "decision"] == PREDICT and out.loc["B", "decision"] == ABSTAIN
    assert out.loc["B", "predicted"] == "BRCA"  # abstaining keeps the differential: the reviewer sees it
    assert out.loc["C", "status"] == "not scored" and out.loc["C", "top1"] == "" and out.loc["C", "decision"] == ""
    assert list(out.columns).index("decision") < list(out.columns).index("status")


def test_dicom_files_takes_one_series_or_several() -> None:
    from clinicmm.serve.scoring import _series_files

    assert _series_files('["/d/1.dcm", "/d/2.dcm"]') == ["/d/1.dcm", "/d/2.dcm"]
    assert _series_files('[["/a/1.dcm"], ["/b/1.dcm", "/b/2.dcm"]]') == [["/a/1.dcm"], ["/b/1.dcm", "/b/2.dcm"]]
