"""The probe-set eNTK, its eigendecomposition, and the LensLLM term F(Θ, t).

Definitions (the linearised "loss as output" picture):

* ℓᵢ(θ): per-example target loss of probe example i (mean target-token NLL).
* r₀ᵢ = ℓᵢ(θ₀) - floorᵢ: the initial residual, i.e. how far the pretrained model's loss on
  example i sits above the loss the task allows (the caller's ``loss_floor``; default 0,
  which makes r₀ the zero-shot losses).
* K = G Gᵀ with Gᵢ = ∇_θ ℓᵢ(θ₀) on the selected parameters: an N × N kernel, no 1/N
  normalisation (η absorbs any normalisation convention).  G is float32; K is summed in
  float64 over float32 products of 4096-column blocks (:func:`kernel_matrix`), so its
  round-off (~1e-8 relative) does not grow with P.
* K = U diag(λ) Uᵀ (float64 ``numpy.linalg.eigh``), eigenvalues sorted descending and
  clipped at 0 (negative values are round-off of a PSD matrix; the most negative raw value
  is kept in ``min_raw_eigenvalue``), projections aᵢ = (uᵢ · r₀)².
* Gradient flow of ½‖ℓ(θ) - floor‖² with rate η, linearised at θ₀, gives
  r(t) = exp(-η K t) r₀, so F(t) = ‖r(t)‖² = Σᵢ exp(-2 η λᵢ t) aᵢ
  (:func:`lensllm.core.laws.families.ntk_term`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lensllm.core.curves import NTKSpectrum
from lensllm.core.laws.families import ntk_term
from lensllm.errors import InputError
from lensllm.hf.ntk._memory import PeakMemory
from lensllm.hf.ntk.gradients import (
    DEFAULT_BUFFER_BYTES,
    PerExampleGradients,
    per_example_gradients,
)
from lensllm.hf.ntk.params import LossFn, ParameterSelection

KERNEL_BLOCK_COLUMNS = 4096


def kernel_matrix(rows: torch.Tensor) -> np.ndarray:
    """K = G Gᵀ (float64 numpy) for float32 rows G (N × D).

    Float32 products over blocks of 4096 columns, summed in float64: the rounding error
    stays ~1e-8 of the largest entry whatever D is (one float32 product over D columns is
    ~1e-6 at D = 5 M), at float32 speed (converting G to float64 is ~10x slower).
    """
    n, d = rows.shape
    kernel = torch.zeros(n, n, dtype=torch.float64, device=rows.device)
    for start in range(0, d, KERNEL_BLOCK_COLUMNS):
        block = rows[:, start:start + KERNEL_BLOCK_COLUMNS]
        kernel += (block @ block.T).to(torch.float64)
    kernel = 0.5 * (kernel + kernel.T)  # exact symmetry for eigh
    return kernel.cpu().numpy()


@dataclass(frozen=True)
class NTKMeasurement:
    """One eNTK measurement on a probe set (all arrays float64 numpy).

    ``eigenvalues`` descending and clipped at 0; ``eigenvectors[:, i]`` belongs to
    ``eigenvalues[i]``; ``residuals`` is r₀ = ``losses`` - floor; ``kernel`` is K.
    """

    eigenvalues: np.ndarray = field(repr=False)
    eigenvectors: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)
    losses: np.ndarray = field(repr=False)
    kernel: np.ndarray = field(repr=False)
    loss_floor: float | tuple[float, ...]
    subset: str
    param_names: tuple[str, ...] = field(repr=False)
    n_params: int
    projection_dim: int | None
    projection: str | None
    seed: int
    min_raw_eigenvalue: float
    unused_params: tuple[str, ...] = field(repr=False)
    target_tokens: np.ndarray = field(repr=False)
    gradient_seconds: float
    wall_seconds: float
    peak_rss_bytes: int
    rss_increase_bytes: int
    memory_method: str = field(repr=False)

    @property
    def n_examples(self) -> int:
        return int(self.eigenvalues.size)

    @property
    def feature_dim(self) -> int:
        """Length of a gradient row used for K: P, or k when projected."""
        return self.projection_dim if self.projection_dim is not None else self.n_params

    @property
    def projections(self) -> np.ndarray:
        """aᵢ = (uᵢ · r₀)², the weight of eigen-direction i in the initial residual."""
        return (self.eigenvectors.T @ self.residuals) ** 2

    @property
    def trace(self) -> float:
        return float(np.trace(self.kernel))

    @property
    def top_eigenvalue(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def effective_rank(self) -> float:
        """Participation ratio (Σλ)² / Σλ², between 1 and N (0 for a zero kernel)."""
        squares = float(np.sum(self.eigenvalues ** 2))
        return float(np.sum(self.eigenvalues)) ** 2 / squares if squares > 0 else 0.0

    def ntk_term(self, learning_rate: float, steps: float | np.ndarray) -> np.ndarray:
        """F(t) = Σᵢ exp(-2 η λᵢ t) aᵢ for rate η = ``learning_rate`` after ``steps`` = t."""
        return ntk_term(self.eigenvalues, self.projections, learning_rate, steps)

    def summary(self) -> dict[str, Any]:
        """JSON-ready scalars describing the measurement (stored as the spectrum's info)."""
        return {
            "n_examples": self.n_examples,
            "subset": self.subset,
            "n_params": self.n_params,
            "feature_dim": self.feature_dim,
            "n_tensors": len(self.param_names),
            "projection_dim": self.projection_dim,
            "projection": self.projection,
            "seed": self.seed,
            "loss_floor": (list(self.loss_floor) if isinstance(self.loss_floor, tuple)
                           else self.loss_floor),
            "mean_loss": float(np.mean(self.losses)),
            # Custom loss functions have no notion of target tokens (recorded as 0).
            "mean_target_tokens": (float(np.mean(self.target_tokens))
                                   if np.any(self.target_tokens) else None),
            "trace": self.trace,
            "top_eigenvalue": self.top_eigenvalue,
            "effective_rank": self.effective_rank,
            "min_raw_eigenvalue": self.min_raw_eigenvalue,
            "unused_params": len(self.unused_params),
            "gradient_seconds": round(self.gradient_seconds, 4),
            "wall_seconds": round(self.wall_seconds, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss_increase_bytes": self.rss_increase_bytes,
            "memory_method": self.memory_method,
        }

    def to_spectrum(self, learning_rate: float, steps: float | None = None) -> NTKSpectrum:
        """The :class:`~lensllm.core.curves.NTKSpectrum` the LensLLM law consumes.

        ``learning_rate`` is η of the fine-tuning runs; ``steps`` the measured step count t
        (None when the law should fit t).
        """
        return NTKSpectrum(
            eigenvalues=self.eigenvalues.copy(),
            projections=self.projections,
            learning_rate=float(learning_rate),
            steps=None if steps is None else float(steps),
            info=self.summary(),
        )


def _floor_vector(loss_floor: float | Sequence[float], n: int) -> tuple[np.ndarray, Any]:
    if isinstance(loss_floor, int | float) and not isinstance(loss_floor, bool):
        if not math.isfinite(loss_floor):
            raise InputError(f"ntk: loss_floor must be a finite number (got {loss_floor!r})")
        return np.full(n, float(loss_floor)), float(loss_floor)
    try:
        floors = np.asarray(loss_floor, dtype=float)
    except (TypeError, ValueError):
        raise InputError("ntk: loss_floor must be a number or one number per example") from None
    if floors.ndim != 1 or floors.size != n:
        raise InputError(
            f"ntk: loss_floor must be a number or one number per example ({n}); "
            f"got shape {floors.shape}"
        )
    if not np.all(np.isfinite(floors)):
        raise InputError("ntk: loss_floor values must be finite numbers")
    return floors, tuple(floors.tolist())


def spectrum_of(gradients: PerExampleGradients, loss_floor: float | Sequence[float] = 0.0
                ) -> dict[str, Any]:
    """Kernel, eigendecomposition and residuals for gradient rows (the pieces of a measurement)."""
    floors, floor_value = _floor_vector(loss_floor, gradients.n_examples)
    kernel = kernel_matrix(gradients.matrix)
    raw, vectors = np.linalg.eigh(kernel)
    order = np.argsort(raw)[::-1]
    raw, vectors = raw[order], vectors[:, order]
    return {
        "kernel": kernel,
        "eigenvalues": np.clip(raw, 0.0, None),
        "eigenvectors": vectors,
        "min_raw_eigenvalue": float(min(raw.min(), 0.0)),
        "residuals": gradients.losses - floors,
        "loss_floor": floor_value,
    }


def measure_ntk(
    model: nn.Module,
    examples: Sequence[Mapping[str, torch.Tensor]],
    *,
    params: str | Sequence[str] | ParameterSelection = "last",
    projection_dim: int | None = None,
    projection: str = "sparse",
    seed: int = 0,
    loss_floor: float | Sequence[float] = 0.0,
    loss_fn: LossFn | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> NTKMeasurement:
    """Measure the empirical NTK of ``model`` on a probe set.

    Args:
        model: a float32 Hugging Face causal or encoder-decoder LM (peft-wrapped is fine),
            or any ``nn.Module`` when ``loss_fn`` is given.  Left as it was on return
            (training flags and ``requires_grad`` are restored).
        examples: N probe examples, each a dict of 1-D LongTensors: ``input_ids``,
            ``labels`` (-100 marks positions that are not target tokens; causal models:
            aligned with ``input_ids``, shifted internally as in HF training;
            encoder-decoders: the target sequence), optional ``attention_mask`` and, for
            encoder-decoders, ``decoder_input_ids`` / ``decoder_attention_mask``.  Every
            example needs at least one target token.
        params: ``"last"`` (last block + final norm + LM head), ``"all"``, ``"lora"``, or
            a list of parameter-name prefixes; see :mod:`lensllm.hf.ntk.params`.
        projection_dim: k of a seeded random projection of the gradient rows (bounds memory
            for large P); None for exact rows.  Ignored (exact) when k >= P.
        projection: ``"sparse"`` (CountSketch, fast) or ``"gaussian"`` (dense JL).
        seed: projection seed; the same seed gives the same kernel.
        loss_floor: the loss the task allows (a number, or one per example); the initial
            residual is r₀ = per-example loss - loss_floor.
        loss_fn: ``loss_fn(model, example) -> scalar tensor`` replacing the target NLL.
        buffer_bytes: memory for full-length rows waiting to be projected.

    Returns:
        An :class:`NTKMeasurement`; ``.to_spectrum(learning_rate, steps)`` feeds the
        LensLLM law.  Wall time covers gradients, kernel and eigendecomposition; memory is
        the process RSS (see :mod:`lensllm.hf.ntk._memory`).
    """
    if isinstance(examples, Sequence) and not isinstance(examples, str) and len(examples) > 0:
        _floor_vector(loss_floor, len(examples))  # fail before the expensive gradient pass
    start = time.perf_counter()
    # Always fp32, whatever training.precision says (load_candidate gives fp32 weights;
    # autocast is switched off here in case a caller runs inside it).  The law reads the
    # whole spectrum: F(t) = sum_i exp(-2 eta lambda_i t) a_i, where the small
    # eigenvalues are the slow modes that dominate F at large t.  bf16 keeps about 3
    # significant digits per gradient entry, so K = G G^T would carry round-off far
    # above those eigenvalues and scramble them; the probe runs once per candidate,
    # so fp32 costs little next to the fine-tuning runs.
    # (not a model, or no parameters: per_example_gradients says what is wrong)
    first = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    device_type = first.device.type if first is not None else "cpu"
    with PeakMemory() as memory, torch.autocast(device_type, enabled=False):
        gradients = per_example_gradients(
            model, examples, params=params, projection_dim=projection_dim,
            projection=projection, seed=seed, loss_fn=loss_fn, buffer_bytes=buffer_bytes,
        )
        pieces = spectrum_of(gradients, loss_floor)
    wall = time.perf_counter() - start
    return NTKMeasurement(
        **pieces,
        losses=gradients.losses,
        subset=gradients.selection.subset,
        param_names=gradients.selection.names,
        n_params=gradients.n_params,
        projection_dim=gradients.projection_dim,
        projection=gradients.projection,
        seed=seed,
        unused_params=gradients.unused,
        target_tokens=gradients.target_tokens,
        gradient_seconds=gradients.seconds,
        wall_seconds=wall,
        peak_rss_bytes=memory.peak_bytes,
        rss_increase_bytes=memory.increase_bytes,
        memory_method=memory.method,
    )
