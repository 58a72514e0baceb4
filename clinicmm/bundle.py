"""A fitted model and everything it needs to score new patients, as plain files.

```
bundle/
  model.json          name, classes, dims, hyper-parameters, encoder specs and fingerprints, scalers
  calibration.json    temperature, conformal threshold and abstention threshold fitted on the val split
  weights.safetensors the fusion model's weights (no pickle: nothing runs code when loaded)
  genomics.json       the genomics preprocessor fitted on the train split (absent without genomics)
  graph/              the knowledge graph the model was trained on
```
The registered MLflow model declares this folder as its artifact and rebuilds everything from it.
The image and text encoders are not copied: they are rebuilt from their specs, and their fingerprints must
match the ones recorded here, or loading fails with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clinicmm import __version__
from clinicmm.cache import atomic_write_bytes
from clinicmm.config import EncodersSpec
from clinicmm.errors import ClinicmmError, ModelError
from clinicmm.training.calibration import Calibration
from clinicmm.training.data import Standardizer, class_nodes


@dataclass
class ModelBundle:
    name: str
    classes: list[str]
    dims: dict[str, int]
    hidden: int
    dropout: float
    encoders: EncodersSpec
    fingerprints: dict[str, str]
    scaler: Standardizer
    state_dict: dict
    knowledge: object  # KnowledgeGraph
    genomics: dict | None = None
    extra: dict = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)  # identity for bundles saved before calibration

    # ---------------------------------------------------------------------------------------- building
    def class_nodes(self):
        return class_nodes(self.knowledge, self.classes)

    def build_model(self, load_weights: bool = True):
        from clinicmm.fusion.registry import build_model

        model = build_model(
            self.name, self.dims, len(self.classes), self.knowledge.to_hetero(), self.class_nodes(), self.hidden, self.dropout
        )
        if load_weights:
            missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
            if missing or unexpected:
                raise ModelError(f"model {self.name!r}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()

    def preprocessor(self):
        if self.genomics is None:
            return None
        from clinicmm.genomics.preprocess import GenomicsPreprocessor

        return GenomicsPreprocessor.from_dict(self.genomics)

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "clinicmm_version": __version__,
            "name": self.name,
            "classes": self.classes,
            "dims": self.dims,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "encoders": self.encoders.model_dump(mode="json"),
            "fingerprints": self.fingerprints,
            "scaler": {"mean": self.scaler.mean, "std": self.scaler.std},
            "knowledge_fingerprint": self.knowledge.fingerprint(),
            "extra": self.extra,
        }
        atomic_write_bytes(folder / "model.json", json.dumps(meta, indent=1).encode())
        atomic_write_bytes(folder / "calibration.json", json.dumps(self.calibration.to_dict(), indent=1).encode())
        save_file({k: v.contiguous() for k, v in self.state_dict.items()}, str(folder / "weights.safetensors"))
        if self.genomics is not None:
            atomic_write_bytes(folder / "genomics.json", json.dumps(self.genomics).encode())
        self.knowledge.to_files(folder / "graph")
        return folder

    @classmethod
    def load(cls, folder: Path) -> ModelBundle:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from clinicmm.knowledge.graph import KnowledgeGraph

        folder = Path(folder)
        if not (folder / "model.json").is_file():
            raise ModelError(f"{folder}: not a clinicmm model bundle (no model.json). Point at a trained model's bundle.")
        meta = json.loads((folder / "model.json").read_text())
        try:
            kg = KnowledgeGraph.from_files(folder / "graph")
            state = load_file(str(folder / "weights.safetensors"))
        except (ClinicmmError, OSError, SafetensorError) as exc:
            raise ModelError(f"{folder}: the bundle is incomplete or damaged ({exc}). Train and register it again.") from exc
        if kg.fingerprint() != meta["knowledge_fingerprint"]:
            raise ModelError(f"{folder / 'graph'}: the knowledge graph differs from the one the model was trained on.")
        genomics = json.loads((folder / "genomics.json").read_text()) if (folder / "genomics.json").is_file() else None
        return cls(
            name=meta["name"],
            classes=meta["classes"],
            dims=meta["dims"],
            hidden=meta["hidden"],
            dropout=meta["dropout"],
            encoders=EncodersSpec.model_validate(meta["encoders"]),
            fingerprints=meta["fingerprints"],
            scaler=Standardizer(**meta["scaler"]),
            state_dict=state,
            knowledge=kg,
            genomics=genomics,
            extra=meta.get("extra", {}),
            calibration=_load_calibration(folder / "calibration.json"),
        )


def _load_calibration(path: Path) -> Calibration:
    """The bundle's calibration; the identity when the file is absent (a bundle from before calibration)."""
    if not path.is_file():
        return Calibration()
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: damaged calibration ({exc}). Train and register the model again.") from exc
