"""Models and datasets by Hugging Face Hub id, through ``huggingface_hub`` and its cache.

A candidate's ``path`` may name a Hub repository (``org/name``) instead of a local
folder.  :func:`resolve_model` turns it into a snapshot folder of the standard HF cache
(``$HF_HOME/hub``, or ``$HF_HUB_CACHE``) with ``huggingface_hub.snapshot_download``:
online it downloads what is missing, with ``HF_HUB_OFFLINE=1`` it only looks in the
cache.  The snapshot folder's name is the resolved commit hash, which becomes part of
the candidate's identity, so a results store never mixes two commits of one name.

The environment is read when a call is made, not when ``huggingface_hub`` was imported
(its ``constants`` module freezes both at import time), so a process -- or a test --
that sets ``HF_HOME`` or ``HF_HUB_OFFLINE`` late still gets what it asked for.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from lensllm.errors import InputError, one_line

# org/name or a bare legacy name (gpt2): letters, digits, '-', '_', '.'; no leading
# '.' or '-', no '..' (huggingface_hub's own validator rejects the same).
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")

# Formats a PyTorch fine-tuning run never reads: other frameworks' weights and the
# original (non-transformers) checkpoints some repositories ship beside the HF ones.
_IGNORE = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "onnx/*", "flax_model*",
           "tf_model*", "original/*", "*.pth", "*.mlmodel", "coreml/*"]


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` could be a Hub model id (it says nothing about a local folder)."""
    return (bool(_REPO_ID.match(text)) and ".." not in text and not text.endswith(".gguf")
            and not text.startswith(("~", ".")))


def is_hub_id(path: str | os.PathLike[str]) -> bool:
    """A candidate path is a Hub id when it is not a folder or file here, is relative and
    has a repo id's shape -- the rule ``from_pretrained`` follows (local first)."""
    text = os.fspath(path)
    return not Path(text).expanduser().exists() and looks_like_repo_id(text)


def hub_cache_dir() -> Path:
    """The HF hub cache this process uses now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``,
    else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids network access (read now, not at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model(repo_id: str, revision: str | None, gguf_file: str | None,
                  where: str) -> tuple[Path, str]:
    """The local snapshot folder of a Hub model and its commit hash; InputError when it
    cannot be had (offline and not cached, unknown repo or revision, no network)."""
    cache, offline = hub_cache_dir(), hub_offline()
    return _resolve_cached(repo_id, revision, gguf_file, str(cache), offline, where)


@functools.lru_cache(maxsize=64)
def _resolve_cached(repo_id: str, revision: str | None, gguf_file: str | None, cache: str,
                    offline: bool, where: str) -> tuple[Path, str]:
    # Once per process and (repo, revision): online, snapshot_download asks the Hub for
    # the revision's commit on every call, and a run computes identities many times.
    # Pinning the first answer also keeps one run on one commit if the branch moves.
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise InputError(f"{where}: {repo_id!r} is not a local folder, and loading Hub models "
                         "needs huggingface_hub; pip install 'lensllm[finetune]'") from None
    allow = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.py", gguf_file] if gguf_file else None
    at = f" at revision {revision!r}" if revision else ""
    try:
        ignore = None if gguf_file else _ignore_patterns(repo_id, revision, offline)
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                   local_files_only=offline, allow_patterns=allow,
                                   ignore_patterns=ignore)
    except LocalEntryNotFoundError:
        if offline:
            raise InputError(
                f"{where}: {repo_id!r} is not a local folder, and as a Hub model{at} it is not "
                f"in the Hugging Face cache {cache}, which HF_HUB_OFFLINE=1 forbids filling; "
                f"download it where there is network (hf download {repo_id}) into that "
                "cache, or point HF_HOME at a cache that has it") from None
        raise InputError(f"{where}: cannot download Hub model {repo_id!r}{at} and it is not "
                         f"in the Hugging Face cache {cache}; check the network, or set "
                         "HF_HOME to a cache that has it") from None
    except RevisionNotFoundError:
        raise InputError(f"{where}: Hub model {repo_id!r} has no revision {revision!r}; give "
                         "a branch, tag or commit hash that exists") from None
    except RepositoryNotFoundError:
        raise InputError(f"{where}: no Hub model {repo_id!r} (or it is private: log in "
                         "with hf auth login); check the id, or give a local folder") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise InputError(f"{where}: cannot fetch Hub model {repo_id!r}{at}: "
                         f"{one_line(exc)}") from None
    path = Path(folder)
    return path, path.name  # snapshots/<commit hash>


def _ignore_patterns(repo_id: str, revision: str | None, offline: bool) -> list[str]:
    """What not to download: other frameworks' files, and the pickled PyTorch weights
    when the repository also has safetensors (many ship both; transformers loads the
    safetensors, so the pickles would double the download for nothing)."""
    if offline:
        return list(_IGNORE)
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo_id, revision=revision)
    pickles = ["*.bin", "*.pt"] if any(f.endswith(".safetensors") for f in files) else []
    return [*_IGNORE, *pickles]
