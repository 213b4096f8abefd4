"""benchmarks/ntk_probe_ablation.py end to end on tiny GPT-2 checkpoints built here, with a
fixture suite (suite.json + one curve file) whose spectra the test measured itself."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ntk_probe_ablation.py"
sys.path.insert(0, str(SCRIPT.parent))  # to import the script's functions

import ntk_probe_ablation as ablation  # noqa: E402
from lensllm.errors import InputError  # noqa: E402

pytestmark = pytest.mark.torch

WORDS = ("the", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree", "red", "blue",
         "small", "big", "and", "or", "but")
#: (n_embd, n_layer, torch seed) of the three candidates
SHAPES = {"a": (16, 1, 0), "b": (24, 2, 1), "c": (32, 2, 2)}
PROBE = 4
LEARNING_RATE, STEPS = 1e-4, 4.0


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("ablation")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
             for _ in range(80)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                        pad_token="<pad>")
    paths = {}
    for name, (width, depth, seed) in SHAPES.items():
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=depth, n_head=2,
                            n_positions=32, bos_token_id=tokenizer.eos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(str(root / name))
        tokenizer.save_pretrained(str(root / name))
        paths[name] = str(root / name)
    task = root / "tiny.jsonl"
    task.write_text("".join(json.dumps({"text": t, "split": "test" if i < 16 else "train"})
                            + "\n" for i, t in enumerate(texts)), "utf-8")
    folder = root / "suite"
    folder.mkdir()
    meta = {"format_version": 1, "zoo": "none", "seed": 0, "target": 64, "budgets": [],
            "n0": 4, "training": {"max_length": 24, "num_threads": 1},
            "ntk": {"enabled": True, "params": "last", "probe_size": PROBE},
            "tasks": {"tiny": {"kind": "text", "file": "tiny-not-in-cache.jsonl"}}}
    (folder / "suite.json").write_text(json.dumps(meta), "utf-8")
    # The spectra of the default setting, measured here as the suite would have; the
    # curves follow a rectified law whose D_l grows a -> c.
    spec = {"path": str(task), "name": "tiny", "n0": 4, "test_size": 256, "val_size": 8,
            "seed": 0}
    curves = []
    for i, name in enumerate(SHAPES):
        measured = ablation.measure({"model": name, "path": paths[name], "task": spec,
                                     "params": "last", "probe": PROBE,
                                     "projection_dim": None, "seed": 0, "threads": 1,
                                     "max_length": 24})
        d_l, beta = 2.0 * 3**i, 0.6
        sizes = [4, 8, 16, 32, 64]
        curves.append({
            "model": name, "zero_shot": 3.0 / d_l + 1.0,
            "points": [[n, 3.0 / (d_l + n**beta) + 1.0] for n in sizes],
            "ntk": {"eigenvalues": measured["eigenvalues"],
                    "projections": [a / PROBE for a in measured["projections"]],
                    "learning_rate": LEARNING_RATE, "steps": STEPS}})
    (folder / "tiny.json").write_text(json.dumps({"task": "tiny", "curves": curves}), "utf-8")
    return {"folder": folder, "paths": paths, "task": task, "spec": spec}


def _command(suite: dict[str, Any], *extra: str) -> list[str]:
    models = [f"--model={name}={path}" for name, path in suite["paths"].items()]
    return [sys.executable, str(SCRIPT), "--suite", str(suite["folder"]), "--val-size", "8",
            f"--task-file=tiny={suite['task']}", *models, *extra]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_end_to_end_tables_and_reproduction(suite: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "raw.json"
    proc = _run(_command(suite, "--settings", "last/4,lora/4,all/4/k64", "--json", str(out)))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "| last/4 | 3 |" in text and "| all/4/k64 | 3 |" in text  # cost rows: 3 runs
    assert "ρ(F, D_l)" in text and "| suite export | tiny | 3 |" in text
    raw = json.loads(out.read_text("utf-8"))
    assert raw["settings"] == ["last/4", "lora/4", "all/4/k64"] and raw["tasks"] == ["tiny"]
    rows = raw["measurements"]
    assert len(rows) == 9 and not any("error" in r for r in rows)
    assert all(r["feature_dim"] == 64 for r in rows if r["setting"] == "all/4/k64")
    assert all(r["cpu_s"] > 0 and r["peak_mb"] > 0 and r["rise_mb"] >= 0 for r in rows)
    stats = {s["setting"]: s for s in raw["correlations"]}
    # The default setting reproduces the suite's F (same probe, same subset, no sketch).
    assert stats["last/4"]["max_rel_diff_suite"] < 1e-9
    assert stats["last/4"]["rho_suite"] == pytest.approx(1.0)
    assert stats["suite export"]["rho_dl"] == stats["last/4"]["rho_dl"]
    # the fixture's D_l grows a -> c, as does the zero-shot loss it implies (3/D_l + 1 falls)
    assert stats["baseline: zero-shot loss"]["rho_dl"] == pytest.approx(-1.0)
    assert stats["baseline: params"]["max_rel_diff_suite"] is None
    for s in stats.values():
        for key in ("rho_dl", "rho_knee"):
            assert s[key] is None or -1.0 <= s[key] <= 1.0
    row = next(r for r in rows if r["model"] == "a")
    lam, proj = np.array(row["eigenvalues"]), np.array(row["projections"])
    assert row["F"] == pytest.approx(float(np.sum(np.exp(-2 * LEARNING_RATE * lam * STEPS)
                                                  * proj / PROBE)))
    # --reuse takes every measurement from the earlier file: nothing is measured again.
    again = tmp_path / "again.json"
    proc = _run(_command(suite, "--settings", "last/4,lora/4,all/4/k64", "--json", str(again),
                         "--reuse", str(out)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("(reused)") == 9
    assert json.loads(again.read_text("utf-8"))["measurements"] == rows


def test_projected_all_parameters_in_process(suite: dict[str, Any]) -> None:
    job = {"model": "a", "path": suite["paths"]["a"], "task": suite["spec"], "params": "all",
           "probe": PROBE, "projection_dim": 64, "seed": 0, "threads": 1, "max_length": 24}
    projected = ablation.measure(job)
    exact = ablation.measure({**job, "projection_dim": None})
    # 'all' projected to 64 columns: the row length is k, the selection every parameter.
    assert projected["feature_dim"] == 64 and exact["feature_dim"] == exact["n_params"] > 64
    assert projected["n_params"] == exact["n_params"]
    assert projected["eigenvalues"] != exact["eigenvalues"]
    assert np.sum(projected["projections"]) == pytest.approx(np.sum(exact["projections"]))


def test_lora_and_probe_sizes_in_process(suite: dict[str, Any]) -> None:
    job = {"model": "b", "path": suite["paths"]["b"], "task": suite["spec"], "params": "lora",
           "probe": 6, "projection_dim": None, "seed": 3, "threads": 1, "max_length": 24}
    lora = ablation.measure(job)
    # rank-8 adapters on c_attn (width 24 -> 72) in 2 layers: A 8x24 and B 72x8 each.
    assert lora["n_params"] == 2 * (8 * 24 + 72 * 8)
    assert len(lora["eigenvalues"]) == 6
    assert ablation.measure(job)["eigenvalues"] == lora["eigenvalues"]  # seeded init


def test_one_factor_settings_and_bad_settings() -> None:
    default = ablation.Setting("last", 32)
    labels = [s.label for s in ablation.one_factor_settings(default, 1024)]
    assert labels == ["last/32", "all/32", "lora/32", "last/16", "last/64", "last/32/k1024"]
    projected = ablation.one_factor_settings(ablation.Setting("all", 16, 512), 1024)
    assert [s.label for s in projected][-1] == "all/16"
    assert ablation.parse_setting(" all/64/k8 ") == ablation.Setting("all", 64, 8)
    for bad in ("first/32", "last", "last/1", "last/32/8", "last/x"):
        with pytest.raises(InputError) as caught:
            ablation.parse_setting(bad)
        assert str(caught.value) == (
            f"setting {bad.strip()!r} is not PARAMS/PROBE[/kDIM] with PARAMS one of last, "
            "all, lora, PROBE >= 2 and DIM >= 1 (e.g. last/32 or all/64/k1024)")


def test_missing_task_file_is_one_line(suite: dict[str, Any]) -> None:
    proc = _run([sys.executable, str(SCRIPT), "--suite", str(suite["folder"]),
                 "--cache-dir", str(suite["folder"]), "--settings", "last/4"])
    assert proc.returncode == 2
    missing = suite["folder"] / "tasks" / "tiny-not-in-cache.jsonl"
    assert proc.stderr == (f"error: task file {missing} of task 'tiny' does not exist; "
                           "pass --task-file tiny=PATH\n")
