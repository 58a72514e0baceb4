"""The registered model installs anywhere: clinicmm travels with it as MLflow code_paths and its requirements pin
every library clinicmm needs, never clinicmm itself (no package index holds it)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from clinicmm.serve.register import _requirements, code_folder


def test_requirements_pin_what_clinicmm_needs_but_not_clinicmm():
    reqs = _requirements()
    names = {r.split("==")[0] for r in reqs}
    assert not any(r.startswith("clinicmm") for r in reqs)  # an index without clinicmm can still install it
    for needed in ("torch", "monai", "pydicom", "transformers", "torch-geometric", "mlflow", "scikit-learn"):
        assert needed in names
        assert f"{needed}=={metadata.version(needed).split('+')[0]}" in reqs  # the versions that trained it


def test_the_copied_package_imports_on_its_own_with_its_data(tmp_path):
    code = code_folder(tmp_path)
    assert (code / "__init__.py").is_file() and (code / "serve" / "model_code.py").is_file()
    assert (code / "knowledge" / "data" / "cancer_types.tsv").is_file()  # package data travel too
    assert not list(code.rglob("__pycache__")) and not (code / "demo").exists()  # no invented demo names travel
    # as the served model's process sees it: the installed clinicmm hidden, the model's code first on sys.path
    probe = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
        f"sys.path.insert(0, {str(tmp_path)!r}); "
        "import clinicmm, clinicmm.serve.pyfunc, clinicmm.knowledge.graph as g; "
        "g.KnowledgeGraph.default(); print(clinicmm.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()).is_relative_to(tmp_path)
