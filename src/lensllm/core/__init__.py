"""The numerical core: curves, laws, selectors, uncertainty, evaluation and search.

numpy, scipy and pandas only: nothing here imports torch, transformers or the layers
above (``lensllm.hf``, ``lensllm.zoo``, ``lensllm.run``, ``lensllm.report``).
"""
