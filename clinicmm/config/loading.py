"""Reading a dataset or workflow YAML: one clear error per problem, with the valid keys and the file."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from clinicmm.config.dataset import DatasetSpec
from clinicmm.config.workflow import ImageEncoderSpec, WorkflowSpec
from clinicmm.errors import ConfigError


def _read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Pass the path of an existing YAML file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}). Fix the syntax.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level (got {type(data).__name__}).")
    return data


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names at the parent of ``loc`` (best effort, for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return [n for n in getattr(current, "model_fields", {}) if n != "base_dir"]


def _explain(path: Path, model: type[BaseModel], exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _field_names(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"unknown key {dotted!r}: {hint}valid keys here: {', '.join(valid)}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {dotted!r}: add it")
        else:
            lines.append(f"{dotted}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(f"{path}: " + "; ".join(lines))


def _load(model: type[BaseModel], path: Path | str) -> Any:
    path = Path(path).resolve()
    data = _read_yaml(path)
    data.pop("base_dir", None)
    try:
        return model.model_validate({**data, "base_dir": path.parent})
    except ValidationError as exc:
        raise _explain(path, model, exc) from None


def load_dataset(path: Path | str) -> DatasetSpec:
    """Read and validate a dataset.yaml; check that every file it names exists."""
    spec: DatasetSpec = _load(DatasetSpec, path)
    for key, p in declared_paths(spec):
        if not spec.resolve(p).exists():
            raise ConfigError(
                f"{path}: {key} points at {spec.resolve(p)}, which does not exist. "
                "Fix the path (relative paths are read from the YAML file's folder)."
            )
    return spec


def declared_paths(spec: DatasetSpec) -> list[tuple[str, Path]]:
    """``(YAML key, path)`` of every file or folder a dataset names."""
    found = [("labels.path", spec.labels.path)] if spec.labels else []
    if spec.imaging:
        found.append(("imaging.root", spec.imaging.root))
    if spec.notes:
        found.append(("notes.path", spec.notes.path))
    if spec.genomics and spec.genomics.expression:
        found.append(("genomics.expression.path", spec.genomics.expression.path))
    if spec.genomics and spec.genomics.mutations:
        found.append(("genomics.mutations.path", spec.genomics.mutations.path))
    if spec.genomics and spec.genomics.genes.hgnc_table:
        found.append(("genomics.genes.hgnc_table", spec.genomics.genes.hgnc_table))
    return found


def load_workflow(path: Path | str) -> WorkflowSpec:
    """Read and validate a workflow YAML (the dataset it names is checked when it is loaded)."""
    spec: WorkflowSpec = _load(WorkflowSpec, path)
    if not spec.dataset_path.is_file():
        raise ConfigError(
            f"{path}: dataset points at {spec.dataset_path}, which does not exist. "
            "Generate it (clinicmm demo-data) or fix the path (relative to the workflow file)."
        )
    return _with_text_paths(spec)


def _with_text_paths(spec: WorkflowSpec) -> WorkflowSpec:
    """``encoders.text`` folders made absolute against the workflow's folder (not the shell's); with ``lora``
    and no ``adapter_path``, the adapter that ``clinicmm finetune-text`` writes under the workdir."""
    text = spec.encoders.text
    update = {k: spec.resolve(getattr(text, k)) for k in ("model_path", "adapter_path") if getattr(text, k) is not None}
    if text.lora is not None and text.adapter_path is None:
        update["adapter_path"] = spec.work / "finetune_text" / "adapter"
    image = _with_image_paths(spec)
    if not update and image is spec.encoders.image:
        return spec
    return spec.model_copy(
        update={"encoders": spec.encoders.model_copy(update={"text": text.model_copy(update=update), "image": image})}
    )


def _with_image_paths(spec: WorkflowSpec) -> ImageEncoderSpec:
    """``encoders.image.weights`` absolute; with ``train``, its output defaults to <workdir>/train_image/weights.safetensors."""
    image = spec.encoders.image
    update: dict[str, Any] = {"weights": spec.resolve(image.weights)} if image.weights is not None else {}
    if image.train is not None:
        output = (
            spec.resolve(image.train.output)
            if image.train.output
            else spec.work / "train_image" / "weights.safetensors"
        )
        update["train"] = image.train.model_copy(update={"output": output})
    return image.model_copy(update=update) if update else image


def dump(spec: BaseModel) -> dict[str, Any]:
    """A JSON-friendly dict of a spec (paths as strings), for logging and for the model artifacts."""
    return spec.model_dump(mode="json")
