"""A fitted model and everything it needs to score new patients, as plain files.

```
bundle/
  model.json          name, classes, dims, hyper-parameters, encoder specs and fingerprints, scalers
  calibration.json    temperature, conformal threshold and abstention threshold fitted on the val split
  weights.safetensors the fusion model's weights (no pickle: nothing runs code when loaded)
  genomics.json       the genomics preprocessor fitted on the train split (absent without genomics)
  graph/              the knowledge graph the model was trained on
  encoders/           copies of the files the encoders embed with, when the spec names them:
    image_weights.safetensors   trained (``encoders.image.train``) or pretrained (``encoders.image.weights``; .pt kept as .pt)
    text_adapter/               the LoRA adapter (``encoders.text.adapter_path``)
```
The registered MLflow model declares this folder as its artifact and rebuilds everything from it, so it loads on
a serving machine where the training workdir does not exist: ``model.json`` names the copies relative to the
bundle and :meth:`ModelBundle.load` resolves them against the folder it loads from. The text ``model_path`` is
not copied (a model folder the serving machine installs itself). The encoders are rebuilt from their specs, and
their fingerprints (which hash weight and adapter bytes, never paths) must match the ones recorded here, or
scoring fails with a clear message. Bundles saved before the copies existed keep their absolute paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from clinicmm import __version__
from clinicmm.config import EncodersSpec
from clinicmm.errors import ClinicmmError, ModelError
from clinicmm.files import atomic_write_bytes
from clinicmm.training.calibration import Calibration
from clinicmm.training.data import Standardizer, class_nodes

log = logging.getLogger(__name__)

ENCODER_FILES = "encoders"  # the bundle's sub-folder holding the encoders' weights and adapter


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
    offset: str = "none"  # training.offset the model was fitted with ('logreg': a LinearOffset around the network)
    ensemble: int = 1  # training.ensemble: networks in the model (> 1: a SeedEnsemble of them)
    gene_set_input: bool = False  # training.gene_set_input as the model was built with it (a graph network's read-in)

    # ---------------------------------------------------------------------------------------- building
    def class_nodes(self):
        return class_nodes(self.knowledge, self.classes)

    def build_model(self, load_weights: bool = True):
        from clinicmm.fusion.registry import build_model
        from clinicmm.training.data import omics_gene_index

        hetero, nodes = self.knowledge.to_hetero(), self.class_nodes()

        def build(name: str):
            return build_model(name, self.dims, len(self.classes), hetero, nodes, self.hidden, self.dropout, *genes)

        from clinicmm.fusion.models.wrappers import LinearOffset, SeedEnsemble

        if self.offset not in ("logreg", "none"):
            raise ModelError(f"model {self.name!r}: unknown offset {self.offset!r} in model.json; this clinicmm "
                             "cannot rebuild it. Upgrade clinicmm or train the model again.")  # fmt: skip
        if not isinstance(self.ensemble, int) or not 1 <= self.ensemble <= 16:
            raise ModelError(f"model {self.name!r}: ensemble {self.ensemble!r} in model.json is not a member count "
                             "from 1 to 16; the bundle is damaged. Train the model again.")  # fmt: skip
        if not isinstance(self.gene_set_input, bool):
            raise ModelError(f"model {self.name!r}: gene_set_input {self.gene_set_input!r} in model.json is not true or "
                             "false; the bundle is damaged. Train the model again.")  # fmt: skip
        genes = omics_gene_index(self.genomics, self.knowledge, self.name, self.gene_set_input)
        members = [build(self.name) for _ in range(self.ensemble)]
        if self.offset == "logreg":
            members = [LinearOffset(m, build("logreg")) for m in members]
        model = members[0] if len(members) == 1 else SeedEnsemble(members)
        if load_weights:
            try:
                missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
            except RuntimeError as err:  # a weight of another shape (e.g. gene sets rebuilt differently)
                shapes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line][:2]
                raise ModelError(f"model {self.name!r}: weights do not fit ({'; '.join(shapes)})") from None
            if missing or unexpected:
                raise ModelError(
                    f"model {self.name!r}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
        return model.eval()

    def preprocessor(self):
        if self.genomics is None:
            return None
        from clinicmm.encode.genomics import GenomicsPreprocessor

        return GenomicsPreprocessor.from_dict(self.genomics)

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        encoders = _pack_encoder_files(self.encoders, folder)  # before model.json, which names the copies
        meta = {
            "clinicmm_version": __version__,
            "name": self.name,
            "classes": self.classes,
            "dims": self.dims,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "encoders": encoders,
            "fingerprints": self.fingerprints,
            "scaler": {"mean": self.scaler.mean, "std": self.scaler.std},
            "knowledge_fingerprint": self.knowledge.fingerprint(),
            "extra": self.extra,
            "offset": self.offset,
            "ensemble": self.ensemble,
            "gene_set_input": self.gene_set_input,
        }
        atomic_write_bytes(folder / "model.json", json.dumps(meta, indent=1).encode())
        atomic_write_bytes(folder / "calibration.json", json.dumps(self.calibration.to_dict(), indent=1).encode())
        # copies: safetensors refuses tensors that share memory (e.g. one buffer held by two ensemble members)
        weights = {k: v.detach().clone().contiguous() for k, v in self.state_dict.items()}
        save_file(weights, str(folder / "weights.safetensors"))
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
            raise ModelError(
                f"{folder}: not a clinicmm model bundle (no model.json). Point at a trained model's bundle."
            )
        meta = json.loads((folder / "model.json").read_text())
        try:
            kg = KnowledgeGraph.from_files(folder / "graph")
            state = load_file(str(folder / "weights.safetensors"))
        except (ClinicmmError, OSError, SafetensorError) as exc:
            raise ModelError(
                f"{folder}: the bundle is incomplete or damaged ({exc}). Train and register it again."
            ) from exc
        if kg.fingerprint() != meta["knowledge_fingerprint"]:
            raise ModelError(f"{folder / 'graph'}: the knowledge graph differs from the one the model was trained on.")
        genomics = json.loads((folder / "genomics.json").read_text()) if (folder / "genomics.json").is_file() else None
        return cls(
            name=meta["name"],
            classes=meta["classes"],
            dims=meta["dims"],
            hidden=meta["hidden"],
            dropout=meta["dropout"],
            encoders=_unpack_encoder_files(meta["encoders"], folder),
            fingerprints=meta["fingerprints"],
            scaler=Standardizer(**meta["scaler"]),
            state_dict=state,
            knowledge=kg,
            genomics=genomics,
            extra=meta.get("extra", {}),
            calibration=_load_calibration(folder / "calibration.json"),
            offset=meta.get("offset", "none"),  # bundles from before training.offset
            ensemble=meta.get("ensemble", 1),  # bundles from before training.ensemble
            gene_set_input=meta.get("gene_set_input", False),  # bundles from before training.gene_set_input
        )


def _load_calibration(path: Path) -> Calibration:
    """The bundle's calibration; the identity when the file is absent (a bundle from before calibration)."""
    if not path.is_file():
        return Calibration()
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: damaged calibration ({exc}). Train and register the model again.") from exc


# ------------------------------------------------------------------------------------- encoder files
# names of the copies under ENCODER_FILES (the image weights keep their suffix)
_IMAGE_WEIGHTS, _TEXT_ADAPTER = "image_weights", "text_adapter"


def _pack_encoder_files(spec: EncodersSpec, folder: Path) -> dict:
    """The spec as JSON, with the image weights and the LoRA adapter it uses copied into ``folder/encoders``
    and named relative to ``folder``.

    Why copies: a registered model is loaded where the training workdir does not exist. The user's files stay
    where they are, untouched. The copies are made in a temporary folder first and swapped in, so a bundle
    re-saved over itself (its files already inside it) reads its sources before they are replaced.
    """
    dump = spec.model_dump(mode="json")
    tmp, target = folder / f".{ENCODER_FILES}.tmp", folder / ENCODER_FILES
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        weights = spec.image.weights_file()
        if weights is not None:
            source = Path(weights)
            if not source.is_file():
                key = "encoders.image.train.output" if spec.image.train is not None else "encoders.image.weights"
                raise ModelError(
                    f"{source}: the image weights named by {key} do not exist, so the model cannot "
                    "carry them. Run `clinicmm train-image WORKFLOW.yaml` (or fix the path), then train again."
                )
            name = f"{_IMAGE_WEIGHTS}{source.suffix}"  # the suffix tells load_weights safetensors from torch files
            _place(source, tmp / name, written_here=spec.image.train is not None)
            section = dump["image"]["train"] if spec.image.train is not None else dump["image"]
            section["output" if spec.image.train is not None else "weights"] = f"{ENCODER_FILES}/{name}"
        if spec.text.adapter_path is not None:
            source = Path(spec.text.adapter_path)
            if not (source / "adapter_config.json").is_file():
                raise ModelError(
                    f"{source}: encoders.text.adapter_path has no adapter_config.json, so the model cannot "
                    "carry the adapter. Run `clinicmm finetune-text WORKFLOW.yaml` (or fix the path), then train again."
                )
            _place(source, tmp / _TEXT_ADAPTER, written_here=spec.text.lora is not None)
            dump["text"]["adapter_path"] = f"{ENCODER_FILES}/{_TEXT_ADAPTER}"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    if any(tmp.iterdir()):
        tmp.replace(target)
    else:
        tmp.rmdir()
    return dump


def _place(source: Path, target: Path, written_here: bool) -> None:
    """Copy ``source`` (a file or an adapter folder) to ``target``. Files clinicmm wrote itself (train-image's
    weights, finetune-text's adapter: always replaced whole through a rename, never rewritten in place) are
    hard-linked instead where the file system allows, so the bundles of every model share one copy on disk and a
    later retrain (a new file) leaves this bundle's bytes as they were. A user's own file is always copied."""
    if written_here:
        try:
            if source.is_dir():
                shutil.copytree(source, target, copy_function=os.link)
            else:
                os.link(source, target)
            return
        except OSError:  # another file system, or no hard links: copy
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def _unpack_encoder_files(dump: dict, folder: Path) -> EncodersSpec:
    """The saved spec with its relative encoder file paths resolved against ``folder``, the bundle loaded now.

    Absolute paths (bundles saved before the files travelled with them) are kept; when they do not exist here,
    a warning says so, since encoding that modality will fail on this machine.
    """
    spec = EncodersSpec.model_validate(dump)
    image, text = spec.image, spec.text
    if image.train is not None and image.train.output is not None:
        image = image.model_copy(
            update={"train": image.train.model_copy(update={"output": _in(folder, image.train.output)})}
        )
    if image.weights is not None:
        image = image.model_copy(update={"weights": _in(folder, image.weights)})
    if text.adapter_path is not None:
        text = text.model_copy(update={"adapter_path": _in(folder, text.adapter_path)})
    for saved, path in ((spec.image.weights_file(), image.weights_file()), (spec.text.adapter_path, text.adapter_path)):
        if path is None or path.exists():
            continue
        if not saved.is_absolute():  # a copy this bundle should hold
            raise ModelError(
                f"{folder}: the bundle is incomplete or damaged ({saved} is missing). Train and register it again."
            )
        log.warning(
            "%s: this model was saved before clinicmm copied encoder files into its bundle and refers to "
            "this path, which is not on this machine; encoding with it will fail. Train and register the "
            "model again with this clinicmm to carry the file with it.",
            path,
        )
    return spec.model_copy(update={"image": image, "text": text})


def _in(folder: Path, path: Path) -> Path:
    return path if path.is_absolute() else (folder / path).resolve()
