"""Cost of one training step of each fusion model, relative to the 'concat' baseline.

A step is what the fit loop does per batch: collate a list of ``PatientEvidence`` into one ``HeteroData`` batch
(the demo's knowledge graph -- the shipped one plus the demo's own edges, as ``workflows/demo.yaml`` loads it --
plus patient/evidence nodes, modality dropout as in training), forward, cross-entropy,
backward and the fit loop's optimiser step (fused AdamW); graph models cut and sample their batches as ``fit`` sets
them up (``training.subgraph_min_edges``, ``training.num_neighbors``). Patients are random: image 512-d, note 384-d,
omics 350-d embeddings, 25 linked genes, 3 note concepts and 1 body-site concept each, ~15% missing one modality. Models step round-robin on the same
batches (3 warm-up rounds, then timed rounds with ``time.perf_counter``); the median per model is reported,
with the collate part split out, and the fastest step (less sensitive to other work on a shared machine).
Plain prints, no assertions: this is a script, not a test.

    .venv/bin/python benchmarks/fusion_step.py [--patients-per-batch 32] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from clinicmm.config import MODEL_NAMES, TrainingSpec
from clinicmm.demo.design import CANCER_TYPES
from clinicmm.demo.generator import demo_edges
from clinicmm.fusion.batch import PatientEvidence, collate
from clinicmm.fusion.registry import build_model
from clinicmm.keys import Node
from clinicmm.knowledge.graph import KnowledgeGraph
from clinicmm.training.fit import graph_batches
from clinicmm.training.module import FusionTask

DIMS = {"image": 512, "note": 384, "omics": 350}
WARMUP = 3
POOL = 512  # random patients to draw batches from


def knowledge() -> tuple[KnowledgeGraph, object, torch.Tensor]:
    """The demo's graph (shipped + demo edges), the six demo types ensured, its HeteroData and the class nodes."""
    kg = KnowledgeGraph.default()
    with resources.as_file(demo_edges()) as path:
        kg.add_file(path)  # as the demo workflow's knowledge: list adds the cohort's copy
    codes = [t.code for t in CANCER_TYPES]
    kg.ensure_nodes(Node.CANCER, codes)
    class_nodes = torch.tensor([kg.index(Node.CANCER, c) for c in codes], dtype=torch.long)
    return kg, kg.to_hetero(), class_nodes


def graph_summary(hetero) -> str:
    nodes = {t: int(hetero[t].num_nodes) for t in hetero.node_types}
    edges = sum(int(hetero[et].edge_index.size(1)) for et in hetero.edge_types)
    return (
        f"knowledge graph: {sum(nodes.values())} nodes ({', '.join(f'{t} {n}' for t, n in nodes.items())}), "
        f"{edges} edges counting both directions ({edges // 2} forward)"
    )


def random_patients(kg: KnowledgeGraph, n_classes: int, size: int, seed: int = 0) -> list[PatientEvidence]:
    """A pool of random patients; about 15% lack one modality (as in the demo cohort)."""
    rng = np.random.default_rng(seed)
    n_genes, n_concepts = kg.num_nodes(Node.GENE), kg.num_nodes(Node.CONCEPT)
    pool = []
    for _ in range(size):
        vec = {m: rng.standard_normal(d).astype(np.float32) for m, d in DIMS.items()}
        if rng.random() < 0.15:
            vec[str(rng.choice(list(DIMS)))] = None
        pool.append(
            PatientEvidence(
                label=int(rng.integers(n_classes)),
                **vec,
                image_concepts=[int(rng.integers(n_concepts))] if vec["image"] is not None else [],
                note_concepts=rng.choice(n_concepts, 3, replace=False).tolist() if vec["note"] is not None else [],
                omics_genes=rng.choice(n_genes, 25, replace=False).tolist() if vec["omics"] is not None else [],
            )
        )
    return pool


class Trainer:
    """One model with its optimiser and collate function, as the fit loop holds them."""

    def __init__(self, name: str, hetero, class_nodes: torch.Tensor, spec: TrainingSpec) -> None:
        torch.manual_seed(0)
        self.model = build_model(name, DIMS, len(class_nodes), hetero, class_nodes, spec.hidden, spec.dropout).train()
        graph_batches(self.model, spec)  # cut and sampled as fit() sets them up
        self.opt = FusionTask(self.model, spec, len(class_nodes)).configure_optimizers()  # the fit loop's AdamW
        self.collate = collate(hetero, DIMS, modality_dropout=spec.modality_dropout, seed=0)
        self.total: list[float] = []
        self.collating: list[float] = []

    def step(self, items: list[PatientEvidence], record: bool) -> None:
        t0 = time.perf_counter()
        batch = self.collate(items)
        t1 = time.perf_counter()
        loss = F.cross_entropy(self.model(batch), batch["patient"].y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        t2 = time.perf_counter()
        if record:
            self.total.append((t2 - t0) * 1e3)
            self.collating.append((t1 - t0) * 1e3)

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def run_steps(trainers: dict[str, Trainer], pool, batch_size: int, steps: int) -> None:
    """Round-robin: each round draws one batch and steps every model on it, so load drift on a shared machine
    hits all models alike."""
    rng = np.random.default_rng(1)
    for step in range(WARMUP + steps):
        items = [pool[i] for i in rng.choice(len(pool), batch_size, replace=False)]
        for trainer in trainers.values():
            trainer.step(items, record=step >= WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients-per-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads: {torch.get_num_threads()}  batch: {args.patients_per_batch} patients  "
        f"steps: {args.steps} timed after {WARMUP} warm-up"
    )
    kg, hetero, class_nodes = knowledge()
    print(graph_summary(hetero))
    pool = random_patients(kg, len(class_nodes), max(POOL, args.patients_per_batch))
    trainers = {name: Trainer(name, hetero, class_nodes, TrainingSpec()) for name in MODEL_NAMES}
    run_steps(trainers, pool, args.patients_per_batch, args.steps)
    base = statistics.median(trainers["concat"].total)
    print(f"\n{'model':<8}{'params':>10}{'step ms':>10}{'collate ms':>12}{'rest ms':>10}{'vs concat':>11}{'min ms':>9}")
    for name, t in trainers.items():
        ms, coll = statistics.median(t.total), statistics.median(t.collating)
        row = f"{name:<8}{t.params():>10,}{ms:>10.1f}{coll:>12.1f}{ms - coll:>10.1f}{ms / base:>10.2f}x"
        print(f"{row}{min(t.total):>9.1f}")
    print("(medians except 'min ms'; 'rest' = forward + loss + backward + AdamW step; baseline: concat)")


if __name__ == "__main__":
    main()
