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
# A URL scheme inside an attribute that makes the browser fetch something.
EXTERNAL = ("http://", "https://", "//", "ftp://", "ws://", "wss://")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")


class _Page(HTMLParser):
    """Collects every tag's attributes and the cells of the table with id="ranking"."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []
        self.ranking: list[list[str]] = []
        self.summary = ""
        self._in_ranking = self._in_summary = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.attributes += [(tag, k, v or "") for k, v in attrs]
        if tag == "table" and values.get("id") == "ranking":
            self._in_ranking = True
        elif tag == "p" and values.get("id") == "summary":
            self._in_summary = True
        elif self._in_ranking and tag == "tr":
            self.ranking.append([])
        elif self._in_ranking and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_ranking = False
        elif tag == "p":
            self._in_summary = False
        elif tag in ("td", "th") and self._cell is not None:
            self.ranking[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_summary:
            self.summary += data


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, object]:
    """report.html written by write_report for a small, real selection."""
    from lensllm.report.run_report import write_report
    from lensllm.run.pipeline import RunOutcome

    run_dir = tmp_path_factory.mktemp("run")
    curves = load_benchmark("flan").subset(MODELS)
    selection = select(curves, "lensllm", budget=BUDGET, target=TARGET)
    config = SimpleNamespace(run_dir=run_dir, name="html-check", target=TARGET,
                             raw={"name": "html-check", "budget": BUDGET, "target": TARGET,
                                  "candidates": list(MODELS)})
    ledger = {"runs": 20, "spent_flops": 1e15, "reference_flops": 4e16, "fraction": 0.025,
              "saved_percent": 97.5, "actual_train_flops": 3e15}
    outcome = RunOutcome(config=config, task="flan", curves=curves, selection=selection,
                         halving=None, ledger=ledger,
                         failures=[{"job": "gpt2 @ 204800", "attempts": 2,
                                    "error": "RuntimeError: injected failure (attempt 2)"}],
                         verify=None, verified=None, weight_metrics={}, wall_seconds=12.0)
    assert write_report(outcome) == run_dir / "report.md"
    # the report writes no data exports: those are the run's (lensllm.run.pipeline)
    assert not (run_dir / "curves.json").exists() and not (run_dir / "curves.csv").exists()
    return run_dir / "report.html", selection


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _browser()
    page, selection = report
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Page()
    dom.feed(out.stdout)

    # the ranking table: a header and one row per candidate, the chosen one first
    header, *rows = dom.ranking
    assert header[:2] == ["rank", "candidate"], header
    assert [r[0] for r in rows] == [str(i) for i in range(1, len(MODELS) + 1)]
    assert sorted(r[1] for r in rows) == sorted(MODELS)
    assert rows[0][1] == selection.chosen
    assert f"Chosen: {selection.chosen}." in dom.summary
    assert "P(best)" in header

    # one inline plot per candidate, and nothing that reaches the network
    images = [v for tag, k, v in dom.attributes if tag == "img" and k == "src"]
    assert len(images) == len(MODELS)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for tag, name, value in dom.attributes:
        assert not value.strip().lower().startswith(EXTERNAL), (tag, name, value[:80])
    assert not [t for t, _, _ in dom.attributes if t in ("script", "link", "iframe")]
    text = page.read_text("utf-8").lower()
    assert "http://" not in text and "https://" not in text
    assert "url(" not in text  # no CSS that loads anything either
    assert "<td>gpt2 @ 204800</td>" in out.stdout  # the failures table made it too


def test_report_page_is_self_contained_without_a_browser(report):
    """The same checks on the file itself, for machines without Chromium."""
    page, selection = report
    dom = _Page()
    dom.feed(page.read_text("utf-8"))
    assert sorted(r[1] for r in dom.ranking[1:]) == sorted(MODELS)
    assert dom.ranking[1][1] == selection.chosen
    assert all(not v.strip().lower().startswith(EXTERNAL) for _, _, v in dom.attributes)
    assert len(page.read_bytes()) < 5_000_000
