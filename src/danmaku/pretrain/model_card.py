"""The model card (``README.md``) every ``danmaku pretrain export`` writes.

A card in the format model hubs render: YAML front matter (``language``,
``license``, ``library_name``, ``pipeline_tag``, ``tags``, ``base_model`` when
it is a hub id), then what a user needs to trust and use the model:

* the base model (the run's init checkpoint) or "trained from scratch";
* the corpus version and its manifest's figures, found through the chain the
  run recorded: ``run.json`` -> its instances directory -> ``instances.json`` ->
  ``corpus_source`` (the corpus manifest, copied there at ``prepare`` time);
* the recipe: the run's settings and the instance options;
* the study's four pretraining metrics measured on this model (``evaluate``)
  when eval instances are at hand (``instances`` given or recorded by the run);
* the meme score: group MRR of the study's 92 phrases (``danmaku.embed.score``)
  with ``embed encode``'s defaults (REDUCE_MEAN, last layer, max_seq_len 32);
* usage for the exported format, intended use and the data's terms.

Gathering (``gather``) measures; rendering (``render``) is a pure function of the
facts, so a card can be checked without a model. Nothing here prints: stages
are reported through ``on_stage``. No timestamp goes into the card, so exporting
the same model twice writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from danmaku import __version__
from danmaku.artifacts import InstancesManifest, RunManifest
from danmaku.pretrain.loading import LoadedBert

GOOGLE_CHINESE_BASE = "google-bert/bert-base-chinese"  # Google's chinese_L-12_H-768_A-12 on the HF hub
GOOGLE_CHINESE_DIR = "chinese_L-12_H-768_A-12"
DEFAULT_LICENSE = "apache-2.0"  # Google's BERT release; the card says what it covers
MEME_MAX_SEQ_LEN = 32
LIBRARIES = {"google": "tensorflow", "hf": "transformers", "sentence-transformers": "sentence-transformers"}
PIPELINES = {"google": "fill-mask", "hf": "fill-mask", "sentence-transformers": "sentence-similarity"}


@dataclass
class CardFacts:
    """Everything the card states; ``None`` where it is not known (the card says so)."""

    name: str
    fmt: str
    source: str
    step: int | None
    architecture: dict[str, Any]
    license: str = DEFAULT_LICENSE
    base_model: str | None = None  # a hub id, for the front matter
    init_checkpoint: str | None = None  # what training started from, as the run recorded it
    from_run: bool = False
    settings: dict[str, Any] | None = None
    instances: dict[str, Any] | None = None
    corpus: dict[str, Any] | None = None
    evaluation: dict[str, dict[str, float]] | None = None
    evaluation_note: str = "not measured"
    eval_batches: str = ""
    meme: dict[str, Any] | None = None
    meme_note: str = "not measured"
    max_seq_length: int = MEME_MAX_SEQ_LEN
    notes: list[str] = field(default_factory=list)


# -- gathering --------------------------------------------------------------------
def find_run(model_path: str | Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The run directory behind ``model_path`` (the run itself, or a checkpoint prefix inside it)."""
    if model_path is None:
        return None
    path = Path(model_path)
    for candidate in (path, path.parent):
        if candidate.is_dir() and RunManifest.exists(candidate):
            manifest = RunManifest.read(candidate)
            return (candidate, manifest) if manifest is not None else None
    return None


def _instances_manifest(instances_dir: Path) -> dict[str, Any] | None:
    return InstancesManifest.read(instances_dir)


def base_model_id(init_checkpoint: str | None) -> str | None:
    """The hub id of the base model when the run started from Google's Chinese BERT."""
    if init_checkpoint and GOOGLE_CHINESE_DIR in Path(init_checkpoint).as_posix():
        return GOOGLE_CHINESE_BASE
    return None


def _architecture(bert: LoadedBert) -> dict[str, Any]:
    c = bert.config
    h, i, layers, vocab = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    params = (vocab + c.max_position_embeddings + c.type_vocab_size) * h + 2 * h  # embeddings + LayerNorm
    params += layers * (4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h)  # attention, FFN, 2 LayerNorms
    params += h * h + h  # pooler
    return {"layers": layers, "hidden": h, "heads": c.num_attention_heads, "intermediate": i,
            "vocab_size": vocab, "max_positions": c.max_position_embeddings, "parameters": params}


def meme_score(bert: LoadedBert) -> dict[str, Any]:
    """Group MRR of the study's meme phrases with ``embed encode``'s default pooling."""
    from danmaku.embed.encoder import Encoder, EncoderSettings
    from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups
    from danmaku.embed.texts import DEFAULT_PHRASES, read_phrases

    phrases = read_phrases(DEFAULT_PHRASES)
    seq = min(MEME_MAX_SEQ_LEN, bert.config.max_position_embeddings)
    encoder = Encoder(bert.backbone, bert.vocab_path, EncoderSettings(max_seq_len=seq))
    score = group_mrr(phrases, encoder.encode(phrases), read_groups(DEFAULT_GROUPS))
    return {"mrr": score.mrr, "chance": score.chance, "queries": score.queries, "candidates": len(phrases),
            "groups": len(score.groups)}


def gather(bert: LoadedBert, *, fmt: str, name: str, model_path: str | Path | None = None,
           instances_dir: str | Path | None = None, measure: bool = True, eval_steps: int | None = 100,
           eval_batch_size: int = 8, base_model: str | None = None, license: str = DEFAULT_LICENSE,
           max_seq_length: int = MEME_MAX_SEQ_LEN,
           on_stage: Callable[[str], None] | None = None) -> CardFacts:
    """The facts of ``bert``'s card: provenance from the run behind ``model_path``, and -- with
    ``measure`` -- the four metrics on the eval instances and the meme score."""
    stage = on_stage or (lambda _: None)
    facts = CardFacts(name=name, fmt=fmt, source=bert.source, step=bert.step,
                      architecture=_architecture(bert), license=license, max_seq_length=max_seq_length)
    run = find_run(model_path)
    if run is not None:
        _, manifest = run
        facts.from_run = True
        facts.settings = manifest.get("settings")
        facts.init_checkpoint = manifest.get("init_checkpoint")
        if instances_dir is None and manifest.get("instances"):
            instances_dir = manifest["instances"]
    facts.base_model = base_model or base_model_id(facts.init_checkpoint)
    if instances_dir is not None:
        recorded = _instances_manifest(Path(instances_dir))
        if recorded is None:
            facts.notes.append(f"the instances directory {instances_dir} is missing or has no instances.json")
        else:
            facts.instances = {"options": recorded.get("options"), "splits": {
                split: {k: v for k, v in stats.items() if k != "files"}
                for split, stats in recorded.get("splits", {}).items()}}
            source = recorded.get("corpus_source") or {}
            facts.corpus = source.get("manifest")
            if facts.corpus is None:
                facts.notes.append("the instances do not record a danmaku corpus manifest (prepared from "
                                   "another corpus, or before danmaku recorded it)")
    if not measure:
        return facts
    if instances_dir is None:
        facts.evaluation_note = "no eval instances were given (--instances) or recorded by a run"
    elif not bert.heads_loaded:
        facts.evaluation_note = "the checkpoint has no pretraining heads (MLM/NSP metrics need them)"
    else:
        from danmaku.pretrain.evaluate import evaluate

        stage("evaluating")
        try:
            facts.evaluation = evaluate(bert, instances_dir, batch_size=eval_batch_size, max_steps=eval_steps)
            facts.eval_batches = (f"first {eval_steps} batches of {eval_batch_size} instances per split"
                                  if eval_steps else "every instance")
        except (ValueError, FileNotFoundError) as err:
            facts.evaluation_note = f"could not be measured: {err}"
    stage("meme score")
    facts.meme = meme_score(bert)
    return facts


# -- rendering --------------------------------------------------------------------
def _yaml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML scalar


def front_matter(facts: CardFacts) -> str:
    tags = ["bert", "chinese", "danmaku", "bilibili", "vtuber"]
    if facts.fmt == "sentence-transformers":
        tags += ["sentence-transformers", "feature-extraction", "sentence-similarity"]
    lines = ["---", "language:", "- zh", f"license: {_yaml_value(facts.license)}",
             f"library_name: {_yaml_value(LIBRARIES[facts.fmt])}",
             f"pipeline_tag: {_yaml_value(PIPELINES[facts.fmt])}", "tags:"]
    lines += [f"- {_yaml_value(t)}" for t in tags]
    if facts.base_model:
        lines.append(f"base_model: {_yaml_value(facts.base_model)}")
    lines.append("---")
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows if v is not None]
    return out


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _corpus_section(facts: CardFacts) -> list[str]:
    lines = ["## Training data", ""]
    corpus = facts.corpus
    if corpus is None:
        if facts.instances is None:
            lines.append("Not recorded: the export was not made from a `danmaku pretrain train` run "
                         "whose instances are at hand (pass `--instances DIR`).")
        else:
            lines.append("The instances do not record the corpus they were prepared from.")
        return lines + [""]
    counts = corpus.get("counts", {})
    version = corpus.get("version")
    lines.append(f"Bilibili vtuber danmaku, corpus version **`{version}`** "
                 f"(`danmaku corpus export`; the version is {corpus.get('version_rule', 'its sha256')}).")
    lines.append("")
    rows = [("name", corpus.get("name")), ("documents (videos and live broadcasts)", counts.get("documents")),
            ("danmaku read from the store", counts.get("danmaku_read")),
            ("danmaku kept", counts.get("danmaku_kept")), ("danmaku left out", counts.get("danmaku_dropped")),
            ("characters", counts.get("characters"))]
    by_kind = counts.get("documents_by_kind") or {}
    rows += [(f"documents: {kind}", n) for kind, n in sorted(by_kind.items())]
    dropped = counts.get("dropped_by_reason") or {}
    rows += [(f"left out: {reason}", n) for reason, n in sorted(dropped.items())]
    for file_name, info in sorted((corpus.get("files") or {}).items()):
        rows.append((f"`{file_name}`", f"{_number(info.get('bytes'))} bytes, "
                     f"{_number(info.get('documents'))} documents, {_number(info.get('danmaku'))} danmaku, "
                     f"sha256 `{info.get('sha256')}`"))
    settings = corpus.get("settings") or {}
    if settings:
        rows.append(("export settings", ", ".join(f"{k}={v}" for k, v in settings.items()
                                                   if k in ("eval_fraction", "min_danmaku_per_doc",
                                                            "collapse_repeats", "max_chars"))))
    lines += _table([(k, _number(v)) for k, v in rows if v is not None])
    return lines + [""]


def _recipe_section(facts: CardFacts) -> list[str]:
    lines = ["## Training recipe", ""]
    if facts.settings is None:
        lines.append("Not recorded (the export was not made from a `danmaku pretrain train` run).")
        return lines + [""]
    s = facts.settings
    warmup = s.get("warmup_steps")
    rows = [("objective", "masked LM + next sentence prediction (Google's `run_pretraining.py`)"),
            ("steps", s.get("steps")), ("batch size (instances per step)", s.get("batch_size")),
            ("peak learning rate", s.get("learning_rate")),
            ("warm-up steps", warmup if warmup is not None else "10 % of the steps"),
            ("optimizer", f"{s.get('optimizer')} (weight decay {s.get('weight_decay')}, clip norm "
                          f"{s.get('clip_norm')})"), ("seed", s.get("seed")),
            ("exported step", facts.step)]
    if facts.instances and facts.instances.get("options"):
        o = facts.instances["options"]
        rows += [("sequence length", o.get("max_seq_length")),
                 ("masked positions per sequence", o.get("max_predictions_per_seq")),
                 ("masked share", o.get("masked_lm_prob")), ("dupe factor", o.get("dupe_factor"))]
        for split, stats in sorted((facts.instances.get("splits") or {}).items()):
            rows.append((f"{split} instances", f"{_number(stats.get('instances'))} from "
                         f"{_number(stats.get('documents'))} documents, "
                         f"{_number(stats.get('tokens'))} tokens"))
    lines += _table([(k, _number(v)) for k, v in rows if v is not None])
    return lines + [""]


def _evaluation_section(facts: CardFacts) -> list[str]:
    from danmaku.pretrain.evaluate import table

    lines = ["## Evaluation", ""]
    if facts.evaluation is None:
        lines.append(f"The study's four pretraining metrics: {facts.evaluation_note}.")
    else:
        lines.append("The study's four pretraining metrics (Google's `run_pretraining.py` definitions), "
                     f"measured on this model at export, {facts.eval_batches}:")
        lines += ["", table(facts.evaluation, facts.name)]
    lines.append("")
    lines.append("### Meme score")
    lines.append("")
    if facts.meme is None:
        lines.append(f"Not measured ({facts.meme_note}).")
    else:
        m = facts.meme
        lines.append(f"Group mean reciprocal rank of the study's {m['candidates']} community phrases "
                     f"(`danmaku embed score`: {m['groups']} groups of phrases the community links, "
                     f"{m['queries']} queries; REDUCE_MEAN of the last layer, max_seq_len "
                     f"{MEME_MAX_SEQ_LEN}): "
                     f"**{m['mrr']:.3f}** (random ranking: {m['chance']:.3f}; 1.0 = every phrase's nearest "
                     "neighbour is a group mate).")
    return lines + [""]


def _usage_section(facts: CardFacts) -> list[str]:
    name = facts.name
    lines = ["## Usage", ""]
    if facts.fmt == "sentence-transformers":
        lines += ["```python", "from sentence_transformers import SentenceTransformer", "",
                  f'model = SentenceTransformer("{name}")',
                  'vectors = model.encode(["阿夸", "晚安"])  # REDUCE_MEAN, max_seq_length '
                  f'{facts.max_seq_length}', "```", "",
                  "The same vectors (within 1e-5) as `danmaku embed encode -m DIR` with its defaults.", ""]
    elif facts.fmt == "hf":
        lines += ["```python",
                  "from transformers import AutoModel, AutoModelForPreTraining, AutoTokenizer", "",
                  f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
                  f'model = AutoModel.from_pretrained("{name}")            # encoder (heads ignored)',
                  f'heads = AutoModelForPreTraining.from_pretrained("{name}")  # MLM + NSP heads', "```", "",
                  "Sentence vectors as the study computed them: `danmaku embed encode -m DIR` "
                  "(REDUCE_MEAN over `[CLS]`, the word pieces and `[SEP]`).", ""]
    else:
        lines += ["```bash",
                  f"bert-serving-start -model_dir chinese_L-12_H-768_A-12 -tuned_model_dir {name} "
                  f"-ckpt_name model.ckpt-{facts.step or 0}",
                  f"danmaku embed encode -m {name} -i texts.txt -o vectors.npy", "```", "",
                  "A Google TF1 checkpoint (`model.ckpt-N`, `bert_config.json`, `vocab.txt`) with Google's "
                  "variable names: Google's `run_pretraining.py`, bert-as-service and checkpoint converters "
                  "read it.", ""]
    return lines


TERMS = """## Intended use and limitations

Meant for research on Chinese live-streaming and video comments (danmaku) of
Bilibili's vtuber community: sentence embeddings, similarity and clustering of
community phrases, and fine-tuning for classifiers of such comments. Danmaku are
short, informal, full of memes, kaomoji and in-jokes; the model knows that
register and is not a general-purpose Chinese model. It reproduces the language
of the community it was trained on, including its slang, jokes and any rude or
biased comments the corpus held; it is not meant to judge people or to generate
text shown to them unreviewed.

## Data and terms

Danmaku are the words of the Bilibili users who wrote them. The corpus holds
only their text, grouped by video or broadcast; viewers' ids (sender hashes,
user ids, names) are never stored in the corpus and are never part of an export
-- this folder holds model weights, a configuration, a vocabulary and this card,
no corpus text. A model can still memorise and repeat frequent phrases. Respect
Bilibili's terms and the authors' rights when you use the model or what it
produces; the license above covers the weights as far as the base model's
license (Google's BERT: Apache-2.0) allows, not the danmaku themselves.
"""


def render(facts: CardFacts) -> str:
    """The card's Markdown (front matter included) for ``facts``."""
    a = facts.architecture
    fmt_name = {"google": "Google TF1 checkpoint", "hf": "Hugging Face transformers (BertForPreTraining)",
                "sentence-transformers": "sentence-transformers"}[facts.fmt]
    what = ("continued-pretrained from the base model below" if facts.init_checkpoint
            else "trained from scratch" if facts.from_run else "pretrained")
    lines = [f"# {facts.name}", "",
             f"A Chinese BERT (L{a['layers']} H{a['hidden']} A{a['heads']}, {a['parameters'] / 1e6:.1f} M "
             f"parameters) {what} on Bilibili vtuber danmaku with masked LM and next-sentence "
             f"prediction, exported by danmaku {__version__} as a {fmt_name}.", "",
             "## Base model", ""]
    if facts.init_checkpoint:
        hub = f" (`{facts.base_model}` on the Hugging Face hub)" if facts.base_model else ""
        lines.append(f"Training continued from `{Path(facts.init_checkpoint).name}`{hub}, as the run "
                     f"recorded it (`{facts.init_checkpoint}`).")
    elif facts.from_run:
        lines.append("None: the run trained this model from random initial weights.")
    elif facts.base_model:
        lines.append(f"`{facts.base_model}`.")
    else:
        lines.append(f"Not recorded; loaded from {facts.source}.")
    lines.append("")
    for section in (_corpus_section, _recipe_section, _evaluation_section, _usage_section):
        lines += section(facts)
    lines.append(TERMS)
    lines += ["## Provenance", "", f"- loaded from: {facts.source}",
              f"- architecture: vocabulary {a['vocab_size']:,} word pieces, {a['max_positions']} positions, "
              f"feed-forward width {a['intermediate']}"]
    lines += [f"- note: {note}" for note in facts.notes]
    return front_matter(facts) + "\n" + "\n".join(lines).rstrip() + "\n"


def write_card(out_dir: str | Path, facts: CardFacts) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render(facts), encoding="utf-8")
    return path
