"""CSV outputs cannot start a spreadsheet formula, and numbers stay numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from clinicmm.csvsafe import csv_text, neutralise, safe_frame, write_csv


@pytest.mark.parametrize(
    "cell", ["=1+1", "+cmd|' /C calc'!A0", "-2+3+cmd|x", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")']
)
def test_formula_prefixes_get_a_leading_quote(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["PT-001", "BRCA", "", "image+note", "-0.5", "+3", "1e-3", "-inf", "'=already"])
def test_plain_text_and_numbers_written_as_text_are_left_alone(cell):
    assert neutralise(cell) == cell


def test_text_columns_are_neutralised_and_numeric_ones_untouched(tmp_path):
    frame = pd.DataFrame(
        {
            "patient_id": ["=cmd|' /C calc'!A0", "@evil", "PT-3", None],
            "score": [-1.5, 0.25, -3.0, 1.0],
            "count": [-1, 2, 3, 4],
            "=header": ["a", "b", "c", "d"],
        }
    )
    path = write_csv(frame, tmp_path / "out" / "p.csv", index=False)
    back = pd.read_csv(path)
    assert back["patient_id"].tolist()[:3] == ["'=cmd|' /C calc'!A0", "'@evil", "PT-3"]
    assert back["score"].tolist() == [-1.5, 0.25, -3.0, 1.0] and back["score"].dtype.kind == "f"
    assert back["count"].tolist() == [-1, 2, 3, 4] and back["count"].dtype.kind == "i"
    assert "'=header" in back.columns
    assert frame["patient_id"][0] == "=cmd|' /C calc'!A0"  # the caller's frame is not changed
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporary file left behind


def test_text_copy_and_index(tmp_path):
    frame = pd.DataFrame({"v": [1, -2]}, index=pd.Index(["=a", "b"], name="id"))
    assert csv_text(frame).splitlines() == ["id,v", "'=a,1", "b,-2"]
    assert safe_frame(pd.DataFrame({"x": pd.Series(["-x"], dtype="string")}))["x"][0] == "'-x"


def test_predict_writes_hostile_patient_ids_as_text_and_probabilities_as_numbers(tmp_path, monkeypatch):
    """Bug: ids starting with = or @ went raw into predictions.csv."""
    import yaml

    import clinicmm.serve.predict as serve

    ids = ["=1+1", "@SUM(A1)", "-2+3+cmd|x", "PT-4"]
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"patient_id": ids, "cancer_type": ["BRCA", "LUAD", "COAD", "BRCA"]}).to_csv(
        data / "labels.csv", index=False
    )
    pd.DataFrame({"sample_id": ids, "TP53": [1.0, 2.0, 3.0, 4.0]}).to_csv(data / "expr.tsv", sep="\t", index=False)
    spec = {
        "name": "x",
        "labels": {"path": "labels.csv"},
        "genomics": {"expression": {"path": "expr.tsv", "unit": "tpm"}},
    }
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec))

    class Model:  # stands in for the registered pyfunc: scores every patient it is given
        def predict(self, frame, params=None):
            n = len(frame)
            return pd.DataFrame({"patient_id": frame["patient_id"], "predicted": ["BRCA"] * n, "prob_BRCA": [0.9] * n,
                                 "margin": [-0.25] * n, "status": ["scored"] * n})  # fmt: skip

    monkeypatch.setattr(serve, "load_registered", lambda uri: Model())
    out = tmp_path / "predictions.csv"
    serve.predict("models:/x@champion", data / "dataset.yaml", out)
    back = pd.read_csv(out)
    assert set(back["patient_id"]) == {"'=1+1", "'@SUM(A1)", "'-2+3+cmd|x", "PT-4"}
    assert back["margin"].tolist() == [-0.25] * 4 and back["prob_BRCA"].dtype.kind == "f"


def test_every_csv_writer_of_the_package_goes_through_csvsafe():
    """Every CSV writer of the package goes through clinicmm.csvsafe (no bare DataFrame.to_csv to a file), but for
    the named exceptions: data written to be read again as data, not opened in a spreadsheet."""
    import re
    from pathlib import Path

    import clinicmm

    root = Path(clinicmm.__file__).parent
    exceptions = {
        "privacy/deidentify.py": "the de-identified copies of the user's tables: inputs of a later ingest, kept verbatim",
        "privacy/scan.py": "an in-memory text dump searched for identifiers, never written",
        "csvsafe.py": "the safe writer itself",
    }
    bare = [
        f"{p.relative_to(root)}:{i}"
        for p in root.rglob("*.py")
        if not p.relative_to(root).parts[0] == "demo" and str(p.relative_to(root)) not in exceptions
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\.to_csv\(", line)
    ]
    report = (root / "privacy" / "deidentify.py").read_text()
    assert "write_csv(frame, report" in report  # the de-identification report itself is for people: neutralised
    assert not bare, bare
