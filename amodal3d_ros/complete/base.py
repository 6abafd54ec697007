"""The completion interface every completer derives from, and the resampling they share.

A completer turns an object's evidence grid into occupancy probabilities on a grid of the same
bounds at any resolution; ``constraints.constrain`` then enforces what was observed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..fuse import EvidenceGrid


class Completer:
    """A completion method. Besides ``occupancy``, the behaviours below have defaults to override."""

    name: str = ""
    # An occupancy that is the truth, not an estimate (the benchmark's true shape): the pipeline does
    # not pool it about a symmetry axis (see complete/symmetry.py).
    exact: bool = False

    def occupancy(self, evidence: EvidenceGrid, resolution: int) -> np.ndarray:
        """(R, R, R) occupancy probabilities over the evidence grid's bounds."""
        raise NotImplementedError

    def certainty(self) -> float:
        """0..1: how far to trust the predicted hidden parts (used in per-object confidence)."""
        return 0.0

    def surface_offset(self, evidence: EvidenceGrid) -> float:
        """Metres by which the predicted surfaces lie outside the true ones; meshing moves them back
        (see mesh.shrink_unobserved)."""
        return 0.0


def resample(volume: np.ndarray, resolution: int, mode: str = "trilinear") -> np.ndarray:
    """Resample an (N, N, N) volume over the same bounds to (R, R, R), cell centres aligned."""
    if volume.shape[0] == resolution:
        return volume
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t, size=(resolution,) * 3, mode=mode, **kwargs)[0, 0].numpy()
