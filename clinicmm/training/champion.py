"""The champion: which trained model the workflow registers and serves (``primary_model: auto``).

Chosen on the **validation** split, never the test split the report is read from, by the one-standard-error rule
(Breiman et al.'s CART pruning; glmnet's ``lambda.1se``): the best validation macro-F1 (at each model's best
epoch) is ``top``; every model within one standard error of it, ``sqrt(top (1 - top) / n_val)`` over the ``n_val``
validation patients (at least :data:`TIE`), is as good as the data can tell; of those the **simplest** is chosen
(:data:`SIMPLER_FIRST`: linear, then single-modality networks, trees, fusion networks, graph networks), then the
lower validation loss, then the model listed first. On a cohort of a few hundred patients the validation split
is a few dozen patients and macro-F1 moves in steps of 0.03 there; a network that wins by one patient is not
better. A hospital gets the best model its data can show, not the fanciest; the registry records which and why.

``clinicmm compare`` reports what this choice achieves inside each fold (its ``champion`` row). Measured against
taking the top validation macro-F1 (TCGA-KIPAN two fold seeds, KIPAN miRNA 658 patients two fold seeds, the demo:
``README.md``, *Which model is registered*): the same mean macro-F1, and never more than 0.012 below logreg where
the top-score rule fell 0.014 below it (CI upper bound 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clinicmm.config.workflow import AUTO

TIE = 0.005  # macro-F1 differences below this are ties, however many validation patients
SIMPLER_FIRST = (
    "logreg",
    "kg_logreg",
    "omics",
    "note",
    "image",
    "gbt",
    "concat",
    "attention",
    "kg_pathway",
    "kg_gnn",
    "kg_rgcn",
)  # fewest fitted parameters and assumptions first; a model not listed counts as the most complex


@dataclass(frozen=True)
class Champion:
    """The chosen model and a one-line reason naming the runner-up's score."""

    model: str
    reason: str


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def margin(top: float, n_val: int | None) -> float:
    """One standard error of a validation macro-F1 of ``top`` on ``n_val`` patients (binomial), at least :data:`TIE`."""
    if not n_val:
        return TIE
    return max(TIE, math.sqrt(max(top * (1.0 - top), 0.0) / n_val))


def choose(models: list[str], best: dict[str, dict], primary: str = AUTO) -> Champion:
    """``primary`` itself when the workflow names one; else the simplest of ``models`` whose validation macro-F1 is
    within one standard error of the best (module doc). ``best[name]``: the train stage's best-epoch row
    (``val_macro_f1``, ``val_loss``, ``n_val``: validation patients; without ``n_val`` the margin is :data:`TIE`)."""
    if primary != AUTO:
        return Champion(primary, f"named by primary_model ({primary})")
    scored = [
        (m, _finite(best.get(m, {}).get("val_macro_f1")), _finite(best.get(m, {}).get("val_loss"))) for m in models
    ]
    scored = [s for s in scored if s[1] is not None]
    if not scored:
        fallback = "logreg" if "logreg" in models else models[0]
        return Champion(fallback, f"no validation scores (empty validation split): {fallback} by default")
    top_name, top, _ = max(scored, key=lambda s: s[1])
    n_val = max((int(best[m].get("n_val") or 0) for m, _, _ in scored), default=0)
    band = margin(top, n_val)

    def rank(s):
        simpler = SIMPLER_FIRST.index(s[0]) if s[0] in SIMPLER_FIRST else len(SIMPLER_FIRST)
        return simpler, s[2] if s[2] is not None else math.inf, models.index(s[0])

    name, f1, _ = min((s for s in scored if s[1] >= top - band), key=rank)
    if f1 < top:
        return Champion(
            name,
            f"validation macro-F1 {f1:.3f}, within one standard error ({band:.3f}, {n_val} validation patients) of "
            f"the best, {top_name} {top:.3f}, and the simplest such of {len(scored)} models",
        )
    others = sorted((s for s in scored if s[0] != name), key=lambda s: -s[1])
    runner = f"; next {others[0][0]} {others[0][1]:.3f}" if others else ""
    return Champion(name, f"best validation macro-F1 {f1:.3f} of {len(scored)} models{runner}")
