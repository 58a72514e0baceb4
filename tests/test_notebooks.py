"""Run every notebook in ``notebooks/`` in a fresh kernel, as a reader would, and check the committed copies.

Kernel: ``kernel_name="python3"`` resolves to the kernelspec that the ipykernel wheel installs into the venv
(``.venv/share/jupyter/kernels/python3``); without it jupyter_client falls back to ipykernel's built-in spec
whenever ipykernel is importable. The spec's command starts with ``python``, which jupyter_client replaces
with ``sys.executable``, so the kernel runs in the interpreter that runs pytest: no ``ipykernel install``.

Each notebook is executed once per test session (the ``executed`` fixture caches it) in its own temporary
working directory, with ``TMPDIR`` pointing at an empty folder so that the test can check the notebook
leaves no cohort data behind. ``02`` runs in an empty folder, where its default ``WORKFLOW``
(``workflows/demo.yaml``) does not exist, so it builds its temporary demo; ``03`` runs in a folder where
``clinicmm run workflows/demo.yaml`` has finished (with a trained image encoder), so it reads that run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPLORATION = "01_cohort_exploration.ipynb"
RESULTS = "02_results.ipynb"
EXPLAIN = "03_explain_a_patient.ipynb"
MODELS = ("image", "note", "omics", "concat", "kg_gnn")
DEFAULT_WORKFLOW = "workflows/demo.yaml"
CLI = str(Path(sys.executable).with_name("clinicmm"))
# an explicit MLflow write call; the demo's own stage calls (ingest_stage ... register_stage) are the workflow shown
MLFLOW_WRITE = re.compile(
    r"\b(log_\w+|start_run|set_tags?|set_registered_model_alias|register_model|MlflowClient)\s*\("
)


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [cell for cell in nb.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a cell printed or displayed as text (streams, text/plain, text/html, text/markdown)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        for mime in ("text/plain", "text/html", "text/markdown"):
            parts.append(out.get("data", {}).get(mime, ""))
    return "\n".join(parts)


def _figures(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def finished_demo_run(work: Path) -> Path:
    """``work/workflows/demo.yaml`` after a finished ``clinicmm run``: a 48-patient demo, five models, and a
    trained image encoder (``encoders.image.train``, so that 03 can draw Grad-CAM). Returns its workdir."""
    import yaml

    from clinicmm.demo.generator import generate_demo

    generate_demo(work / "data", patients=48, seed=2, slices=8, size=32)
    (work / "workflows").mkdir()
    train = {"epochs": 3, "batch_size": 8, "augment": False, "lr": 0.001}
    demo = {
        "name": "notebook-run",
        "dataset": "../data/dataset.yaml",
        "workdir": "../run",
        # spatial_dims 3: one 3D network (Grad-CAM explains it; the default auto wraps two networks by image kind)
        "encoders": {"image": {"network": "resnet10", "spatial_dims": 3, "spatial_size": [16, 32, 32], "train": train}},
        "models": list(MODELS),
        "primary_model": "kg_gnn",
        "training": {"max_epochs": 20, "patience": 5},
        "tracking": {"uri": f"sqlite:///{work}/mlruns/mlflow.db", "experiment": "notebook-run"},
    }
    (work / DEFAULT_WORKFLOW).write_text(yaml.safe_dump(demo))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [CLI, "run", DEFAULT_WORKFLOW, "--no-progress"], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train-image ran" in done.stdout
    return work / "run"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """``name -> (executed notebook, TMPDIR the kernel used)``, each notebook run at most once. Before ``03``
    runs, its working folder gets a finished run of ``workflows/demo.yaml``, and the test records the workdir's
    files (name, size, modification time) before and after, in ``listings[name]``."""
    cache: dict[str, tuple[nbformat.NotebookNode, Path]] = {}
    failed: set[str] = set()  # a notebook that failed once is not run again (minutes each) for every other test

    def run(path: Path) -> tuple[nbformat.NotebookNode, Path]:
        if path.name in failed:
            pytest.fail(f"{path.name} did not run: see the first test that ran it")
        if path.name not in cache:
            failed.add(path.name)
            work = tmp_path_factory.mktemp(path.stem)
            workdir = finished_demo_run(work) if path.name == EXPLAIN else None
            before = _listing(workdir) if workdir else {}
            tmp = work / "tmp"
            tmp.mkdir()
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("TMPDIR", str(tmp))  # the kernel inherits it: its temporary folders land here
                client.execute()
            cache[path.name] = (nb, tmp)
            listings[path.name] = (before, _listing(workdir) if workdir else {})
            failed.discard(path.name)
        return cache[path.name]

    return run


listings: dict[str, tuple[dict, dict]] = {}


def test_notebooks_exist():
    assert EXPLORATION in {p.name for p in NOTEBOOKS}
    assert {RESULTS, EXPLAIN} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.outputs == [], f"{path.name}: code cell {i} carries outputs; clear them before committing"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_without_error(path, executed):
    nb, _ = executed(path)
    cells = _code_cells(nb)
    errors = [out for cell in cells for out in cell.outputs if out.output_type == "error"]
    assert errors == []
    assert all(cell.execution_count is not None for cell in cells)


def test_exploration_reports_the_demo_cohort(executed):
    from clinicmm.demo.design import CANCER_TYPES

    nb, _ = executed(NOTEBOOKS_DIR / EXPLORATION)
    patients = _text(_tagged(nb, "patients"))
    assert "36" in patients and "demo" in patients
    labels = _text(_tagged(nb, "labels"))
    for ctype in CANCER_TYPES:
        assert ctype.code in labels
    modalities = _text(_tagged(nb, "modalities"))
    assert all(m in modalities for m in ("image", "note", "omics"))


def test_exploration_lists_every_bad_input(executed):
    nb, _ = executed(NOTEBOOKS_DIR / EXPLORATION)
    skipped = _text(_tagged(nb, "skipped-inputs"))
    for reason in ("truncated", "not a DICOM file", "empty note", "no label", "appears 2 times"):
        assert reason in skipped
    assert "README.txt" in skipped and "export_log.dcm" in skipped


def test_exploration_draws_figures_and_links_concepts(executed):
    nb, _ = executed(NOTEBOOKS_DIR / EXPLORATION)
    assert sum(_figures(cell) for cell in _code_cells(nb)) >= 3
    assert _figures(_tagged(nb, "dicom-slices")) == 1
    assert _figures(_tagged(nb, "modalities")) == 1 and _figures(_tagged(nb, "labels")) == 1
    notes = _text(_tagged(nb, "note-concepts"))
    assert "histology:" in notes and "hypothetical" in notes
    assert "member_of" in _text(_tagged(nb, "kg-summary"))


def test_exploration_leaves_no_cohort_data(executed):
    nb, tmp = executed(NOTEBOOKS_DIR / EXPLORATION)
    assert f"working folder: {tmp}" in _text(_tagged(nb, "setup"))  # the demo was written under TMPDIR ...
    assert not any(p.name.startswith("clinicmm-explore-") for p in tmp.iterdir())  # ... and removed


def _float(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"no match for {pattern!r} in:\n{text}"
    return float(found.group(1))


@pytest.mark.parametrize("name", [RESULTS, EXPLAIN])
def test_results_and_explain_only_read_mlflow(name):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    assert _tagged(nb, "parameters").source.startswith(f'WORKFLOW = "{DEFAULT_WORKFLOW}"')
    writes = [m.group(0) for cell in _code_cells(nb) for m in MLFLOW_WRITE.finditer(cell.source)]
    assert writes == []


def test_results_lists_every_model_run_sorted(executed):
    nb, _ = executed(NOTEBOOKS_DIR / RESULTS)
    table = _text(_tagged(nb, "runs-table"))
    for model in MODELS:
        assert model in table
    assert "5 model runs of parent run" in table and "single modality" in table
    scores = [float(v) for v in re.findall(r"<td>(?:fusion|single modality)</td>\s*<td>([0-9.]+)</td>", table)]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)  # test_macro_f1, best first


def test_results_draws_comparison_confusion_roc_and_reliability(executed):
    from clinicmm.demo.design import CANCER_TYPES

    nb, _ = executed(NOTEBOOKS_DIR / RESULTS)
    assert sum(_figures(cell) for cell in _code_cells(nb)) >= 3
    for tag in ("comparison", "confusion", "roc", "calibration"):
        assert _figures(_tagged(nb, tag)) == 1, tag
    assert "matches MLflow's test_accuracy for every model" in _text(_tagged(nb, "confusion"))
    per_class = _text(_tagged(nb, "per-class"))
    assert all(ctype.code in per_class for ctype in CANCER_TYPES)
    calibration = _text(_tagged(nb, "calibration"))
    ece = _float(r"ECE \(10 equal-width bins, \d+ test patients\): ([0-9.]+)", calibration)
    assert 0.0 <= ece <= 1.0
    if "test_ece" in calibration:  # the evaluate stage logged one: the notebook's recomputation agrees
        assert ece == pytest.approx(_float(r"test_ece for kg_gnn: ([0-9.]+)", calibration), abs=1e-3)


def test_explain_predicts_a_demo_type_and_splits_it_by_modality(executed):
    from clinicmm.demo.design import CANCER_TYPES

    nb, _ = executed(NOTEBOOKS_DIR / EXPLAIN)
    assert "split: test" in _text(_tagged(nb, "patient"))  # the default patient: first test one with all three
    prediction = _text(_tagged(nb, "prediction"))
    predicted = re.search(r"predicted type: (\w+) \(probability ([0-9.]+)\)", prediction)
    assert predicted and predicted.group(1) in {ctype.code for ctype in CANCER_TYPES}
    assert "modalities used: image+note+omics" in prediction and _figures(_tagged(nb, "prediction")) == 1
    shares = re.search(
        r"modality shares: image=([0-9.]+), note=([0-9.]+), omics=([0-9.]+)", _text(_tagged(nb, "modality-shares"))
    )
    assert shares, "no modality shares printed"
    values = [float(v) for v in shares.groups()]
    assert all(0.0 <= v <= 1.0 for v in values) and sum(values) == pytest.approx(1.0, abs=0.005)


def test_explain_scores_the_gene_sets_of_kg_gnns_read_in(executed):
    nb, _ = executed(NOTEBOOKS_DIR / EXPLAIN)
    cell = _tagged(nb, "gene-sets")
    scored = re.search(r"gene sets scored: (\d+); supporting (\w+): (\d+)", _text(cell))
    assert scored, "no gene-set scores printed"
    assert 1 <= int(scored.group(1)) <= 10 and int(scored.group(3)) <= int(scored.group(1))
    assert _figures(cell) == 1


def test_explain_shows_graph_evidence_and_the_ct(executed):
    nb, _ = executed(NOTEBOOKS_DIR / EXPLAIN)
    predicted = re.search(r"predicted type: (\w+)", _text(_tagged(nb, "prediction"))).group(1)
    evidence = _text(_tagged(nb, "graph-evidence"))
    assert f"points at {predicted}" in evidence and "driver_of" in evidence and "indicates" in evidence
    assert "**Body site (image)**: 0 linked" in evidence  # the demo writes no BodyPartExamined: site in pixels only
    assert "histology:" in evidence
    ct = _tagged(nb, "ct-slice")
    assert _figures(ct) == 1 and "Grad-CAM" in _text(ct)


def test_results_without_a_finished_run_builds_a_demo_and_leaves_no_data(executed):
    nb, tmp = executed(NOTEBOOKS_DIR / RESULTS)
    setup = _text(_tagged(nb, "setup"))
    assert f"{DEFAULT_WORKFLOW}: not found" in setup and "small demo workflow instead" in setup
    assert f"working folder: {tmp / 'clinicmm-results-'}" in setup  # the demo run went under TMPDIR ...
    assert not any(p.name.startswith("clinicmm-results-") for p in tmp.iterdir())  # ... and was removed


def test_explain_reads_the_last_run_of_the_default_workflow_and_writes_nothing(executed):
    nb, tmp = executed(NOTEBOOKS_DIR / EXPLAIN)
    setup = _text(_tagged(nb, "setup"))
    assert f"reading the last run of {DEFAULT_WORKFLOW}: parent run" in setup and "small demo" not in setup
    assert "workflow: notebook-run" in setup
    assert "models:/clinicmm@champion" in _text(_tagged(nb, "prediction"))  # the run's registered model
    before, after = listings[EXPLAIN]
    assert before and after == before  # no file of the workdir added, removed or rewritten
    assert not any(p.name.startswith("clinicmm-explain-") for p in tmp.iterdir())  # and no temporary demo built


def test_explain_draws_grad_cam_of_the_trained_image_encoder(executed):
    from clinicmm.demo.design import CANCER_TYPES

    nb, _ = executed(NOTEBOOKS_DIR / EXPLAIN)
    cam = _tagged(nb, "grad-cam")
    assert _figures(cam) == 1, _text(cam)
    said = re.search(r"Grad-CAM of the trained image encoder \(layer (\w+), .*its classifier says (\w+)", _text(cam))
    assert said and said.group(1).startswith("layer") and said.group(2) in {c.code for c in CANCER_TYPES}
