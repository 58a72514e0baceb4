"""Serving cost of the registered model against the bare networks, and a load test of ``mlflow models serve``.

In one process, on the same inputs: a demo pyfunc (untrained bundle: MONAI ResNet-10 on 32 x 64 x 64 volumes, the
shipped MiniLM, a seeded ``kg_gnn`` by default) saved as ``register`` logs it, then

* **load**: ``mlflow.pyfunc.load_model`` in this process (torch and friends already imported) and in a fresh
  Python process (imports included), and the first ``predict`` after load (encoders built lazily);
* **warm cost per patient**, median of ``--repeats``: ``predict`` of one patient per call (``single``) and of
  ``--batch`` patients in one call (``batched``, per patient), each with and without explanations
  (``params={"explain": False}``), as a ratio of the **bare forwards** on the same inputs: ResNet-10 on the same
  preprocessed volume plus MiniLM (tokenizer + model, mean pooling) on the same notes, measured interleaved with
  the served calls so load on the machine hits both alike. The served call also reads the DICOM files, resamples
  them and fuses; the bare forwards do not;
* ``--busy N``: N spinning processes for the duration (a shared server: run it with 0 and with the core count);
  ``--threads N`` sets ``$CLINICMM_THREADS`` (the served model's torch threads, which the bare forwards share);
* ``--load``: ``mlflow models serve`` of the model on 127.0.0.1 (``--workers``), hit by ``--concurrency`` client
  threads for ``--seconds``: p50 / p95 latency, throughput and errors, with the server's worker count.

    .venv/bin/python benchmarks/serve.py [--patients 8] [--repeats 5] [--busy 0] [--threads 0] [--fusion kg_gnn]
    .venv/bin/python benchmarks/serve.py --load [--workers 1] [--concurrency 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))  # the DICOM writers of the tests

NOTE = (
    "CLINICAL HISTORY: {age}-year-old with a {size} cm mass found on imaging. IMPRESSION: suspicious lesion, "
    "biopsy recommended. FINAL DIAGNOSIS: invasive adenocarcinoma, moderately differentiated, margins clear. "
    "Lymph nodes: {nodes} of 12 positive. Immunohistochemistry: TTF-1 positive, CK7 positive, CK20 negative. "
    "Smoking history of {age} pack-years. Family history noncontributory. Plan: staging CT and oncology review."
)


def _spin() -> None:
    while True:
        pass


def write_inputs(base: Path, patients: int) -> list[dict]:
    """``patients`` rows of model input: a 32 x 64 x 64 CT series (DICOM files) and two notes each."""
    import numpy as np
    from dicom_fixtures import write_series

    rng = np.random.default_rng(0)
    rows = []
    for p in range(patients):
        volume = rng.normal(40.0, 30.0, (32, 64, 64)).astype(np.float32)
        files = write_series(base / "data" / f"p{p}", volume, patient=f"P{p}", body_part="CHEST")
        notes = [NOTE.format(age=40 + p, size=1 + p % 5, nodes=p % 4), NOTE.format(age=70 - p, size=3, nodes=1)]
        rows.append({"patient_id": f"bench-{p}", "dicom_files": json.dumps([str(f) for f in files]),
                     "notes": json.dumps(notes)})  # fmt: skip
    return rows


def save_model(base: Path, fusion: str) -> Path:
    """The clinicmm pyfunc of an untrained bundle (default encoders), saved as ``register`` logs it."""
    import mlflow.pyfunc
    import torch

    from clinicmm.config import EncodersSpec
    from clinicmm.encode.imaging.encoder import ImageEncoder, feature_dim
    from clinicmm.encode.text.encoder import TextEncoder
    from clinicmm.knowledge.graph import KnowledgeGraph
    from clinicmm.serve.pyfunc import input_example, signature
    from clinicmm.serve.register import MODEL_CODE
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import Standardizer

    encoders = EncodersSpec()
    dims = {"image": feature_dim(encoders.image), "note": 384, "omics": 4}
    scaler = Standardizer({m: [0.0] * d for m, d in dims.items()}, {m: [1.0] * d for m, d in dims.items()})
    prints = {"image": ImageEncoder(encoders.image).fingerprint(), "note": TextEncoder(encoders.text).fingerprint()}
    classes = ["LUAD", "BRCA", "COAD", "KIRC"]
    kg = KnowledgeGraph.default()
    kg.ensure_nodes("cancer_type", classes)
    bundle = ModelBundle(fusion, classes, dims, 32, 0.1, encoders, prints, scaler, {}, kg)
    torch.manual_seed(0)
    bundle.state_dict = dict(bundle.build_model(load_weights=False).state_dict())
    folder = bundle.save(base / "bundle")
    path = base / "model"
    mlflow.pyfunc.save_model(
        str(path),
        python_model=str(MODEL_CODE),
        artifacts={"bundle": str(folder)},
        signature=signature(classes),
        input_example=input_example(),
        model_config={"data_roots": [str(base / "data")]},
    )
    return path


class Bare:
    """The bare forwards of the same inputs: ResNet-10 on the preprocessed volumes, MiniLM on the notes."""

    def __init__(self, rows: list[dict]):
        import torch

        from clinicmm.config import EncodersSpec
        from clinicmm.encode.imaging.encoder import ImageEncoder
        from clinicmm.encode.text.encoder import TextEncoder

        spec = EncodersSpec()
        image, text = ImageEncoder(spec.image), TextEncoder(spec.text)
        self.volumes = [image.preprocess(json.loads(r["dicom_files"])) for r in rows]
        self.notes = [json.loads(r["notes"]) for r in rows]
        self.network = image.network.eval()
        self.tokenizer, self.model = text._load()
        self.max_length = spec.text.max_length
        self.torch = torch

    def __call__(self, which: list[int]) -> None:
        torch = self.torch
        with torch.inference_mode():
            self.network(torch.stack([self.volumes[i] for i in which]))
            texts = [t for i in which for t in self.notes[i]]
            batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt")  # fmt: skip
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            (hidden * mask).sum(1) / mask.sum(1)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _fresh_load(path: Path) -> tuple[float, float]:
    """(import mlflow.pyfunc, load_model) seconds in a fresh Python process."""
    code = (
        "import time; t = time.perf_counter(); import mlflow.pyfunc; i = time.perf_counter() - t; "
        f"t = time.perf_counter(); mlflow.pyfunc.load_model({str(path)!r}); print(i, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, loaded = out.stdout.strip().splitlines()[-1].split()
    return float(imported), float(loaded)


def in_process(args, base: Path, rows: list[dict], path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    import torch

    bare = Bare(rows)
    t_load = _timed(lambda: setattr(in_process, "model", mlflow.pyfunc.load_model(str(path))))
    model = in_process.model
    frame = pd.DataFrame(rows)
    t_first = _timed(lambda: model.predict(frame.iloc[:1]))
    t_import, t_fresh = _fresh_load(path)
    print(f"threads: torch {torch.get_num_threads()} (affinity {len(os.sched_getaffinity(0))}), busy {args.busy}")
    print(f"load_model: {t_load:.2f} s in process (imports done); fresh process: import mlflow.pyfunc "
          f"{t_import:.2f} s, then load_model {t_fresh:.2f} s (torch, torch_geometric... imported in it); "
          f"first predict after load: {t_first:.2f} s")  # fmt: skip

    n = len(rows)
    for i in range(n):  # warm every input path once
        model.predict(frame.iloc[[i]])
        bare([i])
    cases = {
        "single": [([i], frame.iloc[[i]]) for i in range(n)],
        f"batched ({n})": [(list(range(n)), frame)],
    }
    for label, calls in cases.items():
        served = {True: [], False: []}
        base_t = []
        for _ in range(args.repeats):  # interleaved: served (explain on / off) and bare on the same inputs
            for which, part in calls:
                base_t.append(_timed(lambda: bare(which)) / len(which))
                for explain in (True, False):
                    t = _timed(lambda: model.predict(part, params={"explain": explain}))
                    served[explain].append(t / len(which))
        b = statistics.median(base_t)
        on, off = statistics.median(served[True]), statistics.median(served[False])
        print(f"{label:>12}: bare {b * 1000:7.1f} ms/patient | served {on * 1000:7.1f} ms ({on / b:.2f}x), "
              f"explain off {off * 1000:7.1f} ms ({off / b:.2f}x)")  # fmt: skip
    out = model.predict(frame.iloc[:1])
    print(f"check: status {out['status'].iloc[0]!r}, modalities {out['modalities'].iloc[0]!r}")


# ------------------------------------------------------------------------------------------------ load test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            payload = json.loads(r.read())
            statuses = [p.get("status") for p in payload.get("predictions", [])]
            return r.status if statuses and all(s == "scored" for s in statuses) else 599
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 598


def load_test(args, base: Path, rows: list[dict], path: Path) -> None:
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # uvicorn, which mlflow runs by name
    env = dict(os.environ, CLINICMM_DATA_ROOTS=str(base / "data"), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    log = open(base / "serve.log", "w")  # noqa: SIM115 -- closed below
    cmd = [mlflow, "models", "serve", "-m", str(path), "--env-manager", "local", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(args.workers)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    log.flush()
                    tail = (base / "serve.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the model server did not start:\n{tail}") from None
                time.sleep(0.5)
        print(f"server: {args.workers} worker(s), /ping after {time.perf_counter() - t0:.1f} s")
        bodies = [
            json.dumps({"dataframe_records": [r], "params": {"explain": not args.no_explain}}).encode() for r in rows
        ]
        for b in bodies:  # warm every worker's encoders
            _post(f"{url}/invocations", b)
        latencies, codes, lock = [], [], threading.Lock()
        stop = time.perf_counter() + args.seconds

        def client(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                t = time.perf_counter()
                code = _post(f"{url}/invocations", bodies[i % len(bodies)])
                with lock:
                    latencies.append(time.perf_counter() - t)
                    codes.append(code)
                i += args.concurrency

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        errors = sum(c != 200 for c in codes)
        print(f"load: concurrency {args.concurrency}, {len(latencies)} requests of one patient in {took:.1f} s: "
              f"{len(latencies) / took:.2f} req/s, p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {q[18] * 1000:.0f} ms, errors {errors}")  # fmt: skip
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8, help="patients per batched call (and inputs in all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes to run alongside (a busy server)")
    parser.add_argument("--fusion", default="kg_gnn", help="the fusion model of the demo bundle")
    parser.add_argument("--threads", type=int, default=0, help="set $CLINICMM_THREADS (0: the model's default)")
    parser.add_argument("--load", action="store_true", help="load-test `mlflow models serve` instead")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--no-explain", action="store_true", help="load test: requests with explain false")
    args = parser.parse_args()
    if args.threads:
        os.environ["CLINICMM_THREADS"] = str(args.threads)

    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            rows = write_inputs(base, args.patients)
            path = save_model(base, args.fusion)
            (load_test if args.load else in_process)(args, base, rows, path)
    finally:
        for s in spinners:
            s.terminate()


if __name__ == "__main__":
    main()
