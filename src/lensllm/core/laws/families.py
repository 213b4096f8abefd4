"""Scaling-law families for fine-tuning loss versus data size D.

Every family here has the form ``L(D) = B * g(D; φ) + E``: linear in the scale B and
the floor E once the *shape* parameters φ are fixed.  The fitting engine
(:mod:`lensllm.core.laws.fit`) exploits that to search φ on a grid with B and E solved in
closed form (variable projection) before refining everything together.

Families (φ in the internal coordinates the optimiser sees):

* :class:`PowerLaw` -- vanilla ``L = B D^-β + E``; φ = (β,).  No zero-shot point
  (D^-β is infinite at D = 0).
* :class:`RectifiedLaw` -- Lin et al.: ``L = B / (D_l + D^β) + E``; fitted as
  ``D_l = D₀^β`` with φ = (β, log D₀), where D₀ is the "pre-learned data size" in
  examples (the loss bends from flat to power law around D ≈ D₀).  D = 0 gives the
  zero-shot loss ``B / D_l + E``.
* :class:`LensLLMLaw` -- Zeng et al.: ``L = B / (F(Θ, t) + D^β) + E`` with
  ``F(t) = Σ_i exp(-2 η λ_i t) a_i`` from the NTK spectrum.  Mode ``measured``: t is
  the measured step count, F is fixed, φ = (β,).  Mode ``fit-t``: t is free
  (φ = (β, log t)) and F moves along the measured spectrum.  Without NTK data F is a
  free positive parameter and the law *is* the rectified law; use RectifiedLaw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lensllm.core.curves import NTKSpectrum
from lensllm.errors import InputError

BETA_BOUNDS = (0.01, 3.0)
LOG_D0_BOUNDS = (math.log(1e-20), math.log(1e10))


def ntk_term(eigenvalues: np.ndarray, projections: np.ndarray, learning_rate: float,
             steps: float | np.ndarray) -> np.ndarray:
    """F(Θ, t) = Σ_i exp(-2 η λ_i t) a_i, the squared norm of the linearised residual.

    ``steps`` may be an array; the result has its shape.
    """
    t = np.asarray(steps, dtype=float)
    lam = np.asarray(eigenvalues, dtype=float)
    a = np.asarray(projections, dtype=float)
    decay = np.exp(-2.0 * learning_rate * np.multiply.outer(t, lam))
    return decay @ a


def _pow(n: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """n**beta with 0**beta = 0, safe for broadcasting (n >= 0, beta > 0)."""
    with np.errstate(divide="ignore"):
        logn = np.log(n)
    return np.where(n > 0, np.exp(beta * np.where(n > 0, logn, 0.0)), 0.0)


class Law:
    """A law ``L = B g(D; φ) + E``.  Subclasses define the basis g and its φ-gradient."""

    name = "law"
    shape_names: tuple[str, ...] = ()
    uses_zero_shot = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # Shapes: n (..., m), phi (..., k) -> g (..., m); grad (..., m, k).
    def basis(self, n: np.ndarray, phi: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def basis_grad(self, n: np.ndarray, phi: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def shape_bounds(self) -> list[tuple[float, float]]:  # pragma: no cover
        raise NotImplementedError

    def shape_grid(self, sizes: np.ndarray) -> np.ndarray:  # pragma: no cover
        """Starting grid of φ values, shape (G, k), for curves measured at ``sizes``."""
        raise NotImplementedError

    def natural_params(self, log_b: float, log_e: float, phi: np.ndarray) -> dict[str, float]:
        """The parameters in the law's published form (for people, not the optimiser)."""
        raise NotImplementedError  # pragma: no cover

    def predict(self, n: np.ndarray | float, theta: np.ndarray) -> np.ndarray:
        """L(n) for internal parameters θ = (log B, log E, φ...); ``n`` may be a scalar."""
        theta = np.asarray(theta, dtype=float)
        n_arr = np.asarray(n, dtype=float)
        flat = np.atleast_1d(n_arr)
        out = math.exp(theta[0]) * self.basis(flat, theta[2:]) + math.exp(theta[1])
        return out.reshape(n_arr.shape)


class PowerLaw(Law):
    """Vanilla power law ``L = B D^-β + E`` (sizes > 0 only)."""

    name = "vanilla"
    shape_names = ("beta",)
    uses_zero_shot = False

    def basis(self, n, phi):
        beta = phi[..., 0:1]
        return np.exp(-beta * np.log(n))

    def basis_grad(self, n, phi):
        g = self.basis(n, phi)
        return (-np.log(n) * g)[..., None]

    def shape_bounds(self):
        return [BETA_BOUNDS]

    def shape_grid(self, sizes):
        return np.geomspace(0.02, 2.5, 48)[:, None]

    def natural_params(self, log_b, log_e, phi):
        return {"B": math.exp(log_b), "beta": float(phi[0]), "E": math.exp(log_e)}


class RectifiedLaw(Law):
    """Rectified law ``L = B / (D_l + D^β) + E`` with ``D_l = D₀^β``."""

    name = "rectified"
    shape_names = ("beta", "log_d0")

    def basis(self, n, phi):
        beta, log_d0 = phi[..., 0:1], phi[..., 1:2]
        return 1.0 / (np.exp(beta * log_d0) + _pow(n, beta))

    def basis_grad(self, n, phi):
        beta, log_d0 = phi[..., 0:1], phi[..., 1:2]
        dl = np.exp(beta * log_d0)
        nb = _pow(n, beta)
        with np.errstate(divide="ignore"):
            logn = np.where(n > 0, np.log(np.where(n > 0, n, 1.0)), 0.0)
        g = 1.0 / (dl + nb)
        g2 = -g * g
        d_beta = g2 * (dl * log_d0 + nb * logn)
        d_logd0 = g2 * dl * beta
        return np.stack(np.broadcast_arrays(d_beta, d_logd0), axis=-1)

    def shape_bounds(self):
        return [BETA_BOUNDS, LOG_D0_BOUNDS]

    def shape_grid(self, sizes):
        betas = np.geomspace(0.03, 2.5, 28)
        log_d0 = np.linspace(math.log(1e-12), math.log(1e9), 30)
        return np.stack(np.meshgrid(betas, log_d0, indexing="ij"), axis=-1).reshape(-1, 2)

    def natural_params(self, log_b, log_e, phi):
        beta, log_d0 = float(phi[0]), float(phi[1])
        return {"B": math.exp(log_b), "D_l": math.exp(beta * log_d0), "beta": beta,
                "E": math.exp(log_e), "D0": math.exp(log_d0)}


@dataclass(frozen=True, repr=False, eq=False)
class LensLLMLaw(Law):
    """LensLLM law ``L = B / (F(Θ, t) + D^β) + E`` with F from a measured NTK spectrum."""

    name = "lensllm"
    ntk: NTKSpectrum | None = None
    mode: str = "measured"

    def __post_init__(self) -> None:
        if self.ntk is None:
            raise InputError(
                "the LensLLM law needs an NTK spectrum; without one F is a free parameter "
                "and the law is the rectified law"
            )
        if self.mode not in ("measured", "fit-t"):
            raise InputError(f"unknown LensLLM mode {self.mode!r}; use 'measured' or 'fit-t'")
        if self.mode == "measured" and self.ntk.steps is None:
            raise InputError(
                "LensLLM 'measured' mode needs the measured step count t in the NTK data "
                "(ntk.steps); use mode 'fit-t' to fit t instead"
            )

    @property
    def shape_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("beta",) if self.mode == "measured" else ("beta", "log_t")

    def _f_and_grad(self, log_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ntk = self.ntk
        assert ntk is not None
        t = np.exp(log_t)
        rates = 2.0 * ntk.learning_rate * ntk.eigenvalues
        decay = np.exp(-np.multiply.outer(t, rates)) * ntk.projections
        f = decay.sum(axis=-1)
        df_dlogt = -(decay * rates).sum(axis=-1) * t
        return f, df_dlogt

    def f_value(self, phi: np.ndarray | None = None) -> float:
        if self.mode == "measured":
            return float(ntk_term(self.ntk.eigenvalues, self.ntk.projections,
                                  self.ntk.learning_rate, self.ntk.steps))
        return float(self._f_and_grad(np.asarray(phi[1]))[0])

    def basis(self, n, phi):
        beta = phi[..., 0:1]
        f = self.f_value() if self.mode == "measured" else self._f_and_grad(phi[..., 1:2])[0]
        return 1.0 / (f + _pow(n, beta))

    def basis_grad(self, n, phi):
        beta = phi[..., 0:1]
        nb = _pow(n, beta)
        with np.errstate(divide="ignore"):
            logn = np.where(n > 0, np.log(np.where(n > 0, n, 1.0)), 0.0)
        if self.mode == "measured":
            g = 1.0 / (self.f_value() + nb)
            return (-g * g * nb * logn)[..., None]
        f, df = self._f_and_grad(phi[..., 1:2])
        g = 1.0 / (f + nb)
        d_beta = -g * g * nb * logn
        d_logt = -g * g * df
        return np.stack(np.broadcast_arrays(d_beta, d_logt), axis=-1)

    def shape_bounds(self):
        if self.mode == "measured":
            return [BETA_BOUNDS]
        return [BETA_BOUNDS, self._log_t_range()]

    def _log_t_range(self) -> tuple[float, float]:
        # F(t) moves between its t = 0 value and ~0 over the time scales 1/(2 η λ_i).
        lam = self.ntk.eigenvalues[self.ntk.eigenvalues > 0]
        if lam.size == 0:
            return (0.0, 1.0)
        scales = 1.0 / (2.0 * self.ntk.learning_rate * lam)
        return (math.log(scales.min()) - 4.0, math.log(scales.max()) + 4.0)

    def shape_grid(self, sizes):
        betas = np.geomspace(0.03, 2.5, 40 if self.mode == "measured" else 28)
        if self.mode == "measured":
            return betas[:, None]
        lo, hi = self._log_t_range()
        log_t = np.linspace(lo, hi, 26)
        return np.stack(np.meshgrid(betas, log_t, indexing="ij"), axis=-1).reshape(-1, 2)

    def natural_params(self, log_b, log_e, phi):
        out = {"B": math.exp(log_b), "F": self.f_value(phi), "beta": float(phi[0]),
               "E": math.exp(log_e)}
        out["t"] = float(self.ntk.steps) if self.mode == "measured" else math.exp(float(phi[1]))
        return out
