"""The run configuration of ``lensllm run`` (YAML), parsed safely and validated.

Parsing uses ``yaml.safe_load`` (no object construction from user files) and a schema
written out below: unknown keys, wrong types and impossible values are errors that name
the key, say what was wrong and what to write instead.  Example::

    name: demo
    seed: 0
    zoo: {size: demo}            # optional: build the offline candidate zoo
    task: {path: zoo, n0: 32}    # "zoo" = the zoo's technical task, else a file/folder
    candidates: zoo              # or a list of {name, path, method, learning_rate, lora}
    budget: 512
    target: 4096
    method: lensllm
    search: adaptive             # or grid
    flops_budget: 0.05
    training: {batch_size: 8, max_length: 64}
    ntk: {enabled: true, params: last, probe_size: 32}
    executor: {kind: local, workers: 1}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensllm.errors import InputError, read_user_text

TOP_KEYS = {
    "name": "run name (letters, digits, - and _)",
    "run_dir": "folder of the run's results (default: runs/<name> beside the config)",
    "cache_dir": "folder for the zoo, tokenised data and converted checkpoints",
    "seed": "integer >= 0",
    "zoo": "mapping {size: micro|demo|small, seed}",
    "task": "mapping {path, kind, text_field, input_field, target_field, test_size, "
            "val_size, n0}",
    "candidates": "'zoo', {from: zoo, learning_rate, method, lora}, or a list of candidate "
                  "mappings",
    "sizes": "list of subset sizes (default: n0 x 2^k up to the budget)",
    "budget": "largest subset size to fine-tune on (integer)",
    "target": "full data size to predict the loss at (integer)",
    "method": "selection method (default lensllm)",
    "search": "adaptive (successive halving, default) or grid",
    "flops_budget": "adaptive search: FLOPs share of fine-tuning every candidate at the "
                    "target (0-1)",
    "training": "fine-tuning settings (batch_size, max_length, max_epochs, ...)",
    "ntk": "mapping {enabled, params, probe_size, projection_dim}",
    "executor": "mapping {kind: local|ray, workers, retries, address, num_cpus, num_gpus, "
                "device}",
}
TASK_KEYS = ("path", "kind", "text_field", "input_field", "target_field", "txt_unit",
             "test_size", "val_size", "n0", "name")
CANDIDATE_KEYS = ("name", "path", "method", "learning_rate", "lora", "gguf_file",
                  "trust_remote_code")
NTK_KEYS = ("enabled", "params", "probe_size", "projection_dim")
EXECUTOR_KEYS = ("kind", "workers", "retries", "address", "num_cpus", "num_gpus", "device")
ZOO_KEYS = ("size", "seed")


@dataclass(frozen=True)
class NTKSettings:
    enabled: bool = True
    params: str = "last"
    probe_size: int = 32
    projection_dim: int | None = None


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"
    #: local pool size; None = one worker per visible GPU, or one (all cores) without GPUs
    workers: int | None = None
    retries: int = 1
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: where jobs compute: auto (a visible GPU, else the CPU), cpu or cuda
    device: str = "auto"


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration (paths resolved against the config's folder)."""

    name: str
    source: Path
    run_dir: Path
    cache_dir: Path
    seed: int
    zoo: dict[str, Any] | None
    task: dict[str, Any]
    candidates: list[dict[str, Any]] | str | dict[str, Any]
    sizes: list[int] | None
    budget: int
    target: int
    method: str
    search: str
    flops_budget: float
    training: dict[str, Any]
    ntk: NTKSettings
    executor: ExecutorSettings
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def _where(source: str, key: str) -> str:
    return f"{source}: {key}"


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where} must be a whole number, got {value!r}")
    if value < minimum:
        raise InputError(f"{where} must be >= {minimum}, got {value}")
    if value > 10**12:
        raise InputError(f"{where} is implausibly large ({value})")
    return value


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            float(value)):
        raise InputError(f"{where} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise InputError(f"{where} must be between {lo:g} and {hi:g}, got {value}")
    return float(value)


def _mapping(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping with keys {', '.join(keys)}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(keys)}")
    return dict(value)


def _path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} must be a path (a non-empty string)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file."""
    import yaml

    path = Path(path)
    text = read_user_text(path, "config file", "a YAML config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{path.name}: not valid YAML{at} ({problem})") from None
    return parse_config(data, source=path)


def parse_config(data: Any, source: Path | str = "config.yaml") -> RunConfig:
    """Validate an already-parsed config mapping."""
    source = Path(source)
    name_of = source.name
    base = source.parent if str(source.parent) else Path(".")
    if data is None:
        raise InputError(f"{name_of}: the config is empty")
    if not isinstance(data, dict):
        raise InputError(f"{name_of}: the config must be a mapping of keys to values")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise InputError(f"{name_of}: unknown key {unknown[0]!r}; known keys: "
                         f"{', '.join(TOP_KEYS)}")
    for required in ("candidates", "budget", "target"):
        if required not in data:
            raise InputError(f"{name_of}: missing key {required!r} ({TOP_KEYS[required]})")

    name = data.get("name", source.stem)
    if not isinstance(name, str) or not name or not all(
            ch.isalnum() or ch in "-_." for ch in name):
        raise InputError(f"{name_of}: name must use letters, digits, '-', '_' or '.', got "
                         f"{name!r}")
    seed = _int(data.get("seed", 0), _where(name_of, "seed"))
    budget = _int(data["budget"], _where(name_of, "budget"), 1)
    target = _int(data["target"], _where(name_of, "target"), 1)
    if budget >= target:
        raise InputError(f"{name_of}: budget ({budget}) must be smaller than the target "
                         f"({target})")

    zoo = None
    if data.get("zoo") is not None:
        zoo = _mapping(data["zoo"], _where(name_of, "zoo"), ZOO_KEYS)
        size = zoo.setdefault("size", "demo")
        if size not in ("micro", "demo", "small"):
            raise InputError(f"{name_of}: zoo.size must be micro, demo or small, got {size!r}")
        zoo["seed"] = _int(zoo.get("seed", seed), _where(name_of, "zoo.seed"))

    task = _mapping(data.get("task"), _where(name_of, "task"), TASK_KEYS)
    if "path" not in task:
        raise InputError(f"{name_of}: task.path is missing (a task file or folder, or 'zoo')")
    if task["path"] == "zoo":
        if zoo is None:
            raise InputError(f"{name_of}: task.path is 'zoo' but the config has no zoo section")
    else:
        task["path"] = str(_path(task["path"], _where(name_of, "task.path"), base))
    for key in ("test_size", "val_size", "n0"):
        if key in task:
            task[key] = _int(task[key], _where(name_of, f"task.{key}"), 1)
    if task.get("kind") not in (None, "text", "pairs"):
        raise InputError(f"{name_of}: task.kind must be text or pairs, got {task['kind']!r}")

    candidates = data["candidates"]
    if isinstance(candidates, dict):  # {from: zoo, learning_rate: ..., method: ...}
        shared = _mapping(candidates, _where(name_of, "candidates"),
                          ("from", *CANDIDATE_KEYS[2:]))
        if shared.pop("from", None) != "zoo":
            raise InputError(f"{name_of}: candidates as a mapping must say 'from: zoo' (the "
                             "settings then apply to every zoo candidate)")
        candidates = {"zoo": shared}
    if candidates == "zoo" or isinstance(candidates, dict):
        if zoo is None:
            raise InputError(f"{name_of}: candidates is 'zoo' but the config has no zoo section")
    elif isinstance(candidates, list) and candidates:
        seen: set[str] = set()
        parsed = []
        for i, entry in enumerate(candidates):
            where = _where(name_of, f"candidates[{i}]")
            entry = _mapping(entry, where, CANDIDATE_KEYS)
            if "path" not in entry:
                raise InputError(f"{where}: missing 'path' (a local checkpoint folder)")
            entry["path"] = str(_path(entry["path"], f"{where}.path", base))
            entry.setdefault("name", Path(entry["path"]).name)
            if not isinstance(entry["name"], str) or not entry["name"]:
                raise InputError(f"{where}.name must be a non-empty string")
            if entry["name"] in seen:
                raise InputError(f"{name_of}: two candidates are named {entry['name']!r}; "
                                 "give each a distinct name")
            seen.add(entry["name"])
            parsed.append(entry)
        candidates = parsed
    else:
        raise InputError(f"{name_of}: candidates must be 'zoo' or a non-empty list of "
                         "candidate mappings")

    sizes = data.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, list) or not sizes:
            raise InputError(f"{name_of}: sizes must be a list of whole numbers")
        sizes = sorted({_int(s, _where(name_of, "sizes[]"), 1) for s in sizes})
        if sizes[-1] > budget:
            raise InputError(f"{name_of}: sizes include {sizes[-1]}, above the budget "
                             f"({budget})")
        if len(sizes) < 3:
            raise InputError(f"{name_of}: give at least 3 sizes (a law needs 3 points)")

    method = data.get("method", "lensllm")
    if not isinstance(method, str):
        raise InputError(f"{name_of}: method must be a method name such as lensllm")
    from lensllm.core.selectors import make_selector

    selector = make_selector(method)  # unknown methods fail here, before any training
    # Methods that only rank (no predicted loss) cannot drive the adaptive search.
    search = data.get("search", "adaptive" if selector.predicts_loss else "grid")
    if search not in ("adaptive", "grid"):
        raise InputError(f"{name_of}: search must be adaptive or grid, got {search!r}")
    if search == "adaptive":
        from lensllm.core.search import check_adaptive_method

        check_adaptive_method(selector, f"{name_of}: ")
    flops_budget = _number(data.get("flops_budget", 0.05), _where(name_of, "flops_budget"),
                           1e-6, 1.0)

    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise InputError(f"{name_of}: training must be a mapping of settings")

    ntk_raw = _mapping(data.get("ntk"), _where(name_of, "ntk"), NTK_KEYS)
    if "enabled" in ntk_raw and not isinstance(ntk_raw["enabled"], bool):
        raise InputError(f"{name_of}: ntk.enabled must be true or false")
    if "probe_size" in ntk_raw:
        ntk_raw["probe_size"] = _int(ntk_raw["probe_size"], _where(name_of, "ntk.probe_size"),
                                     2)
    if ntk_raw.get("projection_dim") is not None:
        ntk_raw["projection_dim"] = _int(ntk_raw["projection_dim"],
                                         _where(name_of, "ntk.projection_dim"), 1)
    if "params" in ntk_raw and not isinstance(ntk_raw["params"], str | list):
        raise InputError(f"{name_of}: ntk.params must be all, last, lora or a list of "
                         "parameter-name prefixes")
    ntk = NTKSettings(**ntk_raw)

    ex_raw = _mapping(data.get("executor"), _where(name_of, "executor"), EXECUTOR_KEYS)
    kind = ex_raw.get("kind", "local")
    if kind not in ("local", "ray"):
        raise InputError(f"{name_of}: executor.kind must be local or ray, got {kind!r}")
    if "workers" in ex_raw:
        ex_raw["workers"] = _int(ex_raw["workers"], _where(name_of, "executor.workers"), 1)
    if "retries" in ex_raw:
        ex_raw["retries"] = _int(ex_raw["retries"], _where(name_of, "executor.retries"), 0)
    for key in ("num_cpus", "num_gpus"):
        if key in ex_raw:
            ex_raw[key] = _number(ex_raw[key], _where(name_of, f"executor.{key}"), 0, 1024)
    if "device" in ex_raw:
        from lensllm.hf.device import check_device_setting

        ex_raw["device"] = check_device_setting(ex_raw["device"],
                                                _where(name_of, "executor.device"))
    if ex_raw.get("address") is not None and not isinstance(ex_raw["address"], str):
        raise InputError(f"{name_of}: executor.address must be a string like 'auto' or "
                         "'ray://head:10001'")
    executor = ExecutorSettings(**ex_raw)

    run_dir = _path(data["run_dir"], _where(name_of, "run_dir"), base) if "run_dir" in data \
        else base / "runs" / name
    cache_dir = _path(data["cache_dir"], _where(name_of, "cache_dir"), base) \
        if "cache_dir" in data else Path("~/.cache/lensllm").expanduser()
    return RunConfig(name=name, source=source, run_dir=run_dir, cache_dir=cache_dir,
                     seed=seed, zoo=zoo, task=task, candidates=candidates, sizes=sizes,
                     budget=budget, target=target, method=method, search=search,
                     flops_budget=flops_budget, training=dict(training), ntk=ntk,
                     executor=executor, raw=data)
