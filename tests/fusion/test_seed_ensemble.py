"""training.ensemble: several networks from their own initial weights, each trained on its own loss, predicting with
their mean probability (SeedEnsemble); saved, rebuilt and served as one model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_fusion_models import make, mixed_batch

from clinicmm.config import TrainingSpec
from clinicmm.fusion.models.wrappers import LinearOffset, SeedEnsemble, ensemble_of, members_of, offset_of

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


@pytest.mark.parametrize("name", ["concat", "kg_gnn", "kg_pathway"])
def test_it_predicts_the_mean_probability_of_its_members(name: str) -> None:
    batch = mixed_batch()
    members = [make(name, seed=s).eval() for s in (0, 1, 2)]
    ensemble = SeedEnsemble(members).eval()
    with torch.no_grad():
        probs = [torch.softmax(m(batch), 1) for m in members]
        assert not torch.allclose(probs[0], probs[1], atol=1e-4)  # different initial weights, different networks
        assert torch.allclose(torch.softmax(ensemble(batch), 1), torch.stack(probs).mean(0), atol=1e-6)
        # its logits are log-probabilities already: a later temperature acts on them like on any model's logits
        assert torch.allclose(torch.logsumexp(ensemble(batch), 1), torch.zeros(8), atol=1e-5)
        alone = SeedEnsemble(members[:1]).eval()(batch)
        assert torch.allclose(alone, torch.log_softmax(members[0](batch), 1), atol=1e-6)


def test_each_member_learns_on_its_own_loss() -> None:
    """The training step's gradient on a member is that member's own cross-entropy over the count, whatever the
    others predict: members do not co-adapt to make the mean right (unlike training the mean's loss)."""
    from clinicmm.training.module import FusionTask

    batch = mixed_batch()
    members = [make("concat", dropout=0.0, seed=s) for s in (0, 1)]
    task = FusionTask(SeedEnsemble(members), TrainingSpec(), n_classes=4)
    task.log = lambda *a, **k: None  # outside a Trainer
    task.training_step(batch, 0).backward()
    together = [p.grad.clone() for p in members[0].parameters()]
    for p in members[0].parameters():
        p.grad = None
    (F.cross_entropy(members[0](batch), batch["patient"].y) / 2).backward()
    alone = [p.grad for p in members[0].parameters()]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(together, alone))


def test_explanations_and_the_bundle_read_through_it() -> None:
    batch = mixed_batch()
    graphs = [make("kg_gnn", seed=s).eval() for s in (0, 1)]
    ensemble = SeedEnsemble(graphs)
    assert ensemble.plan is graphs[0].plan and not hasattr(SeedEnsemble([make("concat")]), "plan")
    with torch.no_grad():
        mean = (graphs[0].modality_weights(batch) + graphs[1].modality_weights(batch)) / 2
        assert torch.allclose(ensemble.modality_weights(batch), mean)
    wrapped = SeedEnsemble([LinearOffset(make("concat", seed=s), make("logreg")) for s in (0, 1, 2)])
    assert (offset_of(wrapped), ensemble_of(wrapped)) == ("logreg", 3) and len(members_of(wrapped)) == 3
    assert (offset_of(graphs[0]), ensemble_of(graphs[0])) == ("none", 1)
    with pytest.raises(ValueError):
        SeedEnsemble([])


def test_an_ensemble_is_trained_saved_rebuilt_and_served_as_one_model(
    genomics_cohort, genomics_workflow, tmp_path
) -> None:
    import json

    from clinicmm.errors import ModelError
    from clinicmm.fusion.batch import build_batch
    from clinicmm.keys import Split
    from clinicmm.pipeline import registry, stages
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import TrainingData

    genomics_cohort(tmp_path, 60)
    wf = genomics_workflow(
        tmp_path,
        "ensemble",
        ["concat", "logreg"],
        training={"max_epochs": 3, "patience": 2, "hidden": 8, "batch_size": 16, "ensemble": 3},
    )  # fmt: skip
    for name in ("ingest", "encode", "train"):
        stages.FUNCTIONS[name](wf, False)
    bundle = ModelBundle.load(wf.work / "train" / "concat")
    assert (bundle.ensemble, bundle.offset) == (3, "logreg")
    assert ModelBundle.load(wf.work / "train" / "logreg").ensemble == 1  # closed form: one deterministic fit
    model = bundle.build_model()
    assert isinstance(model, SeedEnsemble) and all(isinstance(m, LinearOffset) for m in model.members)
    first = [p for p in model.members[0].net.parameters() if p.dim() == 2][0]
    second = [p for p in model.members[1].net.parameters() if p.dim() == 2][0]
    assert not torch.allclose(first, second)  # each member kept its own weights
    items, _ = TrainingData(wf).items(Split.TEST, bundle.scaler)
    batch = build_batch(bundle.knowledge.to_hetero(), items, bundle.dims)
    with torch.no_grad():
        members = torch.stack([torch.softmax(m(batch), 1) for m in model.members])
        assert torch.allclose(torch.softmax(model(batch), 1), members.mean(0), atol=1e-6)
    for name in ("evaluate", "register", "predict"):
        stages.FUNCTIONS[name](wf, False)
    assert registry.summary(wf, "predict")["scored"] == 60
    meta = json.loads((wf.work / "train" / "concat" / "model.json").read_text())
    (wf.work / "train" / "concat" / "model.json").write_text(json.dumps(meta | {"ensemble": 0}))
    with pytest.raises(ModelError, match="ensemble 0 in model.json"):
        ModelBundle.load(wf.work / "train" / "concat").build_model()


def test_the_alignment_loss_reaches_every_member() -> None:
    """training.contrastive_weight with an ensemble: each member's modality embeddings are aligned, not only the
    first member's."""
    from clinicmm.training.module import FusionTask

    batch = mixed_batch()
    members = [make("concat", dropout=0.0, seed=s) for s in (0, 1)]
    plain = FusionTask(SeedEnsemble(members), TrainingSpec(), n_classes=4)
    aligned = FusionTask(SeedEnsemble(members), TrainingSpec(contrastive_weight=1.0), n_classes=4)
    for task in (plain, aligned):
        task.log = lambda *a, **k: None
    grads = []
    for task in (plain, aligned):
        for p in task.parameters():
            p.grad = None
        task.training_step(batch, 0).backward()
        grads.append([[p.grad.clone() for p in m.parameters() if p.grad is not None] for m in members])
    for member in range(2):  # the alignment term changes every member's gradient
        assert any(not torch.allclose(a, b) for a, b in zip(grads[0][member], grads[1][member]))
