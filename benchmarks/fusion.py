"""KG-GNN training steps on a large graph: time and peak memory against the 'concat' step on the same batch.

The graph is synthetic but of real size: 20,000 genes, 2,000 pathways (each gene in 1 + Poisson(10) of them, about
220,000 member_of edges), 30 cancer types with 60 driver genes each and 500 concepts with 3 indicated types each.
Cohorts of 1k, 10k and 50k random patients (image 512-d, note 384-d, omics 350-d, 25 linked genes, 3 note concepts,
1 body-site concept; ~15% miss a modality). A step is what the fit loop does per batch: collate, forward,
cross-entropy, backward and the fit loop's optimiser (``FusionTask.configure_optimizers``, fused AdamW). ``kg_gnn``
(HGT) and ``kg_rgcn`` run as training runs them on a graph this size: each batch cut to its receptive field
(:mod:`clinicmm.fusion.subgraph`) with ``training.num_neighbors`` in-edges sampled per knowledge node and relation.
For reference, measured on the smallest cohort only: ``kg_gnn_exact`` (the cut without sampling, what evaluation
runs) and ``kg_gnn_full`` (the whole graph every step, the behaviour below ``training.subgraph_min_edges``).

Times are measured with the default allocator, as training runs. Peak memory is measured in a second pass, a child
process run with ``MALLOC_MMAP_THRESHOLD_`` fixed so that freed tensors go back to the OS and each step starts from
what it really holds (that setting slows every large allocation, so it is kept out of the timings): the rise of the
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before each step) over the resident set when
the step starts. Models step round-robin on the same batches (warm-up, then timed steps); medians are reported and
the ratio to concat on the same batches. Plain prints, no assertions.

    .venv/bin/python benchmarks/fusion.py [--cohorts 1000,10000,50000] [--batch 32] [--steps 10] [--threads 1]
                                          [--num-neighbors N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PatientEvidence, collate
from clinicmm.fusion.registry import build_model
from clinicmm.fusion.subgraph import knowledge_edges, restrict
from clinicmm.training.fit import graph_batches
from clinicmm.training.module import FusionTask

DIMS = {"image": 512, "note": 384, "omics": 350}
SIZES = {"gene": 20_000, "pathway": 2_000, "cancer_type": 30, "concept": 500}
WARMUP = 2
MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def synthetic_graph(seed: int = 0) -> HeteroData:
    """The knowledge graph described in the module docstring, every relation both ways."""
    rng = np.random.default_rng(seed)
    g = HeteroData()
    for t, n in SIZES.items():
        g[t].num_nodes = n
        g[t].node_id = torch.arange(n)
    per_gene = 1 + rng.poisson(10, SIZES["gene"])
    member = (np.repeat(np.arange(SIZES["gene"]), per_gene), rng.integers(SIZES["pathway"], size=per_gene.sum()))
    driver = (rng.integers(SIZES["gene"], size=30 * 60), np.repeat(np.arange(30), 60))
    indicates = (np.repeat(np.arange(SIZES["concept"]), 3), rng.integers(30, size=SIZES["concept"] * 3))
    for (src, rel, dst), (s, d) in {
        ("gene", "member_of", "pathway"): member,
        ("gene", "driver_of", "cancer_type"): driver,
        ("concept", "indicates", "cancer_type"): indicates,
    }.items():
        ei = torch.from_numpy(np.unique(np.stack([s, d]), axis=1)).long()
        g[src, rel, dst].edge_index = ei
        g[dst, "rev_" + rel, src].edge_index = ei.flip(0).contiguous()
    return g


def cohort(size: int, n_classes: int, seed: int = 0) -> list[PatientEvidence]:
    """``size`` random patients (views into three embedding matrices, so a 50k cohort is built in seconds)."""
    rng = np.random.default_rng(seed)
    vectors = {m: rng.standard_normal((size, d), dtype=np.float32) for m, d in DIMS.items()}
    missing = np.where(rng.random(size) < 0.15, rng.integers(3, size=size), -1)
    genes = rng.integers(SIZES["gene"], size=(size, 25))
    concepts = rng.integers(SIZES["concept"], size=(size, 4))
    out = []
    for i in range(size):
        vec = {m: (None if missing[i] == j else vectors[m][i]) for j, m in enumerate(DIMS)}
        out.append(
            PatientEvidence(
                int(i % n_classes),
                vec["image"],
                vec["note"],
                vec["omics"],
                [int(concepts[i, 0])] if vec["image"] is not None else [],
                concepts[i, 1:].tolist() if vec["note"] is not None else [],
                genes[i].tolist() if vec["omics"] is not None else [],
            )
        )
    return out


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# name -> (registry model, cut batches to the receptive field, sample neighbours as training does)
VARIANTS = {
    "concat": ("concat", False, False),
    "kg_gnn": ("kg_gnn", True, True),
    "kg_rgcn": ("kg_rgcn", True, True),
    "kg_gnn_exact": ("kg_gnn", True, False),
    "kg_gnn_full": ("kg_gnn", False, False),
}


class Trainer:
    """One model with the fit loop's optimiser (``FusionTask.configure_optimizers``) and collate function."""

    def __init__(self, name: str, hetero: HeteroData, class_nodes: torch.Tensor, spec: TrainingSpec) -> None:
        torch.manual_seed(0)
        model_name, cut, sample = VARIANTS[name]
        self.model = build_model(model_name, DIMS, len(class_nodes), hetero, class_nodes, spec.hidden, spec.dropout)
        graph_batches(self.model, spec)  # as fit() sets them up, then switched off for the reference variants
        if hasattr(self.model, "subgraph_min_edges"):
            self.model.subgraph_min_edges = self.model.subgraph_min_edges if cut else None
            self.model.num_neighbors = self.model.num_neighbors if sample else None
        self.model.train()
        self.opt = FusionTask(self.model, spec, len(class_nodes)).configure_optimizers()
        self.collate = collate(hetero, DIMS, modality_dropout=spec.modality_dropout, seed=0)
        self.ms: list[float] = []
        self.cpu: list[float] = []
        self.mb: list[float] = []

    def step(self, items: list[PatientEvidence], record: bool) -> None:
        measured = _reset_peak()
        before = _status_kb("VmRSS")
        t0, c0 = time.perf_counter(), time.process_time()
        batch = self.collate(items)
        loss = F.cross_entropy(self.model(batch), batch["patient"].y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        if record:
            self.ms.append(elapsed * 1e3)
            self.cpu.append(cpu * 1e3)
            self.mb.append((_status_kb("VmHWM") - before) / 1024 if measured else float("nan"))


def run(trainers: dict[str, Trainer], pool: list[PatientEvidence], batch: int, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for step in range(WARMUP + steps):
        items = [pool[i] for i in rng.choice(len(pool), batch, replace=False)]
        for trainer in trainers.values():
            trainer.step(items, record=step >= WARMUP)


def receptive_field_size(hetero: HeteroData, pool: list[PatientEvidence], batch: int, model, spec) -> str:
    """Knowledge nodes and message edges one batch's cut holds (all of them, and as sampled), against the graph."""
    whole = collate(hetero, DIMS)(pool[:batch])
    counts = []
    for limit in (None, spec.num_neighbors):
        cut, _ = restrict(whole, model.plan, model.class_nodes, limit)
        counts.append(
            (
                sum(int(cut[t].num_nodes) for t in SIZES),
                sum(int(cut[et].edge_index.size(1)) for et in cut.edge_types if et[0] in SIZES and et[2] in SIZES),
            )
        )
    (nodes, edges), (sampled_nodes, sampled_edges) = counts
    return (
        f"one batch's receptive field: {nodes:,} of {sum(SIZES.values()):,} knowledge nodes and {edges:,} of "
        f"{2 * knowledge_edges(hetero):,} knowledge edges (both directions); with num_neighbors "
        f"{spec.num_neighbors}: {sampled_nodes:,} nodes, {sampled_edges:,} edges"
    )


def measure(args, hetero: HeteroData, class_nodes: torch.Tensor, spec: TrainingSpec, memory: bool) -> dict:
    """Per (cohort, batch, model): median step wall ms, cpu ms and peak MB; the receptive-field line; cohort RSS."""
    out: dict = {"rows": {}, "rss": {}}
    sizes = [int(s) for s in args.cohorts.split(",")]
    for i, size in enumerate(sizes):
        pool = cohort(size, len(class_nodes), seed=size)
        plans = [(args.batch, ["concat", "kg_gnn", "kg_rgcn"] + (["kg_gnn_exact", "kg_gnn_full"] if i == 0 else []))]
        if size == sizes[-1]:
            plans.append((4 * args.batch, ["concat", "kg_gnn", "kg_rgcn"]))  # memory grows with the batch
        for batch, names in plans:
            trainers = {n: Trainer(n, hetero, class_nodes, spec) for n in names}
            if i == 0 and batch == args.batch and not memory:
                out["field"] = receptive_field_size(hetero, pool, batch, trainers["kg_gnn"].model, spec)
            steps = args.steps if "kg_gnn_full" not in names else max(3, args.steps // 2)
            run(trainers, pool, batch, max(3, steps // 2) if memory else steps, seed=size)
            for name, t in trainers.items():
                out["rows"][f"{size},{batch},{name}"] = [statistics.median(v) for v in (t.ms, t.cpu, t.mb)]
            del trainers
        out["rss"][str(size)] = _status_kb("VmRSS") / 1024
        del pool
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", default="1000,10000,50000", help="cohort sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and cohort")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--num-neighbors", type=int, default=None, help="training.num_neighbors (default: the config's)"
    )
    parser.add_argument("--memory-pass", action="store_true", help=argparse.SUPPRESS)  # the child of main()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = TrainingSpec(**({"num_neighbors": args.num_neighbors} if args.num_neighbors else {}))
    hetero = synthetic_graph()
    class_nodes = torch.arange(SIZES["cancer_type"])
    if args.memory_pass:
        print(json.dumps(measure(args, hetero, class_nodes, spec, memory=True)))
        return
    edges = sum(int(hetero[et].edge_index.size(1)) for et in hetero.edge_types) // 2
    print(f"graph: {', '.join(f'{t} {n:,}' for t, n in SIZES.items())}; {edges:,} edges (forward)")
    print(
        f"torch threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} timed steps after {WARMUP} "
        f"warm-up; subgraph_min_edges {spec.subgraph_min_edges:,}, num_neighbors {spec.num_neighbors}"
    )
    timed = measure(args, hetero, class_nodes, spec, memory=False)
    # peak memory in a second process whose allocator hands freed tensors back (see the module docstring)
    child = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--memory-pass"],
        capture_output=True,
        text=True,
        env={**os.environ, MMAP_ENV: "65536"},
        check=True,
    )
    peaks = json.loads(child.stdout.strip().splitlines()[-1])
    print(timed["field"])
    print(
        f"\n{'cohort':>8} {'batch':>6} {'model':<13}{'wall ms':>9}{'cpu ms':>9}{'peak MB':>9}{'wall/concat':>13}"
        f"{'cpu/concat':>12}"
    )
    for key, (ms, cpu, _) in timed["rows"].items():
        size, batch, name = key.split(",")
        base_ms, base_cpu, _ = timed["rows"][f"{size},{batch},concat"]
        print(
            f"{int(size):>8,} {batch:>6} {name:<13}{ms:>9.1f}{cpu:>9.1f}{peaks['rows'][key][2]:>9.1f}"
            f"{ms / base_ms:>12.1f}x{cpu / base_cpu:>11.1f}x"
        )
    print(
        "resident set with the cohort in memory (memory pass): "
        + ", ".join(f"{int(k):,} patients {v:,.0f} MB" for k, v in peaks["rss"].items())
    )
    print(
        "(medians; cpu ms = process CPU time of the step, steadier than wall time on a shared machine; peak MB = "
        "rise of the peak resident set during one step, measured in a second pass; baseline: concat on the same "
        "batches)"
    )


if __name__ == "__main__":
    main()
