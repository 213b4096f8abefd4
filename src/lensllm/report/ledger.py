"""The compute ledger of a run, in rows that add up.

Every part of the run is shown against one reference, fine-tuning every candidate at
the target, counted the same way as the part: the search's runs are counted with all
their epochs, so the reference is too -- measured, when ``--verify`` fine-tuned every
candidate at the target, else estimated from the one-pass cost (6 x params x tokens)
times the epochs the search's own runs took per pass.  "Saved" is stated only when the
decision cost less than that reference; without --verify the saving is a range, from
the one-pass reference (one epoch at the target, as the papers count it) to the
estimate.  The papers' one-pass accounting of the search (what the adaptive search's
FLOPs budget is a share of) is shown beside it, labelled as such.
"""

from __future__ import annotations

import math
from typing import Any


def _share(flops: float | None, reference: float) -> str:
    if flops is None or not math.isfinite(flops) or reference <= 0:
        return "-"
    return f"{100 * flops / reference:.1f} %"


def reference(ledger: dict[str, Any]) -> tuple[float, str]:
    """The reference in the same units as the search's actual FLOPs, and how it was
    obtained."""
    measured = ledger.get("target_train_flops")
    if measured:
        return float(measured), "measured: --verify fine-tuned every candidate at the target"
    one_pass = float(ledger["reference_flops"])
    spent = float(ledger["spent_flops"])
    factor = float(ledger["actual_train_flops"]) / spent if spent > 0 else 1.0
    return one_pass * factor, (f"estimated: one pass ({one_pass:.3e}) x {factor:.2f}, the "
                               "FLOPs per pass the search's runs took (epochs, evaluation "
                               "excluded)")


def decision_flops(ledger: dict[str, Any]) -> float:
    """What the decision cost: the search's runs, the zero-shot evaluations and the NTK
    probes (verification is a check, not part of it)."""
    return float(ledger["actual_train_flops"]) + float(ledger.get("zero_shot_flops") or 0) \
        + float(ledger.get("ntk_flops") or 0)


def saved_text(ledger: dict[str, Any]) -> str:
    """What the decision saved, as far as it is known: measured with --verify; else a
    range between the one-pass reference (one epoch at the target) and the reference at
    the search's own passes per example."""
    ref, _ = reference(ledger)
    spent = decision_flops(ledger)
    if ledger.get("target_train_flops"):
        if spent < ref:
            return f"{100 * (1 - spent / ref):.1f} % saved"
        return (f"nothing saved: the decision cost {100 * spent / ref:.0f} % of fine-tuning "
                "every candidate at the target")
    one_pass = float(ledger["reference_flops"])
    if spent >= ref:
        return (f"nothing saved: the decision cost {100 * spent / ref:.0f} % of the "
                "estimated reference")
    high = f"{100 * (1 - spent / ref):.1f} %"
    if spent < one_pass:
        return f"{100 * (1 - spent / one_pass):.1f} % to {high} saved"
    return (f"none to {high} saved: the decision cost {100 * spent / one_pass:.0f} % of one "
            "epoch at the target, less than the estimate; --verify measures it")


def ledger_rows(ledger: dict[str, Any]) -> list[list[Any]]:
    """Rows (part, FLOPs, share of the reference, how it is counted)."""
    ref, how = reference(ledger)
    rows = [["search: fine-tuning runs", f"{ledger['actual_train_flops']:.3e}",
             _share(ledger["actual_train_flops"], ref),
             f"{ledger['runs']} runs, all epochs (training only)"]]
    if ledger.get("zero_shot_flops") is not None:
        rows.append(["zero-shot evaluations", f"{ledger['zero_shot_flops']:.3e}",
                     _share(ledger["zero_shot_flops"], ref), "measured"])
    if ledger.get("ntk_flops") is not None:
        rows.append(["NTK probes", f"{ledger['ntk_flops']:.3e}",
                     _share(ledger["ntk_flops"], ref),
                     "upper estimate: 6 x params x tokens per probe example"])
    spent = decision_flops(ledger)
    rows.append(["the decision, total", f"{spent:.3e}", _share(spent, ref),
                 "the rows above"])
    if ledger.get("verify_train_flops") is not None:
        rows.append(["verification runs (a check, not needed for the decision)",
                     f"{ledger['verify_train_flops']:.3e}",
                     _share(ledger["verify_train_flops"], ref), "all epochs"])
    rows.append(["reference: every candidate fine-tuned at the target", f"{ref:.3e}",
                 "100.0 %", how])
    if not ledger.get("target_train_flops"):
        one_pass = float(ledger["reference_flops"])
        rows.append(["reference, one epoch at the target (the papers' count)",
                     f"{one_pass:.3e}", _share(one_pass, ref),
                     "6 x params x tokens x target examples"])
    rows.append(["compute saved by the decision", "-", "-", saved_text(ledger)])
    rows.append(["papers' accounting: one pass per subset vs one pass at the target",
                 f"{ledger['spent_flops']:.3e}",
                 f"{100 * ledger['fraction']:.2f} % of {ledger['reference_flops']:.3e}",
                 "what the adaptive search's FLOPs budget is a share of"])
    return rows
