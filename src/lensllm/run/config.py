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
    ntk: {enabled: auto, params: last, probe_size: 32}   # auto: iff the method reads it
    executor: {kind: local, workers: 1}

Each section is a frozen dataclass with a ``from_mapping(data, where)`` constructor that
checks its own keys; :func:`parse_config` composes them.  A value is checked by the
*rule* of its key -- a function ``(value, where) -> value`` that raises an
:class:`~lensllm.errors.InputError` naming ``where`` -- so the command line's overrides
(:meth:`RunConfig.with_overrides`) go through the same rules, their messages naming the
flag instead of the file and key.  The candidates' fine-tuning settings and the
``training`` section are checked by the Hugging Face layer's own ``Candidate`` and
``TrainConfig``, which the jobs build from them later (one copy of those rules).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lensllm.errors import InputError, read_user_text

TOP_KEYS = {
    "name": "run name (letters, digits, - and _)",
    "run_dir": "folder of the run's results (default: runs/<name> beside the config)",
    "cache_dir": "folder for the zoo, tokenised data and converted checkpoints",
    "seed": "integer >= 0",
    "zoo": "mapping {size: micro|demo|small|hub|hub-pilot, seed, candidates}",
    "task": "mapping {path or dataset, config, split, test_split, kind, text_field, "
            "input_field, target_field, test_size, val_size, n0}",
    "candidates": "'zoo', {from: zoo, learning_rate, method, lora}, or a list of candidate "
                  "mappings",
    "sizes": "list of subset sizes (default: n0 x 2^k up to the budget)",
    "budget": "largest subset size to fine-tune on (integer)",
    "target": "full data size to predict the loss at (integer)",
    "method": "selection method (default lensllm)",
    "search": "adaptive (drops only candidates unlikely to be best; default) or grid",
    "flops_budget": "adaptive search: FLOPs share of fine-tuning every candidate at the "
                    "target (0-1)",
    "training": "fine-tuning settings (batch_size, max_length, max_epochs, ...)",
    "ntk": "mapping {enabled: auto|true|false, params, probe_size, projection_dim}",
    "hessian": "mapping {enabled: auto|true|false, probe_size, samples}",
    "executor": "mapping {kind: local|ray, workers, retries, address, num_cpus, num_gpus, "
                "device}",
}
REQUIRED_KEYS = ("candidates", "budget", "target")
CANDIDATE_KEYS = ("name", "path", "method", "learning_rate", "lora", "gguf_file",
                  "trust_remote_code", "revision")
SEARCHES = ("adaptive", "grid")
DEFAULT_FLOPS_BUDGET = 0.05
#: the name given to ``candidates: {from: zoo, ...}`` when its settings are checked
ZOO_CANDIDATES_NAME = "from: zoo"

Rule = Callable[[Any, str], Any]

# --------------------------------------------------------------------- value rules
# A rule takes a value and where it came from ("c.yaml: executor.workers" or a flag such
# as "--workers") and returns the checked value, or raises an InputError naming it.


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


def _whole(minimum: int) -> Rule:
    return lambda value, where: _int(value, where, minimum)


def _within(lo: float, hi: float) -> Rule:
    return lambda value, where: _number(value, where, lo, hi)


def _choice(*choices: str) -> Rule:
    listed = f"{', '.join(choices[:-1])} or {choices[-1]}"

    def rule(value: Any, where: str) -> str:
        if value not in choices:
            raise InputError(f"{where} must be {listed}, got {value!r}")
        return value
    return rule


def _optional(rule: Rule) -> Rule:
    """``rule``, letting an explicit null through (it means "the default")."""
    return lambda value, where: None if value is None else rule(value, where)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} must be a string, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{where} must be true or false")
    return value


def _auto_flag(value: Any, where: str) -> bool | str:
    """true, false or ``auto`` (decided by the run's method: see
    :meth:`RunConfig.measurement`)."""
    if value != "auto" and not isinstance(value, bool):
        raise InputError(f"{where} must be auto, true or false, got {value!r}")
    return value


def _path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where} must be a path (a non-empty string)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _ntk_params(value: Any, where: str) -> str | list[str]:
    if not isinstance(value, str | list):
        raise InputError(f"{where} must be all, last, lora or a list of parameter-name "
                         "prefixes")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v for v in value)):
        raise InputError(f"{where} must be a non-empty list of names")
    return tuple(value)


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} must be a string like 'auto' or 'ray://head:10001'")
    return value


def _device(value: Any, where: str) -> str:
    from lensllm.hf.device import check_device_setting

    return check_device_setting(value, where)


_flops_budget = _within(1e-6, 1.0)
_search_kind = _choice(*SEARCHES)


def _search(value: Any, method: str, where: str, prefix: str) -> str:
    """``adaptive`` or ``grid``; the adaptive search needs a method that predicts losses
    (``prefix`` starts that message)."""
    value = _search_kind(value, where)
    if value == "adaptive":
        from lensllm.core.search import check_adaptive_method
        from lensllm.core.selectors import make_selector

        check_adaptive_method(make_selector(method), prefix)
    return value


def _mapping(value: Any, where: str, keys: Iterable[str]) -> dict[str, Any]:
    keys = tuple(keys)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping with keys {', '.join(keys)}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(keys)}")
    return dict(value)


def _checked(value: Any, where: str, rules: Mapping[str, Rule]) -> dict[str, Any]:
    """The section ``value`` (a mapping of known keys), each value passed by its rule."""
    data = _mapping(value, where, rules)
    return {key: rules[key](item, f"{where}.{key}") for key, item in data.items()}


# ------------------------------------------------------------------------ sections

ZOO_RULES: dict[str, Rule] = {"size": _choice("micro", "demo", "small", "hub", "hub-pilot"),
                              "seed": _whole(0), "candidates": _optional(_names)}
TASK_RULES: dict[str, Rule] = {
    "path": _text,  # replaced in TaskSettings.from_mapping (needs the config's folder)
    "kind": _optional(_choice("text", "pairs")),
    "text_field": _optional(_text),
    "input_field": _optional(_text),
    "target_field": _optional(_text),
    "txt_unit": _optional(_text),
    "test_size": _whole(1),
    "val_size": _whole(1),
    "n0": _whole(1),
    "name": _optional(_text),
    "dataset": _text,  # replaced in TaskSettings.from_mapping (a folder or a Hub name)
    "config": _optional(_text),
    "split": _optional(_text),
    "test_split": _optional(_text),
}
NTK_RULES: dict[str, Rule] = {"enabled": _auto_flag, "params": _ntk_params,
                              "probe_size": _whole(2), "projection_dim": _optional(_whole(1))}
HESSIAN_RULES: dict[str, Rule] = {"enabled": _auto_flag, "probe_size": _whole(1),
                                  "samples": _whole(2)}
EXECUTOR_RULES: dict[str, Rule] = {
    "kind": _choice("local", "ray"),
    "workers": _whole(1),
    "retries": _whole(0),
    "address": _optional(_address),
    "num_cpus": _within(0, 1024),
    "num_gpus": _within(0, 1024),
    "device": _device,
}
ZOO_KEYS = tuple(ZOO_RULES)
TASK_KEYS = tuple(TASK_RULES)
NTK_KEYS = tuple(NTK_RULES)
HESSIAN_KEYS = tuple(HESSIAN_RULES)
EXECUTOR_KEYS = tuple(EXECUTOR_RULES)


@dataclass(frozen=True)
class ZooSettings:
    """``zoo``: build the offline candidate zoo of this size (seed: the run's by default),
    or only the named ``candidates`` of it; ``candidates: {from: zoo}`` then means those."""

    size: str = "demo"
    seed: int = 0
    candidates: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, data: Any, where: str, seed: int = 0) -> ZooSettings:
        return cls(**{"seed": seed, **_checked(data, where, ZOO_RULES)})


@dataclass(frozen=True)
class TaskSettings:
    """``task``: where the task is (``"zoo"``: the zoo's task) and how to read and split it.

    Unset fields (None) take :func:`lensllm.hf.load_task`'s defaults, which also checks
    the values that need the data (``txt_unit``, the columns).
    """

    path: str | None = None
    kind: str | None = None
    text_field: str | None = None
    input_field: str | None = None
    target_field: str | None = None
    txt_unit: str | None = None
    test_size: int | None = None
    val_size: int | None = None
    n0: int | None = None
    name: str | None = None
    #: what datasets.load_dataset reads instead of ``path``: a Hub name or a local folder
    dataset: str | None = None
    config: str | None = None
    split: str | None = None
    test_split: str | None = None

    @classmethod
    def from_mapping(cls, data: Any, where: str, base: Path,
                     has_zoo: bool = False) -> TaskSettings:
        def path(value: Any, at: str) -> str:
            if value != "zoo":
                return str(_path(value, at, base))
            if not has_zoo:
                raise InputError(f"{at} is 'zoo' but the config has no zoo section")
            return value

        def dataset(value: Any, at: str) -> str:
            local = _path(value, at, base)  # a folder beside the config, else a Hub name
            return str(local) if local.exists() else value

        values = _checked(data, where, {**TASK_RULES, "path": path, "dataset": dataset})
        if "path" not in values and "dataset" not in values:
            raise InputError(f"{where}.path is missing (a task file or folder, or 'zoo'), or "
                             "give dataset (a Hub dataset or a folder of data files)")
        if "path" in values and "dataset" in values:
            raise InputError(f"{where}: give path (a task file or folder) or dataset (a Hub "
                             "dataset or a folder of data files), not both")
        if "dataset" not in values:
            for key in ("config", "test_split"):
                if key in values:
                    raise InputError(f"{where}.{key} applies to a dataset task only")
        elif "test_split" in values and "test_size" in values:
            raise InputError(f"{where}: give test_split (a split held out as the test set) "
                             "or test_size (examples carved from the data), not both")
        return cls(**values)

    @property
    def from_zoo(self) -> bool:
        return self.path == "zoo"

    def to_dict(self) -> dict[str, Any]:
        """The set fields: keyword arguments of :func:`lensllm.hf.load_task`."""
        return {key: getattr(self, key) for key in TASK_KEYS if getattr(self, key) is not None}


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate: a name, a checkpoint path and its fine-tuning ``settings`` (method,
    learning_rate, lora, gguf_file, trust_remote_code), as ``lensllm.hf.Candidate`` reads
    them."""

    name: str
    path: str
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Any, where: str, base: Path) -> CandidateSpec:
        settings = _mapping(data, where, CANDIDATE_KEYS)
        if "path" not in settings:
            raise InputError(f"{where}: missing 'path' (a local checkpoint folder or a Hub "
                             "model id)")
        path = _checkpoint_path(settings.pop("path"), f"{where}.path", base)
        name = settings.pop("name", Path(path).name)
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}.name must be a non-empty string")
        return cls(name, path, settings)

    def to_dict(self) -> dict[str, Any]:
        """The mapping ``lensllm.hf.Candidate.from_dict`` takes."""
        return {"name": self.name, "path": self.path, **self.settings}

    def check(self, where: str) -> CandidateSpec:
        """Check the settings with the rules of ``lensllm.hf.Candidate`` (no disk access)."""
        from lensllm.hf.candidates import Candidate

        try:
            Candidate.from_dict(self.to_dict())
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        return self


def _checkpoint_path(value: Any, where: str, base: Path) -> str:
    """A local checkpoint (relative to the config's folder), or a Hub model id: a value
    with a repo id's shape that names nothing on disk (``from_pretrained``'s rule)."""
    local = _path(value, where, base)
    if local.exists():
        return str(local)
    from lensllm.hf.hub import looks_like_repo_id

    if looks_like_repo_id(value):
        return value
    # "./model" beside a config in the working folder would come out as "model", which
    # reads as a Hub id: an absolute path keeps a path meant to be local, local.
    return str(local.absolute() if looks_like_repo_id(str(local)) else local)


@dataclass(frozen=True)
class ZooCandidates:
    """``candidates: zoo`` or ``{from: zoo, ...}``: the zoo's models, each with ``settings``."""

    settings: dict[str, Any] = field(default_factory=dict)

    def specs(self, models: Iterable[tuple[str, str]]) -> tuple[CandidateSpec, ...]:
        """The candidates for the zoo's ``(name, checkpoint path)`` pairs."""
        return tuple(CandidateSpec(name, path, dict(self.settings)) for name, path in models)


Candidates = tuple[CandidateSpec, ...] | ZooCandidates


def parse_candidates(value: Any, file: str, base: Path, has_zoo: bool = False) -> Candidates:
    """``candidates``: ``'zoo'``, ``{from: zoo, <settings>}`` or a list of mappings."""
    if value == "zoo" or isinstance(value, dict):
        return _zoo_candidates(value, file, has_zoo)
    if not isinstance(value, list) or not value:
        raise InputError(f"{file}: candidates must be 'zoo' or a non-empty list of candidate "
                         "mappings")
    specs: dict[str, CandidateSpec] = {}
    for i, entry in enumerate(value):
        spec = CandidateSpec.from_mapping(entry, f"{file}: candidates[{i}]", base)
        if spec.name in specs:
            raise InputError(f"{file}: two candidates are named {spec.name!r}; give each a "
                             "distinct name")
        specs[spec.name] = spec.check(file)
    return tuple(specs.values())


def _zoo_candidates(value: str | dict[str, Any], file: str, has_zoo: bool) -> ZooCandidates:
    settings = {}
    if isinstance(value, dict):  # {from: zoo, learning_rate: ..., method: ...}
        settings = _mapping(value, f"{file}: candidates", ("from", *CANDIDATE_KEYS[2:]))
        if settings.pop("from", None) != "zoo":
            raise InputError(f"{file}: candidates as a mapping must say 'from: zoo' (the "
                             "settings then apply to every zoo candidate)")
    if not has_zoo:
        raise InputError(f"{file}: candidates is 'zoo' but the config has no zoo section")
    zoo = ZooCandidates(settings)
    zoo.specs([(ZOO_CANDIDATES_NAME, ".")])[0].check(file)  # the shared settings, by hf's rules
    return zoo


def parse_training(value: Any, file: str) -> dict[str, Any]:
    """``training``: checked by ``lensllm.hf.TrainConfig`` (which the jobs build from it)."""
    training = value or {}
    if not isinstance(training, dict):
        raise InputError(f"{file}: training must be a mapping of settings")
    if training:  # TrainConfig's module imports torch: only for a config that sets something
        try:
            from lensllm.hf import TrainConfig
        except ImportError:
            raise InputError(f"{file}: training: checking the settings needs torch; install "
                             "the fine-tuning extra: pip install 'lensllm[finetune]'") from None
        try:
            TrainConfig.from_dict({str(key): item for key, item in training.items()})
        except InputError as exc:
            raise InputError(f"{file}: {exc}") from None
    return dict(training)


@dataclass(frozen=True)
class NTKSettings:
    """``ntk``: whether to measure the NTK spectra (``auto``: iff the run's method reads
    them), of which parameters, on how many probe examples (``projection_dim``:
    random-project the gradients to this size)."""

    enabled: bool | str = "auto"
    #: all, last, lora or a list of parameter-name prefixes
    params: str | list[str] = "last"
    probe_size: int = 32
    projection_dim: int | None = None

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> NTKSettings:
        return cls(**_checked(data, where, NTK_RULES))


@dataclass(frozen=True)
class HessianSettings:
    """``hessian``: measure per-layer Hessian traces (Hutchinson, ``samples`` probe
    vectors) on ``probe_size`` examples at the pretrained weights and, with the
    Hessian-weighted distance from them, at the end of every fine-tuning run.  ``auto``
    (the default): iff the run's method reads it, which no method does yet."""

    enabled: bool | str = "auto"
    probe_size: int = 16
    samples: int = 8

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> HessianSettings:
        return cls(**_checked(data, where, HESSIAN_RULES))

    def job_settings(self) -> dict[str, int]:
        """What a job needs (and what its result depends on)."""
        return {"probe_size": self.probe_size, "samples": self.samples}


@dataclass(frozen=True)
class ExecutorSettings:
    """``executor``: where the jobs run (a local process pool or Ray) and how often a
    failed job is retried."""

    kind: str = "local"
    #: local pool size; None = one worker per visible GPU, or one (all cores) without GPUs
    workers: int | None = None
    retries: int = 1
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: where jobs compute: auto (a visible GPU, else the CPU), cpu or cuda
    device: str = "auto"

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> ExecutorSettings:
        return cls(**_checked(data, where, EXECUTOR_RULES))


# ---------------------------------------------------------------------- the config

@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration (paths resolved against the config's folder).

    ``raw`` is the mapping as read from the file, stored with the run.
    """

    name: str
    source: Path
    run_dir: Path
    cache_dir: Path
    seed: int
    zoo: ZooSettings | None
    task: TaskSettings
    candidates: Candidates
    sizes: list[int] | None
    budget: int
    target: int
    method: str
    search: str
    flops_budget: float
    training: dict[str, Any]
    ntk: NTKSettings
    executor: ExecutorSettings
    hessian: HessianSettings = field(default_factory=HessianSettings)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_overrides(self, *, flops_budget: float | None = None, search: str | None = None,
                       executor: str | None = None, workers: int | None = None,
                       run_dir: Path | None = None) -> RunConfig:
        """This config with the command line's overrides (None keeps the config's value).

        Each value is checked by the rule of its config key, the message naming the flag:
        ``--workers 0`` fails as ``executor: {workers: 0}`` does.  ``raw`` stays the file's.
        """
        changes: dict[str, Any] = {}
        if flops_budget is not None:
            changes["flops_budget"] = _flops_budget(flops_budget, "--flops-budget")
        if search is not None:
            changes["search"] = _search(search, self.method, "--search",
                                        f"--search {search}: ")
        executor_changes = {key: EXECUTOR_RULES[key](value, flag) for key, value, flag in (
            ("kind", executor, "--executor"), ("workers", workers, "--workers"))
            if value is not None}
        if executor_changes:
            changes["executor"] = replace(self.executor, **executor_changes)
        if run_dir is not None:
            changes["run_dir"] = Path(run_dir)
        return replace(self, **changes)

    def measurement(self, kind: str) -> tuple[bool, str]:
        """Whether the run measures ``kind`` (``ntk`` or ``hessian``), and why, in words."""
        setting = getattr(self, kind).enabled
        if setting != "auto":
            return setting, f"{kind}.enabled is {str(setting).lower()} in the config"
        from lensllm.core.selectors import make_selector

        used = bool(getattr(make_selector(self.method), f"uses_{kind}", False))
        return used, (f"{kind}.enabled is auto and method {self.method} "
                      f"{'reads' if used else 'does not read'} {MEASURED[kind]}")

    @property
    def measure_ntk(self) -> bool:
        return self.measurement("ntk")[0]

    @property
    def measure_hessian(self) -> bool:
        return self.measurement("hessian")[0]


#: what each optional measurement is, for the messages of :meth:`RunConfig.measurement`
MEASURED = {"ntk": "NTK spectra", "hessian": "Hessian measurements"}


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
    """Validate an already-parsed config mapping; ``source`` names the file in messages
    and its folder is where relative paths start."""
    source = Path(source)
    file = source.name
    base = source.parent if str(source.parent) else Path(".")
    _check_top_level(data, file)
    name = _run_name(data.get("name", source.stem), file)
    seed = _int(data.get("seed", 0), f"{file}: seed")
    budget, target = _budget_and_target(data, file)
    zoo = None if data.get("zoo") is None else ZooSettings.from_mapping(
        data["zoo"], f"{file}: zoo", seed)
    method = data.get("method", "lensllm")
    return RunConfig(
        name=name, source=source, seed=seed, zoo=zoo, budget=budget, target=target,
        task=TaskSettings.from_mapping(data.get("task"), f"{file}: task", base, zoo is not None),
        candidates=parse_candidates(data["candidates"], file, base, zoo is not None),
        sizes=_sizes(data.get("sizes"), budget, file),
        method=method, search=_default_search(data, method, file),
        flops_budget=_flops_budget(data.get("flops_budget", DEFAULT_FLOPS_BUDGET),
                                   f"{file}: flops_budget"),
        training=parse_training(data.get("training"), file),
        ntk=NTKSettings.from_mapping(data.get("ntk"), f"{file}: ntk"),
        hessian=HessianSettings.from_mapping(data.get("hessian"), f"{file}: hessian"),
        executor=ExecutorSettings.from_mapping(data.get("executor"), f"{file}: executor"),
        run_dir=_folder(data, "run_dir", file, base, base / "runs" / name),
        cache_dir=_folder(data, "cache_dir", file, base, Path("~/.cache/lensllm").expanduser()),
        raw=data)


def _check_top_level(data: Any, file: str) -> None:
    if data is None:
        raise InputError(f"{file}: the config is empty")
    if not isinstance(data, dict):
        raise InputError(f"{file}: the config must be a mapping of keys to values")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise InputError(f"{file}: unknown key {unknown[0]!r}; known keys: "
                         f"{', '.join(TOP_KEYS)}")
    for required in REQUIRED_KEYS:
        if required not in data:
            raise InputError(f"{file}: missing key {required!r} ({TOP_KEYS[required]})")


def _run_name(name: Any, file: str) -> str:
    if not isinstance(name, str) or not name or not all(
            ch.isalnum() or ch in "-_." for ch in name):
        raise InputError(f"{file}: name must use letters, digits, '-', '_' or '.', got "
                         f"{name!r}")
    return name


def _budget_and_target(data: dict[str, Any], file: str) -> tuple[int, int]:
    budget = _int(data["budget"], f"{file}: budget", 1)
    target = _int(data["target"], f"{file}: target", 1)
    if budget >= target:
        raise InputError(f"{file}: budget ({budget}) must be smaller than the target "
                         f"({target})")
    return budget, target


def _sizes(value: Any, budget: int, file: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InputError(f"{file}: sizes must be a list of whole numbers")
    given = [_int(s, f"{file}: sizes[]", 1) for s in value]
    sizes = sorted(set(given))
    if sizes[-1] > budget:
        raise InputError(f"{file}: sizes include {sizes[-1]}, above the budget ({budget})")
    if len(sizes) < 3:
        # name the repeats: [64, 8, 8] lists three sizes but only two different ones
        repeated = sorted({n for n in given if given.count(n) > 1})
        listed = ", ".join(str(n) for n in given)
        why = (f" ({', '.join(map(str, repeated))} repeated)" if repeated else "")
        raise InputError(f"{file}: sizes [{listed}] hold {len(sizes)} different size(s)"
                         f"{why}; give at least 3 different sizes (a law needs 3 points)")
    return sizes


def _default_search(data: dict[str, Any], method: Any, file: str) -> str:
    """The ``search``; by default adaptive, or grid for a method that only ranks."""
    if not isinstance(method, str):
        raise InputError(f"{file}: method must be a method name such as lensllm")
    from lensllm.core.selectors import make_selector

    selector = make_selector(method)  # unknown methods fail here, before any training
    search = data.get("search", "adaptive" if selector.predicts_loss else "grid")
    return _search(search, method, f"{file}: search", f"{file}: ")


def _folder(data: dict[str, Any], key: str, file: str, base: Path, default: Path) -> Path:
    return _path(data[key], f"{file}: {key}", base) if key in data else default
