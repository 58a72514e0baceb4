"""The one fit path: :func:`fit_model` fits one model on given train / validation rows, for train, compare and
leave-one-site-out alike; :func:`fit` is its Lightning loop (early stopping on the validation loss).

Every model goes through the same path (same rows, standardiser, seed, optimiser, early stopping, modality
dropout; logistic regression in closed form), so the comparison between single-modality, concatenation, graph
fusion and the linear baseline is fair.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clinicmm.config import TrainingSpec
from clinicmm.errors import ConfigError
from clinicmm.training.loaders import make_loader
from clinicmm.training.module import EpochCallback, FusionTask, lightning

log = logging.getLogger("clinicmm")
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # Lightning strategies that start their own processes


def balanced_weights(items: list, n_classes: int) -> np.ndarray:
    """Per-class loss weights ``n / (k * count)`` of the training items (scikit-learn's 'balanced'); an absent class 0."""
    counts = np.bincount([int(p.label) for p in items], minlength=n_classes).astype(float)
    present = counts > 0
    out = np.zeros(n_classes)
    out[present] = counts.sum() / (present.sum() * counts[present])
    return out


def graph_batches(model: torch.nn.Module, spec: TrainingSpec) -> None:
    """Give a graph model ``spec``'s cut threshold and neighbour sampling (other models have neither), also inside
    a wrapper (:mod:`clinicmm.fusion.models.wrappers`)."""
    for module in model.modules():
        if hasattr(module, "subgraph_min_edges"):  # graph models: batches of a large graph cut to their receptive field
            module.subgraph_min_edges, module.num_neighbors = spec.subgraph_min_edges, spec.num_neighbors


def fit(
    model,
    train: list,
    val: list,
    knowledge,
    dims,
    spec: TrainingSpec,
    n_classes: int,
    on_epoch=None,
    progress=True,
    ckpt_dir: Path | None = None,
):
    """Train ``model`` with early stopping on val loss; returns the model at its best epoch and the history.

    The Trainer takes ``spec``'s accelerator / devices / num_nodes / strategy / precision. With ``ckpt_dir`` it
    keeps ``last.ckpt`` there after every epoch and resumes from it when present.
    """
    pl = lightning()
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from clinicmm.training.loaders import FusionData

    pl.seed_everything(spec.seed, workers=True, verbose=False)
    graph_batches(model, spec)
    from clinicmm.fusion.models.wrappers import offset_of

    weights = balanced_weights(train, n_classes) if spec.class_weights == "balanced" else None
    keep_start = spec.keep_start and offset_of(model) == "logreg"  # its start is the linear model, a model in itself
    task = FusionTask(model, spec, n_classes, weights, keep_start=keep_start)
    spawns = spec.strategy.startswith(SPAWNING)  # the fit runs in child processes: log its epochs afterwards
    callbacks = [EarlyStopping(monitor="val_loss", mode="min", patience=spec.patience)]
    if on_epoch is not None and not spawns:
        callbacks.append(EpochCallback(on_epoch))
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, enable_version_counter=False))
    trainer = _trainer(pl, spec, callbacks, progress, checkpointing=ckpt_dir is not None, score_start=keep_start)
    last = Path(ckpt_dir) / "last.ckpt" if ckpt_dir is not None else None
    resume = str(last) if last is not None and last.is_file() else None
    with warnings.catch_warnings():  # Lightning's own notice about a PyTorch internal, once per fit: noise
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(task, datamodule=FusionData(train, val, knowledge, dims, spec), ckpt_path=resume)
    if spawns and on_epoch is not None:
        for row in task.history:
            on_epoch(row)
    if task.best_state is not None:
        model.load_state_dict(task.best_state)
    return model.eval(), task.history


@dataclass
class FittedModel:
    """What :func:`fit_model` returns: the model at its best epoch, its history and what it was fitted with."""

    name: str
    model: torch.nn.Module
    history: list[dict]
    scaler: object  # clinicmm.training.data.Standardizer, fitted on the training rows
    dims: dict[str, int]
    hetero: object  # the graph as HeteroData


def fit_model(
    name: str,
    data,
    train: tuple,
    val: tuple,
    spec: TrainingSpec,
    on_epoch=None,
    progress: bool = True,
    ckpt_dir: Path | None = None,
) -> FittedModel:
    """The one path that fits a model: ``clinicmm train``, ``compare`` and leave-one-site-out all come here.

    ``data``: a :class:`~clinicmm.training.data.TrainingData` (or one fold of it: :meth:`TrainingData.fold`, whose
    omics preprocessor was refitted on that fold's training patients); ``train`` / ``val``: ``(rows, labels)`` of
    its encodings. The standardiser is fitted on ``train`` rows only; the seed fixes the initial weights whatever
    ran before; a graph model's cancer-type nodes start from the text encoder (``training.class_init``), its genes,
    pathways and concepts at random or from the graph's structure (``training.node_init``). A network
    with ``training.ensemble`` > 1 is a :class:`~clinicmm.fusion.models.wrappers.SeedEnsemble` of that many.
    """
    from clinicmm.fusion.models.kg_gnn import init_classes_from_text, init_nodes_from_graph
    from clinicmm.fusion.models.wrappers import LinearOffset, SeedEnsemble, zero_output
    from clinicmm.fusion.registry import build_model, corrects_logreg
    from clinicmm.keys import Model
    from clinicmm.training.data import (
        Standardizer,
        class_nodes,
        dims_of,
        hold_out,
        input_blocks,
        omics_gene_index,
        to_evidence,
    )

    scaler = Standardizer.fit(data.encoded.vectors, np.asarray(train[0], dtype=int))
    dims, hetero, n = dims_of(data.encoded.vectors), data.kg.to_hetero(), len(data.classes)
    genes, n_expression = omics_gene_index(data.genomics, data.kg, name, spec.gene_set_input)

    def build(seed: int, model_name: str = name):
        torch.manual_seed(seed)  # each model's initial weights depend on the seed alone, not on run order
        model = build_model(
            model_name, dims, n, hetero, class_nodes(data.kg, data.classes), spec.hidden, spec.dropout, genes,
            n_expression,
        )  # fmt: skip
        init_classes_from_text(model, data.kg, spec.class_init, data.wf.encoders.text)
        init_nodes_from_graph(model, data.kg, spec.node_init)
        if model_name == Model.LOGREG:  # training.linear_blocks: which block each input column belongs to
            model.blocks = input_blocks(dims, data.genomics)
        return model

    model = build(spec.seed)
    closed_form = getattr(model, "closed_form", False)  # logreg / trees: chosen on the training rows, no gradient steps
    if (
        not len(val[0]) and not closed_form
    ):  # no validation split (a given split may have none): stop early inside train
        train, val = hold_out(train, spec.seed)
        log.info(
            "%s: no validation patients; early stopping on %d of the %d training patients",
            name,
            len(val[0]),
            len(val[0]) + len(train[0]),
        )
    items = [to_evidence(data.encoded, rows, y, data.kg, scaler) for rows, y in (train, val)]
    if closed_form:
        history = fit_closed_form(model, items[0], items[1], hetero, dims, spec, n)
        for row in history if on_epoch is not None else ():
            on_epoch(row)
    else:
        # training.ensemble: member i starts from seed + i, so member 0 starts from the weights a single fit starts from
        members = [model, *(build(spec.seed + i) for i in range(1, spec.ensemble))]
        offset = corrects_logreg(name, spec.offset)
        if offset:  # CANN: see clinicmm.fusion.models.wrappers
            make = functools.partial(build, spec.seed, "logreg")
            base, items[0] = logreg_offset(data, (train, val), items, make, hetero, dims, spec)
            # base is this network's own copy already (logreg_offset); further members get theirs
            members = [LinearOffset(zero_output(m), copy.deepcopy(base) if i else base) for i, m in enumerate(members)]
        model = members[0] if len(members) == 1 else SeedEnsemble(members)
        model, history = fit(model, items[0], items[1], hetero, dims, spec, n, on_epoch, progress, ckpt_dir)
        warn_if_stopped_at_once(name, history, offset=offset)
    return FittedModel(name, model.eval(), history, scaler, dims, hetero)


def refit_linear_part(fitted: FittedModel, data, rows: tuple, spec: TrainingSpec) -> None:
    """Refit the linear model a fitted network corrects (``training.offset: logreg``) on ``rows`` (``(rows,
    labels)``), in place, through the network's own standardiser; the network's correction stays as trained.

    ``compare`` fits its closed-form models (logreg, kg_logreg, gbt) on a fold's fit *and* validation patients, while
    a network holds the validation patients out to stop early: so the linear part of a corrected network is refitted
    on both too, once its correction is trained, and a network that kept its start scores as logreg does. A network
    without a linear part is left as it is."""
    from clinicmm.fusion.models.wrappers import members_of, offset_of
    from clinicmm.training.data import to_evidence

    if offset_of(fitted.model) != "logreg":
        return
    members = members_of(fitted.model)
    cache = getattr(data, "fitted_offsets", {})  # every corrected network of a fold refits the same model: once
    standardiser = repr((fitted.scaler.mean, fitted.scaler.std))  # the refit reads the rows through it
    key = ("refit", *_fits_key(data, (rows,), spec), standardiser)
    if key not in cache:
        items = to_evidence(data.encoded, *rows, data.kg, fitted.scaler)
        cache[key] = copy.deepcopy(members[0].base)
        fit_closed_form(cache[key], items, [], fitted.hetero, fitted.dims, spec, len(data.classes))
    for member in members:
        member.base = copy.deepcopy(cache[key]).requires_grad_(False).train(member.training)


def _fits_key(data, rows: tuple, spec: TrainingSpec) -> tuple:
    """What makes one linear fit of :func:`logreg_offset` / :func:`refit_linear_part` the same as another: the
    graph (compare's knowledge ablation swaps it on a copy of the fold, sharing the cache), the rows (``(rows,
    labels)`` tuples) and the training settings."""
    parts = (np.asarray(part, dtype=np.int64).tobytes() for rows_labels in rows for part in rows_labels)
    return (id(data.kg), *parts, spec.model_dump_json())


def fit_closed_form(model, train: list, val: list, knowledge, dims, spec: TrainingSpec, n_classes: int) -> list[dict]:
    """Fit a closed-form model (logistic regression or trees) on ``train``; its one-row history."""
    from clinicmm.training.linear import fit_linear
    from clinicmm.training.trees import fit_trees

    fitter = fit_trees if model.closed_form == "trees" else fit_linear
    return fitter(model, train, val, knowledge, dims, spec, n_classes)


def logreg_offset(data, rows: tuple, items: list, make, knowledge, dims, spec: TrainingSpec):
    """The fitted logistic regression a corrected network starts from, and the training ``items`` with their
    out-of-fold logits (:func:`out_of_fold_offsets`).

    Every corrected network of one train stage or of one ``compare`` fold starts from the same fits (same rows,
    graph, seed and settings), so they are made once and kept on ``data`` (``data.fitted_offsets``: a fold of
    :meth:`~clinicmm.training.data.TrainingData.fold` starts with an empty one); each network gets its own copy of
    the fitted model."""
    import dataclasses

    (train, val), n = rows, len(data.classes)
    cache = getattr(data, "fitted_offsets", {})  # a data object without one: fitted for this network alone
    key = _fits_key(data, (train, (val[0],)), spec)
    if key not in cache:
        base = make()
        fit_closed_form(base, items[0], items[1], knowledge, dims, spec, n)
        cache[key] = base, [p.offset for p in out_of_fold_offsets(items[0], make, knowledge, dims, spec, n)]
    base, logits = cache[key]
    return copy.deepcopy(base), [dataclasses.replace(p, offset=o) for p, o in zip(items[0], logits)]


def out_of_fold_offsets(items: list, make, knowledge, dims, spec: TrainingSpec, n_classes: int, k: int = 5) -> list:
    """``items`` with ``offset``: each patient's logits from a closed-form model (``make()``) fitted on the other
    folds of ``items`` (stratified ``k`` folds; fewer when a class has fewer patients), as stacking cross-fits. With
    a class of one training patient there is nothing to cross-fit: ``items`` come back as they are and the network
    trains on the in-sample linear model's logits."""
    import dataclasses

    from sklearn.model_selection import StratifiedKFold

    from clinicmm.training.linear import design

    y = np.array([int(p.label) for p in items])
    counts = np.bincount(y)
    folds = int(min(k, counts[counts > 0].min()))
    if folds < 2:
        return items
    out = list(items)
    for fit_idx, held in StratifiedKFold(folds, shuffle=True, random_state=spec.seed).split(y, y):
        model = make()
        fit_closed_form(model, [items[i] for i in fit_idx], [], knowledge, dims, spec, n_classes)
        x, _ = design(model, [items[i] for i in held], knowledge, dims)
        with torch.no_grad():
            logits = model.logits(torch.as_tensor(x)).float().numpy()
        for row, i in enumerate(held):
            out[i] = dataclasses.replace(items[i], offset=logits[row])
    return out


EARLY = 1  # a best epoch at or below this (0-based: the first two) means the model stopped learning at once


def best_epoch(history: list[dict]) -> int | None:
    """The 0-based epoch of the lowest validation loss (None without a finite one); -1 when the model as it started
    scored best (``training.keep_start``: a corrected network that kept the linear model)."""
    scored = [h for h in history if h.get("val_loss") == h.get("val_loss") and "val_loss" in h]
    return int(min(scored, key=lambda h: h["val_loss"])["epoch"]) if scored else None


def trained_epochs(history: list[dict]) -> int:
    """How many epochs a fit trained (its history without the start's row, epoch -1)."""
    return sum(1 for h in history if h.get("epoch", 0) >= 0)


def warn_if_stopped_at_once(name: str, history: list[dict], offset: bool = False) -> None:
    """Say so when a model's best validation loss came in its first two epochs of several: on small real cohorts
    that usually means it overfits at once, and a linear model on the same embeddings is the one to compare with.
    With ``training.offset`` the network starts at the linear model: an early best epoch means its correction
    did not help on validation, and the model stays close to logreg, or is it (``training.keep_start``; said at
    INFO, not a warning)."""
    best, epochs = best_epoch(history), trained_epochs(history)
    if best is None or best > EARLY or epochs <= EARLY + 2:
        return
    if offset and best < 0:
        log.info(
            "%s: none of its %d epochs of correction beat the logistic regression it starts from on validation: "
            "kept the linear model (training.keep_start)",
            name,
            epochs,
        )
        return
    if offset:
        log.info(
            "%s: its correction of the logistic regression stopped improving at epoch %d of %d: on these patients "
            "the network adds little to the linear model it starts from",
            name,
            best + 1,
            epochs,
        )
        return
    log.warning(
        "%s: its best validation loss came at epoch %d of %d: it stopped learning almost at once (small cohort "
        "or high learning rate); compare it with logreg (`clinicmm compare`), or lower training.lr",
        name,
        best + 1,
        epochs,
    )


def _trainer(pl, spec: TrainingSpec, callbacks: list, progress: bool, checkpointing: bool, score_start: bool = False):
    """A Trainer on ``spec``'s hardware settings; Lightning's refusal becomes a ConfigError naming the keys.
    ``score_start``: its sanity pass runs the whole validation split before training (``training.keep_start``)."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(
            max_epochs=spec.max_epochs,
            accelerator=spec.accelerator,
            devices=spec.devices,
            num_nodes=spec.num_nodes,
            strategy=spec.strategy,
            precision=spec.precision,
            logger=False,  # MLflow logging is clinicmm.tracking's, from rank 0 only
            enable_checkpointing=checkpointing,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=callbacks,
            num_sanity_val_steps=-1 if score_start else 0,
            use_distributed_sampler=False,  # FusionData splits by rank itself (same batches for any process count)
            deterministic=True
            if spec.accelerator == "cpu"
            else "warn",  # some CUDA scatter kernels have no deterministic twin
        )
    except (MisconfigurationException, ValueError, RuntimeError, ImportError) as exc:
        raise ConfigError(
            f"training: Lightning cannot use accelerator={spec.accelerator!r}, devices={spec.devices!r}, "
            f"num_nodes={spec.num_nodes}, strategy={spec.strategy!r}, precision={spec.precision!r} here ({exc}). "
            "Fix those keys of the workflow's training section."
        ) from None


@torch.inference_mode()
def predict_proba(model, items: list, knowledge, dims, batch_size: int = 64, without: str | None = None) -> np.ndarray:
    """Class probabilities (N, C) for a list of PatientEvidence; ``without``: that modality removed from every
    batch (:func:`clinicmm.fusion.batch.without_modality`), as a patient lacking it looks to the model."""
    from clinicmm.fusion.batch import without_modality

    model.eval()
    batches = make_loader(items, knowledge, dict(dims), batch_size)
    out = [torch.softmax(model(without_modality(b, without) if without else b), dim=1) for b in batches]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
