"""image_pipeline (HU window, axis order, slice order) and ImageEncoder (determinism, failures, weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_fixtures import body, truncate, uniform, write_series  # noqa: E402

from clinicmm.config import ImageEncoderSpec  # noqa: E402
from clinicmm.encode.imaging.encoder import ImageEncoder  # noqa: E402
from clinicmm.encode.imaging.transforms import image_pipeline  # noqa: E402
from clinicmm.errors import InputError, ModelError  # noqa: E402

SPEC = ImageEncoderSpec(spatial_size=(16, 32, 32), batch_size=2)


def _files(paths: list[Path]) -> list[str]:
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("series")
    made = {name: _files(write_series(root / name, body(name), patient=name)) for name in ("chest", "abdomen")}
    corrupt = write_series(root / "corrupt", body("chest"), patient="bad")
    truncate(corrupt[3])
    made["corrupt"] = _files(corrupt)
    return made


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    return ImageEncoder(SPEC)


@pytest.mark.parametrize(("hu", "expected"), [(-160.0, 0.0), (240.0, 1.0), (40.0, 0.5), (-1000.0, 0.0), (900.0, 1.0)])
def test_pipeline_windows_hounsfield_units(tmp_path: Path, hu: float, expected: float) -> None:
    files = _files(write_series(tmp_path, uniform(hu)))
    out = image_pipeline(SPEC)({"image": files})["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == (1, 16, 32, 32)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_pipeline_axes_are_z_y_x_and_slices_follow_position(tmp_path: Path) -> None:
    vol = uniform(-1000.0)
    vol[1, 2, 25] = 240.0  # slice 1 (z = 2 mm), row 2, column 25; instance numbers are shuffled on purpose
    files = _files(write_series(tmp_path, vol))
    out = image_pipeline(ImageEncoderSpec(spatial_size=(8, 32, 32)))({"image": files[::-1]})["image"]
    assert tuple(out.shape) == (1, 8, 32, 32)
    assert np.argwhere(out[0].numpy() > 0.5).tolist() == [[1, 31 - 2, 31 - 25]]
    np.testing.assert_array_equal(out[0, 1].flip(0).flip(1).numpy() > 0.5, vol[1] > 0)


def test_dim_and_determinism_across_instances(series: dict, encoder: ImageEncoder) -> None:
    rng_before = torch.random.get_rng_state()
    other = ImageEncoder(SPEC)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # building does not consume the global RNG
    assert encoder.dim == 512
    a, failed_a = encoder.encode([series["chest"]], progress=False)
    b, failed_b = other.encode([series["chest"]], progress=False)
    assert a.shape == (1, 512) and a.dtype == np.float32 and not failed_a and not failed_b
    np.testing.assert_array_equal(a, b)
    assert encoder.fingerprint() == other.fingerprint()
    assert len(encoder.fingerprint()) == 64


def test_fingerprint_follows_window_size_and_seed(encoder: ImageEncoder) -> None:
    base = encoder.fingerprint()
    for change in ({"window": (-1000.0, 400.0)}, {"spatial_size": (16, 32, 16)}, {"seed": 1}):
        assert ImageEncoder(SPEC.model_copy(update=change)).fingerprint() != base, change
    assert ImageEncoder(SPEC.model_copy(update={"batch_size": 5})).fingerprint() == base


def test_chest_and_abdomen_embed_differently(series: dict, encoder: ImageEncoder) -> None:
    emb, failed = encoder.encode([series["chest"], series["abdomen"]], progress=False)
    assert not failed and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1], rtol=1e-3, atol=1e-4)


def test_corrupt_series_gives_reason_and_nan_row_others_encoded(series: dict, encoder: ImageEncoder) -> None:
    batch = [series["chest"], series["corrupt"], [], series["abdomen"]]
    emb, failed = encoder.encode(batch, progress=False)
    assert sorted(failed) == [1, 2]
    assert "corrupt" in failed[1] and Path(series["corrupt"][3]).name in failed[1]
    assert "empty series" in failed[2]
    assert np.isnan(emb[[1, 2]]).all() and np.isfinite(emb[[0, 3]]).all()
    alone, _ = encoder.encode([series["chest"], series["abdomen"]], progress=False)
    np.testing.assert_allclose(emb[[0, 3]], alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="could not be loaded"):
        encoder.preprocess(series["corrupt"])


def test_non_dicom_file_in_a_series_is_named(tmp_path: Path, series: dict, encoder: ImageEncoder) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    emb, failed = encoder.encode([series["chest"][:4] + [str(junk)] + series["chest"][4:]], progress=False)
    assert np.isnan(emb).all() and "notes.txt: cannot read the DICOM file" in failed[0]


def test_weights_round_trip_through_safetensors_and_pt(tmp_path: Path, series: dict, encoder: ImageEncoder) -> None:
    path = tmp_path / "w.safetensors"
    encoder.save_weights(path)
    other = ImageEncoder(SPEC.model_copy(update={"seed": 7}))
    before, after_print = other.encode([series["chest"]], progress=False)[0], other.fingerprint()
    reference = encoder.encode([series["chest"]], progress=False)[0]
    assert not np.allclose(before, reference)
    other.load_weights(path)
    np.testing.assert_array_equal(other.encode([series["chest"]], progress=False)[0], reference)
    assert other.fingerprint() != after_print
    wrapped = {f"module.{k}": v for k, v in encoder.network.state_dict().items()}
    torch.save(wrapped, tmp_path / "w.pt")
    third = ImageEncoder(SPEC.model_copy(update={"seed": 3}))
    third.load_weights(tmp_path / "w.pt")
    np.testing.assert_array_equal(third.encode([series["chest"]], progress=False)[0], reference)


def test_bad_weights_raise_model_error(tmp_path: Path, encoder: ImageEncoder) -> None:
    state = dict(encoder.network.state_dict())
    state.pop("volume.conv1.weight")  # spatial_dims auto: the 3D and the 2D network, prefixed
    state["extra.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ModelError, match=r"1 missing: volume\.conv1\.weight; 1 unexpected: extra\.bias"):
        encoder.load_weights(tmp_path / "partial.pt")
    with pytest.raises(ModelError, match="not found"):
        encoder.load_weights(tmp_path / "absent.safetensors")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="unsupported"):
        encoder.load_weights(tmp_path / "w.bin")


def test_densenet121_gives_1024_features_and_rejects_small_sizes(series: dict) -> None:
    with pytest.raises(ModelError, match="densenet121 needs at least 32"):
        ImageEncoder(ImageEncoderSpec(network="densenet121", spatial_size=(16, 32, 32)))
    dense = ImageEncoder(ImageEncoderSpec(network="densenet121", spatial_size=(32, 32, 32)))
    emb, failed = dense.encode([series["abdomen"]], progress=False)
    assert dense.dim == 1024 and emb.shape == (1, 1024) and not failed and np.isfinite(emb).all()
