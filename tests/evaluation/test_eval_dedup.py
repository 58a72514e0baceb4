"""One code path each: leave-one-site-out on the evaluate stage's TrainingData, robustness's removals through the
ablation path, compare's parent run opened like the workflow's. A genomics-only cohort keeps it fast (no
encoder networks to load)."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.keys import Col, Split

CLASSES = ["BRCA", "LUAD", "COAD"]
SITES = ["H0", "H1", "H2", "H3"]
pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread, genomics_cohort, genomics_workflow):
    import warnings

    from clinicmm.pipeline.stages import encode_stage, ingest_stage, train_stage

    root = tmp_path_factory.mktemp("dedup")
    genomics_cohort(root, 48, sites=SITES)  # class-specific expression of graph genes; four sites, each every class
    training = {"max_epochs": 2, "patience": 2, "hidden": 8, "batch_size": 16}
    wf = genomics_workflow(root, "tiny", ["omics", "concat"], primary_model="concat", training=training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ingest_stage(wf)
        encode_stage(wf)
        train_stage(wf, progress=False)
    return wf


def _run(wf, run_id):
    from mlflow import MlflowClient

    from clinicmm.tracking.runs import read_runs

    client = MlflowClient(read_runs(wf)["tracking_uri"])
    return client, client.get_run(run_id)


# ------------------------------------------------------------------------------------ leave-one-site-out


def test_leave_one_site_out_reuses_the_training_data_it_is_given(trained, monkeypatch):
    from clinicmm.evaluation.loso import leave_one_site_out
    from clinicmm.tracking.runs import read_runs
    from clinicmm.training.data import TrainingData

    wf = trained
    data = TrainingData(wf)
    split, classes, omics = dict(data.split), list(data.classes), data.encoded.vectors["omics"].copy()

    def reloaded(*args, **kwargs):
        raise AssertionError("leave-one-site-out loaded again what TrainingData holds")

    for target in (
        "clinicmm.ingest.cohort.Cohort.load",
        "clinicmm.encode.featurizer.EncodedCohort.load",
        "clinicmm.encode.featurizer.load_encoded",
        "clinicmm.knowledge.graph.load_knowledge",
    ):
        monkeypatch.setattr(target, reloaded)
    table = leave_one_site_out(wf, data=data)
    assert sorted(table["site"].unique()) == SITES and len(table) == len(SITES) * len(wf.models)
    assert (table["n_test"] > 0).all() and table["macro_f1"].between(0, 1).all()
    # the folds are views: the evaluate stage's data keeps its own split, classes and embeddings
    assert data.split == split and data.classes == classes
    np.testing.assert_array_equal(data.encoded.vectors["omics"], omics)
    client, run = _run(wf, read_runs(wf)["stages"]["leave_one_site_out"])
    assert run.info.status == "FINISHED" and "omics.mean_site_macro_f1" in run.data.metrics
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "sites")}
    assert logged == {"sites/leave_one_site_out.csv", "sites/leave_one_site_out.md"}


def test_a_fold_sees_its_own_split_through_training_data_rows(trained):
    from clinicmm.config import load_dataset
    from clinicmm.evaluation.loso import fold_data
    from clinicmm.ingest.sites import site_folds
    from clinicmm.training.data import TrainingData

    wf = trained
    data = TrainingData(wf)
    for site, fold in site_folds(load_dataset(wf.dataset_path), data.cohort.manifest):
        view = fold_data(data, fold)
        in_fold = fold.set_index(Col.PATIENT.value)
        train = in_fold[in_fold[Col.SPLIT.value] == Split.TRAIN.value]
        assert view.classes == sorted(set(train[Col.LABEL.value]))
        rows, y = view.rows(Split.TEST)
        tested = [view.encoded.patients[r] for r in rows]
        assert tested and set(in_fold.loc[tested, "split"]) == {Split.TEST.value}
        assert [view.classes[i] for i in y] == list(in_fold.loc[tested, Col.LABEL.value])
        assert len(tested) == int((in_fold[Col.SPLIT.value] == Split.TEST.value).sum()), site


# -------------------------------------------------------------------------------------------- robustness


def test_robustness_removes_a_modality_through_the_ablation_path(trained, monkeypatch):
    import clinicmm.training.fit as fit_module
    from clinicmm.evaluation.ablation import probs_and_without
    from clinicmm.evaluation.robustness import robustness_table, variants
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import TrainingData, dims_of

    wf = trained
    data = TrainingData(wf)
    versions = variants(data, ["no_omics"], seed=0)
    assert versions["no_omics"][0] == "omics" and versions["no_omics"][1] is versions["clean"][1]  # nothing re-encoded
    asked, real = [], fit_module.predict_proba

    def spy(*args, **kwargs):
        asked.append(kwargs.get("without"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "predict_proba", spy)
    table = robustness_table(data, ["no_omics"]).set_index(["perturbation", "model"])
    assert asked.count("omics") == len(wf.models)
    monkeypatch.undo()
    for name in wf.models:  # the same numbers as the evaluate stage's ablation of that model
        bundle = ModelBundle.load(wf.work / "train" / name)
        items, y = data.items(Split.TEST, bundle.scaler)
        _, without = probs_and_without(
            bundle.build_model(), items, bundle.knowledge.to_hetero(), dims_of(data.encoded.vectors)
        )
        assert table.loc[("no_omics", name), "accuracy"] == pytest.approx(
            float((without["omics"].argmax(1) == y).mean())
        )


# ----------------------------------------------------------------------------------------------- MLflow


def test_compare_opens_its_parent_run_the_way_the_workflow_run_is_opened(trained, monkeypatch, tmp_path):
    from clinicmm.evaluation.compare import CompareRuns
    from clinicmm.tracking import runs
    from clinicmm.training.data import TrainingData

    wf = trained
    opened, real = [], runs.top_run

    def spy(wf_, cohort, name, stage):
        opened.append((name, stage))
        return real(wf_, cohort, name, stage)

    monkeypatch.setattr(runs, "top_run", spy)
    with CompareRuns(wf, TrainingData(wf).cohort, tmp_path).parent_run() as run:
        compare_id = run.info.run_id
    assert opened == [("tiny-compare", "compare")]
    client, mine = _run(wf, compare_id)
    _, workflow = _run(wf, runs.read_runs(wf)["parent"])
    assert mine.data.params == workflow.data.params
    for tag in ("clinicmm.version", "clinicmm.dataset_digest"):
        assert mine.data.tags[tag] == workflow.data.tags[tag]
    assert (mine.data.tags["clinicmm.stage"], workflow.data.tags["clinicmm.stage"]) == ("compare", "workflow")
    assert [a.path for a in client.list_artifacts(compare_id, "ingest")] == ["ingest/summary.json"]


def test_the_workflow_run_logs_its_cohort_with_the_dataset_yaml_as_source(trained):
    import json

    from clinicmm.tracking import runs

    wf = trained
    _, workflow = _run(wf, runs.read_runs(wf)["parent"])
    inputs = workflow.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["cohort"]
    dataset = inputs[0].dataset
    assert dataset.digest == workflow.data.tags["clinicmm.dataset_digest"][:16]
    assert json.loads(dataset.source)["uri"] == wf.dataset_path.resolve().as_uri()
    assert "PT-0" not in json.dumps([dataset.source, dataset.schema, dataset.profile])  # counts, never ids
