"""Test helpers: place a local checkpoint into a Hugging Face cache in the hub's own
layout (``models--org--name/{refs/main, snapshots/<commit>/..., blobs/<sha256>}``), the
way ``huggingface_hub`` leaves a downloaded model, so that Hub ids resolve offline; and
write the micro task as a dataset folder (``train.jsonl``, ``test.jsonl``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def place_model(checkpoint: Path, hf_home: Path, repo_id: str, commit: str = COMMIT,
                branch: str = "main") -> Path:
    """Copy ``checkpoint``'s files into ``hf_home/hub`` as ``repo_id`` at ``commit`` (the
    branch ``branch`` pointing at it); returns the snapshot folder."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(p for p in checkpoint.iterdir() if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        # the hub's snapshots hold relative symlinks into blobs/
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return snapshot


def task_rows(micro: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(micro["task"]).read_text("utf-8").splitlines()]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")


def docs_folder(micro: dict[str, Any], folder: Path) -> Path:
    """The micro task as a dataset folder: train.jsonl and test.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = task_rows(micro)
    for split in ("train", "test"):
        jsonl(folder / f"{split}.jsonl",
               [{"text": r["text"]} for r in rows if r["split"] == split])
    return folder
