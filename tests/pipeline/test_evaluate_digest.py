"""The evaluate stage's output digest, which register and predict chain to: the same evaluation scored with another
CPU thread count (float sums in another order) keeps it; a real change of a metric does not."""

from __future__ import annotations

import json
import math

from clinicmm.files import digest_bytes
from clinicmm.pipeline.stages import DIGEST_DECIMALS, _rounded


def digest(metrics: dict) -> str:
    return digest_bytes(json.dumps(_rounded(metrics), sort_keys=True))


def test_last_bit_noise_keeps_the_digest_and_a_metric_change_does_not():
    metrics = {"kg_gnn": {"macro_f1": 0.7123456, "log_loss": 0.812345612, "ece": math.nan, "per_class": [0.25, 0.5]}}
    noisy = {"kg_gnn": {"macro_f1": 0.7123456 + 3e-8, "log_loss": 0.812345612 - 2e-8, "ece": math.nan,
                        "per_class": [0.25, 0.5 + 1e-9]}}  # fmt: skip
    assert DIGEST_DECIMALS == 6 and digest(noisy) == digest(metrics)
    changed = {"kg_gnn": metrics["kg_gnn"] | {"macro_f1": 0.7133456}}
    assert digest(changed) != digest(metrics)
    assert digest({"kg_gnn": metrics["kg_gnn"] | {"ece": 0.1}}) != digest(metrics)  # nan -> a value is a change
