"""Leave-one-site-out, robustness and external validation on one tiny trained workflow (in process)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from clinicmm.errors import StageError

MODELS = ["omics", "concat"]


@pytest.fixture(scope="module")
def trained(small_demo, tmp_path_factory, one_thread):
    from clinicmm.config import load_workflow
    from clinicmm.pipeline.stages import encode_stage, evaluate_stage, ingest_stage, register_stage, train_stage
    from clinicmm.tracking.setup import configure

    root = tmp_path_factory.mktemp("modes")
    data = root / "data"
    shutil.copytree(small_demo[0].parent, data)
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    labels["site"] = [f"H{i % 4}" for i in range(len(labels))]
    labels.to_csv(data / "labels.csv", index=False)
    cfg = yaml.safe_load((data / "dataset.yaml").read_text())
    cfg["labels"]["site_column"] = "site"
    cfg["split"] = {"leave_one_site_out": True}
    (data / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    wf_cfg = {
        "name": "modes",
        "dataset": str(data / "dataset.yaml"),
        "workdir": str(root / "work"),
        "encoders": {"image": {"spatial_size": [8, 16, 16]}},
        "models": MODELS,
        "primary_model": "concat",
        "training": {"max_epochs": 3, "patience": 2, "hidden": 16},
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": "modes", "registered_model": "modes"},
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf_cfg))
    wf = load_workflow(root / "wf.yaml")
    configure(wf.tracking)
    ingest_stage(wf)
    encode_stage(wf)
    train_stage(wf, progress=False)
    evaluate_stage(wf)
    register_stage(wf)
    return wf, labels.set_index("patient_id")["site"]


def _runs(wf, stage):
    from mlflow import MlflowClient

    from clinicmm.tracking.runs import read_runs

    client = MlflowClient(read_runs(wf)["tracking_uri"])
    exp = client.get_experiment_by_name(wf.tracking.experiment)
    return client, client.search_runs([exp.experiment_id], f"tags.`clinicmm.stage` = '{stage}'")


def test_leave_one_site_out_reports_every_site_for_every_model(trained):
    wf, sites = trained
    table = pd.read_csv(wf.work / "evaluate" / "sites" / "leave_one_site_out.csv")
    assert sorted(table["site"].unique()) == sorted(sites.unique())
    assert sorted(table["model"].unique()) == sorted(MODELS) and len(table) == 4 * len(MODELS)
    assert (table["n_test"] > 0).all() and table["macro_f1"].between(0, 1).all()
    _, found = _runs(wf, "leave_one_site_out")
    assert found and "omics.mean_site_macro_f1" in found[0].data.metrics


def _cache_listing(wf):
    root = wf.work / "cache"
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())


def test_perturbations_change_only_their_modality_and_skip_the_cache(trained):
    from clinicmm.evaluation.robustness import PERTURBATIONS, variants
    from clinicmm.training.data import TrainingData

    wf, _ = trained
    before = _cache_listing(wf)
    versions = variants(TrainingData(wf), list(PERTURBATIONS), seed=0)
    assert _cache_listing(wf) == before and before  # nothing read into or written to the clean inputs' cache
    _, clean = versions["clean"]
    for name, (modality, enc) in versions.items():
        if name == "clean":
            continue
        if name.startswith("no_"):  # removed at scoring by the ablation path (predict_proba(without=...))
            assert enc is clean
            continue
        has = clean.has(modality)
        changed = ~np.isclose(
            np.nan_to_num(enc.vectors[modality], nan=1e9), np.nan_to_num(clean.vectors[modality], nan=1e9)
        ).all(axis=1)
        assert changed[has].any(), name
        for other in set(clean.vectors) - {modality}:
            np.testing.assert_array_equal(enc.vectors[other], clean.vectors[other])


def test_robustness_table_is_written_and_logged(trained):
    from clinicmm.evaluation.robustness import robustness_stage

    wf, _ = trained
    table = robustness_stage(wf, ["image_noise", "no_omics"])
    assert set(table["model"]) == set(MODELS)
    assert set(table["perturbation"]) == {"clean", "image_noise", "no_omics"}
    clean = table[table["perturbation"] == "clean"]
    assert (clean["macro_f1_drop"] == 0).all()
    for _, r in table.iterrows():
        base = clean.set_index("model").loc[r["model"], "macro_f1"]
        assert r["macro_f1_drop"] == pytest.approx(base - r["macro_f1"])
    out = wf.work / "robustness"
    assert "| image_noise |" in (out / "robustness.md").read_text() and (out / "robustness.png").is_file()
    client, found = _runs(wf, "robustness")
    assert found[0].data.tags["clinicmm.evaluation"] == "robustness"
    assert "omics.no_omics.macro_f1_drop" in found[0].data.metrics
    assert {a.path for a in client.list_artifacts(found[0].info.run_id, "robustness")} >= {"robustness/robustness.csv"}


def test_unknown_perturbation_is_a_config_error(trained):
    from clinicmm.errors import ConfigError
    from clinicmm.evaluation.robustness import robustness_stage

    with pytest.raises(ConfigError, match="valid names: image_noise"):
        robustness_stage(trained[0], ["image_blur"])


def test_external_validation_scores_a_second_dataset_apart(trained, tmp_path):
    from clinicmm.demo.generator import generate_demo
    from clinicmm.evaluation.external import evaluate_external

    wf, _ = trained
    other = generate_demo(tmp_path / "other", patients=12, seed=11, slices=8, size=32)
    result = evaluate_external(wf, other)
    m = result["metrics"]
    assert m["n_evaluated"] > 0 and 0 <= m["accuracy"] <= 1
    folder = wf.work / "external" / "demo"
    assert (folder / "metrics.json").is_file() and (folder / "confusion.png").is_file()
    assert not (wf.work / "evaluate" / "external").exists()
    client, found = _runs(wf, "external")
    assert found[0].data.tags["clinicmm.evaluation"] == "external"
    assert found[0].data.tags["clinicmm.model_uri"] == "models:/modes@champion"
    assert "external_accuracy" in found[0].data.metrics
    assert all("DEMO-" not in v for v in found[0].data.tags.values())
    # the demo draws its gene panel per seed: the second cohort measured only the model's genes its table has
    genes = json.loads((wf.work / "encode" / "genomics.json").read_text())["genes"]
    table = set(pd.read_csv(other.parent / "expression.tsv", sep="\t", nrows=1).columns)
    share = sum(g in table for g in genes) / len(genes)
    assert 0 < share < 0.5 and m["omics_measured_median"] == pytest.approx(share)
    assert m["n_omics_measured_under_half"] >= 1 and found[0].data.metrics["external_omics_measured_median"] == share


def test_external_metrics_say_how_much_of_the_models_omics_panel_the_patients_measured():
    from clinicmm.evaluation.external import external_metrics

    preds = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "prob_X": [0.9, 0.2, 0.7, None],
            "prob_Y": [0.1, 0.8, 0.3, None],
            "omics_measured": [1.0, 0.3, None, 0.1],  # c: no omics; d: not scored
            "status": ["scored", "scored", "scored", "not scored"],
        }
    )
    metrics, _, _ = external_metrics(preds, {"a": "X", "b": "Y", "c": "X", "d": "Y"})
    assert metrics["omics_measured_median"] == pytest.approx(0.65)  # of the scored rows with omics
    assert metrics["n_omics_measured_under_half"] == 1.0
    assert metrics["n_evaluated"] == 3.0


def test_external_data_that_overlaps_the_training_data_is_refused(trained):
    from clinicmm.evaluation.external import evaluate_external

    wf, _ = trained
    with pytest.raises(
        StageError, match=r"(?s)external dataset: leakage between it and the workflow.s own dataset.*- image: series in"
    ):
        evaluate_external(wf, wf.dataset_path)


def test_image_noise_is_the_same_for_the_same_seed(trained):
    from clinicmm.evaluation.robustness import variants
    from clinicmm.training.data import TrainingData

    wf, _ = trained
    data = TrainingData(wf)
    first, again, other = (
        variants(data, ["image_noise"], seed=s)["image_noise"][1].vectors["image"] for s in (0, 0, 1)
    )
    np.testing.assert_array_equal(first, again)  # Compose() used to reseed the noise at random
    assert not np.allclose(np.nan_to_num(first), np.nan_to_num(other))
