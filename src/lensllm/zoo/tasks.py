"""The zoo's downstream task: technical text the prose-pretrained candidates never saw.

The Python language reference shipped with CPython (or Debian's Python manual), cut
into paragraph chunks, shuffled with the seed and written as JSON lines with a
``.meta.json`` sidecar that records the source, counts and a SHA-256.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from lensllm.errors import InputError
from lensllm.fileio import (
    JsonLineError,
    atomic_write_text,
    canonical_json,
    iter_jsonl,
    sha256_text,
)
from lensllm.zoo import corpora
from lensllm.zoo.cache import read_json, write_json
from lensllm.zoo.recipes import derive_seed

TASK_FORMAT_VERSION = 1


def _task_path(cache_dir: Path, source: str, min_chars: int, max_chars: int,
               test_examples: int, seed: int) -> Path:
    return (Path(cache_dir) / "tasks" /
            f"python-docs-{source}-{min_chars}-{max_chars}c-test{test_examples}-seed{seed}.jsonl")


def build_task(cache_dir: str | os.PathLike[str], *, source: str = corpora.PYDOC_TOPICS,
               info_path: str | os.PathLike[str] | None = None, min_chars: int = 48,
               max_chars: int = 160, test_examples: int = 256, seed: int = 0) -> Path:
    """Write the technical downstream task as JSON lines and return the file's path.

    ``source`` is ``"pydoc-topics"`` (the language reference in every CPython) or
    ``"python-info"`` (Debian's Texinfo manual, ``apt-get install python3-doc``, many
    times larger; ``info_path`` overrides where it is looked for).  Sections are cut
    into chunks of whole paragraphs of ``min_chars``..``max_chars`` characters --
    characters, not tokens, so the task is the same for candidates with different
    tokenizers.  Text the documentation repeats is kept once.  Chunks are shuffled with
    ``seed``; the first ``test_examples`` are marked ``"split": "test"``, the rest
    ``"train"``.

    Each line is ``{"id", "text", "split", "section"}``; a ``.meta.json`` file next to
    it records the source, counts and a SHA-256.  An existing, intact file is reused.
    """
    import random

    if source not in corpora.TASK_SOURCES:
        raise InputError(
            f"unknown task source {source!r}; choose one of {', '.join(corpora.TASK_SOURCES)}"
        )
    if info_path is not None and source != corpora.PYTHON_INFO:
        raise InputError(f"info_path only applies to source={corpora.PYTHON_INFO!r}")
    if isinstance(test_examples, bool) or test_examples < 1:
        raise InputError(f"test_examples must be a positive integer, got {test_examples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    path = _task_path(Path(cache_dir), source, min_chars, max_chars, test_examples, seed)
    meta_path = path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")

    if source == corpora.PYDOC_TOPICS:
        sections = corpora.pydoc_topic_sections()
        origin = f"pydoc_data.topics of Python {platform.python_version()}"
    else:
        info_file = corpora.find_python_info() if info_path is None else Path(info_path)
        sections = corpora.python_info_sections(info_file)
        origin = str(info_file)
    examples = corpora.task_chunks(sections, min_chars, max_chars)
    if len(examples) <= test_examples:
        raise InputError(
            f"{source} gives only {len(examples)} examples of {min_chars}-{max_chars} "
            f"characters, not more than test_examples={test_examples}; lower test_examples "
            f"or min_chars"
        )
    random.Random(derive_seed(seed, "task", source)).shuffle(examples)
    lines = [
        canonical_json({"id": index, "text": text,
                         "split": "test" if index < test_examples else "train",
                         "section": title})
        for index, (title, text) in enumerate(examples)
    ]
    content = "\n".join(lines) + "\n"
    digest = sha256_text(content)
    meta = read_json(meta_path)
    if (meta is not None and meta.get("sha256") == digest and path.is_file()
            and corpora.sha256_file(path) == digest):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, content)
    write_json(meta_path, {
        "format_version": TASK_FORMAT_VERSION,
        "name": f"python-docs ({source})",
        "source": source,
        "origin": origin,
        "min_chars": min_chars,
        "max_chars": max_chars,
        "seed": seed,
        "examples": len(lines),
        "train_examples": len(lines) - test_examples,
        "test_examples": test_examples,
        "sha256": digest,
        "python": sys.version.split()[0],
    })
    return path


def read_task(path: str | os.PathLike[str], split: str | None = None) -> list[str]:
    """The example texts of a task file written by :func:`build_task`, in file order.

    ``split`` selects ``"train"`` or ``"test"`` examples; ``None`` returns all.
    """
    if split not in (None, "train", "test"):
        raise InputError(f"split must be 'train', 'test' or None, got {split!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"task file {path} does not exist; create it with build_task()")
    texts = []
    with open(path, encoding="utf-8") as handle:
        try:
            for line_number, item in iter_jsonl(handle):
                try:
                    text, item_split = item["text"], item.get("split")
                except (KeyError, TypeError, AttributeError) as error:
                    raise _not_an_example(path, line_number, error) from error
                if split is None or item_split == split:
                    texts.append(text)
        except JsonLineError as error:
            raise _not_an_example(path, error.number, error.error) from error
    return texts


def _not_an_example(path: Path, line_number: int, error: Exception) -> InputError:
    return InputError(f"{path}:{line_number} is not a task example ({error}); rebuild it "
                      f"with build_task()")
