"""A registered-model stand-in for the serving tests: the clinicmm pyfunc saved by MLflow (models from code, the
bundle as its artifact, ``serving.data_roots`` in its ``model_config``) and loaded in process, plus a data layout
with one allowed root and a folder outside it that holds a canary (unique content that must never come back).

The bundle is untrained (a 1-layer ViT, the shipped MiniLM, a seeded ``concat`` network) with a conformal set
predictor, so scored rows carry a prediction set: only what the served model reads and returns matters here.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from dicom_fixtures import uniform, write_series

CLASSES = ["LUAD", "BRCA", "COAD"]
CANARY = f"CANARY-{uuid.uuid4().hex}"  # the content of every file outside the roots: never in any output
WATCHED_EVENTS = ("open", "os.scandir", "os.listdir")


@dataclass
class Layout:
    root: Path  # the one data root: a DICOM series, notes, links and a FIFO
    outside: Path  # next to the root, never allowed: canary files, a DICOM series, a FIFO
    series: list[Path]  # the DICOM files of root/series
    outside_series: list[Path]


@dataclass
class Served:
    model: object  # mlflow.pyfunc.PyFuncModel
    path: Path  # the saved model folder
    layout: Layout


class OpenedOutside:
    """Every path under ``outside`` that this process opened or listed while ``watching`` (a ``sys`` audit hook:
    hooks cannot be removed, so it is installed once and switched on and off)."""

    def __init__(self) -> None:
        self.outside = ""
        self.watching = False
        self.seen: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.watching or event not in WATCHED_EVENTS or not args:
            return
        target = args[0]
        if isinstance(target, bytes):
            target = os.fsdecode(target)
        if isinstance(target, str) and self.outside and os.path.realpath(target).startswith(self.outside):
            self.seen.append(target)


@pytest.fixture(scope="session")
def opened_outside() -> OpenedOutside:
    return OpenedOutside()


def _layout(base: Path) -> Layout:
    root, outside = base / "data", base / "outside"
    series = write_series(root / "series", uniform(40.0, (5, 8, 8)), patient="S1", body_part="ABDOMEN")
    outside_series = write_series(outside / "series", uniform(40.0, (5, 8, 8)), patient="S2", body_part="ABDOMEN")
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("FINAL DIAGNOSIS: invasive adenocarcinoma of the lung.")
    (root / "note.txt").write_text("IMPRESSION: mass in the right upper lobe.")
    for name in ("canary.txt", "canary.tsv", "canary.csv"):
        (outside / name).write_text(f"{CANARY}\tEGFR\n{CANARY}\t1.0\n")
    (outside / "notes").mkdir()
    (outside / "notes" / "b.txt").write_text(CANARY)
    os.mkfifo(outside / "fifo")
    os.mkfifo(root / "fifo.txt")
    os.symlink(outside / "canary.txt", root / "link.txt")
    os.symlink(outside / "series", root / "linkdir")
    os.symlink(outside / "notes", root / "linknotes")
    os.symlink(outside / "fifo", root / "fifolink.txt")
    os.symlink(outside_series[0], root / "series_link.dcm")
    return Layout(root, outside, series, outside_series)


def _bundle(folder: Path):
    import torch

    from clinicmm.config import EncodersSpec, ImageEncoderSpec, TextEncoderSpec, ViTSpec
    from clinicmm.encode.imaging.encoder import ImageEncoder, feature_dim
    from clinicmm.encode.text.encoder import TextEncoder
    from clinicmm.knowledge.graph import KnowledgeGraph
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.calibration import Calibration
    from clinicmm.training.conformal import SplitConformal
    from clinicmm.training.data import Standardizer

    vit = ViTSpec(hidden_size=16, mlp_dim=16, num_layers=1, num_heads=2)
    encoders = EncodersSpec(
        image=ImageEncoderSpec(network="vit", vit=vit, spatial_size=(8, 16, 16)),
        text=TextEncoderSpec(max_length=64),
    )
    dims = {"image": feature_dim(encoders.image), "note": 384, "omics": 4}
    scaler = Standardizer({m: [0.0] * d for m, d in dims.items()}, {m: [1.0] * d for m, d in dims.items()})
    fingerprints = {
        "image": ImageEncoder(encoders.image).fingerprint(),
        "note": TextEncoder(encoders.text).fingerprint(),
    }
    bundle = ModelBundle(
        "concat", CLASSES, dims, 8, 0.1, encoders, fingerprints, scaler, {}, KnowledgeGraph.default(),
        calibration=Calibration(conformal=SplitConformal("lac", 0.9, 0.9, 50)),
    )  # fmt: skip
    torch.manual_seed(0)
    bundle.state_dict = dict(bundle.build_model(load_weights=False).state_dict())
    return bundle.save(folder)


@pytest.fixture(scope="session")
def served(tmp_path_factory, one_thread_session) -> Served:
    """The pyfunc as ``register`` logs it (:func:`~clinicmm.serve.register.save_served_model`: model code, bundle
    artifact, signature, input example, serving.data_roots), loaded; without the code copy, so that the tests'
    patches of clinicmm's modules reach the model."""
    import mlflow.pyfunc

    from clinicmm.serve.register import save_served_model

    base = tmp_path_factory.mktemp("serving")
    layout = _layout(base)
    bundle = _bundle(base / "bundle")
    path = save_served_model(bundle, [str(layout.root)], base / "model", code=False)
    shutil.rmtree(bundle)  # the model folder holds its own copy
    return Served(mlflow.pyfunc.load_model(str(path)), path, layout)


@pytest.fixture(autouse=True)
def _no_data_roots_env(monkeypatch):
    """Only what a test sets counts: the runner's own $CLINICMM_DATA_ROOTS never leaks in."""
    monkeypatch.delenv("CLINICMM_DATA_ROOTS", raising=False)
