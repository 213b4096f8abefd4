"""Empirical NTK of a pretrained LM on a task's probe set: the F(Θ, t) of the LensLLM law.

Needs torch (the ``finetune`` extra); nothing in lensllm's torch-free core imports it.

Typical use::

    from lensllm.hf.ntk import measure_ntk
    m = measure_ntk(model, probe_examples, params="last", loss_floor=0.0)
    spectrum = m.to_spectrum(learning_rate=1e-4, steps=300)   # lensllm.core.curves.NTKSpectrum

Pieces: :mod:`~lensllm.hf.ntk.examples` (probe format, target loss),
:mod:`~lensllm.hf.ntk.params` (parameter subsets), :mod:`~lensllm.hf.ntk.gradients`
(per-example gradient rows), :mod:`~lensllm.hf.ntk.projection` (seeded JL sketches),
:mod:`~lensllm.hf.ntk.measure` (kernel, spectrum, definitions of r₀ and F).
"""

from lensllm.hf.ntk.examples import target_loss, validate_examples
from lensllm.hf.ntk.gradients import PerExampleGradients, per_example_gradients
from lensllm.hf.ntk.measure import NTKMeasurement, kernel_matrix, measure_ntk, spectrum_of
from lensllm.hf.ntk.params import ParameterSelection, find_block_list, select_parameters
from lensllm.hf.ntk.projection import RandomProjection

__all__ = [
    "NTKMeasurement",
    "ParameterSelection",
    "PerExampleGradients",
    "RandomProjection",
    "find_block_list",
    "kernel_matrix",
    "measure_ntk",
    "per_example_gradients",
    "select_parameters",
    "spectrum_of",
    "target_loss",
    "validate_examples",
]
