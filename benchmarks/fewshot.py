"""Few-shot cancer types: recall of a type left with 3 (``--shots``) training patients, graph models vs concat.

Writes a demo cohort (``generate_demo``, small images) into a working folder, with the demo's graph edges in the
workflow's ``knowledge:`` list as in ``workflows/demo.yaml``, ingests and encodes it with the workflow's own stages
(real DICOM through MONAI, notes through the shipped MiniLM), then, per repeat, keeps only 3
(``--shots``) randomly chosen training patients of one type (``--type``, default LUSC) and drops that type from the validation
split too (early stopping sees none of it). The rest of the cohort and the test split are unchanged. Trained on
that: ``concat`` (the baseline), ``kg_gnn`` with cancer-type nodes initialised from the text encoder's embedding of
each type's name and definition (``training.class_init: text``, the default), ``kg_gnn`` with random
class nodes, ``kg_gnn`` with its genes, pathways and concepts started from the graph's structure
(``training.node_init: graph``), the knowledge-pooled ``kg_pathway`` and, closed form on train + val as compare fits them, ``logreg``
and ``kg_logreg``; all with ``TrainingSpec`` defaults and the same seed per repeat. Prints the few-shot type's test recall
and the test macro-F1 over all types, per repeat and on average. A rerun reuses the encoded cohort. No assertions.

    .venv/bin/python benchmarks/fewshot.py [--patients 240] [--type LUSC] [--repeats 10] [--shots 3] [--seed 2] [--workdir /tmp/...] [--runs concat,kg_pathway] [--offset none]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from clinicmm.config import TrainingSpec, load_workflow
from clinicmm.keys import Split
from clinicmm.pipeline import registry as stages

RUNS = {  # name -> (model, overrides of the TrainingSpec defaults)
    "concat": ("concat", {}),
    "kg_gnn text init": ("kg_gnn", {}),  # class_init: text, the default
    "kg_gnn random init": ("kg_gnn", {"class_init": "random"}),
    "kg_gnn graph nodes": ("kg_gnn", {"node_init": "graph"}),  # genes, pathways, concepts from the graph's structure
    "kg_gnn no gene sets": ("kg_gnn", {"gene_set_input": False}),  # without the read-in of the pooled gene sets
    "kg_rgcn": ("kg_rgcn", {}),
    "kg_rgcn no gene sets": ("kg_rgcn", {"gene_set_input": False}),
    "kg_pathway": ("kg_pathway", {}),  # concat + the omics pooled over the graph's gene sets
    "logreg": ("logreg", {}),
    "kg_logreg": ("kg_logreg", {}),  # logreg + the pooled gene-set view
}


def workflow(folder: Path, patients: int, seed: int):
    """The demo cohort and a workflow over it (created once; later runs reuse the encoded cohort)."""
    from clinicmm.demo.generator import EDGES, generate_demo

    dataset = folder / "cohort" / "dataset.yaml"
    if not dataset.is_file() or not (folder / "cohort" / EDGES).is_file():  # a cohort written before demo_edges.tsv
        generate_demo(folder / "cohort", patients=patients, seed=seed, slices=8, size=32)
    spec = {
        "name": "fewshot",
        "dataset": str(dataset),
        "workdir": str(folder / "work"),
        "knowledge": [str(folder / "cohort" / EDGES)],  # the demo's own gene edges, as workflows/demo.yaml adds them
        "models": ["concat", "kg_gnn", "kg_pathway", "logreg", "kg_logreg"],
        "encoders": {"image": {"spatial_size": [8, 32, 32]}},
        "tracking": {"uri": f"sqlite:///{folder}/mlruns/mlflow.db"},  # a store folder apart from work/ (the key)
    }
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_workflow(path)


def prepare(wf):
    from clinicmm.pipeline.stages import encode_stage, ingest_stage
    from clinicmm.training.data import TrainingData

    for name, fn in (("ingest", ingest_stage), ("encode", encode_stage)):
        if not stages.is_current(wf, name):
            fn(wf)
    return TrainingData(wf)


def few_shot_split(data, code: str, repeat: int, shots: int):
    """``(rows, labels)`` of train with only ``shots`` patients of ``code``, of val without it, and of test."""
    k = data.classes.index(code)
    rows, y = (np.asarray(v) for v in data.rows(Split.TRAIN))
    keep = set(np.random.default_rng(repeat).choice(np.flatnonzero(y == k), shots, replace=False).tolist())
    mask = np.array([label != k or i in keep for i, label in enumerate(y)], dtype=bool)
    val_rows, val_y = (np.asarray(v) for v in data.rows(Split.VAL))
    test_rows, test_y = (np.asarray(v) for v in data.rows(Split.TEST))
    return (rows[mask], y[mask]), (val_rows[val_y != k], val_y[val_y != k]), (test_rows, test_y)


def run_one(
    data, model_name: str, overrides: dict, train, val, test, k: int, seed: int, offset: str = "logreg"
) -> tuple[float, float]:
    """Test recall of class ``k`` and test macro-F1 of one model trained on the few-shot split, through the one fit
    path (``fit_model``: the default recipe, including ``training.offset``)."""
    from sklearn.metrics import f1_score, recall_score

    from clinicmm.fusion.registry import CLOSED_FORM
    from clinicmm.training.data import to_evidence
    from clinicmm.training.fit import fit_model, predict_proba

    spec = TrainingSpec(seed=seed, offset=offset, **overrides)
    if model_name in CLOSED_FORM:  # logreg / kg_logreg: C chosen on train + val, as compare fits them
        train = tuple(np.concatenate(pair) for pair in zip(train, val))
    fitted = fit_model(model_name, data, train, val, spec, progress=False)
    items = to_evidence(data.encoded, test[0], test[1], data.kg, fitted.scaler)
    pred = predict_proba(fitted.model, items, fitted.hetero, fitted.dims).argmax(1)
    return (
        float(recall_score(test[1], pred, labels=[k], average="macro", zero_division=0)),
        float(f1_score(test[1], pred, average="macro")),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=240)
    parser.add_argument("--type", default="LUSC", help="the cancer type left with --shots training patients")
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="different draws of the kept patients (8 test patients of the type per draw: fewer draws are noisy)",
    )
    parser.add_argument("--shots", type=int, default=3, help="training patients kept of --type (0: zero-shot)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/clinicmm-fewshot"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2, help="demo cohort seed (a new --workdir for another)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--offset", choices=["logreg", "none"], default="logreg", help="training.offset")
    args = parser.parse_args()
    runs = {name: RUNS[name] for name in args.runs.split(",")}
    if "concat" not in runs:
        parser.error("--runs must include concat (the baseline)")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    data = prepare(workflow(args.workdir, args.patients, args.seed))
    k = data.classes.index(args.type)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for repeat in range(args.repeats):
        train, val, test = few_shot_split(data, args.type, repeat, args.shots)
        print(
            f"repeat {repeat}: {len(train[0])} train ({args.shots} {args.type}), {len(val[0])} val (no {args.type}), "
            f"{len(test[0])} test ({int((test[1] == k).sum())} {args.type})",
            flush=True,
        )
        for name, (model_name, overrides) in runs.items():
            results[name].append(run_one(data, model_name, overrides, train, val, test, k, repeat, args.offset))
            recall, f1 = results[name][-1]
            print(f"  {name:<20} {args.type} recall {recall:.3f}   macro-F1 {f1:.3f}", flush=True)
    base = statistics.mean(r for r, _ in results["concat"])
    print(f"\n{'model':<20}{args.type + ' recall':>14}{'vs concat':>11}{'macro-F1':>10}   (mean of {args.repeats})")
    for name, rows in results.items():
        recall, f1 = statistics.mean(r for r, _ in rows), statistics.mean(f for _, f in rows)
        print(f"{name:<20}{recall:>14.3f}{recall - base:>+11.3f}{f1:>10.3f}")


if __name__ == "__main__":
    main()
