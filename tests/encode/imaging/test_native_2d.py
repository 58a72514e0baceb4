"""Native 2D: a 2D image stays one slice for a 2D network; 2D augmentation; mixed cohorts; the training recipe."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_fixtures import body, write_image, write_series  # noqa: E402

from clinicmm.config import ImageEncoderSpec, ImageTrainSpec  # noqa: E402
from clinicmm.encode.imaging import train  # noqa: E402
from clinicmm.encode.imaging.encoder import ByKind, ImageEncoder  # noqa: E402
from clinicmm.encode.imaging.transforms import image_pipeline  # noqa: E402
from clinicmm.errors import ModelError  # noqa: E402

SIZE = (8, 32, 32)


def _us(path: Path, pixels: np.ndarray) -> list[str]:
    """One single-file ultrasound image (image_kind '2d')."""
    return [str(write_image(path, pixels, (0.0, 0.0, 0.0), modality="US"))]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("native2d")
    square = np.zeros((32, 32))
    square[4, 20] = 1000.0  # one bright pixel: row 4, column 20
    wide = np.tile(np.linspace(200, 1000, 32), (16, 1))  # 2:1 -- padded to square, not stretched
    ramp = np.tile(np.linspace(0, 1000, 32), (32, 1))
    volume = [str(p) for p in write_series(root / "ct", body("chest"), patient="ct")]
    return {
        "square": _us(root / "square.dcm", square),
        "wide": _us(root / "wide.dcm", wide),
        "ramp": _us(root / "ramp.dcm", ramp),
        "volume": volume,
    }


@pytest.mark.parametrize("dims", ["auto", 2])
def test_a_2d_image_is_one_slice_not_repeated_along_z(files: dict, dims) -> None:
    out = image_pipeline(ImageEncoderSpec(spatial_size=SIZE, spatial_dims=dims))({"image": files["square"]})["image"]
    assert tuple(out.shape) == (1, 1, 32, 32)
    assert np.argwhere(out[0, 0].numpy() > 0.5).tolist() == [[4, 20]]  # stored rows/columns, not flipped


def test_spatial_dims_3_keeps_the_former_repetition(files: dict) -> None:
    out = image_pipeline(ImageEncoderSpec(spatial_size=SIZE, spatial_dims=3))({"image": files["square"]})["image"]
    assert tuple(out.shape) == (1, 8, 32, 32)
    assert all(torch.equal(out[0, k], out[0, 0]) for k in range(8))


def test_a_non_square_2d_image_is_padded_to_the_aspect_then_resized(files: dict) -> None:
    out = image_pipeline(ImageEncoderSpec(spatial_size=SIZE))({"image": files["wide"]})["image"][0, 0].numpy()
    assert out.shape == (32, 32)
    assert (out[:7] == 0).all() and (out[25:] == 0).all()  # bands of padding above and below
    assert (out[9:23, 2:] > 0).all() and out[9:23].mean() > 0.3  # the image, full width


def test_the_2d_network_gets_the_slice_and_the_3d_one_the_volume(files: dict) -> None:
    encoder = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE, batch_size=4))
    assert isinstance(encoder.network, ByKind)
    seen: dict[str, list] = {"flat": [], "volume": []}
    for name in seen:
        getattr(encoder.network, name).register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(tuple(args[0].shape))
        )
    vectors, failed = encoder.encode([files["square"], files["volume"], files["ramp"]], progress=False)
    assert failed == {} and vectors.shape == (3, encoder.dim) and np.isfinite(vectors).all()
    assert seen == {"flat": [(2, 1, 32, 32)], "volume": [(1, 1, 8, 32, 32)]}  # one batch per kind
    with torch.inference_mode():
        alone = encoder.network.flat(encoder.preprocess(files["ramp"])[None, :, 0]).numpy()
    np.testing.assert_allclose(vectors[2:], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("network", ["resnet10", "resnet18", "densenet121"])
def test_a_mixed_cohort_gives_one_embedding_length(files: dict, network: str) -> None:
    size = (32, 32, 32) if network == "densenet121" else SIZE
    encoder = ImageEncoder(ImageEncoderSpec(network=network, spatial_size=size))
    vectors, failed = encoder.encode([files["volume"], files["square"]], progress=False)
    assert failed == {} and vectors.shape == (2, encoder.dim) and np.isfinite(vectors).all()


def test_volumes_embed_as_with_spatial_dims_3(files: dict) -> None:
    auto = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE)).encode([files["volume"]], progress=False)[0]
    three = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE, spatial_dims=3)).encode([files["volume"]], progress=False)
    np.testing.assert_array_equal(auto, three[0])


# ------------------------------------------------------------------------------------------------ weights


def test_auto_loads_a_single_networks_weights_into_its_kind(tmp_path: Path, files: dict, caplog) -> None:
    three = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE, spatial_dims=3, seed=5))
    three.save_weights(tmp_path / "3d.safetensors")
    auto = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE))
    flat_before = {k: v.clone() for k, v in auto.network.flat.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="clinicmm"):
        auto.load_weights(tmp_path / "3d.safetensors")
    assert "2D images keep the seeded 2D network" in caplog.text
    assert all(torch.equal(v, three.network.state_dict()[k]) for k, v in auto.network.volume.state_dict().items())
    assert all(torch.equal(v, flat_before[k]) for k, v in auto.network.flat.state_dict().items())

    two = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE, spatial_dims=2, seed=5))
    two.save_weights(tmp_path / "2d.safetensors")
    auto.load_weights(tmp_path / "2d.safetensors")
    np.testing.assert_array_equal(
        auto.encode([files["square"]], progress=False)[0], two.encode([files["square"]], progress=False)[0]
    )


def test_auto_round_trips_both_networks_and_rejects_weights_that_fit_neither(tmp_path: Path, files: dict) -> None:
    first = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE, seed=1))
    first.save_weights(tmp_path / "both.safetensors")
    other = ImageEncoder(ImageEncoderSpec(spatial_size=SIZE, seed=2))
    other.load_weights(tmp_path / "both.safetensors")
    inputs = [files["square"], files["volume"]]
    np.testing.assert_array_equal(other.encode(inputs, progress=False)[0], first.encode(inputs, progress=False)[0])
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "junk.pt")
    with pytest.raises(ModelError, match=r"fit neither the 3D nor the 2D 'resnet10'.*3D: .*2D: "):
        other.load_weights(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------------------- augmentation


def _draws(image: torch.Tensor, n: int = 40, seed: int = 0) -> list[torch.Tensor]:
    aug = train.augmentation(seed=seed, spatial_size=(8, 32, 32))
    return [torch.as_tensor(aug({"image": image.clone()})["image"]) for _ in range(n)]


def test_2d_augmentation_keeps_the_shape_changes_the_image_and_never_blanks_it() -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    image = (0.3 + 0.35 * yy + 0.35 * xx)[None, None]  # (1, 1, 32, 32), every pixel in [0.3, 1]
    outs = _draws(image)
    assert all(tuple(o.shape) == (1, 1, 32, 32) and torch.isfinite(o).all() for o in outs)
    assert sum(not torch.allclose(o, image, atol=0.05) for o in outs) > len(outs) // 2  # it does augment
    dark = [float((o < 0.05).float().mean()) for o in outs]  # zero padding would show as dark corners or bands
    assert max(dark) == 0.0, dark


def test_2d_augmentation_rotates_in_plane_only() -> None:
    grid = torch.zeros(1, 1, 32, 32)
    grid[0, 0, 8:24, 14:18] = 1.0  # a vertical bar: a rotation by more than ~15 degrees would tip it over
    for out in _draws(grid, seed=1):
        rows = torch.nonzero(out[0, 0] > 0.6)[:, 0]
        cols = torch.nonzero(out[0, 0] > 0.6)[:, 1]
        assert len(rows) > 0 and (rows.max() - rows.min()) > 2 * (cols.max() - cols.min()) * 0.8


def test_volume_augmentation_never_mixes_slices() -> None:
    volume = torch.linspace(0.2, 1.0, 8)[None, :, None, None].expand(1, 8, 32, 32).clone()  # slice k is constant
    for out in _draws(volume, n=20):
        assert tuple(out.shape) == (1, 8, 32, 32)
        per_slice = out[0].reshape(8, -1)
        assert float(per_slice.std(1).max()) < 0.05  # in-plane changes only: each slice stays flat (noise 0.02)


def test_augmentation_is_random_but_seeded_on_2d_input() -> None:
    image = {"image": torch.rand(1, 1, 32, 32)}
    first = [torch.as_tensor(train.augmentation(seed=3)(dict(image))["image"]) for _ in range(2)]
    assert torch.equal(first[0], first[1])


# ---------------------------------------------------------------------------------------- training recipe


def test_batches_hold_one_kind_cover_every_item_and_drop_lone_ones() -> None:
    items = [{train.SLICES_KEY: 1 if i % 3 else 8} for i in range(11)]  # 7 two-d images, 4 volumes
    sampler = train._batches(items, 3, shuffle=True, generator=torch.Generator().manual_seed(0), drop_lone=True)
    batches = list(sampler)
    assert all(len({items[i][train.SLICES_KEY] for i in b}) == 1 for b in batches)
    assert all(len(b) > 1 for b in batches) and len(batches) == len(sampler)
    covered = [i for b in batches for i in b]
    left = set(range(11)) - set(covered)  # 7 = 3 + 3 + 1 and 4 = 3 + 1: one lone item of each kind left out
    assert len(covered) == len(set(covered)) == 9 and sorted(items[i][train.SLICES_KEY] for i in left) == [1, 8]
    every = list(train._batches(items, 3, shuffle=False, generator=None, drop_lone=False))
    assert sorted(i for b in every for i in b) == list(range(11))


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    factor = train._lr_factor(ImageTrainSpec(epochs=4, warmup_epochs=1), steps_per_epoch=10)
    values = [factor(s) for s in range(40)]
    assert values[0] < 0.2 and values[9] == pytest.approx(10 / 11)
    assert all(a < b for a, b in zip(values[:10], values[1:10]))  # warmup: rising
    assert values[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] < 0.01
    constant = train._lr_factor(ImageTrainSpec(epochs=4, warmup_epochs=0, schedule="constant"), 10)
    assert {constant(s) for s in range(40)} == {1.0}


def test_the_preprocessing_cache_differs_between_native_2d_and_3d(tmp_path: Path) -> None:
    from clinicmm.config import WorkflowSpec

    wf = WorkflowSpec(name="x", dataset=tmp_path / "d.yaml", workdir=tmp_path)

    def with_dims(dims):
        image = wf.encoders.image.model_copy(update={"spatial_dims": dims})
        return wf.model_copy(update={"encoders": wf.encoders.model_copy(update={"image": image})})

    assert train.cache_dir(with_dims(3)) != train.cache_dir(with_dims("auto")) == train.cache_dir(with_dims(2))


def test_training_on_a_mixed_cohort_trains_both_networks(tmp_path: Path, one_thread) -> None:
    from clinicmm.config import WorkflowSpec
    from clinicmm.files import digest_files

    rng = np.random.default_rng(0)
    items = []
    for i in range(8):
        if i % 2:
            files = _us(tmp_path / f"us{i}.dcm", rng.uniform(0, 1000, (16, 16)))
        else:
            files = [str(p) for p in write_series(tmp_path / f"ct{i}", body("chest", (4, 16, 16)), patient=f"c{i}")]
        items.append({"image": files, train.LABEL_KEY: (i // 2) % 2, train.DIGEST_KEY: digest_files(files),
                      "patient_id": f"p{i}"})  # fmt: skip
    spec = ImageEncoderSpec(spatial_size=(4, 16, 16), train=ImageTrainSpec(epochs=1, batch_size=2))
    wf = WorkflowSpec(name="mixed", dataset=tmp_path / "d.yaml", workdir=tmp_path / "work")
    wf = wf.model_copy(update={"encoders": wf.encoders.model_copy(update={"image": spec})})
    usable, failed, _ = train.preprocess(wf, items, progress=False)
    assert failed == {} and sorted(i[train.SLICES_KEY] for i in usable) == [1] * 4 + [4] * 4
    before = ImageEncoder(train.base_spec(spec)).network.state_dict()
    model, history = train._fit(wf, usable, usable[:4], 2, progress=False)
    after = model[0].state_dict()
    assert np.isfinite(history[0]["train_loss"]) and np.isfinite(history[0]["val_loss"])
    for kind in ("volume", "flat"):  # each network got gradient steps from its own kind's batches
        assert not torch.equal(after[f"{kind}.conv1.weight"], before[f"{kind}.conv1.weight"]), kind
