"""A tiny BERT saved to a folder, built from transformers' config classes (no download): a user's own model."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "final diagnosis impression history findings clinical family lung lobe right left upper lower biopsy mass "
    "adenocarcinoma squamous cell carcinoma papillary renal kidney thyroid no evidence of negative positive for "
    "the a in with is and ct chest shows invasive tumor margins free lymphoma mother had rule out"
).split()


def build_tiny_bert(folder: Path, seed: int = 0, max_positions: int = 64) -> Path:
    """Write config.json, the weights (safetensors) and a WordPiece tokenizer to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,:;-/()")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), *WORDS]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
