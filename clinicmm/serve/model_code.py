"""MLflow 'models from code' entry: logging this file (not a pickled object) defines the registered model."""

import mlflow.models

from clinicmm.serve.pyfunc import ClinicmmModel

mlflow.models.set_model(ClinicmmModel())
