"""MODEL arguments -> ``Encoder``s, through ``danmaku.pretrain.loading.load_bert`` (the one loader).

``--model`` takes whatever ``load_bert`` takes: a Google model directory
(optionally with bert-as-service's ``--tuned-model-dir``/``--ckpt-name``), a
checkpoint prefix such as ``run/model.ckpt-12000``, a ``danmaku pretrain export``
(Google or HF format) or a run directory. Commands that compare models take
``NAME=MODEL`` (``base=chinese_L-12_H-768_A-12``); a bare MODEL is named after
its last path component.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from danmaku.embed.encoder import Encoder, EncoderSettings


class ModelError(Exception):
    """A model that cannot be loaded, with a message meant for the user."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str


def parse_model_spec(spec: str) -> ModelSpec:
    """``"tuned=runs/x"`` -> ``ModelSpec("tuned", "runs/x")``; ``"runs/x"`` -> named ``x``."""
    name, sep, path = spec.partition("=")
    if sep and name and path and "/" not in name:
        return ModelSpec(name.strip(), path)
    if sep and not path:
        raise ModelError(f"--model {spec!r}: nothing after '='; use NAME=MODEL")
    return ModelSpec(Path(spec.rstrip("/")).name or spec, spec)


def load_encoder(
    model: str | Path,
    settings: EncoderSettings | None = None,
    *,
    ckpt_name: str | None = None,
    tuned_dir: str | Path | None = None,
    do_lower_case: bool = True,
) -> tuple[Encoder, str]:
    """An ``Encoder`` for MODEL and a one-line description of what was loaded.

    Raises ``ModelError`` (missing path, not a model, config/vocab mismatch, bad
    settings) instead of a traceback.
    """
    path = Path(model)
    if not path.exists() and not Path(f"{path}.index").exists():
        raise ModelError(f"model not found: {path} (no such directory or checkpoint prefix)")
    from danmaku.pretrain.loading import load_bert

    try:
        loaded = load_bert(path, ckpt_name=ckpt_name, tuned_dir=tuned_dir)
    except (FileNotFoundError, ValueError) as err:
        raise ModelError(f"cannot load model {path}: {err}") from err
    try:
        encoder = Encoder(loaded.backbone, loaded.vocab_path, settings, do_lower_case=do_lower_case)
    except (FileNotFoundError, ValueError) as err:
        raise ModelError(str(err)) from err
    return encoder, loaded.source
