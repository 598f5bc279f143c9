"""``danmaku pretrain eval``: Google's four pretraining metrics of a model on instance sets.

Runs the model (no dropout) over the first ``max_steps`` batches of
``batch_size`` instances of each split -- Google's ``run_pretraining.py
--do_eval`` defaults are batch 8 and 100 steps, i.e. the study's 800 examples --
and reports ``masked_lm_accuracy``, ``masked_lm_loss``,
``next_sentence_accuracy``, ``next_sentence_loss`` with Google's definitions
(``pretrain/losses.py``). Evaluating Google's released checkpoint gives the
study's "before" row; a run dir gives the "after" rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from danmaku.pretrain.losses import SUM_KEYS, MetricSums

METRICS = ("masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy", "next_sentence_loss")


def evaluate_split(pretrainer: Any, files: list[str], *, seq: int, pred: int, batch_size: int = 8,
                   max_steps: int | None = 100) -> dict[str, float]:
    """Google's eval metrics of ``pretrainer`` on the instances in ``files``."""
    import tensorflow as tf

    from danmaku.pretrain.data import eval_dataset
    from danmaku.pretrain.losses import pretraining_losses

    @tf.function
    def sums_of(inputs, labels):
        values = pretraining_losses(pretrainer(inputs, training=False), labels)
        return {k: values[k] for k in SUM_KEYS}

    sums = MetricSums()
    examples = 0
    for inputs, labels in eval_dataset(files, batch_size, seq, pred, max_steps):
        sums.add({k: float(v) for k, v in sums_of(inputs, labels).items()})
        examples += int(labels["next_sentence_labels"].shape[0])
    return sums.metrics() | {"examples": examples}


def evaluate(bert: Any, instances_dir: str | Path, *, splits: tuple[str, ...] = ("train", "eval"),
             batch_size: int = 8, max_steps: int | None = 100) -> dict[str, dict[str, float]]:
    """Metrics per split present in ``instances_dir`` for a ``LoadedBert``."""
    from danmaku.pretrain.data import open_instances

    instances = open_instances(instances_dir)
    if instances.vocab_path.is_file() and bert.vocab_path.read_bytes() != instances.vocab_path.read_bytes():
        raise ValueError(f"vocab mismatch: {bert.vocab_path} is not the vocabulary of {instances_dir}")
    if not bert.heads_loaded:
        raise ValueError(f"{bert.source} has no pretraining heads (cls/...): MLM/NSP metrics need them")
    results = {}
    for split in splits:
        if instances.has(split):
            results[split] = evaluate_split(bert.pretrainer, instances.files(split),
                                            seq=instances.max_seq_length, pred=instances.max_predictions,
                                            batch_size=batch_size, max_steps=max_steps)
    if not results:
        raise ValueError(f"{instances_dir} has none of the splits {', '.join(splits)}")
    return results


def table(rows: dict[str, dict[str, float]], label: str,
          reference: dict[str, dict[str, float]] | None = None) -> str:
    """The study's table (markdown): one row per split, the count reference's rows first.

    The reference (``reference.py``) predicts masked tokens only: its
    next-sentence cells are "-".
    """
    lines = ["| model, data | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    labelled = [(f"bigram counts (reference), {split} set", m) for split, m in (reference or {}).items()]
    labelled += [(f"{label}, {split} set", m) for split, m in rows.items()]
    for name, metrics in labelled:
        lines.append(f"| {name} | " + " | ".join(f"{metrics[m]:.6g}" if m in metrics else "-"
                                                 for m in METRICS) + " |")
    return "\n".join(lines)


def write_json(path: str | Path, source: str, rows: dict[str, dict[str, float]], **extra: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": source, **extra, "results": rows}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
