"""The champion: the workflow registers the simplest model its validation split cannot tell from the best."""

import math

import pytest

from clinicmm.training.champion import TIE, choose, margin

MODELS = ["omics", "concat", "kg_gnn", "logreg"]


def test_the_best_validation_macro_f1_wins_and_the_reason_names_the_runner_up():
    best = {
        "omics": {"val_macro_f1": 0.80, "val_loss": 0.5, "n_val": 400},
        "concat": {"val_macro_f1": 0.88, "val_loss": 0.4, "n_val": 400},
        "kg_gnn": {"val_macro_f1": 0.96, "val_loss": 0.3, "n_val": 400},
        "logreg": {"val_macro_f1": 0.93, "val_loss": 0.35, "n_val": 400},
    }
    champion = choose(MODELS, best)  # one standard error on 400 patients: 0.010; logreg is 0.03 behind
    assert champion.model == "kg_gnn"
    assert "0.960" in champion.reason and "logreg 0.930" in champion.reason


def test_within_one_standard_error_the_simplest_model_wins_and_says_so():
    best = {
        "kg_gnn": {"val_macro_f1": 0.96, "val_loss": 0.3, "n_val": 24},  # one patient more than logreg
        "concat": {"val_macro_f1": 0.80, "val_loss": 0.5, "n_val": 24},
        "logreg": {"val_macro_f1": 0.92, "val_loss": 0.35, "n_val": 24},
    }
    champion = choose(MODELS, best)
    assert margin(0.96, 24) == pytest.approx(math.sqrt(0.96 * 0.04 / 24))  # 0.040
    assert champion.model == "logreg"
    assert "within one standard error (0.040, 24 validation patients)" in champion.reason
    assert "kg_gnn 0.960" in champion.reason
    best["logreg"]["val_macro_f1"] = 0.90  # now beyond one standard error: the better network is taken
    assert choose(MODELS, best).model == "kg_gnn"


def test_a_tie_goes_to_the_simpler_model_then_the_lower_validation_loss_then_the_model_listed_first():
    tied = {"concat": {"val_macro_f1": 0.900, "val_loss": 0.5}, "kg_gnn": {"val_macro_f1": 0.903, "val_loss": 0.2}}
    assert margin(0.903, None) == TIE  # no n_val recorded (a summary from an older version): ties only
    assert choose(MODELS, tied).model == "concat"
    same = {"concat": {"val_macro_f1": 0.9, "val_loss": 0.3}, "attention": {"val_macro_f1": 0.9, "val_loss": 0.2}}
    assert choose(["concat", "attention"], same).model == "concat"
    unknown = {"mine": {"val_macro_f1": 0.9, "val_loss": 0.1}, "other": {"val_macro_f1": 0.9, "val_loss": 0.3}}
    assert choose(["other", "mine"], unknown).model == "mine"  # same rank: the lower loss


def test_without_validation_scores_logreg_is_the_default_and_a_named_model_is_kept():
    empty = {m: {"val_macro_f1": math.nan, "val_loss": math.nan} for m in MODELS}
    champion = choose(MODELS, empty)
    assert champion.model == "logreg" and "empty validation split" in champion.reason
    assert choose(["concat", "kg_gnn"], empty).model == "concat"
    assert choose(MODELS, {"logreg": {"val_macro_f1": 1.0}}, primary="kg_gnn").model == "kg_gnn"
