"""DICOM header-scan throughput and memory, and volume preprocessing cold vs cached.

In one process, on the same files (a generated cohort of small CT series):

* **plain loop**: ``pydicom.dcmread(path, stop_before_pixels=True)`` over every file -- the baseline;
* **index, 1 worker / 2 workers**: ``clinicmm.ingest.dicom.index_dicom`` (header read, pixel-data and decoder checks,
  spooled to SQLite, grouped into series); printed as a ratio of the plain loop's files/s
  (targets: >= 0.8x on 1 worker, >= 1.6x on 2);
* **scan memory**: tracemalloc peak of the header scan + spool (``scan_records`` into ``_Spool``, 1 worker) for
  a quarter of the files and for all of them: the ratio should stay near 1 (the scan streams to disk);
* **preprocessing cold vs cached**: the MONAI image pipeline over every series through ``monai.data.
  PersistentDataset`` -- first epoch decodes and caches, second epoch reads the cache (target >= 10x).

    .venv/bin/python benchmarks/ingest_dicom.py [--patients 120 --slices 24 --repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import pydicom
import torch


def _write_cohort(root: Path, patients: int, slices: int) -> Path:
    from clinicmm.demo.generator import generate_demo

    generate_demo(root / "demo", patients=patients, seed=0, slices=slices, size=32, missing_rate=0.0)
    return root / "demo" / "dicom"


def _files(root: Path) -> list[str]:
    from clinicmm.ingest.dicom import _list_files

    return _list_files(root)


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _scan_peak(paths: list[str], root: Path) -> int:
    from clinicmm.ingest.dicom import _BATCH, _batches, _Spool, scan_records

    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp, _Spool(Path(tmp) / "i.sqlite") as db:
        for batch in _batches(scan_records(paths, root), _BATCH):
            db.add_records(batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each scan (best is reported)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from monai.data import PersistentDataset

    from clinicmm.config import ImageEncoderSpec, ImagingSpec
    from clinicmm.encode.imaging.transforms import image_pipeline
    from clinicmm.ingest.dicom import index_dicom

    with tempfile.TemporaryDirectory() as tmp:
        root = _write_cohort(Path(tmp), args.patients, args.slices)
        paths = _files(root)
        n = len(paths)
        for p in paths:  # every file in the OS cache before anything is timed
            Path(p).read_bytes()
        runs = {"plain": [], "one": [], "two": []}
        for _ in range(args.repeats):  # interleaved, best of N: the same conditions for all three
            runs["plain"].append(_time(lambda: [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]))
            runs["one"].append(_time(lambda: index_dicom(ImagingSpec(root=root, workers=1), root)))
            runs["two"].append(_time(lambda: index_dicom(ImagingSpec(root=root, workers=2), root)))
        plain, one, two = (min(runs[k]) for k in ("plain", "one", "two"))
        print(f"files: {n} in {args.patients} series; best of {args.repeats} interleaved runs each")
        print(f"plain dcmread loop : {n / plain:8.0f} files/s (baseline)")
        print(f"index, 1 worker    : {n / one:8.0f} files/s  ratio {plain / one:.2f}x  (target >= 0.8x)")
        print(f"index, 2 workers   : {n / two:8.0f} files/s  ratio {plain / two:.2f}x  (target >= 1.6x)")

        quarter, full = _scan_peak(paths[: n // 4], root), _scan_peak(paths, root)
        print(f"scan peak memory   : {quarter / 1e6:.2f} MB for {n // 4} files, {full / 1e6:.2f} MB for {n} files "
              f"(ratio {full / quarter:.2f} for 4x the files)")  # fmt: skip

        index = index_dicom(ImagingSpec(root=root), root)
        series = [{"image": list(f)} for f in index.loc[index["status"] == "ok", "files"]]
        pipeline = image_pipeline(ImageEncoderSpec(spatial_size=(16, 32, 32)))
        dataset = PersistentDataset(series, transform=pipeline, cache_dir=Path(tmp) / "persistent")
        cold = _time(lambda: [dataset[i] for i in range(len(dataset))])
        warm = _time(lambda: [dataset[i] for i in range(len(dataset))])
        print(
            f"preprocess {len(series)} series: cold {cold:.2f} s, cached {warm:.3f} s, ratio {cold / warm:.1f}x (target >= 10x)"
        )


if __name__ == "__main__":
    main()
