"""clinicmm compare: folds, out-of-fold predictions, bootstrap CIs, the missing-modality ablation, the CLI verb,
MLflow runs without identifiers, the evaluate stage's ablation, and the TCGA-KIPAN converter (real data)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from clinicmm.config import CompareSpec, TrainingSpec
from clinicmm.errors import StageError
from clinicmm.evaluation import bootstrap
from clinicmm.evaluation.compare import CVData, ablation_table, make_folds, reference_model, run_cv, summarise

REPO = Path(__file__).resolve().parents[2]
KIPAN = REPO.parent / "shared" / "data" / "tcga_kipan"
CLASSES = ["BRCA", "LUAD", "COAD"]
SPEC = TrainingSpec(max_epochs=10, patience=3, lr=3e-2, batch_size=16, hidden=8, dropout=0.0, seed=0)

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


def cv_data(n: int = 36, seed: int = 0) -> CVData:
    """Notes carry the class, images are noise (and missing for every 4th patient), no patient has omics."""
    from clinicmm.encode.featurizer import EncodedCohort
    from clinicmm.keys import Node
    from clinicmm.knowledge.graph import KnowledgeGraph

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    vectors = {
        "image": rng.normal(size=(n, 4)),
        "note": np.eye(3)[y] * 3 + rng.normal(size=(n, 3)) * 0.3,
        "omics": np.full((n, 5), np.nan),
    }
    vectors["image"][::4] = np.nan
    vectors = {m: v.astype(np.float32) for m, v in vectors.items()}
    patients = [f"P{i:03d}" for i in range(n)]
    kg = KnowledgeGraph.default()
    kg.ensure_nodes(Node.CANCER, CLASSES)
    encoded = EncodedCohort(patients, vectors, {m: [[] for _ in range(n)] for m in vectors})
    return CVData(_Data(encoded, kg), np.arange(n), y, CLASSES, patients)


class _Data:
    """A TrainingData stand-in: no genomics, so every fold sees the same encodings; no text encoder for class nodes."""

    def __init__(self, encoded, kg):
        self.encoded, self.kg, self.classes = encoded, kg, CLASSES
        self.genomics = None  # no omics preprocessor (TrainingData's genomics.json)
        self.wf = SimpleNamespace(encoders=SimpleNamespace(text=None))
        self.folds: list[dict] = []

    def fold(self, split: dict, classes: list[str]):
        self.folds.append(split)
        return self


@pytest.fixture(scope="module")
def cv_result(one_thread):
    data = cv_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data, run_cv(
            data, ["note", "concat"], ["logreg"], SPEC, CompareSpec(folds=3, bootstrap=200), progress=False
        )


def test_folds_partition_the_patients_stratified_and_seeded():
    y = np.array([0] * 10 + [1] * 7 + [2] * 5)
    folds = make_folds(y, CLASSES, 5, seed=0)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(y)))
    for train, test in folds:
        assert not set(train) & set(test)
        counts = np.bincount(y[test], minlength=3)
        assert all(abs(c - n / 5) < 1 for c, n in zip(counts, np.bincount(y)))
    again = make_folds(y, CLASSES, 5, seed=0)
    other = make_folds(y, CLASSES, 5, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_a_class_smaller_than_the_folds_is_a_clear_error():
    with pytest.raises(StageError, match="--folds"):
        make_folds(np.array([0] * 10 + [1] * 2), CLASSES[:2], 3, seed=0)


def test_every_patient_gets_one_out_of_fold_prediction_per_model(cv_result):
    data, res = cv_result
    assert sorted(res.probs) == ["champion", "concat", "logreg", "note"]  # champion: chosen among models per fold
    assert set(np.unique(res.fold)) == {0, 1, 2}
    for probs in res.probs.values():
        assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    folds = pd.DataFrame(res.folds)
    assert len(folds) == 4 * 3 and (folds.groupby("model")["n_test"].sum() == len(data.y)).all()


def test_ablation_shows_what_each_model_uses(cv_result):
    _, res = cv_result
    table = ablation_table(res).set_index("model")
    assert table["minus_omics"].isna().all()  # no patient has omics: nothing to remove, no fake zero drop
    assert table.loc["note", "drop_image"] == 0.0  # the note model never looks at the image
    assert table.loc["note", "drop_note"] > 0.2  # without its only input it falls to the prior
    assert (table["drop_note"] > table["drop_image"]).all()  # every model leans on the informative modality


def test_table_has_fold_spread_pooled_cis_and_paired_deltas(cv_result):
    _, res = cv_result
    cmp = CompareSpec(folds=3, bootstrap=200)
    ref = reference_model(list(res.probs), cmp)
    assert ref == "logreg"
    table = summarise(res, cmp, ref).set_index("model")
    folds = pd.DataFrame(res.folds)
    for name, row in table.iterrows():
        per_fold = folds[folds["model"] == name]["macro_f1"]
        assert row["macro_f1_mean"] == pytest.approx(per_fold.mean())
        assert row["macro_f1_sd"] == pytest.approx(per_fold.std(ddof=1))
        for m in bootstrap.METRICS:
            assert row[f"{m}_ci_low"] <= row[f"{m}_pooled"] <= row[f"{m}_ci_high"]
        assert row["delta_ci_low"] <= row["delta_macro_f1"] <= row["delta_ci_high"]
    assert table.loc["logreg", "delta_macro_f1"] == 0.0


def test_bootstrap_scores_agree_with_the_package_metrics():
    from clinicmm.training.metrics import classification_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 80)
    logits = rng.normal(size=(80, 4))
    logits[np.arange(80), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ours, theirs = bootstrap.scores(y, probs, 4), classification_metrics(y, probs, list("abcd"))
    for m in bootstrap.METRICS:
        assert ours[m] == pytest.approx(theirs[m], abs=1e-5)


def test_an_unknown_reference_model_is_a_config_error():
    from clinicmm.errors import ConfigError

    with pytest.raises(ConfigError, match="compare.reference"):
        reference_model(["concat", "kg_gnn"], CompareSpec(reference="omics"))


# ------------------------------------------------------------------------------ the CLI on a genomics cohort


@pytest.fixture(scope="module")
def compared(tmp_path_factory, one_thread, genomics_cohort, genomics_workflow):
    from typer.testing import CliRunner

    from clinicmm.cli import app

    root = tmp_path_factory.mktemp("compare")
    genomics_cohort(root, 30)  # class-specific expression of graph genes: no encoder networks to load
    compare = {"folds": 3, "bootstrap": 100}
    genomics_workflow(root, "tiny", ["omics", "kg_gnn"], compare=compare)  # primary_model: auto
    result = CliRunner().invoke(app, ["compare", str(root / "wf.yaml"), "--folds", "3", "--no-progress"])
    return root, result


def test_compare_cli_writes_the_tables_and_plots(compared):
    root, result = compared
    assert result.exit_code == 0, result.output
    out = root / "work" / "compare"
    for name in ("table.csv", "table.md", "ablation.csv", "ablation.md", "folds.csv", "compare.png", "ablation.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "table.csv")
    assert list(table["model"]) == ["omics", "kg_gnn", "logreg", "gbt", "champion"] and (table["folds"] == 3).all()
    assert "Δ macro-F1 vs logreg" in (out / "table.md").read_text()
    # kg_gnn corrects logreg (training.offset's default); omics, logreg, gbt and the champion row do not
    assert (
        "Corrections of logreg (`training.offset: logreg`; logreg's logits plus the network's): kg_gnn. "
        in (out / "table.md").read_text()
    )
    assert "kg_gnn" in result.output and "missing modalities" in result.output
    summary = json.loads((out / "summary.json").read_text())
    chosen = summary["champion_per_fold"]  # among the workflow's models only, never a baseline it does not list
    assert len(chosen) == 3 and set(chosen) <= {"omics", "kg_gnn"} and "chosen per fold" in result.output
    hard = pd.read_csv(out / "hard_cases.csv")
    assert list(hard.columns) == ["pseudonym", "label", "most_predicted", "fold"]
    assert len(hard) == summary["hard_cases"] and not hard["pseudonym"].str.startswith("PT-").any()


def test_compare_logs_one_parent_with_a_child_per_model_and_fold_and_no_ids(compared):
    from mlflow import MlflowClient

    root, result = compared
    assert result.exit_code == 0, result.output
    summary = json.loads((root / "work" / "compare" / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    parent = client.get_run(summary["parent_run"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["mlflow.runName"] for r in children) == sorted(
        f"{m}.fold{k}" for m in ("omics", "kg_gnn", "logreg", "gbt") for k in range(3)
    )
    logged = [a.path for a in client.list_artifacts(parent.info.run_id, "compare")]
    assert {"compare/table.csv", "compare/compare.png", "compare/ablation.md"} <= set(logged)
    text = json.dumps([parent.data.params, parent.data.tags] + [[r.data.params, r.data.tags] for r in children])
    for name in ("table.csv", "table.md", "ablation.csv", "ablation.md", "folds.csv"):
        text += Path(client.download_artifacts(parent.info.run_id, f"compare/{name}", str(root / "dl"))).read_text()
    assert "PT-0" not in text


def test_evaluate_writes_the_ablation_of_every_model(compared):
    from typer.testing import CliRunner

    from clinicmm.cli import app

    root, _ = compared
    wf = str(root / "wf.yaml")
    for verb in ("train", "evaluate"):
        result = CliRunner().invoke(app, [verb, wf] + (["--no-progress"] if verb == "train" else []))
        assert result.exit_code == 0, result.output
    ablation = pd.read_csv(root / "work" / "evaluate" / "ablation.csv")
    assert list(ablation["model"]) == ["omics", "kg_gnn"]
    assert ablation["minus_image"].isna().all() and ablation["minus_note"].isna().all()
    assert (ablation["minus_omics"].notna()).all()


# ------------------------------------------------------------------------------------------ real data


def _prepare_module():
    spec = importlib.util.spec_from_file_location("tcga_kipan_prepare", REPO / "workflows" / "tcga_kipan_prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not KIPAN.is_dir(), reason=f"{KIPAN} is absent (the shared real data lives beside the repo)")
def test_kipan_converter_keeps_rows_values_and_labels(tmp_path):
    prep = _prepare_module()
    out = prep.prepare(KIPAN, tmp_path / "kipan")
    omics = pd.read_csv(out / "omics.tsv", sep="\t")
    labels = pd.read_csv(out / "labels.csv")
    raw = [pd.read_csv(KIPAN / f"{t}_te.csv", header=None) for t in ("1", "2", "3")]
    assert omics.shape == (len(raw[0]), 1 + sum(r.shape[1] for r in raw))
    assert list(omics["sample_id"]) == list(labels["patient_id"])
    assert np.allclose(omics.iloc[:, 1:].to_numpy(), pd.concat(raw, axis=1).to_numpy(), atol=1e-5)
    codes = pd.read_csv(KIPAN / "labels_te.csv", header=None)[0].map(prep.CODES)
    assert list(labels["cancer_type"]) == list(codes)
    assert any(c.startswith("meth_") for c in omics.columns) and not omics.columns.duplicated().any()


@pytest.mark.skipif(not KIPAN.is_dir(), reason=f"{KIPAN} is absent (the shared real data lives beside the repo)")
def test_kipan_converter_never_writes_into_the_source():
    prep = _prepare_module()
    with pytest.raises(prep.PrepareError, match="inside the source"):
        prep.prepare(KIPAN, KIPAN / "generated")


def test_the_knowledge_ablation_trains_each_graph_model_again_on_a_rewired_graph():
    from clinicmm.evaluation import bootstrap
    from clinicmm.evaluation.compare import knowledge_markdown, knowledge_table

    data = cv_data(n=24)
    cmp = CompareSpec(folds=3, bootstrap=200, knowledge_ablation=True, champion=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_cv(data, ["kg_gnn", "concat"], [], SPEC.model_copy(update={"max_epochs": 3}), cmp, progress=False)
    assert sorted(res.probs) == ["concat", "kg_gnn", "kg_gnn_rewired"]  # graph models only
    assert not np.isnan(res.probs["kg_gnn_rewired"]).any()
    table = knowledge_table(res, cmp)
    assert list(table["model"]) == ["kg_gnn"]
    row = table.iloc[0]
    assert row["delta"] == pytest.approx(row["macro_f1_graph"] - row["macro_f1_rewired"])
    assert row["delta_ci_low"] <= row["delta"] <= row["delta_ci_high"]
    concat = bootstrap.scores(res.y, res.probs["concat"], 3)["macro_f1"]  # and against the fusion without a graph
    assert row["delta_concat"] == pytest.approx(row["macro_f1_graph"] - concat)
    assert row["delta_concat_ci_low"] <= row["delta_concat"] <= row["delta_concat_ci_high"]
    text = knowledge_markdown(table, 3, 200)
    assert "Δ vs concat" in text and f"{row['delta_concat']:+.3f}" in text


def test_each_fold_records_its_best_epoch(cv_result):
    _, res = cv_result
    folds = pd.DataFrame(res.folds)
    neural = folds[~folds["model"].isin(["logreg", "champion"])]
    assert neural["best_epoch"].notna().all() and (neural["best_epoch"] < neural["epochs"]).all()
    assert folds.loc[folds["model"] == "logreg", "best_epoch"].isna().all()  # closed form: no epochs to pick from


# ------------------------------------------------------------------------------------------ champion row


def _champion_cv(models: list[str], primary: str = "auto", **cmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_cv(
            cv_data(), models, [], SPEC, CompareSpec(folds=3, bootstrap=200, **cmp), progress=False, primary=primary
        )


def test_the_champion_row_takes_each_folds_best_model_on_validation():
    res = _champion_cv(["image", "note"])  # the notes carry the class, the images are noise
    assert res.chosen == ["note"] * 3
    assert np.array_equal(res.probs["champion"], res.probs["note"])
    folds = pd.DataFrame(res.folds)
    picked = folds.query("model == 'champion'")
    assert list(picked["chosen"]) == ["note"] * 3 and list(picked["fold"]) == [0, 1, 2]
    scored = folds[folds["model"].isin(["image", "note"])].pivot(index="fold", columns="model", values="val_macro_f1")
    assert (scored["note"] > scored["image"]).all()  # folds.csv keeps the validation scores each choice was made on


def test_a_closed_form_candidate_is_scored_on_validation_by_a_second_fit():
    # logreg trains on the fold's fit + validation rows: without a second fit on the fit rows alone it would have no
    # validation score and the noise model would be the only candidate left
    res = _champion_cv(["image", "logreg"])
    assert res.chosen == ["logreg"] * 3
    assert np.array_equal(res.probs["champion"], res.probs["logreg"])


def test_no_champion_row_for_a_named_primary_model_or_when_switched_off():
    assert "champion" not in _champion_cv(["image", "note"], primary="note").probs
    assert "champion" not in _champion_cv(["image", "note"], champion=False).probs
    assert "champion" not in _champion_cv(["note"]).probs  # one model: nothing to choose


# -------------------------------------------------------------------------------------------- hard cases


def test_hard_cases_are_the_patients_every_model_misclassifies():
    from sklearn.metrics import f1_score

    from clinicmm.evaluation.compare import CVResult, ceiling, hard_cases, hard_markdown

    y = np.array([0, 0, 1, 1, 2, 2])
    a = np.eye(3)[[1, 2, 1, 1, 2, 0]]  # wrong on 0, 1, 5
    b = np.eye(3)[[1, 0, 1, 0, 2, 2]]  # wrong on 0, 3
    c = np.eye(3)[[2, 0, 1, 1, 2, 2]]  # wrong on 0
    res = CVResult(CLASSES, y, np.zeros(6, int), {}, {"a": a, "b": b, "c": c, "a_rewired": np.eye(3)[y]})
    hard, consensus = hard_cases(res)
    assert list(hard) == [0] and list(consensus) == [1]  # two of the three models said LUAD
    expected = f1_score(y, [1, 0, 1, 1, 2, 2], average="macro")
    assert ceiling(res, hard, consensus) == pytest.approx(expected) and expected < 1
    text = hard_markdown(res, hard, consensus, ceiling(res, hard, consensus))
    assert "1 of 6 patients" in text and "BRCA → LUAD 1" in text and f"{expected:.3f}" in text
    alone = CVResult(CLASSES, y, np.zeros(6, int), {}, {"a": a})
    assert len(hard_cases(alone)[0]) == 0  # one model's errors are not the cohort's hard cases


def test_the_report_says_which_rows_are_seed_ensembles() -> None:
    from clinicmm.evaluation.compare import ensemble_markdown

    rows = ["omics", "concat", "kg_pathway", "logreg", "kg_logreg", "gbt", "kg_pathway_rewired", "champion"]
    text = ensemble_markdown(rows, 5)
    assert "`training.ensemble: 5`" in text and "5 networks" in text
    assert text.split("): ")[1].startswith("omics, concat, kg_pathway, kg_pathway_rewired.")
    assert ensemble_markdown(rows, 1) == "" and ensemble_markdown(["logreg", "gbt"], 5) == ""


# ------------------------------------------------------------------------------------------ linear part refit


def test_a_corrected_networks_linear_part_is_refitted_on_fit_and_validation_rows_as_logreg_is():
    import copy

    import torch

    from clinicmm.fusion.models.wrappers import LinearOffset
    from clinicmm.training.data import to_evidence
    from clinicmm.training.fit import fit_closed_form, fit_model, refit_linear_part

    data = cv_data()
    fit_rows, val_rows = np.arange(0, 24), np.arange(24, 36)
    fitted = fit_model(
        "concat", data.data, (fit_rows, data.y[fit_rows]), (val_rows, data.y[val_rows]), SPEC, progress=False
    )
    assert isinstance(fitted.model, LinearOffset)
    before_net = {k: v.clone() for k, v in fitted.model.net.state_dict().items()}
    before_base = fitted.model.base.linear.weight.clone()
    both = np.arange(36)
    refit_linear_part(fitted, data.data, (both, data.y), SPEC)
    # the same linear model a closed-form fit on all 36 rows (through the network's standardiser) gives
    items = to_evidence(data.data.encoded, both, data.y, data.data.kg, fitted.scaler)
    reference = copy.deepcopy(fitted.model.base)
    fit_closed_form(reference, items, [], fitted.hetero, fitted.dims, SPEC, len(CLASSES))
    assert torch.allclose(fitted.model.base.linear.weight, reference.linear.weight)
    assert not torch.allclose(fitted.model.base.linear.weight, before_base)
    assert all(torch.equal(v, before_net[k]) for k, v in fitted.model.net.state_dict().items())  # correction kept
    assert not any(p.requires_grad for p in fitted.model.base.parameters())
    alone = fit_model(
        "note", data.data, (fit_rows, data.y[fit_rows]), (val_rows, data.y[val_rows]), SPEC, progress=False
    )
    state = {k: v.clone() for k, v in alone.model.state_dict().items()}
    refit_linear_part(alone, data.data, (both, data.y), SPEC)  # a network without a linear part: unchanged
    assert all(torch.equal(v, state[k]) for k, v in alone.model.state_dict().items())


def test_compare_refits_each_corrected_networks_linear_part_on_the_folds_training_rows(monkeypatch):
    from clinicmm.training import fit as fitting

    calls = []
    real = fitting.refit_linear_part
    monkeypatch.setattr(
        fitting,
        "refit_linear_part",
        lambda fitted, data, rows, spec: calls.append((fitted.name, len(rows[0]))) or real(fitted, data, rows, spec),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_cv(
            cv_data(), ["concat"], ["logreg"], SPEC, CompareSpec(folds=3, bootstrap=100, champion=False), progress=False
        )
    assert calls == [("concat", 24)] * 3  # every fold's 24 training rows (fit + validation); logreg is closed form
