"""The demo's report: ``report.md`` (beside its pictures) and a self-contained ``report.html``.

The HTML inlines every picture as a data URI, so the one file can be mailed or
opened anywhere; the Markdown links the PNG files next to it.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRICS = ("masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy", "next_sentence_loss")


def metrics_table(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    """The study's four-metric table (Markdown), one row per (label, metrics); a missing metric is "-"."""
    lines = ["| model, data | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(f"{values[m]:.6g}" if m in values else "-"
                                                  for m in METRICS) + " |")
    return "\n".join(lines)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(history: Sequence[dict[str, float]], evals: Sequence[dict[str, Any]], out: Path) -> Path:
    """Loss and MLM accuracy against step: training log and periodic eval points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [h["step"] for h in history]
    # The masked-LM loss on both sides: the training loss leaves out the next-sentence
    # term when the recipe's nsp_weight is 0, so it is not comparable with eval's.
    loss_ax.plot(steps, [h["masked_lm_loss"] for h in history], label="train (running)", color="tab:blue")
    acc_ax.plot(steps, [h["masked_lm_accuracy"] for h in history], label="train (running)",
                color="tab:blue")
    for split, color in (("train", "tab:green"), ("eval", "tab:red")):
        points = [(e["step"], e[split]) for e in evals if split in e]
        if points:
            xs = [p[0] for p in points]
            loss_ax.plot(xs, [p[1]["masked_lm_loss"] for p in points],
                         "o-", color=color, label=f"{split} instances (held-out eval)" if split == "eval"
                         else f"{split} instances")
            acc_ax.plot(xs, [p[1]["masked_lm_accuracy"] for p in points], "o-", color=color,
                        label=f"{split} instances")
    loss_ax.set(xlabel="step", ylabel="masked_lm_loss", title="masked LM loss")
    acc_ax.set(xlabel="step", ylabel="masked_lm_accuracy", title="masked LM accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_report(directory: Path, markdown: str, title: str) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (pictures inlined) into ``directory``."""
    md_path = directory / "report.md"
    md_path.write_text(markdown, encoding="utf-8")
    html_path = directory / "report.html"
    html_path.write_text(markdown_to_html(markdown, directory, title), encoding="utf-8")
    return md_path, html_path


_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def markdown_to_html(markdown: str, directory: Path, title: str) -> str:
    """The small Markdown subset the report uses: headings, tables, lists, images, code, text."""
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            header, data = rows[0], [r for r in rows[2:]]
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                  for r in data) + "</table>")
            continue
        elif line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            body.append("<pre>" + html.escape("\n".join(block)) + "</pre>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif (match := _IMAGE.match(line)) is not None:
            data = base64.b64encode((directory / match["src"]).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(match["alt"])}" '
                        f'src="data:image/png;base64,{data}" style="max-width:100%"></p>')
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f4f4f4}pre{background:#f6f6f6;padding:1em;overflow-x:auto}")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
