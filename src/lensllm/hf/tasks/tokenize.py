"""Tokenising a task for one candidate, cached in memory and (optionally) on disk.

The token layout is described in :mod:`lensllm.hf.tasks`.  A tokenised task is keyed
by the tokenizer's content fingerprint, the task's identity, ``max_length`` and the
architecture kind, so a second candidate with the same tokenizer reuses the work.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lensllm.errors import InputError
from lensllm.fileio import atomic_write_bytes, short_hash

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
# Bump when the token layout changes, so on-disk caches from older code are not reused.
TOKENIZATION_VERSION = 1
_MEMORY_CACHE_ENTRIES = 8
_TOKENIZE_CHUNK = 2048


class TaskExamples(Protocol):
    """What tokenisation reads from a task (:class:`~lensllm.hf.tasks.task.Task` has it)."""

    name: str
    kind: str
    targets: tuple[str, ...]
    inputs: tuple[str, ...] | None

    def split_indices(self, split: str, n: int | None = None) -> np.ndarray: ...

    def check_size(self, n: int) -> int: ...

    def identity(self) -> dict[str, Any]: ...


def tokenize_task(
    task: TaskExamples,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    encoder_decoder: bool = False,
    cache_dir: Path | str | None = None,
) -> TokenizedTask:
    """``task`` tokenised for one candidate (see :meth:`Task.tokenize
    <lensllm.hf.tasks.task.Task.tokenize>`)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise InputError(f"task {task.name!r}: max_length must be an integer >= 2")
    if encoder_decoder and task.kind == "text":
        raise InputError(
            f"task {task.name!r} is plain text (language modelling), which needs a causal "
            "LM; an encoder-decoder candidate needs a task of input/target pairs"
        )
    key = short_hash(
        {
            "version": TOKENIZATION_VERSION,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "task": task.identity(),
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
    tokenized = TokenizedTask(task, tokenizer, max_length, bool(encoder_decoder), key, cache_dir)
    _MEMORY_CACHE[key] = tokenized
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_ENTRIES:
        _MEMORY_CACHE.popitem(last=False)
    return tokenized


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
        task: TaskExamples,
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
        buffer = io.BytesIO()
        np.savez(buffer, **part._arrays())
        atomic_write_bytes(file, buffer.getvalue())

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
