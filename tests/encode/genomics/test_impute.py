"""A feature a patient's panel did not measure is filled from the features it did, under a probabilistic PCA of
the training patients; graph links and fully measured rows never change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clinicmm.encode.genomics import GenomicsPreprocessor


def low_rank(n: int, p: int = 40, rank: int = 3, seed: int = 0) -> pd.DataFrame:
    """Patients x genes with three programmes behind every gene (plus a little noise), as pathways make them."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, p)) + 0.1 * rng.normal(size=(n, p))
    return pd.DataFrame(values, index=[f"P{i}" for i in range(n)], columns=[f"G{j}" for j in range(p)])


@pytest.fixture(scope="module")
def fitted() -> tuple[GenomicsPreprocessor, pd.DataFrame]:
    both = low_rank(140)
    train, test = both.iloc[:100], both.iloc[100:]
    return GenomicsPreprocessor("log", impute_components=8).fit(train, None), test


def test_unmeasured_genes_are_filled_from_the_measured_ones(fitted):
    pre, test = fitted
    truth = pre.zscores(test, list(test.index)).to_numpy()
    panel = test.copy()
    panel.iloc[:, 20:] = np.nan  # a panel that measured half the genes
    imputed = pre.zscores(panel, list(test.index)).to_numpy()
    assert np.allclose(imputed[:, :20], truth[:, :20])  # measured values as they were
    error = np.mean((imputed[:, 20:] - truth[:, 20:]) ** 2)
    mean_error = np.mean(truth[:, 20:] ** 2)  # what the training mean (z = 0) gives
    assert error < 0.05 * mean_error
    assert pre.measured(panel, list(test.index)) == pytest.approx(np.full(len(test), 0.5))


def test_zero_components_or_an_old_description_fill_with_the_training_mean(fitted):
    pre, test = fitted
    panel = test.copy()
    panel.iloc[:, 20:] = np.nan
    mean_only = GenomicsPreprocessor("log", impute_components=0).fit(low_rank(140).iloc[:100], None)
    assert (mean_only.zscores(panel, list(test.index)).to_numpy()[:, 20:] == 0).all()
    old = pre.to_dict()
    del old["imputer"], old["impute_components"]  # a model described before imputation
    assert (GenomicsPreprocessor.from_dict(old).zscores(panel, list(test.index)).to_numpy()[:, 20:] == 0).all()


def test_the_description_round_trips_the_imputer_and_holds_no_patient_row(fitted):
    pre, test = fitted
    panel = test.copy()
    panel.iloc[::2, :25] = np.nan
    again = GenomicsPreprocessor.from_dict(pre.to_dict())
    assert np.allclose(again.zscores(panel, list(test.index)), pre.zscores(panel, list(test.index)), atol=1e-5)
    loadings = np.asarray(pre.to_dict()["imputer"]["loadings"])
    assert loadings.shape == (40, 8)  # genes x components: no row per training patient


def test_graph_links_name_measured_changes_only(fitted):
    pre, test = fitted
    z = pre.zscores(test, list(test.index))
    patient, gene = np.unravel_index(np.argmax(np.abs(z.to_numpy()[:, 20:])), (len(test), 20))
    pid, strong = test.index[patient], z.columns[20 + gene]
    assert abs(z.loc[pid, strong]) > 2 and strong in pre.evidence(test, None, [pid])[pid]
    panel = test.loc[[pid]].copy()
    panel[z.columns[20:]] = np.nan  # the strongly changed gene unmeasured: imputed, but no link
    assert pre.zscores(panel, [pid]).loc[pid, strong] != 0
    assert set(pre.evidence(panel, None, [pid])[pid]) <= set(z.columns[:20])


def test_a_patient_without_any_measured_value_stays_at_the_mean(fitted):
    pre, test = fitted
    empty = test.iloc[:2].copy()
    empty.loc[:, :] = np.nan
    patients = [*empty.index, "not-in-table"]
    assert (pre.zscores(empty, patients).to_numpy() == 0).all()
    assert pre.measured(empty, patients).tolist() == [0.0, 0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(gaps=arrays(bool, (6, 40)), scale=st.floats(0.1, 1e4))
def test_any_pattern_of_gaps_gives_finite_values_and_keeps_the_measured_ones(fitted, gaps, scale):
    pre, test = fitted
    panel = test.iloc[:6] * scale  # far outside the training range too
    panel = panel.mask(gaps)
    out = pre.zscores(panel, list(panel.index)).to_numpy()
    raw = (panel.to_numpy() - pre._mean) / pre._std
    assert np.isfinite(out).all()
    assert np.array_equal(out[~gaps], raw[~gaps])
    assert (out[gaps.all(axis=1)] == 0).all()


def test_a_layer_the_patient_lacks_altogether_stays_at_the_mean_and_a_partly_measured_one_is_filled():
    both = low_rank(140)
    both.columns = [f"mrna:G{j}" if j < 20 else f"meth:G{j}" for j in range(40)]  # two genomics.layers
    pre = GenomicsPreprocessor("log", impute_components=8).fit(both.iloc[:100], None)
    test = both.iloc[100:].copy()
    truth = pre.zscores(test, list(test.index)).to_numpy()
    test.iloc[:, 20:] = np.nan  # no methylation assay at all
    test.iloc[:, 10:20] = np.nan  # half of the mRNA panel
    out = pre.zscores(test, list(test.index)).to_numpy()
    assert (out[:, 20:] == 0).all()  # a missing assay: the training mean, as before imputation
    assert np.mean((out[:, 10:20] - truth[:, 10:20]) ** 2) < 0.1 * np.mean(truth[:, 10:20] ** 2)
