"""Tests of clinicmm.encode.genomics.GenomicsPreprocessor."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clinicmm.encode.genomics import GenomicsPreprocessor
from clinicmm.errors import ModelError

TRAIN = ["P1", "P2", "P3", "P4"]


def _matrix() -> pd.DataFrame:
    """Log-unit values: A varies, B is constant on train, C varies; T1 is a test patient."""
    return pd.DataFrame(
        {"A": [1.0, 3.0, 1.0, 3.0, 9.0], "B": [5.0, 5.0, 5.0, 5.0, 1.0], "C": [0.0, 0.0, 2.0, 2.0, 1.0]},
        index=pd.Index(TRAIN + ["T1"], name="patient_id"),
    )


def _mutations() -> pd.DataFrame:
    rows = [
        ("P1", "KRAS", True, "ok"), ("P2", "KRAS", True, "ok"), ("P2", "KRAS", True, "ok"),
        ("P3", "TP53", True, "ok"), ("P1", "TTN", False, "ok"), ("P2", "TTN", False, "ok"),
        ("P3", "EGFR", True, "skipped"), ("P4", "EGFR", True, "skipped"),
        ("T1", "TP53", True, "ok"), ("T1", "TTN", False, "ok"), ("T2", "TP53", True, "ok"),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["patient_id", "gene", "non_silent", "status"])


def _fitted(unit: str = "log") -> GenomicsPreprocessor:
    return GenomicsPreprocessor(unit, z_threshold=2.0, max_genes=5).fit(_matrix(), _mutations(), TRAIN)


def test_fit_uses_train_rows_only() -> None:
    pre = _fitted()
    assert pre.genes == ["A", "C"]  # B has zero variance on the train rows (T1 differs, but is not train)
    assert pre.mutation_genes == ["KRAS"]  # TP53: one train patient only; EGFR rows skipped; TTN silent
    assert pre.dim == 3
    changed = _matrix()
    changed.loc["T1"] = [1000.0, 1000.0, 1000.0]
    other = GenomicsPreprocessor("log", z_threshold=2.0, max_genes=5).fit(changed, _mutations(), TRAIN)
    assert other.to_dict() == pre.to_dict()


def test_test_row_zscore_uses_train_mean_and_std() -> None:
    z = _fitted().features(_matrix(), None, ["T1", "P1"])
    # A: train mean 2, std 1 -> T1 (9) has z 7; C: mean 1, std 1 -> T1 (1) has z 0; P1: A=1 -> -1, C=0 -> -1
    np.testing.assert_allclose(z, [[7.0, 0.0, 0.0], [-1.0, -1.0, 0.0]])
    assert z.dtype == np.float32


def test_counts_are_log_transformed_before_scaling() -> None:
    matrix = pd.DataFrame({"G": [0.0, 3.0, 7.0]}, index=["P1", "P2", "T"])
    pre = GenomicsPreprocessor("counts").fit(matrix, None, ["P1", "P2"])
    # log2(x + 1): 0, 2 -> mean 1, std 1; T: log2(8) = 3 -> z 2
    np.testing.assert_allclose(pre.features(matrix, None, ["T"]), [[2.0]])


def test_unknown_genes_missing_values_and_patients_give_zero() -> None:
    pre = _fitted()
    new = pd.DataFrame({"A": [np.nan], "Z": [4.0]}, index=["N1"])  # C absent, A missing, Z unknown to the fit
    np.testing.assert_array_equal(pre.features(new, None, ["N1", "nobody"]), np.zeros((2, 3)))


def test_mutation_flags_follow_the_fitted_genes() -> None:
    feats = _fitted().features(None, _mutations(), ["P2", "T1", "P3"])
    np.testing.assert_array_equal(feats[:, 2], [1.0, 0.0, 0.0])  # only KRAS is a mutation feature


def test_round_trip_through_json_gives_identical_features() -> None:
    pre = _fitted("tpm")
    again = GenomicsPreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    patients = ["T1", "P2", "P4"]
    np.testing.assert_array_equal(
        again.features(_matrix(), _mutations(), patients), pre.features(_matrix(), _mutations(), patients)
    )
    assert again.evidence(_matrix(), _mutations(), patients) == pre.evidence(_matrix(), _mutations(), patients)


def test_evidence_has_mutated_and_strongly_changed_genes() -> None:
    evidence = _fitted().evidence(_matrix(), _mutations(), ["T1", "P1", "P4", "T2"])
    assert evidence["T1"] == ["TP53", "A"]  # non-silent TP53; A has z 7; silent TTN ignored; C has z 0
    assert evidence["P1"] == ["KRAS"]  # |z| of 1 is below the threshold; TTN is silent
    assert evidence["P4"] == []  # its EGFR row was skipped by the reader
    assert evidence["T2"] == ["TP53"]  # no expression row: mutations alone


def test_evidence_caps_changed_genes_by_largest_abs_z() -> None:
    train = pd.DataFrame(np.tile([[0.0], [2.0]], (1, 4)), columns=list("WXYZ"), index=["P1", "P2"])
    test = pd.DataFrame([[7.0, -9.0, 1.5, 5.0]], columns=list("WXYZ"), index=["T"])  # z: 6, -10, 0.5, 4
    pre = GenomicsPreprocessor("log", z_threshold=2.0, max_genes=2).fit(train, None)
    assert pre.evidence(test, None, ["T"]) == {"T": ["X", "W"]}


def test_unfitted_use_and_bad_inputs_raise() -> None:
    pre = GenomicsPreprocessor("tpm")
    with pytest.raises(ModelError, match="call fit first"):
        pre.features(_matrix(), None, ["P1"])
    with pytest.raises(ModelError, match="call fit first"):
        _ = pre.dim
    with pytest.raises(ModelError, match="unit"):
        GenomicsPreprocessor("rpkm")
    twice = pd.concat([_matrix(), _matrix()])
    with pytest.raises(ModelError, match="one row per patient"):
        GenomicsPreprocessor("log").fit(twice, None)


def _classed() -> pd.DataFrame:
    rows = [("P1", "KRAS", "Missense_Mutation", True), ("P1", "TTN", "Silent", False),
            ("P1", "APC", "3'UTR", False), ("P2", "MYC", "", True), ("P2", "RB1", "", False)]  # fmt: skip
    return pd.DataFrame(rows, columns=["patient_id", "gene", "variant_class", "non_silent"])


def test_mutation_classes_decide_which_mutations_link() -> None:
    default = GenomicsPreprocessor("log").fit(None, _classed())
    assert default.evidence(None, _classed(), ["P1", "P2"]) == {"P1": ["KRAS"], "P2": ["MYC"]}
    wider = GenomicsPreprocessor("log", mutation_classes=["missense_mutation", "Silent"]).fit(None, _classed())
    assert wider.evidence(None, _classed(), ["P1", "P2"]) == {"P1": ["KRAS", "TTN"], "P2": ["MYC"]}  # no class: flag
    again = GenomicsPreprocessor.from_dict(json.loads(json.dumps(wider.to_dict())))
    assert again.evidence(None, _classed(), ["P1"]) == {"P1": ["KRAS", "TTN"]}


def test_max_features_keeps_the_most_variable_train_genes() -> None:
    wide_c = _matrix().assign(C=[0.0, 0.0, 6.0, 6.0, 1.0])  # train std: A 1, C 3 (the test row plays no part)
    assert GenomicsPreprocessor("log", max_features=1).fit(wide_c, None, TRAIN).genes == ["C"]
    wide_a = _matrix().assign(A=[0.0, 8.0, 0.0, 8.0, 1.0], C=[0.0, 0.0, 2.0, 2.0, 99.0])  # A 4, C 1
    assert GenomicsPreprocessor("log", max_features=1).fit(wide_a, None, TRAIN).genes == ["A"]
    assert GenomicsPreprocessor("log", max_features=5).fit(_matrix(), None, TRAIN).genes == ["A", "C"]


def test_harmonize_lets_new_patients_use_other_gene_names() -> None:
    train = pd.DataFrame({"TP53": [0.0, 2.0], "SEPTIN7": [1.0, 3.0]}, index=["P1", "P2"])
    new = pd.DataFrame({"ENSG00000141510.17": [4.0], "SEPT7": [1.0]}, index=["N"])
    same = pd.DataFrame({"TP53": [4.0], "SEPTIN7": [1.0]}, index=["N"])
    pre = GenomicsPreprocessor("log", harmonize=True).fit(train, None)
    np.testing.assert_array_equal(pre.features(new, None, ["N"]), pre.features(same, None, ["N"]))
    plain = GenomicsPreprocessor("log").fit(train, None)
    assert not np.array_equal(plain.features(new, None, ["N"]), plain.features(same, None, ["N"]))
    muts = pd.DataFrame({"patient_id": ["N"], "gene": ["SEPT7"], "non_silent": [True]})
    assert pre.evidence(None, muts, ["N"]) == {"N": ["SEPTIN7"]}


def test_descriptions_without_the_new_keys_still_load() -> None:
    old = {k: v for k, v in _fitted().to_dict().items() if k not in ("mutation_classes", "max_features", "harmonize")}
    again = GenomicsPreprocessor.from_dict(old)
    np.testing.assert_array_equal(
        again.features(_matrix(), _mutations(), TRAIN), _fitted().features(_matrix(), _mutations(), TRAIN)
    )
