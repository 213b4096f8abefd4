"""``lensllm suite build`` end to end on a nano hub zoo over fixture corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("rdata")

from hub_fixtures import NANO_HUB, write_all  # noqa: E402
from lensllm.core.formats import load_curves  # noqa: E402
from lensllm.errors import InputError  # noqa: E402
from lensllm.run.store import Store  # noqa: E402
from lensllm.run.suite import SuiteSettings, build_suite  # noqa: E402
from lensllm.zoo import debian  # noqa: E402

pytestmark = pytest.mark.torch

def _settings(tmp_path: Path, **changes) -> SuiteSettings:
    base = dict(cache_dir=tmp_path / "cache", suite_dir=tmp_path / "runs",
                out_dir=tmp_path / "out", size=NANO_HUB, tasks=("foldoc", "wordnet-gloss"),
                n0=4, budget=16, target=32, test_examples=8, val_size=8, workers=1,
                training={"batch_size": 4, "max_length": 32, "max_epochs": 1,
                          "max_steps": 2, "num_threads": 1},
                ntk={"enabled": True, "params": "last", "probe_size": 4},
                hessian={"enabled": True, "probe_size": 2, "samples": 2})
    return SuiteSettings(**{**base, **changes})


@pytest.mark.slow
def test_suite_build_exports_and_resumes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(debian, "SYSTEM_ROOT", tmp_path / "no-system")
    write_all(tmp_path / "cache", scale=2)
    settings = _settings(tmp_path)
    summary = build_suite(settings)
    assert set(summary["tasks"]) == {"foldoc", "wordnet-gloss"}
    assert summary["budgets"] == []  # target/8 = 4 has one size, n0, at or under it
    for task in ("foldoc", "wordnet-gloss"):
        data = json.loads((settings.out_dir / f"{task}.json").read_text("utf-8"))
        details = json.loads((settings.out_dir / f"{task}.runs.json").read_text("utf-8"))
        assert details["kind"] == ("text" if task == "foldoc" else "pairs")
        assert len(data["curves"]) == 2 and data["task"] == task
        assert len(load_curves(settings.out_dir / f"{task}.json")) == 2
        for curve in data["curves"]:
            assert [n for n, _ in curve["points"]] == [4, 8, 16, 32]
            assert curve["ntk"]["eigenvalues"] and curve["zero_shot"] > 0
            runs = details["runs"][curve["model"]]
            assert set(runs) == {"0", "4", "8", "16", "32"}
            assert runs["32"]["train_flops"] > 0 and "distance" in runs["32"]["hessian"]
        assert set(details["hessian_pretrained"]) == {c["model"] for c in data["curves"]}
        header = (settings.out_dir / f"{task}.csv").read_text("utf-8").splitlines()[0]
        assert "32" in header
    assert "dict-foldoc" in (settings.out_dir / "NOTICE").read_text("utf-8")
    # Resuming submits nothing: every job is in the stores.
    build_suite(settings)
    for task in ("foldoc", "wordnet-gloss"):
        with Store(settings.suite_dir / task) as store:
            assert len(store.events("start")) == 2
            submits = store.events("submit")
            assert submits and all(e["time"] <= store.events("start")[-1]["time"]
                                   for e in submits)


def test_suite_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        _settings(tmp_path, tasks=("bible",)).validate()
    assert str(caught.value) == ("unknown suite task 'bible'; choose from python-docs, "
                                 "foldoc, foldoc-terms, wordnet-gloss")
    with pytest.raises(InputError) as caught:
        _settings(tmp_path, budget=64).validate()
    assert str(caught.value) == "need 0 < n0 <= budget < target, got n0=4, budget=64, target=32"


def test_zoo_builds_only_the_named_candidates(tmp_path: Path, monkeypatch) -> None:
    from lensllm.run.config import parse_config
    from lensllm.run.pipeline import resolve_specs
    from lensllm.run.progress import RunProgress
    from lensllm.zoo import recipes
    from lensllm.zoo.build import build_zoo

    monkeypatch.setattr(debian, "SYSTEM_ROOT", tmp_path / "no-system")
    write_all(tmp_path / "cache", scale=2)
    first, second = (spec.name for spec in NANO_HUB.candidates)
    manifest = build_zoo(tmp_path / "cache", NANO_HUB, workers=1, candidates=[second])
    assert [r.name for r in manifest.candidates] == [second]
    with pytest.raises(InputError) as caught:
        build_zoo(tmp_path / "cache", NANO_HUB, workers=1, candidates=["d1-L1"])
    assert str(caught.value) == (f"zoo nano-hub has no candidate 'd1-L1'; it has {first}, "
                                 f"{second}")
    # A config names the hub zoo's candidates and one of its tasks (the hub recipe is
    # the nano one here): only the first is trained, the second is reused and listed.
    from dataclasses import replace
    monkeypatch.setitem(recipes.RECIPES, "hub", replace(NANO_HUB, size="hub"))
    hub_dir = tmp_path / "cache" / "zoo-hub-seed0"
    (tmp_path / "cache" / "zoo-nano-hub-seed0").rename(hub_dir)
    config = parse_config({
        "name": "subset", "seed": 0, "cache_dir": str(tmp_path / "cache"),
        "run_dir": str(tmp_path / "run"), "zoo": {"size": "hub", "candidates": [first]},
        "task": {"path": "zoo", "name": "foldoc", "test_size": 8},
        "candidates": "zoo", "budget": 8, "target": 16}, source=tmp_path / "c.yaml")
    candidates, task = resolve_specs(config, RunProgress(quiet=True))
    assert list(candidates) == [first]
    assert Path(task["path"]).name == "hub-foldoc-test8-max6000-seed0.jsonl"
    manifest = json.loads((hub_dir / "manifest.json").read_text("utf-8"))
    assert [c["name"] for c in manifest["candidates"]] == [first, second]


def test_zoo_candidates_setting_is_checked(tmp_path: Path) -> None:
    from lensllm.run.config import parse_config

    with pytest.raises(InputError) as caught:
        parse_config({"name": "x", "zoo": {"size": "hub", "candidates": "d64"},
                      "task": {"path": "zoo"}, "candidates": "zoo", "budget": 8,
                      "target": 16}, source=tmp_path / "c.yaml")
    assert str(caught.value) == "c.yaml: zoo.candidates must be a non-empty list of names"
