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


def test_a_patient_measured_on_another_panel_is_scored_imputed_and_flagged(registered, caplog):
    import json
    import logging

    import mlflow
    import pandas as pd

    from clinicmm.serve.scoring import INPUT_COLUMNS

    _, reg, _ = registered
    mlflow.set_tracking_uri(reg.tracking_uri)
    model = mlflow.pyfunc.load_model(reg.uri)
    full = {"AKT1": 130.0, "BAX": 125.0, "CASP3": 20.0, "TP53": 21.0, "E2F1": 19.0, "JAK1": 20.0, "MAPK3": 22.0}
    full |= {"IL6": 18.0}
    rows = [
        {"patient_id": "WHOLE-PANEL", "expression": json.dumps(full)},
        {"patient_id": "TWO-GENES", "expression": json.dumps({"AKT1": 130.0, "BAX": 125.0})},
        {"patient_id": "NOTES-ONLY", "notes": "FINAL DIAGNOSIS: invasive ductal carcinoma."},
    ]
    frame = pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS} for r in rows])
    with caplog.at_level(logging.WARNING, logger="clinicmm"):
        out = model.predict(frame).set_index("patient_id")
    assert out.loc["WHOLE-PANEL", "omics_measured"] == 1.0 and out.loc["TWO-GENES", "omics_measured"] == 0.25
    assert out.loc["NOTES-ONLY", "omics_measured"] is None  # no omics: nothing to measure
    assert "25% of the model's omics features measured" in out.loc["TWO-GENES", "reason"]
    assert "omics" not in out.loc["WHOLE-PANEL", "reason"]
    assert out.loc["TWO-GENES", "predicted"] == out.loc["WHOLE-PANEL", "predicted"] == "BRCA"  # its pair names it
    warned = [r.getMessage() for r in caplog.records if "omics_measured" in r.getMessage()]
    assert warned and "1 of" in warned[0] and not any("TWO-GENES" in w for w in warned)  # counts, never an id
