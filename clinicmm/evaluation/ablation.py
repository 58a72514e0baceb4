"""Missing-modality ablation: score the same patients again with one modality removed, for each modality in turn.

A removed modality is exactly what a patient without it looks like to the model (no evidence node, no links, a
zeroed dense view, ``present`` False: :func:`clinicmm.fusion.batch.without_modality`), so the drop in macro-F1
is what the model loses when that input is missing at test time. Modality dropout in training
(``TrainingSpec.modality_dropout``) is what should keep that drop small. A modality that no scored patient has
cannot be removed: its columns are NaN (shown as "–"), not a misleading zero drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.csvsafe import write_csv
from clinicmm.keys import MODALITY_NAMES


def probs_and_without(model, items: list, knowledge, dims: Mapping[str, int]):
    """(N, C) probabilities of ``items``, and ``{modality: probabilities with it removed}`` (None for a modality
    that none of the items has)."""
    from clinicmm.training.fit import predict_proba

    full = predict_proba(model, items, knowledge, dims)
    without = {
        m: predict_proba(model, items, knowledge, dims, without=m)
        if any(getattr(p, m) is not None for p in items)
        else None
        for m in MODALITY_NAMES
    }
    return full, without


def macro_f1(y: np.ndarray, probs: np.ndarray) -> float:
    """Macro-F1 of the arg-max predictions over the classes in ``y`` or predicted (sklearn's convention)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, np.asarray(probs).argmax(1), average="macro", zero_division=0))


def ablation_row(y: np.ndarray, full: np.ndarray, without: Mapping[str, np.ndarray | None]) -> dict[str, float]:
    """``all``, ``minus_<m>`` and ``drop_<m>`` (= all - minus) macro-F1; ``without[m]`` None -> NaN for ``m``."""
    row = {"all": macro_f1(y, full)}
    for m in MODALITY_NAMES:
        probs = without.get(m)
        row[f"minus_{m}"] = macro_f1(y, probs) if probs is not None else float("nan")
    for m in MODALITY_NAMES:
        row[f"drop_{m}"] = row["all"] - row[f"minus_{m}"]
    return row


def markdown(table: pd.DataFrame, title: str) -> str:
    """The ablation table as markdown: macro-F1 with every modality, without each, and the drop."""
    head = ["model", "n", "all", *(f"− {m}" for m in MODALITY_NAMES), *(f"drop {m}" for m in MODALITY_NAMES)]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r["model"]), str(int(r["n"])), _f(r["all"])]
        cells += [_f(r[f"minus_{m}"]) for m in MODALITY_NAMES] + [
            _f(r[f"drop_{m}"], signed=True) for m in MODALITY_NAMES
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _f(value: float, signed: bool = False) -> str:
    if value != value:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def write_ablation(rows: list[dict], out: Path) -> pd.DataFrame:
    """The evaluate stage's ablation table (one row per model: ``model``, ``n`` and :func:`ablation_row`'s
    columns) as ``ablation.csv`` and ``ablation.md``."""
    table = pd.DataFrame(rows)
    write_csv(table, out / "ablation.csv", index=False)
    n = int(table["n"].iloc[0]) if len(table) else 0
    (out / "ablation.md").write_text(markdown(table, f"Missing modalities: test-split macro-F1 (n={n})"))
    return table
