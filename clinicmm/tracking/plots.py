"""Plots people would rather look at than read: confusion matrix, training curves, model comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(cm: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(int(v)), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_png(history: list[dict[str, float]], title: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    for key in ("train_loss", "val_loss"):
        ax.plot(epochs, [h[key] for h in history], label=key)
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_macro_f1"] for h in history], color="tab:green", label="val_macro_f1")
    ax2.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    fig.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def comparison_png(scores: dict[str, float], metric: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(scores)
    ax.bar(names, [scores[n] for n in names], color=["tab:gray"] * (len(names) - 1) + ["tab:blue"])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"test {metric}")
    for i, n in enumerate(names):
        ax.text(i, scores[n] + 0.02, f"{scores[n]:.2f}", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
