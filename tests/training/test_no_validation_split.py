"""A given split without validation patients (split.column with only train and test): the models still train,
stopping early on a stratified share of the training patients, and the workflow registers and predicts."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")
N = 48


def test_training_without_a_validation_split_holds_out_its_own_early_stopping_share(
    genomics_cohort, genomics_workflow, tmp_path
):
    from clinicmm.pipeline import registry, stages

    dataset = genomics_cohort(tmp_path, N)
    labels = pd.read_csv(dataset.parent / "labels.csv", dtype=str, keep_default_na=False)
    labels["fold"] = ["test" if i % 4 == 0 else "train" for i in range(N)]
    labels.to_csv(dataset.parent / "labels.csv", index=False)
    cfg = yaml.safe_load(dataset.read_text()) | {"split": {"column": "fold"}}
    dataset.write_text(yaml.safe_dump(cfg))
    wf = genomics_workflow(tmp_path, "noval", ["concat", "logreg"])
    cohort = stages.ingest_stage(wf)
    assert set(cohort.manifest["split"]) == {"train", "test"}
    for name in ("encode", "train", "evaluate", "register", "predict"):
        stages.FUNCTIONS[name](wf, False)
    trained = registry.summary(wf, "train")
    assert trained["concat"]["epochs"] >= 1 and trained["concat"]["val_loss"] == trained["concat"]["val_loss"]  # finite
    assert trained["logreg"]["epochs"] == 1  # closed form: no early stopping needed
    assert registry.summary(wf, "predict")["scored"] == N
