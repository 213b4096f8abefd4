"""Shared file and hashing helpers: atomic writes, canonical-JSON hashes, JSON lines.

Base layer: the standard library and :mod:`lensllm.errors` only, so every layer may
use it.  Each helper exists once here; the hashes they compute key results stores,
task caches and zoo manifests, so their output must never change.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "JsonLineError",
    "atomic_write_bytes",
    "atomic_write_text",
    "canonical_json",
    "iter_jsonl",
    "sha256_text",
    "short_hash",
]


def canonical_json(obj: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """``obj`` as JSON with sorted keys, no spaces and ASCII escapes: one text per value.

    ``default`` converts values JSON cannot hold (``str`` for paths, say).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=default)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def short_hash(obj: Any, digits: int = 16, *,
               default: Callable[[Any], Any] | None = None) -> str:
    """The first ``digits`` hex digits of the SHA-256 of ``canonical_json(obj)``."""
    return sha256_text(canonical_json(obj, default=default))[:digits]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one whole.

    The bytes go to a hidden temporary file in the same folder (``.NAME.HEX.tmp``),
    which is flushed to disk and renamed over ``path``; the folder is then synced
    so the rename itself survives a power cut.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for syncing elsewhere
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class JsonLineError(ValueError):
    """A line of JSON lines that does not parse: its number and the decoder's error."""

    def __init__(self, number: int, error: json.JSONDecodeError) -> None:
        super().__init__(f"line {number}: {error}")
        self.number = number
        self.error = error


def iter_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of JSON lines, numbered from 1.

    ``lines`` is an open text file or a list of lines.  A line that is not JSON raises
    :class:`JsonLineError`; callers turn it into a message that names their file.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JsonLineError(number, exc) from None
        yield number, value
