"""Optional features: each extra's package, when missing, is a ConfigError naming the extra to install."""

import sys

import pytest

from clinicmm.errors import ConfigError
from clinicmm.extras import EXTRAS, require


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_a_missing_optional_package_names_its_extra(monkeypatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as where it is not installed
    extra, _ = EXTRAS[module]
    with pytest.raises(ConfigError, match=rf"{module}.*pip install 'clinicmm\[{extra}\]'"):
        require(module)


def test_an_installed_optional_package_is_returned(monkeypatch) -> None:
    sentinel = type(sys)("obonet")
    monkeypatch.setitem(sys.modules, "obonet", sentinel)
    assert require("obonet") is sentinel


def test_reading_an_obo_file_without_obonet_is_a_config_error(monkeypatch, tmp_path) -> None:
    from clinicmm.knowledge.loaders import read_obo

    (tmp_path / "x.obo").write_text("format-version: 1.2\n")
    monkeypatch.setitem(sys.modules, "obonet", None)
    with pytest.raises(ConfigError, match=r"clinicmm\[obo\]"):
        read_obo(tmp_path / "x.obo")
