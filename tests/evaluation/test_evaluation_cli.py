"""The evaluation verbs' CLI surface: options that belong together, help that matches the code."""

from typer.testing import CliRunner

from clinicmm.cli import app
from clinicmm.evaluation.robustness import PERTURBATIONS


def test_model_without_external_is_refused_with_the_fix(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: x\n")
    result = CliRunner().invoke(app, ["evaluate", str(wf), "--model", "models:/m@champion"])
    assert result.exit_code == 1
    assert "--external" in result.output


def test_robustness_help_names_every_perturbation():
    result = CliRunner().invoke(app, ["robustness", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for name in PERTURBATIONS:
        assert name in text
