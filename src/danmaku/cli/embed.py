"""``danmaku embed ...``: sentence vectors, the meme picture, neighbours, a score, a service.

Each command parses options, loads the model(s) through ``danmaku.embed.models`` (i.e.
``danmaku.pretrain.loading.load_bert``) and calls a library function; user errors are
one red line and exit code 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.table import Table

from danmaku.cli.console import console, progress_bar
from danmaku.embed.encoder import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SEQ_LEN, Encoder, EncoderSettings
from danmaku.embed.models import ModelError, ModelSpec, load_encoder, parse_model_spec
from danmaku.embed.pooling import Pooling
from danmaku.embed.texts import DEFAULT_PHRASES, EmptyLineError, LineCounts, iter_texts, read_phrases

embed_app = typer.Typer(
    help="Sentence embeddings (bert-as-service's poolings), the meme picture, neighbours, a score, "
    "an HTTP service.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m",
        help="Google model dir, checkpoint prefix (DIR/model.ckpt-N), danmaku pretrain export (Google or HF) "
        "or run dir.",
    ),
]
ModelsOption = Annotated[
    list[str],
    typer.Option(
        "--model", "-m",
        help="NAME=MODEL (repeat to compare, e.g. base=chinese_L-12_H-768_A-12 "
        "tuned=run/model.ckpt-12000); a bare MODEL is named after its directory.",
    ),
]
TunedOption = Annotated[
    Path | None,
    typer.Option("--tuned-model-dir", help="Weights from here, config and vocab from --model "
                 "(bert-as-service's -tuned_model_dir)."),
]
CkptOption = Annotated[
    str | None,
    typer.Option("--ckpt-name", help="Checkpoint to load, e.g. model.ckpt-12000 (bert-as-service's "
                 "-ckpt_name); default bert_model.ckpt or the newest."),
]
PoolingOption = Annotated[
    Pooling,
    typer.Option("--pooling", "-p", case_sensitive=False,
                 help="bert-as-service pooling strategy (REDUCE_MEAN averages [CLS], tokens and [SEP])."),
]
LayerOption = Annotated[
    list[str],
    typer.Option("--pooling-layer", "-l",
                 help="Encoder layer(s) to pool, -1 = last; repeat or comma-separate to concatenate "
                 "(e.g. -l -4,-3,-2,-1)."),
]
MaxSeqOption = Annotated[
    int,
    typer.Option("--max-seq-len", min=2,
                 help="Tokens per text counting [CLS] and [SEP]; longer texts are truncated."),
]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Texts per model call.")]
LowerOption = Annotated[
    bool,
    typer.Option("--do-lower-case/--no-lower-case", help="Google's tokenizer flag (Chinese BERT: lower)."),
]
PhrasesOption = Annotated[
    Path,
    typer.Option("--phrases", "--among",
                 help="Phrases, one per line (default: the study's 92 meme phrases)."),
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/] {message}")
    return typer.Exit(1)


def _layers(values: list[str] | None) -> tuple[int, ...]:
    out = []
    for value in values or ["-1"]:
        for part in value.split(","):
            try:
                out.append(int(part))
            except ValueError as err:
                raise typer.BadParameter(
                    f"{part!r} is not a layer number", param_hint="--pooling-layer"
                ) from err
    return tuple(out)


def _settings(
    pooling: Pooling, layers: list[str] | None, max_seq_len: int, batch_size: int
) -> EncoderSettings:
    return EncoderSettings(
        pooling=pooling, layers=_layers(layers), max_seq_len=max_seq_len, batch_size=batch_size
    )


def _load(model: str, settings: EncoderSettings, *, tuned: Path | None = None, ckpt: str | None = None,
          lower: bool = True) -> Encoder:
    with console.status(f"loading {model}"):
        try:
            encoder, source = load_encoder(
                model, settings, ckpt_name=ckpt, tuned_dir=tuned, do_lower_case=lower
            )
        except ModelError as err:
            raise _fail(str(err)) from err
    console.print(f"[dim]model: {source}[/]")
    return encoder


def _specs(models: list[str]) -> list[ModelSpec]:
    try:
        specs = [parse_model_spec(m) for m in models]
    except ModelError as err:
        raise _fail(str(err)) from err
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise _fail(f"model names must differ, got {names}; use NAME=MODEL")
    return specs


def _phrases(path: Path) -> list[str]:
    try:
        phrases = read_phrases(path)
    except FileNotFoundError as err:
        raise _fail(str(err)) from err
    if not phrases:
        raise _fail(f"{path} holds no phrases")
    return phrases


def _encode_phrases(encoder: Encoder, phrases: list[str], label: str):
    if encoder.settings.pooling.token_level:
        raise _fail("--pooling NONE gives token vectors; this command needs one vector per phrase")
    with progress_bar(transient=True) as progress:
        task = progress.add_task(f"encode {label}", total=len(phrases), detail="")
        return encoder.encode(phrases, on_batch=lambda n: progress.advance(task, n))


@contextmanager
def _open_input(path: str) -> Iterator[tuple[TextIO, int | None]]:
    """The input stream and its line count when it is a file (for the progress bar)."""
    if path == "-":
        yield sys.stdin, None
        return
    file = Path(path)
    if not file.is_file():
        raise _fail(f"input not found: {file}")
    with open(file, "rb") as raw:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: raw.read(1 << 20), b""))
    with open(file, encoding="utf-8", errors="replace") as handle:
        yield handle, total


@embed_app.command("encode")
def encode_cmd(
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy, float32, shape (lines, dim) "
                                      "or (lines, max_seq_len, dim) for NONE.")],
    input_: Annotated[
        str, typer.Option("--input", "-i", help="Text file, one text per line, or - for stdin.")
    ] = "-",
    pooling: PoolingOption = Pooling.REDUCE_MEAN,
    pooling_layer: LayerOption = None,  # type: ignore[assignment]
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ_LEN,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    tuned_model_dir: TunedOption = None,
    ckpt_name: CkptOption = None,
    do_lower_case: LowerOption = True,
    strict: Annotated[bool, typer.Option("--strict", help="An empty line is an error (default: skipped, "
                                         "counted and reported).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Keep the rows already in --out and continue "
                                         "after them.")] = False,
) -> None:
    """One vector per non-empty input line, written to a .npy (streamed; resumable).

    Example: danmaku embed encode -m chinese_L-12_H-768_A-12 --tuned-model-dir run
    --ckpt-name model.ckpt-12000 -i danmaku.txt -o vectors.npy
    """
    from danmaku.embed.npy_stream import NpyAppender
    from danmaku.embed.stream import encode_stream

    settings = _settings(pooling, pooling_layer, max_seq_len, batch_size)
    counts = LineCounts()
    with _open_input(input_) as (handle, total):
        encoder = _load(model, settings, tuned=tuned_model_dir, ckpt=ckpt_name, lower=do_lower_case)
        try:
            writer = NpyAppender(out, encoder.output_shape, resume=resume)
        except (OSError, ValueError) as err:
            raise _fail(str(err)) from err
        with writer, progress_bar() as progress:
            task = progress.add_task("encode", total=total, detail="")
            texts = (text for _, text in iter_texts(handle, counts, strict=strict))
            try:
                stats = encode_stream(encoder, texts, writer, on_rows=lambda n: progress.advance(task, n))
            except EmptyLineError as err:
                raise _fail(f"{err}; {writer.rows} rows before it are in {out}") from err
            progress.update(task, completed=counts.read)  # empty lines were read, not encoded
    if counts.empty:
        console.print(f"[yellow]warning:[/] skipped {counts.empty} empty line(s) ({counts.empty_summary()}); "
                      "output rows follow the non-empty lines")
    table = Table(title="danmaku embed encode")
    for column in ("lines read", "encoded", "already in --out", "empty skipped", "truncated"):
        table.add_column(column, justify="right")
    table.add_row(f"{counts.read:,}", f"{stats.encoded:,}", f"{stats.resumed:,}", f"{counts.empty:,}",
                  f"{stats.truncated:,}")
    console.print(table)
    console.print(f"wrote {out}: float32 {(writer.rows, *encoder.output_shape)}")
    if stats.truncated:
        console.print(f"{stats.truncated} text(s) were longer than --max-seq-len {max_seq_len} tokens "
                      "and were truncated.")


@embed_app.command("plot")
def plot_cmd(
    model: ModelsOption,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Image file (.png, .svg, .pdf).")
    ] = Path("meme.png"),
    phrases: PhrasesOption = DEFAULT_PHRASES,
    pooling: PoolingOption = Pooling.REDUCE_MEAN,
    pooling_layer: LayerOption = None,  # type: ignore[assignment]
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ_LEN,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    do_lower_case: LowerOption = True,
) -> None:
    """The study's picture: PCA (50) + t-SNE of the phrases, one panel per model.

    Example: danmaku embed plot -m base=chinese_L-12_H-768_A-12 -m tuned=run/model.ckpt-12000 -o meme.png
    """
    from danmaku.embed.fonts import missing_glyphs
    from danmaku.embed.plot import Panel, draw, layout_2d, tsne_perplexity

    specs = _specs(model)
    texts = _phrases(phrases)
    if len(texts) < 3:
        raise _fail(f"{phrases} has {len(texts)} phrases; t-SNE needs at least 3")
    for text, chars in missing_glyphs(texts).items():
        console.print(f"[yellow]warning:[/] the CJK font cannot draw {chars!r} of {text!r}")
    settings = _settings(pooling, pooling_layer, max_seq_len, batch_size)
    panels = []
    for spec in specs:
        encoder = _load(spec.path, settings, lower=do_lower_case)
        vectors = _encode_phrases(encoder, texts, spec.name)
        with console.status(f"PCA + t-SNE ({spec.name})"):
            panels.append(Panel(spec.name, texts, layout_2d(vectors)))
    with console.status("drawing"):
        overlaps = draw(panels, out)
    console.print(f"wrote {out}: {len(texts)} phrases x {len(panels)} model(s), t-SNE perplexity "
                  f"{tsne_perplexity(len(texts)):g}, {overlaps} overlapping label pair(s)")


@embed_app.command("neighbors")
def neighbors_cmd(
    model: ModelOption,
    queries: Annotated[list[str], typer.Argument(help="Phrase(s) to look up.")],
    among: PhrasesOption = DEFAULT_PHRASES,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many neighbours.")] = 10,
    pooling: PoolingOption = Pooling.REDUCE_MEAN,
    pooling_layer: LayerOption = None,  # type: ignore[assignment]
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ_LEN,
    tuned_model_dir: TunedOption = None,
    ckpt_name: CkptOption = None,
    do_lower_case: LowerOption = True,
) -> None:
    """Nearest phrases by cosine similarity.

    Example: danmaku embed neighbors -m run/model.ckpt-12000 阿夸 晚安 -k 5
    """
    from danmaku.embed.neighbors import nearest

    candidates = _phrases(among)
    queries = [q.strip() for q in queries]
    if not all(queries):
        raise _fail("a query is empty")
    encoder = _load(model, _settings(pooling, pooling_layer, max_seq_len, DEFAULT_BATCH_SIZE),
                    tuned=tuned_model_dir, ckpt=ckpt_name, lower=do_lower_case)
    vectors = _encode_phrases(encoder, candidates + queries, "phrases")
    cand_vecs = vectors[: len(candidates)]
    index = {p: i for i, p in enumerate(candidates)}
    for n, query in enumerate(queries):
        table = Table(title=f"nearest to {query!r}")
        for column in ("#", "phrase", "cosine"):
            table.add_column(column, justify="right" if column != "phrase" else "left")
        found = nearest(vectors[len(candidates) + n], cand_vecs, k, exclude=index.get(query))
        for rank, (i, sim) in enumerate(found, start=1):
            table.add_row(str(rank), candidates[i], f"{sim:.4f}")
        console.print(table)


@embed_app.command("score")
def score_cmd(
    model: ModelsOption,
    pairs: Annotated[Path | None, typer.Option("--pairs", "--groups", help="Groups of phrases that belong "
                                               "together, one group per line, members separated by '/' "
                                               "(default: embed/meme_groups.txt).")] = None,
    among: PhrasesOption = DEFAULT_PHRASES,
    pooling: PoolingOption = Pooling.REDUCE_MEAN,
    pooling_layer: LayerOption = None,  # type: ignore[assignment]
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ_LEN,
    do_lower_case: LowerOption = True,
) -> None:
    """Mean reciprocal rank of a group mate among each group member's nearest phrases, per model.

    Example: danmaku embed score -m base=chinese_L-12_H-768_A-12 -m tuned=run/model.ckpt-12000
    """
    from danmaku.embed.score import DEFAULT_GROUPS, group_mrr, read_groups

    specs = _specs(model)
    candidates = _phrases(among)
    try:
        groups = read_groups(pairs or DEFAULT_GROUPS)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from err
    settings = _settings(pooling, pooling_layer, max_seq_len, DEFAULT_BATCH_SIZE)
    scores = {}
    for spec in specs:
        encoder = _load(spec.path, settings, lower=do_lower_case)
        try:
            scores[spec.name] = group_mrr(candidates, _encode_phrases(encoder, candidates, spec.name), groups)
        except ValueError as err:
            raise _fail(str(err)) from err
    first = next(iter(scores.values()))
    if first.missing:
        console.print(f"[yellow]warning:[/] not among the {len(candidates)} candidates, left out: "
                      + ", ".join(first.missing))
    for skipped in first.skipped:
        console.print(f"[yellow]warning:[/] group {' / '.join(skipped)} has < 2 candidates: skipped")
    table = Table(title=f"group MRR ({first.queries} queries, {len(candidates)} candidates)")
    table.add_column("group")
    for name in scores:
        table.add_column(name, justify="right")
    for i, group in enumerate(first.groups):
        table.add_row(" / ".join(group.members), *(f"{s.groups[i].mrr:.3f}" for s in scores.values()))
    table.add_row("[bold]MRR[/]", *(f"[bold]{s.mrr:.3f}[/]" for s in scores.values()))
    table.add_row("chance", *(f"{s.chance:.3f}" for s in scores.values()))
    console.print(table)
    for name, s in scores.items():
        typer.echo(f"{name}\tMRR\t{s.mrr:.4f}")


@embed_app.command("serve")
def serve_cmd(
    model: ModelOption,
    host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 = any free one).")] = 8125,
    pooling: PoolingOption = Pooling.REDUCE_MEAN,
    pooling_layer: LayerOption = None,  # type: ignore[assignment]
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ_LEN,
    batch_size: BatchOption = DEFAULT_BATCH_SIZE,
    tuned_model_dir: TunedOption = None,
    ckpt_name: CkptOption = None,
    do_lower_case: LowerOption = True,
    model_name: Annotated[str | None, typer.Option(
        "--model-name", help="Name clients pass as `model` to /v1/embeddings (default: --model's last "
        "path component).")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="DANMAKU_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on every route but /health (prefer the environment "
        "variable: a command line is visible to other users).")] = None,
    max_texts: Annotated[int, typer.Option(min=1, help="Texts per request (more: 413).")] = 256,
    max_text_chars: Annotated[int, typer.Option(min=1, help="Characters per text (more: 413).")] = 10_000,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Request body size (more: 413).")] = 4 << 20,
    max_batch_texts: Annotated[int, typer.Option(min=1, help="Texts merged into one model call.")] = 256,
    max_batch_tokens: Annotated[int | None, typer.Option(
        min=0, help="Tokens merged into one model call ([CLS]/[SEP] included; a longer request runs alone); "
        "default --batch-size x --max-seq-len; 0 = bounded by texts only.")] = None,
    max_queued_tokens: Annotated[int, typer.Option(
        min=0, help="Tokens allowed to wait for the model; beyond it requests get 503 + Retry-After at once "
        "(0 = no bound).")] = 65_536,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long the first request waits for "
                                                 "others to join its batch.")] = 5.0,
) -> None:
    """HTTP service: bert-as-service's POST /encode, OpenAI's POST /v1/embeddings, POST /tokenize,
    GET /health, /info, /status, /metrics (Prometheus).

    Example: danmaku embed serve -m run/model.ckpt-12000 --port 8125, then
    curl -s localhost:8125/v1/embeddings -d '{"model": "model.ckpt-12000", "input": ["阿夸", "晚安"]}'
    """
    from danmaku.embed.service import BatchPolicy, Limits, is_loopback, make_app, serve

    settings = _settings(pooling, pooling_layer, max_seq_len, batch_size)
    batch_tokens = batch_size * max_seq_len if max_batch_tokens is None else max_batch_tokens or None
    try:
        policy = BatchPolicy(max_batch_texts=max_batch_texts, max_batch_tokens=batch_tokens,
                             max_wait_ms=batch_wait_ms, max_queued_tokens=max_queued_tokens or None)
    except ValueError as err:
        raise _fail(str(err)) from err
    with console.status(f"loading {model}"):
        try:
            encoder, source = load_encoder(model, settings, ckpt_name=ckpt_name, tuned_dir=tuned_model_dir,
                                           do_lower_case=do_lower_case)
        except ModelError as err:
            raise _fail(str(err)) from err
    console.print(f"[dim]model: {source}[/]")
    if not is_loopback(host) and api_key is None:
        console.print(f"[yellow]warning:[/] binding {host} without an API key: anyone who can reach this "
                      "port can use the service; set DANMAKU_API_KEY (or --api-key) to require one")
    name = model_name or Path(model.rstrip("/")).name or "danmaku"
    try:
        app = make_app(
            encoder, model=name, source=source, api_key=api_key, policy=policy,
            limits=Limits(max_texts=max_texts, max_text_chars=max_text_chars, max_body_bytes=max_body_bytes),
        )
    except ValueError as err:
        raise _fail(f"--api-key / DANMAKU_API_KEY: {err}") from err

    def ready(url: str) -> None:
        auth = "API key required" if api_key else "no API key"
        console.print(f"serving on {url} as model {name!r} (POST /encode, POST /v1/embeddings, POST "
                      f"/tokenize, GET /health /info /status /metrics; {auth}); Ctrl-C stops")

    try:
        asyncio.run(serve(app, host, port, on_ready=ready))
    except OSError as err:
        raise _fail(f"cannot serve on {host}:{port}: {err}") from err
    console.print("stopped")
