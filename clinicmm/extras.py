"""Optional features and the packages they need (``pip install 'clinicmm[NAME]'``): a shared contract like errors.

The core install covers the whole workflow; these extras add one feature each. Using the feature without its
package is a ``ConfigError`` that names the setting and the extra to install, never a bare ``ImportError``.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from clinicmm.errors import ConfigError

# module -> (extra, the feature that needs it)
EXTRAS = {
    "peft": ("lora", "LoRA fine-tuning of the text encoder (encoders.text.lora or adapter_path)"),
    "einops": ("vit", "the ViT image encoder (encoders.image.network: vit)"),
    "obonet": ("obo", "an OBO ontology in the workflow's knowledge list"),
}


def require(module: str) -> ModuleType:
    """Import optional ``module``; a ``ConfigError`` naming its extra when it is not installed."""
    try:
        return import_module(module)
    except ImportError:
        extra, feature = EXTRAS[module]
        raise ConfigError(
            f"{feature} needs the optional package {module!r}, which is not installed here: "
            f"pip install 'clinicmm[{extra}]' (or drop that setting)."
        ) from None
