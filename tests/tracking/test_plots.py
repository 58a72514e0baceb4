"""PNG plots: valid files of the expected size, ROC legend notes a missing class, availability counts."""

from __future__ import annotations

import warnings

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from clinicmm.tracking import plots
from clinicmm.training.calibration import expected_calibration_error

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["breast", "lung", "colorectal", "glioma"]


@pytest.fixture
def captured(monkeypatch):
    """Keep each saved figure so the test can read its titles and legends after the PNG is written."""
    figures = []
    real_save = plots.save_figure

    def save(fig, path):
        figures.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", save)
    return figures


def _predictions(n: int = 60, absent: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = [c for c in range(len(CLASSES)) if c != absent]
    y = rng.choice(labels, n)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def _assert_png(path, width_in: float, height_in: float) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert abs(image.shape[1] - width_in * 110) <= 2 and abs(image.shape[0] - height_in * 110) <= 2
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def _manifest() -> pd.DataFrame:
    rows = [  # has_image, has_note, has_omics, split
        (True, True, True, "train"),
        (True, True, True, "train"),
        (False, True, True, "train"),
        (True, False, False, "val"),
        (False, True, True, "test"),
        (False, False, False, ""),
        (True, True, None, "test"),
    ]
    frame = pd.DataFrame(rows, columns=["has_image", "has_note", "has_omics", "split"])
    frame.insert(0, "patient_id", [f"P{i}" for i in range(len(rows))])
    return frame


def test_roc_png_writes_a_png_with_one_auc_per_class(tmp_path, captured):
    y, probs = _predictions()
    out = plots.roc_png(y, probs, CLASSES, "test ROC", tmp_path / "roc.png")
    assert out == tmp_path / "roc.png"
    _assert_png(out, 5, 4.4)
    legend = [t.get_text() for t in captured[0].axes[0].get_legend().get_texts()]
    assert legend[0] == "chance" and all(any(t.startswith(f"{c} (AUC 0.") for t in legend) for c in CLASSES)


def test_roc_png_skips_a_class_absent_from_y_and_says_so(tmp_path, captured):
    y, probs = _predictions(absent=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn warns if asked for a curve without positives
        plots.roc_png(y, probs, CLASSES, "test ROC", tmp_path / "roc.png")
    legend = [t.get_text() for t in captured[0].axes[0].get_legend().get_texts()]
    assert "colorectal: absent from y, skipped" in legend
    assert not any(t.startswith("colorectal (AUC") for t in legend)
    assert sum("(AUC" in t for t in legend) == 3
    assert len(captured[0].axes[0].get_lines()) == 1 + 3 + 1  # diagonal, three curves, the legend-only note


def test_reliability_png_shows_ece_in_title(tmp_path, captured):
    y, probs = _predictions(n=120)
    out = plots.reliability_png(probs, y, "test reliability", tmp_path / "rel.png", n_bins=8)
    _assert_png(out, 4.6, 5)
    top, counts = captured[0].axes
    assert top.get_title() == f"test reliability (ECE {expected_calibration_error(probs, y, 8):.3f})"
    assert sum(p.get_height() for p in counts.patches) == pytest.approx(len(y))


def test_modality_combinations_count_patients_per_combination():
    combos = plots.modality_combinations(_manifest())
    assert combos.to_dict() == {"image+note+omics": 2, "note+omics": 2, "image": 1, "none": 1, "image+note": 1}
    assert combos.iloc[0] == combos.max() and combos.sum() == len(_manifest())


def test_modality_availability_counts_present_and_missing_per_split():
    counts = plots.modality_availability(_manifest()).set_index(["split", "modality"])
    assert list(counts.index.get_level_values(0).unique()) == ["train", "val", "test", "unassigned"]
    assert counts.loc[("train", "image")].tolist() == [2, 1]
    assert counts.loc[("train", "omics")].tolist() == [3, 0]
    assert counts.loc[("test", "omics")].tolist() == [1, 1]  # a missing has_omics value counts as missing
    assert counts.loc[("unassigned", "note")].tolist() == [0, 1]
    assert (counts["present"] + counts["missing"]).groupby(level=0).first().sum() == len(_manifest())


def test_availability_png_writes_a_png(tmp_path, captured):
    out = plots.availability_png(_manifest(), tmp_path / "avail.png")
    _assert_png(out, 10, 3.8)
    bars, combos = captured[0].axes
    assert bars.get_title() == "modality availability"
    assert sorted(p.get_width() for p in combos.patches) == sorted(plots.modality_combinations(_manifest()).tolist())


def test_manifest_without_modality_columns_is_rejected():
    with pytest.raises(ValueError, match=r"Expected manifest columns .*missing \['has_omics'\]"):
        plots.modality_combinations(_manifest().drop(columns="has_omics"))
    with pytest.raises(ValueError, match=r"missing \['split'\]"):
        plots.modality_availability(_manifest().drop(columns="split"))


def test_existing_plots_still_write_pngs(tmp_path):
    cm = np.array([[3, 1], [0, 4]])
    assert plots.confusion_png(cm, ["a", "b"], "cm", tmp_path / "cm.png").read_bytes()[:8] == PNG_SIGNATURE
    history = [
        {"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_macro_f1": 0.2 * e} for e in range(4)
    ]
    assert plots.curves_png(history, "curves", tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (
        plots.comparison_png({"image": 0.5, "fused": 0.8}, "macro_f1", tmp_path / "m.png").read_bytes()[:8]
        == PNG_SIGNATURE
    )


def test_plotting_never_switches_the_users_matplotlib_backend(tmp_path):
    import matplotlib

    from clinicmm.tracking.plots import comparison_png

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        comparison_png({"concat": 0.8, "kg_gnn": 0.9}, "macro-F1", tmp_path / "c.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def test_an_ensembles_curves_say_the_two_losses_are_not_the_same_quantity(tmp_path):
    assert plots.curve_labels(1) == {"train_loss": "train_loss", "val_loss": "val_loss"}
    labels = plots.curve_labels(5)
    assert "mean of 5 networks" in labels["train_loss"] and "mean prediction" in labels["val_loss"]
    history = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.1, "val_macro_f1": 0.5} for e in range(3)]
    assert plots.curves_png(history, "c", tmp_path / "e.png", members=5).read_bytes()[:8] == PNG_SIGNATURE
