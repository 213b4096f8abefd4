"""The shared helpers of lensllm.fileio, and the hash values that must never change.

The pinned values were computed on the tree before the helpers were shared (commit
e9ea593): results stores, task caches and zoo manifests written then must still be
found by their keys.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from lensllm.errors import one_line
from lensllm.fileio import (
    JsonLineError,
    atomic_write_bytes,
    atomic_write_text,
    canonical_json,
    iter_jsonl,
    sha256_text,
    short_hash,
)
from lensllm.hf.candidates import _fingerprint_files
from lensllm.hf.tasks import Task
from lensllm.run.store import job_key
from lensllm.zoo.build import _candidate_fingerprint
from lensllm.zoo.recipes import RECIPES, derive_seed
from lensllm.zoo.tokenizer import tokenizer_fingerprint

SAMPLE = {"b": [1, 2.5, None, True], "a": "ünïcödé", "c": {"z": 1, "y": "x"}}


def test_canonical_json_and_hashes() -> None:
    assert canonical_json(SAMPLE) == (
        '{"a":"\\u00fcn\\u00efc\\u00f6d\\u00e9","b":[1,2.5,null,true],"c":{"y":"x","z":1}}')
    assert canonical_json({"p": Path("/x")}, default=str) == '{"p":"/x"}'
    assert sha256_text("") == ("e3b0c44298fc1c149afbf4c8996fb924"
                               "27ae41e4649b934ca495991b7852b855")
    assert short_hash(SAMPLE, 64).startswith(short_hash(SAMPLE))
    assert len(short_hash(SAMPLE, 32)) == 32


def test_pinned_store_candidate_and_task_hashes(tmp_path: Path) -> None:
    spec = {"kind": "finetune", "size": 64, "seed": 1, "path": Path("/x/y"), "text": "ünï",
            "candidate": {"checkpoint": "abc", "method": "lora", "lora_rank": 8},
            "task": {"content": "0123", "n_examples": 10}}
    assert job_key(spec) == "6b500f4cde478e1080b5a17ae6305ad9"
    assert short_hash(SAMPLE) == "cef3f08259127590"  # candidate identity, tokenisation keys
    pairs = Task.from_examples(
        "t", [{"input": f"q{i}", "target": f"a{i}", "split": "test" if i < 3 else "train"}
              for i in range(20)], val_size=2, n0=4)
    assert pairs.identity()["content"] == "707700eb6bdea9cb"
    assert pairs.identity_hash() == "556174019f37e7e1"
    texts = Task.from_examples("t2", [f"text {i} ü" for i in range(30)], test_size=5,
                               val_size=5, seed=3)
    assert texts.identity_hash() == "e66091d93fe772a8"
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "a.safetensors").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "b.bin").write_bytes(bytes((i * 7) % 256 for i in range(3 << 20)))
    files = [tmp_path / name for name in ("config.json", "a.safetensors", "b.bin")]
    assert _fingerprint_files(files, tmp_path) == "9f297d986aad7691"


def test_pinned_zoo_hashes(tmp_path: Path) -> None:
    demo = RECIPES["demo"]
    assert _candidate_fingerprint(demo.candidates[0], demo, 0, "tokhash", "corpushash") == (
        "7cb30be1aa4d76d6a50e849e42db8516ea78752b6fcf471f77a39a5d5458ec8b")
    assert tokenizer_fingerprint(demo, "corpushash") == (
        "b24ef14c97da50351e93882eb3d375da7551031d3fe54ffeeed22b02b2c15ea8")
    assert derive_seed(0, "task", "pydoc-topics") == 5496864193405377170
    assert derive_seed(0, "candidate", "d64-L2-pt1000") == 287943643620064866


@pytest.mark.skipif(importlib.util.find_spec("safetensors") is None
                    or importlib.util.find_spec("torch") is None,
                    reason="needs torch and safetensors")
def test_pinned_zoo_weights_hash(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from lensllm.zoo.manifest import weights_hash

    save_file({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
               "b": torch.tensor([1, 2], dtype=torch.int64)}, str(tmp_path / "model.safetensors"))
    assert weights_hash(tmp_path) == (
        "76abbca1bdcd7ae9538d277c2ee2d59558ac45c63458fd1f3a1bd747753bcc7a")


def test_atomic_writes_replace_whole_files_and_leave_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    assert atomic_write_text(target, "old ü") == target
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.json"]
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.json"]


def test_iter_jsonl_numbers_lines_and_skips_blank_ones() -> None:
    lines = ['{"a": 1}\n', "\n", "  \n", '[2]\n', '"x"']
    assert list(iter_jsonl(lines)) == [(1, {"a": 1}), (4, [2]), (5, "x")]
    with pytest.raises(JsonLineError) as caught:
        list(iter_jsonl(['{"a": 1}', "", '{"a": ']))
    assert caught.value.number == 3 and caught.value.error.msg == "Expecting value"
    assert isinstance(caught.value, ValueError) and json.loads('{"a": 1}') == {"a": 1}


def test_one_line_joins_lines_and_cuts_long_messages() -> None:
    assert one_line(ValueError("first line\n  second\tline ")) == "first line second line"
    assert one_line(KeyError()) == "KeyError"
    cut = one_line(RuntimeError("x" * 400))
    assert len(cut) == 300 and cut.endswith("...")
    assert one_line(RuntimeError("y" * 50), limit=20) == "y" * 17 + "..."
