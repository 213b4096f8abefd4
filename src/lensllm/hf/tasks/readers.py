"""Reading a task's examples: JSON lines, JSON, CSV, plain text, ``save_to_disk`` folders.

Each reader returns *records* -- ``(label, row)`` pairs, the label saying where the
row came from (``line 3``, ``row 7``) for messages -- and :func:`columns_to_examples`
picks the text or input/target columns out of them.  Nothing here builds a
:class:`~lensllm.hf.tasks.task.Task`; :mod:`lensllm.hf.tasks.load` does.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import JsonLineError, iter_jsonl

Records = list[tuple[str, Mapping[str, Any]]]

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


def parse_records(text: str, suffix: str, where: str) -> Records:
    """The records of a ``.jsonl``, ``.json`` or ``.csv`` file's text."""
    if suffix == ".jsonl":
        return _parse_jsonl(text, where)
    if suffix == ".json":
        return _parse_json(text, where)
    return _parse_csv(text, where)


def parse_txt(text: str, unit: str, where: str) -> list[str]:
    """The examples of a ``.txt`` file: non-empty lines, or blank-line-separated
    paragraphs (whitespace collapsed) with ``unit="paragraph"``."""
    if unit == "line":
        texts = [line.strip() for line in text.splitlines()]
    else:
        texts = [" ".join(p.split()) for p in re.split(r"\n[ \t\r\f\v]*\n", text)]
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(f"{where}: the task has no examples; give a non-empty file")
    return texts


def read_text(path: Path, where: str) -> str:
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
    try:
        for number, record in iter_jsonl(text.splitlines()):
            if not isinstance(record, dict):
                raise InputError(f"{where}: line {number} is not a JSON object")
            records.append((f"line {number}", record))
    except JsonLineError as exc:
        raise InputError(
            f"{where}: line {exc.number} is not valid JSON ({exc.error.msg})"
        ) from None
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


def read_saved_dataset(
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
    return dataset_dict_records(loaded, split, where)


def dataset_dict_records(
    loaded: Mapping[str, Any], split: str | None, where: str
) -> tuple[list[tuple[str, Mapping[str, Any]]], tuple[str, ...] | None]:
    """Rows of a ``DatasetDict``: of one ``split``, of its only split, or of all its
    splits with their train/validation/test labels when every name is a known one."""
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


def columns_to_examples(
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


def split_column_labels(
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
