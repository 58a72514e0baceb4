"""The registered model: an MLflow ``PythonModel`` that rebuilds clinicmm from its bundle artifact.

Nothing is pickled but this small class: weights, graph, scalers and encoder specs are files of the
``bundle`` artifact (see :mod:`clinicmm.tracking.bundle`), read back by the model's background build (below). The
artifact also carries the trained image weights and the LoRA adapter, so the model loads on a machine without the
training workdir; only a custom text ``model_path`` must be installed there.

A request's file paths are read only inside the model's data roots: the workflow's ``serving.data_roots``, stored
in the model's ``model_config`` at register time, or ``$CLINICMM_DATA_ROOTS`` on the serving machine, which
replaces them (see :func:`clinicmm.serve.scoring.data_roots`). None configured: every path is refused. A bad row
comes back ``not scored`` with its reason; a request fails only as a whole (missing ``patient_id``, an encoder that
differs from the trained one, a bad ``$CLINICMM_DATA_ROOTS``) and then with a message, never a stack trace.

Serving cost: everything is built once per process, and the load itself stays short. ``load_context`` only checks
the data roots and the bundle's ``model.json`` and returns (a fraction of a second); a background thread then sets
the thread count, reads the bundle, builds the fusion network, the encoders (MONAI network, text model and
tokenizer), the concept matcher and the knowledge graph's ``HeteroData``, importing torch, torch_geometric, MONAI
and transformers on the way. The first ``predict`` waits for what is left of that (the benchmark reports it as the
first-call latency), so a request never rebuilds any of them; a bundle that cannot be built fails every request
with one message (the details go to the server log). A request's rows are scored as one batch. Explanations are
opt-in: ``params={"explain": true}`` adds them; by default (:data:`EXPLAIN_DEFAULT`) a request skips that work
(same predictions, explanation columns empty), which on a graph model costs more than the rest of the request.
CPU threads: the model sets ``torch.set_num_threads`` (before any torch work of a fresh process; in
``load_context`` where torch was imported already) to ``$CLINICMM_THREADS`` if set, else ``$OMP_NUM_THREADS`` if
set, else to the CPUs this process may run on (``os.sched_getaffinity``) when torch's own default is higher: more
threads than CPUs (a container's CPU limit, a shared server) slows every forward pass, badly so when other work
holds the cores. The fusion network and the explanations run on ``$CLINICMM_FUSION_THREADS`` (default 1) threads
(:func:`clinicmm.serve.scoring.fusion_threads`): their ops are too small to gain from more.
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
# explanations are opt-in per request: on a graph model they cost more than the rest of the request together
# (ablation forwards per modality and per linked gene / concept; see benchmarks/serve.py)
EXPLAIN_DEFAULT = False
_FORKED_BUILD = threading.Lock()  # taken only by a request that must build the parts itself (never by the warm thread)
log = logging.getLogger("clinicmm")


def serving_threads() -> int:
    """The torch CPU threads of a served model: ``$CLINICMM_THREADS``, else ``$OMP_NUM_THREADS``, else torch's
    current count capped at the CPUs this process may run on (``os.sched_getaffinity``). Never below 1."""
    import torch

    from clinicmm.serve.scoring import env_threads

    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        if (count := env_threads(name)) is not None:
            return count
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cpus))


def _set_threads() -> None:
    """``torch.set_num_threads(serving_threads())``. Called from the warm-up thread it still holds for the whole
    process: torch keeps the count, and every thread applies it before its first parallel work."""
    import torch

    torch.set_num_threads(serving_threads())


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
        """Only what must fail the load (the data roots, a bundle folder with its ``model.json``) and, where torch
        is imported already, the thread count. The bundle, the fusion network, the encoders and the graph are built
        by a background thread (:meth:`_build`), which the first ``predict`` waits for (see the module docstring)."""
        import sys
        from pathlib import Path

        from clinicmm.errors import ConfigError
        from clinicmm.serve.scoring import data_roots

        if "torch" in sys.modules:  # in a process that already imported (and maybe used) torch: set it here
            _set_threads()
        config = getattr(context, "model_config", None) or {}
        self.data_roots = [str(p) for p in config.get("data_roots") or []]  # serving.data_roots at register time
        try:
            data_roots(self.data_roots)  # a bad $CLINICMM_DATA_ROOTS fails the load, not the first request
        except ConfigError as exc:
            raise ServingError(str(exc)) from None
        self._folder = Path(context.artifacts["bundle"])
        if not (self._folder / "model.json").is_file():
            raise ServingError("the model's bundle artifact has no model.json: register the model again")
        self._parts: tuple | None = None  # (bundle, fusion network, featurizer), once built
        self._failure: str | None = None  # why they could not be built (the first predict reports it)
        self.fingerprints: dict[str, str] = {}  # modality -> the loaded encoder's fingerprint (computed once)
        self._warm = threading.Thread(target=self._build, name="clinicmm-warm")  # exit waits: no abort mid-import
        self._warm.start()

    def _build(self) -> None:
        """Build the model's parts, then warm what every request needs (graph tensors, concept matcher, encoder
        fingerprints, text model): a failure of the parts is kept for the first ``predict`` to report; one of
        the warm-up is left to the request that needs the part, which then reports it."""
        from clinicmm.serve.scoring import hetero_of

        try:
            _set_threads()  # torch imported here first (a fresh server): before any torch work of this process
            self._parts = _build_parts(self._folder)
        except Exception as exc:  # noqa: BLE001 -- reported (without a trace) by every predict
            log.error("serving: the model could not be built from its bundle: %s: %s", type(exc).__name__, exc)
            self._failure = type(exc).__name__
            return
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

    def _ready(self) -> tuple:
        """The built parts: waits for the background build (the first request pays what is left of it)."""
        warm = getattr(self, "_warm", None)
        if warm is not None and warm.is_alive() and warm is not threading.current_thread():
            warm.join()
        if self._parts is None and self._failure is None:  # a forked worker has no warm thread: build here, once
            with _FORKED_BUILD:  # concurrent first requests: one builds, the others wait for it
                if self._parts is None and self._failure is None:
                    self._build()
        if self._parts is None:
            raise ServingError(
                f"the model could not be built from its bundle ({self._failure}; details in the server log): "
                "register it again with this clinicmm"
            )
        return self._parts

    @property
    def bundle(self):
        return self._ready()[0]

    @property
    def model(self):
        return self._ready()[1]

    @property
    def featurizer(self):
        return self._ready()[2]

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
        explain = _flag((params or {}).get("explain", EXPLAIN_DEFAULT), "explain")
        bundle, model, featurizer = self._ready()  # the first request waits for the build; later ones find it
        try:
            roots = data_roots(getattr(self, "data_roots", []))  # $CLINICMM_DATA_ROOTS is read at every call
        except ConfigError as exc:
            raise ServingError(str(exc)) from None
        _check_fingerprints(bundle, self._fingerprint, model_input)
        return score(bundle, model, featurizer, model_input, roots, explain=explain)


def _build_parts(folder) -> tuple:
    """(bundle, fusion network, featurizer) of the bundle in ``folder``: the heavy imports (torch_geometric, MONAI,
    transformers) happen here."""
    from pathlib import Path

    from clinicmm.encode.featurizer import Featurizer
    from clinicmm.tracking.bundle import ModelBundle

    bundle = ModelBundle.load(folder)
    model = bundle.build_model()
    # opt-in embedding cache (the workflow's predict stage points it at its own cache); unset, a served
    # model keeps no patient data on disk
    cache = os.environ.get(CACHE_ENV)
    featurizer = Featurizer(
        bundle.encoders, bundle.knowledge, bundle.preprocessor(), Path(cache) if cache else None, progress=False
    )
    return bundle, model, featurizer


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
    params: ``explain`` (boolean, default false: explanations are opt-in per request).
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
    params = ParamSchema([ParamSpec("explain", "boolean", EXPLAIN_DEFAULT)])  # opt-in: true adds the explanation
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)
