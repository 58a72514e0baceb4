"""Where registered models written by clinicmm 0.1.0 before the stage packages look for their class.

Their MLflow ``model_code.py`` says ``from clinicmm.tracking.pyfunc import ClinicmmModel``; the class now lives in
:mod:`clinicmm.serve.pyfunc`. This alias keeps those versions loadable; new models name the serve module. The one
import against the layer order, listed in ``.importlinter``'s ``ignore_imports``.
"""

from clinicmm.serve.pyfunc import ClinicmmModel

__all__ = ["ClinicmmModel"]
