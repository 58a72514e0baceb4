"""The MONAI pipeline that turns one DICOM series (a list of slice files) into a fixed-size network input.

Axis order of the output: ``(1, z, y, x)`` = ``(channel, S, A, R)``. MONAI loads and reorients the volume to
RAS, whose array axes are ``(x, y, z)``; the last step transposes it so that ``spatial_size`` (and ``pixdim``)
in ``ImageEncoderSpec`` read as ``(slices, rows, columns)`` -- the config default ``(32, 64, 64)`` means 32
slices of 64 x 64. For a slice series, ``out[0, k]`` is the k-th axial slice from inferior to superior; its row
index grows towards anterior and its column index towards the patient's right, so ``out[0, k].flip(0).flip(1)``
(numpy: ``[::-1, ::-1]``) is the usual radiological display of a standard axial slice (anterior up, patient right
on the image left), as stored in the DICOM files. A 2D or multi-frame object keeps its stored rows and columns
(its affine is diagonal, so reorientation leaves it alone): drawn as is, not flipped. :func:`stored_view` says
which of the two (or another stored layout) applies to a given series.

Intensities: the reader applies RescaleSlope/RescaleIntercept (so CT values are Hounsfield units). CT: the window
``spec.window = (lo, hi)`` maps lo HU -> 0 and hi HU -> 1, clipped. Every other modality (MR, PET, 2D images)
has no absolute scale, so its ``spec.percentiles`` (default 1st and 99th) map to 0 and 1, clipped.

Single-file objects (see ``clinicmm.ingest.dicom``): a multi-frame volume (enhanced CT/MR, tomosynthesis) is read
with its frames as slices; a 2D image (CR, DX, MG, US, ...; the series index's ``image_kind`` ``2d``) becomes one
slice -- colour converted to luminance, a cine loop reduced to its middle frame -- padded to the aspect ratio of
``spatial_size[1:]`` (so it is not stretched) and resized in plane to ``spatial_size[1:]``. With
``spatial_dims: auto`` (the default) or ``2`` it stays **one slice**, ``(1, 1, rows, columns)``, for a 2D network
(see :func:`native_2d`); only ``spatial_dims: 3`` repeats it along z to ``spatial_size[0]`` so a 3D network can
embed it (the behaviour before native 2D).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

from clinicmm.config import ImageEncoderSpec

IMAGE_KEY = "image"
MODALITY_KEY = "modality"
KIND_KEY = "image_kind"
PIPELINE_VERSION = "3"  # part of the image encoder's fingerprint: bump when the pipeline's output changes
DEFER_BYTES = 64 * 1024  # values larger than this (pixel data) are read from the file only when used
HEAD_KEY = "_dicom_head"  # the first file's dataset, handed from ImagePipeline to the loader (never in the output)


@functools.cache
def _series_reader_class() -> type:
    """``SeriesReader``: MONAI's PydicomReader reading a *list of files* as one series (built lazily: monai)."""
    import numpy as np
    import pydicom
    from monai.data import PydicomReader
    from monai.utils import ensure_tuple

    class SeriesReader(PydicomReader):
        """PydicomReader that stacks the given files as the slices of one volume.

        MONAI's reader stacks a list of files as *channels* and, for a folder, orders slices by InstanceNumber;
        here the list is one series, ordered by position along the slice normal (InstanceNumber is renumbered
        in memory to that order, which is what the parent's stacking uses), so the affine is right even when
        InstanceNumber is missing or unordered.
        """

        def read(self, data: Sequence[str] | str, **kwargs: Any) -> list:
            files = [str(f) for f in ensure_tuple(data)]
            options = {**self.kwargs, **kwargs}
            datasets = [_read(f, options) for f in files]
            normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
            order = sorted(range(len(files)), key=lambda i: float(np.dot(normal, datasets[i].ImagePositionPatient)))
            volumes: list[list[int]] = []  # positions repeat (imaging.volume: mean): the k-th file at one is volume k
            seen: dict[tuple, int] = {}
            for i in order:
                at = tuple(round(float(v), 3) for v in datasets[i].ImagePositionPatient)
                seen[at] = k = seen.get(at, -1) + 1
                volumes += [[]] * (k == len(volumes))
                volumes[k].append(i)
            for volume in volumes:
                for rank, i in enumerate(volume, start=1):
                    datasets[i].InstanceNumber = rank
            self.filenames = [[files[i] for i in volume] for volume in volumes]
            self.has_series = True
            return [[datasets[i] for i in volume] for volume in volumes]  # several volumes: stacked as channels

        def _get_array_data(self, img: Any, filename: Any) -> Any:
            try:
                return super()._get_array_data(img, filename)
            except Exception as exc:  # noqa: BLE001 -- name the slice file that failed
                raise ValueError(f"{filename}: cannot decode pixel data ({type(exc).__name__}: {exc})") from None

    def _read(path: str, options: dict) -> Any:
        try:
            return pydicom.dcmread(path, **options)
        except Exception as exc:  # noqa: BLE001 -- name the slice file that failed
            raise ValueError(f"{path}: cannot read the DICOM file ({type(exc).__name__}: {exc})") from None

    return SeriesReader


def load_series(**kwargs: Any) -> Any:
    """``LoadImaged`` that reads every value with ``SeriesReader`` only.

    Given a reader, MONAI's LoadImage still falls back to its default readers when that one fails -- the stock
    PydicomReader would then read a broken series' files as channels. Passing the reader at call time skips the
    fallback, so a bad series fails with the error of the file at fault.
    """
    from monai.transforms import LoadImaged

    series_reader = _series_reader_class()()

    class LoadSeriesd(LoadImaged):
        def __call__(self, data: Any, reader: Any = None) -> Any:
            return super().__call__(data, reader or series_reader)

    with warnings.catch_warnings():  # LoadImage builds its default readers too; this one warns without a GPU codec
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*", category=UserWarning)
        return LoadSeriesd(reader=series_reader, **kwargs)


def _read_object(path: str, ds: Any = None) -> tuple[Any, Any]:
    """One multi-frame or 2D DICOM file as a ``(frames, rows, columns)`` float32 array and a diagonal affine.

    ``ds``: the file's dataset when the caller has already read it (its deferred pixel data is loaded here), so
    the header is not parsed a second time.
    """
    import numpy as np
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        ds = pydicom.dcmread(path) if ds is None else ds
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 -- name the file and its transfer syntax
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        named = f" (transfer syntax {syntax.name})" if syntax is not None else ""
        raise ValueError(f"{path}: cannot decode pixel data{named} ({type(exc).__name__}: {exc})") from None
    frames = int(ds.get("NumberOfFrames") or 1)
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if pixels.shape[-1] in (3, 4) and (
        int(ds.get("SamplesPerPixel") or 1) > 1 or pixels.ndim == (4 if frames > 1 else 3)
    ):
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # luminance
    else:
        pixels = apply_modality_lut(pixels, ds).astype(np.float32)
    if frames == 1:
        pixels = pixels[None]
    spacing = _pixel_spacing(ds)
    try:
        depth = abs(float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)) or 1.0
    except (TypeError, ValueError):
        depth = 1.0
    return pixels, np.diag([spacing[1], spacing[0], depth, 1.0])


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    """(row, column) spacing in mm from PixelSpacing, ImagerPixelSpacing or the shared functional groups; else 1."""
    for item in [
        ds,
        *[
            g.PixelMeasuresSequence[0]
            for g in (ds.get("SharedFunctionalGroupsSequence") or [])[:1]
            if g.get("PixelMeasuresSequence")
        ],
    ]:
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = item.get(keyword)
            if value is not None and len(value) == 2:
                try:
                    rows, cols = float(value[0]), float(value[1])
                except (TypeError, ValueError):
                    continue
                if rows > 0 and cols > 0:
                    return rows, cols
    return 1.0, 1.0  # no usable spacing (missing, zero or malformed): one pixel = 1 mm


def load_dicom(keys: str) -> Any:
    """A transform that loads one image per sample: a slice series with ``SeriesReader``, else one DICOM object.

    Output: a channel-first MetaTensor ``(1, x, y, z)`` with its affine, plus the sample's ``modality`` (DICOM
    Modality) and ``image_kind`` ('volume', 'multiframe', '2d') for the steps that depend on them.
    """
    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose, EnsureChannelFirstd, MapTransform
    from monai.utils import ensure_tuple

    from clinicmm.ingest.dicom import image_kind, is_mosaic, read_mosaic

    series = Compose([load_series(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys)])

    class LoadDicomd(MapTransform):
        def __call__(self, data: Any) -> Any:
            d = dict(data)
            for key in self.key_iterator(d):
                files = [str(f) for f in ensure_tuple(d[key])]
                head = d.pop(HEAD_KEY, None)  # the header ImagePipeline read to pick its path: not read again
                # read once: a volume's first slice skips its pixel data, a 2D or multi-frame object loads it below
                head = _read_head(files[0]) if head is None else head
                d[MODALITY_KEY] = str(head.get("Modality", "") or "").strip().upper()
                d[KIND_KEY] = kind = image_kind(head)
                if kind == "volume" and is_mosaic(head):  # Siemens: a volume's slices tiled in one frame per file
                    pixels, affine = read_mosaic(files)
                    d[key] = MetaTensor(torch.as_tensor(pixels[None]), affine=torch.as_tensor(affine, dtype=torch.float64),
                                        meta={"filename_or_obj": files[0]})  # fmt: skip
                    continue
                if kind == "volume":
                    image = series({key: files})[key]
                    image = _one_slice_volume(image) if image.ndim == 3 else image
                    d[key] = image.mean(dim=0, keepdim=True) if image.shape[0] > 1 else image  # several volumes: mean
                    continue
                pixels, affine = _read_object(
                    files[0], head
                )  # a 2D series uses its first image (see clinicmm.ingest.dicom)
                if kind == "2d" and pixels.shape[0] > 1:
                    pixels = pixels[pixels.shape[0] // 2][None]  # a cine loop: its middle frame
                volume = np.ascontiguousarray(pixels.transpose(2, 1, 0))[None]  # (frames, rows, cols) -> (1, x, y, z)
                d[key] = MetaTensor(torch.as_tensor(volume), affine=torch.as_tensor(affine, dtype=torch.float64),
                                    meta={"filename_or_obj": files[0]})  # fmt: skip
            return d

    return LoadDicomd(keys=keys)


def _read_head(path: str) -> Any:
    """The first file's dataset, its pixel data deferred when large; ``ValueError`` naming the file if unreadable."""
    import pydicom

    try:
        return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read the DICOM file ({type(exc).__name__}: {exc})") from None


def _one_slice_volume(image: Any) -> Any:
    """A single-slice series ``(1, x, y)`` as ``(1, x, y, 1)`` whose affine's z column is the unit slice normal.

    With no second slice there is no slice spacing, and MONAI's reader fills that column with a fixed axis, which
    for an oblique or sagittal slice is parallel to an in-plane axis (a singular affine that reorientation rejects).
    """
    import torch

    volume = image.unsqueeze(-1)
    affine = volume.affine.clone()
    normal = torch.linalg.cross(affine[:3, 0], affine[:3, 1])
    if float(torch.linalg.norm(normal)) > 1e-9:
        affine[:3, 2] = normal / torch.linalg.norm(normal)
        volume.affine = affine
    return volume


def _by_modality(spec: ImageEncoderSpec) -> Any:
    """CT: the HU window; any other modality: its own percentiles. Both map to [0, 1], clipped."""
    from monai.transforms import MapTransform, ScaleIntensityRanged, ScaleIntensityRangePercentilesd

    lo, hi = spec.window
    window = ScaleIntensityRanged(keys=IMAGE_KEY, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    p_lo, p_hi = spec.percentiles
    percentiles = ScaleIntensityRangePercentilesd(
        keys=IMAGE_KEY, lower=p_lo, upper=p_hi, b_min=0.0, b_max=1.0, clip=True
    )

    class Intensityd(MapTransform):
        def __call__(self, data: Any) -> Any:
            return (window if data.get(MODALITY_KEY) == "CT" else percentiles)(data)

    return Intensityd(keys=IMAGE_KEY)


def native_2d(spec: ImageEncoderSpec) -> bool:
    """Whether 2D images stay one slice (``spatial_dims`` ``auto`` or ``2``) instead of being repeated along z."""
    return spec.spatial_dims != 3


def _fit(spec: ImageEncoderSpec) -> Any:
    """Resize to ``spec.spatial_size``; a 2D image is first padded (centred, zeros) to the aspect ratio of
    ``spatial_size[1:]`` and, when :func:`native_2d`, resized to one slice ``(1, rows, columns)``."""
    import math

    from monai.transforms import MapTransform, Resize, SpatialPad

    rows, cols = spec.spatial_size[1:]
    one_slice = native_2d(spec)
    volume_size = Resize(spatial_size=spec.spatial_size, mode="trilinear")
    slice_size = Resize(spatial_size=(1, rows, cols), mode="trilinear")  # z stays 1: bilinear in plane

    class Fitd(MapTransform):
        def __call__(self, data: Any) -> Any:
            d = dict(data)
            image = d[IMAGE_KEY]
            if d.get(KIND_KEY) != "2d":
                d[IMAGE_KEY] = volume_size(image)
                return d
            _, z, y, x = image.shape
            scale = max(y / rows, x / cols)
            image = SpatialPad(spatial_size=(z, math.ceil(rows * scale), math.ceil(cols * scale)))(image)
            d[IMAGE_KEY] = (slice_size if one_slice else volume_size)(image)
            return d

    return Fitd(keys=IMAGE_KEY)


def image_pipeline(spec: ImageEncoderSpec) -> Any:
    """A ``monai.transforms.Compose`` of dictionary transforms on key ``"image"`` (a list of DICOM files).

    Load (HU; one series or one object) -> RAS -> optional resample to ``spec.pixdim`` mm -> CT window or
    percentiles to [0, 1] -> (2D: pad to aspect) -> resize to ``spec.spatial_size`` -> ``(1, z, y, x)`` float32;
    a 2D image with :func:`native_2d` is ``(1, 1, rows, columns)``. See the module docstring for axes and intensities.
    Called on a whole sample, a 2D image (no ``pixdim``) takes :func:`direct_2d`, the same output without the MONAI
    steps' per-call cost; ``.transforms`` are the MONAI steps, for callers that extend or cache them.
    """
    import torch
    from monai.transforms import (
        EnsureTyped,
        Orientationd,
        Spacingd,
        Transposed,
    )

    steps: list = [
        load_dicom(keys=IMAGE_KEY),
        Orientationd(keys=IMAGE_KEY, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if spec.pixdim is not None:
        steps.append(Spacingd(keys=IMAGE_KEY, pixdim=tuple(reversed(spec.pixdim)), mode="bilinear"))
    steps += [
        _by_modality(spec),
        Transposed(keys=IMAGE_KEY, indices=(0, 3, 2, 1)),
        _fit(spec),
        EnsureTyped(keys=IMAGE_KEY, dtype=torch.float32, track_meta=False),
    ]
    return _pipeline_class()(steps, spec=spec)


@functools.cache
def _pipeline_class() -> type:
    """``ImagePipeline``: the ``Compose`` of :func:`image_pipeline` with a direct path for 2D images (built lazily)."""
    from monai.transforms import Compose

    class ImagePipeline(Compose):
        """The MONAI steps of :func:`image_pipeline`; called on a whole sample, a 2D image takes :func:`direct_2d`.

        Every sample's first file is read once here (header; small pixel data too). A 2D image (one slice, no
        ``pixdim`` resampling) then skips the MONAI steps, whose per-call cost (metadata tracking, affine
        bookkeeping, dictionary copies) was most of its encode time: :func:`direct_2d` computes the same output
        with the same torch operations (a test checks they are equal, element for element). Anything else goes
        through the steps, which reuse the header. ``transforms`` is the full list, so training can append its
        augmentation and MONAI's ``PersistentDataset`` can cache up to it; a partial call (``start`` / ``end``)
        runs the steps.
        """

        def __init__(self, transforms: Sequence, spec: ImageEncoderSpec) -> None:
            super().__init__(transforms)
            self.spec = spec

        def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False,
                     lazy: bool | None = None) -> Any:  # fmt: skip
            if start or end is not None or not isinstance(input_, dict) or IMAGE_KEY not in input_:
                return super().__call__(input_, start, end, threading, lazy)
            files = [str(f) for f in ([input_[IMAGE_KEY]] if isinstance(input_[IMAGE_KEY], str) else input_[IMAGE_KEY])]
            try:
                head = _read_head(files[0])
            except Exception as exc:  # noqa: BLE001 -- wrapped as the MONAI steps wrap it: the same root cause
                raise RuntimeError(f"applying transform {self.transforms[0]}") from exc
            if self.spec.pixdim is None and _kind(head) == "2d":
                return direct_2d(self.spec, input_, head)
            return super().__call__({**input_, HEAD_KEY: head}, start, end, threading, lazy)

    return ImagePipeline


def _kind(head: Any) -> str:
    from clinicmm.ingest.dicom import image_kind

    return image_kind(head)


def direct_2d(spec: ImageEncoderSpec, data: dict, head: Any) -> dict:
    """:func:`image_pipeline`'s output for a 2D image, without the MONAI steps (same operations, same values).

    ``head``: the dataset of ``data[IMAGE_KEY][0]`` (its image kind is ``2d``); ``spec.pixdim`` must be None.
    The steps it replaces are identities on a 2D image or plain arithmetic: RAS orientation leaves its diagonal
    affine alone, the transpose restores the stored ``(rows, columns)``, then the CT window or the percentiles
    (MONAI's ``percentile``, then ``(x - lo) / (hi - lo)`` clipped to [0, 1]), a centred zero pad to the aspect and
    ``torch.nn.functional.interpolate`` (trilinear, as MONAI's ``Resize``) when the size differs.
    """
    import math

    import torch
    from monai.transforms.utils_pytorch_numpy_unification import percentile

    path = str(data[IMAGE_KEY] if isinstance(data[IMAGE_KEY], str) else data[IMAGE_KEY][0])
    try:
        pixels, _ = _read_object(path, head)
    except Exception as exc:  # noqa: BLE001 -- wrapped as the MONAI steps wrap it: the same root cause
        raise RuntimeError(f"applying transform {IMAGE_KEY} loader") from exc
    if pixels.shape[0] > 1:
        pixels = pixels[pixels.shape[0] // 2][None]  # a cine loop: its middle frame
    image = torch.from_numpy(pixels)[None]  # (1, z=1, rows, columns): what RAS + the transpose give a 2D image
    modality = str(head.get("Modality", "") or "").strip().upper()
    if modality == "CT":
        lo, hi = spec.window
    else:
        lo, hi = percentile(image.reshape(-1), list(spec.percentiles))  # both at once; they ignore the layout
    image = _scale(image, lo, hi)
    _, z, y, x = image.shape
    rows, cols = spec.spatial_size[1:]
    scale = max(y / rows, x / cols)
    pad = [max(t - s, 0) for t, s in zip((z, math.ceil(rows * scale), math.ceil(cols * scale)), (z, y, x))]
    if any(pad):  # centred (MONAI's symmetric SpatialPad): the odd pixel after; torch's pad lists the last axis first
        image = torch.nn.functional.pad(image, [p for w in reversed(pad) for p in (w // 2, w - w // 2)])
    size = (1, rows, cols) if native_2d(spec) else tuple(spec.spatial_size)
    if tuple(image.shape[1:]) != size:
        image = torch.nn.functional.interpolate(image[None], size=size, mode="trilinear", align_corners=None)[0]
    out = {k: v for k, v in data.items() if k != HEAD_KEY}
    out.update({IMAGE_KEY: image.to(torch.float32), MODALITY_KEY: modality, KIND_KEY: "2d"})
    return out


def _scale(image: Any, lo: Any, hi: Any) -> Any:
    """MONAI's ``ScaleIntensityRange(lo, hi, 0, 1, clip=True)`` on a float32 tensor, operation for operation."""
    import torch

    if hi - lo == 0.0:
        warnings.warn("Divide by zero (a_min == a_max)", Warning, stacklevel=2)
        return image - lo + 0.0
    image = (image - lo) / (hi - lo)
    return torch.clamp(image * (1.0 - 0.0) + 0.0, 0.0, 1.0).to(torch.float32)


def stored_view(files: Sequence[str]) -> tuple[bool, bool, bool]:
    """How to turn a pipeline slice ``out[0, k]`` (rows: anterior-wards, columns: towards the patient's right) back
    into the row/column layout the image was stored in, to draw it the way a DICOM viewer shows it.

    Returns ``(transpose, flip_rows, flip_columns)``, applied in that order by :func:`as_stored`:

    * a 2D or multi-frame object keeps its stored layout through the pipeline (diagonal affine, nothing to undo):
      ``(False, False, False)``;
    * an axial slice series was reoriented to RAS; its ImageOrientationPatient says which stored axis runs along
      which RAS axis and in which sense. A standard axial CT (columns towards the patient's left, rows towards
      posterior) gives ``(False, True, True)``: the usual radiological display, anterior up, patient right on
      the image left;
    * a sagittal or coronal series is shown as axial reslices, which have no stored layout: the radiological
      display ``(False, True, True)`` too.

    Only the first file's header is read (no pixel data).
    """
    import numpy as np
    import pydicom

    from clinicmm.ingest.dicom import image_kind

    head = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    radiological = (False, True, True)
    if image_kind(head) != "volume":
        return (False, False, False)
    try:
        iop = np.asarray([float(v) for v in head.ImageOrientationPatient], dtype=float)
    except (AttributeError, TypeError, ValueError):
        return radiological
    if iop.shape != (6,):
        return radiological
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    along_columns, along_rows = iop[:3] * lps_to_ras, iop[3:] * lps_to_ras  # column index, row index directions
    if int(np.argmax(np.abs(np.cross(along_columns, along_rows)))) != 2:  # not an axial acquisition
        return radiological
    # pipeline slice axes: rows run along RAS y (A), columns along RAS x (R)
    if abs(along_columns[0]) >= abs(along_columns[1]):  # stored columns run left-right: no transpose
        return (False, bool(along_rows[1] < 0), bool(along_columns[0] < 0))
    return (True, bool(along_rows[0] < 0), bool(along_columns[1] < 0))


def as_stored(image: Any, view: tuple[bool, bool, bool]) -> Any:
    """A 2D array (a pipeline slice, or its saliency) in the stored layout given by :func:`stored_view`."""
    transpose, flip_rows, flip_columns = view
    out = image.T if transpose else image
    out = out[::-1] if flip_rows else out
    return out[:, ::-1] if flip_columns else out
