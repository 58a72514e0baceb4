"""fit with a checkpoint folder: Lightning's last.ckpt carries history and best weights, and a rerun resumes from it."""

from __future__ import annotations

import pytest
import torch
from test_fit import DIMS, SPEC, TRAIN, VAL, K, knowledge, new_model  # the toy graph and patients of test_fit

from clinicmm.errors import ConfigError
from clinicmm.training.fit import fit

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_interrupted_fit_resumes_where_it_stopped(tmp_path):
    kg = knowledge()
    # no modality dropout: its random draws are not in the checkpoint, everything else (weights, AdamW, epoch) is
    short = SPEC.model_copy(update={"max_epochs": 2, "patience": 50, "modality_dropout": 0.0})
    longer = short.model_copy(update={"max_epochs": 4})
    _, first = fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, short, K, progress=False, ckpt_dir=tmp_path)
    assert (tmp_path / "last.ckpt").is_file() and len(first) == 2
    rows: list[dict] = []
    resumed, history = fit(
        new_model("concat", kg, seed=7), TRAIN, VAL, kg, DIMS, longer, K, rows.append, False, tmp_path
    )
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[:2] == first  # the first two epochs come from the checkpoint, not from a new start
    assert rows == history  # replayed to on_epoch, so the MLflow curve is whole
    _, straight = fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, longer, K, progress=False)
    assert [h["val_loss"] for h in history] == pytest.approx([h["val_loss"] for h in straight], abs=1e-5)


def test_a_finished_fit_is_not_trained_again(tmp_path):
    kg = knowledge()
    model, history = fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, SPEC, K, progress=False, ckpt_dir=tmp_path)
    assert len(history) < SPEC.max_epochs  # stopped early
    again, history2 = fit(
        new_model("concat", kg, seed=3), TRAIN, VAL, kg, DIMS, SPEC, K, progress=False, ckpt_dir=tmp_path
    )
    assert history2 == history
    assert _same_weights(again, model)  # the best epoch's weights, restored from the checkpoint


def test_hardware_keys_lightning_refuses_are_a_config_error():
    kg = knowledge()
    spec = SPEC.model_copy(update={"strategy": "dpp", "max_epochs": 1})  # a typo of ddp
    with pytest.raises(ConfigError, match="strategy='dpp'.*training section"):
        fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, spec, K, progress=False)
