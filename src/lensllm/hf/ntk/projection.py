"""Seeded random projections of gradient rows (Johnson–Lindenstrauss sketches).

A projection S maps a gradient row g (length P) to S g (length k) with E[SᵀS] = I, so
projected inner products are unbiased: E[(S gᵢ)·(S gⱼ)] = gᵢ·gⱼ, and the projected kernel
is an unbiased estimate of K.  S is never materialised: it is generated per parameter
tensor, in fixed-size row chunks, each chunk from its own ``torch.Generator`` seeded from
(seed, tensor name, chunk index).  So S depends only on the seed, k and the tensor names
and shapes (not on chunk sizes, buffer sizes or which other tensors are selected), and
memory stays bounded by one chunk.

Kinds:

``"sparse"`` (default)
    CountSketch / feature hashing, the sparse JL transform with one non-zero per column:
    each coordinate goes to one of k buckets with a random sign.  Generating it costs O(P)
    per pass instead of O(P k); the variance of a projected inner product is
    ``(|gᵢ|²|gⱼ|² + (gᵢ·gⱼ)² - 2 Σ_p gᵢₚ² gⱼₚ²) / k``, never more than the Gaussian one.
``"gaussian"``
    Dense i.i.d. N(0, 1/k) entries: the textbook JL projection.  Generating P×k normal
    numbers costs about 4 ns each on one CPU core (a 5 M-parameter subset at k = 1024 takes
    ~20 s), so use it for small P×k only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from lensllm.errors import InputError

PROJECTION_KINDS = ("sparse", "gaussian")
GAUSSIAN_CHUNK_ROWS = 2048  # ≤ 32 MB of fp32 random numbers per chunk at k = 4096
SPARSE_CHUNK_ROWS = 1 << 18  # two int64 vectors of 2 MB each


def chunk_seed(seed: int, name: str, chunk: int) -> int:
    """A 63-bit generator seed from (seed, tensor name, chunk index), stable across runs."""
    digest = hashlib.blake2b(f"{seed}\x00{name}\x00{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class RandomProjection:
    """A seeded projection from the concatenated selected tensors (length P) to k dims."""

    def __init__(self, names: Sequence[str], sizes: Sequence[int], dim: int, *,
                 seed: int = 0, kind: str = "sparse") -> None:
        if kind not in PROJECTION_KINDS:
            raise InputError(
                f"ntk: unknown projection {kind!r}; use {' or '.join(map(repr, PROJECTION_KINDS))}"
            )
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"ntk: projection_dim must be a whole number >= 1 (got {dim!r})")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"ntk: seed must be an integer (got {seed!r})")
        self.names = tuple(names)
        self.sizes = tuple(int(s) for s in sizes)
        self.dim = dim
        self.seed = seed
        self.kind = kind

    def _generator(self, name: str, chunk: int, device: torch.device) -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(chunk_seed(self.seed, name, chunk))
        return generator

    def project_into(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """``out += rows @ Sᵀ`` for ``rows`` of shape (b, P) and ``out`` of shape (b, k)."""
        offset = 0
        for name, size in zip(self.names, self.sizes, strict=True):
            block = rows[:, offset:offset + size]
            offset += size
            if self.kind == "gaussian":
                self._gaussian(name, block, out)
            else:
                self._sparse(name, block, out)

    def _gaussian(self, name: str, block: torch.Tensor, out: torch.Tensor) -> None:
        scale = 1.0 / math.sqrt(self.dim)
        for chunk, start in enumerate(range(0, block.shape[1], GAUSSIAN_CHUNK_ROWS)):
            stop = min(start + GAUSSIAN_CHUNK_ROWS, block.shape[1])
            generator = self._generator(name, chunk, block.device)
            matrix = torch.randn(stop - start, self.dim, generator=generator,
                                 device=block.device, dtype=block.dtype)
            out.addmm_(block[:, start:stop], matrix, alpha=scale)

    def _sparse(self, name: str, block: torch.Tensor, out: torch.Tensor) -> None:
        for chunk, start in enumerate(range(0, block.shape[1], SPARSE_CHUNK_ROWS)):
            stop = min(start + SPARSE_CHUNK_ROWS, block.shape[1])
            generator = self._generator(name, chunk, block.device)
            buckets = torch.randint(0, self.dim, (stop - start,), generator=generator,
                                    device=block.device)
            signs = torch.randint(0, 2, (stop - start,), generator=generator,
                                  device=block.device).to(block.dtype).mul_(2).sub_(1)
            out.index_add_(1, buckets, block[:, start:stop] * signs)
