"""``manifest.json``: what a corpus directory holds, and the version a paper cites.

The version is derived from the corpus bytes alone, so anyone holding the files
can check a citation with ``sha256sum``:

* one text file: the first 12 hex digits of its sha256
  (``sha256sum danmaku_text_pure.txt | cut -c1-12``);
* with an eval file: the first 12 hex digits of the sha256 of the
  ``sha256sum`` listing of both files in name order
  (``sha256sum danmaku_text_pure.eval.txt danmaku_text_pure.txt | sha256sum | cut -c1-12``).

Everything in the manifest except ``provenance`` (creation time, danmaku version,
store URL, vocab path, seconds) is a function of the store and the settings, so
two exports of the same store with the same settings give the same manifest
apart from ``provenance`` -- on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from danmaku import __version__
from danmaku.artifacts import CorpusManifest, sha256_file

MANIFEST = CorpusManifest.NAME
FORMAT = CorpusManifest.FORMAT
VERSION_CHARS = 12
GOOGLE_CHINESE_VOCAB_SHA256 = "d5f3341d882677b716baf3299a36600d5d45fb8f2790fb394c4ef2429161a11c"
VERSION_RULE = (
    "first 12 hex of sha256 of the text file; with an eval file, of the `sha256sum` "
    "listing of both text files in name order"
)


def corpus_version(file_sha256: dict[str, str]) -> str:
    """The version of a corpus whose text files have these sha256s (see module doc)."""
    if not file_sha256:
        raise ValueError("a corpus has at least one file")
    if len(file_sha256) == 1:
        return next(iter(file_sha256.values()))[:VERSION_CHARS]
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(file_sha256.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()[:VERSION_CHARS]


def build_manifest(
    *,
    name: str | None,
    files: dict[str, dict[str, Any]],
    selection: dict[str, Any],
    options: dict[str, Any],
    counts: dict[str, Any],
    vocab_path: Path,
    vocab_sha256: str,
    vocab_tokens: int,
    store: str,
    seconds: float,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": corpus_version({n: f["sha256"] for n, f in files.items()}),
        "version_rule": VERSION_RULE,
        "name": name,
        "files": files,
        "vocab": {
            "sha256": vocab_sha256,
            "tokens": vocab_tokens,
            "google_chinese_bert": vocab_sha256 == GOOGLE_CHINESE_VOCAB_SHA256,
        },
        "selection": selection,
        "settings": options,
        "counts": counts,
        "provenance": {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "danmaku_version": __version__,
            "store": store,
            "vocab_path": str(vocab_path),
            "seconds": round(seconds, 3),
        },
    }


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without ``provenance`` and ``name``: equal for equal store + settings."""
    return {k: v for k, v in manifest.items() if k not in ("provenance", "name")}


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {n: f["sha256"] for n, f in a["files"].items()} == {n: f["sha256"] for n, f in b["files"].items()}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    return CorpusManifest.write(directory, manifest)


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    return CorpusManifest.read(directory)


def list_corpora(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished corpus directly below ``root``, oldest first (staging dirs skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            manifest = read_manifest(path)
            if manifest is not None:
                found.append((path, manifest))
    found.sort(key=lambda item: (item[1].get("provenance", {}).get("created_at", ""), item[0].name))
    return found


def find_corpus(root: str | Path, ref: str) -> tuple[Path, dict[str, Any]]:
    """The corpus named by a directory path, a version (or a prefix of 4+ hex), or a --name."""
    direct = Path(ref)
    if direct.is_dir() and (manifest := read_manifest(direct)) is not None:
        return direct, manifest
    corpora = list_corpora(root)
    matches = [(p, m) for p, m in corpora if m["version"] == ref or m.get("name") == ref or p.name == ref]
    if not matches and len(ref) >= 4:
        matches = [(p, m) for p, m in corpora if m["version"].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no corpus {ref!r} under {root}")
    raise LookupError(f"{ref!r} is ambiguous under {root}: " + ", ".join(str(p) for p, _ in matches))


def verify(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    """Files whose size or sha256 differs from the manifest (empty: all intact)."""
    problems = []
    for name, info in manifest["files"].items():
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            problems.append(f"{name}: content differs from the manifest")
    return problems
