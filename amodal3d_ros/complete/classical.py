"""Classical completions: no training, strong priors about objects standing on a support.

- ``visible``: the observed surface only (the baseline every completion must beat);
- ``extrusion``: the footprint of the visible points (2D convex hull on the support plane),
  extruded from the plane to the highest observed point;
- ``hull``: the 3D convex hull of the visible points and their shadows on the plane, which keeps
  tapering shapes (bowls, bottles) tighter than an extrusion.
Both fill hidden space the evidence allows; ``constraints.constrain`` carves what was seen through.
"""
from __future__ import annotations

import cv2
import numpy as np
import scipy.spatial

from ..fuse import EvidenceGrid
from .base import Completer, resample


class VisibleOnly(Completer):
    name = "visible"  # predicts nothing: its certainty stays the default, 0

    def occupancy(self, evidence: EvidenceGrid, resolution: int) -> np.ndarray:
        return np.zeros((resolution,) * 3, np.float32)


def footprint_mask(points_xy: np.ndarray, origin_xy: np.ndarray, step: float, resolution: int) -> np.ndarray:
    """(R, R) bool: cells whose centre lies in the 2D convex hull of the points."""
    scale = 16  # fixed-point sub-cell precision for cv2's polygon fill
    cells = (points_xy - origin_xy) / step - 0.5
    hull = cv2.convexHull(np.round(cells * scale).astype(np.int32))
    mask = np.zeros((resolution, resolution), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    # cv2 images are (row=y, col=x); the grid is indexed (x, y).
    return mask.T.astype(bool)


class Extrusion(Completer):
    name = "extrusion"

    def occupancy(self, evidence: EvidenceGrid, resolution: int) -> np.ndarray:
        pts = evidence.visible_points
        step = evidence.size / resolution
        foot = footprint_mask(pts[:, :2], evidence.origin[:2], step, resolution)
        z = evidence.origin[2] + (np.arange(resolution) + 0.5) * step
        top = float(np.percentile(pts[:, 2], 99.5))
        column = (z >= 0) & (z <= top)
        return (foot[:, :, None] & column[None, None, :]).astype(np.float32)

    def certainty(self) -> float:
        return 0.4


class ConvexHull(Completer):
    name = "hull"

    def occupancy(self, evidence: EvidenceGrid, resolution: int) -> np.ndarray:
        pts = evidence.visible_points
        shadows = pts.copy()
        shadows[:, 2] = 0.0
        both = np.concatenate([pts, shadows])
        try:
            hull = scipy.spatial.ConvexHull(both[np.unique(np.round(both / 1e-3), axis=0, return_index=True)[1]])
        except scipy.spatial.QhullError:
            return Extrusion().occupancy(evidence, resolution)
        # Inside = behind every facet plane (a x + b <= 0), tested on the evidence grid's cells and
        # resampled: the hull is a coarse prior and the test costs cells x facets.
        n = evidence.shape[0]
        centres = evidence.centres(n).reshape(-1, 3)
        inside = np.all(centres @ hull.equations[:, :3].T + hull.equations[:, 3] <= 1e-9, axis=1)
        return resample(inside.reshape((n,) * 3).astype(np.float32), resolution)

    def certainty(self) -> float:
        return 0.45


CLASSICAL = {c.name: c for c in (VisibleOnly, Extrusion, ConvexHull)}

__all__ = ["CLASSICAL", "ConvexHull", "Extrusion", "VisibleOnly", "footprint_mask"]
