"""Tokenizer files for an exported model: ``AutoTokenizer.from_pretrained(DIR)`` needs nothing else.

``BertTokenizerFast``'s files: ``vocab.txt``, ``tokenizer_config.json``
(``do_lower_case``, Chinese characters split, accents stripped with the
lowercasing, as Google's ``FullTokenizer`` does), ``special_tokens_map.json``,
and ``tokenizer.json`` -- the Rust pipeline itself, which text-embeddings-inference
requires and which transformers would otherwise rebuild from ``vocab.txt``.
It is built here with one deliberate difference from that rebuild: words of up
to 200 characters go through WordPiece (Google's limit, ours), not 100
(transformers'), so a 150-character ``wwww...`` is word pieces, not ``[UNK]``, as
the model saw it in training.

Where HF's tokenizer still differs from Google's (``danmaku.text.tokenizer``
lists it: control and private-use characters, a final sigma, punctuation newer
than the Rust tables) the exported files follow HF; on ordinary Chinese danmaku
both give the same ids (tested on real danmaku).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from danmaku.artifacts import VOCAB
from danmaku.text.tokenizer import MAX_INPUT_CHARS_PER_WORD, load_vocab

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}
TOKENIZER_FILES = (VOCAB, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_tokenizer(vocab_path: str | Path, *, do_lower_case: bool = True):
    """A ``tokenizers.Tokenizer`` equal to what ``BertTokenizerFast`` builds (but for the word length)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tokens = load_vocab(vocab_path)
    vocab = {token: i for i, token in enumerate(tokens)}
    missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_path} lacks the special token(s) {', '.join(missing)}: "
                         "not a BERT vocabulary")
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                    max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=do_lower_case)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS.values()))
    return tokenizer


def write_tokenizer_files(vocab_path: str | Path, out_dir: str | Path, *, do_lower_case: bool = True,
                          model_max_length: int = 512) -> list[Path]:
    """Write the four files into ``out_dir``; ``model_max_length`` is what ``truncation=True`` cuts to."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path = Path(vocab_path)
    target = out_dir / "vocab.txt"
    if not target.exists() or vocab_path.resolve() != target.resolve():
        shutil.copyfile(vocab_path, target)
    build_tokenizer(vocab_path, do_lower_case=do_lower_case).save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "BertTokenizer",  # transformers' AutoTokenizer picks the fast one
        "do_lower_case": do_lower_case,
        "tokenize_chinese_chars": True,
        "strip_accents": None,  # None: strip them when lowercasing (Google's behaviour)
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": True,
        **SPECIAL_TOKENS,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n",
                                                     encoding="utf-8")
    return [out_dir / name for name in TOKENIZER_FILES]
