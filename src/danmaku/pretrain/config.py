"""``BertConfig``: Google's ``bert_config.json``, plus the presets danmaku trains.

The fields and their meaning are those of Google's ``modeling.BertConfig`` so a
config read from a Google model directory and written back is the same file
(bert-as-service and every converter read it). Extra keys found in a file (HF's
``config.json`` carries many) are ignored on read.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

# Google's Chinese BERT vocabulary (../shared/data/vocab.txt).
CHINESE_VOCAB_SIZE = 21128

# Google's ``hidden_act: "gelu"`` is the tanh approximation; HF calls that
# "gelu_new" ("gelu_pytorch_tanh" is the same function) and uses "gelu" for erf.
GOOGLE_GELU = "gelu"
HF_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT model, field for field Google's ``bert_config.json``.

    Args:
        vocab_size: rows of the token embedding (= lines of ``vocab.txt``).
        hidden_size: width of every layer.
        num_hidden_layers: transformer blocks.
        num_attention_heads: heads per block; must divide ``hidden_size``.
        intermediate_size: width of the feed-forward layer.
        hidden_act: ``"gelu"`` -- Google's tanh-approximated GELU, the only one
            the keras-hub backbone implements.
        hidden_dropout_prob: dropout on embeddings and block outputs.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: rows of the position embedding (longest input).
        type_vocab_size: segment types (2: sentence A and B).
        initializer_range: stddev of the truncated-normal initializer.

    Example:
        >>> cfg = BertConfig.preset("tiny")
        >>> BertConfig.from_json_string(cfg.to_json_string()) == cfg
        True
    """

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = GOOGLE_GELU
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # -- JSON ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        """Read Google's keys (``bert_config.json``); unknown keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if "vocab_size" not in data:
            raise ValueError("BERT config lacks 'vocab_size'")
        kwargs = {k: v for k, v in data.items() if k in fields}
        if kwargs.get("hidden_act", GOOGLE_GELU) != GOOGLE_GELU:
            raise ValueError(
                f"hidden_act {kwargs['hidden_act']!r} is not supported: keras-hub's BertBackbone "
                "implements Google's 'gelu' (tanh approximation) only"
            )
        return cls(**kwargs)

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> BertConfig:
        """Read HF's ``config.json``, where "gelu" means erf and "gelu_new" is Google's gelu.

        An erf-GELU model (most HF uploads) is loaded with Google's tanh GELU; the
        two differ by < 1e-3 per activation, so a warning, not an error.
        """
        data = dict(data)
        act = data.get("hidden_act", "gelu")
        if act in HF_TANH_GELUS:
            data["hidden_act"] = GOOGLE_GELU
        elif act == "gelu":
            warnings.warn(
                "HF config uses exact (erf) GELU; danmaku's backbone computes Google's tanh "
                "approximation, so outputs differ slightly from transformers'",
                stacklevel=2,
            )
        return cls.from_dict(data)

    @classmethod
    def from_json_string(cls, text: str) -> BertConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BERT config not found: {path}")
        try:
            return cls.from_json_string(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a BERT config: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """Google's layout: sorted keys, 2-space indent, trailing newline."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    def to_hf_dict(self) -> dict[str, Any]:
        """``config.json`` for ``transformers.BertForPreTraining`` with Google's exact GELU."""
        data = self.to_dict()
        data["hidden_act"] = "gelu_new" if self.hidden_act == GOOGLE_GELU else self.hidden_act
        data.update(
            architectures=["BertForPreTraining"],
            model_type="bert",
            layer_norm_eps=1e-12,
            pad_token_id=0,
            tie_word_embeddings=True,
            dtype="float32",
        )
        return data

    # -- presets ------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, vocab_size: int = CHINESE_VOCAB_SIZE) -> BertConfig:
        """A named architecture: ``tiny`` (demo/tests), ``small`` (bench), ``base`` (Google's)."""
        try:
            shape = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
        return cls(vocab_size=vocab_size, **shape)


# How a fresh model's learnt position table starts (a training choice, not part of
# bert_config.json): Google's random draw, or ``model.sinusoidal_positions``. Here
# so that ``TrainSettings`` can check it without importing Keras.
POSITION_INITS = ("random", "sinusoidal")

# Google Chinese BERT-Base is chinese_L-12_H-768_A-12; "tiny" learns visibly in
# minutes on 2 CPU cores; "small" is the bench/ shape (L4 H256).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
