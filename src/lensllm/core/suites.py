"""Suites of curves that ``lensllm bench`` replays: each a set of tasks with a target
size, the budgets of its protocol and the tokens per example of its tasks.

* ``lin2024``: the bundled table of Lin et al. (30 LLMs x FLAN, WMT19, Gigaword),
  target 1,638,400, budgets target/8 ... target/512 (:mod:`lensllm.core.benchmark`).
* ``zoo``: the suite ``lensllm suite build`` measures on the hub zoo, shipped as
  package data in ``lensllm/data/suites/zoo/`` (``suite.json`` + one curve file per
  task), target and budgets as recorded there (target/8 ... target/64).
* ``zoo-uncapped``: the same build on two tasks (``wordnet-gloss``, ``foldoc``) without
  the zoo suite's cap of 256 fine-tuning steps (every run trains its 3 epochs), in
  ``lensllm/data/suites/zoo-uncapped/``: whether the cap decides what the zoo shows.
* any folder laid out like the zoo suite (a ``suite.json`` beside ``<task>.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lensllm.core import benchmark
from lensllm.core.curves import CurveSet
from lensllm.core.formats import load_curves
from lensllm.errors import InputError

#: the suites shipped as folders of the same name under lensllm/data/suites (lin2024
#: is the bundled table)
PACKAGED_SUITES = ("zoo", "zoo-uncapped")
SUITES = ("lin2024", *PACKAGED_SUITES)
DEFAULT_SUITE = "lin2024"


@dataclass(frozen=True)
class Suite:
    """The curve sets of a suite and its protocol."""

    name: str
    curve_sets: list[CurveSet]
    budgets: tuple[int, ...]
    target: int
    #: task -> mean tokens of a training example (the FLOPs accounting of --adaptive)
    tokens_per_example: dict[str, float]
    #: the folder the suite was read from (None: the bundled lin2024 table)
    folder: Path | None = None


def _packaged_folder(name: str) -> Path:
    return Path(str(resources.files("lensllm").joinpath(f"data/suites/{name}")))


def load_suite(name: str = DEFAULT_SUITE, tasks: Sequence[str] | None = None) -> Suite:
    """Suite ``name`` (``lin2024``, ``zoo`` or a suite folder), its ``tasks`` only when
    given (default: all)."""
    if name == "lin2024":
        names = list(tasks) if tasks else list(benchmark.TASKS)
        return Suite(name, [benchmark.load_benchmark(t) for t in names], benchmark.BUDGETS,
                     benchmark.TARGET, dict(benchmark.TOKENS_PER_EXAMPLE))
    packaged = name in PACKAGED_SUITES
    folder = _packaged_folder(name) if packaged else Path(name)
    index = folder / "suite.json"
    if not index.is_file():
        if packaged:
            raise InputError(f"the {name} suite is not in this lensllm (no data/suites/"
                             f"{name}/suite.json); build it with `lensllm suite build` "
                             "(README: the zoo suite)")
        raise InputError(f"unknown suite {name!r}: choose {', '.join(SUITES[:-1])} or "
                         f"{SUITES[-1]}, or a folder with a suite.json")
    try:
        meta = json.loads(index.read_text("utf-8"))
        target, budgets, recorded = int(meta["target"]), meta["budgets"], meta["tasks"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{index} is not a suite index ({error}); rebuild it with "
                         "`lensllm suite build`") from None
    names = list(tasks) if tasks else list(recorded)
    unknown = [t for t in names if t not in recorded]
    if unknown:
        raise InputError(f"suite {name!r} has no task {unknown[0]!r}; choose from "
                         f"{', '.join(recorded)}")
    curve_sets = [load_curves(folder / f"{task}.json", task=task) for task in names]
    tokens = {}
    for task in names:
        runs = folder / f"{task}.runs.json"
        per_model = (json.loads(runs.read_text("utf-8")).get("tokens_per_example", {})
                     if runs.is_file() else {})
        if per_model:  # one tokenizer for every zoo candidate: the figures agree
            tokens[task] = sum(per_model.values()) / len(per_model)
    return Suite(name, curve_sets, tuple(int(b) for b in budgets), target, tokens, folder)
