"""fit: early stopping on val loss, best epoch restored, per-epoch callback, reproducibility; predict_proba."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PatientEvidence
from clinicmm.fusion.registry import build_model
from clinicmm.training.fit import fit, predict_proba

DIMS = {"image": 8, "note": 8, "omics": 8}
K = 4
HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "val_macro_f1"}
# lr high enough that the model soon becomes over-confident on the half-mislabelled val set (see `patients`)
SPEC = TrainingSpec(max_epochs=40, patience=3, lr=3e-3, batch_size=16, hidden=16, dropout=0.0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # Lightning's advice about DataLoader workers and the like
        warnings.simplefilter("ignore")
        yield


def knowledge() -> HeteroData:
    """8 genes, 2 pathways, 4 cancer types, 8 concepts; genes/concepts 2k, 2k+1 point at cancer type k."""
    g = HeteroData()
    for t, n in {"gene": 8, "pathway": 2, "cancer_type": K, "concept": 8}.items():
        g[t].num_nodes = n
        g[t].node_id = torch.arange(n)
    rels = {
        ("gene", "member_of", "pathway"): [list(range(8)), [i % 2 for i in range(8)]],
        ("gene", "driver_of", "cancer_type"): [list(range(8)), [i // 2 for i in range(8)]],
        ("concept", "indicates", "cancer_type"): [list(range(8)), [i // 2 for i in range(8)]],
    }
    for (src, rel, dst), ei in rels.items():
        g[src, rel, dst].edge_index = torch.tensor(ei)
        g[dst, "rev_" + rel, src].edge_index = torch.tensor(ei).flip(0)
    return g


def patients(n: int, seed: int, mislabelled: float = 0.0) -> list[PatientEvidence]:
    """Patients of class i % 4, each modality's embedding = the class prototype + noise.

    A ``mislabelled`` share gets the next class as label. With half the val set mislabelled the val loss first
    falls (the model learns the classes) and then rises (it grows over-confident on the wrong half): a minimum
    in the middle, so early stopping must stop the run well before ``max_epochs``.
    """
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(99).normal(size=(3, K, 8))
    out = []
    for i in range(n):
        c = i % K
        label = (c + 1) % K if rng.random() < mislabelled else c
        v = [(protos[j, c] + rng.normal(size=8) * 0.5).astype(np.float32) for j in range(3)]
        out.append(
            PatientEvidence(
                label=label, image=v[0], note=v[1], omics=v[2], note_concepts=[2 * c], omics_genes=[2 * c + 1]
            )
        )
    return out


TRAIN, VAL = patients(60, seed=1), patients(20, seed=2, mislabelled=0.5)


def new_model(name: str, kg: HeteroData, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, DIMS, K, kg, torch.arange(K), hidden=SPEC.hidden, dropout=SPEC.dropout)


def val_loss(model, items, kg) -> float:
    probs = predict_proba(model, items, kg, DIMS)
    y = np.array([p.label for p in items])
    return float(-np.log(probs[np.arange(len(y)), y]).mean())


@pytest.fixture(scope="module")
def concat_run():
    kg = knowledge()
    rows: list[dict] = []
    model, history = fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, SPEC, K, on_epoch=rows.append, progress=False)
    return kg, model, history, rows


def test_history_rows(concat_run):
    _, _, history, _ = concat_run
    assert history and all(set(h) == HISTORY_KEYS for h in history)
    assert [h["epoch"] for h in history] == list(range(len(history)))
    assert all(np.isfinite([h["train_loss"], h["val_loss"]]).all() and 0 <= h["val_macro_f1"] <= 1 for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it did learn the train set


def test_stops_early_after_patience_epochs_without_improvement(concat_run):
    _, _, history, _ = concat_run
    losses = [h["val_loss"] for h in history]
    best = int(np.argmin(losses))
    assert len(history) < SPEC.max_epochs
    assert best == len(history) - 1 - SPEC.patience  # stopped exactly `patience` epochs after the best one
    assert 0 < best  # the val loss did fall first: the minimum is not the untrained start


def test_returns_weights_of_the_best_epoch(concat_run):
    kg, model, history, _ = concat_run
    losses = [h["val_loss"] for h in history]
    assert not model.training
    recomputed = val_loss(model, VAL, kg)
    assert recomputed == pytest.approx(min(losses), abs=1e-5)
    assert abs(recomputed - losses[-1]) > 1e-3  # the last epoch's weights would give another loss


def test_on_epoch_rows_are_history_rows_in_order(concat_run):
    _, _, history, rows = concat_run
    assert rows and rows == history[: len(rows)]
    assert all(set(r) == HISTORY_KEYS for r in rows)


def test_on_epoch_called_once_per_epoch_with_the_history_row(concat_run):
    _, _, history, rows = concat_run
    assert len(rows) == len(history)
    assert rows == history


def test_same_seed_same_history_and_weights(concat_run):
    kg, model, history, _ = concat_run
    again, history2 = fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, SPEC, K, progress=False)
    assert history2 == history
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_another_seed_changes_the_run():
    kg = knowledge()
    spec = SPEC.model_copy(update={"seed": 1, "max_epochs": 3})
    _, h1 = fit(
        new_model("concat", kg), TRAIN, VAL, kg, DIMS, SPEC.model_copy(update={"max_epochs": 3}), K, progress=False
    )
    _, h2 = fit(new_model("concat", kg), TRAIN, VAL, kg, DIMS, spec, K, progress=False)
    assert len(h1) == len(h2) == 3
    assert [h["train_loss"] for h in h1] != [h["train_loss"] for h in h2]  # shuffling/dropout follow spec.seed


def test_single_modality_model_fits_too():
    kg = knowledge()
    model, history = fit(new_model("omics", kg), TRAIN, VAL, kg, DIMS, SPEC, K, progress=False)
    assert len(history) < SPEC.max_epochs
    assert val_loss(model, VAL, kg) == pytest.approx(min(h["val_loss"] for h in history), abs=1e-5)


def test_kg_gnn_on_a_tiny_graph():
    kg = knowledge()
    spec = SPEC.model_copy(update={"max_epochs": 12})
    model, history = fit(new_model("kg_gnn", kg), TRAIN, VAL, kg, DIMS, spec, K, progress=False)
    assert 1 <= len(history) <= spec.max_epochs
    assert val_loss(model, VAL, kg) == pytest.approx(min(h["val_loss"] for h in history), abs=1e-5)


def test_predict_proba_rows_are_distributions(concat_run):
    kg, model, _, _ = concat_run
    items = VAL[:5] + [PatientEvidence(note=VAL[0].note), PatientEvidence(omics=VAL[1].omics, omics_genes=[3])]
    probs = predict_proba(model, items, kg, DIMS, batch_size=3)  # several batches, in order
    assert probs.shape == (len(items), K)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:5], predict_proba(model, VAL[:5], kg, DIMS), atol=1e-6)


def test_predict_proba_of_no_patients(concat_run):
    kg, model, _, _ = concat_run
    assert predict_proba(model, [], kg, DIMS).shape[0] == 0
