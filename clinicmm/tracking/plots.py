"""Plots people would rather look at than read: confusion matrix, training curves, model comparison, ROC,
reliability diagram, modality availability. Each writes one PNG (matplotlib Agg, dpi 110) and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.keys import HAS, MODALITIES, MODALITY_NAMES, Col, Split


def subplots(*args, figsize: tuple[float, float], **kwargs):
    """A figure drawn without pyplot: library code never switches the user's backend (a notebook keeps its
    inline figures) and leaves no figure open in pyplot's registry."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def tab10(i: int):
    """The ``i``-th colour of matplotlib's tab10 cycle (one colour per model across every plot)."""
    import matplotlib

    return matplotlib.colormaps["tab10"](i % 10)


def confusion_png(cm: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    fig, ax = subplots(figsize=(1.0 + 0.7 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(int(v)), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    return save_figure(fig, path)


def curve_labels(members: int = 1) -> dict[str, str]:
    """Legend of the loss curves; for a seed ensemble (``training.ensemble``) the two losses are not the same
    quantity: training is the members' mean loss, validation the loss of their mean prediction."""
    if members <= 1:
        return {"train_loss": "train_loss", "val_loss": "val_loss"}
    return {"train_loss": f"train_loss (mean of {members} networks')", "val_loss": "val_loss (their mean prediction)"}


def curves_png(history: list[dict[str, float]], title: str, path: Path, members: int = 1) -> Path:
    fig, ax = subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    for key, label in curve_labels(members).items():
        ax.plot(epochs, [h[key] for h in history], label=label)
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_macro_f1"] for h in history], color="tab:green", label="val_macro_f1")
    ax2.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    fig.legend(loc="upper right", fontsize=7)
    return save_figure(fig, path)


def comparison_png(scores: dict[str, float], metric: str, path: Path) -> Path:
    fig, ax = subplots(figsize=(5, 3))
    names = list(scores)
    ax.bar(names, [scores[n] for n in names], color=["tab:gray"] * (len(names) - 1) + ["tab:blue"])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"test {metric}")
    for i, n in enumerate(names):
        ax.text(i, scores[n] + 0.02, f"{scores[n]:.2f}", ha="center")
    return save_figure(fig, path)


def roc_png(y: np.ndarray, probs: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """One-vs-rest ROC curve per class, AUC in the legend; a class with no positives (or no negatives) in ``y``
    has no curve and is listed as skipped."""
    from sklearn.metrics import auc, roc_curve

    y, probs = np.asarray(y), np.asarray(probs)
    fig, ax = subplots(figsize=(5, 4.4))
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="chance")
    for i, name in enumerate(classes):
        positives = int((y == i).sum())
        if positives == 0 or positives == len(y):
            ax.plot([], [], " ", label=f"{name}: {'absent from' if positives == 0 else 'only class in'} y, skipped")
            continue
        fpr, tpr, _ = roc_curve(y == i, probs[:, i])
        ax.plot(fpr, tpr, lw=1.6, color=tab10(i), label=f"{name} (AUC {auc(fpr, tpr):.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def reliability_png(probs: np.ndarray, y: np.ndarray, title: str, path: Path, n_bins: int = 10) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal (gap to the bin's mean confidence
    in red), with the number of predictions per bin below; ECE in the title."""
    from clinicmm.training.calibration import expected_calibration_error, reliability_bins

    bins = reliability_bins(probs, y, n_bins)
    ece = expected_calibration_error(probs, y, n_bins)
    centers, width = (bins["bin_lower"] + bins["bin_upper"]) / 2, 1.0 / n_bins
    fig, (ax, axc) = subplots(2, 1, figsize=(4.6, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    acc, conf = bins["accuracy"].fillna(0), bins["confidence"].fillna(0)
    ax.bar(centers, acc, width=width, color="#7fb2e5", edgecolor="black", lw=0.6, label="accuracy")
    ax.bar(
        centers,
        conf - acc,
        bottom=acc,
        width=width,
        fill=False,
        hatch="///",
        edgecolor="tab:red",
        lw=0.6,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=7)
    axc.bar(centers, bins["count"], width=width, color="tab:gray", edgecolor="black", lw=0.6)
    axc.set(xlabel="confidence (top-label probability)", ylabel="count")
    return save_figure(fig, path)


def modality_combinations(manifest: pd.DataFrame) -> pd.Series:
    """Patients per combination of available modalities (``"image+note+omics"``, ``"note"``, ``"none"`` ...),
    most common first."""
    present = _has(manifest)
    combos = present.apply(lambda row: "+".join(m for m in MODALITY_NAMES if row[m]) or "none", axis=1)
    return combos.value_counts().rename("patients").rename_axis("modalities")


def modality_availability(manifest: pd.DataFrame) -> pd.DataFrame:
    """Present / missing patient counts per split and modality: columns split, modality, present, missing.

    Patients without a split (unlabelled or unusable) count under ``"unassigned"``.
    """
    present = _has(manifest, Col.SPLIT.value)
    split = manifest[Col.SPLIT.value].fillna("").astype(str).replace("", "unassigned")
    known = [s.value for s in Split]
    order = [s for s in known if s in set(split)] + sorted(set(split) - set(known))
    rows = [
        {
            "split": s,
            "modality": m,
            "present": int(present.loc[split == s, m].sum()),
            "missing": int((~present.loc[split == s, m]).sum()),
        }
        for s in order
        for m in MODALITY_NAMES
    ]
    return pd.DataFrame(rows, columns=["split", "modality", "present", "missing"])


def availability_png(manifest: pd.DataFrame, path: Path, title: str = "modality availability") -> Path:
    """Stacked present/missing bars per modality and split, and a panel counting patients per combination."""
    counts, combos = modality_availability(manifest), modality_combinations(manifest)
    fig, (ax, axc) = subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    k, splits = len(MODALITY_NAMES), list(dict.fromkeys(counts["split"]))
    x = np.arange(len(counts)) + np.repeat(np.arange(len(splits)), k) * 0.6
    for j, m in enumerate(MODALITY_NAMES):
        ax.bar(x[j::k], counts["present"].to_numpy()[j::k], color=tab10(j), edgecolor="black", lw=0.6, label=m)
    ax.bar(
        x,
        counts["missing"],
        bottom=counts["present"],
        color="white",
        edgecolor="gray",
        hatch="//",
        lw=0.6,
        label="missing",
    )
    for xi, (p, m) in zip(x, zip(counts["present"], counts["missing"])):
        ax.text(xi, p + m, f"{p}/{p + m}", ha="center", va="bottom", fontsize=7)
    totals = (counts["present"] + counts["missing"]).to_numpy()[::k]
    ax.set_xticks(x.reshape(-1, k).mean(axis=1), [f"{sp}\n({n} patients)" for sp, n in zip(splits, totals)])
    ax.set(ylabel="patients", title=title)
    if counts.empty:
        ax.text(0.5, 0.5, "no patients in the manifest", transform=ax.transAxes, ha="center")
    ax.margins(y=0.12)
    ax.legend(loc="upper right", fontsize=7)
    axc.barh(combos.index[::-1], combos.values[::-1], color="tab:purple")
    for yi, v in enumerate(combos.values[::-1]):
        axc.text(v, yi, f" {v}", va="center", fontsize=7)
    axc.set(xlabel="patients", title="patients by modality combination")
    axc.tick_params(axis="y", labelsize=7)
    axc.margins(x=0.15)
    return save_figure(fig, path)


def _has(manifest: pd.DataFrame, *extra: str) -> pd.DataFrame:
    """The manifest's has_image / has_note / has_omics columns as a boolean frame named by modality (checks
    that those and the ``extra`` columns exist)."""
    cols = [HAS[m].value for m in MODALITIES]
    missing = [c for c in [*cols, *extra] if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"Expected manifest columns {[*cols, *extra]} (got {list(manifest.columns)}; missing {missing})"
        )
    return manifest[cols].fillna(False).astype(bool).set_axis(list(MODALITY_NAMES), axis=1)


def save_figure(fig, path: Path) -> Path:
    """Lay out, write at dpi 110 and close the figure (figures left open leak memory over a long run)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
