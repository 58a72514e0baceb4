"""Grad-CAM (``monai.visualize.GradCAM``) of one patient's image: ``clinicmm explain WORKFLOW.yaml --patient ID``.

What is explained: the **trained image encoder's own classifier** (network + linear head from
``clinicmm train-image``), for the class it predicts -- not the fusion model, whose image input is a pooled
vector with no spatial layout left. An untrained (seeded or user-pretrained) encoder has no head for the cohort's
classes, so its saliency would not mean anything: without the train-image stage this module refuses with a
message saying how to run it. Convolutional networks only (ResNets, DenseNet121); a ViT has no convolutional
feature map for Grad-CAM to weight.

The map is taken at the last convolutional block, upsampled to the network input ``(z, y, x)`` and scaled to
[0, 1] over the whole volume; the PNG shows the slice with the largest total saliency, in the radiological
display of :mod:`clinicmm.encode.imaging.transforms`. Its file name carries the patient's keyed pseudonym
(:mod:`clinicmm.privacy.pseudonym`), never the id, and it is logged as an artifact of the ``train-image`` run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from clinicmm.config import WorkflowSpec
from clinicmm.errors import InputError

log = logging.getLogger("clinicmm")
TARGET_LAYERS = {"densenet121": "features.norm5"}  # default: "layer4", the ResNets' last block
UNTRAINED = (
    "Grad-CAM explains the image encoder's classification head, which only `clinicmm train-image` trains; "
    "an untrained encoder's saliency is not meaningful. Add `train: {{epochs: 10}}` under encoders.image "
    "and run `clinicmm train-image {workflow}` first."
)


def classifier(wf: WorkflowSpec, n_classes: int):
    """The trained classifier (ImageEncoder with its trained weights + head) and whether it runs slice by slice.

    For ``spatial_dims: 2`` the returned module is the 2D backbone + head, applied to the slices as a batch: the
    encoder averages slice features and the head is linear, so the mean of the per-slice logits is the
    patient's logit.
    """
    from safetensors.torch import load_file
    from torch import nn

    from clinicmm.encode.imaging import train
    from clinicmm.encode.imaging.encoder import ImageEncoder, SliceWise, feature_dim

    encoder = ImageEncoder(wf.encoders.image)  # loads the trained weights
    head = nn.Linear(feature_dim(wf.encoders.image), n_classes)
    head.load_state_dict(load_file(str(train.folder(wf) / "head.safetensors")))
    network = encoder.network
    slice_wise = isinstance(network, SliceWise)
    body = network.backbone if slice_wise else network
    return encoder, nn.Sequential(body, head).eval().requires_grad_(True), slice_wise


def saliency(wf: WorkflowSpec, files: list[str], n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM of one series: the input volume ``(z, y, x)``, the saliency ``(z, y, x)`` in [0, 1] and the
    class probabilities of the trained head."""
    import torch
    from monai.visualize import GradCAM

    encoder, model, slice_wise = classifier(wf, n_classes)
    volume = encoder.preprocess(files)  # (1, z, y, x)
    x = volume.permute(1, 0, 2, 3) if slice_wise else volume[None]  # slices as the batch, or one volume
    with torch.no_grad():
        logits = model(x).mean(0, keepdim=True)
    probs = torch.softmax(logits, 1)[0].numpy()
    target = TARGET_LAYERS.get(wf.encoders.image.network, "layer4")
    cam = GradCAM(nn_module=model, target_layers=f"0.{target}", postprocessing=lambda m: m)  # scaled below, jointly
    maps = cam(x, class_idx=int(probs.argmax()))
    maps = (maps[:, 0] if slice_wise else maps[0, 0]).detach().float().numpy()
    top = float(maps.max())
    return volume[0].numpy(), (maps / top if top > 0 else maps), probs


def explain_patient(wf: WorkflowSpec, record: dict, patient: str, out: Path | None = None) -> dict:
    """Grad-CAM PNG of ``patient``'s image in ``out`` (default ``workdir/explain``), logged to the train-image run.

    ``record``: the train-image stage's record (its classes and run id); :func:`clinicmm.pipeline.run.explain_image`
    checks that it is current before it calls this."""
    from clinicmm.ingest.cohort import Cohort, patient_inputs, series_list
    from clinicmm.privacy.pseudonym import pseudonym, workflow_key

    cohort = Cohort.load(wf.work / "ingest")
    chosen = series_list(patient_inputs(cohort, [patient])["series"][0])
    files = chosen[0] if chosen else []  # with several series per patient: the best one by imaging.prefer
    if not files:
        raise InputError(
            f"patient {patient!r}: no usable image series in {wf.work / 'ingest'} (unknown id, or the "
            "series was skipped: see the ingest report). Check the id in column patient_id of cohort.parquet."
        )
    volume, sal, probs = saliency(wf, files, len(record["classes"]))
    k = int(sal.reshape(len(sal), -1).sum(1).argmax())
    name = pseudonym(patient, workflow_key(wf))
    folder = Path(out) if out is not None else wf.work / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    predicted = record["classes"][int(probs.argmax())]
    png = overlay_png(
        volume[k],
        sal[k],
        f"Grad-CAM: {predicted} (p={probs.max():.2f}), slice {k + 1}/{len(sal)}",
        folder / f"gradcam_{name}.png",
    )
    run_id = _log(wf, record.get("run_id"), png)
    return {
        "png": str(png),
        "predicted": predicted,
        "probability": float(probs.max()),
        "slice": k,
        "pseudonym": name,
        "run_id": run_id,
        "saliency_range": [float(sal.min()), float(sal.max())],
    }


def overlay_png(image: np.ndarray, sal: np.ndarray, title: str, path: Path) -> Path:
    """One slice (grey) with its saliency (jet, translucent), radiological display; matplotlib without pyplot."""
    from matplotlib.figure import Figure

    from clinicmm.tracking.plots import save_figure

    fig = Figure(figsize=(4.2, 4))
    ax = fig.subplots()
    ax.imshow(image[::-1, ::-1], cmap="gray", vmin=0, vmax=1)
    shown = ax.imshow(sal[::-1, ::-1], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="saliency")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _log(wf: WorkflowSpec, run_id: str | None, png: Path) -> str | None:
    """The PNG as artifact ``gradcam/<name>`` of the train-image run (None when that run is gone)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clinicmm.tracking.setup import configure

    if not run_id:
        return None
    configure(wf.tracking)
    try:
        MlflowClient().log_artifact(run_id, str(png), "gradcam")
    except MlflowException as exc:
        log.warning(
            "explain: could not log %s to MLflow run %s (%s); the PNG is in %s", png.name, run_id, exc, png.parent
        )
        return None
    return run_id
