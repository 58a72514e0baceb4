"""Native 2D imaging: clinicmm's trained 2D image encoder against a plain 2D ResNet-18 on the same pixels.

A MedMNIST-style 2D cohort is generated and written as DICOM: ``--n`` grey ``--size`` x ``--size`` ultrasound-like
images (Modality US, one file per series, so ``image_kind`` is ``2d``) of two classes -- a round dark lesion
(class 0) or an elongated one (class 1), of random size, position and angle, under multiplicative speckle, a depth
gain ramp and random brightness (the classes overlap: neither network is perfect). One stratified split (train /
val / test) is used by both networks, in one process:

* **clinicmm**: the ``train-image`` stage's own code (:func:`clinicmm.encode.imaging.train.preprocess` and
  ``_fit`` on the DICOM files, the default recipe of ``encoders.image.train`` unless ``--recipe old``), weights
  written as the stage writes them; then ``ImageEncoder`` (default ``spatial_dims: auto``) encodes the test
  series from their DICOM files and the trained linear head scores the embeddings;
* **plain**: MONAI's ``resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)`` trained directly on the same
  pixel arrays (scaled to [0, 1] by the stored range), Adam, no augmentation, the best validation epoch by
  validation AUROC (as MedMNIST's ResNet baselines are trained).

Printed: test AUROC of both, then time per image over the same 64 test images in batches of the encoder's
``batch_size``, every step timed in turn in each of ``--repeats`` rounds (medians; the machine's load average is
printed with them): clinicmm's full ``ImageEncoder.encode`` (DICOM read + preprocessing + network, as the encode
stage runs it, cache aside) and its two parts; the plain network's forward on the in-memory arrays, already scaled
(the issue's baseline: it reads nothing and preprocesses nothing); and the plain network from the same files
(``dcmread`` + ``pixel_array`` + scaling + forward: like for like with clinicmm's encode). ``--legacy`` also
times ``spatial_dims: 3`` (the former default: the image repeated along z through a 3D network). No downloads;
plain prints, no assertions.

    .venv/bin/python benchmarks/image_2d.py [--n 1200] [--size 28] [--epochs 15] [--network resnet10]
                                            [--recipe new|old] [--legacy] [--threads 2] [--repeats 9]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))

from dicom_fixtures import write_image  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from clinicmm.config import ImageEncoderSpec, ImageTrainSpec, WorkflowSpec  # noqa: E402
from clinicmm.encode.imaging import train  # noqa: E402
from clinicmm.encode.imaging.encoder import ImageEncoder  # noqa: E402
from clinicmm.files import digest_files  # noqa: E402
from clinicmm.pipeline import runtime  # noqa: E402

TIMED = 64  # test images in the timing
OLD_RECIPE = {"batch_size": 4, "warmup_epochs": 0.0, "schedule": "constant", "clip_norm": None, "weight_decay": 0.01}


# --------------------------------------------------------------------------------------------- the cohort


def make_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, size, size)`` uint-range float images (0..1000) and labels 0/1 (balanced)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    images = np.empty((n, size, size))
    for i, label in enumerate(labels):
        radius = rng.uniform(0.15, 0.25) * size
        aspect = rng.uniform(1.0, 1.6) if label == 0 else rng.uniform(1.4, 2.6)  # overlapping on purpose
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.3, 0.7, size=2) * size
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / (radius * np.sqrt(aspect))
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius / np.sqrt(aspect))
        inside = 1.0 / (1.0 + np.exp((np.sqrt(u**2 + v**2) - 1.0) * 6.0))  # soft lesion border
        tissue = 0.55 + 0.25 * yy / size  # depth gain ramp
        echo = tissue * (1.0 - 0.7 * inside) * rng.uniform(0.8, 1.2)
        speckle = rng.rayleigh(1.0, size=(2, size, size)).mean(0) / np.sqrt(np.pi / 2)  # two looks, mean 1
        images[i] = np.clip(echo * speckle * 500.0, 0, 1000)
    return images, labels


def write_cohort(root: Path, images: np.ndarray) -> list[list[str]]:
    """One single-file US series per image; the series (lists of one file)."""
    series = []
    for i, pixels in enumerate(images):
        path = write_image(
            root / f"P{i:05d}" / "us.dcm", pixels, (0.0, 0.0, 0.0), patient=f"P{i:05d}", modality="US",
            series=f"1.2.826.0.1.3680043.8.498.{i + 10}",
        )  # fmt: skip
        series.append([str(path)])
    return series


def split(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Stratified 60 / 15 / 25 % train / val / test indices."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a, b = int(0.6 * len(idx)), int(0.75 * len(idx))
        out["train"] += idx[:a].tolist()
        out["val"] += idx[a:b].tolist()
        out["test"] += idx[b:].tolist()
    return {k: np.array(sorted(v)) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------- clinicmm


def clinicmm_run(root: Path, series, labels, parts, args) -> dict:
    """Train with the train-image stage's code, encode the test series with ImageEncoder, score with the head."""
    recipe = {"epochs": args.epochs, "seed": args.seed, "patience": args.epochs}
    recipe |= OLD_RECIPE if args.recipe == "old" else {}
    spec = ImageEncoderSpec(
        network=args.network,
        spatial_size=(32, args.size, args.size),
        spatial_dims=args.spatial_dims,
        train=ImageTrainSpec(**recipe, output=root / "work" / "train_image" / "weights.safetensors"),
    )
    wf = WorkflowSpec(name="image2d", dataset=root / "unused.yaml", workdir=root / "work")
    wf = wf.model_copy(update={"encoders": wf.encoders.model_copy(update={"image": spec})})

    def items(part: str) -> list[dict]:
        return [{"image": series[i], train.LABEL_KEY: int(labels[i]), train.DIGEST_KEY: digest_files(series[i]),
                 "patient_id": f"P{i:05d}"} for i in parts[part]]  # fmt: skip

    t0 = time.perf_counter()
    train_items, _, _ = train.preprocess(wf, items("train"), progress=False)
    val_items, _, _ = train.preprocess(wf, items("val"), progress=False)
    model, history = train._fit(wf, train_items, val_items, 2, progress=False)
    train._save(wf, model, ["0", "1"], history, {}, {}, len(train_items), len(val_items))
    fit_s = time.perf_counter() - t0

    encoder = ImageEncoder(wf.encoders.image)  # the trained weights, as the encode stage loads them
    test = [series[i] for i in parts["test"]]
    emb, failed = encoder.encode(test, progress=False)  # also the warm-up of the timing
    assert not failed, failed
    head = model[1]
    with torch.no_grad():
        probs = torch.softmax(head(torch.as_tensor(emb)), 1)[:, 1].numpy()
    return {
        "auroc": roc_auc_score(labels[parts["test"]], probs),
        "acc": float(((probs > 0.5) == labels[parts["test"]]).mean()),
        "fit_s": fit_s,
        "input": tuple(encoder.preprocess(test[0]).shape),
        "history": history,
        "encoder": encoder,
    }


# ---------------------------------------------------------------------------------------------------- plain


def plain_run(images, labels, parts, args) -> dict:
    """MONAI resnet18 (2D) trained on the arrays: Adam 1e-3, batch 32, best validation AUROC epoch."""
    import copy

    from monai.networks.nets import resnet18

    torch.manual_seed(args.seed)
    if args.plain_norm:  # as clinicmm's pipeline: each image's 1st-99th percentile to [0, 1], clipped
        lo, hi = np.percentile(images, [1, 99], axis=(1, 2), keepdims=True)
        images = np.clip((images - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 1000.0
    x = torch.as_tensor(images / 1000.0, dtype=torch.float32)[:, None]
    y = torch.as_tensor(labels)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    tr, va, te = (torch.as_tensor(parts[k]) for k in ("train", "val", "test"))
    generator = torch.Generator().manual_seed(args.seed)
    best, best_state = -1.0, None
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        net.train()
        order = tr[torch.randperm(len(tr), generator=generator)]
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            if len(idx) < 2:
                continue
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = roc_auc_score(labels[parts["val"]], _probs(net, x[va]))
        if score > best:
            best, best_state = score, copy.deepcopy(net.state_dict())
    fit_s = time.perf_counter() - t0
    net.load_state_dict(best_state)
    probs = _probs(net, x[te])
    return {
        "auroc": roc_auc_score(labels[parts["test"]], probs),
        "acc": float(((probs > 0.5) == labels[parts["test"]]).mean()),
        "fit_s": fit_s,
        "net": net.eval(),
        "x": x,
    }


def timings(ours: dict | None, plain: dict | None, series, parts, args) -> dict[str, float]:
    """Seconds per image, medians of ``args.repeats`` rounds that run every timed step once each, in turn (so a
    burst of other work on the machine hits them alike), over the same ``TIMED`` test images in batches of the
    encoder's ``batch_size``:

    * ``encode``: clinicmm's ``ImageEncoder.encode`` on the DICOM files -- read, preprocess (the pipeline), forward;
    * ``preprocess`` / ``forward``: its two parts alone (``ImageEncoder.preprocess`` per file; the network on the
      preprocessed batches);
    * ``plain``: the plain network's forward on the arrays, already in memory and scaled (the issue's baseline);
    * ``plain_dicom``: the plain network from the same files: ``pydicom.dcmread`` + ``pixel_array``, scaled by the
      stored range, stacked, forward (what a minimal script reading the DICOM would pay).
    """
    import pydicom

    idx = parts["test"][:TIMED]
    files = [series[i] for i in idx]
    b = args.batch
    steps = {}
    if ours is not None:
        encoder = ours["encoder"]
        pre = [torch.stack([encoder.preprocess(f) for f in files[i : i + b]]) for i in range(0, len(files), b)]
        steps["encode"] = lambda: encoder.encode(files, progress=False)
        steps["preprocess"] = lambda: [encoder.preprocess(f) for f in files]
        steps["forward"] = lambda: [encoder._forward(batch) for batch in pre]
    if plain is not None:
        net, x = plain["net"], plain["x"][torch.as_tensor(idx)]

        def forward() -> None:
            with torch.inference_mode():
                for i in range(0, len(x), b):
                    net(x[i : i + b])

        def from_dicom() -> None:
            with torch.inference_mode():
                for i in range(0, len(files), b):
                    arrays = [pydicom.dcmread(f[0]).pixel_array for f in files[i : i + b]]
                    net(torch.as_tensor(np.stack(arrays) / 1000.0, dtype=torch.float32)[:, None])

        steps["plain"], steps["plain_dicom"] = forward, from_dicom
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(args.repeats + 1):  # round 0: warm-up, not counted
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) / len(files) for name, t in times.items()}


def _probs(net, x: torch.Tensor) -> np.ndarray:
    net.eval()
    with torch.inference_mode():
        return torch.cat([torch.softmax(net(x[i : i + 256]), 1)[:, 1] for i in range(0, len(x), 256)]).numpy()


def legacy_encode_s(series, parts, args) -> tuple[float, tuple]:
    """Per-image encode time with ``spatial_dims: 3`` (the former default) at the default spatial_size."""
    encoder = ImageEncoder(ImageEncoderSpec(network=args.network, spatial_dims=3))
    test = [series[i] for i in parts["test"][:16]]
    encoder.encode(test[:4], progress=False)
    t0 = time.perf_counter()
    encoder.encode(test, progress=False)
    return (time.perf_counter() - t0) / len(test), tuple(encoder.preprocess(test[0]).shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1200, help="images in the cohort")
    parser.add_argument("--size", type=int, default=28, help="rows = columns of each image")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--network", default="resnet10", help="clinicmm's encoders.image.network")
    parser.add_argument("--spatial-dims", default="auto", choices=["auto", "2", "3"])
    parser.add_argument("--recipe", default="new", choices=["new", "old"], help="old: batch 4, constant lr, no clip")
    parser.add_argument("--legacy", action="store_true", help="also time spatial_dims: 3 (the former default)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain network (compare recipes faster)")
    parser.add_argument("--plain-norm", action="store_true", help="plain: per-image 1-99th percentile scaling")
    parser.add_argument("--plain-only", action="store_true", help="only the plain network (run beside --no-plain)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: runtime.threads' default)")
    parser.add_argument("--repeats", type=int, default=9, help="timing rounds (medians)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.spatial_dims = args.spatial_dims if args.spatial_dims == "auto" else int(args.spatial_dims)
    args.batch = ImageEncoderSpec().batch_size
    runtime.apply(args.threads)  # as a stage sets them: runtime.threads, else the CPUs other processes leave free
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    print(f"torch threads: {torch.get_num_threads()}; {args.n} images {args.size}x{args.size}, {args.epochs} epochs")

    images, labels = make_images(args.n, args.size, args.seed)
    parts = split(labels, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        series = write_cohort(root / "dicom", images)
        print(f"cohort: {len(series)} US DICOM files written in {time.perf_counter() - t0:.1f} s; "
              f"train/val/test {len(parts['train'])}/{len(parts['val'])}/{len(parts['test'])}")  # fmt: skip
        plain = None if args.no_plain else plain_run(images, labels, parts, args)
        ours = None if args.plain_only else clinicmm_run(root, series, labels, parts, args)
        load = os.getloadavg()[0]
        t = timings(ours, plain, series, parts, args)
        load = (load + os.getloadavg()[0]) / 2
        legacy = legacy_encode_s(series, parts, args) if args.legacy and ours is not None else None
    if ours is None:
        print(f"plain resnet18 (2D, arrays): test AUROC {plain['auroc']:.3f}, ACC {plain['acc']:.3f}, fit "
              f"{plain['fit_s']:.0f} s, forward {t['plain'] * 1e3:.2f} ms / image (batch {args.batch})")  # fmt: skip
        return

    print("\nclinicmm train-image history (epoch: train_loss / val_loss / val_accuracy):")
    for h in ours["history"]:
        print(f"  {h['epoch']:>2}: {h['train_loss']:.3f} / {h['val_loss']:.3f} / {h['val_accuracy']:.3f}")
    print(f"  max val_loss {max(h['val_loss'] for h in ours['history']):.3f}")
    print(f"\n{'':34}{'test AUROC':>11}{'test ACC':>10}{'fit s':>8}")
    print(f"{f'clinicmm {args.network} ({args.spatial_dims}, {args.recipe})':34}{ours['auroc']:>11.3f}"
          f"{ours['acc']:>10.3f}{ours['fit_s']:>8.0f}")  # fmt: skip
    if plain is not None:
        print(f"{'plain resnet18 (2D, arrays)':34}{plain['auroc']:>11.3f}{plain['acc']:>10.3f}{plain['fit_s']:>8.0f}")
    print(f"\nms per image, median of {args.repeats} interleaved rounds over {min(TIMED, len(parts['test']))} test images, batch {args.batch}, "
          f"{torch.get_num_threads()} torch thread(s), load average {load:.1f}:")  # fmt: skip
    rows = [
        ("encode", f"clinicmm encode: DICOM read + preprocessing + {args.network} forward, input {ours['input']}"),
        ("preprocess", "  of which DICOM read + preprocessing (ImageEncoder.preprocess)"),
        ("forward", f"  of which {args.network} forward on the preprocessed batches"),
        ("plain", "plain resnet18 forward on the in-memory scaled arrays"),
        ("plain_dicom", "plain resnet18 from the files: dcmread + pixel_array + scale + forward"),
    ]
    for key, what in rows:
        if key in t:
            print(f"  {t[key] * 1e3:8.2f}  {what}")
    if legacy is not None:
        print(f"  {legacy[0] * 1e3:8.2f}  clinicmm spatial_dims: 3 (former) encode, untrained, input {legacy[1]}")
    if plain is None:
        return
    print(f"\nAUROC difference (clinicmm - plain): {ours['auroc'] - plain['auroc']:+.3f} (target >= -0.01)")
    print(f"clinicmm encode / plain forward: {t['encode'] / t['plain']:.2f}x (target <= 1.5x); "
          f"/ plain from the files: {t['encode'] / t['plain_dicom']:.2f}x; "
          f"network forward / plain forward: {t['forward'] / t['plain']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
