"""Feature statistics that stream, and the Fréchet distance between two Gaussians.

`FeatureStats` keeps the count, mean and centred scatter matrix in float64 and merges each
batch with Chan's parallel update, so memory stays at O(D^2) however many images are fed
and no sum of squares is subtracted from another (no cancellation). Its covariance is the
unbiased one (ddof=1), as np.cov in the official code.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from igan.engine.errors import PathError, RequestError

STATS_FORMAT = "igan-fid-stats-1"


class FeatureStats:
    """Running mean and covariance of D-dimensional features."""

    def __init__(self, dim: int):
        if not isinstance(dim, int) or dim < 1:
            raise RequestError(f"feature dimension must be a positive integer, got {dim!r}")
        self.dim = dim
        self.count = 0
        self.mean_ = np.zeros(dim, np.float64)
        self.scatter = np.zeros((dim, dim), np.float64)  # sum of (x - mean)(x - mean)^T

    def update(self, features) -> None:
        """Add a batch [N, D] (numpy or torch, any float dtype)."""
        x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RequestError(f"features must be [N, {self.dim}], got shape {tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise RequestError("features contain NaN or infinity")
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        centred = x - batch_mean
        batch_scatter = centred.T @ centred
        total = self.count + n
        delta = batch_mean - self.mean_
        self.scatter += batch_scatter + np.outer(delta, delta) * (self.count * n / total)
        self.mean_ += delta * (n / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        return self.mean_.copy()

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise RequestError(f"a covariance needs at least 2 samples, have {self.count}")
        return self.scatter / (self.count - 1)

    # ---- cache files ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike, meta: dict[str, str] | None = None) -> Path:
        """Write count, mean, covariance and `meta` (the protocol that produced them) as .npz,
        atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.igan-tmp-{os.getpid()}.npz")
        meta = {"format": STATS_FORMAT, **(meta or {})}
        try:
            np.savez(tmp, count=np.int64(self.count), mean=self.mean_, cov=self.cov,
                     meta_keys=np.array(list(meta)), meta_values=np.array([str(v) for v in meta.values()]))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def load_stats(path: str | os.PathLike) -> tuple[int, np.ndarray, np.ndarray, dict[str, str]]:
    """(count, mean [D], cov [D, D], meta) of a file written by FeatureStats.save."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = dict(zip(f["meta_keys"].tolist(), f["meta_values"].tolist()))
            count, mean, cov = int(f["count"]), f["mean"], f["cov"]
    except (OSError, KeyError, ValueError) as e:
        raise PathError(f"cannot read FID statistics {str(path)!r}: {e}") from e
    if meta.get("format") != STATS_FORMAT:
        raise PathError(f"{str(path)!r} is not an igan FID statistics file (format {meta.get('format')!r})")
    if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
        raise PathError(f"{str(path)!r}: mean {mean.shape} and covariance {cov.shape} do not match")
    return count, mean, cov, meta


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Tr sqrt(cov1 @ cov2) for covariances (PSD). cov1 @ cov2 is similar to the symmetric PSD
    matrix s cov2 s with s = sqrt(cov1), so its eigenvalues are real and >= 0 and the trace of
    its principal square root is the sum of their square roots. This is what scipy's sqrtm
    computes in the official code, without its complex round-off or singular-matrix retry."""
    s = _psd_sqrt(cov1)
    m = s @ cov2 @ s
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 sqrt(cov1 cov2)): the FID of two Gaussians."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise RequestError(f"means must be vectors of one length, got {mu1.shape} and {mu2.shape}")
    d = mu1.size
    if cov1.shape != (d, d) or cov2.shape != (d, d):
        raise RequestError(f"covariances must be [{d}, {d}], got {cov1.shape} and {cov2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt_product(cov1, cov2))
