"""``lensllm bench --suite``: the bundled lin2024 table (the default) and suite folders
laid out as ``lensllm suite build`` writes them, in every mode of bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensllm.cli import main
from lensllm.core.suites import load_suite
from lensllm.errors import InputError

SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def _write_suite(folder: Path, with_tokens: bool = True) -> Path:
    """Two tasks of five models whose curves follow rectified laws that cross."""
    folder.mkdir(parents=True)
    for t, task in enumerate(("prose", "pairs")):
        curves = []
        for m in range(5):
            b, d_l, beta, e = 2.0 + 0.3 * m, 40.0 * (m + 1), 0.35 + 0.04 * m + 0.02 * t, 1.0
            points = [[n, b / (d_l ** 0.1 + n ** beta) + e + 0.001 * ((m * 7 + n) % 5)]
                      for n in SIZES]
            curves.append({"model": f"m{m}", "points": points,
                           "zero_shot": b / d_l ** 0.1 + e + 0.5, "params": 1e6 * (m + 1)})
        (folder / f"{task}.json").write_text(json.dumps({"task": task, "curves": curves}))
        if with_tokens:
            (folder / f"{task}.runs.json").write_text(json.dumps(
                {"tokens_per_example": {f"m{m}": 40.0 for m in range(5)}}))
    (folder / "suite.json").write_text(json.dumps(
        {"target": 4096, "budgets": [512, 256, 128, 64],
         "tasks": {"prose": {}, "pairs": {}}}))
    return folder


def _bench(capsys, *args: str) -> str:
    main(["bench", *args])
    return capsys.readouterr().out


def test_lin2024_is_the_default_suite(capsys) -> None:
    default = _bench(capsys, "--tasks", "flan", "--methods", "ats", "--format", "csv")
    named = _bench(capsys, "--suite", "lin2024", "--tasks", "flan", "--methods", "ats",
                   "--format", "csv")
    assert default == named and default.splitlines()[1].startswith("flan,ats,204800,1638400")


def test_every_bench_mode_on_a_suite_folder(tmp_path: Path, capsys) -> None:
    folder = str(_write_suite(tmp_path / "suite"))
    suite = load_suite(folder)
    assert suite.target == 4096 and suite.budgets == (512, 256, 128, 64)
    assert [c.task for c in suite.curve_sets] == ["prose", "pairs"]
    cells = json.loads(_bench(capsys, "--suite", folder, "--methods", "ats,zeroshot",
                              "--format", "json"))
    assert {(c["budget"], c["target"]) for c in cells} == {(b, 4096) for b in suite.budgets}
    assert len(cells) == 2 * 2 * 4
    table = _bench(capsys, "--suite", folder, "--tasks", "pairs", "--methods", "ats")
    assert "RelAcc x100 -- pairs" in table and "1/64" in table and "1/128" not in table
    calibration = _bench(capsys, "--suite", folder, "--calibration", "--format", "json")
    assert {c["budget"] for c in json.loads(calibration)} == set(suite.budgets)
    adaptive = json.loads(_bench(capsys, "--suite", folder, "--adaptive", "--format",
                                 "json", "--flops-budgets", "0.05"))
    # the fixed-budget baselines: AtS at each of the suite's budgets, and "train everyone
    # at size s, pick the lowest" at the suite's sizes
    ats = {f["budget"] for f in adaptive["fixed"] if f["label"].startswith("ats")}
    assert adaptive["adaptive"] and ats == set(suite.budgets)
    sizes = {int(n) for c in suite.curve_sets for curve in c for n in curve.sizes}
    assert {f["budget"] for f in adaptive["fixed"]} <= sizes


@pytest.mark.parametrize(("args", "message"), [
    (["--suite", "nowhere"], "unknown suite 'nowhere': choose lin2024, zoo or zoo-uncapped, "
                             "or a folder with a suite.json"),
    (["--suite", "SUITE", "--tasks", "verse"], "suite 'SUITE' has no task 'verse'; choose "
                                               "from prose, pairs"),
    (["--suite", "NOTOKENS", "--adaptive"], "--adaptive needs tokens per example, which "
                                            "suite 'NOTOKENS' lacks for task 'prose' (its "
                                            ".runs.json)"),
])
def test_bad_suites(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    folder = str(_write_suite(tmp_path / "suite"))
    bare = str(_write_suite(tmp_path / "bare", with_tokens=False))
    args = [folder if a == "SUITE" else bare if a == "NOTOKENS" else a for a in args]
    message = message.replace("SUITE", folder).replace("NOTOKENS", bare)
    with pytest.raises(SystemExit) as caught:
        main(["bench", *args])
    assert caught.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_zoo_suite_not_built_yet_says_how(monkeypatch, tmp_path: Path) -> None:
    import lensllm.core.suites as suites

    monkeypatch.setattr(suites, "_packaged_folder", lambda name: tmp_path / "missing")
    for name in ("zoo", "zoo-uncapped"):
        with pytest.raises(InputError) as caught:
            load_suite(name)
        assert str(caught.value) == (
            f"the {name} suite is not in this lensllm (no data/suites/{name}/suite.json); "
            "build it with `lensllm suite build` (README: the zoo suite)")


def test_suite_build_cli_rejects_an_unknown_task_before_building(tmp_path: Path,
                                                                  capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["suite", "build", "--tasks", "bible", "--cache-dir", str(tmp_path / "c"),
              "--suite-dir", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    assert caught.value.code == 2
    assert capsys.readouterr().err == ("error: unknown suite task 'bible'; choose from "
                                       "python-docs, foldoc, foldoc-terms, wordnet-gloss\n")
    assert not (tmp_path / "c").exists()  # nothing was built
