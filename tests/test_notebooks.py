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

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPLORATION = "01_cohort_exploration.ipynb"


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
            client = NotebookClient(nb, timeout=300, kernel_name="python3",
                                    resources={"metadata": {"path": str(work)}})
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("TMPDIR", str(tmp))  # the kernel inherits it: its temporary folders land here
                client.execute()
            cache[path.name] = (nb, tmp)
        return cache[path.name]

    return run


def test_notebooks_exist():
    assert EXPLORATION in {p.name for p in NOTEBOOKS}


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
