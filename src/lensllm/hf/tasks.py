"""Downstream tasks: local data, fixed splits, nested training subsets, tokenisation.

A :class:`Task` is a local dataset of either

* **text** examples (language modelling: the loss covers every token), or
* **pairs** of input and target (the loss covers the target tokens only).

One seeded shuffle of all examples fixes everything: its first ``test_size``
examples are the held-out test split, the next ``val_size`` the validation split
(early stopping), and the rest, in shuffled order, the training pool.  The training
subset of size ``n`` is the first ``n`` examples of the pool, so the subsets of a
task are nested (the 400-example subset contains the 200-example one).  When the
data marks its own splits (a ``split`` column with ``train``/``validation``/``test``,
or a saved ``DatasetDict`` with such splits), the marked test and validation examples
are used as they are and only the missing ones are carved from the shuffled rest.

Tokenisation depends on the candidate's tokenizer and architecture:

* causal LM, text: ``tokens(text) + [eos]``; labels = input ids.
* causal LM, pairs: ``tokens(input) + tokens(target) + [eos]``, the input positions
  labelled ``-100`` so only the target is scored.  Input and target are tokenised
  separately (no separator is inserted: put one in the data if the task needs it)
  so the boundary between them is exact.
* encoder-decoder, pairs: ``tokens(input)`` to the encoder, ``tokens(target) +
  [eos]`` as labels.  Text tasks need a causal LM.

The input side gets the tokenizer's own special tokens (a BOS where the model was
pretrained with one); ``[eos]`` is appended when the tokenizer has an EOS token and
did not already end the sequence with it.  Sequences longer than ``max_length`` are
cut: a text keeps its first ``max_length`` tokens; a causal pair keeps its target
(up to ``max_length - 1`` tokens) and the end of its input, the part nearest the
target; an encoder-decoder pair cuts each side to ``max_length``.

Labels follow the transformers convention: for a causal LM they are *not* shifted
(position ``i``'s label is token ``i``; the model predicts it from positions
``< i``), so position 0 is never scored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lensllm.errors import InputError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

TASK_KINDS = ("text", "pairs")
SPLITS = ("train", "validation", "test")
TXT_UNITS = ("line", "paragraph")
FILE_FORMATS = (".jsonl", ".json", ".csv", ".txt")

# Values of a split column (or DatasetDict split names) and what they mean.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}

# Column names recognised when the caller does not name the columns.
TEXT_FIELDS = ("text", "content", "document")
INPUT_FIELDS = ("input", "source", "prompt", "question", "src", "instruction")
TARGET_FIELDS = ("target", "output", "completion", "answer", "response", "tgt", "summary")

IGNORE_INDEX = -100
# Bump when the token layout changes, so on-disk caches from older code are not reused.
TOKENIZATION_VERSION = 1
_MEMORY_CACHE_ENTRIES = 8
_TOKENIZE_CHUNK = 2048


@dataclass(frozen=True, eq=False)
class Task:
    """A downstream task: its examples and how they are split.

    For a text task ``inputs`` is ``None`` and ``targets`` holds the texts (every
    token is a target); for a pairs task ``inputs[i]`` and ``targets[i]`` form one
    example.  ``split_labels`` (optional, one of ``train``/``validation``/``test`` per
    example) fixes splits given by the data; ``test_size``/``val_size`` then apply
    only to a split the data does not mark.  Build one with :func:`load_task` or
    :meth:`Task.from_examples`.
    """

    name: str
    kind: str
    targets: tuple[str, ...] = field(repr=False)
    inputs: tuple[str, ...] | None = field(default=None, repr=False)
    test_size: int = 200
    val_size: int = 100
    n0: int = 200
    seed: int = 0
    source: str = ""
    split_labels: tuple[str, ...] | None = field(default=None, repr=False)
    _test: np.ndarray = field(init=False, repr=False)
    _validation: np.ndarray = field(init=False, repr=False)
    _pool: np.ndarray = field(init=False, repr=False)
    _content_hash: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.kind not in TASK_KINDS:
            raise InputError(f"{where}: unknown kind {self.kind!r}; use 'text' or 'pairs'")
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.kind == "pairs":
            if self.inputs is None or len(self.inputs) != len(self.targets):
                raise InputError(f"{where}: a pairs task needs one input per target")
            object.__setattr__(self, "inputs", tuple(self.inputs))
        elif self.inputs is not None:
            raise InputError(f"{where}: a text task has no inputs")
        for key in ("test_size", "val_size", "n0", "seed"):
            value = getattr(self, key)
            lowest = 0 if key == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise InputError(f"{where}: {key!r} must be an integer >= {lowest}")
        total = len(self.targets)
        if total == 0:
            origin = f" ({self.source})" if self.source else ""
            raise InputError(f"{where}{origin}: the task has no examples; give a non-empty file")
        order = np.random.default_rng(self.seed).permutation(total)
        if self.split_labels is None:
            labels = None
            rest = order
            marked_test = marked_val = order[:0]
        else:
            labels = tuple(self.split_labels)
            if len(labels) != total:
                raise InputError(f"{where}: 'split_labels' needs one label per example")
            unknown = sorted(set(labels) - set(SPLITS))
            if unknown:
                raise InputError(
                    f"{where}: unknown split label(s) {', '.join(map(repr, unknown))}; use "
                    "train, validation or test"
                )
            object.__setattr__(self, "split_labels", labels)
            label_of = np.asarray(labels)[order]
            marked_test = order[label_of == "test"]
            marked_val = order[label_of == "validation"]
            rest = order[label_of == "train"]
        test, rest = (
            (marked_test, rest)
            if len(marked_test)
            else (rest[: self.test_size], rest[self.test_size :])
        )
        val, pool = (
            (marked_val, rest)
            if len(marked_val)
            else (rest[: self.val_size], rest[self.val_size :])
        )
        if len(pool) == 0:
            raise InputError(
                f"{where}: it has {total} examples, but its {len(test)} test and {len(val)} "
                "validation examples leave none for training; lower test_size/val_size or "
                "add data"
            )
        for key, value in (("_test", test), ("_validation", val), ("_pool", pool)):
            value = np.array(value)
            value.setflags(write=False)
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_content_hash", _hash_examples(self.inputs, self.targets, labels))

    # -- construction --------------------------------------------------------------

    @classmethod
    def from_examples(
        cls,
        name: str,
        examples: Sequence[str] | Sequence[Mapping[str, Any]],
        *,
        kind: str | None = None,
        text_field: str | None = None,
        input_field: str | None = None,
        target_field: str | None = None,
        split_field: str | None = "split",
        test_size: int = 200,
        val_size: int = 100,
        n0: int = 200,
        seed: int = 0,
        source: str = "",
    ) -> Task:
        """A task from in-memory examples: strings (text) or mappings (columns).

        Mappings with a ``split_field`` column (values ``train``, ``validation``,
        ``test`` and aliases of :data:`SPLIT_ALIASES`) keep the splits they mark;
        ``split_field=None`` ignores such a column.
        """
        examples = list(examples)
        settings: dict[str, Any] = {
            "test_size": test_size,
            "val_size": val_size,
            "n0": n0,
            "seed": seed,
            "source": source,
        }
        if examples and all(isinstance(e, str) for e in examples):
            if kind not in (None, "text"):
                raise InputError(f"task {name!r}: plain strings make a text task, not {kind!r}")
            return cls(name=name, kind="text", targets=tuple(examples), **settings)
        where = f"task {name!r}" + (f" ({source})" if source else "")
        records: list[tuple[str, Mapping[str, Any]]] = []
        for i, example in enumerate(examples):
            if not isinstance(example, Mapping):
                raise InputError(f"{where}: example {i + 1} is not a mapping of columns")
            records.append((f"example {i + 1}", example))
        fields_ = {"text": text_field, "input": input_field, "target": target_field}
        return _task_from_records(name, where, records, kind, fields_, split_field, None, settings)

    # -- splits --------------------------------------------------------------------

    @property
    def n_examples(self) -> int:
        """Number of examples in the whole task."""
        return len(self.targets)

    @property
    def pool_size(self) -> int:
        """Number of examples available for training (everything not test/validation)."""
        return len(self._pool)

    @property
    def n_test(self) -> int:
        """Number of test examples (``test_size``, or as many as the data marks)."""
        return len(self._test)

    @property
    def n_validation(self) -> int:
        """Number of validation examples (``val_size``, or as many as the data marks)."""
        return len(self._validation)

    def split_indices(self, split: str, n: int | None = None) -> np.ndarray:
        """Indices (into ``targets``) of a split; for ``"train"``, the first ``n`` of the pool."""
        if split == "test":
            return self._test
        if split == "validation":
            return self._validation
        if split == "train":
            return self._pool if n is None else self._pool[: self.check_size(n)]
        raise InputError(
            f"task {self.name!r}: unknown split {split!r}; use one of {', '.join(SPLITS)}"
        )

    def examples(self, split: str, n: int | None = None) -> list[dict[str, str]]:
        """The examples of a split as dicts: ``{"text"}`` or ``{"input", "target"}``."""
        indices = self.split_indices(split, n)
        if self.inputs is None:
            return [{"text": self.targets[i]} for i in indices]
        return [{"input": self.inputs[i], "target": self.targets[i]} for i in indices]

    def check_size(self, n: int) -> int:
        """Validate a training-subset size against the pool; return it."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(
                f"task {self.name!r}: a subset size must be an integer >= 0, got {n!r}"
            )
        if n > self.pool_size:
            raise InputError(
                f"task {self.name!r}: a training subset of {n} examples was asked for, but the "
                f"training pool holds only {self.pool_size} ({self.n_examples} examples minus "
                f"{self.n_test} test and {self.n_validation} validation); use a size <= "
                f"{self.pool_size} or a larger task"
            )
        return int(n)

    def subset_sizes(self, max_size: int | None = None) -> list[int]:
        """The nested subset sizes ``n0 * 2**k`` that fit the pool (and ``max_size``)."""
        limit = self.pool_size if max_size is None else min(max_size, self.pool_size)
        sizes = []
        size = self.n0
        while size <= limit:
            sizes.append(size)
            size *= 2
        return sizes

    # -- identity ------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What determines the task's splits and subsets, as a JSON-able dict.

        The examples' content hash and the split settings; the display name, the
        file's location and ``n0`` (which sizes are run, not what a size means) are
        left out.
        """
        return {
            "kind": self.kind,
            "content": self._content_hash,
            "n_examples": self.n_examples,
            "test_size": self.n_test,
            "val_size": self.n_validation,
            "seed": self.seed,
        }

    def identity_hash(self) -> str:
        """A stable 16-hex-digit key of :meth:`identity`."""
        return _stable_hash(self.identity())

    # -- tokenisation --------------------------------------------------------------

    def tokenize(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        encoder_decoder: bool = False,
        cache_dir: Path | str | None = None,
    ) -> TokenizedTask:
        """This task tokenised for one candidate; cached in memory and optionally on disk.

        The memory cache is keyed by the tokenizer's content fingerprint, the task's
        identity, ``max_length`` and the architecture kind, so a second candidate with
        the same tokenizer reuses the work.  With ``cache_dir`` the token arrays are
        also kept in ``cache_dir/tokenized/`` under a hash of the same key.  Training
        examples are tokenised lazily, up to the largest subset asked for.
        """
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise InputError(f"task {self.name!r}: max_length must be an integer >= 2")
        if encoder_decoder and self.kind == "text":
            raise InputError(
                f"task {self.name!r} is plain text (language modelling), which needs a causal "
                "LM; an encoder-decoder candidate needs a task of input/target pairs"
            )
        key = _stable_hash(
            {
                "version": TOKENIZATION_VERSION,
                "tokenizer": tokenizer_fingerprint(tokenizer),
                "task": self.identity(),
                "max_length": max_length,
                "encoder_decoder": bool(encoder_decoder),
            }
        )
        cached = _MEMORY_CACHE.get(key)
        if cached is not None:
            _MEMORY_CACHE.move_to_end(key)
            if cache_dir is not None:
                cached.keep_on_disk(cache_dir)
            return cached
        tokenized = TokenizedTask(
            self, tokenizer, max_length, bool(encoder_decoder), key, cache_dir
        )
        _MEMORY_CACHE[key] = tokenized
        while len(_MEMORY_CACHE) > _MEMORY_CACHE_ENTRIES:
            _MEMORY_CACHE.popitem(last=False)
        return tokenized

    def probe_set(
        self,
        tokenizer: PreTrainedTokenizerBase,
        n: int,
        *,
        max_length: int = 128,
        encoder_decoder: bool = False,
        split: str = "train",
        cache_dir: Path | str | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """A fixed set of ``n`` tokenised examples for kernel (NTK) measurements.

        The first ``n`` examples of ``split``; by default the training pool, so the
        probe set is part of every training subset of size >= ``n`` and does not
        depend on the subset being trained.  Each item is a dict of 1-D LongTensors:
        ``input_ids``, ``attention_mask`` (all ones) and ``labels`` (``-100`` on
        positions that are not scored; see the module docstring for the layout).
        """
        tokenized = self.tokenize(
            tokenizer, max_length=max_length, encoder_decoder=encoder_decoder, cache_dir=cache_dir
        )
        available = len(self.split_indices(split))
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= available:
            raise InputError(
                f"task {self.name!r}: a probe set of {n!r} examples was asked for, but the "
                f"{split} split holds {available}; use 1 <= n <= {available}"
            )
        part = tokenized.train(n) if split == "train" else tokenized.split(split)
        return [part.example(i) for i in range(n)]


def load_task(
    path: Path | str,
    *,
    name: str | None = None,
    kind: str | None = None,
    text_field: str | None = None,
    input_field: str | None = None,
    target_field: str | None = None,
    split_field: str | None = "split",
    txt_unit: str = "line",
    split: str | None = None,
    test_size: int = 200,
    val_size: int = 100,
    n0: int = 200,
    seed: int = 0,
) -> Task:
    """Load a task from a local file or a ``datasets`` ``save_to_disk`` folder.

    Formats: ``.jsonl`` (one JSON object per line), ``.json`` (a list of objects),
    ``.csv`` (a header row), ``.txt`` (plain text: one example per non-empty line, or
    per blank-line-separated paragraph with ``txt_unit="paragraph"``), or a folder
    written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

    ``kind`` is ``"text"``, ``"pairs"`` or ``None`` (tell from the columns).  The
    columns default to the first present of :data:`TEXT_FIELDS`, :data:`INPUT_FIELDS`
    and :data:`TARGET_FIELDS`; name them explicitly for other layouts.

    Splits given by the data are kept: a ``split_field`` column (values of
    :data:`SPLIT_ALIASES`; ``split_field=None`` ignores it), or the splits of a saved
    DatasetDict whose split names are all known.  ``split`` instead loads a single
    split of a DatasetDict (for one with unknown split names).
    """
    path = Path(path).expanduser()
    task_name = name or (path.stem if path.is_file() else path.name) or str(path)
    where = f"task {task_name!r} ({path})"
    if not path.exists():
        raise InputError(f"task file {str(path)!r} does not exist; check the path")
    settings: dict[str, Any] = {
        "test_size": test_size,
        "val_size": val_size,
        "n0": n0,
        "seed": seed,
        "source": str(path),
    }
    fields_ = {"text": text_field, "input": input_field, "target": target_field}
    if path.is_dir():
        records, labels = _read_saved_dataset(path, split, where)
        return _task_from_records(
            task_name, where, records, kind, fields_, split_field, labels, settings
        )
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise InputError(
            f"task file {str(path)!r}: unknown format {path.suffix or '(no extension)'!r}; use "
            ".jsonl, .json, .csv, .txt or a folder written by datasets' save_to_disk"
        )
    if split is not None:
        raise InputError(f"{where}: 'split' applies only to save_to_disk folders")
    text = _read_text(path, where)
    if suffix == ".txt":
        if kind not in (None, "text"):
            raise InputError(f"{where}: a .txt file is a text task, not {kind!r}")
        if txt_unit not in TXT_UNITS:
            raise InputError(f"{where}: unknown txt_unit {txt_unit!r}; use 'line' or 'paragraph'")
        if txt_unit == "line":
            texts = [line.strip() for line in text.splitlines()]
        else:
            texts = [" ".join(p.split()) for p in re.split(r"\n[ \t\r\f\v]*\n", text)]
        texts = [t for t in texts if t]
        if not texts:
            raise InputError(f"{where}: the task has no examples; give a non-empty file")
        return Task(name=task_name, kind="text", targets=tuple(texts), **settings)
    if suffix == ".jsonl":
        records = _parse_jsonl(text, where)
    elif suffix == ".json":
        records = _parse_json(text, where)
    else:
        records = _parse_csv(text, where)
    return _task_from_records(task_name, where, records, kind, fields_, split_field, None, settings)


def _task_from_records(
    name: str,
    where: str,
    records: Sequence[tuple[str, Mapping[str, Any]]],
    kind: str | None,
    fields_: Mapping[str, str | None],
    split_field: str | None,
    labels: tuple[str, ...] | None,
    settings: Mapping[str, Any],
) -> Task:
    """A Task from labelled records (label = where a record came from, for messages)."""
    if not records:
        raise InputError(f"{where}: the task has no examples; give a non-empty file")
    kind, inputs, targets = _columns_to_examples(
        records, where, kind, fields_["text"], fields_["input"], fields_["target"]
    )
    if labels is None:
        labels = _split_labels(records, split_field, where)
    return Task(
        name=name, kind=kind, targets=targets, inputs=inputs, split_labels=labels, **settings
    )


# --- reading files -------------------------------------------------------------------


def _read_text(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where}: the file is not UTF-8 text ({exc.reason}); re-save it as UTF-8"
        ) from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read the file: {exc.strerror or exc}") from None


def _parse_jsonl(text: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: line {number} is not a JSON object")
        records.append((f"line {number}", record))
    return records


def _parse_json(text: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{where}: a .json task must be a list of objects (or use .jsonl)")
    return [(f"item {i + 1}", r) for i, r in enumerate(data)]


def _parse_csv(text: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise InputError(f"{where}: the task has no examples; give a non-empty file")
    try:
        # Row 1 is the header, so data rows are numbered from 2 like a spreadsheet.
        return [(f"row {i + 2}", row) for i, row in enumerate(reader)]
    except csv.Error as exc:
        raise InputError(f"{where}: malformed CSV ({exc})") from None


def _read_saved_dataset(
    path: Path, split: str | None, where: str
) -> tuple[list[tuple[str, Mapping[str, Any]]], tuple[str, ...] | None]:
    """Rows of a save_to_disk folder, and split labels when a DatasetDict gives them."""
    is_dataset = (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    is_dict = (path / "dataset_dict.json").is_file()
    if not (is_dataset or is_dict):
        raise InputError(
            f"{where}: the folder was not written by datasets' save_to_disk (no "
            "dataset_info.json or dataset_dict.json in it); give a .jsonl, .json, .csv or "
            ".txt file, or such a folder"
        )
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"{where}: reading a save_to_disk folder needs the 'datasets' package; install "
            "it with: pip install datasets"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise InputError(f"{where}: cannot read the dataset folder: {exc}") from None
    if not isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            raise InputError(f"{where}: the dataset has no splits, so 'split' does not apply")
        return [(f"row {i + 1}", row) for i, row in enumerate(loaded)], None
    names = list(loaded.keys())
    if split is not None:
        if split not in loaded:
            raise InputError(
                f"{where}: the dataset has no split {split!r}; it has {', '.join(names)}"
            )
        return [(f"{split} row {i + 1}", row) for i, row in enumerate(loaded[split])], None
    if len(names) == 1:
        return [(f"row {i + 1}", row) for i, row in enumerate(loaded[names[0]])], None
    unknown = [n for n in names if n.lower() not in SPLIT_ALIASES]
    if unknown:
        raise InputError(
            f"{where}: the dataset has splits {', '.join(names)}, of which "
            f"{', '.join(unknown)} is not train/validation/test; load one with 'split'"
        )
    records: list[tuple[str, Mapping[str, Any]]] = []
    labels: list[str] = []
    for name in names:
        rows = loaded[name]
        records.extend((f"{name} row {i + 1}", row) for i, row in enumerate(rows))
        labels.extend([SPLIT_ALIASES[name.lower()]] * len(rows))
    return records, tuple(labels)


def _columns_to_examples(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    where: str,
    kind: str | None,
    text_field: str | None,
    input_field: str | None,
    target_field: str | None,
) -> tuple[str, tuple[str, ...] | None, tuple[str, ...]]:
    """Pick the text or input/target columns and pull them out as strings."""
    if kind not in (None, *TASK_KINDS):
        raise InputError(f"{where}: unknown kind {kind!r}; use 'text' or 'pairs'")
    if not records:
        raise InputError(f"{where}: the task has no examples; give a non-empty file")
    columns: list[str] = []
    for _, record in records:
        columns.extend(c for c in record if c not in columns)

    def pick(given: str | None, candidates: tuple[str, ...]) -> str | None:
        if given is not None:
            if given not in columns:
                raise InputError(
                    f"{where}: no column {given!r}; the columns are {', '.join(columns)}"
                )
            return given
        return next((c for c in candidates if c in columns), None)

    if kind is None:
        if text_field is None and (input_field or target_field or _has_pair(columns)):
            kind = "pairs"
        elif text_field is not None or any(c in columns for c in TEXT_FIELDS):
            kind = "text"
        else:
            raise InputError(
                f"{where}: cannot tell which columns hold the examples (columns: "
                f"{', '.join(columns)}); name them with text_field, or input_field and "
                "target_field"
            )
    if kind == "text":
        column = pick(text_field, TEXT_FIELDS)
        if column is None:
            raise InputError(
                f"{where}: no text column among {', '.join(columns)}; name it with text_field"
            )
        return "text", None, tuple(_cell(r, column, label, where) for label, r in records)
    source = pick(input_field, INPUT_FIELDS)
    target = pick(target_field, TARGET_FIELDS)
    if source is None or target is None:
        raise InputError(
            f"{where}: a pairs task needs an input and a target column (columns: "
            f"{', '.join(columns)}); name them with input_field and target_field"
        )
    inputs = tuple(_cell(r, source, label, where) for label, r in records)
    targets = tuple(_cell(r, target, label, where) for label, r in records)
    return "pairs", inputs, targets


def _has_pair(columns: Sequence[str]) -> bool:
    return any(c in columns for c in INPUT_FIELDS) and any(c in columns for c in TARGET_FIELDS)


def _cell(record: Mapping[str, Any], column: str, label: str, where: str) -> str:
    value = record.get(column)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    if value is None:
        raise InputError(f"{where}: {label} has no value in column {column!r}")
    raise InputError(f"{where}: {label} column {column!r} holds a {type(value).__name__}, not text")


def _split_labels(
    records: Sequence[tuple[str, Mapping[str, Any]]], split_field: str | None, where: str
) -> tuple[str, ...] | None:
    """Normalised split labels from a split column, or None when there is none."""
    if split_field is None or not any(split_field in r for _, r in records):
        return None
    labels = []
    for label, record in records:
        value = record.get(split_field)
        name = SPLIT_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
        if name is None:
            raise InputError(
                f"{where}: {label} has split {value!r} in column {split_field!r}; use train, "
                "validation or test (or pass split_field=None to ignore the column)"
            )
        labels.append(name)
    return tuple(labels)


def _hash_examples(
    inputs: Sequence[str] | None, targets: Sequence[str], labels: Sequence[str] | None
) -> str:
    digest = hashlib.sha256()
    for i, target in enumerate(targets):
        # Length-prefixed fields, so ("ab", "c") and ("a", "bc") hash differently.
        label = labels[i] if labels is not None else None
        for part in (inputs[i] if inputs is not None else None, target, label):
            data = b"\xff" if part is None else part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()[:16]


def _stable_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- tokenisation --------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A content hash of a tokenizer: its vocabulary/merges, special tokens and behaviour.

    Two tokenizers with the same fingerprint tokenise identically, so tokenised
    tasks can be shared between candidates (e.g. models of one family).
    """
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        digest.update(json.dumps(vocab, ensure_ascii=True).encode())
    special = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "special": sorted(map(str, tokenizer.all_special_tokens)),
    }
    digest.update(json.dumps(special, sort_keys=True).encode())
    # Flags such as add_bos_token live outside the vocabulary: record their effect.
    probe = "Fingerprint probe: Hello, world! 0123 ünïcödé"
    for add_special in (True, False):
        ids = tokenizer(probe, add_special_tokens=add_special, verbose=False)["input_ids"]
        digest.update(json.dumps(list(ids)).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class TokenizedSplit:
    """Token ids of one split, stored flat (ids + offsets) to keep big pools compact.

    Causal LM: ``ids[offsets[i]:offsets[i+1]]`` is example ``i`` and its first
    ``n_context[i]`` positions are not scored.  Encoder-decoder: ``ids`` is the
    encoder input and ``target_ids``/``target_offsets`` the labels.
    """

    encoder_decoder: bool
    ids: np.ndarray
    offsets: np.ndarray
    n_context: np.ndarray
    target_ids: np.ndarray
    target_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def _target_row(self, i: int) -> np.ndarray:
        return self.target_ids[self.target_offsets[i] : self.target_offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example (encoder + decoder tokens for an encoder-decoder)."""
        lengths = np.diff(self.offsets)
        if self.encoder_decoder:
            lengths = lengths + np.diff(self.target_offsets)
        return lengths

    @property
    def scored(self) -> np.ndarray:
        """Tokens per example that the loss scores."""
        if self.encoder_decoder:
            return np.diff(self.target_offsets)
        # Position 0 has no left context, so it is never predicted.
        return np.maximum(np.diff(self.offsets) - np.maximum(self.n_context, 1), 0)

    def example(self, i: int) -> dict[str, torch.Tensor]:
        """Example ``i`` as 1-D LongTensors ``input_ids``, ``attention_mask``, ``labels``."""
        import torch

        input_ids = torch.from_numpy(self._row(i).astype(np.int64))
        if self.encoder_decoder:
            labels = torch.from_numpy(self._target_row(i).astype(np.int64))
        else:
            labels = input_ids.clone()
            labels[: int(self.n_context[i])] = IGNORE_INDEX
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
        }

    def collate(self, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        """A right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (-100 = pad)."""
        import torch

        rows = [self._row(i) for i in indices]
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        attention = np.zeros((len(rows), width), dtype=np.int64)
        for k, row in enumerate(rows):
            input_ids[k, : len(row)] = row
            attention[k, : len(row)] = 1
        if self.encoder_decoder:
            targets = [self._target_row(i) for i in indices]
            target_width = max(max(len(t) for t in targets), 1)
            labels = np.full((len(rows), target_width), IGNORE_INDEX, dtype=np.int64)
            for k, target in enumerate(targets):
                labels[k, : len(target)] = target
        else:
            labels = np.where(attention == 1, input_ids, IGNORE_INDEX)
            for k, i in enumerate(indices):
                labels[k, : int(self.n_context[i])] = IGNORE_INDEX
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
        }

    def concat(self, other: TokenizedSplit) -> TokenizedSplit:
        """This split followed by ``other`` (used to grow the training pool)."""
        return TokenizedSplit(
            encoder_decoder=self.encoder_decoder,
            ids=np.concatenate([self.ids, other.ids]),
            offsets=np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
            n_context=np.concatenate([self.n_context, other.n_context]),
            target_ids=np.concatenate([self.target_ids, other.target_ids]),
            target_offsets=np.concatenate(
                [self.target_offsets, other.target_offsets[1:] + self.target_offsets[-1]]
            ),
        )

    def head(self, n: int) -> TokenizedSplit:
        """The first ``n`` examples."""
        return TokenizedSplit(
            encoder_decoder=self.encoder_decoder,
            ids=self.ids[: self.offsets[n]],
            offsets=self.offsets[: n + 1],
            n_context=self.n_context[:n],
            target_ids=self.target_ids[: self.target_offsets[n]],
            target_offsets=self.target_offsets[: n + 1],
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "ids": self.ids,
            "offsets": self.offsets,
            "n_context": self.n_context,
            "target_ids": self.target_ids,
            "target_offsets": self.target_offsets,
        }


class TokenizedTask:
    """A task tokenised for one tokenizer/architecture: test, validation, training pool.

    Get one from :meth:`Task.tokenize`.  The training pool grows on demand:
    :meth:`train` tokenises pool examples up to the largest ``n`` asked for.
    """

    def __init__(
        self,
        task: Task,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        encoder_decoder: bool,
        key: str,
        cache_dir: Path | str | None,
    ) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.encoder_decoder = encoder_decoder
        self.key = key
        self.cache_dir = Path(cache_dir) / "tokenized" if cache_dir is not None else None
        self._splits: dict[str, TokenizedSplit] = {}
        for name in ("test", "validation"):
            part = self._load_or_tokenize(name, len(self.task.split_indices(name)))
            if int(part.scored.sum()) == 0:
                raise InputError(
                    f"task {task.name!r}: its {name} split has no target tokens to score after "
                    "tokenisation (empty targets?); fix the data or raise max_length"
                )
            self._splits[name] = part
        self._pool = self._load_or_tokenize("train", 0)

    def keep_on_disk(self, cache_dir: Path | str) -> None:
        """Also keep the token arrays under ``cache_dir/tokenized/`` from now on."""
        directory = Path(cache_dir) / "tokenized"
        if self.cache_dir == directory:
            return
        self.cache_dir = directory
        for name, part in (*self._splits.items(), ("train", self._pool)):
            file = self._cache_file(name)
            if len(part) and file is not None and not file.is_file():
                self._save(name, part)

    def split(self, name: str) -> TokenizedSplit:
        """The tokenised ``"test"`` or ``"validation"`` split."""
        if name not in self._splits:
            raise InputError(
                f"task {self.task.name!r}: unknown split {name!r}; use test or validation"
            )
        return self._splits[name]

    def train(self, n: int) -> TokenizedSplit:
        """The tokenised training subset of size ``n`` (first ``n`` of the pool)."""
        n = self.task.check_size(n)
        have = len(self._pool)
        if n > have:
            indices = self.task.split_indices("train")[have:n]
            self._pool = self._pool.concat(self._tokenize_indices(indices))
            self._save("train", self._pool)
        return self._pool.head(n)

    # -- internals -----------------------------------------------------------------

    def _cache_file(self, split: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.key}-{split}.npz"

    def _load_or_tokenize(self, split: str, n: int) -> TokenizedSplit:
        file = self._cache_file(split)
        if file is not None and file.is_file():
            try:
                with np.load(file) as data:
                    loaded = TokenizedSplit(
                        encoder_decoder=self.encoder_decoder, **{k: data[k] for k in data.files}
                    )
                if len(loaded) >= n:
                    return loaded
            except (OSError, ValueError, TypeError, KeyError):
                pass  # A damaged cache file is rebuilt below.
        indices = self.task.split_indices(split)[:n]
        part = self._tokenize_indices(indices)
        if n:
            self._save(split, part)
        return part

    def _save(self, split: str, part: TokenizedSplit) -> None:
        file = self._cache_file(split)
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, then rename: readers never see a half-written file.
        handle, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **part._arrays())
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _tokenize_indices(self, indices: np.ndarray) -> TokenizedSplit:
        task = self.task
        targets = [task.targets[i] for i in indices]
        inputs = [task.inputs[i] for i in indices] if task.inputs is not None else None
        return tokenize_examples(
            self.tokenizer,
            targets,
            inputs,
            max_length=self.max_length,
            encoder_decoder=self.encoder_decoder,
        )


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase,
    targets: Sequence[str],
    inputs: Sequence[str] | None = None,
    *,
    max_length: int,
    encoder_decoder: bool = False,
) -> TokenizedSplit:
    """Tokenise examples into a :class:`TokenizedSplit` (the layout of the module docstring)."""
    eos = tokenizer.eos_token_id
    seq2seq = encoder_decoder and inputs is not None
    if inputs is None:
        sources = None
        main = _encode(tokenizer, targets, add_special=True)
    else:
        sources = _encode(tokenizer, inputs, add_special=True)
        main = _encode(tokenizer, targets, add_special=seq2seq, as_target=seq2seq)
    rows: list[list[int]] = []
    n_context: list[int] = []
    target_rows: list[list[int]] = []
    for k, tokens in enumerate(main):
        if eos is not None and (not tokens or tokens[-1] != eos):
            tokens = [*tokens, eos]
        if seq2seq:
            assert sources is not None
            rows.append(sources[k][:max_length])
            target_rows.append(tokens[:max_length])
            n_context.append(0)
        elif sources is None:
            rows.append(tokens[:max_length])
            n_context.append(0)
        else:
            context = sources[k]
            # Keep the target whole when possible; keep at least one context token so the
            # first target token is predicted from something.
            keep_target = min(len(tokens), max_length - (1 if context else 0))
            keep_context = min(len(context), max_length - keep_target)
            context = context[len(context) - keep_context :]
            rows.append(context + tokens[:keep_target])
            n_context.append(len(context))
    return TokenizedSplit(
        encoder_decoder=seq2seq,
        ids=_flatten(rows),
        offsets=_offsets(rows),
        n_context=np.asarray(n_context, dtype=np.int32),
        target_ids=_flatten(target_rows),
        target_offsets=_offsets(target_rows) if seq2seq else np.zeros(len(rows) + 1, np.int64),
    )


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    add_special: bool,
    as_target: bool = False,
) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start : start + _TOKENIZE_CHUNK])
        if as_target:
            encoded = tokenizer(text_target=chunk, add_special_tokens=add_special, verbose=False)
        else:
            encoded = tokenizer(chunk, add_special_tokens=add_special, verbose=False)
        out.extend(list(ids) for ids in encoded["input_ids"])
    return out


def _flatten(rows: Sequence[Sequence[int]]) -> np.ndarray:
    if not rows:
        return np.zeros(0, dtype=np.int32)
    return np.fromiter((t for r in rows for t in r), dtype=np.int32, count=sum(map(len, rows)))


def _offsets(rows: Sequence[Sequence[int]]) -> np.ndarray:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    return offsets


_MEMORY_CACHE: OrderedDict[str, TokenizedTask] = OrderedDict()


def clear_tokenization_cache() -> None:
    """Forget every tokenised task held in memory."""
    _MEMORY_CACHE.clear()
