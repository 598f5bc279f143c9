"""HF ``transformers`` (torch) as the numeric oracle for ``dd embed``, run in its own process.

Usage: ``python -m tests.embed_hf_oracle OUT_DIR TEXTS_FILE MAX_SEQ_LEN``

Makes a tiny random ``transformers.BertModel`` (Google's tanh GELU =
``gelu_new``; weights drawn wide so that every parameter matters), saves it in
HF format (``OUT_DIR/hf``: ``config.json``, ``model.safetensors``,
``vocab.txt``) and writes ``OUT_DIR/oracle.npz``: the ids and attention mask HF's
own tokenizer makes (``[CLS] ... [SEP]``, truncated to MAX_SEQ_LEN) and every
hidden state (``output_hidden_states=True``: embeddings, then each layer).

A separate process because torch's triton (imported by transformers) and
TensorFlow both carry LLVM; importing triton after TensorFlow crashes the
interpreter, so the oracle never shares a process with dd.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "vocab.txt"
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "hidden_act": "gelu_new",
}


def make_model(out: Path, seed: int = 0) -> transformers.BertModel:
    torch.manual_seed(seed)
    vocab_size = sum(1 for _ in open(VOCAB, encoding="utf-8"))
    config = transformers.BertConfig(vocab_size=vocab_size, **TINY)
    model = transformers.BertModel(config, add_pooling_layer=True).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm.weight" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.2 * torch.randn_like(param))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copyfile(VOCAB, out / "vocab.txt")
    return model


def main(out_dir: str, texts_file: str, max_seq_len: str) -> None:
    out = Path(out_dir)
    model = make_model(out / "hf")
    texts = [line.strip() for line in open(texts_file, encoding="utf-8") if line.strip()]
    tokenizer = transformers.BertTokenizerFast(str(VOCAB), do_lower_case=True)
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=int(max_seq_len),
                      return_tensors="pt")
    with torch.no_grad():
        result = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=torch.zeros_like(batch["input_ids"]), output_hidden_states=True)
    np.savez(
        out / "oracle.npz",
        input_ids=batch["input_ids"].numpy(),
        attention_mask=batch["attention_mask"].numpy(),
        hidden_states=np.stack([h.numpy() for h in result.hidden_states]),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
