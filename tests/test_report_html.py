"""The run report's HTML page, opened in headless Chromium.

The page is the real :func:`lensllm.report.run_report.write_report` output, for a small
run context built from the bundled benchmark (four candidates, a selection with
intervals and P(best), one failed job) -- seconds instead of the minutes of a micro
pipeline run.  Chromium renders it and dumps the DOM; the test reads the ranking table
from that DOM and checks that nothing on the page points at the network.

Needs Debian's ``chromium`` (``apt-get install -y chromium``);
skipped without it.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from lensllm import load_benchmark, select
from lensllm.core.benchmark import TARGET

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MODELS = ("gpt2", "t5-small", "facebook/bart-base", "MBZUAI/LaMini-GPT-124M")
BUDGET = 51_200
#: how the run report captions a candidate's Hessian plot (after the candidate's name)
HESSIAN_CAPTION = ": Hessian trace, distance and gap"
# A URL scheme inside an attribute that makes the browser fetch something.
EXTERNAL = ("http://", "https://", "//", "ftp://", "ws://", "wss://")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")


class _Page(HTMLParser):
    """Collects every tag's attributes, the summary line, each section's text (by its
    h2 title) and the cells of each section's first table."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.text: dict[str, str] = {}
        self.summary = ""
        self._section = ""
        self._in_table = self._in_summary = self._in_h2 = False
        self._cell: list[str] | None = None

    @property
    def ranking(self) -> list[list[str]]:
        return self.tables["Ranking"]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.attributes += [(tag, k, v or "") for k, v in attrs]
        if tag == "h2":
            self._in_h2, self._section = True, ""
        elif tag == "table" and self._section not in self.tables:
            self._in_table = True
            self.tables[self._section] = []
        elif tag == "p" and values.get("id") == "summary":
            self._in_summary = True
        elif self._in_table and tag == "tr":
            self.tables[self._section].append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "h2":
            self._in_h2 = False
        elif tag == "p":
            self._in_summary = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._section][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self._section += data
            return
        if self._cell is not None:
            self._cell.append(data)
        if self._in_summary:
            self.summary += data
        self.text[self._section] = self.text.get(self._section, "") + data


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def check_rendered_report(page: Path, tmp_path: Path, n_candidates: int,
                          screenshot: Path | None = None) -> _Page:
    """Render ``page`` in headless Chromium and check what every report must show:
    the ranking, the decision in words, one combined plot plus one per candidate, a
    compute ledger whose parts add up to its total, fit residuals, and nothing that
    reaches the network.  With ``screenshot``, also save a picture of the page there."""
    out = _chromium(page, tmp_path / "profile", "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Page()
    dom.feed(out.stdout)

    header, *rows = dom.ranking
    assert header[:2] == ["rank", "candidate"], header
    assert [r[0] for r in rows] == [str(i) for i in range(1, n_candidates + 1)]
    chosen = rows[0][1]
    assert f"Chosen: {chosen} (" in dom.summary
    decision = dom.text["Decision"]
    assert any(words in decision for words in (
        "Clear winner", "Near tie between", "Tie between", "Not enough data",
        "Only one candidate")), decision
    assert chosen in decision

    images = [v for tag, k, v in dom.attributes if tag == "img" and k == "src"]
    alts = [v for tag, k, v in dom.attributes if tag == "img" and k == "alt"]
    curves = [a for a in alts if not a.endswith(HESSIAN_CAPTION)]
    assert len(curves) == n_candidates + 1  # the combined plot and one per candidate
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert curves[0] == "all candidates: fits, extrapolations and intervals"

    ledger = {r[0]: r for r in dom.tables["Compute"][1:]}
    parts = [k for k in ledger if k.startswith(("search", "zero-shot", "NTK"))]
    total = float(ledger["the decision, total"][1])
    assert sum(float(ledger[k][1]) for k in parts) == pytest.approx(total, rel=2e-3)
    reference = float(ledger["reference: every candidate fine-tuned at the target"][1])
    saved = ledger["compute saved by the decision"][3]
    if total >= reference:
        assert saved.startswith("nothing saved")
    elif "--verify" in ledger["reference: every candidate fine-tuned at the target"][3]:
        assert saved == f"{100 * (1 - total / reference):.1f} % saved"
    else:  # a range, up to the saving against the estimated reference
        assert saved.split(" saved")[0].endswith(f"{100 * (1 - total / reference):.1f} %")
    diagnostics = dom.tables["Fit diagnostics"]
    assert "residuals (log) by size" in diagnostics[0]

    for tag, name, value in dom.attributes:
        assert not value.strip().lower().startswith(EXTERNAL), (tag, name, value[:80])
    assert not [t for t, _, _ in dom.attributes if t in ("script", "link", "iframe")]
    text = page.read_text("utf-8").lower()
    assert "http://" not in text and "https://" not in text
    assert "url(" not in text  # no CSS that loads anything either

    if screenshot is not None:
        shot = _chromium(page, tmp_path / "profile-shot", "--window-size=1200,2600",
                         f"--screenshot={screenshot}")
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert _png_size(screenshot) == (1200, 2600)
        # a blank page compresses to almost nothing; tables and plots do not
        assert screenshot.stat().st_size > 100_000
    return dom


#: Hessian measurements of two of the candidates: gpt2 at its pretrained weights and
#: two fine-tuning sizes, t5-small at its pretrained weights only
HESSIAN = {
    "gpt2": {"pretrained": {"total_trace": 50.0}, "runs": {
        16: {"total_trace": 40.0, "distance_total": 0.01, "train_loss": 2.0, "gap": 0.3},
        64: {"total_trace": 25.0, "distance_total": 0.05, "train_loss": 2.1, "gap": 0.1}}},
    "t5-small": {"pretrained": {"total_trace": 12.5}, "runs": {}}}


def _outcome(run_dir: Path):
    """The outcome of a small, real selection (four benchmark models, one failed job)."""
    from lensllm.run.pipeline import RunOutcome

    curves = load_benchmark("flan").subset(MODELS)
    selection = select(curves, "lensllm", budget=BUDGET, target=TARGET)
    config = SimpleNamespace(run_dir=run_dir, name="html-check", target=TARGET,
                             raw={"name": "html-check", "budget": BUDGET, "target": TARGET,
                                  "candidates": list(MODELS)})
    ledger = {"runs": 20, "spent_flops": 1e15, "reference_flops": 4e16, "fraction": 0.025,
              "saved_percent": 97.5, "actual_train_flops": 3e15, "zero_shot_flops": 2e13,
              "ntk_flops": 5e13, "tokens_per_example": {m: 60.0 for m in MODELS}}
    return RunOutcome(config=config, task="flan", curves=curves, selection=selection,
                      halving=None, ledger=ledger,
                      failures=[{"job": "gpt2 @ 204800", "attempts": 2,
                                 "error": "RuntimeError: injected failure (attempt 2)"}],
                      verify=None, verified=None, weight_metrics={}, wall_seconds=12.0)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, object]:
    """report.html written by write_report for a small, real selection."""
    from lensllm.report.run_report import write_report

    run_dir = tmp_path_factory.mktemp("run")
    outcome = _outcome(run_dir)
    outcome.hessian = HESSIAN
    selection = outcome.selection
    assert write_report(outcome) == run_dir / "report.md"
    # the report writes no data exports: those are the run's (lensllm.run.pipeline)
    assert not (run_dir / "curves.json").exists() and not (run_dir / "curves.csv").exists()
    return run_dir / "report.html", selection


def test_report_renders_in_headless_chromium(report, tmp_path):
    _browser()
    page, selection = report
    dom = check_rendered_report(page, tmp_path, len(MODELS),
                                screenshot=tmp_path / "report.png")
    header, *rows = dom.ranking
    assert sorted(r[1] for r in rows) == sorted(MODELS)
    assert rows[0][1] == selection.chosen
    assert "P(best)" in header and "90 % low" in header
    assert header[-1] == "interval vs the leader's"
    assert rows[0][-1] == "leader"
    assert {r[-1] for r in rows[1:]} <= {"overlaps", "apart"}
    assert "gpt2 @ 204800" in [r[0] for r in dom.tables["Failures"]]
    for model in MODELS:  # one residual cell per measured size within the budget
        row = next(r for r in dom.tables["Fit diagnostics"] if r[0] == model)
        assert len(row[7].split()) == len(load_benchmark("flan")[model].within(BUDGET))


def test_report_page_is_self_contained_without_a_browser(report):
    """The same checks on the file itself, for machines without Chromium."""
    page, selection = report
    dom = _Page()
    dom.feed(page.read_text("utf-8"))
    assert sorted(r[1] for r in dom.ranking[1:]) == sorted(MODELS)
    assert dom.ranking[1][1] == selection.chosen
    assert all(not v.strip().lower().startswith(EXTERNAL) for _, _, v in dom.attributes)
    assert len(page.read_bytes()) < 5_000_000


@pytest.mark.slow
def test_micro_run_report_renders_in_headless_chromium(micro, tmp_path):
    """The report of a real ``lensllm run`` (the micro zoo, a grid search of 3
    candidates) passes the same checks as the constructed one above."""
    from micro_runs import run_cli, write_config

    _browser()
    run_dir = tmp_path / "run"
    out = run_cli(write_config(tmp_path, micro), run_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    check_rendered_report(run_dir / "report.html", tmp_path, 3,
                          screenshot=tmp_path / "micro.png")


@pytest.mark.slow
def test_demo_run_report_renders_in_headless_chromium(tmp_path):
    """``lensllm run examples/demo-kjv.yaml`` (builds the demo zoo into the checkout's
    .cache once, minutes; then an adaptive search of 4 candidates)."""
    import subprocess
    import sys

    from micro_runs import cli_env

    _browser()
    pytest.importorskip("torch")
    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "lensllm", "run",
                          str(root / "examples" / "demo-kjv.yaml"), "--run-dir", str(run_dir),
                          "--quiet"], capture_output=True, text=True, timeout=3600,
                         env=cli_env())
    assert out.returncode == 0, out.stderr[-2000:]
    check_rendered_report(run_dir / "report.html", tmp_path, 4,
                          screenshot=tmp_path / "demo.png")



def test_hessian_section_lists_every_measurement_and_plots_each_fine_tuned_candidate(
        report):
    """The Hessian section from an outcome's measurements: a row per pretrained and
    per fine-tuned measurement, a plot per candidate with fine-tuning measurements (one
    measured only at its pretrained weights gets its row and no plot)."""
    from lensllm.report.run_report import _hessian

    page, _ = report
    md = (page.parent / "report.md").read_text()
    section = md.split("## Hessian\n")[1].split("\n## ")[0]
    assert ("| gpt2 | pretrained | 50.0000 | - | - | - |\n"
            "| gpt2 | 16 | 40.0000 | 0.0100 | 2.0000 | 0.3000 |\n"
            "| gpt2 | 64 | 25.0000 | 0.0500 | 2.1000 | 0.1000 |\n"
            "| t5-small | pretrained | 12.5000 | - | - | - |") in section
    assert section.count("![") == 1 and f"gpt2{HESSIAN_CAPTION}" in section
    plot = page.parent / "plots" / section.split("(plots/")[1].split(")")[0]
    assert plot.stat().st_size > 10_000  # two panels of lines, not an empty figure
    dom = _Page()
    dom.feed(page.read_text("utf-8"))
    assert dom.tables["Hessian"][0][:3] == ["candidate", "size", "Hessian trace"]
    assert len(dom.tables["Hessian"]) == 5
    alts = [v for tag, k, v in dom.attributes if tag == "img" and k == "alt"]
    assert alts.count(f"gpt2{HESSIAN_CAPTION}") == 1
    # without measurements there is no Hessian section at all
    assert _hessian(page.parent, SimpleNamespace(hessian={})) == ("", [])
