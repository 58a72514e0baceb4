"""``runtime.threads``' default leaves out the CPUs other processes keep busy (measured from /proc/stat when a stage
starts), and falls back to the whole affinity where that cannot be measured."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

import pytest
import torch

from clinicmm.pipeline import runtime


@pytest.fixture
def two_cpus(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("load", "threads"), [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (2.0, 1), (7.5, 1)])
def test_the_default_is_the_cpus_other_processes_leave_free(two_cpus, load, threads) -> None:
    assert runtime.default_threads(load) == threads


def test_an_unmeasured_load_leaves_the_whole_affinity(two_cpus, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "other_load", lambda cpus=None, seconds=0: None)
    assert runtime.default_threads() == 2


def test_local_ranks_share_the_free_cpus(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.default_threads(0.0) == 4
    assert runtime.default_threads(2.2) == 3  # 6 free CPUs between 2 ranks
    assert runtime.default_threads(7.0) == 1  # never zero


def test_apply_without_a_setting_measures_the_load_and_a_setting_does_not(two_cpus, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(runtime, "other_load", lambda cpus=None, seconds=0: calls.append(cpus) or 1.3)
    assert runtime.apply(None) == 1 and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert calls == [{0, 1}]
    assert runtime.apply(2) == 2 and torch.get_num_threads() == 2 and calls == [{0, 1}]


def test_cpus_the_counters_do_not_list_are_unmeasured() -> None:
    assert runtime.other_load({10**6}, seconds=0.01) is None


def _spin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    while True:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat and CPU affinity: Linux")
def test_a_process_spinning_on_a_cpu_counts_as_about_one_cpu_of_load() -> None:
    cpu = min(os.sched_getaffinity(0))
    spinner = mp.get_context("fork").Process(target=_spin, args=(cpu,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.3)
        load = runtime.other_load({cpu}, seconds=0.3)
    finally:
        spinner.terminate()
        spinner.join()
    assert load is not None and 0.8 <= load <= 1.05  # the whole CPU, whatever else shares it
