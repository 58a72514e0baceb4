"""The MONAI pipeline that turns one DICOM series (a list of slice files) into a fixed-size network input.

Axis order of the output: ``(1, z, y, x)`` = ``(channel, S, A, R)``. MONAI loads and reorients the volume to
RAS, whose array axes are ``(x, y, z)``; the last step transposes it so that ``spatial_size`` (and ``pixdim``)
in ``ImageEncoderSpec`` read as ``(slices, rows, columns)`` -- the config default ``(32, 64, 64)`` means 32
slices of 64 x 64. ``out[0, k]`` is the k-th axial slice from inferior to superior; its row index grows
towards anterior and its column index towards the patient's right, so ``out[0, k].flip(0).flip(1)`` (numpy:
``[::-1, ::-1]``) is the usual radiological display of a standard axial slice (anterior up, patient right
on the image left), as stored in the DICOM files.

Intensities: the reader applies RescaleSlope/RescaleIntercept (so CT values are Hounsfield units); the window
``spec.window = (lo, hi)`` maps lo HU -> 0 and hi HU -> 1, clipped.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

from clinicmm.config import ImageEncoderSpec

IMAGE_KEY = "image"


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
            for rank, i in enumerate(order, start=1):
                datasets[i].InstanceNumber = rank
            self.filenames = [[files[i] for i in order]]
            self.has_series = True
            return [[datasets[i] for i in order]]

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


def image_pipeline(spec: ImageEncoderSpec) -> Any:
    """A ``monai.transforms.Compose`` of dictionary transforms on key ``"image"`` (a list of slice paths).

    Load (HU) -> channel first -> RAS -> optional resample to ``spec.pixdim`` mm -> window to [0, 1] ->
    resize to ``spec.spatial_size`` -> ``(1, z, y, x)`` float32 tensor. See the module docstring for axes.
    """
    import torch
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        Orientationd,
        Resized,
        ScaleIntensityRanged,
        Spacingd,
        Transposed,
    )

    steps: list = [
        load_series(keys=IMAGE_KEY, image_only=True),
        EnsureChannelFirstd(keys=IMAGE_KEY),
        Orientationd(keys=IMAGE_KEY, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if spec.pixdim is not None:
        steps.append(Spacingd(keys=IMAGE_KEY, pixdim=tuple(reversed(spec.pixdim)), mode="bilinear"))
    lo, hi = spec.window
    steps += [
        ScaleIntensityRanged(keys=IMAGE_KEY, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
        Transposed(keys=IMAGE_KEY, indices=(0, 3, 2, 1)),
        Resized(keys=IMAGE_KEY, spatial_size=spec.spatial_size, mode="trilinear"),
        EnsureTyped(keys=IMAGE_KEY, dtype=torch.float32, track_meta=False),
    ]
    return Compose(steps)
