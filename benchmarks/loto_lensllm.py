"""Leave-one-task-out for every tuned setting, together.

For each held-out task: the evidence prior is chosen by its rule (on the robustness
protocol's variants of the other tasks), then the recency scales by theirs (on the
other tasks' in-sample cells, with that prior); the held-out task's in-sample cells
are scored with both and compared with AtS.  Then the interval exponent and (where the
suite has tokens per example) the adaptive search's p_keep, each chosen on the other
tasks.  The rules and the check live in ``lensllm.core.tuning``; this is what
``lensllm bench --robustness --loto`` prints, without the rest of the protocol.

Usage: python benchmarks/loto_lensllm.py [--suite lin2024] [--markdown]
"""

from __future__ import annotations

import argparse

from lensllm.core.suites import load_suite
from lensllm.core.tuning import leave_one_task_out_settings
from lensllm.report.bench import loto_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="lin2024")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    leave_one_task_out_settings(
        suite.curve_sets, suite.target, suite.budgets, suite.tokens_per_example,
        on_setting=lambda rows: print(loto_table(rows, markdown=args.markdown) + "\n",
                                      flush=True))


if __name__ == "__main__":
    main()
