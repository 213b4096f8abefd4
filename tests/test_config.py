"""Run-config parsing: the schema, and one exact message per malformed input."""

from __future__ import annotations

import ast
import contextlib
import inspect
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensllm.cli import main
from lensllm.errors import InputError
from lensllm.run.config import (
    CandidateSpec,
    ExecutorSettings,
    HessianSettings,
    NTKSettings,
    RunConfig,
    TaskSettings,
    ZooCandidates,
    ZooSettings,
    load_config,
    parse_candidates,
    parse_config,
    parse_training,
)

BASE = {"candidates": [{"name": "a", "path": "ckpt-a"}, {"name": "b", "path": "ckpt-b"}],
        "task": {"path": "task.jsonl"}, "budget": 256, "target": 4096}


def config(**changes):
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not ...}


def test_valid_config_and_defaults(tmp_path):
    (tmp_path / "ckpt-a").mkdir()  # local; ckpt-b names nothing here, so it is a Hub id
    cfg = parse_config(config(), source=tmp_path / "demo.yaml")
    assert cfg.name == "demo" and cfg.method == "lensllm" and cfg.search == "adaptive"
    assert cfg.run_dir == tmp_path / "runs" / "demo"
    assert cfg.candidates[0].path == str(tmp_path / "ckpt-a")
    assert cfg.candidates[1].path == "ckpt-b"
    # workers None: one per visible GPU, else one; device auto: a GPU when there is one
    assert cfg.executor.kind == "local" and cfg.executor.workers is None
    assert cfg.executor.device == "auto"
    # auto: measured only for a method that reads it (the default lensllm reads neither)
    assert cfg.ntk.enabled == "auto" and cfg.ntk.params == "last"
    assert cfg.hessian.enabled == "auto"
    assert not cfg.measure_ntk and not cfg.measure_hessian


BAD = [
    (None, "c.yaml: the config is empty"),
    ([1, 2], "c.yaml: the config must be a mapping of keys to values"),
    (config(candidate=[]), "c.yaml: unknown key 'candidate'; known keys: name, run_dir, "
     "cache_dir, seed, zoo, task, candidates, sizes, budget, target, method, search, "
     "flops_budget, training, ntk, hessian, executor"),
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
     "c.yaml: candidates[0]: missing 'path' (a local checkpoint folder or a Hub model id)"),
    (config(candidates=[{"path": "x", "lr": 1}]),
     "c.yaml: candidates[0]: unknown key 'lr'; known keys: name, path, method, "
     "learning_rate, lora, gguf_file, trust_remote_code, revision"),
    (config(candidates=[]), "c.yaml: candidates must be 'zoo' or a non-empty list of "
     "candidate mappings"),
    (config(candidates="zoo"), "c.yaml: candidates is 'zoo' but the config has no zoo section"),
    (config(task={"path": "zoo"}), "c.yaml: task.path is 'zoo' but the config has no zoo "
     "section"),
    (config(task={"n0": 4}), "c.yaml: task.path is missing (a task file or folder, or 'zoo'), "
     "or give dataset (a Hub dataset or a folder of data files)"),
    (config(task={"path": "t", "n0": 0}), "c.yaml: task.n0 must be >= 1, got 0"),
    (config(task={"path": "t", "kind": "images"}),
     "c.yaml: task.kind must be text or pairs, got 'images'"),
    (config(sizes=[64, 128, 512]), "c.yaml: sizes include 512, above the budget (256)"),
    (config(sizes=[64, 128]), "c.yaml: sizes [64, 128] hold 2 different size(s); give at "
     "least 3 different sizes (a law needs 3 points)"),
    (config(sizes=[64, 8, 8]), "c.yaml: sizes [64, 8, 8] hold 2 different size(s) (8 "
     "repeated); give at least 3 different sizes (a law needs 3 points)"),
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
    (config(ntk={"enabled": "yes"}), "c.yaml: ntk.enabled must be auto, true or false, "
     "got 'yes'"),
    (config(hessian={"enabled": 1}), "c.yaml: hessian.enabled must be auto, true or false, "
     "got 1"),
    (config(hessian={"samples": 1}), "c.yaml: hessian.samples must be >= 2, got 1"),
    (config(hessian={"probes": 4}), "c.yaml: hessian: unknown key 'probes'; known keys: "
     "enabled, probe_size, samples"),
    (config(zoo={"size": "huge"}), "c.yaml: zoo.size must be micro, demo, small, hub or "
     "hub-pilot, got 'huge'"),
    (config(training=[1]), "c.yaml: training must be a mapping of settings"),
    (config(task={"path": "t", "text_field": 3}), "c.yaml: task.text_field must be a string, "
     "got 3"),
    (config(candidates=[{"name": "a", "path": "x", "method": "qlora"}]),
     "c.yaml: candidate 'a': unknown fine-tuning method 'qlora'; use one of 'full', 'lora'"),
    (config(zoo={}, candidates={"from": "zoo", "learning_rate": -1}),
     "c.yaml: candidate 'from: zoo': 'learning_rate' must be a number > 0 (or unset)"),
    (config(candidates={"learning_rate": 1e-3}), "c.yaml: candidates as a mapping must say "
     "'from: zoo' (the settings then apply to every zoo candidate)"),
    (config(ntk={"params": 3}), "c.yaml: ntk.params must be all, last, lora or a list of "
     "parameter-name prefixes"),
    (config(executor={"address": 1}), "c.yaml: executor.address must be a string like 'auto' "
     "or 'ray://head:10001'"),
    (config(executor={"num_gpus": -1}), "c.yaml: executor.num_gpus must be between 0 and "
     "1024, got -1"),
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


# ------------------------------------------------------------------------ sections

def test_zoo_settings_default_to_the_run_seed():
    assert ZooSettings.from_mapping(None, "c.yaml: zoo", seed=3) == ZooSettings("demo", 3)
    assert ZooSettings.from_mapping({"size": "micro", "seed": 5}, "c.yaml: zoo", seed=3) == \
        ZooSettings("micro", 5)
    assert parse_config(config(zoo={}, seed=7), source="c.yaml").zoo == ZooSettings("demo", 7)


def test_task_settings_resolve_the_path_and_keep_only_what_is_set(tmp_path):
    task = TaskSettings.from_mapping({"path": "t.jsonl", "n0": 8, "kind": None},
                                     "c.yaml: task", tmp_path)
    assert task.to_dict() == {"path": str(tmp_path / "t.jsonl"), "n0": 8}
    assert not task.from_zoo
    zoo = TaskSettings.from_mapping({"path": "zoo"}, "c.yaml: task", tmp_path, has_zoo=True)
    assert zoo.from_zoo and zoo.to_dict() == {"path": "zoo"}


def test_candidate_specs_name_themselves_after_their_folder(tmp_path):
    (tmp_path / "models/gpt2").mkdir(parents=True)
    spec = CandidateSpec.from_mapping({"path": "models/gpt2", "method": "lora",
                                       "lora": {"rank": 4}}, "c.yaml: candidates[0]", tmp_path)
    assert spec == CandidateSpec("gpt2", str(tmp_path / "models/gpt2"),
                                 {"method": "lora", "lora": {"rank": 4}})
    assert spec.to_dict() == {"name": "gpt2", "path": str(tmp_path / "models/gpt2"),
                              "method": "lora", "lora": {"rank": 4}}
    # Nothing at the path, and a repo id's shape: a Hub model, named after its repo.
    hub = CandidateSpec.from_mapping({"path": "HuggingFaceTB/SmolLM2-135M", "revision": "main"},
                                     "c.yaml: candidates[0]", tmp_path)
    assert hub == CandidateSpec("SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M",
                                {"revision": "main"})
    # Not a repo id's shape: a local path (which fails later as missing).
    odd = CandidateSpec.from_mapping({"path": "a/b/c"}, "c.yaml: candidates[0]", tmp_path)
    assert odd.path == str(tmp_path / "a/b/c")


def test_zoo_candidates_share_their_settings(tmp_path):
    zoo = parse_candidates({"from": "zoo", "learning_rate": 1e-3}, "c.yaml", tmp_path,
                           has_zoo=True)
    assert zoo == ZooCandidates({"learning_rate": 1e-3})
    assert parse_candidates("zoo", "c.yaml", tmp_path, has_zoo=True) == ZooCandidates()
    specs = zoo.specs([("d32", "/z/d32"), ("d64", "/z/d64")])
    assert [s.to_dict() for s in specs] == [
        {"name": "d32", "path": "/z/d32", "learning_rate": 1e-3},
        {"name": "d64", "path": "/z/d64", "learning_rate": 1e-3}]


def test_training_is_checked_by_the_train_config():
    assert parse_training(None, "c.yaml") == {}
    pytest.importorskip("torch")
    assert parse_training({"batch_size": 4}, "c.yaml") == {"batch_size": 4}
    with pytest.raises(InputError) as info:
        parse_training({"batch_size": 0}, "c.yaml")
    assert str(info.value) == "c.yaml: training: 'batch_size' must be an integer >= 1"


def test_ntk_and_executor_settings():
    ntk = NTKSettings.from_mapping({"params": ["h.0.", "h.1."], "projection_dim": None},
                                   "c.yaml: ntk")
    assert ntk == NTKSettings(params=["h.0.", "h.1."])
    executor = ExecutorSettings.from_mapping({"kind": "ray", "retries": 0, "num_cpus": 2},
                                             "c.yaml: executor")
    assert executor == ExecutorSettings(kind="ray", retries=0, num_cpus=2.0)
    assert ExecutorSettings.from_mapping(None, "c.yaml: executor") == ExecutorSettings()
    hessian = HessianSettings.from_mapping({"enabled": True, "samples": 4}, "c.yaml: hessian")
    assert hessian == HessianSettings(enabled=True, probe_size=16, samples=4)
    assert hessian.job_settings() == {"probe_size": 16, "samples": 4}


@pytest.mark.parametrize(("changes", "ntk", "why"), [
    ({}, False, "ntk.enabled is auto and method lensllm does not read NTK spectra"),
    ({"method": "lensllm-paper"}, True,
     "ntk.enabled is auto and method lensllm-paper reads NTK spectra"),
    # a method written with settings resolves through the registry
    ({"method": "lensllm-paper[mode=fit-t]", "ntk": {"enabled": "auto"}}, True,
     "ntk.enabled is auto and method lensllm-paper[mode=fit-t] reads NTK spectra"),
    ({"method": "rectified", "ntk": {"enabled": True}}, True,
     "ntk.enabled is true in the config"),
    ({"method": "lensllm-paper", "ntk": {"enabled": False}}, False,
     "ntk.enabled is false in the config"),
])
def test_ntk_is_measured_when_asked_or_when_the_method_reads_it(changes, ntk, why):
    cfg = parse_config(config(**changes), source="c.yaml")
    assert cfg.measurement("ntk") == (ntk, why)
    assert cfg.measure_ntk is ntk
    assert cfg.measurement("hessian") == (
        False, f"hessian.enabled is auto and method {cfg.method} does not read Hessian "
        "measurements")
    explicit = parse_config(config(hessian={"enabled": True}), source="c.yaml")
    assert explicit.measurement("hessian") == (True, "hessian.enabled is true in the config")


def test_auto_hashes_as_what_it_resolves_to():
    """A config's stored hash (what a rerun on its run directory is checked against):
    unchanged for configs that wrote ``enabled: true`` or nothing (pinned: the values of
    the tree before ``auto`` existed), and ``auto`` hashes as the value it resolves to."""
    from lensllm.run.confighash import run_settings, settings_hash

    def digest(**changes) -> str:
        return settings_hash(run_settings(parse_config(config(**changes),
                                                       source="/tmp/c.yaml")))

    assert digest() == "9e3bea8daff58340"
    assert digest(ntk={"enabled": True}, method="lensllm-paper") == "4f0ccc3f8fbc8f56"
    assert digest(ntk={"enabled": True, "probe_size": 16}) == "9cc617035edc86ff"
    assert digest(ntk={"enabled": "auto"}, method="lensllm-paper") == "4f0ccc3f8fbc8f56"
    assert digest(ntk={"enabled": "auto"}) == digest(ntk={"enabled": False})
    assert digest(hessian={"enabled": "auto"}) == digest(hessian={"enabled": False})


def _complexity(node: ast.AST) -> int:
    """McCabe's number, roughly: 1 + the branch points in the function's own body."""
    branches = (ast.If, ast.IfExp, ast.For, ast.While, ast.ExceptHandler, ast.BoolOp,
                ast.comprehension, ast.match_case)
    return 1 + sum(isinstance(child, branches) for child in ast.walk(node))


def test_the_config_reads_section_by_section():
    """parse_config composes the sections (it was one 160-line function, McCabe 44)."""
    import lensllm.run.config as module

    tree = ast.parse(inspect.getsource(module))
    functions = {f.name: f for f in ast.walk(tree)
                 if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert _complexity(functions["parse_config"]) <= 3
    assert max(f.end_lineno - f.lineno for f in functions.values()) < 40


# ----------------------------------------------------------------------- overrides

def test_overrides_replace_what_they_name():
    cfg = parse_config(config(executor={"workers": 2, "retries": 3}), source="c.yaml")
    assert cfg.with_overrides() == cfg
    new = cfg.with_overrides(flops_budget=0.2, search="grid", executor="ray", workers=4,
                             run_dir=Path("elsewhere"))
    assert (new.flops_budget, new.search, new.run_dir) == (0.2, "grid", Path("elsewhere"))
    assert new.executor == ExecutorSettings(kind="ray", workers=4, retries=3)
    assert new.raw == cfg.raw  # the run stores the file's config; the flags go to its log
    only_workers = cfg.with_overrides(workers=1).executor
    assert (only_workers.kind, only_workers.workers) == ("local", 1)


@pytest.mark.parametrize("flags, changes, flag, key", [
    ({"flops_budget": 2}, {"flops_budget": 2}, "--flops-budget", "c.yaml: flops_budget"),
    ({"flops_budget": 0.0}, {"flops_budget": 0.0}, "--flops-budget", "c.yaml: flops_budget"),
    ({"flops_budget": float("nan")}, {"flops_budget": float("nan")}, "--flops-budget",
     "c.yaml: flops_budget"),
    ({"search": "random"}, {"search": "random"}, "--search", "c.yaml: search"),
    ({"search": "adaptive"}, {"search": "adaptive"}, "--search adaptive:", "c.yaml:"),
    ({"executor": "slurm"}, {"executor": {"kind": "slurm"}}, "--executor",
     "c.yaml: executor.kind"),
    ({"workers": 0}, {"executor": {"workers": 0}}, "--workers", "c.yaml: executor.workers"),
    ({"workers": True}, {"executor": {"workers": True}}, "--workers",
     "c.yaml: executor.workers"),
])
def test_overrides_fail_as_the_config_key_does(flags, changes, flag, key):
    """A flag is checked by its key's rule: the same message, naming the flag."""
    base = config(method="nlpmetrics", search="grid")
    with pytest.raises(InputError) as from_file:
        parse_config({**base, **changes}, source="c.yaml")
    with pytest.raises(InputError) as from_flag:
        parse_config(base, source="c.yaml").with_overrides(**flags)
    assert str(from_flag.value).startswith(flag)
    assert str(from_flag.value).replace(flag, key, 1) == str(from_file.value)


class _Stop(Exception):
    """Ends ``lensllm run`` once its config is built (no run starts)."""


def _tiny_config(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text("candidates: [{name: a, path: model}]\ntask: {path: task.jsonl}\n"
                    "budget: 64\ntarget: 256\nexecutor: {workers: 2}\n")
    return path


def test_run_flags_reach_the_config(tmp_path, monkeypatch):
    built: list[RunConfig] = []
    with_overrides = RunConfig.with_overrides

    def stop_after(self, **flags):
        built.append(with_overrides(self, **flags))
        raise _Stop

    monkeypatch.setattr(RunConfig, "with_overrides", stop_after)
    with pytest.raises(_Stop):
        main(["run", str(_tiny_config(tmp_path)), "--flops-budget", "0.2", "--search", "grid",
              "--executor", "ray", "--workers", "3", "--run-dir", str(tmp_path / "out")])
    (cfg,) = built
    assert (cfg.flops_budget, cfg.search, cfg.run_dir) == (0.2, "grid", tmp_path / "out")
    assert (cfg.executor.kind, cfg.executor.workers) == ("ray", 3)


@pytest.mark.parametrize("flag, message", [
    (("--flops-budget", "2"), "--flops-budget must be between 1e-06 and 1, got 2.0"),
    (("--workers", "0"), "--workers must be >= 1, got 0"),
])
def test_out_of_range_run_flags_give_one_error_line(tmp_path, capsys, flag, message):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(_tiny_config(tmp_path)), *flag])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""


def test_repeated_sizes_are_named_at_the_cli(tmp_path, capsys):
    path = _tiny_config(tmp_path)
    path.write_text(path.read_text() + "sizes: [64, 8, 8]\n")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: tiny.yaml: sizes [64, 8, 8] hold 2 different size(s) (8 repeated); give at "
        "least 3 different sizes (a law needs 3 points)\n")


@pytest.mark.parametrize("name", ["demo.yaml", "demo-kjv.yaml", "micro.yaml"])
def test_example_configs_parse(name: str) -> None:
    from lensllm.run.config import load_config
    from lensllm.zoo.recipes import zoo_recipe

    config = load_config(Path(__file__).resolve().parents[1] / "examples" / name)
    if config.zoo is not None and config.zoo.candidates is not None:
        known = {spec.name for spec in zoo_recipe(config.zoo.size).candidates}
        assert set(config.zoo.candidates) <= known
    if name == "demo.yaml":
        assert (config.zoo.size, len(config.zoo.candidates)) == ("hub", 6)
        assert (config.budget, config.target, config.task.name) == (512, 4096,
                                                                    "wordnet-gloss")
