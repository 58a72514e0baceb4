"""Encode and train throughput (patients/s) with one process and with two (torchrun, DDP on gloo), as a ratio.

Writes a demo cohort into a temporary folder and two workflows on it that differ only in the process count
(``training.strategy: ddp, devices: 2`` for the second), each with its own workdir, cache and MLflow store, so
both encode from a cold cache. Each is run by this same script in ``--worker`` mode: once as a plain process,
once under ``python -m torch.distributed.run --standalone --nproc_per_node 2``. A worker imports the heavy
libraries first, runs ingest (rank 0), then times the encode stage and the train stage between barriers, so
the times cover the stages' work, not interpreter start-up; rank 0 writes them to a JSON file.

* encode: patients encoded per second (cold cache: every series and note goes through its network);
* train: patient-epochs per second over every model (train patients x epochs run), the whole train stage
  (fits plus rank 0's MLflow logging and bundle writing).

Every process runs one torch thread (``OMP_NUM_THREADS=1``, torchrun's default), so the ratio compares one
process with two. It also prints the CPU seconds of all ranks together: on a machine other work keeps busy, two
processes win a larger share of the cores than one, so the wall-time ratio can exceed the process count; the
CPU-seconds ratio (the cost of splitting the work) does not depend on that. Plain prints, no assertions.

    .venv/bin/python benchmarks/scale.py [--patients 24] [--epochs 4] [--repeats 1] [--accelerator cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MODELS = ["concat", "kg_gnn"]


def write_workflow(root: Path, dataset: Path, name: str, epochs: int, training: dict) -> Path:
    spec = {
        "name": name,
        "dataset": str(dataset),
        "workdir": str(root / name),
        "models": MODELS,
        "primary_model": "kg_gnn",
        "encoders": {"image": {"spatial_size": [16, 64, 64]}},
        "training": {"max_epochs": epochs, "patience": epochs, "dropout": 0.0, "modality_dropout": 0.0, **training},
        "tracking": {"uri": f"sqlite:///{root / name / 'mlflow.db'}", "experiment": name, "registered_model": name},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def worker(workflow: Path, out: Path) -> None:
    """One rank: ingest (rank 0), then the encode and train stages timed between barriers."""
    import logging

    import mlflow  # noqa: F401
    import monai.networks.nets  # noqa: F401  (imports paid before timing)
    import pytorch_lightning  # noqa: F401
    import torch_geometric  # noqa: F401
    import transformers  # noqa: F401

    from clinicmm.config import load_workflow
    from clinicmm.keys import Split
    from clinicmm.pipeline import distributed
    from clinicmm.pipeline import stages as stages_
    from clinicmm.tracking.setup import configure, experiment_id
    from clinicmm.training.data import TrainingData

    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    wf = load_workflow(workflow)
    uri = configure(wf.tracking)
    distributed.init(wf.training)
    if distributed.is_zero():
        stages_.ingest_stage(wf)
        experiment_id(wf.tracking.experiment, uri)  # creating the sqlite store's tables is not training
    distributed.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    encoded = stages_.encode_stage(wf)
    distributed.barrier()
    t1, c1 = time.perf_counter(), time.process_time()
    results = stages_.train_stage(wf, progress=False)
    distributed.barrier()
    t2, c2 = time.perf_counter(), time.process_time()
    cpu = all_ranks((c1 - c0, c2 - c1))  # CPU seconds of every rank: the work, whatever else loads the machine
    if distributed.is_zero():
        n_train = len(TrainingData(wf).rows(Split.TRAIN)[0])
        epochs = sum(r["epochs"] for r in results.values())
        out.write_text(
            json.dumps(
                {
                    "processes": distributed.world_size(),
                    "patients": len(encoded.patients),
                    "encode_s": t1 - t0,
                    "train_s": t2 - t1,
                    "patient_epochs": n_train * epochs,
                    "encode_cpu_s": sum(c[0] for c in cpu),
                    "train_cpu_s": sum(c[1] for c in cpu),
                }
            )
        )


def all_ranks(value) -> list:
    import torch.distributed as dist

    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def launch(workflow: Path, out: Path, processes: int) -> dict:
    me = [str(Path(__file__).resolve()), "--worker", str(workflow), "--out", str(out)]
    prefix = (
        [sys.executable]
        if processes == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    )
    # one torch thread per process in both runs (torchrun's own default): the ratio compares process counts,
    # not a multi-threaded process spinning on a busy machine against single-threaded ones
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(prefix + me, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{processes}-process run failed:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=24, help="demo cohort size (default 24)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model, no early stop (default 4)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate 1- and 2-process runs N times, keep each one's fastest"
    )
    parser.add_argument("--accelerator", default="cpu", help="training.accelerator (gpu: one and two GPUs)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.out)

    from clinicmm.demo.generator import generate_demo

    with tempfile.TemporaryDirectory(prefix="clinicmm-scale-") as tmp:
        root = Path(tmp)
        dataset = generate_demo(root / "demo", patients=args.patients, seed=0, slices=16, size=64)
        hw = {"accelerator": args.accelerator}
        configs = [(1, hw)]
        if args.accelerator == "cpu" or gpus() >= 2:
            configs.append((2, hw | {"strategy": "ddp", "devices": 2}))
        runs: dict[int, list[dict]] = {n: [] for n, _ in configs}
        for i in range(args.repeats):  # alternating, so a burst of other work on the machine hits both alike
            for n, training in configs:
                name = f"p{n}_{i}"  # a fresh workdir and cache each time: every encode is cold
                runs[n].append(
                    launch(write_workflow(root, dataset, name, args.epochs, training), root / f"{name}.json", n)
                )
        rows = [
            {**r[0], **{k: min(x[k] for x in r) for k in ("encode_s", "train_s", "encode_cpu_s", "train_cpu_s")}}
            for r in runs.values()
        ]
        one = rows[0]
    kind = "GPU" if args.accelerator != "cpu" else "CPU"
    print(
        f"{args.patients} patients, models {', '.join(MODELS)}, {args.epochs} epochs each; training on {kind}; "
        f"os.cpu_count() = {os.cpu_count()}"
    )
    print(
        f"\n{'processes':<11}{'encode s':>9}{'encode pat/s':>14}{'CPU s':>7}{'train s':>9}{'train pat-epochs/s':>20}{'CPU s':>7}"
    )
    for r in rows:
        print(
            f"{r['processes']:<11}{r['encode_s']:>9.1f}{r['patients'] / r['encode_s']:>14.2f}{r['encode_cpu_s']:>7.1f}"
            f"{r['train_s']:>9.1f}{r['patient_epochs'] / r['train_s']:>20.1f}{r['train_cpu_s']:>7.1f}"
        )
    if len(rows) == 2:
        two = rows[1]
        print(
            f"\n2 / 1 process throughput: encode {one['encode_s'] / two['encode_s']:.2f}x, "
            f"train {one['train_s'] / two['train_s']:.2f}x"
        )
        print(
            f"2 / 1 process CPU seconds (all ranks; above 1: the overhead of splitting): encode "
            f"{two['encode_cpu_s'] / one['encode_cpu_s']:.2f}x, train {two['train_cpu_s'] / one['train_cpu_s']:.2f}x"
        )
    else:
        print("\n(one GPU: no two-process row; encoders run on CPU, only training uses the GPU)")


def gpus() -> int:
    import torch

    return torch.cuda.device_count()


if __name__ == "__main__":
    main()
