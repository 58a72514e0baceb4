"""Serving cost of the registered model against the bare networks, and a load test of ``mlflow models serve``.

In one process, on the same inputs: a demo pyfunc (untrained bundle: MONAI ResNet-10 on 32 x 64 x 64 volumes, the
shipped MiniLM, a seeded ``kg_gnn`` by default, ``--ensemble N`` of them) saved by
``clinicmm.serve.register.save_served_model``, exactly as the register stage logs it (clinicmm as code_paths,
pinned requirements, the multimodal input example), then

* **load**: in a fresh Python process, ``import mlflow.pyfunc``, ``mlflow.pyfunc.load_model`` (which returns once the
  model's light part is loaded) and the first ``predict`` (which waits for the background build: torch,
  torch_geometric, MONAI, MiniLM, the fusion network); then the same two in this process (imports done);
* **warm cost per patient**, median of ``--repeats``: ``predict`` of one patient per call (``single``) and of
  ``--patients`` patients in one call (``batched``, per patient), each with ``params={"explain": True}`` and
  without (the default), as a ratio of the **bare forwards** on the same inputs: ResNet-10 on the same
  preprocessed volume plus MiniLM (tokenizer + model, mean pooling) on the same notes, measured interleaved with
  the served calls so load on the machine hits both alike. The served call also reads the DICOM files, resamples
  them and runs the fusion network; the bare forwards do not. A second line splits the call without explanation
  into its stages (DICOM read + resample, image network, text encoder, fusion network) and the serving layer
  (the rest: parsing, concept matching, result frame, strict JSON, MLflow's schema check);
* ``--busy N``: N spinning processes for the duration (a shared server: run it with 0 and with the core count);
  ``--threads N`` sets ``$CLINICMM_THREADS`` (the served model's torch threads, which the bare forwards share);
* ``--load``: ``mlflow models serve`` of the model on 127.0.0.1 with ``--workers`` W, each with
  ``CLINICMM_THREADS`` = cores / W (or ``--threads``), every worker warmed, then one closed-loop client for
  ``--single-seconds`` (the single-patient rate) and ``--concurrency`` clients for ``--seconds``: p50 / p95
  latency, throughput, errors (any answer but 200 with every row scored), and throughput against
  W x the single-patient rate. One full patient (CT series + 2 notes) per request; ``--explain`` asks for
  explanations.

    .venv/bin/python benchmarks/serve.py [--patients 8] [--repeats 5] [--busy 0] [--threads 0] [--fusion kg_gnn]
        [--ensemble 1]
    .venv/bin/python benchmarks/serve.py --load [--workers 1] [--concurrency 8] [--seconds 30] [--explain]
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
from concurrent.futures import ThreadPoolExecutor
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


def save_model(base: Path, fusion: str, ensemble: int = 1) -> Path:
    """The clinicmm pyfunc of an untrained bundle (default encoders), saved as ``register`` logs it."""
    import torch

    from clinicmm.config import EncodersSpec
    from clinicmm.encode.imaging.encoder import ImageEncoder, feature_dim
    from clinicmm.encode.text.encoder import TextEncoder
    from clinicmm.knowledge.graph import KnowledgeGraph
    from clinicmm.serve.register import save_served_model
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import Standardizer

    encoders = EncodersSpec()
    dims = {"image": feature_dim(encoders.image), "note": 384, "omics": 4}
    scaler = Standardizer({m: [0.0] * d for m, d in dims.items()}, {m: [1.0] * d for m, d in dims.items()})
    prints = {"image": ImageEncoder(encoders.image).fingerprint(), "note": TextEncoder(encoders.text).fingerprint()}
    classes = ["LUAD", "BRCA", "COAD", "KIRC"]
    kg = KnowledgeGraph.default()
    kg.ensure_nodes("cancer_type", classes)
    bundle = ModelBundle(fusion, classes, dims, 32, 0.1, encoders, prints, scaler, {}, kg, ensemble=ensemble)
    torch.manual_seed(0)
    bundle.state_dict = dict(bundle.build_model(load_weights=False).state_dict())
    folder = bundle.save(base / "bundle")
    return save_served_model(folder, [str(base / "data")], base / "model")  # as register logs it, clinicmm included


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


FRESH = """
import json, sys, time
import pandas as pd
t = time.perf_counter(); import mlflow.pyfunc; imported = time.perf_counter() - t
t = time.perf_counter(); model = mlflow.pyfunc.load_model(sys.argv[1]); loaded = time.perf_counter() - t
row = pd.DataFrame([json.loads(sys.argv[2])])
t = time.perf_counter(); out = model.predict(row); first = time.perf_counter() - t
assert out["status"].iloc[0] == "scored", out["reason"].iloc[0]
print(imported, loaded, first)
"""


def _fresh_load(path: Path, row: dict, data: Path) -> tuple[float, float, float]:
    """(import mlflow.pyfunc, load_model, first predict of ``row``) seconds in a fresh Python process: the model
    builds its parts in the background after load_model returns, so the first predict pays what is left of it."""
    env = dict(os.environ, CLINICMM_DATA_ROOTS=str(data))
    cmd = [sys.executable, "-c", FRESH, str(path), json.dumps(row)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    imported, loaded, first = out.stdout.strip().splitlines()[-1].split()
    return float(imported), float(loaded), float(first)


class Stages:
    """Time spent in the served call's stages (wrapped in place): DICOM read + resampling, the image network, the
    text encoder (tokenizer + MiniLM), the fusion network, the explanations; the rest is the serving layer."""

    NAMES = ("read+resample", "image net", "text", "fusion", "explain")

    def __init__(self) -> None:
        from clinicmm.encode.imaging.encoder import ImageEncoder
        from clinicmm.encode.text.encoder import TextEncoder
        from clinicmm.serve import explain
        from clinicmm.training import fit

        self.spent = dict.fromkeys(self.NAMES, 0.0)
        for owner, name, stage in (
            (ImageEncoder, "preprocess", "read+resample"),
            (ImageEncoder, "_forward", "image net"),
            (TextEncoder, "encode", "text"),
            (fit, "predict_proba", "fusion"),
            (explain, "add_explanations", "explain"),
        ):
            self._wrap(owner, name, stage)

    def _wrap(self, owner, name: str, stage: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.spent[stage] += time.perf_counter() - t

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.spent = dict.fromkeys(self.NAMES, 0.0)


def in_process(args, base: Path, rows: list[dict], path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    import torch

    t_import, t_fresh, t_fresh_first = _fresh_load(path, rows[0], base / "data")  # before this process warms up
    bare = Bare(rows)
    t_load = _timed(lambda: setattr(in_process, "model", mlflow.pyfunc.load_model(str(path))))
    model = in_process.model
    frame = pd.DataFrame(rows)
    t_first = _timed(lambda: model.predict(frame.iloc[:1]))
    print(f"threads: torch {torch.get_num_threads()} (affinity {len(os.sched_getaffinity(0))}), busy {args.busy}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print(f"fresh process: import mlflow.pyfunc {t_import:.2f} s, load_model {t_fresh:.2f} s, first predict "
          f"(waits for the background build: torch, torch_geometric, MONAI, MiniLM) {t_fresh_first:.2f} s; "
          f"in this process (imports done): load_model {t_load:.2f} s, first predict {t_first:.2f} s")  # fmt: skip

    stages = Stages()
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
        split = {True: [], False: []}
        base_t = []
        for _ in range(args.repeats):  # interleaved: served (explain on / off) and bare on the same inputs
            for which, part in calls:
                base_t.append(_timed(lambda: bare(which)) / len(which))
                for explain in (True, False):
                    stages.reset()
                    t = _timed(lambda: model.predict(part, params={"explain": explain}))
                    served[explain].append(t / len(which))
                    split[explain].append(
                        {k: v / len(which) for k, v in stages.spent.items()} | {"total": t / len(which)}
                    )
        b = statistics.median(base_t)
        on, off = statistics.median(served[True]), statistics.median(served[False])
        print(f"{label:>12}: bare {b * 1000:7.1f} ms/patient | served {on * 1000:7.1f} ms ({on / b:.2f}x) with "
              f"explanation, {off * 1000:7.1f} ms ({off / b:.2f}x) without (the default)")  # fmt: skip
        parts = {k: statistics.median(s[k] for s in split[False]) for k in Stages.NAMES}
        rest = statistics.median(s["total"] - sum(s[k] for k in Stages.NAMES) for s in split[False])  # per call
        print(f"{'':>12}  without, per patient: " + ", ".join(f"{k} {parts[k] * 1000:.1f}" for k in Stages.NAMES[:4])
              + f", serving layer {rest * 1000:.1f} ms")  # fmt: skip
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


def _drive(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[list[float], list[int], float]:
    """``concurrency`` closed-loop clients posting ``bodies`` in turn for ``seconds``: (latencies, codes, took)."""
    latencies, codes, lock = [], [], threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            code = _post(f"{url}/invocations", bodies[i % len(bodies)])
            with lock:
                latencies.append(time.perf_counter() - t)
                codes.append(code)
            i += concurrency

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, codes, time.perf_counter() - start


def _summary(latencies: list[float], codes: list[int], took: float) -> tuple[float, str]:
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    rate = len(latencies) / took
    errors = sum(c != 200 for c in codes)
    return rate, (
        f"{len(latencies)} requests in {took:.1f} s: {rate:.2f} req/s, p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {q[18] * 1000:.0f} ms, errors {errors}"
    )


def load_test(args, base: Path, rows: list[dict], path: Path) -> None:
    """``mlflow models serve --workers W`` on loopback, each worker with ``CLINICMM_THREADS`` = cores / W (or
    ``--threads``); first one client (the single-patient rate of one worker), then ``--concurrency`` clients."""
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # uvicorn, which mlflow runs by name
    cpus = len(os.sched_getaffinity(0))
    threads = args.threads or max(1, cpus // args.workers)
    env = dict(os.environ, CLINICMM_DATA_ROOTS=str(base / "data"), CLINICMM_THREADS=str(threads),
               PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
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
        ping = time.perf_counter() - t0
        params = {"explain": True} if args.explain else {}
        bodies = [json.dumps({"dataframe_records": [r], "params": params}).encode() for r in rows]
        t1 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:  # each worker's first request waits for its build
            list(pool.map(lambda b: _post(f"{url}/invocations", b), bodies * 2 * args.workers))
        print(f"server: mlflow models serve, {args.workers} worker(s) x {threads} torch thread(s) on {cpus} CPU(s); "
              f"/ping after {ping:.1f} s, warm after {time.perf_counter() - t1:.1f} s more; one full patient "
              f"(CT series + 2 notes) per request, explanation {'on' if args.explain else 'off (default)'}; "
              f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
        single, text = _summary(*_drive(url, bodies, 1, args.single_seconds))
        print(f"  1 client (single-patient rate): {text}")
        rate, text = _summary(*_drive(url, bodies, args.concurrency, args.seconds))
        ideal = args.workers * single
        print(f"  {args.concurrency} clients: {text}; throughput {rate / ideal:.2f} x (workers x single-patient rate "
              f"= {ideal:.2f} req/s)")  # fmt: skip
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
    parser.add_argument("--ensemble", type=int, default=1, help="networks in the fusion model (training.ensemble)")
    parser.add_argument("--threads", type=int, default=0,
                        help="set $CLINICMM_THREADS (0: the model's default; load test: cores / workers)")  # fmt: skip
    parser.add_argument("--load", action="store_true", help="load-test `mlflow models serve` instead")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="load test: seconds at --concurrency")
    parser.add_argument("--single-seconds", type=float, default=15.0, help="load test: seconds with one client")
    parser.add_argument("--explain", action="store_true", help="load test: requests with explain true")
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
            path = save_model(base, args.fusion, args.ensemble)
            (load_test if args.load else in_process)(args, base, rows, path)
    finally:
        for s in spinners:
            s.terminate()


if __name__ == "__main__":
    main()
