"""Training the image network on the cohort's labels, in its own stage: ``clinicmm train-image WORKFLOW.yaml``.

What is learnt: the whole ``encoders.image.network`` (from its seeded initialisation, or from the user's
``encoders.image.weights``) together with a linear head on its pooled features, by cross-entropy on the
**train split**'s labels; the validation split picks the best epoch and stops training early
(``train.patience``). Test patients are never read. The series go through the deterministic
:func:`clinicmm.encode.imaging.transforms.image_pipeline`, whose output is cached on disk by MONAI's
``PersistentDataset`` under ``workdir/cache/image_preprocessed/<digest of the pipeline settings>/``, so the second
epoch -- and a rerun -- decodes no DICOM; the random augmentation (:func:`augmentation`: flips, a small in-plane
rotation/scale/shift, intensity jitter; a 2D image in 2D) runs after it, on the train split only.

Recipe (``encoders.image.train``): AdamW (``lr``, ``weight_decay``), the learning rate warmed up linearly over
``warmup_epochs`` and then decayed to 0 by a cosine (``schedule``), gradient norm clipped to ``clip_norm``, batches
of ``batch_size`` series of one kind (2D images and volumes are never mixed in a batch: ``spatial_dims: auto``
embeds them with different networks). Why: the former recipe (batches of 4, a constant ``lr`` from the first step,
AdamW's default weight decay 0.01, no clipping) trains batch norm on 4 values per channel and takes its largest
steps while the head is still random; a 2D ultrasound cohort saw its validation loss jump to 9.2 with it.
``benchmarks/image_2d.py --recipe old`` measures the former recipe against this one on the same cohort.

Outputs in ``workdir/train_image/``: ``weights.safetensors`` (the network, readable by ``ImageEncoder.load_weights``;
the encode stage loads it, and its new fingerprint makes the image embeddings be recomputed), ``head.safetensors``
and ``stage.json``, the stage registry's record (:mod:`clinicmm.pipeline.registry`: classes, per-epoch losses, the
MLflow run id). The MLflow run ``train-image`` (logged by the pipeline's stage) holds the settings and per-epoch
metrics only -- never a patient id; the train stage makes it a child of the workflow's parent run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinicmm.config import ImageEncoderSpec, WorkflowSpec, dump
from clinicmm.errors import ConfigError, StageError
from clinicmm.files import atomic_write_bytes, digest_bytes, digest_files
from clinicmm.keys import Split

log = logging.getLogger("clinicmm")
FOLDER = "train_image"
LABEL_KEY = "label"
DIGEST_KEY = "files_digest"
SLICES_KEY = "slices"  # slices of the pipeline output (1: a 2D image): batches hold one kind only


def base_spec(spec: ImageEncoderSpec) -> ImageEncoderSpec:
    """The image spec training starts from: the same network and pipeline, the user's weights, no trained ones."""
    return spec.model_copy(update={"train": None})


def folder(wf: WorkflowSpec) -> Path:
    return wf.work / FOLDER


def cache_dir(wf: WorkflowSpec) -> Path:
    """Where the pipeline's outputs are kept: one folder per pipeline setting, so a changed window never hits."""
    import monai

    from clinicmm.encode.imaging.transforms import PIPELINE_VERSION, native_2d

    keys = ("spatial_size", "pixdim", "window", "percentiles")
    settings = {k: v for k, v in dump(wf.encoders.image).items() if k in keys}
    if native_2d(wf.encoders.image):  # 2D images kept as one slice: another output (3D keeps its former key)
        settings["native_2d"] = True
    key = digest_bytes(json.dumps(settings, sort_keys=True), PIPELINE_VERSION, monai.__version__)[:16]
    return wf.work / "cache" / "image_preprocessed" / key


# ------------------------------------------------------------------------------------------------ data


def split_items(wf: WorkflowSpec) -> tuple[dict[str, list[dict]], list[str]]:
    """Per split (train, val): ``{"image": files, "label": index, "files_digest": ...}`` items; the classes."""
    from clinicmm.ingest.cohort import Cohort, patient_inputs, series_list

    cohort = Cohort.load(wf.work / "ingest")  # StageError naming the folder when ingest has not run
    label = cohort.manifest.set_index("patient_id")["label"].to_dict()
    per_split = {}
    for split in (Split.TRAIN, Split.VAL):
        patients = cohort.patients(split)
        series = patient_inputs(cohort, patients)["series"]  # several per patient: each one is a training item
        per_split[split] = [(p, files) for p, value in zip(patients, series) for files in series_list(value)]
    classes = sorted({label[p] for p, _ in per_split[Split.TRAIN]})
    if len(classes) < 2:
        raise StageError(
            f"{wf.dataset_path}: the train split has images of {len(classes)} label(s); training the "
            "image encoder needs images of at least two labels. Add images or leave encoders.image.train out."
        )
    index = {c: i for i, c in enumerate(classes)}
    items = {s: [{"image": files, LABEL_KEY: index[label[p]], DIGEST_KEY: digest_files(files), "patient_id": p}
                 for p, files in pairs if label[p] in index] for s, pairs in per_split.items()}  # fmt: skip
    return items, classes


def augmentation(seed: int, spatial_size: tuple[int, int, int] = (32, 64, 64)) -> Any:
    """Random flips, a small affine and intensity jitter (MONAI, train split only), by the kind of input.

    A 2D image (one slice, ``(1, 1, y, x)``) is augmented in 2D: flips of rows and columns, a rotation of at most
    15 degrees, scale +-10 %, shift +-6 % of ``spatial_size``'s rows and columns, intensity scale/shift +-0.1, Gaussian noise (sd 0.02). A
    volume gets the same in-plane changes (rotation about the slice axis only; flips of every axis). Pixels
    moved in from outside repeat the border (``padding_mode='border'``), so no part of the image is blanked.
    Random (``Randomizable``): MONAI's ``PersistentDataset`` caches up to it, never its output.
    """
    import math

    from monai.transforms import (
        Compose,
        MapTransform,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        Randomizable,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    from clinicmm.encode.imaging.transforms import IMAGE_KEY

    angle, scale = math.pi / 12, 0.1
    shift = tuple(0.06 * n for n in spatial_size[1:])  # pixels, in plane
    intensity = [
        RandScaleIntensityd(keys=IMAGE_KEY, factors=0.1, prob=0.5),
        RandShiftIntensityd(keys=IMAGE_KEY, offsets=0.1, prob=0.5),
        RandGaussianNoised(keys=IMAGE_KEY, prob=0.3, mean=0.0, std=0.02),
    ]

    def affine(dims: int) -> Any:
        return RandAffined(
            keys=IMAGE_KEY, prob=0.7, mode="bilinear", padding_mode="border", cache_grid=False,
            rotate_range=(angle,) if dims == 2 else (angle, 0.0, 0.0),  # 3D: about axis 0 (z), i.e. in plane
            scale_range=(scale,) * dims if dims == 2 else (0.0, scale, scale),
            translate_range=shift if dims == 2 else (0.0, *shift),
        )  # fmt: skip

    flat = Compose([*(RandFlipd(keys=IMAGE_KEY, prob=0.5, spatial_axis=a) for a in (0, 1)), affine(2), *intensity])
    deep = Compose([*(RandFlipd(keys=IMAGE_KEY, prob=0.5, spatial_axis=a) for a in (0, 1, 2)), affine(3), *intensity])

    class Augmentd(MapTransform, Randomizable):
        def set_random_state(self, seed: int | None = None, state: Any = None) -> Augmentd:
            flat.set_random_state(seed=seed, state=state)
            deep.set_random_state(seed=None if seed is None else seed + 1, state=state)
            return self

        def randomize(self, data: Any = None) -> None:  # each inner transform draws its own
            pass

        def __call__(self, data: Any) -> Any:
            d = dict(data)
            image = d[IMAGE_KEY]
            if image.shape[1] == 1:
                d[IMAGE_KEY] = image[:, 0]  # (1, y, x): MONAI's 2D transforms
                d = flat(d)
                d[IMAGE_KEY] = d[IMAGE_KEY][:, None]
                return d
            return deep(d)

    return Augmentd(keys=IMAGE_KEY).set_random_state(seed=seed)


def _hash_item(item: dict) -> bytes:
    """Cache file name of one series: its files' content digest (a replaced file misses, a moved one hits)."""
    return item[DIGEST_KEY].encode()


def preprocess(wf: WorkflowSpec, items: list[dict], progress: bool) -> tuple[list[dict], dict[str, str], dict]:
    """Run the deterministic pipeline once per series through the on-disk cache; the usable items, the failures
    (patient id -> reason) and the counts (decoded, cached, failed)."""
    from monai.data import PersistentDataset
    from tqdm.auto import tqdm

    from clinicmm.encode.imaging.encoder import root_cause
    from clinicmm.encode.imaging.transforms import image_pipeline

    where = cache_dir(wf)
    where.mkdir(parents=True, exist_ok=True)
    before = _cache_files(where)
    data = PersistentDataset(_rows(items), image_pipeline(wf.encoders.image), where, hash_func=_hash_item)
    usable, failed = [], {}
    for i in tqdm(
        range(len(items)), desc="train-image: preprocessing", unit="series", disable=None if progress else True
    ):
        try:
            out = data[i]
            usable.append(items[i] | {SLICES_KEY: int(out["image"].shape[1])})
        except Exception as exc:  # noqa: BLE001 -- one bad series is recorded and skipped
            failed[items[i]["patient_id"]] = f"series could not be loaded: {root_cause(exc)}"
    decoded = _cache_files(where) - before
    return usable, failed, {"decoded": decoded, "cached": len(usable) - decoded, "failed": len(failed)}


def _cache_files(where: Path) -> int:
    return sum(1 for _ in where.glob("*.pt"))


def _rows(items: list[dict]) -> list[dict]:
    """The items without their patient ids: ids stay out of the cache files and the batches."""
    return [{k: v for k, v in item.items() if k not in ("patient_id", SLICES_KEY)} for item in items]


def _batches(items: list[dict], size: int, shuffle: bool, generator: Any, drop_lone: bool) -> Any:
    """A batch sampler: batches of ``size`` items of one input kind (``SLICES_KEY``), shuffled each epoch (the
    items within each kind, then the order of the batches) when ``shuffle``; ``drop_lone`` drops batches of one
    item (batch norm cannot train on one value per channel) unless that would drop every batch."""
    import torch

    kinds = [item.get(SLICES_KEY, 0) for item in items]

    class Batches:
        def _all(self) -> list[list[int]]:
            batches = []
            for kind in dict.fromkeys(kinds):
                idx = [i for i, k in enumerate(kinds) if k == kind]
                if shuffle:
                    idx = [idx[j] for j in torch.randperm(len(idx), generator=generator).tolist()]
                batches += [idx[i : i + size] for i in range(0, len(idx), size)]
            if drop_lone and any(len(b) > 1 for b in batches):
                batches = [b for b in batches if len(b) > 1]
            if shuffle:
                batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
            return batches

        def __iter__(self):
            return iter(self._all())

        def __len__(self) -> int:
            sizes = [
                min(size, kinds.count(k) - i) for k in dict.fromkeys(kinds) for i in range(0, kinds.count(k), size)
            ]
            lone = drop_lone and any(n > 1 for n in sizes)
            return sum(1 for n in sizes if n > 1 or not lone)

    return Batches()


def _loader(wf: WorkflowSpec, items: list[dict], augment: bool, shuffle: bool):
    import torch
    from monai.data import DataLoader, PersistentDataset
    from monai.transforms import Compose

    from clinicmm.encode.imaging.transforms import image_pipeline

    spec = wf.encoders.image
    steps = list(image_pipeline(spec).transforms) + (
        [augmentation(spec.train.seed, spec.spatial_size)] if augment else []
    )
    # one flat list: PersistentDataset caches up to the first random transform, and a nested Compose counts as one
    data = PersistentDataset(_rows(items), Compose(steps), cache_dir(wf), hash_func=_hash_item)
    generator = torch.Generator().manual_seed(spec.train.seed)
    # training: a batch of one series is dropped (batch norm cannot train on one value per channel)
    sampler = _batches(items, spec.train.batch_size, shuffle, generator, drop_lone=shuffle)
    return DataLoader(data, batch_sampler=sampler, num_workers=0)


# --------------------------------------------------------------------------------------------- training


def train_image(wf: WorkflowSpec, progress: bool = True) -> ImageTraining:
    """Train the image network and head; write weights and head. Returns the record (classes, history, counts)."""
    spec = wf.encoders.image
    if spec.train is None:
        raise ConfigError(
            f"{wf.name}: encoders.image.train is not set; add it (e.g. `train: {{epochs: 10}}`) "
            "to train the image encoder."
        )
    items, classes = split_items(wf)
    train_items, failed, counts = preprocess(wf, items[Split.TRAIN], progress)
    val_items, val_failed, val_counts = preprocess(wf, items[Split.VAL], progress)
    failed |= val_failed
    if len({i[LABEL_KEY] for i in train_items}) < 2:
        raise StageError(
            f"{wf.dataset_path}: after skipping {len(failed)} unreadable series, the train split has "
            "images of fewer than two labels; fix the series listed in the ingest report."
        )
    counts = {k: counts[k] + val_counts[k] for k in counts}
    classifier, history = _fit(wf, train_items, val_items, len(classes), progress)
    record = _save(wf, classifier, classes, history, counts, failed, len(train_items), len(val_items))
    log.info(
        "train-image: %d train / %d val series, %d epochs, loss %.3f -> %.3f; weights in %s",
        len(train_items),
        len(val_items),
        len(history),
        history[0]["train_loss"],
        history[-1]["train_loss"],
        record.weights,
    )
    return record


def build_classifier(spec: ImageEncoderSpec, n_classes: int):
    """``nn.Sequential(feature network, linear head)``: ``(B, 1, z, y, x) -> (B, classes)`` logits, trainable.

    The network starts from the encoder's seeded initialisation, or from the user's pretrained ``weights``.
    """
    import torch
    from torch import nn

    from clinicmm.encode.imaging.encoder import ImageEncoder, feature_dim

    encoder = ImageEncoder(base_spec(spec))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        head = nn.Linear(feature_dim(spec), n_classes)
    return nn.Sequential(encoder.network, head).requires_grad_(True)


def _fit(wf: WorkflowSpec, train_items: list[dict], val_items: list[dict], n_classes: int, progress: bool):
    """Cross-entropy with AdamW, warmup + cosine (or constant) learning rate and gradient clipping (see the module
    docstring); the state of the best validation epoch (the last one without validation)."""
    import copy

    import torch
    from tqdm.auto import tqdm

    t = wf.encoders.image.train
    torch.manual_seed(t.seed)
    device = _device(wf.training.accelerator)
    model = build_classifier(wf.encoders.image, n_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    train_loader = _loader(wf, train_items, t.augment, shuffle=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(t, len(train_loader)))
    val_loader = _loader(wf, val_items, False, shuffle=False) if val_items else None
    history, best, best_state, waited = [], float("inf"), None, 0
    bar = tqdm(total=t.epochs, desc="train-image", unit="epoch", disable=None if progress else True)
    for epoch in range(1, t.epochs + 1):
        before = _cache_files(cache_dir(wf))
        model.train()
        total, seen = 0.0, 0
        for batch in train_loader:
            loss = torch.nn.functional.cross_entropy(model(batch["image"].to(device)), batch[LABEL_KEY].to(device))
            optimizer.zero_grad()
            loss.backward()
            if t.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
            optimizer.step()
            scheduler.step()
            total, seen = total + float(loss.detach()) * len(batch[LABEL_KEY]), seen + len(batch[LABEL_KEY])
        row = {"epoch": epoch, "train_loss": total / max(seen, 1)} | _validate(model, val_loader, device)
        row["decoded"] = _cache_files(cache_dir(wf)) - before  # series the cache did not have: 0 after epoch 1
        history.append(row)
        bar.update(1)
        bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", val_loss=f"{row['val_loss']:.3f}")
        score = row["val_loss"] if val_loader is not None else -epoch
        if score < best:
            best, best_state, waited = score, copy.deepcopy(model.state_dict()), 0
        elif (waited := waited + 1) >= t.patience:
            log.info("train-image: no better val_loss for %d epochs, stopped at epoch %d", t.patience, epoch)
            break
    bar.close()
    model.load_state_dict(best_state)
    return model.cpu().eval(), history


def _lr_factor(t: Any, steps_per_epoch: int) -> Any:
    """Step -> multiplier of ``t.lr``: linear warmup over ``t.warmup_epochs``, then cosine to 0 at the last step of
    ``t.epochs`` (``schedule: cosine``) or 1 (``constant``)."""
    import math

    warmup = round(t.warmup_epochs * steps_per_epoch)
    total = max(t.epochs * steps_per_epoch, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if t.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))

    return factor


def _device(accelerator: str):
    """CUDA when ``training.accelerator`` asks for a GPU (gpu, cuda, auto) and one is there; else the CPU."""
    import torch

    return torch.device("cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")


def _validate(model, loader, device) -> dict[str, float]:
    """Validation loss and accuracy (NaN without a validation split)."""
    import torch

    if loader is None:
        return {"val_loss": float("nan"), "val_accuracy": float("nan")}
    model.eval()
    losses, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for batch in loader:
            logits, y = model(batch["image"].to(device)), batch[LABEL_KEY].to(device)
            losses += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return {"val_loss": losses / n, "val_accuracy": correct / n}


@dataclass
class ImageTraining:
    """What train-image produced: the classes, per-epoch history, series counts, where the weights and head are."""

    classes: list[str]
    history: list[dict]
    best_epoch: int
    series: dict[str, int]
    failed: dict[str, str]
    weights: str
    head: str
    train: dict
    run_id: str | None = None  # its MLflow run (the pipeline's stage logs it)


def _save(wf: WorkflowSpec, model, classes, history, counts, failed, n_train, n_val) -> ImageTraining:
    """Weights (network only, as ``ImageEncoder.save_weights`` writes them) and head, atomically; the record."""
    from safetensors.torch import save

    from clinicmm.encode.imaging.encoder import weights_module

    out = Path(wf.encoders.image.weights_file())
    for path, module in ((out, weights_module(model[0])), (folder(wf) / "head.safetensors", model[1])):
        atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}))
    best = min(history, key=lambda h: h["val_loss"] if h["val_loss"] == h["val_loss"] else -h["epoch"])
    return ImageTraining(
        classes,
        history,
        best["epoch"],
        {"train": n_train, "val": n_val, **counts},
        failed,
        str(out),
        str(folder(wf) / "head.safetensors"),
        wf.encoders.image.train.model_dump(mode="json"),
    )
