"""Candidates by Hub id and tasks through ``datasets.load_dataset``, offline.

A micro-zoo model is placed into a temporary Hugging Face cache in the hub's own layout
(``hub_cache.place_model``) with ``HF_HOME`` pointing at it and ``HF_HUB_OFFLINE=1``;
a dataset is a local folder of ``train.jsonl`` / ``test.jsonl`` (or CSV) files, which
``datasets`` reads as it reads a Hub dataset's data files.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("datasets")

from hub_cache import COMMIT, docs_folder, jsonl, place_model, task_rows
from lensllm.errors import InputError
from lensllm.hf import Candidate, load_candidate, load_task
from lensllm.hf.hub import looks_like_repo_id

OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def exactly(text: str) -> str:
    return "^" + re.escape(text) + "$"


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    return home


def _checkpoint(micro: dict[str, Any], index: int = 0) -> Path:
    return Path(sorted(micro["candidates"].values())[index])


def test_a_hub_id_resolves_from_the_cache_with_its_commit_in_the_identity(
        micro: dict[str, Any], hf_home: Path) -> None:
    local_dir = _checkpoint(micro)
    place_model(local_dir, hf_home, "lensllm-test/tiny")
    hub = Candidate("tiny", "lensllm-test/tiny")
    local = Candidate("tiny", local_dir)
    assert hub.hub_id == "lensllm-test/tiny" and local.hub_id is None
    assert hub.local_path() == hf_home / "hub/models--lensllm-test--tiny/snapshots" / COMMIT
    identity = hub.identity()
    assert identity["hub"] == {"repo_id": "lensllm-test/tiny", "commit": COMMIT}
    # the same weights: the content fingerprint agrees, the commit keeps the keys apart
    assert identity["checkpoint"] == local.identity()["checkpoint"]
    assert "hub" not in local.identity() and "revision" not in local.to_dict()
    assert hub.identity_hash() != local.identity_hash()
    # workers get the commit this process resolved, so a moving branch cannot split a run
    spec = hub.to_dict()
    assert spec["path"] == "lensllm-test/tiny" and spec["revision"] == COMMIT
    assert Candidate.from_dict(spec).identity() == identity
    model, tokenizer = load_candidate(hub)
    reference, _ = load_candidate(local)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters())
    assert len(tokenizer) > 0


def test_a_revision_picks_its_commit(micro: dict[str, Any], hf_home: Path) -> None:
    place_model(_checkpoint(micro, 0), hf_home, "lensllm-test/tiny")
    place_model(_checkpoint(micro, 1), hf_home, "lensllm-test/tiny", commit=OTHER, branch="v2")
    main = Candidate("a", "lensllm-test/tiny").identity()
    v2 = Candidate("b", "lensllm-test/tiny", revision="v2").identity()
    pinned = Candidate("c", "lensllm-test/tiny", revision=OTHER).identity()
    assert main["hub"]["commit"] == COMMIT and v2["hub"]["commit"] == OTHER
    assert v2 == pinned and v2["checkpoint"] != main["checkpoint"]


def test_offline_and_not_cached_is_one_line_naming_the_id_and_the_cache(
        hf_home: Path) -> None:
    with pytest.raises(InputError, match=exactly(
            f"candidate 'x': 'nobody/nothing' is not a local folder, and as a Hub model it is "
            f"not in the Hugging Face cache {hf_home / 'hub'}, which HF_HUB_OFFLINE=1 forbids "
            "filling; download it where there is network (hf download nobody/nothing) into "
            "that cache, or point HF_HOME at a cache that has it")):
        Candidate("x", "nobody/nothing").identity()
    with pytest.raises(InputError, match=exactly(
            "candidate 'x': 'nobody/nothing' is not a local folder, and as a Hub model at "
            f"revision 'v9' it is not in the Hugging Face cache {hf_home / 'hub'}, which "
            "HF_HUB_OFFLINE=1 forbids filling; download it where there is network (hf download "
            "nobody/nothing) into that cache, or point HF_HOME at a cache that has it")):
        Candidate("x", "nobody/nothing", revision="v9").checkpoint()


def test_local_paths_stay_local(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=exactly(
            f"candidate 'x': 'revision' applies to Hub model ids (org/name), and "
            f"'{tmp_path}' is a local path")):
        Candidate("x", tmp_path, revision="main")
    assert looks_like_repo_id("gpt2") and looks_like_repo_id("Qwen/Qwen2.5-0.5B")
    for local in ("./gpt2", "../m", "a/b/c", "~/m", "m.gguf", "a/../b", "/abs/m"):
        assert not looks_like_repo_id(local), local


# --- tasks through datasets.load_dataset ----------------------------------------------


def test_a_dataset_folder_is_the_same_task_as_the_file_with_its_splits(
        micro: dict[str, Any], hf_home: Path, tmp_path: Path) -> None:
    folder = docs_folder(micro, tmp_path / "docs")
    settings = {"val_size": 32, "n0": 16}
    from_dataset = load_task(dataset=str(folder), **settings)
    # the same rows in one file, train before test, their split in a column
    rows = task_rows(micro)
    ordered = [r for r in rows if r["split"] == "train"] + [
        r for r in rows if r["split"] == "test"]
    jsonl(tmp_path / "docs.jsonl", [{"text": r["text"], "split": r["split"]} for r in ordered])
    from_file = load_task(tmp_path / "docs.jsonl", **settings)
    assert from_dataset.identity() == from_file.identity()
    assert from_dataset.n_test == 64 and from_dataset.n_validation == 32
    for split in ("test", "validation", "train"):
        assert from_dataset.examples(split) == from_file.examples(split)
    # nested subsets: a subset is the start of every larger one
    sizes = from_dataset.subset_sizes()
    assert sizes[:3] == [16, 32, 64]
    small, large = from_dataset.examples("train", 16), from_dataset.examples("train", 64)
    assert large[:16] == small
    # the probe set is the first training examples, whatever subset is trained
    _, tokenizer = load_candidate(Candidate("m", _checkpoint(micro)))
    probe = from_dataset.probe_set(tokenizer, 4, max_length=32)
    assert [p["input_ids"].tolist() for p in probe] == [
        p["input_ids"].tolist() for p in from_file.probe_set(tokenizer, 4, max_length=32)]
    # test_split names the held-out split; split alone carves test and validation
    held = load_task(dataset=str(folder), split="train", test_split="test", **settings)
    assert held.identity() == from_dataset.identity()
    carved = load_task(dataset=str(folder), split="train", test_size=20, **settings)
    assert carved.n_test == 20 and carved.n_examples == len(
        [r for r in rows if r["split"] == "train"])


def test_a_csv_dataset_folder_of_pairs_with_named_columns(hf_home: Path,
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "qa"
    folder.mkdir()
    with (folder / "data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["q", "a", "note"])
        writer.writerows([f"what is {i}?", f" it is {i}", "x"] for i in range(60))
    task = load_task(dataset=str(folder), input_field="q", target_field="a", test_size=10,
                     val_size=10, n0=8)
    assert task.kind == "pairs" and task.name == "qa"
    assert task.n_test == 10 and task.pool_size == 40
    example = task.examples("train", 1)[0]
    assert example["input"].startswith("what is ") and example["target"].startswith(" it is ")


def test_dataset_errors_are_one_line(hf_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    jsonl(folder / "train.jsonl", [{"text": f"t {i}"} for i in range(50)])
    with pytest.raises(InputError, match=exactly(
            f"task 'docs' ({folder}): Unknown split \"dev\". Should be one of ['train'].")):
        load_task(dataset=str(folder), split="dev")
    with pytest.raises(InputError, match=exactly(
            "task 'nothing' (nobody/nothing): 'nobody/nothing' is not a local folder, and as a "
            f"Hub dataset it is not in the caches ({hf_home / 'datasets'}, {hf_home / 'hub'}), "
            "which HF_HUB_OFFLINE=1 forbids filling; load it once where there is network, or "
            "give a local folder of data files")):
        load_task(dataset="nobody/nothing")
    with pytest.raises(InputError, match=exactly(
            "task: give 'path' (a task file or folder) or 'dataset' (a Hub dataset or a folder "
            "of data files), not both")):
        load_task(path=str(folder), dataset=str(folder))
    with pytest.raises(InputError, match=exactly("task: 'test_split' applies to a 'dataset' "
                                                 "task")):
        load_task(path=str(folder / "train.jsonl"), test_split="test")


def test_online_it_downloads_safetensors_not_their_pickled_twins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With network, what snapshot_download is asked for (the Hub itself is replaced)."""
    import huggingface_hub

    from lensllm.hf import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    calls: list[dict[str, Any]] = []
    listings = {"org/both": ["config.json", "model.safetensors", "pytorch_model.bin"],
                "org/pickles": ["config.json", "pytorch_model.bin"]}

    def download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(tmp_path / "hub" / "snapshots" / COMMIT)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo_id, revision=None: listings[repo_id])
    for repo in listings:
        assert hub.resolve_model(repo, None, None, "candidate 'x'") == (
            tmp_path / "hub" / "snapshots" / COMMIT, COMMIT)
    both, pickles = (call["ignore_patterns"] for call in calls)
    assert "*.bin" in both and "*.bin" not in pickles and "*.msgpack" in pickles
    assert all(call["local_files_only"] is False and call["cache_dir"] == str(tmp_path / "hub")
               for call in calls)
    hub.resolve_model("org/gguf", "v1", "m.Q4.gguf", "candidate 'x'")
    assert calls[-1]["allow_patterns"][-1] == "m.Q4.gguf" and calls[-1]["revision"] == "v1"
