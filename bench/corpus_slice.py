"""A real ``danmaku_text_pure.txt`` slice from ../shared/data, for benchmarks and fixtures.

Builds Google's pretraining-data format (one danmaku per line, a blank line
between documents) from the public video-danmaku CSVs: one document per video,
danmaku in posting order, only those the BERT vocabulary covers (no ``[UNK]``),
inner whitespace runs turned into one space. This mirrors what ``danmaku corpus
export`` produces without depending on it.

    python bench/corpus_slice.py OUT.txt --max-bytes 300000 [--skip-videos 0] [--max-doc-lines N]

tests/fixtures/pretrain_corpus/ was made with:
    python bench/corpus_slice.py danmaku_text_pure.txt --max-bytes 240000 --max-doc-lines 120
    python bench/corpus_slice.py danmaku_text_pure.eval.txt --max-bytes 40000 --skip-videos 6000 \
        --max-doc-lines 120
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from danmaku.importers.parsers import BadLine, parse_video_csv  # noqa: E402
from danmaku.text.tokenizer import UNK, BertTokenizer  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
_SPACE = re.compile(r"\s+")


def video_documents(root: Path = SHARED_DATA / "video_danmaku", tokenizer: BertTokenizer | None = None,
                    skip: int = 0) -> Iterator[list[str]]:
    """Kept danmaku of each video CSV, in a fixed file order, as documents."""
    tokenizer = tokenizer or BertTokenizer(SHARED_DATA / "vocab.txt")
    files = sorted(root.glob("*/*.csv"))[skip:]
    for path in files:
        records = [r for r in parse_video_csv(path.read_bytes()) if not isinstance(r, BadLine)]
        records.sort(key=lambda r: (r[3], r[0]))
        texts = [_SPACE.sub(" ", r[1]).strip() for r in records]
        texts = [t for t in texts if t]
        kept = [t for t, toks in zip(texts, tokenizer.tokenize_batch(texts), strict=True)
                if toks and UNK not in toks]
        if kept:
            yield kept


def write_slice(out: Path, max_bytes: int, skip: int = 0, max_doc_lines: int | None = None) -> int:
    """Write whole documents until ``max_bytes``; returns the number of documents.

    ``max_doc_lines`` keeps only the first danmaku of each video (more, shorter
    documents in a small fixture).
    """
    written = docs = 0
    with open(out, "w", encoding="utf-8") as handle:
        for doc in video_documents(skip=skip):
            doc = doc[:max_doc_lines] if max_doc_lines else doc
            block = "\n".join(doc) + "\n\n"
            size = len(block.encode("utf-8"))
            if written + size > max_bytes:
                if docs:
                    break
                # keep the first document, cut to size
                block = "\n".join(doc[: max(2, len(doc) * max_bytes // size)]) + "\n\n"
            handle.write(block)
            written += len(block.encode("utf-8"))
            docs += 1
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-bytes", type=int, default=300_000)
    parser.add_argument("--skip-videos", type=int, default=0)
    parser.add_argument("--max-doc-lines", type=int, default=None)
    args = parser.parse_args()
    print(write_slice(args.out, args.max_bytes, args.skip_videos, args.max_doc_lines), "documents")


if __name__ == "__main__":
    main()
