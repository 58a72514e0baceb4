"""A 20-patient demo with a trained image encoder, built once per test session (shared by two test files)."""

from __future__ import annotations

from pathlib import Path

import pytest

_BUILT: dict[str, Path] = {}
TRAIN = "{epochs: 3, batch_size: 8, augment: false, lr: 0.001}"


def workflow_yaml(root: Path, dataset: Path, image: str) -> Path:
    path = root / f"wf_{len(list(root.glob('wf_*.yaml')))}.yaml"
    path.write_text(
        f"name: h9\ndataset: {dataset}\nworkdir: {root / 'work'}\nencoders:\n  image: {image}\n"
        f"models: [image]\nprimary_model: image\ntracking: {{uri: 'sqlite:///{root / 'mlruns' / 'mlflow.db'}', experiment: h9}}\n"
    )
    return path


def trained_workflow(factory: pytest.TempPathFactory):
    """(workflow spec, train-image record): resnet10 on (8, 32, 32), 3 epochs without augmentation."""
    from clinicmm.config import load_workflow
    from clinicmm.demo.generator import generate_demo
    from clinicmm.pipeline.stages import ingest_stage, train_image_stage

    if "root" not in _BUILT:
        root = factory.mktemp("trained_image")
        dataset = generate_demo(root / "cohort", patients=20, slices=8, size=32, seed=1)
        wf = load_workflow(
            workflow_yaml(root, dataset, f"{{network: resnet10, spatial_size: [8, 32, 32], train: {TRAIN}}}")
        )
        ingest_stage(wf)
        _BUILT.update(root=root, dataset=dataset, record=train_image_stage(wf, progress=False), wf=wf)
    return _BUILT["wf"], _BUILT["record"]


def dataset() -> Path:
    return _BUILT["dataset"]
