"""Grad-CAM (``monai.visualize.GradCAM``) of one patient's image: ``clinicmm explain WORKFLOW.yaml --patient ID``.

What is explained: the **trained image encoder's own classifier** (network + linear head from
``clinicmm train-image``), for the class it predicts -- not the fusion model, whose image input is a pooled
vector with no spatial layout left. An untrained (seeded or user-pretrained) encoder has no head for the cohort's
classes, so its saliency would not mean anything: without the train-image stage this module refuses with a
message saying how to run it. Convolutional networks only (ResNets, DenseNet121); a ViT has no convolutional
feature map for Grad-CAM to weight.

Which layer: the deepest convolutional block whose feature map still has at least ``MIN_MAP_SIZE`` (7) cells
along both in-plane axes (rows, columns) for this input size -- ``layer4``, else ``layer3``, ``layer2``,
``layer1`` for the ResNets; ``features.norm5``, else ``features.denseblock3`` ... for DenseNet121. A ResNet's
last block halves the input four times, so at 32 px it is 2 x 2 and its map, however upsampled, can only light
up a corner; an earlier block trades some class specificity for a map that can find a lesion. If no block is
large enough, the one with the largest map is used. The layer and its map size are returned with the PNG.

The map is upsampled to the network input ``(z, y, x)`` by linear interpolation (``torch.nn.functional.interpolate``,
``bilinear`` for slice-wise 2D, ``trilinear`` for 3D, ``align_corners=False``: cell centres sit at pixel centres)
and scaled to [0, 1] over the whole volume. The PNG shows the slice with the largest total saliency, drawn in the
row/column layout the image was stored in (:func:`clinicmm.encode.imaging.transforms.stored_view`): the
radiological display for an axial slice series, a 2D or multi-frame object as stored, never flipped. Its file
name carries the patient's keyed pseudonym (:mod:`clinicmm.privacy.pseudonym`), never the id, and it is logged as
an artifact of the ``train-image`` run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinicmm.config import WorkflowSpec
from clinicmm.errors import InputError

log = logging.getLogger("clinicmm")
MIN_MAP_SIZE = 7  # fewest feature-map cells along rows and along columns for a layer to be explained
RESNET_LAYERS = ("layer4", "layer3", "layer2", "layer1")  # deepest first
CANDIDATE_LAYERS = {
    "densenet121": ("features.norm5", "features.denseblock3", "features.denseblock2", "features.denseblock1")
}
UNTRAINED = (
    "Grad-CAM explains the image encoder's classification head, which only `clinicmm train-image` trains; "
    "an untrained encoder's saliency is not meaningful. Add `train: {{epochs: 10}}` under encoders.image "
    "and run `clinicmm train-image {workflow}` first."
)


def classifier(wf: WorkflowSpec, n_classes: int, files: list[str] | None = None):
    """The trained classifier (ImageEncoder with its trained weights + head) and whether it runs slice by slice.

    For ``spatial_dims: 2`` the returned module is the 2D backbone + head, applied to the slices as a batch: the
    encoder averages slice features and the head is linear, so the mean of the per-slice logits is the
    patient's logit. For ``spatial_dims: auto`` it is the network of ``files``' kind (2D image: the 2D network,
    slice-wise; else the 3D one; no files: the 3D one).
    """
    from safetensors.torch import load_file
    from torch import nn

    from clinicmm.encode.imaging import train
    from clinicmm.encode.imaging.encoder import ByKind, ImageEncoder, SliceWise, feature_dim

    encoder = ImageEncoder(wf.encoders.image)  # loads the trained weights
    head = nn.Linear(feature_dim(wf.encoders.image), n_classes)
    head.load_state_dict(load_file(str(train.folder(wf) / "head.safetensors")))
    network = encoder.network
    if isinstance(network, ByKind):  # spatial_dims auto: the network that embeds this series
        network = network.for_input(encoder.preprocess(files)) if files else network.volume
    slice_wise = isinstance(network, SliceWise)
    body = network.backbone if slice_wise else network
    return encoder, nn.Sequential(body, head).eval().requires_grad_(True), slice_wise


@dataclass
class Saliency:
    """Grad-CAM of one series: the network input ``volume`` and ``saliency`` (both ``(z, y, x)``, pipeline layout),
    the head's class ``probs``, the ``layer`` explained and its feature-map size ``map_shape``."""

    volume: np.ndarray
    saliency: np.ndarray
    probs: np.ndarray
    layer: str
    map_shape: tuple[int, ...]


def saliency(wf: WorkflowSpec, files: list[str], n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM of one series: the input volume ``(z, y, x)``, the saliency ``(z, y, x)`` in [0, 1] and the
    class probabilities of the trained head (see :func:`saliency_of` for the layer explained)."""
    found = saliency_of(wf, files, n_classes)
    return found.volume, found.saliency, found.probs


def saliency_of(wf: WorkflowSpec, files: list[str], n_classes: int) -> Saliency:
    """:class:`Saliency` of one series for the class the trained head predicts."""
    import torch

    encoder, model, slice_wise = classifier(wf, n_classes, files)
    volume = encoder.preprocess(files)  # (1, z, y, x)
    x = volume.permute(1, 0, 2, 3) if slice_wise else volume[None]  # slices as the batch, or one volume
    with torch.no_grad():
        logits = model(x).mean(0, keepdim=True)
    probs = torch.softmax(logits, 1)[0].numpy()
    layers = [f"0.{name}" for name in CANDIDATE_LAYERS.get(wf.encoders.image.network, RESNET_LAYERS)]
    maps, layer, shape = grad_cam(model, x, layers, int(probs.argmax()))
    return Saliency(volume[0].numpy(), maps[:, 0] if slice_wise else maps[0], probs, layer, shape)


def grad_cam(
    model, x, layers: Sequence[str], class_idx: int, min_size: int = MIN_MAP_SIZE
) -> tuple[np.ndarray, str, tuple[int, ...]]:
    """Grad-CAM of ``model`` for ``class_idx`` on the batch ``x`` ``(B, 1, *spatial)``: maps ``(B, *spatial)``
    scaled jointly to [0, 1], the layer explained (see :func:`pick_layer`) and its feature-map size."""
    from monai.visualize import GradCAM

    layer, shape = pick_layer(model, x, layers, min_size)
    cam = GradCAM(nn_module=model, target_layers=layer, upsampler=upsampler, postprocessing=lambda m: m)
    maps = cam(x, class_idx=class_idx)[:, 0].detach().float().numpy()  # scaled below, jointly
    top = float(maps.max())
    return (maps / top if top > 0 else maps), layer, shape


def pick_layer(model, x, layers: Sequence[str], min_size: int = MIN_MAP_SIZE) -> tuple[str, tuple[int, ...]]:
    """The first of ``layers`` (deepest first) whose output on ``x`` has at least ``min_size`` cells along the last
    two (row, column) axes, else the one with the most; and that layer's spatial output shape."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[2:]))
        )
        for name in layers
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    for name in layers:
        if min(shapes[name][-2:]) >= min_size:
            return name, shapes[name]
    best = max(layers, key=lambda name: int(np.prod(shapes[name][-2:])))
    log.warning(
        "Grad-CAM: no layer's map reaches %d x %d for input %s; using %s (%s): raise encoders.image.spatial_size "
        "for a finer map", min_size, min_size, tuple(x.shape[2:]), best.removeprefix("0."), shapes[best],
    )  # fmt: skip
    return best, shapes[best]


def upsampler(size: Sequence[int]) -> Callable:
    """Feature map -> input size: bilinear (2D) or trilinear (3D) interpolation, ``align_corners=False``."""
    from torch.nn import functional

    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return lambda m: functional.interpolate(m, size=tuple(size), mode=mode, align_corners=False)


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
    from clinicmm.encode.imaging.transforms import as_stored, stored_view

    found = saliency_of(wf, files, len(record["classes"]))
    volume, sal, probs = found.volume, found.saliency, found.probs
    k = int(sal.reshape(len(sal), -1).sum(1).argmax())
    view = stored_view(files)  # draw it the way it was stored (radiological display for an axial series)
    name = pseudonym(patient, workflow_key(wf))
    folder = Path(out) if out is not None else wf.work / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    predicted = record["classes"][int(probs.argmax())]
    png = overlay_png(
        as_stored(volume[k], view),
        as_stored(sal[k], view),
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
        "layer": found.layer.removeprefix("0."),
        "map_shape": list(found.map_shape),
    }


def overlay_png(image: np.ndarray, sal: np.ndarray, title: str, path: Path) -> Path:
    """:func:`overlay_figure` saved as a PNG at ``path``."""
    from clinicmm.tracking.plots import save_figure

    return save_figure(overlay_figure(image, sal, title), path)


def overlay_figure(image: np.ndarray, sal: np.ndarray, title: str):
    """One slice (grey) with its saliency (jet, translucent), drawn exactly as given -- row 0 at the top, column 0
    on the left, no flip (orient it first with :func:`clinicmm.encode.imaging.transforms.as_stored`); matplotlib
    without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 4))
    ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, origin="upper", interpolation="nearest")
    shown = ax.imshow(sal, cmap="jet", alpha=0.45, vmin=0, vmax=1, origin="upper", interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="saliency")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return fig


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
