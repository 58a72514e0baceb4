"""training.offset: logreg — a network that corrects the logistic regression (LinearOffset): it starts exactly at
the linear model, learns only through the network, trains on out-of-fold linear logits, and is saved, rebuilt and
served as the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fusion_models import DIMS, N_CLASSES, knowledge, make, mixed_batch

from clinicmm.config import TrainingSpec
from clinicmm.fusion.models.wrappers import LinearOffset, offset_of, zero_output

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")
NETWORKS = ["omics", "concat", "attention", "kg_gnn", "kg_rgcn"]


def _base(seed: int = 3):
    base = make("logreg")
    with torch.no_grad():  # a linear model that says something (a fitted one would be as good)
        g = torch.Generator().manual_seed(seed)
        base.linear.weight.copy_(torch.randn(base.linear.weight.shape, generator=g))
        base.linear.bias.copy_(torch.randn(base.linear.bias.shape, generator=g))
    return base


@pytest.mark.parametrize("name", NETWORKS)
def test_it_starts_at_the_linear_model_and_learns_only_through_the_network(name: str) -> None:
    batch = mixed_batch()
    base = _base()
    model = LinearOffset(zero_output(make(name, dropout=0.0)), base).eval()
    with torch.no_grad():
        assert torch.allclose(model(batch), base(batch), atol=1e-6)  # epoch 0 is the linear model
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(batch), batch["patient"].y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert all(torch.equal(frozen[k], v) for k, v in base.state_dict().items())
    with torch.no_grad():
        assert not torch.allclose(model(batch), base(batch), atol=1e-4)  # the correction moved


def test_rows_carrying_offsets_use_them_instead_of_the_linear_model() -> None:
    batch = mixed_batch()
    net = make("concat", dropout=0.0).eval()
    model = LinearOffset(net, _base()).eval()
    given = torch.randn(batch["patient"].num_nodes, N_CLASSES)
    batch["patient"].offset = given
    with torch.no_grad():
        assert torch.allclose(model(batch), given + net(batch), atol=1e-6)


def test_explanations_read_the_wrapped_network() -> None:
    batch = mixed_batch()
    graph, dense = make("kg_gnn").eval(), make("concat").eval()
    wrapped = LinearOffset(graph, _base())
    assert wrapped.plan is graph.plan and not hasattr(LinearOffset(dense, _base()), "plan")
    assert torch.allclose(wrapped.modality_weights(batch), graph.modality_weights(batch))
    assert offset_of(wrapped) == "logreg" and offset_of(graph) == "none"


def _patients(n: int, seed: int = 0):
    from clinicmm.fusion.batch import PatientEvidence

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % N_CLASSES
        omics = (np.eye(DIMS["omics"])[y] * 1.5 + rng.normal(0, 1.0, DIMS["omics"])).astype(np.float32)
        out.append(PatientEvidence(label=y, omics=omics))
    return out


def test_each_training_patients_offset_comes_from_a_linear_model_fitted_without_it(monkeypatch) -> None:
    from clinicmm.training import fit as fitting
    from clinicmm.training.linear import design

    items, kg, spec = _patients(40), knowledge(), TrainingSpec(seed=0)
    fitted_on: list[tuple[torch.nn.Module, set[int]]] = []
    real = fitting.fit_closed_form

    def spy(model, train, *args):
        fitted_on.append((model, {id(p) for p in train}))
        return real(model, train, *args)

    monkeypatch.setattr(fitting, "fit_closed_form", spy)
    out = fitting.out_of_fold_offsets(items, lambda: make("logreg"), kg, DIMS, spec, N_CLASSES)
    assert len(fitted_on) == 5 and all(p.offset is None for p in items)  # the caller's items are not changed
    for original, patient in zip(items, out):
        x, _ = design(fitted_on[0][0], [original], kg, DIMS)
        sources = [
            fitted_ids
            for model, fitted_ids in fitted_on
            if np.allclose(model.logits(torch.as_tensor(x)).detach().numpy()[0], patient.offset, atol=1e-5)
        ]
        assert len(sources) == 1 and id(original) not in sources[0]
    in_sample = make("logreg")
    real(in_sample, items, [], kg, DIMS, spec, N_CLASSES)
    x, y = design(in_sample, items, kg, DIMS)
    own = in_sample.logits(torch.as_tensor(x)).detach().numpy()
    oof = np.stack([p.offset for p in out])
    # out of fold, the linear model is less sure of each patient's own label than in sample
    assert (oof - oof.max(1, keepdims=True))[np.arange(len(y)), y].mean() < (own - own.max(1, keepdims=True))[
        np.arange(len(y)), y
    ].mean()


def test_the_networks_of_one_fold_share_one_set_of_linear_fits(monkeypatch) -> None:
    import types

    from clinicmm.training import fit as fitting

    items, kg, spec = _patients(40), knowledge(), TrainingSpec(seed=0)
    rows = (list(range(40)), [p.label for p in items]), ([], [])
    calls = []
    real = fitting.fit_closed_form
    monkeypatch.setattr(fitting, "fit_closed_form", lambda model, *a: calls.append(model) or real(model, *a))
    data = types.SimpleNamespace(kg=object(), classes=list(range(N_CLASSES)), fitted_offsets={})
    first_base, first = fitting.logreg_offset(data, rows, [items, []], lambda: make("logreg"), kg, DIMS, spec)
    assert len(calls) == 6  # the base and its five out-of-fold fits
    second_base, second = fitting.logreg_offset(data, rows, [items, []], lambda: make("logreg"), kg, DIMS, spec)
    assert len(calls) == 6 and second_base is not first_base  # reused, each network with its own copy
    assert torch.equal(second_base.linear.weight, first_base.linear.weight)
    assert all(np.array_equal(a.offset, b.offset) for a, b in zip(first, second))
    direct = fitting.out_of_fold_offsets(items, lambda: make("logreg"), kg, DIMS, spec, N_CLASSES)
    assert all(np.allclose(a.offset, b.offset) for a, b in zip(first, direct))
    del calls[:]
    # another graph (compare's knowledge ablation), other rows or other settings: fitted again
    fitting.logreg_offset(
        types.SimpleNamespace(**(vars(data) | {"kg": object()})), rows, [items, []], lambda: make("logreg"), kg,
        DIMS, spec,
    )  # fmt: skip
    assert len(calls) == 6
    fitting.logreg_offset(data, rows, [items, []], lambda: make("logreg"), kg, DIMS, TrainingSpec(seed=1))
    assert len(calls) == 12
    fewer = (list(range(35)), rows[0][1][:35]), ([], [])
    fitting.logreg_offset(data, fewer, [items[:35], []], lambda: make("logreg"), kg, DIMS, spec)
    assert len(calls) == 18 and len(data.fitted_offsets) == 4


def test_a_trained_offset_model_is_saved_rebuilt_and_served_as_the_same_model(
    genomics_cohort, genomics_workflow, tmp_path
) -> None:
    from clinicmm.fusion.batch import build_batch
    from clinicmm.keys import Split
    from clinicmm.pipeline import registry, stages
    from clinicmm.tracking.bundle import ModelBundle

    genomics_cohort(tmp_path, 60)
    wf = genomics_workflow(
        tmp_path,
        "offset",
        ["concat", "omics", "logreg"],
        training={"max_epochs": 3, "patience": 2, "hidden": 8, "batch_size": 16},
    )  # fmt: skip; offset: logreg is the default
    for name in ("ingest", "encode", "train"):
        stages.FUNCTIONS[name](wf, False)
    bundle = ModelBundle.load(wf.work / "train" / "concat")
    assert bundle.offset == "logreg" and ModelBundle.load(wf.work / "train" / "logreg").offset == "none"
    assert ModelBundle.load(wf.work / "train" / "omics").offset == "none"  # a single-modality reference stays one
    model = bundle.build_model()
    assert isinstance(model, LinearOffset)
    assert not torch.equal(model.base.linear.weight, torch.zeros_like(model.base.linear.weight))  # fitted, saved
    from clinicmm.training.data import TrainingData

    data = TrainingData(wf)
    items, _ = data.items(Split.TEST, bundle.scaler)
    batch = build_batch(bundle.knowledge.to_hetero(), items, bundle.dims)
    with torch.no_grad():
        both, linear_only = model(batch), model.base(batch)
    assert torch.isfinite(both).all() and not torch.allclose(both, linear_only)  # the network's correction is kept
    for name in ("evaluate", "register", "predict"):
        stages.FUNCTIONS[name](wf, False)
    assert registry.summary(wf, "predict")["scored"] == 60


def test_compare_warns_of_an_early_stop_only_for_networks_that_train_alone() -> None:
    from clinicmm.cli import early_lines

    early = {"omics": 2, "concat": 3, "kg_gnn_rewired": 1}
    with_offset = early_lines(early, 5, "logreg")
    assert with_offset[0].startswith("[yellow]omics: best epoch among the first two in 2 of 5 folds")
    assert with_offset[1].startswith("concat: its correction of logreg stopped improving within two epochs in 3 of 5")
    assert with_offset[2].startswith("kg_gnn_rewired: its correction of logreg")
    assert all(line.startswith("[yellow]") for line in early_lines(early, 5, "none"))


def test_a_fitted_linear_part_follows_the_wrappers_mode() -> None:
    """fit_linear leaves its model in eval mode; inside the wrapper it must not stay there (Lightning warns about
    modules in eval mode at the start of every fit)."""
    model = LinearOffset(make("concat"), _base().eval())
    assert all(m.training for m in model.modules())
    assert not any(m.training for m in model.eval().modules())


def test_only_fusion_networks_are_corrections_of_logreg() -> None:
    from clinicmm.fusion.registry import MODELS, corrects_logreg

    corrected = {m for m in MODELS if corrects_logreg(m, "logreg")}
    assert corrected == {"concat", "attention", "kg_gnn", "kg_rgcn", "kg_pathway"}
    assert not corrects_logreg("champion", "logreg") and not any(corrects_logreg(m, "none") for m in MODELS)
