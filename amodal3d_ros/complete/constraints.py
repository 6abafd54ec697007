"""The hard evidence constraints every completion obeys.

``constrain`` enforces what was observed on a predicted occupancy: the measured surface keeps its
sub-voxel position (from the signed distances), and seen-through space, the space under the
support and other objects stay empty, whatever the completer predicted.
"""
from __future__ import annotations

import numpy as np

from ..fuse import EvidenceGrid
from .base import resample


def observed_occupancy(evidence: EvidenceGrid, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy implied by the measured surface (0.5 on it) and where that is defined, at R."""
    p = np.clip(0.5 - 0.5 * evidence.sdf, 0.0, 1.0)
    defined = (evidence.observed > 0).astype(np.float32)
    # Interpolate p only from observed cells so unobserved neighbours do not blur the surface.
    p_r = resample(p * defined, resolution)
    w_r = resample(defined, resolution)
    ok = w_r > 0.25
    return np.where(ok, p_r / np.maximum(w_r, 1e-6), 0.0), ok


def constraint_grid(evidence: EvidenceGrid, resolution: int) -> EvidenceGrid:
    """The grid whose observations constrain an (R, R, R) occupancy: the one fused at R where the
    evidence has it (``EvidenceGrid.fine``), else the evidence grid itself (resampled to R)."""
    if evidence.fine is not None and evidence.fine.shape[0] == resolution:
        return evidence.fine
    return evidence


def constrain(probability: np.ndarray, evidence: EvidenceGrid) -> np.ndarray:
    """Apply the observations (of ``constraint_grid``) to a predicted (R, R, R) occupancy."""
    r = probability.shape[0]
    evidence = constraint_grid(evidence, r)
    p_obs, observed = observed_occupancy(evidence, r)
    out = np.where(observed, p_obs, probability)
    empty = resample(evidence.empty.astype(np.float32), r, mode="nearest") > 0.5
    surface = resample(evidence.surface.astype(np.float32), r, mode="nearest") > 0.5
    out = np.where(empty & ~observed, 0.0, out)
    return np.clip(np.where(surface & ~observed, np.maximum(out, 0.75), out), 0.0, 1.0).astype(np.float32)
