"""Run every notebook in ``notebooks/`` in a fresh kernel, as a reader would, and check the committed copies.

Kernel: ``kernel_name="python3"`` resolves to the kernelspec that the ipykernel wheel installs into the venv
(``.venv/share/jupyter/kernels/python3``); without it jupyter_client falls back to ipykernel's built-in spec
whenever ipykernel is importable. The spec's command starts with ``python``, which jupyter_client replaces
with ``sys.executable``, so the kernel runs in the interpreter that runs pytest: no ``ipykernel install``.

Each notebook is executed once per test session (the ``executed`` fixture caches it) in its own temporary
working directory, with ``TMPDIR`` pointing at an empty folder so that the test can check the notebook
leaves no cohort data behind.
"""

from __future__ import annotations

import re
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


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """``name -> (executed notebook, TMPDIR the kernel used)``, each notebook run at most once."""
    cache: dict[str, tuple[nbformat.NotebookNode, Path]] = {}

    def run(path: Path) -> tuple[nbformat.NotebookNode, Path]:
        if path.name not in cache:
            work = tmp_path_factory.mktemp(path.stem)
            tmp = work / "tmp"
            tmp.mkdir()
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("TMPDIR", str(tmp))  # the kernel inherits it: its temporary folders land here
                client.execute()
            cache[path.name] = (nb, tmp)
        return cache[path.name]

    return run


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
    assert _tagged(nb, "parameters").source.startswith("WORKFLOW = None")
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


def test_explain_shows_graph_evidence_and_the_ct(executed):
    nb, _ = executed(NOTEBOOKS_DIR / EXPLAIN)
    predicted = re.search(r"predicted type: (\w+)", _text(_tagged(nb, "prediction"))).group(1)
    evidence = _text(_tagged(nb, "graph-evidence"))
    assert f"points at {predicted}" in evidence and "driver_of" in evidence and "indicates" in evidence
    assert "**Body site (image)**: 0 linked" in evidence  # the demo writes no BodyPartExamined: site in pixels only
    assert "histology:" in evidence
    ct = _tagged(nb, "ct-slice")
    assert _figures(ct) == 1 and "Grad-CAM" in _text(ct)


@pytest.mark.parametrize("name, prefix", [(RESULTS, "clinicmm-results-"), (EXPLAIN, "clinicmm-explain-")])
def test_results_and_explain_leave_no_demo_data(executed, name, prefix):
    nb, tmp = executed(NOTEBOOKS_DIR / name)
    assert f"working folder: {tmp / prefix}" in _text(_tagged(nb, "setup"))  # the demo run went under TMPDIR ...
    assert not any(p.name.startswith(prefix) for p in tmp.iterdir())  # ... and was removed
