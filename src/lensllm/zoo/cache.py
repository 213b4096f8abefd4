"""How the zoo's cache folder is written: folders staged aside and renamed into place.

Every folder and file is written under a temporary name and renamed into place, so
an interrupted build leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lensllm.fileio import atomic_write_text


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON through :func:`lensllm.fileio.atomic_write_text`."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder next to ``final``, removed unless it was published."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: Path, final: Path) -> None:
    """Move a finished folder into place atomically, replacing a stale one.

    ``os.rename`` onto an existing non-empty folder fails, so a stale ``final`` is
    first renamed aside (atomic) and deleted afterwards.
    """
    if final.exists():
        aside = final.with_name(f".{final.name}.{uuid.uuid4().hex}.stale")
        os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(staging, final)
