"""Malformed inputs through the real command line: one exact line on stderr, exit 2.

Each case writes its files into a fresh folder, runs ``python -m lensllm ...`` there in
a subprocess (relative paths, so the messages are exact) and checks that stderr is the
single line ``error: ...`` -- no traceback, no warning, no progress -- and that the exit
code is 2.  This table is where the exact lines of these faults are pinned; the curve
files' cases also run in-process through ``load_curves`` (quick), and the unit tests
(test_curves.py) check only where and what for the faults seen here.

Cases run concurrently (each is a separate interpreter, mostly importing).  The quick
suite runs a dozen (one per kind of fault, ~10 s on 2 cores); ``-m slow`` runs all 50.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CANDIDATE_MAP = ("name, path, method, learning_rate, lora, gguf_file, trust_remote_code, "
                 "revision")
TOP_KEYS = ("name, run_dir, cache_dir, seed, zoo, task, candidates, sizes, budget, target, "
            "method, search, flops_budget, training, ntk, hessian, executor")
METHODS = ("zeroshot, subset-loss, model-size, vanilla, rectified, ats, lensllm, "
           "lensllm-paper, nlpmetrics, subtuning, zero-shot, modelsize")
TRAINING_KEYS = ("batch_size, eval_batch_size, eval_every, gradient_checkpointing, "
                 "max_epochs, max_grad_norm, max_length, max_steps, micro_batch_size, "
                 "num_threads, patience, precision, schedule, warmup_ratio, weight_decay")
WIDE = "config name,0,200,400,800\na,3.0,2.5,2.2,2.0\nb,3.2,2.4,2.1,1.9\n"
# A model folder that passes inspection without torch: a GPT-2 config and a weight file
# (never loaded: every case below fails before any model is loaded).
GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64,
        "vocab_size": 256, "bos_token_id": 0, "eos_token_id": 0}
TEXT_TASK = "".join(json.dumps({"text": f"example number {i} of the task"}) + "\n"
                    for i in range(60))


def _yaml(task: str = "task.jsonl", candidates: str = "[{name: a, path: model}]",
          extra: str = "", budget: Any = 16, target: Any = 64) -> str:
    return (f"task: {{path: {task}, test_size: 8, val_size: 8, n0: 8}}\n"
            f"candidates: {candidates}\nbudget: {budget}\ntarget: {target}\n{extra}")


@dataclass(frozen=True)
class Case:
    """One malformed input: files to write (name -> text, bytes or a maker), argv, the
    exact stderr line, and what the case needs."""

    id: str
    argv: tuple[str, ...]
    message: str
    files: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    drop_file_caps: bool = False


def _model(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(GPT2))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)


def _dir(folder: Path) -> None:
    folder.mkdir()


def _not_a_model(folder: Path) -> None:
    folder.mkdir()
    (folder / "README.md").write_text("weights are elsewhere\n")


def _broken_model_config(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": ')


def _weightless_model(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(GPT2))


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path.name)  # points at itself


def _unreadable(path: Path) -> None:
    path.write_text(WIDE)
    path.chmod(0)


def _no_ray(folder: Path) -> None:
    """A package that makes ``import ray`` fail, as on a machine without the extra."""
    folder.mkdir()
    (folder / "ray").mkdir()
    (folder / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")


SELECT = ("select", "t.csv", "--budget", "400", "--target", "800")
RUN = ("run", "c.yaml", "--quiet")

CASES = [
    # ------------------------------------------------------------------ curve files
    Case("curves-empty", SELECT, "t.csv: the file is empty", {"t.csv": ""}),
    Case("curves-header-only", SELECT, "t.csv: the file has a header but no model rows",
         {"t.csv": "config name,0,200\n"}),
    Case("curves-nan-loss", SELECT,
         "t.csv: model 'a', column '200': loss is NaN; losses must be finite and > 0",
         {"t.csv": "config name,0,200,400\na,3,nan,2\n"}),
    Case("curves-negative-loss", SELECT,
         "t.csv: model 'a', column '200': loss -1 is <= 0; losses must be finite and > 0",
         {"t.csv": "config name,0,200,400\na,3,-1,2\n"}),
    Case("curves-huge-loss", SELECT,
         "t.csv: model 'a', column '400': loss 1e9 is implausibly large (> 1e6)",
         {"t.csv": "config name,0,200,400\na,3,2,1e9\n"}),
    Case("curves-huge-size", SELECT,
         "t.csv: column '1e16': data size '1e16' is implausibly large (> 1e15 examples)",
         {"t.csv": "config name,0,200,1e16\na,3,2,1\n"}),
    Case("curves-wrong-type-size", SELECT,
         "t.csv: column 'lots': 'lots' is not a data size (a whole number of examples)",
         {"t.csv": "config name,0,200,lots\na,3,2,2\n"}),
    Case("curves-duplicate-size", SELECT, "t.csv: data size 200 appears in two columns",
         {"t.csv": "config name,0,200,2e2\na,3,2,2\n"}),
    Case("curves-unknown-column", SELECT,
         "t.csv: unknown column 'seed'; a long-format file has columns model, n, loss and "
         "optionally params, family, task", {"t.csv": "model,n,loss,seed\na,200,3,1\n"}),
    Case("curves-invalid-json", SELECT,
         "t.csv: not valid JSON (Expecting property name enclosed in double quotes, line 1)",
         {"t.csv": "{oops"}),
    Case("curves-json-wrong-type", SELECT, "t.csv: expected a JSON object with a 'curves' list",
         {"t.csv": '{"curves": 3}'}),
    Case("curves-json-unknown-key", SELECT, "t.csv: curves[0]: unknown key(s) extra",
         {"t.csv": '{"curves": [{"model": "a", "points": [[200, 3]], "extra": 1}]}'}),
    Case("curves-not-utf8", SELECT,
         "t.csv: not UTF-8 text (invalid byte at offset 21); save it as UTF-8",
         {"t.csv": "config name,0,200\nmod\xe8le,3,2\n".encode("latin-1")}),
    Case("curves-binary", SELECT, "t.csv: binary data, expected a CSV or JSON curve file",
         {"t.csv": b"config name\x00\x01"}),
    Case("curves-missing", SELECT, "t.csv: no such file"),
    Case("curves-directory", SELECT, "t.csv: is a directory, expected a curve file",
         {"t.csv": _dir}),
    Case("curves-symlink-loop", SELECT,
         "t.csv: cannot read the file (Too many levels of symbolic links)",
         {"t.csv": _symlink_loop}),
    Case("curves-unreadable", SELECT,
         "Invalid value for 'CURVES': Path 't.csv' is not readable.",
         {"t.csv": _unreadable}, drop_file_caps=True),
    Case("curves-too-few-sizes", ("select", "t.csv", "--budget", "200", "--target", "800"),
         "t: model 'a' has 1 measured size(s) <= budget 200 (200); the lensllm method needs "
         "at least 3", {"t.csv": WIDE}),
    Case("select-budget-not-below-target", ("select", "t.csv", "--budget", "800", "--target",
                                            "800"),
         "budget (800) must be smaller than the target (800): the point is to predict the "
         "loss at a data size you have not trained on", {"t.csv": WIDE}),
    Case("select-negative-budget", ("select", "t.csv", "--budget", "-5", "--target", "800"),
         "budget must be a positive number of examples, got -5", {"t.csv": WIDE}),
    Case("select-budget-wrong-type", ("select", "t.csv", "--budget", "lots", "--target",
                                      "800"),
         "Invalid value for '--budget': 'lots' is not a valid integer.", {"t.csv": WIDE}),
    Case("select-unknown-method", (*SELECT, "--method", "oracle"),
         f"unknown method 'oracle'; choose from {METHODS}", {"t.csv": WIDE}),
    # ------------------------------------------------------------------ run configs
    Case("config-unknown-key", RUN, f"c.yaml: unknown key 'candidate'; known keys: {TOP_KEYS}",
         {"c.yaml": "candidate: []\nbudget: 1\ntarget: 2\n"}),
    Case("config-wrong-type", RUN, "c.yaml: budget must be a whole number, got 'lots'",
         {"c.yaml": _yaml(budget="lots")}),
    Case("config-negative-budget", RUN, "c.yaml: budget must be >= 1, got -5",
         {"c.yaml": _yaml(budget=-5)}),
    Case("config-budget-not-below-target", RUN,
         "c.yaml: budget (64) must be smaller than the target (64)",
         {"c.yaml": _yaml(budget=64, target=64)}),
    Case("config-huge-target", RUN, "c.yaml: target is implausibly large (10000000000000)",
         {"c.yaml": _yaml(target=10**13)}),
    Case("config-infinite-budget", RUN, "c.yaml: budget must be a whole number, got inf",
         {"c.yaml": _yaml(budget=".inf")}),
    Case("config-duplicate-candidates", RUN,
         "c.yaml: two candidates are named 'a'; give each a distinct name",
         {"c.yaml": _yaml(candidates="[{name: a, path: x}, {name: a, path: y}]")}),
    Case("config-candidate-unknown-key", RUN,
         f"c.yaml: candidates[0]: unknown key 'lr'; known keys: {CANDIDATE_MAP}",
         {"c.yaml": _yaml(candidates="[{path: x, lr: 1}]")}),
    Case("config-wrong-executor", RUN,
         "c.yaml: executor.kind must be local or ray, got 'slurm'",
         {"c.yaml": _yaml(extra="executor: {kind: slurm}\n")}),
    Case("config-not-utf8", RUN,
         "c.yaml: not UTF-8 text (invalid byte at offset 8); save it as UTF-8",
         {"c.yaml": b"budget: \xff\xfe\n"}),
    Case("config-invalid-yaml", RUN,
         "c.yaml: not valid YAML at line 2, column 7 (expected ',' or ']', but got ':')",
         {"c.yaml": "budget: [1, 2\ntarget: 3\n"}),
    Case("config-unsafe-yaml", RUN,
         "c.yaml: not valid YAML at line 1, column 9 (could not determine a constructor for "
         "the tag 'tag:yaml.org,2002:python/object/apply:os.system')",
         {"c.yaml": "budget: !!python/object/apply:os.system ['echo pwned']\n"}),
    Case("config-empty", RUN, "c.yaml: the config is empty", {"c.yaml": ""}),
    Case("config-missing", RUN, "c.yaml: no such config file"),
    Case("config-directory", RUN, "c.yaml: is a directory, expected a YAML config file",
         {"c.yaml": _dir}),
    Case("config-unreadable", RUN, "Invalid value for 'CONFIG': Path 'c.yaml' is not readable.",
         {"c.yaml": _unreadable}, drop_file_caps=True),
    Case("config-missing-checkpoint", RUN,
         "candidate 'a': checkpoint '{tmp}/model' does not exist; give the path of a local "
         "Hugging Face model directory (with config.json) or of a .gguf file",
         {"c.yaml": _yaml(candidates="[{name: a, path: ./model}]"), "task.jsonl": TEXT_TASK},
         needs=("transformers",)),
    Case("config-hub-id-not-cached", RUN,
         "candidate 'a': 'model' is not a local folder, and as a Hub model it is not in the "
         "Hugging Face cache /nonexistent-hf-home/hub, which HF_HUB_OFFLINE=1 forbids "
         "filling; download it where there is network (hf download model) into that cache, "
         "or point HF_HOME at a cache that has it",
         {"c.yaml": _yaml(), "task.jsonl": TEXT_TASK}, needs=("transformers",),
         env={"HF_HOME": "/nonexistent-hf-home"}),
    Case("config-checkpoint-not-a-model", RUN,
         "candidate 'a': 'model' is not a model checkpoint (no config.json and no .gguf file "
         "in it); give a directory written by save_pretrained",
         {"c.yaml": _yaml(), "task.jsonl": TEXT_TASK, "model": _not_a_model},
         needs=("transformers",)),
    Case("config-checkpoint-broken-config", RUN,
         "candidate 'a': '{tmp}/model/config.json' is not a readable JSON model config "
         "(Expecting value: line 1 column 16 (char 15)); re-save the checkpoint with "
         "save_pretrained",
         {"c.yaml": _yaml(), "task.jsonl": TEXT_TASK, "model": _broken_model_config},
         needs=("transformers",)),
    Case("config-checkpoint-without-weights", RUN,
         "candidate 'a': checkpoint '{tmp}/model' has a config.json but no weight files "
         "(*.safetensors or *.bin); re-save it with save_pretrained",
         {"c.yaml": _yaml(), "task.jsonl": TEXT_TASK, "model": _weightless_model},
         needs=("transformers",)),
    Case("config-missing-task", RUN, "task file 'task.jsonl' does not exist; check the path",
         {"c.yaml": _yaml(), "model": _model}, needs=("transformers",)),
    Case("config-empty-task", RUN,
         "task 'task' (task.jsonl): the task has no examples; give a non-empty file",
         {"c.yaml": _yaml(), "task.jsonl": "", "model": _model}, needs=("transformers",)),
    Case("config-sizes-larger-than-task", RUN,
         "task 'task': a training subset of 64 examples was asked for, but the training pool "
         "holds only 44 (60 examples minus 8 test and 8 validation); use a size <= 44 or a "
         "larger task",
         {"c.yaml": _yaml(budget=64, target=128, extra="sizes: [16, 32, 64]\n"),
          "task.jsonl": TEXT_TASK, "model": _model}, needs=("transformers",)),
    Case("config-unknown-training-setting", RUN,
         f"c.yaml: training: unknown setting(s) lr; known: {TRAINING_KEYS}",
         {"c.yaml": _yaml(extra="training: {lr: 0.1}\n"), "task.jsonl": TEXT_TASK,
          "model": _model}, needs=("transformers",)),
    Case("config-ray-not-installed", RUN,
         "the ray executor needs Ray, which is not installed; install it with: pip install "
         "'lensllm[ray]' (or use executor: {kind: local})",
         {"c.yaml": _yaml(extra="executor: {kind: ray}\n"), "task.jsonl": TEXT_TASK,
          "model": _model, "noray": _no_ray}, needs=("transformers",),
         env={"PYTHONPATH": "noray"}),
    Case("config-ray-unreachable", RUN,
         "executor: cannot reach the Ray cluster at '127.0.0.1:1' (Connection refused); start "
         "it with 'ray start --head' on the head node and give its address, or leave "
         "executor.address unset for a local Ray",
         {"c.yaml": _yaml(budget=32,
                          extra="executor: {kind: ray, address: '127.0.0.1:1'}\n"),
          "task.jsonl": TEXT_TASK, "model": _model}, needs=("transformers", "ray")),
]


def _drop_file_capabilities() -> None:  # pragma: no cover - runs in the child
    """As root, give up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (bounding set, before
    exec) so that a mode-000 file is unreadable, as it is for any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _make(case: Case, folder: Path) -> None:
    for name, content in case.files.items():
        path = folder / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")


def _run(case: Case, folder: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **case.env)
    preexec: Callable[[], None] | None = None
    if case.drop_file_caps and os.geteuid() == 0:
        preexec = _drop_file_capabilities
    return subprocess.run([sys.executable, "-m", "lensllm", *case.argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=preexec)


def _available(case: Case) -> str | None:
    import importlib.util

    for module in case.needs:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if case.drop_file_caps and os.geteuid() == 0 and not _can_drop_capabilities():
        return "cannot make a file unreadable for root here (needs Linux and CAP_SETPCAP)"
    return None


def _can_drop_capabilities() -> bool:
    """Whether this (root) process may drop capabilities from its children's bounding set."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    effective = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")),
                     "0")
    return bool(int(effective, 16) >> 8 & 1)  # CAP_SETPCAP


# Every case costs an interpreter start (about 1 s; 3 s for those that import torch and
# transformers): the quick suite runs one of each kind of fault, the rest are slow.
QUICK = {"curves-empty", "curves-nan-loss", "curves-not-utf8", "curves-unreadable",
         "select-budget-not-below-target", "config-unknown-key", "config-wrong-type",
         "config-duplicate-candidates", "config-not-utf8", "config-unreadable",
         "config-missing-checkpoint", "config-checkpoint-not-a-model"}


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [] if case.id in QUICK else [pytest.mark.slow]
        if "transformers" in case.needs:
            marks.append(pytest.mark.torch)
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every selected and available case, run concurrently once."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    jobs = {}
    for case in CASES:
        if case.id in selected and _available(case) is None:
            folder = tmp_path_factory.mktemp(case.id)
            _make(case, folder)
            jobs[case.id] = (case, folder)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {cid: pool.submit(_run, case, folder) for cid, (case, folder) in jobs.items()}
        return {cid: (future.result(), jobs[cid][1]) for cid, future in futures.items()}


CURVE_FILE_CASES = [c for c in CASES if c.argv[:2] == ("select", "t.csv")
                    and c.message.startswith("t.csv: ") and not c.drop_file_caps]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CURVE_FILE_CASES])
def test_the_curve_reader_raises_the_line_the_cli_prints(case, tmp_path, monkeypatch):
    """Every curve-file fault, in-process and quick (most CLI runs above are slow): the
    reader's InputError is exactly the line the command prints after 'error: '."""
    from lensllm.core.formats import load_curves
    from lensllm.errors import InputError

    _make(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        load_curves("t.csv")
    assert str(info.value) == case.message


@pytest.mark.parametrize("case", _params())
def test_bad_input_gives_one_exact_error_line(case, outcomes):
    reason = _available(case)
    if reason:
        pytest.skip(reason)
    out, folder = outcomes[case.id]
    expected = "error: " + case.message.replace("{tmp}", str(folder.resolve()))
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [expected]
    assert out.returncode == 2
    assert out.stdout == ""
