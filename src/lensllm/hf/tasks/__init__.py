"""Downstream tasks: local data, fixed splits, nested training subsets, tokenisation.

A :class:`Task` is a local dataset of either

* **text** examples (language modelling: the loss covers every token), or
* **pairs** of input and target (the loss covers the target tokens only).

One seeded shuffle of all examples fixes everything: its first ``test_size``
examples are the held-out test split, the next ``val_size`` the validation split
(early stopping), and the rest, in shuffled order, the training pool.  The training
subset of size ``n`` is the first ``n`` examples of the pool, so the subsets of a
task are nested (the 400-example subset contains the 200-example one).  When the
data marks its own splits (a ``split`` column with ``train``/``validation``/``test``,
or a saved ``DatasetDict`` with such splits), the marked test and validation examples
are used as they are and only the missing ones are carved from the shuffled rest.

Tokenisation depends on the candidate's tokenizer and architecture:

* causal LM, text: ``tokens(text) + [eos]``; labels = input ids.
* causal LM, pairs: ``tokens(input) + tokens(target) + [eos]``, the input positions
  labelled ``-100`` so only the target is scored.  Input and target are tokenised
  separately (no separator is inserted: put one in the data if the task needs it)
  so the boundary between them is exact.
* encoder-decoder, pairs: ``tokens(input)`` to the encoder, ``tokens(target) +
  [eos]`` as labels.  Text tasks need a causal LM.

The input side gets the tokenizer's own special tokens (a BOS where the model was
pretrained with one); ``[eos]`` is appended when the tokenizer has an EOS token and
did not already end the sequence with it.  Sequences longer than ``max_length`` are
cut: a text keeps its first ``max_length`` tokens; a causal pair keeps its target
(up to ``max_length - 1`` tokens) and the end of its input, the part nearest the
target; an encoder-decoder pair cuts each side to ``max_length``.

Labels follow the transformers convention: for a causal LM they are *not* shifted
(position ``i``'s label is token ``i``; the model predicts it from positions
``< i``), so position 0 is never scored.

Modules: :mod:`~lensllm.hf.tasks.task` (the :class:`Task` model, its splits and
subsets), :mod:`~lensllm.hf.tasks.readers` (file formats), :mod:`~lensllm.hf.tasks.load`
(:class:`TaskSpec` and :func:`load_task`) and :mod:`~lensllm.hf.tasks.tokenize`
(tokenisation and its caches).
"""

from lensllm.hf.tasks.load import TaskSpec, load_task
from lensllm.hf.tasks.readers import (
    FILE_FORMATS,
    INPUT_FIELDS,
    SPLIT_ALIASES,
    SPLITS,
    TARGET_FIELDS,
    TASK_KINDS,
    TEXT_FIELDS,
    TXT_UNITS,
)
from lensllm.hf.tasks.task import Task
from lensllm.hf.tasks.tokenize import (
    IGNORE_INDEX,
    TOKENIZATION_VERSION,
    TokenizedSplit,
    TokenizedTask,
    clear_tokenization_cache,
    tokenize_examples,
    tokenizer_fingerprint,
)

__all__ = [
    "FILE_FORMATS",
    "IGNORE_INDEX",
    "INPUT_FIELDS",
    "SPLITS",
    "SPLIT_ALIASES",
    "TARGET_FIELDS",
    "TASK_KINDS",
    "TEXT_FIELDS",
    "TOKENIZATION_VERSION",
    "TXT_UNITS",
    "Task",
    "TaskSpec",
    "TokenizedSplit",
    "TokenizedTask",
    "clear_tokenization_cache",
    "load_task",
    "tokenize_examples",
    "tokenizer_fingerprint",
]
