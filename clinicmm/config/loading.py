"""Reading a dataset or workflow YAML: one clear error per problem, with the valid keys and the file."""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from clinicmm.config.dataset import DatasetSpec
from clinicmm.config.workflow import ImageEncoderSpec, WorkflowSpec
from clinicmm.errors import ConfigError

MAX_YAML_BYTES = 1024 * 1024  # a config is a few kB: anything near this is not a config
MAX_YAML_NODES = 100_000  # values after expanding every alias (a billion-laughs file expands to 10^9)
MAX_YAML_DEPTH = 100  # nesting levels


class _Limited(Exception):
    """The YAML document expands beyond :data:`MAX_YAML_NODES` values or nests beyond :data:`MAX_YAML_DEPTH`."""


def _expanded_size(root: yaml.Node) -> int:
    """Number of values ``root`` stands for with every alias expanded (each shared node counted once per use),
    computed over the composed graph without expanding it; :class:`_Limited` past the limits or on a cycle."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int, path: frozenset) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > MAX_YAML_DEPTH or id(node) in path:
            raise _Limited(f"nests deeper than {MAX_YAML_DEPTH} levels or refers to itself")
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        inner = path | {id(node)}
        total = 1
        for child in children:
            total += size(child, depth + 1, inner)
            if total > MAX_YAML_NODES:
                raise _Limited(f"expands to more than {MAX_YAML_NODES} values (aliases)")
        sizes[id(node)] = total
        return total

    return size(root, 0, frozenset())


def read_yaml(path: Path | str) -> dict[str, Any]:
    """The top-level mapping of a YAML config, read safely: at most :data:`MAX_YAML_BYTES`, and refused when its
    anchors and aliases expand to more than :data:`MAX_YAML_NODES` values (a "billion laughs" file) or it nests
    deeper than :data:`MAX_YAML_DEPTH` levels. Errors name the file and the line, never the content."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Pass the path of an existing YAML file.")
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path}: {size} bytes, more than a config's limit of {MAX_YAML_BYTES} bytes. "
            "Pass the dataset or workflow YAML itself (tables and lists of files belong in the files it names)."
        )
    with path.open("rb") as fh:
        raw = fh.read(MAX_YAML_BYTES + 1)  # the file may have grown since stat()
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: more than {MAX_YAML_BYTES} bytes; not a config file.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}). Save the YAML as UTF-8.") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node)
        data = loader.construct_document(node) if node is not None else None
    except _Limited as exc:
        raise ConfigError(
            f"{path}: the YAML {exc}; refused. A config needs no more: write the values out, or use fewer "
            "anchors and aliases (&name / *name)."
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML nests too deeply; refused. Flatten it.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or type(exc).__name__)[:200]
        raise ConfigError(f"{path}{line}: not valid YAML ({problem}). Fix the syntax.") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level (got {type(data).__name__}).")
    return data


_read_yaml = read_yaml

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 1
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 3


def _short(value: Any) -> str:
    """A bounded, one-line picture of a bad value (never a whole structure: reprlib stops early)."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return f"a list of {len(value)} items"
    text = _SHORT.repr(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


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
        elif not loc:  # a check of the whole file: its input is the whole config, which is never echoed
            lines.append(f"{_one_line(err['msg'])}")
        else:
            lines.append(
                f"{dotted}: {_one_line(err['msg'])} (got {_short(err.get('input'))}); fix the value of {dotted!r}"
            )
    return ConfigError(f"{path}: " + "; ".join(lines))


def _one_line(msg: str) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= 300 else msg[:297] + "..."


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
        if spec.genomics.expression.sample_sheet is not None:
            found.append(("genomics.expression.sample_sheet", spec.genomics.expression.sample_sheet))
    for i, layer in enumerate(spec.genomics.layers if spec.genomics else ()):
        found.append((f"genomics.layers[{i}].path", layer.path))
        if layer.sample_sheet is not None:
            found.append((f"genomics.layers[{i}].sample_sheet", layer.sample_sheet))
        if layer.feature_map is not None:
            found.append((f"genomics.layers[{i}].feature_map", layer.feature_map))
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
