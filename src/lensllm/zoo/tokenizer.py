"""The zoo's tokenizer: a byte-level BPE trained on the pretraining corpus, shared by all
candidates of a zoo."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lensllm.fileio import short_hash
from lensllm.zoo import corpora
from lensllm.zoo.cache import publish_dir, read_json, staging_dir, write_json
from lensllm.zoo.recipes import ZOO_FORMAT_VERSION, ZooRecipe

END_OF_TEXT = "<|endoftext|>"
TOKENIZER_RECORD_NAME = "lensllm_tokenizer.json"
ProgressCallback = Callable[[str], None]


def train_tokenizer(texts: Sequence[str], vocab_size: int, seq_len: int):
    """A byte-level BPE trained on ``texts``, wrapped as ``PreTrainedTokenizerFast``.

    Byte level means every string (also the technical task text) is encodable.
    The single special token ends documents and doubles as padding, as in GPT-2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=seq_len,
    )


def tokenizer_hash(tokenizer_dir: Path) -> str:
    """SHA-256 of the tokenizer's vocabulary and merges (``tokenizer.json``)."""
    return corpora.sha256_file(tokenizer_dir / "tokenizer.json")


def tokenizer_fingerprint(recipe: ZooRecipe, corpus_hash: str) -> str:
    """What must match for a cached tokenizer folder to be reused."""
    return short_hash({
        "format": ZOO_FORMAT_VERSION, "corpus": corpus_hash,
        "vocab_size": recipe.vocab_size, "seq_len": recipe.seq_len,
    }, 64)


def ensure_tokenizer(root: Path, recipe: ZooRecipe, books: Sequence[str], corpus_hash: str,
                     progress: ProgressCallback | None) -> tuple[Path, str, bool]:
    """The zoo's tokenizer folder, its hash and whether it was reused; trained unless a
    matching one is already there."""
    from transformers import AutoTokenizer

    final = root / "tokenizer"
    fingerprint = tokenizer_fingerprint(recipe, corpus_hash)
    record = read_json(final / TOKENIZER_RECORD_NAME)
    if (record is not None and record.get("fingerprint") == fingerprint
            and (final / "tokenizer.json").is_file()
            and record.get("tokenizer_hash") == tokenizer_hash(final)):
        return final, record["tokenizer_hash"], True
    if progress is not None:
        progress(f"training a {recipe.vocab_size}-token byte-level BPE on the pretraining "
                 "text")
    with staging_dir(final) as staging:
        tokenizer = train_tokenizer(books, recipe.vocab_size, recipe.seq_len)
        tokenizer.save_pretrained(staging)
        # Fail here, not in a user's session, if the folder does not load back.
        AutoTokenizer.from_pretrained(staging)
        digest = tokenizer_hash(staging)
        write_json(staging / TOKENIZER_RECORD_NAME,
                   {"fingerprint": fingerprint, "tokenizer_hash": digest,
                    "vocab_size": len(tokenizer)})
        publish_dir(staging, final)
    return final, digest, False
