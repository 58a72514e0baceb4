"""The plots of ``clinicmm compare``: metric bars with fold error bars, and the missing-modality ablation.

Drawn without pyplot, like :mod:`clinicmm.tracking.plots` (whose figure helpers they share).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.tracking.plots import save_figure, subplots, tab10

METRIC_LABELS = {"macro_f1": "macro-F1", "accuracy": "accuracy", "auroc_ovr": "AUROC (one-vs-rest)"}


def cv_bars_png(table: pd.DataFrame, folds: int, path: Path, title: str = "cross-validated comparison") -> Path:
    """Per model, one bar per metric at its mean over folds with ± sd error bars; the pooled out-of-fold
    estimate's bootstrap 95% CI is drawn as a black interval beside each bar."""
    models, metrics = list(table["model"]), list(METRIC_LABELS)
    width = 0.8 / len(metrics)
    fig, ax = subplots(figsize=(max(5.0, 1.1 * len(models) + 2), 3.8))
    x = np.arange(len(models))
    for j, metric in enumerate(metrics):
        pos = x - 0.4 + width * (j + 0.5)
        mean, sd = table[f"{metric}_mean"].to_numpy(), table[f"{metric}_sd"].to_numpy()
        ax.bar(
            pos,
            mean,
            width=width * 0.9,
            yerr=sd,
            capsize=2,
            color=tab10(j),
            label=METRIC_LABELS[metric],
            error_kw={"lw": 0.8},
        )
        pooled = table[f"{metric}_pooled"].to_numpy()
        low, high = table[f"{metric}_ci_low"].to_numpy(), table[f"{metric}_ci_high"].to_numpy()
        ax.errorbar(
            pos + width * 0.3,
            pooled,
            yerr=[pooled - low, high - pooled],
            fmt="none",
            ecolor="black",
            lw=0.8,
            capsize=1.5,
        )
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set(
        ylim=(0, 1.05),
        ylabel="score",
        title=f"{title}: bars = mean ± sd over {folds} folds, black = pooled 95% bootstrap CI",
    )
    ax.title.set_fontsize(8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return save_figure(fig, path)


def ablation_png(
    ablation: pd.DataFrame, modalities: tuple[str, ...], path: Path, title: str = "missing modalities at test time"
) -> Path:
    """Per model, macro-F1 with every modality and with each one removed (a modality no patient has is absent)."""
    models = list(ablation["model"])
    columns = [("all", "all modalities")] + [(f"minus_{m}", f"without {m}") for m in modalities]
    columns = [(c, label) for c, label in columns if ablation[c].notna().any()]
    width = 0.8 / len(columns)
    fig, ax = subplots(figsize=(max(5.0, 1.0 * len(models) + 2), 3.6))
    x = np.arange(len(models))
    for j, (col, label) in enumerate(columns):
        ax.bar(
            x - 0.4 + width * (j + 0.5),
            ablation[col].fillna(0).to_numpy(),
            width=width * 0.9,
            color=tab10(j),
            label=label,
        )
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="macro-F1", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return save_figure(fig, path)
