"""The champion: the workflow registers the model that validates best, not the fanciest one."""

import math

from clinicmm.training.champion import choose

MODELS = ["omics", "concat", "kg_gnn", "logreg"]


def test_the_best_validation_macro_f1_wins_and_the_reason_names_the_runner_up():
    best = {
        "omics": {"val_macro_f1": 0.80, "val_loss": 0.5},
        "concat": {"val_macro_f1": 0.88, "val_loss": 0.4},
        "kg_gnn": {"val_macro_f1": 0.86, "val_loss": 0.3},
        "logreg": {"val_macro_f1": 0.93, "val_loss": 0.35},
    }
    champion = choose(MODELS, best)
    assert champion.model == "logreg"
    assert "0.930" in champion.reason and "concat 0.880" in champion.reason


def test_a_tie_goes_to_the_lower_validation_loss_then_the_model_listed_first():
    tied = {"concat": {"val_macro_f1": 0.900, "val_loss": 0.5}, "kg_gnn": {"val_macro_f1": 0.903, "val_loss": 0.2}}
    assert choose(MODELS, tied).model == "kg_gnn"
    same = {"concat": {"val_macro_f1": 0.9, "val_loss": 0.3}, "logreg": {"val_macro_f1": 0.9, "val_loss": 0.3}}
    assert choose(MODELS, same).model == "concat"


def test_without_validation_scores_logreg_is_the_default_and_a_named_model_is_kept():
    empty = {m: {"val_macro_f1": math.nan, "val_loss": math.nan} for m in MODELS}
    champion = choose(MODELS, empty)
    assert champion.model == "logreg" and "empty validation split" in champion.reason
    assert choose(["concat", "kg_gnn"], empty).model == "concat"
    assert choose(MODELS, {"logreg": {"val_macro_f1": 1.0}}, primary="kg_gnn").model == "kg_gnn"
