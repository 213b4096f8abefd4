"""The task model: examples, fixed test/validation splits, nested training subsets.

See :mod:`lensllm.hf.tasks` for how one seeded shuffle fixes the splits and subsets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lensllm.errors import InputError
from lensllm.fileio import short_hash
from lensllm.hf.tasks.readers import SPLITS, TASK_KINDS, columns_to_examples, split_column_labels
from lensllm.hf.tasks.tokenize import TokenizedTask, tokenize_task

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True, eq=False)
class Task:
    """A downstream task: its examples and how they are split.

    For a text task ``inputs`` is ``None`` and ``targets`` holds the texts (every
    token is a target); for a pairs task ``inputs[i]`` and ``targets[i]`` form one
    example.  ``split_labels`` (optional, one of ``train``/``validation``/``test`` per
    example) fixes splits given by the data; ``test_size``/``val_size`` then apply
    only to a split the data does not mark.  Build one with
    :func:`~lensllm.hf.tasks.load.load_task` or :meth:`Task.from_examples`.
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
        return task_from_records(name, where, records, kind, fields_, split_field, None, settings)

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
        return short_hash(self.identity())

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
        return tokenize_task(self, tokenizer, max_length=max_length,
                             encoder_decoder=encoder_decoder, cache_dir=cache_dir)

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


def task_from_records(
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
    kind, inputs, targets = columns_to_examples(
        records, where, kind, fields_["text"], fields_["input"], fields_["target"]
    )
    if labels is None:
        labels = split_column_labels(records, split_field, where)
    return Task(
        name=name, kind=kind, targets=targets, inputs=inputs, split_labels=labels, **settings
    )


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
