"""Small files in the formats of the hub zoo's Debian packages, written under
``cache/debian/<package>/`` where lensllm.zoo.debian looks for unpacked packages."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from pathlib import Path

from lensllm.zoo.recipes import CandidateSpec, ZooRecipe

WORDS = ("the", "light", "of", "day", "and", "night", "upon", "water", "house", "garden",
         "letter", "morning", "friend", "walked", "spoke", "quietly", "through", "field")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def sentence(rng: random.Random, n: int = 10) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def b64(number: int) -> str:
    digits = ""
    while True:
        digits = B64[number % 64] + digits
        number //= 64
        if number == 0:
            return digits


def write_ztext(root: Path, books: list[str]) -> Path:
    """A SWORD zText module whose blocks hold ``books`` wrapped in OSIS markup (with a
    note and a title that the reader drops)."""
    module = root / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    module.mkdir(parents=True, exist_ok=True)
    index, data = b"", b""
    blocks = ['<milestone type="x-importer"/>']
    for number, book in enumerate(books):
        blocks.append(f'<title type="main">Book {number}</title><chapter n="1" sID="c"/>'
                      + "".join(f'<w lemma="s:1">{line}</w><note placement="foot">NOTE'
                                f'</note><div eID="p{i}" type="x-p"/>'
                                for i, line in enumerate(book.split("\n")))
                      + '<chapter eID="c"/>')
    for block in blocks:
        packed = zlib.compress(block.encode())
        index += struct.pack("<III", len(data), len(packed), len(block.encode()))
        data += packed
    (module / "nt.bzs").write_bytes(index)
    (module / "nt.bzz").write_bytes(data)
    return module


def write_janeaustenr(root: Path, novels: dict[str, list[str]]) -> Path:
    """R's lazy-load database of character vectors, as r-cran-janeaustenr ships it."""
    import numpy as np
    import rdata

    base = root / "usr/lib/R/site-library/janeaustenr/data"
    base.mkdir(parents=True, exist_ok=True)
    rdb, variables = b"", {}
    for name, lines in novels.items():
        plain = base / f"{name}.rds"
        rdata.write_rds(plain, np.array(lines, dtype=object), compression=None)
        raw = plain.read_bytes()
        plain.unlink()
        blob = struct.pack(">I", len(raw)) + zlib.compress(raw)
        variables[name] = np.array([len(rdb), len(blob)], dtype=np.int32)
        rdb += blob
    (base / "Rdata.rdb").write_bytes(rdb)
    rdata.write_rds(base / "Rdata.rdx", {"variables": variables, "compressed": True},
                    compression="gzip")
    return base


def write_dictd(root: Path, name: str, entries: list[tuple[str, str]]) -> Path:
    """A dictd database (``.index`` + gzip'd ``.dict.dz``) with a header record and
    one entry listed under two headwords."""
    base = root / "usr/share/dictd"
    base.mkdir(parents=True, exist_ok=True)
    body, lines = b"", []
    records = [("00-database-info", "This file was converted.\n"), *entries]
    for head, text in records:
        raw = text.encode()
        lines.append(f"{head}\t{b64(len(body))}\t{b64(len(raw))}")
        body += raw
    lines.append(f"alias\t{lines[-1].split(chr(9))[1]}\t{lines[-1].split(chr(9))[2]}")
    (base / f"{name}.index").write_text("\n".join(lines) + "\n", "utf-8")
    with gzip.open(base / f"{name}.dict.dz", "wb") as handle:
        handle.write(body)
    return base


def write_wordnet(root: Path, synsets: dict[str, list[tuple[list[str], str]]]) -> Path:
    """WordNet ``data.<pos>`` files: a licence header, then one synset a line."""
    base = root / "usr/share/wordnet"
    base.mkdir(parents=True, exist_ok=True)
    for part in ("noun", "verb", "adj", "adv"):
        lines = ["  1 This software and database is being provided ..."]
        for offset, (words, gloss) in enumerate(synsets.get(part, [])):
            listed = " ".join(f"{w.replace(' ', '_')} 0" for w in words)
            lines.append(f"{offset:08d} 03 n {len(words):02x} {listed} 000 | {gloss}  ")
        (base / f"data.{part}").write_text("\n".join(lines) + "\n", "utf-8")
    return base


def write_info(root: Path, nodes: list[tuple[str, str]]) -> Path:
    """A gzip'd Texinfo manual of ``(node, body)`` nodes, as python3.11-doc ships it."""
    base = root / "usr/share/info"
    base.mkdir(parents=True, exist_ok=True)
    parts = ["This is python.info.\n"]
    for number, (node, body) in enumerate(nodes):
        parts.append(f"\x1f\nFile: python.info,  Node: {node},  Next: n{number + 1}\n\n"
                     f"{body}\n")
    path = base / "python3.11.info.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(parts))
    return path


def write_all(cache: Path, seed: int = 0, scale: int = 1) -> dict[str, object]:
    """Every hub package under ``cache/debian/``; returns what was written."""
    rng = random.Random(seed)
    debian = cache / "debian"
    books = ["\n".join(sentence(rng) for _ in range(30 * scale)) for _ in range(3)]
    write_ztext(debian / "sword-text-web", books)
    novels = {name: ["TITLE", ""] + [sentence(rng) if i % 5 else "" for i in range(60 * scale)]
              for name in ("emma", "persuasion")}
    write_janeaustenr(debian / "r-cran-janeaustenr", novels)
    gcide = [(f"Word{i}", f"Word{i} \\Word\"{i}\\, n. [L. verbum.]\n   "
              f"{sentence(rng)}\n   [1913 Webster]") for i in range(40 * scale)]
    write_dictd(debian / "dict-gcide", "gcide", gcide)
    foldoc = [(f"term{i}", f"term{i}\n\n   <jargon> {sentence(rng, 12)} See {{term{i + 1}}}."
               f"\n\n   (2001-0{1 + i % 9}-1{i % 10})") for i in range(40 * scale)]
    write_dictd(debian / "dict-foldoc", "foldoc", foldoc)
    synsets = {"noun": [([f"thing {i}", f"object{i}"], f'{sentence(rng, 6)}; "an example"')
                        for i in range(30 * scale)],
               "verb": [([f"do{i}"], sentence(rng, 5)) for i in range(10 * scale)]}
    write_wordnet(debian / "wordnet-base", synsets)
    nodes = [(f"Node {i}", f"Title {i}\n*******\n\n" + "\n\n".join(
        sentence(rng, 14) for _ in range(3))) for i in range(30 * scale)]
    write_info(debian / "python3.11-doc", nodes)
    return {"books": books, "novels": novels, "gcide": gcide, "foldoc": foldoc,
            "synsets": synsets, "nodes": nodes}


#: a two-candidate hub recipe over the fixture corpora: seconds to build
NANO_HUB = ZooRecipe(
    size="nano-hub", vocab_size=400, seq_len=32, batch_size=4, heldout_every=8,
    heldout_blocks=4, corpus_chars=20_000,
    candidates=(CandidateSpec(n_embd=16, n_layer=1, n_head=2, pretrain_steps=3,
                              corpus=("web",)),
                CandidateSpec(n_embd=24, n_layer=2, n_head=2, pretrain_steps=2,
                              corpus=("austen", "gcide"))))
