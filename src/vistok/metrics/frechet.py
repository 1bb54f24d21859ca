"""Fréchet distance between Gaussians fitted to feature sets (FID, FVD), exact for singular covariances.

``d^2 = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` (Dowson & Landau 1982;
FID: Heusel et al. 2017 on InceptionV3 ``pool_3`` features; FVD: Unterthiner et al. 2018 on I3D
features).

The usual implementation, ``scipy.linalg.sqrtm(S_a @ S_b)``, takes the square root of a
non-symmetric product; when a covariance is singular -- always so when fewer samples than
dimensions are used (rank <= n - 1) -- it returns complex values, NaN or a visibly wrong real
part. Here everything stays symmetric and in float64:

1. ``S_a = V diag(l) V^T`` (``eigh``), so ``S_a^1/2 = V diag(sqrt l) V^T``;
2. ``S_a^1/2 S_b S_a^1/2`` is orthogonally similar to ``M = diag(sqrt l) (V^T S_b V) diag(sqrt l)``,
   a symmetric PSD matrix with the same eigenvalues ``m``;
3. ``tr((S_a^1/2 S_b S_a^1/2)^1/2) = sum_i sqrt(m_i)``.

Eigenvalues at round-off level (``|l| <= dim * eps * max l``, negative ones included) are set to
exactly 0 in both steps: their true value cannot be told from 0 at float64 precision, and a square
root would otherwise magnify that round-off (``sqrt(1e-16) = 1e-8``) into a visible bias. With this
the distance of a set of statistics to itself is 0 to round-off even for rank-deficient covariances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vistok.errors import VistokError

__all__ = ["GaussianStats", "frechet_distance", "frechet_from_features", "reliability_note"]

# Sample-count conventions of the field, quoted by ``reliability_note``.
FID_CONVENTION_N = 50_000
FVD_CONVENTION_N = 2048
# Below this many samples per feature dimension the small-sample upward bias of the distance is
# large enough to matter when comparing numbers (FVD's 2048 clips of 400-d I3D logits ~ 5 per dim).
_SAMPLES_PER_DIM = 5


def _as_float64_2d(features, where: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise VistokError(f"{where}: expected features of shape (n, dim), got shape {x.shape}")
    if x.shape[0] < 2:
        raise VistokError(f"{where}: need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise VistokError(f"{where}: the features contain NaN or infinity")
    return x


@dataclass
class GaussianStats:
    """Mean ``mu`` (float64, ``(dim,)``), unbiased covariance ``sigma`` (float64, ``(dim, dim)``)
    and sample count ``n`` of a feature set."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def __post_init__(self):
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise VistokError(
                f"GaussianStats: expected mu (dim,) and sigma (dim, dim), got {self.mu.shape} and {self.sigma.shape}"
            )
        self.n = int(self.n)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor) -> GaussianStats:
        """Statistics of ``(n, dim)`` features, accumulated in float64; the covariance divides by
        ``n - 1`` (``np.cov(features, rowvar=False)``)."""
        x = _as_float64_2d(features, "GaussianStats.from_features")
        n = x.shape[0]
        mu = x.mean(axis=0)
        centered = x - mu
        sigma = centered.T @ centered / (n - 1)
        return cls(mu=mu, sigma=(sigma + sigma.T) / 2, n=n)


def _psd_eigh(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (round-off-level and negative ones set to 0) and eigenvectors of symmetric ``s``."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    top = max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    w = np.where(w > s.shape[0] * np.finfo(np.float64).eps * top, w, 0.0)
    return w, v


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Squared Fréchet distance between ``N(a.mu, a.sigma)`` and ``N(b.mu, b.sigma)`` (the FID /
    FVD value), in float64; exact for singular covariances (see the module docstring)."""
    if a.dim != b.dim:
        raise VistokError(f"frechet_distance: the statistics have different dimensions ({a.dim} and {b.dim})")
    la, va = _psd_eigh(a.sigma)
    ra = np.sqrt(la)
    m = ra[:, None] * (va.T @ b.sigma @ va) * ra[None, :]
    lm, _ = _psd_eigh(m)
    tr_cross = float(np.sqrt(lm).sum())
    diff = a.mu - b.mu
    value = float(diff @ diff) + float(np.trace(a.sigma)) + float(np.trace(b.sigma)) - 2.0 * tr_cross
    # A true distance is >= 0; a negative value here is cancellation round-off.
    return max(value, 0.0)


def frechet_from_features(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """``frechet_distance`` of the statistics of two ``(n, dim)`` feature sets."""
    return frechet_distance(GaussianStats.from_features(x), GaussianStats.from_features(y))


def reliability_note(n: int, dim: int) -> str | None:
    """A one-line warning when ``n`` samples are too few for a trustworthy Fréchet distance on
    ``dim``-d features, else ``None``.

    ``n <= dim``: the covariance has rank <= n - 1 < dim, so it is singular and the distance mostly
    measures sample noise. ``n < 5 * dim``: the estimate is well defined but biased upward, with a
    bias that shrinks like 1/n (Chong & Forsyth 2020), so it is comparable only with values at the
    same n. The field's conventions are 50k images for FID and 2048 clips for FVD.
    """
    n, dim = int(n), int(dim)
    if dim < 1:
        raise VistokError(f"reliability_note: dim must be positive, got {dim}")
    conventions = f"FID is conventionally computed on {FID_CONVENTION_N:,} images and FVD on {FVD_CONVENTION_N} clips"
    if n < 2:
        return f"{n} sample(s) cannot give a covariance; the Fréchet distance is undefined ({conventions})"
    if n <= dim:
        return (f"only {n} samples for {dim}-d features: the covariance has rank <= {n - 1} < {dim} (singular) and the "
                f"distance is dominated by sampling noise and biased upward; {conventions}")
    if n < _SAMPLES_PER_DIM * dim:
        return (f"{n} samples for {dim}-d features: the Fréchet distance is biased upward at small n (the bias falls "
                f"like 1/n), so compare it only with values at the same n; {conventions}")
    return None
