"""The registered model: an MLflow ``PythonModel`` that rebuilds clinicmm from its bundle artifact.

Nothing is pickled but this small class: weights, graph, scalers and encoder specs are files of the
``bundle`` artifact (see :mod:`clinicmm.tracking.bundle`), reloaded in ``load_context``. The artifact also carries the
trained image weights and the LoRA adapter, so the model loads on a machine without the training workdir; only a
custom text ``model_path`` must be installed there.

A request's file paths are read only inside the model's data roots: the workflow's ``serving.data_roots``, stored
in the model's ``model_config`` at register time, or ``$CLINICMM_DATA_ROOTS`` on the serving machine, which
replaces them (see :func:`clinicmm.serve.scoring.data_roots`). None configured: every path is refused. A bad row
comes back ``not scored`` with its reason; a request fails only as a whole (missing ``patient_id``, an encoder that
differs from the trained one, a bad ``$CLINICMM_DATA_ROOTS``) and then with a message, never a stack trace.
"""

from __future__ import annotations

import os

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR

from clinicmm.errors import ModelError

CACHE_ENV = "CLINICMM_CACHE_DIR"


class ServingError(ModelError, MlflowException):
    """A request the model cannot score at all: a ``ModelError`` to clinicmm (the CLI prints one line) and an
    ``MlflowException`` to the scoring server, which then answers with the message and no stack trace."""

    def __init__(self, message: str, error_code: int = INTERNAL_ERROR):
        MlflowException.__init__(self, message, error_code=error_code)


class ClinicmmModel(mlflow.pyfunc.PythonModel):
    """Scores a DataFrame of patients (columns in :mod:`clinicmm.serve.scoring`)."""

    def load_context(self, context):
        from pathlib import Path

        from clinicmm.encode.featurizer import Featurizer
        from clinicmm.errors import ConfigError
        from clinicmm.serve.scoring import data_roots
        from clinicmm.tracking.bundle import ModelBundle

        config = getattr(context, "model_config", None) or {}
        self.data_roots = [str(p) for p in config.get("data_roots") or []]  # serving.data_roots at register time
        try:
            data_roots(self.data_roots)  # a bad $CLINICMM_DATA_ROOTS fails the load, not the first request
        except ConfigError as exc:
            raise ServingError(str(exc)) from None
        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]))
        self.model = self.bundle.build_model()
        # opt-in embedding cache (the workflow's predict stage points it at its own cache); unset, a served
        # model keeps no patient data on disk
        cache = os.environ.get(CACHE_ENV)
        self.featurizer = Featurizer(
            self.bundle.encoders, self.bundle.knowledge, self.bundle.preprocessor(), Path(cache) if cache else None
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from clinicmm.errors import ConfigError
        from clinicmm.serve.scoring import data_roots, score

        if "patient_id" not in model_input.columns:
            raise ServingError("missing column 'patient_id': send one row per patient with its id", BAD_REQUEST)
        try:
            roots = data_roots(getattr(self, "data_roots", []))  # $CLINICMM_DATA_ROOTS is read at every call
        except ConfigError as exc:
            raise ServingError(str(exc)) from None
        _check_fingerprints(self.bundle, self.featurizer, model_input)
        return score(self.bundle, self.model, self.featurizer, model_input, roots)


def _check_fingerprints(bundle, featurizer, frame) -> None:
    """Refuse to score with an encoder that differs from the one the model was trained with."""
    uses = {"image": "dicom_files", "note": "notes"}
    for modality, column in uses.items():
        expected = bundle.fingerprints.get(modality)
        if not expected or column not in frame.columns or not frame[column].astype(str).str.strip().any():
            continue
        encoder = featurizer.image_encoder if modality == "image" else featurizer.text_encoder
        if encoder.fingerprint() != expected:
            raise ServingError(
                f"the {modality} encoder here differs from the one this model was trained with "
                f"(fingerprint {encoder.fingerprint()[:12]} vs {expected[:12]}): install the same clinicmm, "
                "MONAI and model folder versions, or retrain."
            )


def signature(classes: list[str] | None = None):
    """Inputs: the string columns of :data:`~clinicmm.serve.scoring.INPUT_COLUMNS` (``patient_id`` required).
    Outputs: the columns of :mod:`clinicmm.serve.scoring` with their JSON types (``prob_<class>`` for each of
    ``classes``; without them the schema leaves those columns out); only ``patient_id`` and ``status`` are never
    null."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from clinicmm.serve.scoring import INPUT_COLUMNS, output_columns

    inputs = Schema([ColSpec("string", c, required=(c == "patient_id")) for c in INPUT_COLUMNS])
    outputs = Schema(
        [ColSpec(kind, c, required=c in ("patient_id", "status")) for c, kind in output_columns(classes or [])]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example() -> pd.DataFrame:
    """A synthetic one-row input (no patient data): a single note, every other input empty."""
    from clinicmm.serve.scoring import INPUT_COLUMNS

    row = dict.fromkeys(INPUT_COLUMNS, "") | {
        "patient_id": "example-1",
        "notes": '["FINAL DIAGNOSIS: invasive adenocarcinoma."]',
    }
    return pd.DataFrame([row])
