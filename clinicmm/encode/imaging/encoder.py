"""A frozen MONAI network (``spec.network``, 3D or 2D) that turns each DICOM series into one embedding vector.

Which network sees which image (``spec.spatial_dims``): ``auto`` (default) holds two networks of the same family,
:class:`ByKind` -- a 2D one for 2D images (one slice: US, DX, CR, MG, ...) and a 3D one for volumes -- whose
embeddings have the same length (``feature_dim``), so a cohort that mixes kinds still gives one image vector per
patient for the fusion; ``2`` runs a 2D network on every slice and averages; ``3`` runs a 3D network on
everything (a 2D image repeated along z).

The weights are either a deterministic random initialisation (``spec.seed``) -- a fixed random projection that
already separates coarse anatomy -- or a user's pretrained weights (``spec.weights``, ``load_weights``), or the
weights ``clinicmm train-image`` trained on the cohort's labels (``spec.train``; see
:mod:`clinicmm.encode.imaging.train`). ``fingerprint()`` changes
whenever anything that changes the embeddings changes (network, window, size, weights, library versions), so
cached embeddings can be checked against it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from clinicmm.config import ImageEncoderSpec, dump
from clinicmm.encode.imaging.transforms import IMAGE_KEY, PIPELINE_VERSION, image_pipeline
from clinicmm.errors import InputError, ModelError

DIMS = {
    "resnet10": 512,
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "densenet121": 1024,
}  # vit: vit.hidden_size
DENSENET_MIN_SIZE = 32  # DenseNet121 halves each axis five times
_HEAD_PREFIXES = ("fc.", "class_layers.")  # classification heads of the full networks: not used, ignored on load
_WRAPPER_PREFIXES = ("module.", "model.", "net.")


class _PooledFeatures(nn.Module):
    """DenseNet121's ``features`` followed by ReLU and global average pooling (as in its own head)."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = nn.functional.adaptive_avg_pool3d if x.ndim == 5 else nn.functional.adaptive_avg_pool2d
        return pool(torch.relu(self.features(x)), 1).flatten(1)


class _TokenMean(nn.Module):
    """A MONAI ViT (no classification token) whose patch tokens are averaged into one vector.

    The ViT is held as ``vit`` so its own keys (``patch_embedding.``, ``blocks.``, ``norm.``) are this module's
    keys under that prefix; :func:`weights_module` hands out the bare ViT for loading and saving weights.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0].mean(1)


class SliceWise(nn.Module):
    """A 2D network applied to every axial slice of ``(B, 1, z, y, x)``; the slice embeddings are averaged.

    Why averaged: the linear head of a trained encoder then scores the mean of its per-slice scores, which is
    what Grad-CAM explains slice by slice; a 2D image (one slice, or the same slice repeated) is unchanged by it.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, z = x.shape[:3]
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * z, c, *x.shape[3:])
        return self.backbone(slices).view(b, z, -1).mean(1)


def feature_dim(spec: ImageEncoderSpec) -> int:
    """Length of one embedding of ``spec.network``."""
    return spec.vit.hidden_size if spec.network == "vit" else DIMS[spec.network]


class ByKind(nn.Module):
    """``spatial_dims: auto``: a 2D network (``flat``) for one-slice inputs, a 3D one (``volume``) for the rest.

    ``(B, 1, z, y, x) -> (B, dim)``: a batch with ``z == 1`` (a 2D image, see
    :func:`clinicmm.encode.imaging.transforms.native_2d`) goes through ``flat`` on its ``(B, 1, y, x)`` slices, any
    other through ``volume``. Both are the same ``spec.network`` and give the same ``dim``. A batch must hold one
    kind only (:meth:`ImageEncoder.encode` and the training loader group them). The state dict is the two
    networks' under the prefixes ``volume.`` and ``flat.``.
    """

    def __init__(self, volume: nn.Module, flat: nn.Module) -> None:
        super().__init__()
        self.volume = volume
        self.flat = flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(x[:, :, 0]) if x.shape[2] == 1 else self.volume(x)

    def for_input(self, x: torch.Tensor) -> nn.Module:
        """The network that embeds ``x`` (``(1, z, y, x)`` or a batch of them): ``SliceWise(flat)`` for one slice
        (so a caller can feed it slices as a batch, as for ``spatial_dims: 2``), else ``volume``."""
        return SliceWise(self.flat) if x.shape[-3] == 1 else self.volume


def weights_module(net: nn.Module) -> nn.Module:
    """The MONAI network inside ``net`` whose state dict is saved, loaded and fingerprinted (no wrapper prefix)."""
    while isinstance(net, (SliceWise, _TokenMean)):
        net = net.backbone if isinstance(net, SliceWise) else net.vit
    return net


def build_network(spec: ImageEncoderSpec) -> nn.Module:
    """The feature network named by ``spec.network`` for ``spec.spatial_dims`` (``auto``: :class:`ByKind`, 2:
    :class:`SliceWise`, 3: the 3D network), ``(B, 1, z, y, x) -> (B, dim)``, initialised from ``spec.seed`` without
    touching global RNG (each network of ``ByKind`` as if it were built alone)."""
    if spec.spatial_dims == "auto":
        volume = _network(spec, 3)
        return ByKind(volume, _network(spec, 2)).eval().requires_grad_(False)
    net = _network(spec, spec.spatial_dims)
    net = SliceWise(net) if spec.spatial_dims == 2 else net
    return net.eval().requires_grad_(False)


def _network(spec: ImageEncoderSpec, dims: int) -> nn.Module:
    """The bare MONAI network of ``spec.network`` in ``dims`` dimensions (input ``(B, 1, *size)``), seeded."""
    from monai.networks import nets

    size = tuple(spec.spatial_size[3 - dims :])  # what the network sees: the volume, or one (rows, columns) slice
    if spec.network == "densenet121" and min(size) < DENSENET_MIN_SIZE:
        raise ModelError(
            f"encoders.image.spatial_size {tuple(spec.spatial_size)}: densenet121 needs at least "
            f"{DENSENET_MIN_SIZE} on every axis it convolves; raise spatial_size or use network: resnet10"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.network == "densenet121":
            net: nn.Module = _PooledFeatures(
                nets.DenseNet121(spatial_dims=dims, in_channels=1, out_channels=1).features
            )
        elif spec.network == "vit":
            net = _TokenMean(_vit(spec, size))
        else:
            factory = getattr(nets, spec.network)
            net = factory(spatial_dims=dims, n_input_channels=1, feed_forward=False)
    return net


def _vit(spec: ImageEncoderSpec, size: tuple[int, ...]) -> nn.Module:
    """``monai.networks.nets.ViT`` without classification token; ``ModelError`` naming the bad setting."""
    from monai.networks.nets import ViT

    from clinicmm.extras import require

    require("einops")  # MONAI's ViT needs it: the 'vit' extra
    v = spec.vit
    patch = tuple(v.patch_size[3 - len(size) :]) if v.patch_size else tuple(max(1, s // 4) for s in size)
    if any(s % p for s, p in zip(size, patch)):
        raise ModelError(
            f"encoders.image.vit.patch_size {patch} does not divide the network input {size} "
            "(spatial_size); pick a patch size that divides every axis"
        )
    if v.hidden_size % v.num_heads:
        raise ModelError(
            f"encoders.image.vit: hidden_size {v.hidden_size} is not a multiple of num_heads {v.num_heads}"
        )
    return ViT(
        in_channels=1,
        img_size=size,
        patch_size=patch,
        hidden_size=v.hidden_size,
        mlp_dim=v.mlp_dim,
        num_layers=v.num_layers,
        num_heads=v.num_heads,
        classification=False,
        spatial_dims=len(size),
    )


class ImageEncoder:
    """Embeds DICOM series (lists of slice files) with a frozen network (3D, 2D or one per kind): ``(N, dim)``."""

    def __init__(self, spec: ImageEncoderSpec, device: str | torch.device = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.network = build_network(spec).to(self.device)
        self.pipeline = image_pipeline(spec)
        self._weights_hash: str | None = None
        weights = spec.weights_file()
        if spec.train is not None and weights is not None and not Path(weights).is_file():
            raise ModelError(
                f"{weights}: no trained image weights yet (encoders.image.train is set). Run "
                "`clinicmm train-image WORKFLOW.yaml` (or `clinicmm run`) first."
            )
        if weights is not None:
            self.load_weights(weights)

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return feature_dim(self.spec)

    # --------------------------------------------------------------------------------------- identity

    def fingerprint(self) -> str:
        """sha256 of the spec (less ``batch_size``, which does not change embeddings), the monai and torch versions
        and the network weights."""
        import monai

        spec = {
            k: v for k, v in dump(self.spec).items() if k not in ("batch_size", "weights", "train")
        }  # weights: by content
        if self.spec.spatial_dims == 3:  # settings added later leave the fingerprints of older configs unchanged
            spec.pop("spatial_dims")
        if self.spec.network != "vit":
            spec.pop("vit")
        digest = hashlib.sha256()
        digest.update(json.dumps(spec, sort_keys=True).encode())
        digest.update(f"monai={monai.__version__};torch={torch.__version__};pipeline={PIPELINE_VERSION}".encode())
        digest.update(self._weights_digest().encode())
        return digest.hexdigest()

    def _weights_digest(self) -> str:
        if self._weights_hash is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(weights_module(self.network).state_dict().items()):
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._weights_hash = digest.hexdigest()
        return self._weights_hash

    # ---------------------------------------------------------------------------------------- weights

    def load_weights(self, path: Path | str) -> None:
        """Load a user's pretrained weights from ``.safetensors`` or ``.pt``/``.pth`` (a state dict).

        ``module.``-style wrapper prefixes are stripped and classification-head keys (``fc.``,
        ``class_layers.``) ignored; any other missing, unexpected or mis-shaped key raises ``ModelError``.
        """
        path = Path(path)
        state = _strip(_read_state(path))
        module = weights_module(self.network)
        if isinstance(module, ByKind) and not any(k.startswith(("volume.", "flat.")) for k in state):
            module = self._one_of(module, state, path)  # a single network's weights: the kind they fit
        own = module.state_dict()
        problems = _mismatches(own, state)
        if problems:
            raise ModelError(
                f"{path}: these weights do not fit encoders.image.network {self.spec.network!r} ({problems}). "
                "Use weights saved from the same MONAI network with 1 input channel."
            )
        module.load_state_dict(state, strict=True)
        self._weights_hash = None

    def _one_of(self, both: ByKind, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
        """``spatial_dims: auto`` given one bare network's weights: the network of ``both`` they fit (3D first).

        The other kind keeps its seeded initialisation, which is logged: a 3D checkpoint says nothing about 2D
        images. Fits neither: ``ModelError`` naming both mismatches."""
        import logging

        problems = {}
        for name in ("volume", "flat"):
            module = weights_module(getattr(both, name))
            problems[name] = _mismatches(module.state_dict(), state)
            if not problems[name]:
                other = "2D images" if name == "volume" else "volumes (3D series)"
                logging.getLogger("clinicmm").warning(
                    "%s: %s weights; %s keep the seeded %s (spatial_dims: auto). Set spatial_dims: %s to "
                    "use these weights for every image.",
                    path, "3D" if name == "volume" else "2D", other, "2D network" if name == "volume" else "3D network",
                    3 if name == "volume" else 2,
                )  # fmt: skip
                return module
        raise ModelError(
            f"{path}: these weights fit neither the 3D nor the 2D {self.spec.network!r} of spatial_dims: auto "
            f"(3D: {problems['volume']}; 2D: {problems['flat']}). Use weights saved from the same MONAI network "
            "with 1 input channel, or set spatial_dims to the network's dimensions."
        )

    def save_weights(self, path: Path | str) -> None:
        """Save the network weights as ``.safetensors`` (readable by ``load_weights``)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in weights_module(self.network).state_dict().items()}
        save_file(state, str(path))

    # --------------------------------------------------------------------------------------- encoding

    def preprocess(self, files: list[str]) -> torch.Tensor:
        """The pipeline output for one series, ``(1, z, y, x)`` float32; ``InputError`` naming the series if bad."""
        if not files:
            raise InputError("empty series: no slice files to load; re-run the DICOM index")
        try:
            return self.pipeline({IMAGE_KEY: [str(f) for f in files]})[IMAGE_KEY]
        except Exception as exc:  # noqa: BLE001 -- any failure becomes one message about this series
            folder = Path(files[0]).parent
            raise InputError(
                f"series in {folder} ({len(files)} files) could not be loaded: {root_cause(exc)}; "
                "re-export the series or remove its bad files and re-index"
            ) from exc

    def encode(self, series: list[list[str]], progress: bool = True) -> tuple[np.ndarray, dict[int, str]]:
        """Embed each series: ``(len(series), dim)`` float32, and ``{index: reason}`` for those that failed.

        A failed series gets a NaN row and its reason; the others are still encoded, ``spec.batch_size`` at a time.
        """
        out = np.full((len(series), self.dim), np.nan, dtype=np.float32)
        failed: dict[int, str] = {}
        bar = tqdm(
            total=len(series),
            desc="Encoding images",
            unit="series",
            file=sys.stderr,
            disable=None if progress else True,
        )
        for start in range(0, len(series), self.spec.batch_size):
            stop = min(start + self.spec.batch_size, len(series))
            tensors, done = [], []
            for i in range(start, stop):
                try:
                    tensors.append(self.preprocess(series[i]))
                    done.append(i)
                except InputError as exc:
                    failed[i] = str(exc)
            for shape in dict.fromkeys(t.shape for t in tensors):  # one network input shape (kind) per forward
                group = [j for j, t in enumerate(tensors) if t.shape == shape]
                out[[done[j] for j in group]] = self._forward(torch.stack([tensors[j] for j in group]))
            bar.update(stop - start)
        bar.close()
        return out, failed

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.network(batch.to(self.device)).float().cpu().numpy()


# ------------------------------------------------------------------------------------------------ helpers


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a .safetensors or .pt/.pth file; ``ModelError`` if it cannot be read."""
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found. Pass the path of a .safetensors or .pt file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        elif path.suffix in (".pt", ".pth"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ModelError(f"{path}: unsupported weights format {path.suffix!r}; use .safetensors, .pt or .pth")
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``) and classification-head keys."""
    out = {}
    for name, tensor in state.items():
        for prefix in _WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
        if not name.startswith(_HEAD_PREFIXES):
            out[name] = tensor
    return out


def _mismatches(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """A short description of missing, unexpected and mis-shaped keys ('' when the state fits)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if state[k].shape != own[k].shape]  # fmt: skip
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            parts.append(f"{len(items)} {label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}")
    return "; ".join(parts)


def root_cause(exc: BaseException) -> str:
    """The innermost error of a chain (MONAI wraps errors in 'applying transform ...'), shortened."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = f"{type(exc).__name__}: {exc}"
    if "Traceback (most recent call last)" in text:  # LoadImage puts the reader's traceback in its message
        text = [line for line in text.splitlines() if line.strip()][-1]
    text = " ".join(text.split())
    return f"{text[:300]}{'...' if len(text) > 300 else ''}"
