"""HGTLayer against the pruned torch-geometric HGTConv it replaced in kg_gnn: same parameters, outputs and gradients."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch_geometric.nn import HGTConv

from clinicmm.fusion.batch import schema
from clinicmm.fusion.conv.hgt import HGTLayer
from clinicmm.fusion.models.kg_gnn import message_plan

pytestmark = pytest.mark.usefixtures("one_thread")

HIDDEN = 16
PLAN_SIZES = {
    "gene": 40,
    "pathway": 6,
    "cancer_type": 5,
    "concept": 12,
    "patient": 7,
    "image": 5,
    "note": 0,
    "omics": 6,
}
# Hand-made: 'a' and 'src' send only, 'b' receives along three relations (nodes 0 and 1 from all of them, the last
# node from none), 'empty' has no nodes, ('a', 'unused', 'c') has no edges in the batch.
TOY_INPUTS = ["a", "b", "c", "src", "empty"]
TOY_EDGES = [
    ("a", "to", "b"),
    ("c", "to", "b"),
    ("src", "feeds", "b"),
    ("b", "back", "c"),
    ("a", "unused", "c"),
    ("empty", "to", "b"),
    ("b", "self", "b"),
]
TOY_SIZES = {"a": 9, "b": 6, "c": 4, "src": 3, "empty": 0}
TOY_EMPTY = {("a", "unused", "c"), ("empty", "to", "b")}


def pruned_hgtconv(hidden: int, heads: int, inputs, edges) -> HGTConv:
    """The layer kg_gnn built before HGTLayer (models in users' registries hold its weights): PyG's HGTConv without
    the output weights of the types it does not update."""
    conv = HGTConv(hidden, hidden, (inputs, edges), heads)
    for t in set(inputs) - {et[2] for et in edges}:
        del conv.out_lin.lins[t]
        del conv.skip[t]
    return conv


def pair(inputs, edges, heads: int, seed: int = 0) -> tuple[HGTConv, HGTLayer]:
    """A pruned HGTConv with randomised parameters (so skip and p_rel matter), and an HGTLayer loaded from it."""
    torch.manual_seed(seed)
    ref = pruned_hgtconv(HIDDEN, heads, inputs, edges)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    lean = HGTLayer(HIDDEN, heads, inputs, edges)
    lean.load_state_dict(ref.state_dict(), strict=True)
    return ref, lean


def random_edges(edges, sizes, seed: int, per_type: int = 25, empty=()) -> dict:
    """Random edges for every edge type; every dst node but the last gets edges, nodes 0 and 1 from every relation."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for et in edges:
        n_src, n_dst = sizes[et[0]], sizes[et[2]]
        if et in empty or n_src == 0 or n_dst == 0:
            out[et] = torch.zeros(2, 0, dtype=torch.long)
            continue
        dst = torch.cat([torch.tensor([0, 1]), torch.randint(max(n_dst - 1, 1), (per_type - 2,), generator=g)])
        out[et] = torch.stack([torch.randint(n_src, (per_type,), generator=g), dst.clamp_max(n_dst - 1)])
    return out


def run(layer, x, edge_index_dict, weights):
    """Outputs and the gradients of every parameter and input after backward of a random linear functional."""
    xs = {t: v.clone().requires_grad_() for t, v in x.items()}
    out = layer(xs, edge_index_dict)
    sum((out[t] * weights[t]).sum() for t in out).backward()
    grads = {n: p.grad for n, p in layer.named_parameters()}
    grads.update({f"x[{t}]": v.grad for t, v in xs.items()})
    return {t: o.detach() for t, o in out.items()}, grads


def assert_same(ref, lean, x, edge_index_dict):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        expected_out = ref(x, edge_index_dict)
    weights = {t: torch.randn(o.shape, generator=g) for t, o in expected_out.items()}
    expected, expected_grads = run(ref, x, edge_index_dict, weights)
    got, got_grads = run(lean, x, edge_index_dict, weights)
    assert list(got) == list(expected)
    for t in expected:
        torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5, msg=f"output of {t}")
    assert got_grads.keys() == expected_grads.keys()
    for name, want in expected_grads.items():
        have = got_grads[name]
        assert (have is None) == (want is None), f"gradient of {name}: {have} vs {want}"
        if want is not None:  # float32 sums in another order: ~1e-5 apart on gradients of size ~5 (CPU-dependent)
            scale = float(want.abs().max()) if want.numel() else 1.0
            torch.testing.assert_close(have, want, atol=1e-5 * max(scale, 1.0), rtol=1e-4, msg=f"gradient of {name}")


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("heads", [1, 2])
def test_matches_hgtconv_on_the_models_message_plan(layer, heads):
    inputs, edges = message_plan(schema(), 2)[layer]
    ref, lean = pair(inputs, edges, heads, seed=layer)
    x = {t: torch.randn(PLAN_SIZES[t], HIDDEN) for t in inputs}
    ei = random_edges(edges, PLAN_SIZES, seed=10 + layer)
    assert any(e.numel() == 0 for e in ei.values())  # 'note' has no nodes: its edge types are empty
    assert_same(ref, lean, x, ei)


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("per_type", [2, 40])  # fewer edges than source nodes, and more (both transform orders)
def test_matches_hgtconv_on_edge_cases(heads, per_type):
    ref, lean = pair(TOY_INPUTS, TOY_EDGES, heads)
    x = {t: torch.randn(n, HIDDEN) for t, n in TOY_SIZES.items()}
    ei = random_edges(TOY_EDGES, TOY_SIZES, seed=3, per_type=per_type, empty=TOY_EMPTY)
    received = torch.cat([e[1] for et, e in ei.items() if et[2] == "b"])
    assert set(received.tolist()) <= set(range(TOY_SIZES["b"] - 1))  # b's last node receives nothing
    assert set(lean(x, ei)) == {"b", "c"}
    assert_same(ref, lean, x, ei)


def test_a_relation_missing_from_the_batch_matches_hgtconv():
    ref, lean = pair(TOY_INPUTS, TOY_EDGES, 2)
    x = {t: torch.randn(n, HIDDEN) for t, n in TOY_SIZES.items()}
    ei = random_edges(TOY_EDGES, TOY_SIZES, seed=4, empty=TOY_EMPTY)
    del ei[("b", "back", "c")], ei[("a", "unused", "c")]  # 'c' still gets an output, from no messages
    x["stranger"] = torch.randn(3, HIDDEN)  # a type the layer was not built for is ignored
    assert_same(ref, lean, x, ei)


def test_the_comparison_catches_a_per_relation_softmax_and_an_ignored_prior(monkeypatch):
    """Mutations of the layer that the checks above must reject."""
    import clinicmm.fusion.conv.hgt as hgt

    ref, lean = pair(TOY_INPUTS, TOY_EDGES, 2)
    x = {t: torch.randn(n, HIDDEN) for t, n in TOY_SIZES.items()}
    ei = random_edges(TOY_EDGES, TOY_SIZES, seed=5, empty=TOY_EMPTY)
    with torch.no_grad():
        for p in lean.p_rel.values():
            p.fill_(1.0)
    with pytest.raises(AssertionError):
        assert_same(ref, lean, x, ei)
    lean.load_state_dict(ref.state_dict())
    relation = torch.cat([torch.full((e.size(1),), i) for i, e in enumerate(ei.values())])
    softmax = hgt.softmax
    monkeypatch.setattr(
        hgt,
        "softmax",
        lambda score, dst, num_nodes: softmax(score, dst * len(ei) + relation, num_nodes=num_nodes * len(ei)),
    )
    with pytest.raises(AssertionError):
        assert_same(ref, lean, x, ei)


def test_parameters_and_state_dict_keys_are_hgtconvs():
    for inputs, edges in [*message_plan(schema(), 2), (TOY_INPUTS, TOY_EDGES)]:
        ref, lean = pruned_hgtconv(HIDDEN, 2, inputs, edges), HGTLayer(HIDDEN, 2, inputs, edges)
        assert list(lean.state_dict()) == list(ref.state_dict())  # same order: optimiser state lines up
        assert [(n, p.shape) for n, p in lean.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
        ref.load_state_dict(lean.state_dict(), strict=True)
        lean.load_state_dict(ref.state_dict(), strict=True)
        assert all(bool((p == 1).all()) for n, p in lean.named_parameters() if n.startswith(("skip.", "p_rel.")))


def test_a_kg_gnn_model_saved_with_hgtconv_layers_loads_key_for_key():
    """Models registered before HGTLayer hold pruned-HGTConv weights; today's KGGNNFusion must load them strictly."""
    from clinicmm.fusion.models.kg_gnn import KGGNNFusion

    def build() -> KGGNNFusion:
        sizes = {"gene": 20, "pathway": 4, "cancer_type": 5, "concept": 6}
        dims = {"image": 8, "note": 6, "omics": 10}
        return KGGNNFusion(dims, 3, sizes, torch.tensor([0, 2, 4]), schema(), hidden=HIDDEN)

    model, old = build(), build()
    old.convs = torch.nn.ModuleList(pruned_hgtconv(HIDDEN, 2, inputs, edges) for inputs, edges in old.plan)
    assert list(model.state_dict()) == list(old.state_dict())
    model.load_state_dict(old.state_dict(), strict=True)
    old.load_state_dict(model.state_dict(), strict=True)


def test_pickles_and_runs_without_grad_in_eval_mode():
    _, lean = pair(TOY_INPUTS, TOY_EDGES, 2)
    x = {t: torch.randn(n, HIDDEN) for t, n in TOY_SIZES.items()}
    ei = random_edges(TOY_EDGES, TOY_SIZES, seed=6, empty=TOY_EMPTY)
    copy = pickle.loads(pickle.dumps(lean))
    copy.eval()
    with torch.no_grad():
        got, want = copy(x, ei), lean(x, ei)
    assert not any(o.requires_grad for o in got.values())
    for t in want:
        torch.testing.assert_close(got[t], want[t])


def test_rejects_edge_types_it_was_not_built_for():
    lean = HGTLayer(HIDDEN, 2, TOY_INPUTS, TOY_EDGES)
    x = {t: torch.randn(n, HIDDEN) for t, n in TOY_SIZES.items()}
    with pytest.raises(ValueError, match="edge types among"):
        lean(x, {("c", "unknown", "b"): torch.zeros(2, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="source types"):
        lean({t: v for t, v in x.items() if t != "a"}, {("a", "to", "b"): torch.zeros(2, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="divisible"):
        HGTLayer(HIDDEN, 3, TOY_INPUTS, TOY_EDGES)
    with pytest.raises(ValueError, match="between the input types"):
        HGTLayer(HIDDEN, 2, ["a"], TOY_EDGES)
