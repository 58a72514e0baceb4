"""Given splits (``split.column``): each patient's split read from the labels file, used exactly as given; bad
cells recorded with file, row and column, never silently dropped; clear errors for a missing column and for
``labels.site_column`` set too. A genomics-only cohort keeps it fast."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from clinicmm.config import DatasetSpec, load_dataset
from clinicmm.errors import ConfigError, InputError
from clinicmm.ingest.cohort import assign_splits, build_cohort, ingest, render_report

N = 12


def _given(genomics_cohort, tmp_path, folds: list[str], split: dict | None = None, rows: list[dict] | None = None):
    """The genomics cohort of ``N`` patients with column ``fold`` = ``folds`` (patient i gets folds[i]) and
    ``split`` as the YAML's split section (default ``{column: fold}``); ``rows``: extra labels rows appended."""
    path = genomics_cohort(tmp_path, N)
    labels = pd.read_csv(path.parent / "labels.csv", dtype=str, keep_default_na=False)
    labels["fold"] = folds
    if rows:
        labels = pd.concat([labels, pd.DataFrame(rows)], ignore_index=True)
    labels.to_csv(path.parent / "labels.csv", index=False)
    cfg = yaml.safe_load(path.read_text())
    cfg["split"] = {"column": "fold"} if split is None else split
    path.write_text(yaml.safe_dump(cfg))
    return load_dataset(path)


def _splits(cohort) -> dict[str, str]:
    return dict(zip(cohort.manifest["patient_id"], cohort.manifest["split"]))


def _ids(n: int = N) -> list[str]:
    return [f"PT-{i:03d}" for i in range(n)]


FOLDS = ["train", "train", "val", "test"] * (N // 4)


def test_the_given_split_is_used_patient_by_patient(genomics_cohort, tmp_path):
    spec = _given(genomics_cohort, tmp_path, FOLDS)
    cohort = build_cohort(spec)
    assert _splits(cohort) == dict(zip(_ids(), FOLDS))
    assert cohort.report["splits"] == {"train": 6, "val": 3, "test": 3}
    assert "split as given by labels.csv column 'fold': train 6, val 3, test 3" in cohort.report["issues"]
    assert cohort.report["skipped"] == []


def test_split_values_are_read_whatever_their_case_and_surrounding_spaces(genomics_cohort, tmp_path):
    variants = [" TRAIN", "Train ", "Valid", "VALIDATION", " val ", "Test", "tEsT", "train"] + ["train"] * (N - 8)
    expected = ["train", "train", "val", "val", "val", "test", "test", "train"] + ["train"] * (N - 8)
    cohort = build_cohort(_given(genomics_cohort, tmp_path, variants))
    assert _splits(cohort) == dict(zip(_ids(), expected))
    assert cohort.report["skipped"] == []


def test_an_unknown_or_empty_value_leaves_the_patient_out_and_is_recorded(genomics_cohort, tmp_path):
    folds = list(FOLDS)
    folds[4], folds[7] = "holdout", ""
    spec = _given(genomics_cohort, tmp_path, folds)
    cohort = build_cohort(spec)
    splits = _splits(cohort)
    assert splits["PT-004"] == "" and splits["PT-007"] == ""
    assert {p: s for p, s in splits.items() if p not in ("PT-004", "PT-007")} == {
        p: f for p, f in zip(_ids(), folds) if p not in ("PT-004", "PT-007")
    }
    skipped = {s["patient_id"]: s for s in cohort.report["skipped"]}
    assert set(skipped) == {"PT-004", "PT-007"}
    labels_file = str(spec.resolve(spec.labels.path))
    assert (skipped["PT-004"]["source"], skipped["PT-004"]["row"]) == (labels_file, 5)  # 1-based data rows
    assert (skipped["PT-007"]["source"], skipped["PT-007"]["row"]) == (labels_file, 8)
    for reason in (skipped["PT-004"]["reason"], skipped["PT-007"]["reason"]):
        assert "column 'fold'" in reason and "train, val (or valid, validation), test" in reason
        assert "left out of every split" in reason
    assert "unknown split 'holdout'" in skipped["PT-004"]["reason"]
    assert "empty split" in skipped["PT-007"]["reason"]
    assert any(i.startswith("2 labelled patient(s) have no valid split") for i in cohort.report["issues"])
    assert "row 5: unknown split 'holdout'" in render_report(cohort.report)


def test_a_patient_listed_again_with_another_split_keeps_the_first(genomics_cohort, tmp_path):
    again = [
        {"patient_id": "PT-000", "cancer_type": "BRCA", "fold": "test"},  # row 13: conflicts with row 1 (train)
        {"patient_id": "PT-003", "cancer_type": "BRCA", "fold": "TEST"},  # row 14: the same split again, fine
    ]
    cohort = build_cohort(_given(genomics_cohort, tmp_path, FOLDS, rows=again))
    assert _splits(cohort) == dict(zip(_ids(), FOLDS))
    split_skips = [s for s in cohort.report["skipped"] if "split" in s["reason"]]
    assert [(s["patient_id"], s["row"]) for s in split_skips] == [("PT-000", N + 1)]
    assert "'test'" in split_skips[0]["reason"] and "('train' first); kept the first" in split_skips[0]["reason"]


def test_a_bad_row_before_a_good_one_says_which_split_the_patient_kept(genomics_cohort, tmp_path):
    folds = list(FOLDS)
    folds[1] = "??"
    cohort = build_cohort(
        _given(genomics_cohort, tmp_path, folds, rows=[{"patient_id": "PT-001", "cancer_type": "LUAD", "fold": "val"}])
    )
    assert _splits(cohort)["PT-001"] == "val"
    (skip,) = [s for s in cohort.report["skipped"] if "split" in s["reason"]]
    assert skip["row"] == 2 and "keeps split 'val' from another row" in skip["reason"]


def test_an_empty_val_split_is_a_note_not_an_error(genomics_cohort, tmp_path):
    folds = ["train", "train", "test"] * (N // 3)
    cohort = build_cohort(_given(genomics_cohort, tmp_path, folds))
    assert _splits(cohort) == dict(zip(_ids(), folds))
    assert cohort.report["splits"]["val"] == 0
    assert any(i.startswith("no patient in the val split") and "stops early" in i for i in cohort.report["issues"])
    assert not any("no patient in the train split" in i or "test split" in i for i in cohort.report["issues"])


def test_an_empty_train_or_test_split_is_a_note(genomics_cohort, tmp_path):
    cohort = build_cohort(_given(genomics_cohort, tmp_path, ["val"] * N))
    notes = [i for i in cohort.report["issues"] if i.startswith("no patient in the")]
    assert [n.split(" split")[0] for n in notes] == ["no patient in the train", "no patient in the test"]


def test_a_missing_split_column_is_an_input_error_naming_it(genomics_cohort, tmp_path):
    spec = _given(genomics_cohort, tmp_path, FOLDS, split={"column": "partition"})
    with pytest.raises(InputError) as err:
        build_cohort(spec)
    message = str(err.value)
    assert "labels.csv, column 'partition' not found (named by split.column" in message
    assert "columns in the file: patient_id, cancer_type, fold" in message and "Fix the YAML or the header" in message


def test_split_column_loads_from_yaml_and_drops_nothing_else(genomics_cohort, tmp_path):
    spec = _given(genomics_cohort, tmp_path, FOLDS, split={"column": "fold", "seed": 3})
    assert spec.split.column == "fold" and spec.split.seed == 3
    assert DatasetSpec.model_fields["split"].default.column is None


def test_split_column_and_site_column_together_are_refused_naming_both(genomics_cohort, tmp_path):
    path = genomics_cohort(tmp_path, N, sites=["H1", "H2", "H3"])
    cfg = yaml.safe_load(path.read_text())
    cfg["split"] = {"column": "fold"}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"split\.column .*labels\.site_column.*remove labels\.site_column"):
        load_dataset(path)


def test_split_column_needs_a_labels_file():
    with pytest.raises(ValidationError, match="split.column names a column of the labels file"):
        DatasetSpec(name="x", genomics={"expression": {"path": "e.tsv"}}, split={"column": "fold"})


def test_without_split_column_the_random_split_is_unchanged(genomics_cohort, tmp_path):
    spec = _given(genomics_cohort, tmp_path, FOLDS, split={"val": 0.25, "test": 0.25, "seed": 1})
    cohort = build_cohort(spec)  # the fold column is in the file but not named: ignored
    expected, _ = assign_splits(build_cohort(spec, split=False).manifest, 0.25, 0.25, 1)
    assert _splits(cohort) == dict(zip(expected["patient_id"], expected["split"]))
    assert _splits(cohort) != dict(zip(_ids(), FOLDS))
    assert not any("split as given" in i for i in cohort.report["issues"])


def test_ingest_writes_the_given_split(genomics_cohort, tmp_path):
    from clinicmm.ingest.cohort import Cohort

    spec = _given(genomics_cohort, tmp_path, FOLDS)
    ingest(spec, tmp_path / "out")
    assert _splits(Cohort.load(tmp_path / "out")) == dict(zip(_ids(), FOLDS))
