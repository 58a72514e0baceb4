"""No fold scores a patient whose label or data fitted anything it was scored with.

Anything fitted on data (the genomics preprocessor, the standardiser) is refitted inside each fold, on that fold's
training patients; anything fitted on labels before the folds were cut (a trained image encoder, a LoRA adapter)
makes compare and leave-one-site-out refuse, naming the fix. A genomics-only cohort keeps it fast.
"""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.config import CompareSpec, ImageTrainSpec, LoraSpec
from clinicmm.errors import ConfigError
from clinicmm.keys import Split

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, encoded_genomics):
    return encoded_genomics(tmp_path_factory.mktemp("fold_leakage"), 36, "folds", ["omics"], primary_model="omics")


def _with(wf, image_train: bool = False, lora: bool = False):
    enc = wf.encoders
    image = enc.image.model_copy(update={"train": ImageTrainSpec(epochs=1)}) if image_train else enc.image
    text = enc.text.model_copy(update={"lora": LoraSpec()}) if lora else enc.text
    return wf.model_copy(update={"encoders": enc.model_copy(update={"image": image, "text": text})})


@pytest.mark.parametrize(
    ("image_train", "lora", "key"), [(True, False, "encoders.image.train"), (False, True, "encoders.text.lora")]
)
def test_compare_refuses_a_label_trained_encoder_before_any_work(encoded, image_train, lora, key, monkeypatch):
    from clinicmm.pipeline import run

    ran = []
    monkeypatch.setattr(run, "prepare", lambda *a, **k: ran.append(a))
    with pytest.raises(ConfigError, match=rf"{key}.*whose labels trained it.*Remove {key}"):
        run.compare(_with(encoded, image_train, lora), folds=3, progress=False)
    assert ran == []  # refused before ingest, encode or any fine-tuning ran


def test_leave_one_site_out_refuses_a_label_trained_encoder(encoded):
    from clinicmm.evaluation.loso import leave_one_site_out

    with pytest.raises(ConfigError, match="leave-one-site-out cannot use encoders.image.train"):
        leave_one_site_out(_with(encoded, image_train=True))


def test_every_fold_refits_the_genomics_preprocessor_on_its_own_training_patients(encoded, monkeypatch):
    import clinicmm.encode.genomics as genomics
    from clinicmm.evaluation.compare import cv_data, run_cv
    from clinicmm.training.data import TrainingData

    fitted_on: list[set[str]] = []
    real = genomics.fit_genomics

    def recording(wf, cohort, patients=None):
        fitted_on.append(set(patients))
        return real(wf, cohort, patients)

    monkeypatch.setattr(genomics, "fit_genomics", recording)
    data = cv_data(TrainingData(encoded))
    res = run_cv(data, ["omics"], ["logreg"], encoded.training, CompareSpec(folds=3, bootstrap=100), progress=False)
    assert len(fitted_on) == 3  # one preprocessor per fold, shared by the fold's models
    patients = np.array(data.patients)
    for k, fit in enumerate(fitted_on):
        tested = set(patients[res.fold == k])
        assert fit and not fit & tested  # no fold's test patient shaped the features it was scored on
        assert len(fit) < len(patients) - len(tested)  # the early-stopping share is held out too


def test_a_fold_of_the_training_data_sees_only_its_split(encoded):
    from clinicmm.training.data import TrainingData

    data = TrainingData(encoded)
    patients = list(data.encoded.patients)
    split = {p: (Split.TRAIN if i % 4 else Split.TEST).value for i, p in enumerate(patients)}  # every class in both
    fold = data.fold(split)
    assert fold.rows(Split.TEST)[0] == [i for i, p in enumerate(patients) if split[p] == Split.TEST]
    assert data.split != fold.split and data.encoded is not fold.encoded  # the original is untouched
    assert not np.array_equal(
        np.nan_to_num(data.encoded.vectors["omics"]), np.nan_to_num(fold.encoded.vectors["omics"])
    )
