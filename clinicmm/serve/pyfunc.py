"""The registered model: an MLflow ``PythonModel`` that rebuilds clinicmm from its bundle artifact.

Nothing is pickled but this small class: weights, graph, scalers and encoder specs are files of the
``bundle`` artifact (see :mod:`clinicmm.tracking.bundle`), reloaded in ``load_context``. The artifact also carries the
trained image weights and the LoRA adapter, so the model loads on a machine without the training workdir; only a
custom text ``model_path`` must be installed there.
"""

from __future__ import annotations

import os

import mlflow.pyfunc
import pandas as pd

CACHE_ENV = "CLINICMM_CACHE_DIR"


class ClinicmmModel(mlflow.pyfunc.PythonModel):
    """Scores a DataFrame of patients (columns in :mod:`clinicmm.serve.scoring`)."""

    def load_context(self, context):
        from pathlib import Path

        from clinicmm.encode.featurizer import Featurizer
        from clinicmm.tracking.bundle import ModelBundle

        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]))
        self.model = self.bundle.build_model()
        # opt-in embedding cache (the workflow's predict stage points it at its own cache); unset, a served
        # model keeps no patient data on disk
        cache = os.environ.get(CACHE_ENV)
        self.featurizer = Featurizer(
            self.bundle.encoders, self.bundle.knowledge, self.bundle.preprocessor(), Path(cache) if cache else None
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from clinicmm.serve.scoring import score

        _check_fingerprints(self.bundle, self.featurizer, model_input)
        return score(self.bundle, self.model, self.featurizer, model_input)


def _check_fingerprints(bundle, featurizer, frame) -> None:
    """Refuse to score with an encoder that differs from the one the model was trained with."""
    from clinicmm.errors import ModelError

    uses = {"image": "dicom_files", "note": "notes"}
    for modality, column in uses.items():
        expected = bundle.fingerprints.get(modality)
        if not expected or column not in frame.columns or not frame[column].astype(str).str.strip().any():
            continue
        encoder = featurizer.image_encoder if modality == "image" else featurizer.text_encoder
        if encoder.fingerprint() != expected:
            raise ModelError(
                f"the {modality} encoder here differs from the one this model was trained with "
                f"(fingerprint {encoder.fingerprint()[:12]} vs {expected[:12]}): install the same clinicmm, "
                "MONAI and model folder versions, or retrain."
            )


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from clinicmm.serve.scoring import INPUT_COLUMNS

    inputs = Schema([ColSpec("string", c, required=(c == "patient_id")) for c in INPUT_COLUMNS])
    return ModelSignature(inputs=inputs)


def input_example() -> pd.DataFrame:
    """A synthetic one-row input (no patient data): a single note, every other input empty."""
    from clinicmm.serve.scoring import INPUT_COLUMNS

    row = dict.fromkeys(INPUT_COLUMNS, "") | {
        "patient_id": "example-1",
        "notes": '["FINAL DIAGNOSIS: invasive adenocarcinoma."]',
    }
    return pd.DataFrame([row])
