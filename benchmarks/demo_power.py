"""The demo target at more patients: graph models against concat on a larger demo cohort, same generative story.

On the 200-patient demo ``make demo`` writes, the graph models' gain over ``concat`` is a few points with a
paired 95% CI some ten points wide, so it cannot exclude 0 whatever the models do. This writes a demo cohort of
``--patients`` with the same generator (``clinicmm demo-data DIR --patients N --seed S``: nothing else changed),
runs ``clinicmm compare`` on it with ``workflows/demo.yaml``'s own encoders and training block, ``--models``, and
``compare.reference: concat``, so the table's last column is each model's paired difference to concat [95% CI,
1,000 resamples]; ``--knowledge-ablation`` also trains each graph model on a degree-preserving rewired graph and
prints real − rewired. The cohort and its encodings stay in ``--workdir`` (a second fold seed reuses them); the
compare outputs go to ``<workdir>/work/compare`` (overwritten by the next run). Plain prints, no assertions;
~35 minutes for 600 patients and the default models on 2 CPU cores.

    .venv/bin/python benchmarks/demo_power.py [--patients 600] [--seed 0] [--fold-seed 0]
        [--models concat,kg_gnn,kg_rgcn,kg_pathway,logreg,kg_logreg] [--knowledge-ablation]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (clinicmm demo-data --seed)")
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the stratified 5-fold split")
    parser.add_argument("--models", default="concat,kg_gnn,kg_rgcn,kg_pathway,logreg,kg_logreg")
    parser.add_argument("--workdir", type=Path, default=None, help="default .clinicmm/demo_power/<patients>_<seed>")
    parser.add_argument("--knowledge-ablation", action="store_true", help="each graph model also on a rewired graph")
    args = parser.parse_args()
    from clinicmm.config import load_workflow
    from clinicmm.demo.generator import generate_demo
    from clinicmm.pipeline.run import compare

    root = (args.workdir or REPO / ".clinicmm" / "demo_power" / f"{args.patients}_{args.seed}").resolve()
    data = root / "data"
    if not (data / "dataset.yaml").is_file():
        generate_demo(data, patients=args.patients, seed=args.seed)
    wf = yaml.safe_load((REPO / "workflows" / "demo.yaml").read_text())
    wf |= {
        "name": f"demo_power_{args.patients}",
        "dataset": str(data / "dataset.yaml"),
        "workdir": str(root / "work"),
        "knowledge": [str(data / "demo_edges.tsv")],
        "models": args.models.split(","),
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": "demo-power"},
        "compare": wf["compare"]
        | {"seed": args.fold_seed, "reference": "concat", "knowledge_ablation": args.knowledge_ablation},
    }
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    (root / "wf.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    result = compare(load_workflow(root / "wf.yaml"), progress=False)
    print(f"\n## demo, {args.patients} patients (generator seed {args.seed}), 5-fold seed {args.fold_seed}")
    print((result.out / "table.md").read_text())
    if args.knowledge_ablation:
        print((result.out / "knowledge_ablation.md").read_text())


if __name__ == "__main__":
    main()
