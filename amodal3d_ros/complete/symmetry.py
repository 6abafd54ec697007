"""Rotational symmetry about a vertical axis: found in the measured surface, used to pool occupancy.

Cans, fruit, mugs, bowls and plates stand on the support as surfaces of revolution. When the measured
surface says so (its sides lie on circles about one vertical axis), every completion is averaged
over turns about that axis: what was measured on the near side (a confident wall, confidently empty
space beside it) then also decides the hidden far side, where a completer alone only hedges (a tuna
can completed into its occluder's whole shadow, docs/BENCHMARKS.md). The idea is the mirror
completion of Bohg et al. (2011, "Mind the gap"), about an axis instead of a plane, with the same
test: the symmetric shape must agree with what was seen, or it is not used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

from ..fuse import EvidenceGrid
from .base import resample
from .constraints import constraint_grid

HEIGHT_BANDS = 8  # radii are fitted per band: spheres and tapered cups are surfaces of revolution too
MAX_FIT_POINTS = 3000  # the fit is as good on a subsample; four views can measure 50000 points
SIDE_NORMAL_Z = 0.5  # side points: the vertical part of their unit normal is below this
# Acceptance, chosen on the first validation set and checked on the second (docs/BENCHMARKS.md):
MAX_RESIDUAL_VOXELS = 0.25  # median distance of side points from their band's circle
# and at most this in metres: cans, fruit and mugs leave 0.2-0.7 mm (depth noise), while oval bottles
# (mustard, bleach) leave 1.7 mm and more, under a quarter of the 10 mm voxels of a tall object's grid
MAX_RESIDUAL_M = 0.001
MIN_SPAN_DEG = 60.0  # measured arc about the axis: a shorter one fits many axes
MAX_EXTRA_IN_FREE = 0.04  # pooled shape: share of its volume in seen-through space, above the raw one's
MAX_EXTRA_SURFACE_LOST = 0.05  # pooled shape: share of the measured surface it leaves out, above the raw one's


@dataclass
class RevolutionAxis:
    """A vertical axis of rotational symmetry in the grid frame (z up from the support)."""

    centre: np.ndarray  # (2,) x, y of the axis, metres
    radii: np.ndarray  # (HEIGHT_BANDS,) fitted radius of each height band, metres
    residual_m: float  # median distance of the side points from their band's circle, metres
    residual_voxels: float  # the same in evidence voxels
    span_deg: float  # angle about the axis that the side points cover

    @property
    def plausible(self) -> bool:
        return (self.residual_voxels < MAX_RESIDUAL_VOXELS and self.residual_m < MAX_RESIDUAL_M
                and self.span_deg >= MIN_SPAN_DEG)

    def in_frame(self, T_frame_grid: np.ndarray) -> np.ndarray:
        """(2, 3): the axis's point on the support and its unit direction (up), in another frame."""
        point = T_frame_grid[:3, :3] @ np.array([self.centre[0], self.centre[1], 0.0]) + T_frame_grid[:3, 3]
        return np.stack([point, T_frame_grid[:3, 2] / np.linalg.norm(T_frame_grid[:3, 2])])


def side_points(points: np.ndarray, voxel: float, neighbours: int = 12) -> np.ndarray:
    """The points whose local surface is near vertical (normals from their neighbours), above the
    support: a top face or a table edge would pull a circle fit off its axis."""
    if len(points) < neighbours:
        return points[:0]
    _, index = cKDTree(points).query(points, k=neighbours)
    centred = points[index] - points[index].mean(axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    normal_z = np.abs(vectors[:, 2, 0])  # the eigenvector of the smallest eigenvalue is the normal
    return points[(normal_z < SIDE_NORMAL_Z) & (points[:, 2] > voxel)]


def fit_vertical_axis(points: np.ndarray, voxel: float, seed: int = 0) -> Optional[RevolutionAxis]:
    """Least-squares vertical axis and per-band radii of grid-frame surface points, or None when
    there are too few side points to fit (``RevolutionAxis.plausible`` says whether it fits well)."""
    if len(points) > MAX_FIT_POINTS:
        points = points[np.random.default_rng(seed).choice(len(points), MAX_FIT_POINTS, replace=False)]
    side = side_points(points, voxel)
    if len(side) < 30:
        return None
    xy = side[:, :2]
    # Start from the algebraic circle fit of all side points (a linear solve), then let each band
    # have its own radius; soft-L1 keeps stray points (a segmentation spill) from dragging the axis.
    design = np.c_[2 * xy, np.ones(len(xy))]
    start_centre = np.linalg.lstsq(design, (xy ** 2).sum(axis=1), rcond=None)[0][:2]
    edges = np.linspace(side[:, 2].min(), side[:, 2].max() + 1e-9, HEIGHT_BANDS + 1)
    band = np.clip(np.searchsorted(edges, side[:, 2], side="right") - 1, 0, HEIGHT_BANDS - 1)
    start_r = np.linalg.norm(xy - start_centre, axis=1)
    start_radii = np.array([np.median(start_r[band == k]) if np.any(band == k) else np.median(start_r)
                            for k in range(HEIGHT_BANDS)])

    def residuals(x):
        return np.linalg.norm(xy - x[:2], axis=1) - x[2:][band]

    solution = least_squares(residuals, np.r_[start_centre, start_radii], loss="soft_l1", f_scale=0.3 * voxel)
    centre = solution.x[:2]
    angles = np.sort(np.arctan2(xy[:, 1] - centre[1], xy[:, 0] - centre[0]))
    largest_gap = np.diff(np.r_[angles, angles[0] + 2 * np.pi]).max()
    residual = float(np.median(np.abs(residuals(solution.x))))
    return RevolutionAxis(centre=centre, radii=np.abs(solution.x[2:]), residual_m=residual,
                          residual_voxels=residual / voxel, span_deg=float(np.degrees(2 * np.pi - largest_gap)))


def pool_about_axis(probability: np.ndarray, evidence: EvidenceGrid, centre: np.ndarray) -> np.ndarray:
    """Each cell's occupancy replaced by the mean over the cells at its height and distance from the
    axis (rings half a cell wide): the average over every turn about the axis, in one pass."""
    r = probability.shape[0]
    cells = evidence.centres(r)
    ring = np.floor(np.linalg.norm(cells[..., :2] - centre, axis=-1) / (0.5 * evidence.size / r)).astype(np.int64)
    key = (ring * r + np.arange(r)[None, None, :]).ravel()
    total = np.bincount(key, weights=probability.ravel().astype(np.float64))
    count = np.bincount(key)
    return (total[key] / count[key]).reshape(probability.shape).astype(np.float32)


def symmetrize(probability: np.ndarray, evidence: EvidenceGrid) -> tuple[np.ndarray, Optional[RevolutionAxis]]:
    """The occupancy pooled about the object's vertical axis of symmetry, when the measured surface
    has one and the pooled shape agrees with the observations as well as the raw one; otherwise the
    occupancy unchanged. Returns the occupancy and the axis used (None: not used)."""
    axis = fit_vertical_axis(evidence.visible_points, evidence.voxel)
    if axis is None or not axis.plausible or axis.radii.max() > 0.5 * evidence.size:
        return probability, None
    pooled = pool_about_axis(probability, evidence, axis.centre)
    r = probability.shape[0]
    observed = constraint_grid(evidence, r)
    free = resample(observed.empty.astype(np.float32), r, mode="nearest") > 0.5
    surface = resample(observed.surface.astype(np.float32), r, mode="nearest") > 0.5
    before, after = probability > 0.5, pooled > 0.5
    # A wrong axis (a banana's bend, a box's corner) smears the shape into seen-through space or
    # away from the measured surface; the constraints would hide that, so it is checked before them.
    extra_in_free = (after & free).sum() / max(1, after.sum()) - (before & free).sum() / max(1, before.sum())
    extra_lost = ((surface & ~after).sum() - (surface & ~before).sum()) / max(1, surface.sum())
    if extra_in_free >= MAX_EXTRA_IN_FREE or extra_lost >= MAX_EXTRA_SURFACE_LOST:
        return probability, None
    return pooled, axis
