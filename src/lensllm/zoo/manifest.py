"""The zoo's manifest: what a build produced, and the hashes that recognise it later.

``manifest.json`` records each candidate's configuration, size, pretraining budget,
final losses, wall time and a content hash; paths in it are relative to the zoo
folder, so the folder can be moved.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import sha256_text
from lensllm.zoo.recipes import ZOO_FORMAT_VERSION, ZooRecipe, zoo_dir, zoo_recipe
from lensllm.zoo.tokenizer import tokenizer_hash

MANIFEST_NAME = "manifest.json"
CANDIDATE_RECORD_NAME = "lensllm_candidate.json"


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


# The zoo hashes whole tensors; lensllm.hf.candidates fingerprints a checkpoint from
# sampled file blocks.  They cannot be one: the sampled fingerprint keys the results
# store and must stay cheap for multi-GB checkpoints, while this one verifies every
# byte of a cached candidate before reuse and is recorded in existing manifests --
# changing either would orphan stored results or rebuild every cached zoo.
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


def content_hash(checkpoint_dir: Path) -> str:
    """SHA-256 over a candidate folder's weights and tokenizer: what the manifest records."""
    return sha256_text(f"{weights_hash(checkpoint_dir)}:{tokenizer_hash(checkpoint_dir)}")
