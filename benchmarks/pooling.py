"""Gene-set pooling (``GeneSetPooling``, what kg_pathway, kg_logreg and the graph networks' read-in compute every
batch) against the former forward, in one process on the same inputs.

The former forward gathered every (feature, set) membership pair and added them one by one into their set. A
copy-number arm is a member of a set once per gene of the set it covers, so an arm-level cohort has ~115k pairs over
~35k distinct ones (41 arms, Reactome's sets); the pooling now keeps each distinct pair once, weighted by its count,
and is a dense (features x sets) product when that matrix is small and well filled. Two designs on the shipped
graph with every human Reactome pathway (``KnowledgeGraph.default('human')``): 41 arms (HGNC's locations) plus 2
mutation flags, as a TCGA arm-level cohort; and 1,000 genes' expression plus 200 mutation flags, as a gene-level
one. Prints the time per batch of 64 patients (best of ``--repeats`` rounds of 20 calls), the ratio, and each
result's largest difference from the same sums in float64. Plain prints, no assertions.

    .venv/bin/python benchmarks/pooling.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def former(index: dict, n_expression: int, omics: torch.Tensor) -> torch.Tensor:
    """The forward before: a gather and an index-add over every membership pair (in the dtype of ``omics``)."""
    from clinicmm.fusion.models.kg_pathway import RELU_MEAN, RELU_SD

    feature, sets, n = index["feature"], index["set"], int(index["num_sets"])
    expr = feature < n_expression
    values = omics[:, feature]
    measured = omics.new_zeros(len(omics), n).index_add_(1, sets[expr], (values[:, expr] != 0).to(omics))
    m = measured.clamp_min(1.0)
    out = []
    for part in (values.clamp_min(0.0), (-values).clamp_min(0.0)):
        total = omics.new_zeros(len(omics), n).index_add_(1, sets[expr], part[:, expr])
        out.append(torch.where(measured > 0, (total - RELU_MEAN * m) / (RELU_SD * m.sqrt()), 0.0))
    mutated = omics.new_zeros(len(omics), n).index_add_(1, sets[~expr], values[:, ~expr].clamp(0.0, 1.0))
    out.append(mutated / torch.bincount(sets[~expr], minlength=n).to(omics).clamp_min(1.0).sqrt())
    return torch.cat(out, dim=1)


def designs(kg) -> dict[str, tuple[list, int]]:
    from clinicmm.ingest.cytobands import GeneLocations

    locations, rng = GeneLocations.shipped(), np.random.default_rng(0)
    graph_genes = kg.names("gene")
    index = {g: i for i, g in enumerate(graph_genes)}
    arms = []
    for chromosome in [*map(str, range(1, 23)), "X"]:
        for arm in ("p", "q"):
            members = [index[g] for g in locations.genes_in(f"{chromosome}{arm}") if g in index]
            if members:
                arms.append(members)
    flags = [index[g] for g in ("TP53", "KRAS")]
    genes = rng.choice(len(graph_genes), 1200, replace=False).tolist()
    return {
        f"{len(arms)} arms + 2 mutation flags": ([*arms, *flags], len(arms)),
        "1,000 genes + 200 mutation flags": (genes, 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from clinicmm.fusion.models.kg_pathway import GeneSetPooling, gene_sets
    from clinicmm.knowledge.graph import KnowledgeGraph

    kg = KnowledgeGraph.default("human")
    hetero = kg.to_hetero()
    for name, (features, n_expression) in designs(kg).items():
        pool = GeneSetPooling(hetero, features, n_expression, len(features))
        index = gene_sets(hetero, features, n_expression)
        distinct = len(torch.unique(torch.stack([index["feature"], index["set"]]), dim=1).T)
        generator = torch.Generator().manual_seed(0)
        omics = torch.randn(64, len(features), generator=generator)
        omics[:, n_expression:] = (omics[:, n_expression:] > 1).float()
        times = {"former": [], "now": []}
        for _ in range(args.repeats):  # they take turns, so a change in the machine's load hits each alike
            for which, call in (("former", lambda: former(index, n_expression, omics)), ("now", lambda: pool(omics))):
                start = time.perf_counter()
                for _ in range(20):
                    call()
                times[which].append((time.perf_counter() - start) / 20 * 1000)
        truth = former(index, n_expression, omics.double())
        gaps = {k: (f(omics).double() - truth).abs().max().item() for k, f in
                (("former", lambda x: former(index, n_expression, x)), ("now", pool))}  # fmt: skip
        way = "dense product" if pool.dense is not None else "distinct pairs"
        print(f"{name}: {pool.num_sets} sets, {index['feature'].numel():,} pairs ({distinct:,} distinct); now: {way}")
        print(f"  former {min(times['former']):7.2f} ms, now {min(times['now']):7.2f} ms per batch of 64: "
              f"{min(times['former']) / min(times['now']):.1f}x; largest difference from float64: former "
              f"{gaps['former']:.1e}, now {gaps['now']:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
