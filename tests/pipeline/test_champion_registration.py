"""primary_model: auto registers the model that validates best, says why in the registry, and serves it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


@pytest.fixture(scope="module")
def registered(tmp_path_factory, genomics_cohort, genomics_workflow):
    from clinicmm.pipeline import stages

    root = tmp_path_factory.mktemp("champion")
    genomics_cohort(root, 60)
    wf = genomics_workflow(root, "champ", ["omics", "logreg"])
    assert wf.primary_model == "auto"  # the default
    for name in ("ingest", "encode", "train", "evaluate"):
        stages.FUNCTIONS[name](wf, False)
    return wf, stages.register_stage(wf), stages.predict_stage(wf)


def test_the_champion_is_the_best_validated_model_and_the_registry_says_why(registered):
    from mlflow import MlflowClient

    from clinicmm.pipeline import registry
    from clinicmm.training.champion import choose, margin

    wf, reg, _ = registered
    trained = registry.summary(wf, "train")
    expected = choose(["omics", "logreg"], trained)
    assert reg.model == expected.model and reg.reason == expected.reason
    top = max(r["val_macro_f1"] for r in trained.values())
    n_val = trained[reg.model]["n_val"]
    assert n_val > 0 and all(r["n_val"] == n_val for r in trained.values())  # the train stage records it
    assert trained[reg.model]["val_macro_f1"] >= top - margin(top, n_val)  # within one standard error of the best
    version = MlflowClient(reg.tracking_uri).get_model_version(reg.name, reg.version)
    assert version.tags["clinicmm.model"] == reg.model and reg.reason in version.description


def test_the_logistic_regression_model_is_trained_evaluated_and_served_like_the_others(registered, tmp_path):
    import pandas as pd

    from clinicmm.pipeline import registry

    wf, reg, predicted = registered
    trained = registry.summary(wf, "train")["logreg"]
    assert trained["epochs"] == 1 and trained["C"] > 0  # closed form: one history row with the chosen penalty
    results = pd.read_csv(wf.work / "evaluate" / "results.csv").set_index("model")
    assert results.loc["logreg", "macro_f1"] > 0.8  # the tiny cohort's expression names the class
    assert predicted.scored == predicted.patients == 60
