"""The hub zoo: Debian corpus readers on files in the packages' formats, the hub tasks,
the compute-matched recipe and a nano build on corpus mixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("rdata")

from hub_fixtures import NANO_HUB, write_all  # noqa: E402
from lensllm.errors import InputError  # noqa: E402
from lensllm.zoo import debian, hub  # noqa: E402
from lensllm.zoo.build import CandidateSpec, ZooRecipe, build_zoo  # noqa: E402
from lensllm.zoo.recipes import (  # noqa: E402
    HUB_FLOPS,
    PRETRAIN_CORPORA,
    RECIPES,
    gpt2_params,
)

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def no_system_packages(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    # Packages installed on the machine must not stand in for the fixtures.
    monkeypatch.setattr(debian, "SYSTEM_ROOT", tmp_path_factory.mktemp("empty-root"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("hub-cache")
    return path, write_all(path)


def test_sword_ztext_reader(cache) -> None:
    path, written = cache
    root = debian.package_root("web", path, fetch=False)
    books = debian.read_sword_ztext(root / "usr/share/sword/modules/texts/ztext/engWEB2015eb")
    # The milestone-only block is skipped; notes and titles are dropped; each paragraph
    # end becomes a line.
    assert books == written["books"]


def test_austen_reader(cache) -> None:
    path, written = cache
    novels = debian.read_austen(debian.package_root("austen", path, fetch=False))
    assert len(novels) == 2
    # Lines between blank lines are one paragraph, as the novels' lines are wrapped.
    paragraphs = " ".join(line or "\n" for line in written["novels"]["emma"]).split("\n")
    assert novels[0].split("\n") == [" ".join(p.split()) for p in paragraphs if p.strip()]


def test_dictd_and_wordnet_readers(cache) -> None:
    path, written = cache
    entries = debian.read_dictd(*debian.dictd_files(debian.package_root("gcide", path,
                                                                        fetch=False), "gcide"))
    # The header record is skipped; the alias of the last entry is kept once.
    assert entries == [(head, text.strip()) for head, text in written["gcide"]]
    assert hub.clean_gcide(entries[0][1]).startswith("Word0 , n. [L. verbum.]\n")
    assert "1913 Webster" not in hub.clean_gcide(entries[0][1])
    synsets = debian.read_wordnet(debian.package_root("wordnet", path, fetch=False))
    assert synsets[0] == ("thing 0", "noun", written["synsets"]["noun"][0][1].split(";")[0])
    assert len(synsets) == 40


def test_missing_package_without_fetch(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        debian.package_root("foldoc", tmp_path, fetch=False)
    assert str(caught.value) == (
        "corpus 'foldoc' needs the Debian package dict-foldoc; fetch it with `apt-get "
        f"download dict-foldoc` and `dpkg-deb -x dict-foldoc_*.deb {tmp_path}/debian/"
        "dict-foldoc` (or `apt-get install dict-foldoc`)")
    with pytest.raises(InputError, match=r"^unknown Debian corpus 'bible'; choose one of "):
        debian.package_root("bible", tmp_path)


def test_hub_tasks_have_fixed_test_splits(cache) -> None:
    path, _ = cache
    kinds = {}
    for name, kind in hub.HUB_TASKS.items():
        first = hub.build_hub_task(path, name, test_examples=5)
        again = hub.build_hub_task(path, name, test_examples=5)
        assert first == again
        records = [json.loads(line) for line in first.read_text("utf-8").splitlines()]
        assert sum(r["split"] == "test" for r in records) == 5
        assert set(records[0]) == ({"text", "split"} if kind == "text"
                                   else {"input", "target", "split"})
        meta = json.loads(first.with_name(first.name.replace(".jsonl", ".meta.json"))
                          .read_text("utf-8"))
        assert meta["kind"] == kind and meta["examples"] == len(records)
        kinds[name] = records
    terms = {r["input"]: r["target"] for r in kinds["foldoc-terms"]}
    assert terms["term3:"].startswith(" <jargon> ") and terms["term3:"].endswith(".")
    assert all("(2001-" not in r["text"] for r in kinds["foldoc"])  # date stamps dropped
    assert {r["input"] for r in kinds["wordnet-gloss"]} >= {"thing 0 (noun):", "do1 (verb):"}
    with pytest.raises(InputError, match=r"^unknown hub task 'x'; choose one of python-docs, "):
        hub.build_hub_task(path, "x")


def test_cut_keeps_every_kth_document() -> None:
    documents = [str(i) * 10 for i in range(10)]
    assert hub.cut(documents, 1000) == documents
    assert hub.cut(documents, 50) == documents[::2]
    assert hub.cut(documents, 40) == documents[::3]  # 4 documents, 40 characters
    assert hub.cut(documents, 39) == documents[::4]
    assert hub.cut(documents, 9) == ["000000000"]  # one document is already too long
    assert hub.cut([], 9) == []
    assert hub.mixture_documents(["a", "b"], {"a": ["a1", "a2", "a3"], "b": ["b1"]}) == [
        "a1", "b1", "a2", "a3"]


def test_hub_recipe_follows_its_rule() -> None:
    recipe = RECIPES["hub"]
    recipe.validate()
    assert len(recipe.candidates) >= 8 and recipe.corpora == PRETRAIN_CORPORA
    assert any(len(spec.corpus) > 1 for spec in recipe.candidates)
    for spec in recipe.candidates:
        params = gpt2_params(spec.n_embd, spec.n_layer, recipe.vocab_size, recipe.seq_len)
        assert 0.5e6 <= params <= 10e6, spec.name
        compute = 6 * params * spec.pretrain_steps * recipe.tokens_per_step
        # Steps are whole: the compute matches to within half a step.
        assert abs(compute - HUB_FLOPS) <= 3 * params * recipe.tokens_per_step, spec.name
    with pytest.raises(InputError, match="corpus must name distinct corpora among kjv, web, "
                                         r"austen, gcide, got \['bbc'\]"):
        CandidateSpec(n_embd=8, n_layer=1, n_head=2, pretrain_steps=1,
                      corpus=("bbc",)).validate()


def test_nano_hub_zoo_on_mixtures(cache) -> None:
    path, _ = cache
    manifest = build_zoo(path, NANO_HUB, seed=0, workers=1)
    assert [r.name for r in manifest.candidates] == ["d16-L1-pt3-web",
                                                     "d24-L2-pt2-austen+gcide"]
    assert set(manifest.corpus["corpora"]) == {"web", "austen", "gcide"}
    for record in manifest.candidates:
        assert record.params == gpt2_params(record.config["n_embd"], record.config["n_layer"],
                                            400, 32)
    again = build_zoo(path, NANO_HUB, seed=0, workers=1)
    assert all(r.reused for r in again.candidates)
    assert [r.content_hash for r in again.candidates] == [
        r.content_hash for r in manifest.candidates]


def test_cli_zoo_build_hub_writes_the_four_tasks(tmp_path: Path, monkeypatch, capsys) -> None:
    import dataclasses

    from lensllm.cli import main
    from lensllm.zoo import recipes

    write_all(tmp_path, scale=12)  # enough examples for the 256-example test splits
    nano = ZooRecipe(size="hub-pilot", vocab_size=400, seq_len=32, batch_size=4,
                     heldout_every=8, heldout_blocks=4, corpus_chars=20_000,
                     candidates=(CandidateSpec(n_embd=16, n_layer=1, n_head=2,
                                               pretrain_steps=2, corpus=("kjv", "web")),))
    monkeypatch.setitem(recipes.RECIPES, "hub-pilot", dataclasses.replace(nano))
    main(["zoo", "build", "--size", "hub-pilot", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "d16-L1-pt2-kjv+web" in out
    written = out.split("task: ", 1)[1].strip().split(", ")
    assert [Path(p).name.split("-test")[0] for p in written] == [
        f"hub-{name}" for name in hub.HUB_TASKS]
    assert all(Path(p).is_file() for p in written)
