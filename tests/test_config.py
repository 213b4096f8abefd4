"""Run-config parsing: the schema, and one exact message per malformed input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensllm.errors import InputError
from lensllm.run.config import load_config, parse_config

BASE = {"candidates": [{"name": "a", "path": "ckpt-a"}, {"name": "b", "path": "ckpt-b"}],
        "task": {"path": "task.jsonl"}, "budget": 256, "target": 4096}


def config(**changes):
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not ...}


def test_valid_config_and_defaults(tmp_path):
    cfg = parse_config(config(), source=tmp_path / "demo.yaml")
    assert cfg.name == "demo" and cfg.method == "lensllm" and cfg.search == "adaptive"
    assert cfg.run_dir == tmp_path / "runs" / "demo"
    assert cfg.candidates[0]["path"] == str(tmp_path / "ckpt-a")
    # workers None: one per visible GPU, else one; device auto: a GPU when there is one
    assert cfg.executor.kind == "local" and cfg.executor.workers is None
    assert cfg.executor.device == "auto"
    assert cfg.ntk.enabled and cfg.ntk.params == "last"


BAD = [
    (None, "c.yaml: the config is empty"),
    ([1, 2], "c.yaml: the config must be a mapping of keys to values"),
    (config(candidate=[]), "c.yaml: unknown key 'candidate'; known keys: name, run_dir, "
     "cache_dir, seed, zoo, task, candidates, sizes, budget, target, method, search, "
     "flops_budget, training, ntk, executor"),
    (config(budget=...), "c.yaml: missing key 'budget' (largest subset size to fine-tune on "
     "(integer))"),
    (config(budget="lots"), "c.yaml: budget must be a whole number, got 'lots'"),
    (config(budget=-5), "c.yaml: budget must be >= 1, got -5"),
    (config(budget=4096), "c.yaml: budget (4096) must be smaller than the target (4096)"),
    (config(target=10**13), "c.yaml: target is implausibly large (10000000000000)"),
    (config(budget=2.5), "c.yaml: budget must be a whole number, got 2.5"),
    (config(seed=True), "c.yaml: seed must be a whole number, got True"),
    (config(candidates=[{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]),
     "c.yaml: two candidates are named 'a'; give each a distinct name"),
    (config(candidates=[{"name": "a"}]),
     "c.yaml: candidates[0]: missing 'path' (a local checkpoint folder)"),
    (config(candidates=[{"path": "x", "lr": 1}]),
     "c.yaml: candidates[0]: unknown key 'lr'; known keys: name, path, method, "
     "learning_rate, lora, gguf_file, trust_remote_code"),
    (config(candidates=[]), "c.yaml: candidates must be 'zoo' or a non-empty list of "
     "candidate mappings"),
    (config(candidates="zoo"), "c.yaml: candidates is 'zoo' but the config has no zoo section"),
    (config(task={"path": "zoo"}), "c.yaml: task.path is 'zoo' but the config has no zoo "
     "section"),
    (config(task={"n0": 4}), "c.yaml: task.path is missing (a task file or folder, or 'zoo')"),
    (config(task={"path": "t", "n0": 0}), "c.yaml: task.n0 must be >= 1, got 0"),
    (config(task={"path": "t", "kind": "images"}),
     "c.yaml: task.kind must be text or pairs, got 'images'"),
    (config(sizes=[64, 128, 512]), "c.yaml: sizes include 512, above the budget (256)"),
    (config(sizes=[64, 128]), "c.yaml: give at least 3 sizes (a law needs 3 points)"),
    (config(method="oracle"), "unknown method 'oracle'; choose from zeroshot, subset-loss, "
     "model-size, vanilla, rectified, ats, lensllm, lensllm-paper, nlpmetrics, subtuning, "
     "zero-shot, modelsize"),
    (config(search="random"), "c.yaml: search must be adaptive or grid, got 'random'"),
    (config(search="adaptive", method="nlpmetrics"), "c.yaml: the adaptive search needs a "
     "method that predicts the loss at the target; 'nlpmetrics' only ranks the candidates: "
     "use search: grid, or a method such as lensllm, ats or rectified"),
    (config(flops_budget=2), "c.yaml: flops_budget must be between 1e-06 and 1, got 2"),
    (config(flops_budget=float("nan")), "c.yaml: flops_budget must be a number, got nan"),
    (config(executor={"kind": "slurm"}), "c.yaml: executor.kind must be local or ray, got "
     "'slurm'"),
    (config(executor={"workers": 0}), "c.yaml: executor.workers must be >= 1, got 0"),
    (config(executor={"threads": 2}), "c.yaml: executor: unknown key 'threads'; known keys: "
     "kind, workers, retries, address, num_cpus, num_gpus, device"),
    (config(executor={"device": "tpu"}), "c.yaml: executor.device must be auto, cpu or cuda, "
     "got 'tpu' (choose GPUs with CUDA_VISIBLE_DEVICES)"),
    (config(executor={"device": "cuda:1"}), "c.yaml: executor.device must be auto, cpu or "
     "cuda, got 'cuda:1' (choose GPUs with CUDA_VISIBLE_DEVICES)"),
    (config(ntk={"probe_size": 1}), "c.yaml: ntk.probe_size must be >= 2, got 1"),
    (config(ntk={"enabled": "yes"}), "c.yaml: ntk.enabled must be true or false"),
    (config(zoo={"size": "huge"}), "c.yaml: zoo.size must be micro, demo or small, got "
     "'huge'"),
    (config(training=[1]), "c.yaml: training must be a mapping of settings"),
    (config(name="my run!"), "c.yaml: name must use letters, digits, '-', '_' or '.', got "
     "'my run!'"),
]


@pytest.mark.parametrize("data, message", BAD)
def test_bad_configs_give_exact_messages(data, message):
    with pytest.raises(InputError) as info:
        parse_config(data, source="c.yaml")
    assert str(info.value) == message


def test_methods_that_only_rank_default_to_the_grid_search(tmp_path):
    assert parse_config(config(method="model-size"), source="c.yaml").search == "grid"
    assert parse_config(config(method="ats"), source="c.yaml").search == "adaptive"


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value).endswith("nope.yaml: no such config file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [1, 2\ntarget: 3\n")
    with pytest.raises(InputError) as info:
        load_config(bad)
    assert str(info.value).startswith("bad.yaml: not valid YAML at line")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"budget: \xff\xfe\n")
    with pytest.raises(InputError) as info:
        load_config(binary)
    assert str(info.value) == ("bin.yaml: not UTF-8 text (invalid byte at offset 8); save it "
                               "as UTF-8")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("budget: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(unsafe)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6),
                         st.floats(allow_nan=True), st.text(max_size=8))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "budget", "target", "candidates", "task",
                                        "sizes", "method", "search", "flops_budget", "ntk",
                                        "executor", "zoo", "training", "seed", "other"]),
                       yaml_values, max_size=8))
def test_config_fuzz_never_raises_anything_but_input_error(data):
    with contextlib.suppress(InputError):
        parse_config({**BASE, **data}, source="fuzz.yaml")
