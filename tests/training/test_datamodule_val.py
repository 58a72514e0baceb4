"""The loaders of FusionData: a validation split smaller than the process count is a clear ConfigError."""

from types import SimpleNamespace

import pytest

from clinicmm.config import TrainingSpec
from clinicmm.errors import ConfigError
from clinicmm.fusion.batch import PatientEvidence
from clinicmm.training.loaders import FusionData


def _data(n_val: int, world: int) -> FusionData:
    dm = FusionData([PatientEvidence(0)] * 4, [PatientEvidence(0)] * n_val, None, {}, TrainingSpec())
    dm.trainer = SimpleNamespace(world_size=world, global_rank=0)
    return dm


def test_validation_split_smaller_than_the_processes_names_the_fix():
    with pytest.raises(
        ConfigError, match=r"validation split holds 1 patients but training runs in 2 processes.*split\.val"
    ):
        _data(1, 2).val_dataloader()


def test_validation_split_as_large_as_the_processes_is_split_between_them(monkeypatch):
    import clinicmm.training.loaders as datamodule

    seen = []
    monkeypatch.setattr(
        datamodule, "make_loader", lambda items, knowledge, dims, size, sampler, *a: seen.append((size, len(sampler)))
    )
    _data(2, 2).val_dataloader()
    assert seen == [(1, 1)]
