"""The champion: which trained model the workflow registers and serves (``primary_model: auto``).

Chosen on the **validation** split, never the test split the report is read from: the highest validation
macro-F1 at each model's best epoch; ties (within 0.005) go to the lower validation loss, then to the model listed
first. A hospital gets the best model on its own data, not the fanciest; the registry records which and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TIE = 0.005  # macro-F1 differences below this are ties


@dataclass(frozen=True)
class Champion:
    """The chosen model and a one-line reason naming the runner-up's score."""

    model: str
    reason: str


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def choose(models: list[str], best: dict[str, dict], primary: str = "auto") -> Champion:
    """``primary`` itself when the workflow names one; else the best of ``models`` by ``best[name]`` (the train
    stage's best-epoch row: ``val_macro_f1``, ``val_loss``)."""
    if primary != "auto":
        return Champion(primary, f"named by primary_model ({primary})")
    scored = [
        (m, _finite(best.get(m, {}).get("val_macro_f1")), _finite(best.get(m, {}).get("val_loss"))) for m in models
    ]
    scored = [s for s in scored if s[1] is not None]
    if not scored:
        fallback = "logreg" if "logreg" in models else models[0]
        return Champion(fallback, f"no validation scores (empty validation split): {fallback} by default")
    top = max(f1 for _, f1, _ in scored)
    tied = [s for s in scored if s[1] >= top - TIE]
    name, f1, loss = min(tied, key=lambda s: (s[2] if s[2] is not None else math.inf, models.index(s[0])))
    others = sorted((s for s in scored if s[0] != name), key=lambda s: -s[1])
    runner = f"; next {others[0][0]} {others[0][1]:.3f}" if others else ""
    return Champion(name, f"best validation macro-F1 {f1:.3f} of {len(scored)} models{runner}")
