"""Site-aware splits: no site in two splits, leave-one-site-out folds, clear errors."""

import shutil

import pandas as pd
import pytest
import yaml

from clinicmm.config import load_dataset
from clinicmm.errors import ConfigError
from clinicmm.ingest.cohort import build_cohort
from clinicmm.ingest.sites import site_folds


def _with_sites(small_demo, tmp_path, n_sites, blank=0):
    data = tmp_path / f"sites{n_sites}"
    shutil.copytree(small_demo[0].parent, data)
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    labels["site"] = [f"H{i % n_sites}" for i in range(len(labels))]
    if blank:
        labels.loc[labels.index[:blank], "site"] = ""
    labels.to_csv(data / "labels.csv", index=False)
    cfg = yaml.safe_load((data / "dataset.yaml").read_text())
    cfg["labels"]["site_column"] = "site"
    (data / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    return load_dataset(data / "dataset.yaml"), labels.set_index("patient_id")["site"]


def test_every_site_lands_in_one_split_and_every_split_gets_a_site(small_demo, tmp_path):
    spec, sites = _with_sites(small_demo, tmp_path, 5)
    cohort = build_cohort(spec)
    m = cohort.manifest[cohort.manifest["split"] != ""]
    per_site = m.groupby(m["patient_id"].map(sites))["split"].nunique()
    assert (per_site == 1).all()
    assert set(m["split"]) == {"train", "val", "test"}
    assert any("split by site" in note for note in cohort.report["issues"])


def test_patients_without_a_site_are_reported_and_left_out(small_demo, tmp_path):
    spec, sites = _with_sites(small_demo, tmp_path, 4, blank=2)
    cohort = build_cohort(spec)
    m = cohort.manifest.set_index("patient_id")
    no_site = [p for p in sites.index if sites[p] == "" and p in m.index]
    assert no_site and (m.loc[no_site, "split"] == "").all()
    assert any("have no site" in note for note in cohort.report["issues"])


def test_two_sites_are_too_few_for_a_by_site_split(small_demo, tmp_path):
    spec, _ = _with_sites(small_demo, tmp_path, 2)
    with pytest.raises(ConfigError, match="needs at least 3"):
        build_cohort(spec)


def test_leave_one_site_out_holds_out_each_site_once(small_demo, tmp_path):
    spec, sites = _with_sites(small_demo, tmp_path, 4)
    cohort = build_cohort(spec)
    held = []
    for site, fold in site_folds(spec, cohort.manifest):
        m = fold[fold["split"] != ""]
        by_site = m.groupby(m["patient_id"].map(sites))["split"].agg(set)
        assert by_site[site] == {"test"}
        assert all("test" not in s for k, s in by_site.items() if k != site)
        assert (m["split"] == "train").any() and (m["split"] == "val").any()
        held.append(site)
    assert sorted(held) == sorted(set(sites[sites != ""]))


def test_leave_one_site_out_without_a_site_column_is_a_config_error(small_demo, tmp_path):
    data = tmp_path / "no_sites"
    shutil.copytree(small_demo[0].parent, data)
    cfg = yaml.safe_load((data / "dataset.yaml").read_text())
    cfg["split"] = {"leave_one_site_out": True}
    (data / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="leave_one_site_out needs labels.site_column"):
        load_dataset(data / "dataset.yaml")
