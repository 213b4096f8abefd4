"""Loading a task from disk: a :class:`TaskSpec` says where and how, :func:`load_task` reads it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.hf.tasks.readers import (
    FILE_FORMATS,
    TASK_KINDS,
    TXT_UNITS,
    parse_records,
    parse_txt,
    read_saved_dataset,
    read_text,
)
from lensllm.hf.tasks.task import Task, task_from_records

_FIELD_KEYS = ("name", "text_field", "input_field", "target_field", "split_field", "split",
               "dataset", "config", "test_split")


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's data lives and how to read and split it; validated on creation.

    ``path`` is a ``.jsonl`` (one JSON object per line), ``.json`` (a list of
    objects), ``.csv`` (a header row) or ``.txt`` file (one example per non-empty
    line, or per blank-line-separated paragraph with ``txt_unit="paragraph"``), or a
    folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

    ``kind`` is ``"text"``, ``"pairs"`` or ``None`` (tell from the columns).  The
    columns default to the first present of :data:`~lensllm.hf.tasks.readers.TEXT_FIELDS`,
    :data:`~lensllm.hf.tasks.readers.INPUT_FIELDS` and
    :data:`~lensllm.hf.tasks.readers.TARGET_FIELDS`; name them for other layouts.

    Splits given by the data are kept: a ``split_field`` column (values of
    :data:`~lensllm.hf.tasks.readers.SPLIT_ALIASES`; ``split_field=None`` ignores
    it), or the splits of a saved DatasetDict whose split names are all known.
    ``split`` instead loads a single split of a DatasetDict (for one with unknown
    split names).  ``test_size``, ``val_size``, ``n0`` and ``seed`` are the
    :class:`~lensllm.hf.tasks.task.Task` settings.

    Instead of ``path``, ``dataset`` names what ``datasets.load_dataset`` reads: a Hub
    dataset (with its ``config``) or a local folder of data files.  ``split`` then
    picks the split to use (test and validation carved from it), ``test_split`` a
    split to hold out as the test set (training rows from ``split``, default
    ``train``); with neither, every split is read as for a ``save_to_disk`` folder.
    """

    path: Path | None = None
    name: str | None = None
    kind: str | None = None
    text_field: str | None = None
    input_field: str | None = None
    target_field: str | None = None
    split_field: str | None = "split"
    txt_unit: str = "line"
    split: str | None = None
    test_size: int = 200
    val_size: int = 100
    n0: int = 200
    seed: int = 0
    dataset: str | None = None
    config: str | None = None
    test_split: str | None = None

    def __post_init__(self) -> None:
        if self.dataset is None:
            if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
                raise InputError(f"task: 'path' must be a file or folder path, got "
                                 f"{self.path!r}")
            object.__setattr__(self, "path", Path(self.path).expanduser())
        elif self.path is not None:
            raise InputError("task: give 'path' (a task file or folder) or 'dataset' (a Hub "
                             "dataset or a folder of data files), not both")
        for key in ("config", "test_split"):
            if getattr(self, key) is not None and self.dataset is None:
                raise InputError(f"task: {key!r} applies to a 'dataset' task")
        where = self.where
        for key in _FIELD_KEYS:
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(f"{where}: {key!r} must be a non-empty string (or unset)")
        if self.kind not in (None, *TASK_KINDS):
            raise InputError(f"{where}: unknown kind {self.kind!r}; use 'text' or 'pairs'")
        if self.txt_unit not in TXT_UNITS:
            raise InputError(
                f"{where}: unknown txt_unit {self.txt_unit!r}; use 'line' or 'paragraph'"
            )
        for key in ("test_size", "val_size", "n0", "seed"):
            value = getattr(self, key)
            lowest = 0 if key == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise InputError(f"{where}: {key!r} must be an integer >= {lowest}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Build from a config mapping (e.g. a run config's ``task`` section)."""
        if not isinstance(data, Mapping):
            raise InputError("task: the task settings must be a mapping (path, kind, ...)")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(
                f"task: unknown setting(s) {', '.join(map(str, unknown))}; known: "
                f"{', '.join(sorted(known))}"
            )
        if "path" not in data and "dataset" not in data:
            raise InputError("task: 'path' is missing (a task file or folder), or give "
                             "'dataset' (a Hub dataset or a folder of data files)")
        return cls(**data)

    @property
    def task_name(self) -> str:
        """The task's display name: ``name``, else the file's stem or the folder's name
        (a dataset's name without its organisation)."""
        if self.path is None:
            return self.name or str(self.dataset).rstrip("/").rsplit("/", 1)[-1]
        path = self.path
        return self.name or (path.stem if path.is_file() else path.name) or str(path)

    @property
    def where(self) -> str:
        """How messages name the task: ``task 'NAME' (PATH or DATASET)``."""
        return f"task {self.task_name!r} ({self.path or self.dataset})"


def load_task(spec: TaskSpec | Mapping[str, Any] | str | os.PathLike[str] | None = None,
              /, **settings: Any) -> Task:
    """Load a task from a local file or a ``datasets`` ``save_to_disk`` folder.

    ``spec`` is a :class:`TaskSpec`, a mapping of its fields, or the path; ``settings``
    are further (or overriding) :class:`TaskSpec` fields, so ``load_task(spec)``,
    ``load_task("t.jsonl", test_size=50)`` and ``load_task(**mapping)`` all work.
    """
    spec = _as_spec(spec, settings)
    if spec.dataset is not None:
        return _load_dataset_task(spec)
    path, task_name, where = spec.path, spec.task_name, spec.where
    assert path is not None  # TaskSpec: a path unless a dataset
    if not path.exists():
        raise InputError(f"task file {str(path)!r} does not exist; check the path")
    task_settings: dict[str, Any] = {
        "test_size": spec.test_size,
        "val_size": spec.val_size,
        "n0": spec.n0,
        "seed": spec.seed,
        "source": str(path),
    }
    fields_ = {"text": spec.text_field, "input": spec.input_field, "target": spec.target_field}
    if path.is_dir():
        records, labels = read_saved_dataset(path, spec.split, where)
        return task_from_records(
            task_name, where, records, spec.kind, fields_, spec.split_field, labels, task_settings
        )
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise InputError(
            f"task file {str(path)!r}: unknown format {path.suffix or '(no extension)'!r}; use "
            ".jsonl, .json, .csv, .txt or a folder written by datasets' save_to_disk"
        )
    if spec.split is not None:
        raise InputError(f"{where}: 'split' applies only to save_to_disk folders")
    text = read_text(path, where)
    if suffix == ".txt":
        if spec.kind not in (None, "text"):
            raise InputError(f"{where}: a .txt file is a text task, not {spec.kind!r}")
        texts = parse_txt(text, spec.txt_unit, where)
        return Task(name=task_name, kind="text", targets=tuple(texts), **task_settings)
    records = parse_records(text, suffix, where)
    return task_from_records(
        task_name, where, records, spec.kind, fields_, spec.split_field, None, task_settings
    )


def _load_dataset_task(spec: TaskSpec) -> Task:
    from lensllm.hf.tasks.hubdata import read_dataset

    assert spec.dataset is not None
    records, labels = read_dataset(spec.dataset, spec.config, spec.split, spec.test_split,
                                   spec.where)
    fields_ = {"text": spec.text_field, "input": spec.input_field, "target": spec.target_field}
    settings = {"test_size": spec.test_size, "val_size": spec.val_size, "n0": spec.n0,
                "seed": spec.seed, "source": spec.dataset}
    return task_from_records(spec.task_name, spec.where, records, spec.kind, fields_,
                             spec.split_field, labels, settings)


def _as_spec(spec: TaskSpec | Mapping[str, Any] | str | os.PathLike[str] | None,
             settings: Mapping[str, Any]) -> TaskSpec:
    if isinstance(spec, TaskSpec):
        return dataclasses.replace(spec, **settings) if settings else spec
    if spec is None:
        return TaskSpec.from_mapping(settings)
    if isinstance(spec, Mapping):
        return TaskSpec.from_mapping({**spec, **settings})
    return TaskSpec.from_mapping({"path": spec, **settings})
