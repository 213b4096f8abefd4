"""The config a run directory belongs to: its settings' hash, stored with the run.

A rerun on the same run directory with a config that would change the results or the
report (candidates, task, sizes, budget, target, method, search, training, NTK, seed,
name) is refused, saying what changed; ``--force`` accepts the new config (finished jobs
whose keys still match are reused, as always).  Where the run executes (``executor``),
where it writes (``run_dir``) and where it caches (``cache_dir``) change neither, so
they are left out.
"""

from __future__ import annotations

from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import short_hash
from lensllm.run.config import RunConfig
from lensllm.run.store import Store

#: keys of the config file that change neither the results nor the report
IGNORED = ("run_dir", "cache_dir", "executor")
#: how many changed settings the refusal names
SHOWN = 3


def run_settings(config: RunConfig) -> dict[str, Any]:
    """The settings that determine the run's results and report: the file's mapping
    without :data:`IGNORED`, with the command line's overrides applied."""
    settings = {k: v for k, v in config.raw.items() if k not in IGNORED}
    # --flops-budget and --search override the file; their defaults are part of the run
    settings.update(flops_budget=config.flops_budget, search=config.search)
    for kind in ("ntk", "hessian"):
        # ``enabled: auto`` hashes as what it resolves to: a config that writes it where
        # it once wrote ``enabled: true`` (with a method that reads it) is the same run.
        section = settings.get(kind)
        if isinstance(section, dict) and section.get("enabled") == "auto":
            settings[kind] = {**section, "enabled": config.measurement(kind)[0]}
    return settings


def settings_hash(settings: dict[str, Any]) -> str:
    return short_hash(settings, default=str)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _short(value: Any) -> str:
    text = "unset" if value is _UNSET else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_UNSET = object()


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key (old -> new)`` for every setting that differs, dotted keys for nested ones."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, _UNSET), after.get(key, _UNSET)
        if a != b:
            changes.append(f"{key} ({_short(a)} -> {_short(b)})")
    return changes


def check_config(store: Store, config: RunConfig, force: bool = False) -> str | None:
    """Compare the config with the one the run directory holds; record it.

    Raises :class:`InputError` naming what changed unless ``force``; returns a note for
    the progress output when a changed config was accepted with ``force``, else None.
    """
    settings = run_settings(config)
    digest = settings_hash(settings)
    stored = store.get_meta("config_hash")
    note = None
    if stored is not None and stored != digest:
        changes = describe_changes(store.get_meta("settings") or {}, settings) or [
            "settings not recorded by this version"]
        listed = ", ".join(changes[:SHOWN])
        if len(changes) > SHOWN:
            listed += f" and {len(changes) - SHOWN} more"
        if not force:
            raise InputError(
                f"the run directory {str(store.run_dir)!r} holds a run of a different "
                f"config (changed: {listed}); rerun with --force to continue it with this "
                "config (finished jobs whose settings still match are reused), or choose "
                "a new run directory")
        note = f"config changed ({listed}); continuing with it (--force)"
        store.log("config_changed", detail={"from": stored, "to": digest,
                                            "changes": changes})
    store.set_meta("settings", settings)
    store.set_meta("config_hash", digest)
    return note
