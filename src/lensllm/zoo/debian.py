"""Text corpora shipped in Debian packages, fetched into the cache and read without the
programs they were made for.

The packages are taken with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
``cache_dir/debian/<package>/`` (nothing is installed, no dependency is pulled in); a
copy already installed on the system is used first.  Each reader parses one format:

* ``sword-text-web``: the World English Bible as a SWORD zText module -- ``*.bzs``
  holds 12-byte entries (offset, compressed size, size, little-endian), ``*.bzz`` the
  zlib blocks, one per book; the OSIS markup is stripped to verse text.
* ``r-cran-janeaustenr``: six Austen novels in R's lazy-load database
  (``data/Rdata.rdx``: a gzip'd serialized index of (offset, length) per object;
  ``data/Rdata.rdb``: per object a 4-byte big-endian length and a zlib stream of a
  serialized character vector), decoded with the PyPI package ``rdata`` (no R needed).
* ``dict-gcide`` / ``dict-foldoc``: dictd databases -- ``*.index`` lines
  ``headword<TAB>offset<TAB>length`` (base-64 numbers) into the gzip-compatible
  ``*.dict.dz``.
* ``wordnet-base``: WordNet 3.0 ``data.<pos>`` files, one synset a line, the gloss
  after `` | ``.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from lensllm.errors import InputError

#: corpus name -> (Debian package, a file that shows it is unpacked, relative to "/")
PACKAGES: dict[str, tuple[str, str]] = {
    "web": ("sword-text-web", "usr/share/sword/modules/texts/ztext/engWEB2015eb/nt.bzs"),
    "austen": ("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"),
    "gcide": ("dict-gcide", "usr/share/dictd/gcide.dict.dz"),
    "foldoc": ("dict-foldoc", "usr/share/dictd/foldoc.dict.dz"),
    "wordnet": ("wordnet-base", "usr/share/wordnet/data.noun"),
    "python-doc": ("python3.11-doc", "usr/share/info/python3.11.info.gz"),
}
RDATA_INSTALL = "pip install rdata==1.1.0"
#: where an installed package's files are looked for first (tests point it elsewhere)
SYSTEM_ROOT = Path("/")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def package_root(corpus: str, cache_dir: str | os.PathLike[str], *, fetch: bool = True,
                 system_root: str | os.PathLike[str] | None = None) -> Path:
    """The folder under which ``corpus``'s Debian package files lie (``usr/share/...``):
    the system when it is installed there, else the cache, fetched when ``fetch``."""
    try:
        package, marker = PACKAGES[corpus]
    except KeyError:
        raise InputError(f"unknown Debian corpus {corpus!r}; choose one of "
                         f"{', '.join(PACKAGES)}") from None
    system = SYSTEM_ROOT if system_root is None else Path(system_root)
    for root in (system, Path(cache_dir) / "debian" / package):
        if (root / marker).is_file():
            return root
    target = Path(cache_dir) / "debian" / package
    how = (f"`apt-get download {package}` and `dpkg-deb -x {package}_*.deb {target}` "
           f"(or `apt-get install {package}`)")
    if not fetch:
        raise InputError(f"corpus {corpus!r} needs the Debian package {package}; fetch it "
                         f"with {how}")
    _fetch(package, target, how)
    if not (target / marker).is_file():
        raise InputError(f"the Debian package {package} unpacked into {target} has no "
                         f"{marker}; fetch it by hand with {how}")
    return target


def _fetch(package: str, target: Path, how: str) -> None:
    """apt-get download + dpkg-deb -x into ``target`` (published by rename when whole)."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise InputError(f"no apt-get/dpkg-deb here to fetch {package}; on a Debian machine "
                         f"run {how}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        result = subprocess.run(["apt-get", "download", package], cwd=work,
                                capture_output=True, text=True, check=False)
        debs = sorted(Path(work).glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            raise InputError(f"`apt-get download {package}` failed ({result.stderr.strip()[-300:]}"
                             f"); run `apt-get update` first, or {how}")
        staging = Path(work) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)


# --------------------------------------------------------------------- SWORD zText

_OSIS_DROP = re.compile(r"<(note|title)\b[^>]*?(?<!/)>.*?</\1>", re.DOTALL)
_OSIS_BREAK = re.compile(r"<(?:chapter|div)\b[^>]*\beID=[^>]*/>|<lb\b[^>]*/>|<l\b[^>]*eID[^>]*/>")
_TAG = re.compile(r"<[^>]+>")


def read_sword_ztext(module_dir: str | os.PathLike[str]) -> list[str]:
    """The text of a SWORD zText module, one document per compressed block (a book),
    Old Testament first; notes and titles dropped, paragraph and chapter ends kept."""
    module_dir = Path(module_dir)
    documents = []
    for testament in ("ot", "nt"):
        index_file, data_file = module_dir / f"{testament}.bzs", module_dir / f"{testament}.bzz"
        if not index_file.is_file():
            continue
        index, data = index_file.read_bytes(), data_file.read_bytes()
        for entry in range(len(index) // 12):
            offset, size, _ = struct.unpack_from("<III", index, 12 * entry)
            try:
                raw = zlib.decompress(data[offset:offset + size]).decode("utf-8")
            except (zlib.error, UnicodeDecodeError) as error:
                raise InputError(f"{data_file}: block {entry} is not zlib-compressed UTF-8 "
                                 f"({error}); refetch the package") from None
            text = _TAG.sub("", _OSIS_BREAK.sub("\n", _OSIS_DROP.sub("", raw)))
            lines = [" ".join(line.split()) for line in text.splitlines()]
            document = "\n".join(line for line in lines if line)
            if len(document) > 200:  # skips the importer's milestone-only blocks
                documents.append(document)
    if not documents:
        raise InputError(f"{module_dir} holds no zText blocks (ot.bzs/nt.bzs); is it a "
                         "SWORD zText module?")
    return documents


# ---------------------------------------------------------------- R lazy-load DB

def read_r_lazyload(rdb: str | os.PathLike[str], rdx: str | os.PathLike[str]
                    ) -> dict[str, list[str]]:
    """The character vectors of an R lazy-load database, by object name, in index order."""
    try:
        import rdata
    except ImportError:
        raise InputError(f"reading R data needs the rdata package; install it with "
                         f"`{RDATA_INSTALL}`") from None
    import warnings

    rdb, rdx = Path(rdb), Path(rdx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that a bare stream "assumed RDS"
        try:
            index = rdata.conversion.convert(rdata.parser.parse_data(
                gzip.decompress(rdx.read_bytes())))
            variables = index["variables"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{rdx} is not an R lazy-load index ({error})") from None
        data = rdb.read_bytes()
        out = {}
        for name, (offset, length) in variables.items():
            blob = data[int(offset):int(offset) + int(length)]
            try:
                raw = zlib.decompress(blob[4:])
                value = rdata.conversion.convert(rdata.parser.parse_data(raw))
            except (zlib.error, ValueError, TypeError) as error:
                raise InputError(f"{rdb}: object {name!r} is not a zlib-compressed R "
                                 f"object ({error})") from None
            out[str(name)] = ["" if item is None else str(item) for item in list(value)]
    return out


def read_austen(root: str | os.PathLike[str]) -> list[str]:
    """Austen's six novels (janeaustenr), one document per novel, paragraphs kept."""
    base = Path(root) / "usr/lib/R/site-library/janeaustenr/data"
    novels = read_r_lazyload(base / "Rdata.rdb", base / "Rdata.rdx")
    documents = []
    for lines in novels.values():
        paragraphs = " ".join(line.strip() or "\n" for line in lines).split("\n")
        documents.append("\n".join(" ".join(p.split()) for p in paragraphs if p.strip()))
    return documents


# ------------------------------------------------------------------------- dictd

def _b64_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64.index(char)
    return value


def read_dictd(dict_file: str | os.PathLike[str], index_file: str | os.PathLike[str]
               ) -> list[tuple[str, str]]:
    """``(headword, entry text)`` of a dictd database in index order; the database's own
    ``00-database-*`` records are skipped and an entry listed under several headwords
    is kept once."""
    dict_file, index_file = Path(dict_file), Path(index_file)
    opener = gzip.open if dict_file.suffix == ".dz" else open
    with opener(dict_file, "rb") as handle:
        data = handle.read()
    entries, seen = [], set()
    for number, line in enumerate(index_file.read_text("utf-8").splitlines(), start=1):
        parts = line.split("\t")
        try:
            head, offset, length = parts[0], _b64_number(parts[1]), _b64_number(parts[2])
        except (IndexError, ValueError):
            raise InputError(f"{index_file}:{number} is not a dictd index line "
                             "(headword, offset, length)") from None
        if head.startswith("00-database") or (offset, length) in seen:
            continue
        seen.add((offset, length))
        text = data[offset:offset + length].decode("utf-8", errors="replace").strip()
        if text:
            entries.append((head, text))
    return entries


def dictd_files(root: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """The ``.dict.dz`` and ``.index`` of dictd database ``name`` under ``root``."""
    base = Path(root) / "usr/share/dictd"
    return base / f"{name}.dict.dz", base / f"{name}.index"


# ----------------------------------------------------------------------- WordNet

def read_wordnet(root: str | os.PathLike[str], parts: tuple[str, ...] = ("noun", "verb",
                                                                         "adj", "adv")
                 ) -> list[tuple[str, str, str]]:
    """``(word, part of speech, definition)`` per synset (its first word; the gloss up
    to its quoted examples), in file order."""
    base = Path(root) / "usr/share/wordnet"
    out = []
    for part in parts:
        path = base / f"data.{part}"
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if line.startswith("  ") or " | " not in line:
                    continue  # the licence header
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                try:
                    word = fields[4].replace("_", " ")
                except IndexError:
                    raise InputError(f"{path}:{number} is not a WordNet synset line") from None
                definition = re.split(r';\s*"', gloss, maxsplit=1)[0].strip().rstrip(";")
                if definition:
                    out.append((word, part, definition))
    return out
