"""Site-aware splits: when the dataset names a site column, no site contributes to two splits.

A model that has seen a hospital's scanners, templates and case mix in training scores that hospital's test
patients too well; splitting by site measures what a new site would see. Splits stay patient-level inside
(one patient, one split), and are stratified by label as far as the sites allow (scikit-learn's
``StratifiedGroupKFold``). :func:`site_folds` gives the leave-one-site-out folds, reported per site.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from clinicmm.config import DatasetSpec
from clinicmm.errors import ConfigError, InputError, where
from clinicmm.keys import Col, Split, Status

MIN_SITES = 3  # train, val and test each need a site of their own


def read_sites(spec: DatasetSpec, table: pd.DataFrame | None = None) -> dict[str, str]:
    """Patient -> site from ``labels.site_column`` (empty cells are left out).

    ``table``: the labels file already read (``labels.read_labels_table``); read here when not given.
    """
    from clinicmm.ingest.labels import read_labels_table

    path, column = spec.resolve(spec.labels.path), spec.labels.site_column
    table = read_labels_table(spec, table)
    if column not in table.columns:
        raise InputError(
            f"{where(path, column=column)} not found (named by labels.site_column in the dataset YAML); columns in "
            f"the file: {', '.join(table.columns)}. Fix the YAML or the header."
        )
    pairs = zip(table[spec.labels.patient_column].astype(str).str.strip(), table[column].astype(str).str.strip())
    sites: dict[str, str] = {}
    for pid, site in pairs:
        if pid and site and pid not in sites:
            sites[pid] = site
    return sites


def _group_fold(frame: pd.DataFrame, n_splits: int, seed: int) -> pd.Index:
    """The manifest index of the first fold of a label-stratified, site-grouped k-fold (about 1/k of patients)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, min(n_splits, frame["_site"].nunique()))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has only n members": expected with few sites
        warnings.simplefilter("ignore", UserWarning)
        _, test = next(folds.split(frame, frame[Col.LABEL.value], groups=frame["_site"]))
    return frame.index[test]


def _labelled_with_sites(
    spec: DatasetSpec, manifest: pd.DataFrame, labels_table: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The labelled usable patients that have a site (column ``_site``), and a note about those without."""
    sites = read_sites(spec, labels_table)
    usable = manifest[(manifest[Col.STATUS] == Status.OK) & (manifest[Col.LABEL] != "")].copy()
    usable["_site"] = usable[Col.PATIENT].map(sites)
    missing = usable["_site"].isna()
    notes = []
    if missing.any():
        notes.append(
            f"{int(missing.sum())} labelled patient(s) have no site in {spec.resolve(spec.labels.path).name} column "
            f"{spec.labels.site_column!r}: left out of every split; fill the column to use them"
        )
    return usable[~missing], notes


def assign_site_splits(
    spec: DatasetSpec, manifest: pd.DataFrame, labels_table: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Train/val/test by site: every patient of a site lands in the same split (about ``split.val`` and
    ``split.test`` of the patients, as whole sites allow). ``labels_table``: the labels file already read."""
    manifest = manifest.copy()
    manifest[Col.SPLIT.value] = ""
    have, notes = _labelled_with_sites(spec, manifest, labels_table)
    n_sites = have["_site"].nunique()
    if n_sites < MIN_SITES:
        raise ConfigError(
            f"{spec.resolve(spec.labels.path)}: column {spec.labels.site_column!r} names {n_sites} site(s) among the "
            f"labelled patients; a by-site train/val/test split needs at least {MIN_SITES}. Add sites, or remove "
            "labels.site_column to split by patient."
        )
    s = spec.split
    test = _group_fold(have, round(1 / s.test), s.seed)
    rest = have.drop(test)
    val = _group_fold(rest, round((1 - s.test) / s.val), s.seed)
    manifest.loc[have.index, Col.SPLIT.value] = Split.TRAIN.value
    manifest.loc[val, Col.SPLIT.value] = Split.VAL.value
    manifest.loc[test, Col.SPLIT.value] = Split.TEST.value
    for split in (Split.TEST, Split.VAL, Split.TRAIN):
        chosen = sorted(have.loc[manifest.loc[have.index, Col.SPLIT.value] == split.value, "_site"].unique())
        notes.append(f"split by site (column {spec.labels.site_column!r}): {split.value} sites {', '.join(chosen)}")
    return manifest, notes


def site_folds(spec: DatasetSpec, manifest: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Leave-one-site-out: for each site, (site, manifest) with that site as test; val is another site where
    there are at least two left, else a label-stratified share of the remaining patients."""
    have, _ = _labelled_with_sites(spec, manifest)
    for site in sorted(have["_site"].unique()):
        fold = manifest.copy()
        fold[Col.SPLIT.value] = ""
        rest = have[have["_site"] != site]
        if rest["_site"].nunique() >= 2:
            val = _group_fold(rest, round(1 / spec.split.val), spec.split.seed)
        else:
            val = _patient_share(rest, spec.split.val, spec.split.seed)
        fold.loc[rest.index, Col.SPLIT.value] = Split.TRAIN.value
        fold.loc[val, Col.SPLIT.value] = Split.VAL.value
        fold.loc[have.index[have["_site"] == site], Col.SPLIT.value] = Split.TEST.value
        yield site, fold


def _patient_share(frame: pd.DataFrame, share: float, seed: int) -> pd.Index:
    rng = np.random.default_rng(seed)
    picked = []
    for _, group in frame.groupby(Col.LABEL.value, sort=True):
        n = int(round(len(group) * share)) if len(group) >= 3 else 0
        picked += list(group.index.to_numpy()[rng.permutation(len(group))][:n])
    return pd.Index(picked)
