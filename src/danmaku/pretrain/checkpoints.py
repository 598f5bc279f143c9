"""Weights in Google's names: our model <-> Google TF1 checkpoints <-> HF safetensors.

The hub of every conversion is a plain ``dict[str, np.ndarray]`` keyed by
Google's variable names in Google's shapes (``GoogleWeights``), e.g.
``bert/encoder/layer_3/attention/self/query/kernel`` ``[H, H]``. Each format
only maps to and from it:

* ``google_weights(model)`` / ``assign_google_weights(model, weights)``: our
  ``BertPretrainer`` (keras-hub kernels are ``[H, heads, head_size]`` for
  attention, Google's ``[H, H]``: a reshape; the NSP kernel is transposed).
* ``read_google_checkpoint(prefix)`` / ``write_google_checkpoint(...)``: TF1
  checkpoints (``model.ckpt-N.index`` + ``.data-*``), read with
  ``tf.train.load_checkpoint`` and written with the ``SaveV2`` op, i.e. exactly
  what Google's ``tf.train.Saver`` writes -- same tensor names, shapes, dtypes,
  plus ``global_step`` -- so bert-as-service and Google-checkpoint converters
  read it.
* ``hf_state_dict(weights)`` / ``google_from_hf(state)``: the tensor names of
  ``transformers.BertForPreTraining`` (Linear weights are transposed kernels);
  ``write_hf(..., head=ClassifierHead(...))`` / ``read_hf_head`` add the
  ``classifier`` layer of ``BertForSequenceClassification`` (``danmaku finetune``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danmaku.pretrain.config import BertConfig

GoogleWeights = dict[str, np.ndarray]

# Not model weights: Google's training state in a run_pretraining checkpoint.
_NON_MODEL = re.compile(r"(^|/)(adam_[mv]|global_step|Adam(_1)?|beta[12]_power|Momentum)$")
HEAD_PREFIX = "cls/"


def google_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every variable of Google's ``BertModel`` + pretraining heads, with its shape.

    This is the list ``tf.train.list_variables`` prints for a checkpoint written
    by Google's ``run_pretraining.py`` (without optimizer slots and
    ``global_step``), in Google's creation order.
    """
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (config.vocab_size, h),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, h),
        "bert/embeddings/LayerNorm/beta": (h,),
        "bert/embeddings/LayerNorm/gamma": (h,),
    }
    for n in range(config.num_hidden_layers):
        p = f"bert/encoder/layer_{n}/"
        for part in ("query", "key", "value"):
            shapes[f"{p}attention/self/{part}/kernel"] = (h, h)
            shapes[f"{p}attention/self/{part}/bias"] = (h,)
        shapes[f"{p}attention/output/dense/kernel"] = (h, h)
        shapes[f"{p}attention/output/dense/bias"] = (h,)
        shapes[f"{p}attention/output/LayerNorm/beta"] = (h,)
        shapes[f"{p}attention/output/LayerNorm/gamma"] = (h,)
        shapes[f"{p}intermediate/dense/kernel"] = (h, i)
        shapes[f"{p}intermediate/dense/bias"] = (i,)
        shapes[f"{p}output/dense/kernel"] = (i, h)
        shapes[f"{p}output/dense/bias"] = (h,)
        shapes[f"{p}output/LayerNorm/beta"] = (h,)
        shapes[f"{p}output/LayerNorm/gamma"] = (h,)
    shapes["bert/pooler/dense/kernel"] = (h, h)
    shapes["bert/pooler/dense/bias"] = (h,)
    shapes["cls/predictions/transform/dense/kernel"] = (h, h)
    shapes["cls/predictions/transform/dense/bias"] = (h,)
    shapes["cls/predictions/transform/LayerNorm/beta"] = (h,)
    shapes["cls/predictions/transform/LayerNorm/gamma"] = (h,)
    shapes["cls/predictions/output_bias"] = (config.vocab_size,)
    shapes["cls/seq_relationship/output_weights"] = (2, h)
    shapes["cls/seq_relationship/output_bias"] = (2,)
    return shapes


# ---------------------------------------------------------------------------
# our model <-> GoogleWeights
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Slot:
    name: str           # Google's variable name
    variable: object    # keras.Variable
    transpose: bool = False


def _slots(model) -> Iterator[_Slot]:
    """Pair every Google variable with the Keras variable that holds it."""
    bb = model.backbone
    yield _Slot("bert/embeddings/word_embeddings", bb.token_embedding.embeddings)
    yield _Slot("bert/embeddings/token_type_embeddings", bb.segment_embedding.embeddings)
    yield _Slot("bert/embeddings/position_embeddings", bb.position_embedding.position_embeddings)
    ln = bb.embeddings_layer_norm
    yield _Slot("bert/embeddings/LayerNorm/beta", ln.beta)
    yield _Slot("bert/embeddings/LayerNorm/gamma", ln.gamma)
    for n, block in enumerate(bb.transformer_layers):
        p = f"bert/encoder/layer_{n}/"
        attn = block._self_attention_layer
        for part, dense in (("query", attn.query_dense), ("key", attn.key_dense),
                            ("value", attn.value_dense)):
            yield _Slot(f"{p}attention/self/{part}/kernel", dense.kernel)
            yield _Slot(f"{p}attention/self/{part}/bias", dense.bias)
        yield _Slot(f"{p}attention/output/dense/kernel", attn.output_dense.kernel)
        yield _Slot(f"{p}attention/output/dense/bias", attn.output_dense.bias)
        yield _Slot(f"{p}attention/output/LayerNorm/beta", block._self_attention_layer_norm.beta)
        yield _Slot(f"{p}attention/output/LayerNorm/gamma", block._self_attention_layer_norm.gamma)
        yield _Slot(f"{p}intermediate/dense/kernel", block._feedforward_intermediate_dense.kernel)
        yield _Slot(f"{p}intermediate/dense/bias", block._feedforward_intermediate_dense.bias)
        yield _Slot(f"{p}output/dense/kernel", block._feedforward_output_dense.kernel)
        yield _Slot(f"{p}output/dense/bias", block._feedforward_output_dense.bias)
        yield _Slot(f"{p}output/LayerNorm/beta", block._feedforward_layer_norm.beta)
        yield _Slot(f"{p}output/LayerNorm/gamma", block._feedforward_layer_norm.gamma)
    yield _Slot("bert/pooler/dense/kernel", bb.pooled_dense.kernel)
    yield _Slot("bert/pooler/dense/bias", bb.pooled_dense.bias)
    if hasattr(model, "mlm_head"):
        mlm = model.mlm_head
        yield _Slot("cls/predictions/transform/dense/kernel", mlm._intermediate_dense.kernel)
        yield _Slot("cls/predictions/transform/dense/bias", mlm._intermediate_dense.bias)
        yield _Slot("cls/predictions/transform/LayerNorm/beta", mlm._intermediate_layer_norm.beta)
        yield _Slot("cls/predictions/transform/LayerNorm/gamma", mlm._intermediate_layer_norm.gamma)
        yield _Slot("cls/predictions/output_bias", mlm._bias)
        yield _Slot("cls/seq_relationship/output_weights", model.nsp_head.kernel, transpose=True)
        yield _Slot("cls/seq_relationship/output_bias", model.nsp_head.bias)


def google_weights(model) -> GoogleWeights:
    """All weights of a ``BertPretrainer`` (or bare ``BertBackbone``) in Google's names/shapes."""
    out: GoogleWeights = {}
    config = _config_of(model)
    shapes = google_shapes(config)
    for slot in _slots(model):
        value = np.asarray(slot.variable.numpy(), dtype=np.float32)
        out[slot.name] = value.T if slot.transpose else value.reshape(shapes[slot.name])
    return out


def assign_google_weights(model, weights: Mapping[str, np.ndarray], *, require_heads: bool = False,
                          source: str = "checkpoint") -> list[str]:
    """Load Google-named weights into ``model``; returns the head variables that were absent.

    Every ``bert/...`` variable must be present with Google's shape; the
    ``cls/...`` heads may be missing (a checkpoint of a fine-tuned or
    embedding-only model) unless ``require_heads``. Any problem raises
    ``ValueError`` naming the variables, before anything is assigned.
    """
    config = _config_of(model)
    shapes = google_shapes(config)
    slots = list(_slots(model))
    missing = [s.name for s in slots if s.name not in weights]
    missing_body = [n for n in missing if not n.startswith(HEAD_PREFIX)]
    if missing_body or (require_heads and missing):
        bad = missing if require_heads else missing_body
        raise ValueError(f"{source} lacks {len(bad)} variable(s) of the model: {_listing(bad)}")
    wrong = [
        f"{s.name} {tuple(np.shape(weights[s.name]))} != {shapes[s.name]}"
        for s in slots if s.name in weights and tuple(np.shape(weights[s.name])) != shapes[s.name]
    ]
    if wrong:
        raise ValueError(
            f"{source} does not fit the config (vocab_size={config.vocab_size}, "
            f"hidden_size={config.hidden_size}): {_listing(wrong)}"
        )
    for slot in slots:
        if slot.name not in weights:
            continue
        value = np.asarray(weights[slot.name])
        value = value.T if slot.transpose else value.reshape(tuple(slot.variable.shape))
        slot.variable.assign(value.astype(slot.variable.dtype))
    return missing


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _config_of(model) -> BertConfig:
    from danmaku.pretrain.model import bert_config_of

    backbone = getattr(model, "backbone", model)
    return bert_config_of(backbone)


# ---------------------------------------------------------------------------
# Google TF1 checkpoints
# ---------------------------------------------------------------------------
def checkpoint_exists(prefix: str | Path) -> bool:
    return Path(f"{prefix}.index").is_file()


def read_google_checkpoint(prefix: str | Path, names: list[str] | None = None) -> GoogleWeights:
    """Model variables of a TF1 checkpoint (optimizer slots and ``global_step`` skipped).

    ``prefix`` is what Google calls ``init_checkpoint``: ``.../bert_model.ckpt``
    or ``.../model.ckpt-12000`` (no ``.index`` suffix). ``names`` restricts the
    read to those variables (others present are ignored).
    """
    import tensorflow as tf

    prefix = str(prefix)
    if not checkpoint_exists(prefix):
        raise FileNotFoundError(f"no TF checkpoint at {prefix} ({prefix}.index is missing)")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as err:  # a corrupt index/data file: tf raises DataLossError & co
        raise ValueError(f"cannot read checkpoint {prefix}: {err}") from err
    available = reader.get_variable_to_shape_map()
    wanted = names if names is not None else [n for n in available if not _NON_MODEL.search(n)]
    out: GoogleWeights = {}
    for name in wanted:
        if name in available:
            try:
                out[name] = np.asarray(reader.get_tensor(name))
            except Exception as err:
                raise ValueError(f"checkpoint {prefix}: cannot read {name}: {err}") from err
    return out


def checkpoint_global_step(prefix: str | Path) -> int | None:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    if reader.has_tensor("global_step"):
        return int(reader.get_tensor("global_step"))
    return None


def write_google_checkpoint(weights: Mapping[str, np.ndarray], prefix: str | Path,
                            *, global_step: int | None = None) -> Path:
    """Write ``weights`` as a TF1 checkpoint at ``prefix`` (+ a ``checkpoint`` state file).

    Uses the ``SaveV2`` op that ``tf.compat.v1.train.Saver`` runs, so the files
    are byte-compatible with Google's: one ``.data-00000-of-00001`` shard and an
    ``.index``, float32 tensors under their exact names, ``global_step`` int64.
    """
    import tensorflow as tf

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = list(weights)
    tensors = [tf.constant(np.asarray(weights[n], dtype=np.float32)) for n in names]
    if global_step is not None:
        names.append("global_step")
        tensors.append(tf.constant(global_step, dtype=tf.int64))
    order = sorted(range(len(names)), key=lambda k: names[k])
    tmp = prefix.with_name(prefix.name + ".tmp")
    tf.raw_ops.SaveV2(
        prefix=str(tmp),
        tensor_names=[names[k] for k in order],
        shape_and_slices=[""] * len(names),
        tensors=[tensors[k] for k in order],
    )
    for suffix in (".index", ".data-00000-of-00001"):
        os.replace(f"{tmp}{suffix}", f"{prefix}{suffix}")
    _update_checkpoint_state(prefix)
    return prefix


def _update_checkpoint_state(prefix: Path) -> None:
    """Write the ``checkpoint`` file ``tf.train.latest_checkpoint`` reads (newest last)."""
    state = prefix.parent / "checkpoint"
    previous: list[str] = []
    if state.is_file():
        previous = re.findall(r'all_model_checkpoint_paths: "([^"]+)"', state.read_text())
    paths = [p for p in previous if p != prefix.name] + [prefix.name]
    lines = [f'model_checkpoint_path: "{prefix.name}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p in paths]
    state.write_text("\n".join(lines) + "\n")


def newest_checkpoint(directory: str | Path) -> Path | None:
    """The newest TF1 checkpoint prefix in ``directory``: the ``checkpoint`` file's
    choice if it exists, else the highest ``*.ckpt-N``, else ``bert_model.ckpt``."""
    directory = Path(directory)
    state = directory / "checkpoint"
    if state.is_file():
        found = re.search(r'^model_checkpoint_path: "([^"]+)"', state.read_text(), re.M)
        if found:
            candidate = Path(found.group(1))
            candidate = candidate if candidate.is_absolute() else directory / candidate
            if checkpoint_exists(candidate):
                return candidate
    numbered = []
    for index in directory.glob("*.ckpt-*.index"):
        m = re.search(r"-(\d+)\.index$", index.name)
        if m:
            numbered.append((int(m.group(1)), index.with_suffix("")))
    if numbered:
        return max(numbered)[1]
    plain = sorted(directory.glob("*.ckpt.index"))
    return plain[0].with_suffix("") if plain else None


# ---------------------------------------------------------------------------
# HF transformers (BertForPreTraining) names
# ---------------------------------------------------------------------------
_HF_LEAF = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}


def _hf_name(google: str) -> str:
    if google == "cls/predictions/output_bias":
        return "cls.predictions.bias"
    if google == "cls/seq_relationship/output_weights":
        return "cls.seq_relationship.weight"
    if google == "cls/seq_relationship/output_bias":
        return "cls.seq_relationship.bias"
    parts = google.split("/")
    if parts[-1] in _HF_LEAF:
        parts[-1] = _HF_LEAF[parts[-1]]
    else:  # embedding tables
        parts.append("weight")
    name = ".".join(parts)
    return re.sub(r"\.layer_(\d+)\.", r".layer.\1.", name)


def hf_state_dict(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Google-named weights -> ``BertForPreTraining`` state dict (kernels transposed).

    The tied decoder (``cls.predictions.decoder.weight/bias``) is left out, as
    ``save_pretrained`` leaves it out; ``from_pretrained`` ties it back.
    """
    out: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        value = np.asarray(value, dtype=np.float32)
        if name.endswith("/kernel"):
            value = value.T
        out[_hf_name(name)] = np.ascontiguousarray(value)
    return out


def google_from_hf(state: Mapping[str, np.ndarray], config: BertConfig) -> GoogleWeights:
    """``BertForPreTraining`` / ``BertModel`` state dict -> Google-named weights.

    Accepts names with or without the ``bert.`` prefix (a bare ``BertModel``
    save) and the old ``gamma``/``beta`` LayerNorm names; tensors that are not
    present are simply absent from the result (``assign_google_weights``
    decides whether that is an error).
    """
    keys = set(state)
    out: GoogleWeights = {}
    for google in google_shapes(config):
        hf = _hf_name(google)
        candidates = [hf]
        if hf.startswith("bert."):
            candidates.append(hf[len("bert."):])
        if "LayerNorm" in hf:
            old = hf.replace("LayerNorm.weight", "LayerNorm.gamma")
            old = old.replace("LayerNorm.bias", "LayerNorm.beta")
            candidates += [old, old.removeprefix("bert.")]
        if google == "cls/predictions/output_bias":
            candidates.append("cls.predictions.decoder.bias")
        found = next((c for c in candidates if c in keys), None)
        if found is None:
            continue
        value = np.asarray(state[found], dtype=np.float32)
        out[google] = value.T if google.endswith("/kernel") else value
    return out


@dataclass(frozen=True)
class ClassifierHead:
    """A sequence classifier's output layer: keras-hub's ``logits`` Dense (``kernel`` [hidden, classes])
    and the class names, in label-id order. In HF it is ``BertForSequenceClassification.classifier``
    (a ``Linear``, weight [classes, hidden]) with ``config.id2label``."""

    kernel: np.ndarray
    bias: np.ndarray
    labels: tuple[str, ...]


def write_hf(weights: Mapping[str, np.ndarray], config: BertConfig, vocab_path: str | Path,
             out_dir: str | Path, *, bare: bool = False, head: ClassifierHead | None = None,
             do_lower_case: bool = True, model_max_length: int | None = None) -> Path:
    """``config.json`` + ``model.safetensors`` + the tokenizer files, for ``from_pretrained``.

    By default the whole ``BertForPreTraining`` (heads included: fill-mask works,
    ``danmaku pretrain eval`` can measure it); ``bare`` writes a ``BertModel``
    (no ``bert.`` prefix, no heads), what sentence-embedding tools load without
    warning about unused weights; with ``head``, a ``BertForSequenceClassification``
    (``id2label``/``label2id`` in the config, the pretraining heads left out), which
    ``transformers.pipeline("text-classification", model=out_dir)`` runs as it is.
    ``model_max_length`` is the tokenizer's (what ``truncation=True`` cuts to).
    """
    import json

    from safetensors.numpy import save_file

    from danmaku.pretrain.tokenizer_files import write_tokenizer_files

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_config = config.to_hf_dict()
    if head is not None:
        state = hf_state_dict({k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIX)})
        state["classifier.weight"] = np.ascontiguousarray(np.asarray(head.kernel, dtype=np.float32).T)
        state["classifier.bias"] = np.ascontiguousarray(np.asarray(head.bias, dtype=np.float32))
        hf_config.update(
            architectures=["BertForSequenceClassification"],
            id2label={str(i): label for i, label in enumerate(head.labels)},
            label2id={label: i for i, label in enumerate(head.labels)},
            problem_type="single_label_classification",
        )
    else:
        state = hf_state_dict(weights)
        if bare:
            state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
            hf_config["architectures"] = ["BertModel"]
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True,
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    write_tokenizer_files(vocab_path, out_dir, do_lower_case=do_lower_case,
                          model_max_length=model_max_length or config.max_position_embeddings)
    return out_dir


def read_hf_head(model_dir: str | Path) -> ClassifierHead | None:
    """The classifier head of an HF ``BertForSequenceClassification`` directory (None if it has none)."""
    import json

    from safetensors import safe_open

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as tensors:
            if "classifier.weight" in tensors.keys():
                weight = tensors.get_tensor("classifier.weight")
                bias = tensors.get_tensor("classifier.bias")
                break
    else:
        return None
    id2label = config.get("id2label") or {}
    labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(bias)))
    return ClassifierHead(kernel=np.asarray(weight, dtype=np.float32).T, bias=np.asarray(bias, np.float32),
                          labels=labels)


def read_hf(model_dir: str | Path) -> tuple[BertConfig, GoogleWeights]:
    """Config and Google-named weights of an HF BERT directory (safetensors)."""
    import json

    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    config = BertConfig.from_hf_dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir} has config.json but no *.safetensors weights")
    state: dict[str, np.ndarray] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as err:
            raise ValueError(f"cannot read {f}: {err}") from err
    return config, google_from_hf(state, config)
