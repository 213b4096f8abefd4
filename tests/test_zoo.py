"""The offline candidate zoo: tokenizer, pretrained checkpoints, manifest, task file.

The quick tests build a "nano" recipe (two candidates of a few dozen steps, about 5 s
on 2 cores); the real ``micro`` recipe, which takes longer, is marked slow.  Every
build goes into a temporary folder and loads through the real Hugging Face code path
(``AutoModelForCausalLM`` / ``AutoTokenizer`` on a local folder, hub offline).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import lensllm.zoo as zoo  # noqa: E402
from lensllm.errors import InputError  # noqa: E402
from lensllm.zoo import corpora  # noqa: E402
from lensllm.zoo.build import (  # noqa: E402
    CandidateSpec,
    ZooRecipe,
    build_task,
    build_zoo,
    load_zoo,
    read_task,
    weights_hash,
    zoo_dir,
)
from lensllm.zoo.manifest import content_hash  # noqa: E402

pytestmark = pytest.mark.torch

if importlib.util.find_spec(corpora.KJV_MODULE) is None:
    pytest.skip(f"the KJV corpus is not installed ({corpora.KJV_PIP_INSTALL})",
                allow_module_level=True)

NANO = ZooRecipe(
    size="nano",
    vocab_size=512,
    seq_len=32,
    batch_size=8,
    candidates=(
        CandidateSpec(n_embd=32, n_layer=1, n_head=2, pretrain_steps=24, learning_rate=4e-3),
        CandidateSpec(n_embd=48, n_layer=2, n_head=4, pretrain_steps=8),
    ),
    heldout_blocks=16,
)
RECORD_FIELDS = {
    "name", "path", "config", "params", "non_embedding_params", "pretrain_steps",
    "pretrain_tokens", "pretrain_learning_rate", "final_pretrain_loss",
    "heldout_pretrain_loss", "pretrain_seconds", "content_hash",
}


def _hashes(manifest: zoo.ZooManifest) -> dict[str, str]:
    return {record.name: record.content_hash for record in manifest.candidates}


@pytest.fixture(scope="module")
def nano_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="module")
def nano_zoo(nano_cache: Path) -> zoo.ZooManifest:
    return build_zoo(nano_cache, NANO, seed=0, workers=1)


def _check_loads(record: zoo.CandidateRecord, manifest: zoo.ZooManifest) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model = AutoModelForCausalLM.from_pretrained(record.path)
    tokenizer = AutoTokenizer.from_pretrained(record.path)
    assert model.config.model_type == "gpt2"
    assert model.config.n_embd == record.config["n_embd"]
    assert model.config.n_layer == record.config["n_layer"]
    assert len(tokenizer) == manifest.vocab_size == model.config.vocab_size
    assert tokenizer.eos_token == tokenizer.pad_token == zoo.END_OF_TEXT
    assert sum(p.numel() for p in model.parameters()) == record.params
    # Byte-level BPE: technical text with symbols round-trips exactly.
    text = 'The "__init__()" method returns None; x ** 2 >= 0.'
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == text
    ids = ids[:, : manifest.seq_len]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss) and 0 < float(loss) < 2 * torch.log(torch.tensor(512.0))


# ------------------------------------------------------------------- quick (nano zoo)


def test_nano_zoo_candidates_load_as_hf_checkpoints(nano_zoo: zoo.ZooManifest) -> None:
    assert [record.name for record in nano_zoo.candidates] == ["d32-L1-pt24", "d48-L2-pt8"]
    for record in nano_zoo.candidates:
        assert record.path.is_dir() and record.path.parent.parent == nano_zoo.root
        assert (record.path / "model.safetensors").is_file()
        assert (record.path / "tokenizer.json").is_file()
        _check_loads(record, nano_zoo)
    assert (nano_zoo.tokenizer_path / "tokenizer.json").is_file()


def test_manifest_is_complete_and_round_trips(nano_cache: Path,
                                              nano_zoo: zoo.ZooManifest) -> None:
    data = json.loads(nano_zoo.path.read_text())
    assert data["size"] == "nano" and data["seed"] == 0
    assert data["corpus"]["sha256"] == corpora.sha256_file(corpora.kjv_path())
    assert data["corpus"]["tokens"] > 900_000  # the whole KJV, about a million tokens
    assert data["software"]["torch"] == torch.__version__
    for item in data["candidates"]:
        assert set(item) == RECORD_FIELDS
        assert not Path(item["path"]).is_absolute()  # the zoo folder can be moved
    for record, spec in zip(nano_zoo.candidates, NANO.candidates, strict=True):
        assert record.pretrain_steps == spec.pretrain_steps
        assert record.pretrain_tokens == spec.pretrain_steps * NANO.batch_size * NANO.seq_len
        assert 0 < record.non_embedding_params < record.params
        assert 0 < record.final_pretrain_loss < 7 and 0 < record.heldout_pretrain_loss < 7
        assert record.pretrain_seconds > 0
        assert record.content_hash == content_hash(record.path)
    # The longer-trained small model has learnt more prose than the briefly trained one.
    short, long_ = nano_zoo.candidate("d48-L2-pt8"), nano_zoo.candidate("d32-L1-pt24")
    assert long_.heldout_pretrain_loss < short.heldout_pretrain_loss
    loaded = load_zoo(nano_cache, NANO, seed=0)
    assert loaded.candidates == nano_zoo.candidates
    assert loaded.tokenizer_hash == nano_zoo.tokenizer_hash
    with pytest.raises(InputError, match="no candidate 'nope'"):
        loaded.candidate("nope")


def test_rebuild_reuses_candidates(nano_cache: Path, nano_zoo: zoo.ZooManifest) -> None:
    messages: list[str] = []
    again = build_zoo(nano_cache, NANO, seed=0, progress=messages.append)
    assert all(record.reused for record in again.candidates)
    assert _hashes(again) == _hashes(nano_zoo)
    assert any(message.startswith("reusing d32-L1-pt24") for message in messages)


def test_same_seed_gives_identical_weights_and_other_seed_differs(
        tmp_path: Path, nano_zoo: zoo.ZooManifest) -> None:
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    messages: list[str] = []
    # Two worker processes here, one process for the fixture: same weights.
    fresh = build_zoo(tmp_path / "a", NANO, seed=0, workers=2, progress=messages.append)
    assert any("worker processes" in message for message in messages)
    assert not any(record.reused for record in fresh.candidates)
    assert [record.name for record in fresh.candidates] == [s.name for s in NANO.candidates]
    assert not list(fresh.root.glob(".blocks-*"))  # the hand-over file is removed
    assert _hashes(fresh) == _hashes(nano_zoo)
    assert fresh.tokenizer_hash == nano_zoo.tokenizer_hash
    # The build leaves the caller's torch settings alone.
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    other = build_zoo(tmp_path / "b", dataclasses.replace(NANO, candidates=NANO.candidates[:1]),
                      seed=1)
    assert other.root.name == "zoo-nano-seed1"
    assert other.candidates[0].content_hash != nano_zoo.candidates[0].content_hash


def test_damaged_or_interrupted_candidates_are_rebuilt(tmp_path: Path,
                                                       nano_zoo: zoo.ZooManifest) -> None:
    shutil.copytree(nano_zoo.root, tmp_path / nano_zoo.root.name)
    damaged = tmp_path / nano_zoo.root.name / "candidates" / "d48-L2-pt8"
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + bytes(16))
    # A crash mid-build leaves only a hidden staging folder, which is ignored.
    leftover = damaged.with_name(".d48-L2-pt8.0123.partial")
    leftover.mkdir()
    rebuilt = build_zoo(tmp_path, NANO, seed=0)
    assert [record.reused for record in rebuilt.candidates] == [True, False]
    assert _hashes(rebuilt) == _hashes(nano_zoo)
    assert weights_hash(damaged) == weights_hash(nano_zoo.candidate("d48-L2-pt8").path)


def test_bad_inputs_raise_input_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="unknown zoo size 'huge'"):
        build_zoo(tmp_path, "huge")
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        build_zoo(tmp_path, NANO, seed=-1)
    with pytest.raises(InputError, match="workers must be a positive integer"):
        build_zoo(tmp_path, NANO, workers=0)
    with pytest.raises(InputError, match="divisible by n_head"):
        build_zoo(tmp_path, ZooRecipe("bad", 512, 32, 8, (CandidateSpec(30, 1, 4, 5),)))
    with pytest.raises(InputError, match="duplicate candidates"):
        build_zoo(tmp_path, ZooRecipe("dup", 512, 32, 8, (CandidateSpec(32, 1, 2, 5),) * 2))
    with pytest.raises(InputError, match="no zoo manifest"):
        load_zoo(tmp_path, "micro", seed=3)
    with pytest.raises(InputError, match="unknown task source"):
        build_task(tmp_path, source="wikipedia")
    with pytest.raises(InputError, match="min_chars <= max_chars"):
        build_task(tmp_path, min_chars=100, max_chars=50)
    monkeypatch.setattr(corpora, "KJV_MODULE", "lensllm_test_no_such_corpus")
    with pytest.raises(InputError, match=re.escape(corpora.KJV_PIP_INSTALL)):
        build_zoo(tmp_path, NANO)


# ------------------------------------------------------------------------------ task


def test_task_from_pydoc_topics(tmp_path: Path) -> None:
    path = build_task(tmp_path)
    meta = json.loads(path.with_name(path.name.replace(".jsonl", ".meta.json")).read_text())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == meta["examples"] > 2_304  # room for 2,048 train + 256 test
    assert meta["test_examples"] == 256 == sum(r["split"] == "test" for r in records)
    assert [r["id"] for r in records] == list(range(len(records)))
    assert all(48 <= len(r["text"]) <= 160 for r in records)
    assert len({r["text"] for r in records}) == len(records)  # no test text in training
    assert len(read_task(path, "train")) == meta["train_examples"]
    assert read_task(path, "test") == [r["text"] for r in records[:256]]
    assert any('"__init__()"' in r["text"] for r in records)  # technical, not prose
    mtime = path.stat().st_mtime_ns
    assert build_task(tmp_path) == path and path.stat().st_mtime_ns == mtime  # reused
    other = build_task(tmp_path, seed=1)
    assert sorted(read_task(other)) == sorted(read_task(path)) != read_task(other)
    with pytest.raises(InputError, match="split must be"):
        read_task(path, "dev")


def test_task_from_texinfo_manual(tmp_path: Path) -> None:
    node = (
        "\x1f\nFile: python.info,  Node: {title},  Next: X,  Up: Top\n\n"
        "{title}\n{rule}\n\n"
        "The *note print(): 1a. function writes text to a stream(1). It accepts any\n"
        "number of positional arguments and converts each with *note str(): 2b.\n\n"
        "   print('{title}', end='')\n\n"
        "* Menu:\n\n* Child::\n\n"
        "   ---------- Footnotes ----------\n\n   (1) https://example.org/stream\n"
    )
    info = tmp_path / "python.info.gz"
    with gzip.open(info, "wt", encoding="utf-8") as handle:
        handle.write("This is python.info, produced by makeinfo.\n")
        for title in ("Built-in Functions", "Printing"):
            handle.write(node.format(title=title, rule="=" * len(title)))
    path = build_task(tmp_path, source="python-info", info_path=info, min_chars=20,
                      max_chars=400, test_examples=1)
    # pinned: the zoo's task files must stay byte-identical across refactorings
    assert corpora.sha256_file(path) == (
        "9ddd8cf09b1d4b3a38aa18ab1f23e32d517599d4013e14802c5970bae916951f")
    texts = sorted(read_task(path))
    assert len(texts) == 2
    assert texts[0].startswith("Built-in Functions\nThe print() function writes text to a "
                               "stream. It accepts")
    assert texts[0].endswith("converts each with str()\nprint('Built-in Functions', end='')")
    assert texts[1] == "Printing\nprint('Printing', end='')"  # repeated prose kept once
    assert "*note" not in texts[0] and "https" not in texts[0] and "Child" not in texts[0]
    with pytest.raises(InputError, match="does not exist"):
        build_task(tmp_path, source="python-info", info_path=tmp_path / "missing.info")


def test_pack_paragraphs_bounds_and_splits_long_text() -> None:
    sentence = "A sentence of eight words that ends here. "
    long_paragraph = sentence * 12
    chunks = corpora.pack_paragraphs(["Heading", long_paragraph, "short"], 30, 100)
    assert all(30 <= len(chunk) <= 100 for chunk in chunks)
    assert chunks[0].startswith("Heading\nA sentence")
    assert "".join(chunks).count("ends here.") == 12
    assert corpora.pack_paragraphs(["x" * 250], 10, 100) == ["x" * 100, "x" * 100, "x" * 50]


# ------------------------------------------------------------------ the command line


def _zoo_build_twice(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lensllm zoo build --size micro`` into an empty cache, then again: the second
    invocation reuses every candidate and prints the same table."""
    from lensllm.cli import main

    args = ["zoo", "build", "--size", "micro", "--cache-dir", str(cache)]
    main(args)
    first = capsys.readouterr()
    root = zoo_dir(cache, "micro", 0).resolve()
    manifest = load_zoo(cache, "micro", seed=0)
    names = [record.name for record in manifest.candidates]
    assert names == [spec.name for spec in zoo.zoo_recipe("micro").candidates]
    assert "pretraining" in first.err and "reusing" not in first.err
    assert "zoo micro (seed 0)" in first.out
    assert all(name in first.out and str(root / "candidates" / name) in first.out
               for name in names)
    task = cache / "tasks" / "python-docs-pydoc-topics-48-160c-test256-seed0.jsonl"
    assert f"task: {task}" in first.out and task.is_file()
    main(args)
    second = capsys.readouterr()
    assert "pretraining" not in second.err
    assert all(f"reusing {name} from" in second.err for name in names)
    assert second.out == first.out
    assert _hashes(load_zoo(cache, "micro", seed=0)) == _hashes(manifest)


def test_cli_zoo_build_builds_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # The nano recipe stands in for micro so the command line is tested in seconds;
    # the real micro goes through the same path in the slow test below.
    monkeypatch.setitem(zoo.RECIPES, "micro", dataclasses.replace(NANO, size="micro"))
    _zoo_build_twice(tmp_path / "cache", capsys)


# -------------------------------------------------------------- slow (the real micro)


@pytest.mark.slow
def test_micro_zoo_builds_loads_and_is_reused(tmp_path: Path) -> None:
    messages: list[str] = []
    manifest = build_zoo(tmp_path, "micro", seed=0, progress=messages.append)
    assert manifest.root == zoo_dir(tmp_path, "micro", 0).resolve()
    assert len(manifest.candidates) >= 3
    assert len({record.content_hash for record in manifest.candidates}) == \
        len(manifest.candidates)
    for record in manifest.candidates:
        _check_loads(record, manifest)
    assert any("pretraining" in message for message in messages)
    again = build_zoo(tmp_path, "micro", seed=0)
    assert all(record.reused for record in again.candidates)
    assert _hashes(again) == _hashes(manifest)


@pytest.mark.slow
def test_cli_zoo_build_micro(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _zoo_build_twice(tmp_path / "cache", capsys)
