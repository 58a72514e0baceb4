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

Serving cost: everything is built once per process. ``load_context`` reads the bundle and the fusion network and
returns; the encoders (MONAI network, text model and tokenizer), the concept matcher and the knowledge graph's
``HeteroData`` are then built by a background thread, which the first ``predict`` waits for, so a request never
rebuilds any of them. A request's rows are scored as one batch. ``params={"explain": false}`` skips the explanation
work (same predictions, explanation columns empty). CPU threads: ``load_context`` sets ``torch.set_num_threads`` to
``$CLINICMM_THREADS`` if set, else ``$OMP_NUM_THREADS`` if set, else to the CPUs this process may run on
(``os.sched_getaffinity``) when torch's own default is higher: more threads than CPUs (a container's CPU limit, a
shared server) slows every forward pass, badly so when other work holds the cores.
"""

from __future__ import annotations

import logging
import os
import threading

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR

from clinicmm.errors import ModelError

CACHE_ENV = "CLINICMM_CACHE_DIR"
THREADS_ENV = "CLINICMM_THREADS"
log = logging.getLogger("clinicmm")


def serving_threads() -> int:
    """The torch CPU threads of a served model: ``$CLINICMM_THREADS``, else ``$OMP_NUM_THREADS``, else torch's
    current count capped at the CPUs this process may run on (``os.sched_getaffinity``). Never below 1."""
    import torch

    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                log.warning("serving: $%s is not a whole number; ignored", name)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cpus))


def _flag(value, name: str) -> bool:
    """A boolean request param (MLflow passes the schema's type; a REST client may send a string)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, (bool, int)) and not isinstance(value, float):
        return bool(value)
    raise ServingError(f"param {name!r} must be true or false", BAD_REQUEST)


class ServingError(ModelError, MlflowException):
    """A request the model cannot score at all: a ``ModelError`` to clinicmm (the CLI prints one line) and an
    ``MlflowException`` to the scoring server, which then answers with the message and no stack trace."""

    def __init__(self, message: str, error_code: int = INTERNAL_ERROR):
        MlflowException.__init__(self, message, error_code=error_code)


class ClinicmmModel(mlflow.pyfunc.PythonModel):
    """Scores a DataFrame of patients (columns in :mod:`clinicmm.serve.scoring`)."""

    def load_context(self, context):
        from pathlib import Path

        import torch

        from clinicmm.encode.featurizer import Featurizer
        from clinicmm.errors import ConfigError
        from clinicmm.serve.scoring import data_roots
        from clinicmm.tracking.bundle import ModelBundle

        torch.set_num_threads(serving_threads())
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
            self.bundle.encoders,
            self.bundle.knowledge,
            self.bundle.preprocessor(),
            Path(cache) if cache else None,
            progress=False,
        )
        self.fingerprints: dict[str, str] = {}  # modality -> the loaded encoder's fingerprint (computed once)
        self._warm = threading.Thread(target=self._build, name="clinicmm-warm")  # exit waits: no abort mid-import
        self._warm.start()

    def _build(self) -> None:
        """Build what every request needs (see the module docstring); a failure here is left to the request that
        needs the part, which then reports it."""
        from clinicmm.serve.scoring import hetero_of

        for step in (
            lambda: hetero_of(self.bundle.knowledge),
            lambda: self.featurizer.matcher,
            lambda: self._fingerprint("image"),
            lambda: self._fingerprint("note"),
            lambda: self.featurizer.text_encoder._load(),
        ):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 -- reported by the request that needs it
                log.debug("serving: warm-up step failed (%s)", type(exc).__name__)

    def _fingerprint(self, modality: str) -> str:
        if modality not in self.fingerprints:
            f = self.featurizer
            encoder = f.image_encoder if modality == "image" else f.text_encoder
            self.fingerprints[modality] = encoder.fingerprint()
        return self.fingerprints[modality]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from clinicmm.errors import ConfigError
        from clinicmm.serve.scoring import data_roots, score

        if "patient_id" not in model_input.columns:
            raise ServingError("missing column 'patient_id': send one row per patient with its id", BAD_REQUEST)
        explain = _flag((params or {}).get("explain", True), "explain")
        warm = getattr(self, "_warm", None)
        if warm is not None:
            warm.join()  # the first request waits for the encoders; later ones find them built
        try:
            roots = data_roots(getattr(self, "data_roots", []))  # $CLINICMM_DATA_ROOTS is read at every call
        except ConfigError as exc:
            raise ServingError(str(exc)) from None
        _check_fingerprints(self.bundle, self._fingerprint, model_input)
        return score(self.bundle, self.model, self.featurizer, model_input, roots, explain=explain)


def _check_fingerprints(bundle, fingerprint, frame) -> None:
    """Refuse to score with an encoder that differs from the one the model was trained with (``fingerprint``:
    modality -> the loaded encoder's fingerprint)."""
    uses = {"image": ("dicom_files", "dicom_b64"), "note": ("notes", "notes_file")}
    for modality, columns in uses.items():
        expected = bundle.fingerprints.get(modality)
        used = [c for c in columns if c in frame.columns]
        if not expected or not any(_filled(frame[c]) for c in used):
            continue
        found = fingerprint(modality)
        if found != expected:
            raise ServingError(
                f"the {modality} encoder here differs from the one this model was trained with "
                f"(fingerprint {found[:12]} vs {expected[:12]}): install the same clinicmm, "
                "MONAI and model folder versions, or retrain."
            )


def _filled(column: pd.Series) -> bool:
    return any(v is not None and not (isinstance(v, float) and v != v) and str(v).strip() for v in column)


def signature(classes: list[str] | None = None):
    """Inputs: the string columns of :data:`~clinicmm.serve.scoring.INPUT_COLUMNS` (``patient_id`` required);
    params: ``explain`` (boolean, default true).
    Outputs: the columns of :mod:`clinicmm.serve.scoring` with their JSON types (``prob_<class>`` for each of
    ``classes``; without them the schema leaves those columns out); only ``patient_id`` and ``status`` are never
    null."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from clinicmm.serve.scoring import INPUT_COLUMNS, output_columns

    inputs = Schema([ColSpec("string", c, required=(c == "patient_id")) for c in INPUT_COLUMNS])
    outputs = Schema(
        [ColSpec(kind, c, required=c in ("patient_id", "status")) for c, kind in output_columns(classes or [])]
    )
    params = ParamSchema([ParamSpec("explain", "boolean", True)])  # false: no explanation work, columns empty
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> pd.DataFrame:
    """A synthetic one-row input (no patient data): a single note, every other input empty."""
    from clinicmm.serve.scoring import INPUT_COLUMNS

    row = dict.fromkeys(INPUT_COLUMNS, "") | {
        "patient_id": "example-1",
        "notes": '["FINAL DIAGNOSIS: invasive adenocarcinoma."]',
    }
    return pd.DataFrame([row])
