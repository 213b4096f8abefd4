"""A task's rows from ``datasets.load_dataset``: a Hub dataset name, or a local folder of
data files (``train.jsonl``, ``test.csv``, ... -- ``datasets`` infers the format and the
splits from the file names).

Nothing here splits or subsets: the rows and their split labels go to
:func:`~lensllm.hf.tasks.task.task_from_records`, so a ``dataset:`` task has the same
seeded splits, nested training subsets and probe set as a task file with the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lensllm.errors import InputError, one_line
from lensllm.hf.hub import hub_cache_dir, hub_offline
from lensllm.hf.tasks.readers import Records, dataset_dict_records


def datasets_cache_dir() -> Path:
    """Where ``datasets`` keeps its Arrow files now: ``HF_DATASETS_CACHE``, else
    ``HF_HOME/datasets``, else its default (read at call time, like :mod:`lensllm.hf.hub`)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "datasets"
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE)


def read_dataset(name: str, config: str | None, split: str | None, test_split: str | None,
                 where: str) -> tuple[Records, tuple[str, ...] | None]:
    """Rows (and split labels, when the splits say) of a dataset ``load_dataset`` reads.

    ``split`` alone: that split's rows, test and validation carved from them later.
    ``test_split``: its rows are the test set, the training rows come from ``split``
    (default ``train``).  Neither: every split, as for a ``save_to_disk`` folder.
    Split names may carry ``datasets``' slices (``train[:5000]``).
    """
    try:
        import datasets
    except ImportError:
        raise InputError(f"{where}: a 'dataset' task needs the 'datasets' package; install it "
                         "with: pip install 'lensllm[datasets]'") from None
    local = Path(name).expanduser()
    source = str(local) if local.exists() else name

    def load(which: str | None) -> Any:
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a run's progress is lensllm's to show
        try:
            return datasets.load_dataset(source, config, split=which,
                                         cache_dir=str(datasets_cache_dir()))
        except ValueError as exc:  # an unknown split or config: the message lists them
            raise InputError(f"{where}: {one_line(exc)}") from None
        except (OSError, ConnectionError, ImportError, RuntimeError) as exc:
            if not local.exists() and hub_offline():
                raise InputError(
                    f"{where}: {name!r} is not a local folder, and as a Hub dataset it is not "
                    f"in the caches ({datasets_cache_dir()}, {hub_cache_dir()}), which "
                    "HF_HUB_OFFLINE=1 forbids filling; load it once where there is network, "
                    "or give a local folder of data files") from None
            raise InputError(f"{where}: cannot load the dataset: {one_line(exc)}") from None
        finally:
            if bars:
                datasets.enable_progress_bars()

    if test_split is None:
        if split is not None:
            return _rows(load(split), f"{split} row"), None
        loaded = load(None)
        if isinstance(loaded, Mapping):
            return dataset_dict_records(loaded, None, where)
        return _rows(loaded, "row"), None
    train = split or "train"
    train_rows = _rows(load(train), f"{train} row")
    test_rows = _rows(load(test_split), f"{test_split} row")
    return train_rows + test_rows, ("train",) * len(train_rows) + ("test",) * len(test_rows)


def _rows(dataset: Any, label: str) -> Records:
    return [(f"{label} {i + 1}", row) for i, row in enumerate(dataset)]
