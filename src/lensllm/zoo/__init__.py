"""The offline candidate zoo: tiny GPT-2s pretrained here, and the tasks to rank them on.

A data builder for the demo and the tests, on top of the core and the Hugging Face layer:
:func:`build_zoo` builds (or reuses) a zoo, :func:`build_task` writes its downstream task.
"""

from lensllm.zoo.build import build_zoo
from lensllm.zoo.manifest import CandidateRecord, ZooManifest, load_zoo, weights_hash
from lensllm.zoo.recipes import RECIPES, CandidateSpec, ZooRecipe, zoo_dir, zoo_recipe
from lensllm.zoo.tasks import build_task, read_task
from lensllm.zoo.tokenizer import END_OF_TEXT

__all__ = [
    "END_OF_TEXT",
    "RECIPES",
    "CandidateRecord",
    "CandidateSpec",
    "ZooManifest",
    "ZooRecipe",
    "build_task",
    "build_zoo",
    "load_zoo",
    "read_task",
    "weights_hash",
    "zoo_dir",
    "zoo_recipe",
]
