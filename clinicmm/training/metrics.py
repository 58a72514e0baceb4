"""Classification metrics from torchmetrics, as plain floats ready for MLflow and tables."""

from __future__ import annotations

import numpy as np
import torch


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1, macro one-vs-rest AUROC, per-class precision and recall.

    AUROC is averaged over the classes present in ``y_true`` (a class absent from a small test split has no
    defined AUROC and would otherwise count as 0).
    """
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_auroc,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    k = len(classes)
    target = torch.as_tensor(y_true, dtype=torch.long)
    p = torch.as_tensor(probs, dtype=torch.float32)
    pred = p.argmax(dim=1)
    present = torch.unique(target)
    out = {
        "accuracy": float(multiclass_accuracy(pred, target, num_classes=k, average="micro")),
        "macro_f1": float(multiclass_f1_score(pred, target, num_classes=k, average="macro")),
    }
    auroc = multiclass_auroc(p, target, num_classes=k, average=None)
    out["auroc_ovr"] = float(auroc[present].mean()) if len(present) > 1 else float("nan")
    precision = multiclass_precision(pred, target, num_classes=k, average=None)
    recall = multiclass_recall(pred, target, num_classes=k, average=None)
    for i, c in enumerate(classes):
        out[f"precision_{c}"] = float(precision[i])
        out[f"recall_{c}"] = float(recall[i])
    return out


def confusion(y_true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    cm = multiclass_confusion_matrix(torch.as_tensor(pred), torch.as_tensor(y_true), num_classes=k)
    return cm.numpy()
