"""Cross-modal InfoNCE: the loss itself, which patients take part, each model's embeddings, the training hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch_geometric.data import HeteroData

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PatientEvidence, build_batch
from clinicmm.fusion.contrastive import contrastive_loss, info_nce, modality_embeddings, pairwise_info_nce
from clinicmm.fusion.registry import build_model
from clinicmm.training.fit import fit
from clinicmm.training.module import FusionTask

DIMS = {"image": 6, "note": 7, "omics": 5}
K, HIDDEN = 3, 16
FUSED = ("concat", "attention", "kg_gnn", "kg_rgcn")

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


def knowledge() -> HeteroData:
    g = HeteroData()
    for t, n in {"gene": 6, "pathway": 2, "cancer_type": K, "concept": 6}.items():
        g[t].num_nodes = n
        g[t].node_id = torch.arange(n)
    rels = {
        ("gene", "member_of", "pathway"): [list(range(6)), [i % 2 for i in range(6)]],
        ("gene", "driver_of", "cancer_type"): [list(range(6)), [i // 2 for i in range(6)]],
        ("concept", "indicates", "cancer_type"): [list(range(6)), [i // 2 for i in range(6)]],
    }
    for (src, rel, dst), ei in rels.items():
        g[src, rel, dst].edge_index = torch.tensor(ei)
        g[dst, "rev_" + rel, src].edge_index = torch.tensor(ei).flip(0)
    return g


def patients(n: int, seed: int, missing_note_every: int = 0) -> list[PatientEvidence]:
    """Class c = i % K; each modality is a fixed random map of a shared per-patient latent (plus noise)."""
    rng = np.random.default_rng(seed)
    maps = {m: np.random.default_rng(7 + j).normal(size=(4, d)) for j, (m, d) in enumerate(DIMS.items())}
    out = []
    for i in range(n):
        z = rng.normal(size=4)
        z[i % K] += 2.0
        v = {m: (z @ maps[m] + rng.normal(size=d) * 0.1).astype(np.float32) for m, d in DIMS.items()}
        if missing_note_every and i % missing_note_every == 0:
            v["note"] = None
        out.append(PatientEvidence(label=i % K, **v))
    return out


def model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, DIMS, K, knowledge(), torch.arange(K), hidden=HIDDEN, dropout=0.0)


def test_matched_pairs_cost_less_than_mismatched_ones():
    a = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    b = a + 0.05 * torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    assert info_nce(a, b) < info_nce(a, b[torch.randperm(16, generator=torch.Generator().manual_seed(2))])
    assert torch.isclose(info_nce(a, b), info_nce(b, a))  # symmetric in the two modalities


@pytest.mark.parametrize("a, b", [(torch.zeros(1, 4), torch.zeros(1, 4)), (torch.zeros(3, 4), torch.zeros(3, 5))])
def test_info_nce_needs_two_paired_rows(a, b):
    with pytest.raises(ValueError, match="N >= 2"):
        info_nce(a, b)


def test_patients_missing_a_modality_take_no_part_in_its_pairs():
    gen = torch.Generator().manual_seed(0)
    emb = {m: torch.randn(6, 4, generator=gen) for m in ("image", "note", "omics")}
    emb["note"][0] = float("nan")  # whatever sits in an absent patient's row must not matter
    present = torch.ones(6, 3, dtype=torch.bool)
    present[0, 1] = False
    loss = pairwise_info_nce(emb, present)
    keep = torch.arange(1, 6)
    expected = (
        info_nce(emb["image"][keep], emb["note"][keep])
        + info_nce(emb["image"], emb["omics"])
        + info_nce(emb["note"][keep], emb["omics"][keep])
    ) / 3
    assert torch.isfinite(loss) and torch.isclose(loss, expected)


def test_no_qualifying_pair_gives_a_zero_that_backpropagates():
    emb = {"image": torch.randn(3, 4, requires_grad=True), "note": torch.randn(3, 4, requires_grad=True)}
    present = torch.tensor([[True, False, False], [False, True, False], [True, True, False]])  # one pair only
    loss = pairwise_info_nce(emb, present)
    assert float(loss) == 0.0
    loss.backward()


@pytest.mark.parametrize("name", FUSED)
def test_every_fusion_model_exposes_one_embedding_per_modality(name):
    batch = build_batch(knowledge(), patients(8, 0), DIMS)
    emb = modality_embeddings(model(name), batch)
    assert sorted(emb) == ["image", "note", "omics"]
    assert all(e.shape == (8, HIDDEN) for e in emb.values())
    loss = contrastive_loss(model(name), batch)
    assert torch.isfinite(loss) and float(loss) > 0


def test_single_modality_models_have_no_pairs():
    batch = build_batch(knowledge(), patients(8, 0), DIMS)
    assert modality_embeddings(model("note"), batch) == {}
    assert float(contrastive_loss(model("note"), batch)) == 0.0


def test_training_step_adds_the_weighted_term_and_only_when_asked():
    batch = build_batch(knowledge(), patients(12, 0, missing_note_every=3), DIMS)
    net = model("concat")
    plain = FusionTask(net, TrainingSpec(contrastive_weight=0.0), K).training_step(batch, 0)
    weighted = FusionTask(net, TrainingSpec(contrastive_weight=0.5), K).training_step(batch, 0)
    assert torch.isclose(weighted - plain, 0.5 * contrastive_loss(net, batch))


def test_training_with_the_loss_aligns_the_modalities():
    """The same model trained with and without the auxiliary loss: aligned embeddings on unseen patients."""
    train, val, test = patients(48, 1), patients(12, 2), build_batch(knowledge(), patients(24, 3), DIMS)
    losses = {}
    for weight in (0.0, 1.0):
        spec = TrainingSpec(
            max_epochs=15,
            patience=15,
            batch_size=16,
            hidden=HIDDEN,
            dropout=0.0,
            seed=0,
            modality_dropout=0.0,
            contrastive_weight=weight,
        )
        trained, _ = fit(model("attention"), train, val, knowledge(), DIMS, spec, K, progress=False)
        with torch.no_grad():
            losses[weight] = float(contrastive_loss(trained, test))
    assert losses[1.0] < losses[0.0]


def test_config_rejects_a_negative_weight():
    with pytest.raises(ValidationError):
        TrainingSpec(contrastive_weight=-0.1)
