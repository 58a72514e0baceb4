"""Grad-CAM finds a known lesion and draws it where it was stored (issue 15).

* A tiny ResNet-shaped CNN (``layer1`` .. ``layer4``, each halving the input, as MONAI's ResNets do) whose logit
  depends only on a bright square: all weights positive, no biases, a black background -- so the square is the
  only evidence. Its Grad-CAM peak must sit on the square, in its quadrant, in 2D and in 3D; the last block's
  2 x 2 map (the old choice) puts it in an image corner instead.
* Orientation: a marker stored in the top-left corner of an axial series (standard, flipped and transposed
  ImageOrientationPatient) and of a 2D DX object comes back to the top-left after the pipeline and
  ``as_stored``, and the drawn PNG shows it top-left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from dicom_fixtures import write_series  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid
from torch import nn

from clinicmm.config import ImageEncoderSpec  # noqa: E402
from clinicmm.encode.imaging.encoder import ImageEncoder  # noqa: E402
from clinicmm.encode.imaging.transforms import as_stored, stored_view  # noqa: E402
from clinicmm.serve import gradcam  # noqa: E402

SIZE = 32
LAYERS = [f"0.{name}" for name in gradcam.RESNET_LAYERS]


class _TinyResNet(nn.Module):
    """stem (stride 1) + max-pool, then layer1 .. layer4 (layer1 stride 1, the others stride 2): ResNet10's sizes."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.stem = nn.Sequential(conv(1, 4, 3, padding=1, bias=False), nn.ReLU(), pool(3, 2, 1))
        for k, stride in enumerate((1, 2, 2, 2), start=1):
            setattr(self, f"layer{k}", nn.Sequential(conv(4, 4, 3, stride, 1, bias=False), nn.ReLU()))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())  # a positive local average
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return x.flatten(2).mean(2)


def _model(dims: int) -> nn.Module:
    head = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))  # class 1: "there is a bright square"
    return nn.Sequential(_TinyResNet(dims), head).eval().requires_grad_(True)


QUADRANTS = {"top-left": (8, 8), "top-right": (8, 24), "bottom-left": (24, 8), "bottom-right": (24, 24)}


def _image(dims: int, centre: tuple[int, int]) -> torch.Tensor:
    r, c = centre
    if dims == 2:
        x = torch.zeros(1, 1, SIZE, SIZE)
        x[..., r - 3 : r + 3, c - 3 : c + 3] = 1.0
    else:
        x = torch.zeros(1, 1, 8, SIZE, SIZE)
        x[..., 2:6, r - 3 : r + 3, c - 3 : c + 3] = 1.0
    return x


def _peak(maps: np.ndarray) -> tuple[int, int]:
    """(row, column) of the saliency peak, over slices for a volume."""
    plane = maps[0] if maps.ndim == 3 else maps[0].max(0)
    return tuple(int(v) for v in np.unravel_index(int(plane.argmax()), plane.shape))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("quadrant", list(QUADRANTS))
def test_the_peak_falls_on_the_bright_square(dims: int, quadrant: str) -> None:
    centre = QUADRANTS[quadrant]
    x = _image(dims, centre)
    model = _model(dims)
    assert model(x)[0, 1] > model(torch.zeros_like(x))[0, 1]  # the square is what the class-1 logit sees
    maps, layer, shape = gradcam.grad_cam(model, x, LAYERS, class_idx=1)
    assert layer == "0.layer2" and min(shape[-2:]) >= gradcam.MIN_MAP_SIZE  # 8 x 8, layer4 would be 2 x 2
    assert maps.shape == (1, *x.shape[2:]) and maps.max() == pytest.approx(1.0) and maps.min() >= 0
    row, col = _peak(maps)
    assert (row < SIZE // 2, col < SIZE // 2) == (centre[0] < SIZE // 2, centre[1] < SIZE // 2), (row, col)
    assert abs(row - centre[0]) <= 4 and abs(col - centre[1]) <= 4, (row, col, centre)
    if dims == 3:  # and along z, on the slices that hold it (2..5 of 8)
        assert 1 <= int(maps[0].reshape(8, -1).sum(1).argmax()) <= 6


def test_the_last_blocks_2x2_map_puts_the_peak_in_a_corner_which_is_why_it_is_not_used() -> None:
    centre = QUADRANTS["top-right"]
    maps, layer, shape = gradcam.grad_cam(_model(2), _image(2, centre), ["0.layer4"], class_idx=1, min_size=1)
    assert shape == (2, 2)
    row, col = _peak(maps)
    assert abs(row - centre[0]) > 4 or abs(col - centre[1]) > 4  # far from the lesion: the bug of issue 15


def test_monai_resnet10_at_32_px_is_explained_at_layer2_and_warns_when_nothing_is_large_enough(caplog) -> None:
    from monai.networks import nets

    for dims, shape in ((2, (1, 1, SIZE, SIZE)), (3, (1, 1, 8, SIZE, SIZE))):
        net = nn.Sequential(nets.resnet10(spatial_dims=dims, n_input_channels=1, feed_forward=False), nn.Linear(512, 2))
        layer, size = gradcam.pick_layer(net.eval(), torch.zeros(shape), LAYERS)
        assert layer == "0.layer2" and size[-2:] == (8, 8)
    with caplog.at_level("WARNING", logger="clinicmm"):
        layer, size = gradcam.pick_layer(net, torch.zeros(1, 1, 8, 8, 8), LAYERS)
    assert layer == "0.layer1" and "spatial_size" in caplog.text


def test_upsampling_is_linear_with_align_corners_false() -> None:
    cells = torch.tensor([[[[0.0, 1.0]]]])  # one row, two cells
    up = gradcam.upsampler((1, 4))(cells)[0, 0, 0]
    assert up.tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])  # align_corners=True would give 0, 1/3, 2/3, 1


# ---------------------------------------------------------------------------------------------- orientation

MARKER = (slice(2, 8), slice(3, 10))  # rows 2-7, columns 3-9 of the stored image: its top-left corner


def _marker_box(image: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image > 0.5)
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


@pytest.mark.parametrize(
    ("iop", "view"),
    [
        ([1, 0, 0, 0, 1, 0], (False, True, True)),  # standard axial: the radiological display
        ([-1, 0, 0, 0, -1, 0], (False, False, False)),  # stored already anterior-up, right-on-the-right
        ([0, 1, 0, 1, 0, 0], (True, True, True)),  # rows and columns swapped
    ],
)
def test_an_axial_series_comes_back_in_its_stored_layout(tmp_path: Path, iop: list[int], view) -> None:
    volume = np.full((4, SIZE, SIZE), -1000.0, dtype=np.float32)
    volume[:, MARKER[0], MARKER[1]] = 1000.0
    files = [str(p) for p in write_series(tmp_path / "s", volume)]
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = iop
        ds.save_as(f)
    out = ImageEncoder(ImageEncoderSpec(spatial_size=(4, SIZE, SIZE))).preprocess(files)[0].numpy()
    assert stored_view(files) == view
    assert _marker_box(as_stored(out[1], view)) == (2, 7, 3, 9)


def _write_dx(path: Path, pixels: np.ndarray) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        DigitalXRayImageStorageForPresentation,
        generate_uid(),
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", "DX"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_2d_image_is_drawn_as_stored_not_rotated(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(100, 200, (SIZE, SIZE)).astype(np.uint16)  # textured background
    pixels[MARKER] = 4000
    files = [str(_write_dx(tmp_path / "dx.dcm", pixels))]
    out = ImageEncoder(ImageEncoderSpec(spatial_size=(2, SIZE, SIZE))).preprocess(files)[0].numpy()
    view = stored_view(files)
    assert view == (False, False, False)
    shown = as_stored(out[0], view)
    assert _marker_box(shown) == (2, 7, 3, 9)
    # pixel for pixel: the drawn slice orders its pixels as the stored array does (no 180 degree turn)
    assert np.corrcoef(shown.ravel(), pixels.astype(float).ravel())[0, 1] > 0.99

    fig = gradcam.overlay_figure(shown, np.zeros_like(shown), "t")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    box = fig.axes[0].get_window_extent()  # display pixels, origin bottom-left
    height = rgba.shape[0]
    axes = rgba[int(height - box.y1) + 1 : int(height - box.y0) - 1, int(box.x0) + 1 : int(box.x1) - 1, :3]
    bright = axes.astype(float).sum(2)
    rows, cols = np.nonzero(bright > bright.max() - 30)
    h, w = bright.shape
    assert rows.mean() < h / 3 and cols.mean() < w / 3  # the marker is drawn in the top-left corner
