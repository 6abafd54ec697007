"""Per-object evidence grid: observed surface, observed free space and unknown space.

The grid lives in the object's support frame (z up along the support plane's normal, origin on
the plane), so "below the table" and "up" mean the same for every object and every view. Each
view votes per voxel by projecting the voxel centre into its depth image:

- in front of the measured depth by more than the truncation: the ray passed through, free;
- within the truncation band of a pixel of *this* object: a signed-distance sample of its surface;
- near or behind a surface of another object or the support: occupied by something else / hidden;
- behind the measured surface, outside the image or where depth is missing: unknown (occluded).

RGB-only views reach fusion with depth made from the support plane and the objects' visual hulls
(``segment.rgb``), so they vote like RGB-D views.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ..config import FuseConfig
from ..geometry import Plane, invert, project, transform_points
from ..scene import Frame
from ..segment.base import SUPPORT_LABEL, SceneSegmentation, SegmentedObject

# Channels handed to completers, in this order: outside fusion they are found by name
# (``CHANNELS.index("unknown")``), never by number.
CHANNELS = ("sdf", "observed", "free", "unknown", "other", "below")


@dataclass
class EvidenceGrid:
    T_world_grid: np.ndarray  # (4, 4) support frame of the object
    origin: np.ndarray  # (3,) grid-frame position of the corner of voxel (0, 0, 0)
    voxel: float  # edge length, metres
    sdf: np.ndarray  # (N, N, N) float32 truncated signed distance / truncation, +1 where unobserved
    observed: np.ndarray  # (N, N, N) float32 weight of surface observations of this object
    free: np.ndarray  # (N, N, N) bool, seen through by some view
    other: np.ndarray  # (N, N, N) bool, at or inside another object's or the support's surface
    below: np.ndarray  # (N, N, N) bool, under the support plane
    visible_points: np.ndarray  # (Q, 3) observed points of the object, grid frame
    views_used: int
    # The same votes on a grid ``FuseConfig.constraint_factor`` times finer over the same bounds:
    # what ``complete.constrain`` enforces when meshing at that resolution (None: resample this one).
    fine: Optional["EvidenceGrid"] = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.sdf.shape

    @property
    def unknown(self) -> np.ndarray:
        return ~self.free & (self.observed <= 0) & ~self.other & ~self.below

    @property
    def surface(self) -> np.ndarray:
        """Voxels observed at or just behind this object's surface: they stay occupied."""
        return (self.observed > 0) & (self.sdf <= 0)

    @property
    def empty(self) -> np.ndarray:
        """Voxels that must stay empty: seen through, under the table, or another object."""
        return (self.free & ~self.surface) | self.below | (self.other & ~self.surface)

    def channels(self) -> np.ndarray:
        """(C, N, N, N) float32 network input, channels as in ``CHANNELS``."""
        by_name = {"sdf": self.sdf, "observed": np.minimum(self.observed, 3.0) / 3.0, "free": self.free,
                   "unknown": self.unknown, "other": self.other, "below": self.below}
        return np.stack([by_name[name] for name in CHANNELS]).astype(np.float32)

    def centres(self, resolution: int | None = None) -> np.ndarray:
        """(R, R, R, 3) grid-frame centres of a grid of the same bounds at ``resolution``."""
        n = self.shape[0]
        r = resolution or n
        step = self.voxel * n / r
        axis = (np.arange(r) + 0.5) * step
        gx, gy, gz = np.meshgrid(axis, axis, axis, indexing="ij")
        return np.stack([gx, gy, gz], axis=-1) + self.origin

    @property
    def size(self) -> float:
        return self.voxel * self.shape[0]


def grid_frame(plane: Plane, points: np.ndarray) -> np.ndarray:
    """Support frame of an object: x along the main horizontal axis of its visible points."""
    flat = plane.project(points)
    centre = flat.mean(axis=0)
    if len(points) >= 3:
        _, _, vt = np.linalg.svd(flat - centre, full_matrices=False)
        x_hint = vt[0]
    else:
        x_hint = None
    return plane.frame(centre, x_hint=x_hint)


def place_grid(visible_grid: np.ndarray, view_dirs_grid: np.ndarray, config: FuseConfig) -> tuple[np.ndarray, float]:
    """Origin and voxel size of a cubic grid that covers the visible part and room for the hidden one.

    The hidden part of an object lies behind its visible surface, so the grid is shifted away from
    the cameras along their mean horizontal viewing direction.
    """
    n = config.voxels
    lo, hi = visible_grid.min(axis=0), visible_grid.max(axis=0)
    extent = max(float(np.max(hi[:2] - lo[:2])), float(hi[2]), 0.01)
    side = extent + 2 * max(config.min_margin, config.margin * extent)
    voxel = float(np.clip(side / n, config.min_voxel, config.max_voxel))
    side = voxel * n
    centre = (lo[:2] + hi[:2]) / 2
    away = view_dirs_grid[:2]
    if np.linalg.norm(away) > 1e-6:
        centre = centre + away / np.linalg.norm(away) * min(0.25 * extent, 0.5 * (side - extent))
    # Two voxels below the plane so the base closes against empty space.
    origin = np.array([centre[0] - side / 2, centre[1] - side / 2, -2 * voxel])
    return origin, voxel


def fuse_object(frames: Sequence[Frame], poses: Sequence[np.ndarray], segmentation: SceneSegmentation,
                obj: SegmentedObject, config: FuseConfig | None = None) -> EvidenceGrid:
    """Evidence grid of one segmented object from all views."""
    cfg = config or FuseConfig()
    plane = segmentation.plane
    if plane is None:
        raise ValueError("fusion needs the support plane")
    centres_w = np.array([T[:3, 3] for T in poses])
    if len(obj.points) == 0:
        raise ValueError(f"object '{obj.id}' has no observed 3D points to place its grid")
    T_world_grid = grid_frame(plane, obj.points)
    T_grid_world = invert(T_world_grid)
    visible = transform_points(T_grid_world, obj.points)
    view_dirs = np.mean([T_grid_world[:3, :3] @ (obj.points.mean(0) - c) for c in centres_w], axis=0)
    origin, voxel = place_grid(visible, view_dirs, cfg)
    grid = _fuse_on_grid(frames, poses, segmentation, obj, T_world_grid, visible, origin, voxel, cfg.voxels,
                         cfg.surface_band)
    if cfg.constraint_factor > 1:
        # The same rules on finer cells, the surface band included (in cells, so the measured surface
        # is pinned as tightly as the finer cells allow): a thin wall is no longer as thick as a coarse cell.
        factor = cfg.constraint_factor
        grid = replace(grid, fine=_fuse_on_grid(frames, poses, segmentation, obj, T_world_grid, visible, origin,
                                                voxel / factor, cfg.voxels * factor, cfg.surface_band))
    return grid


def _fuse_on_grid(frames: Sequence[Frame], poses: Sequence[np.ndarray], segmentation: SceneSegmentation,
                  obj: SegmentedObject, T_world_grid: np.ndarray, visible: np.ndarray, origin: np.ndarray,
                  voxel: float, n: int, surface_band: float) -> EvidenceGrid:
    """Every view's votes on the (n, n, n) grid at ``origin`` (grid frame) with cells of ``voxel`` metres."""
    trunc = max(surface_band * voxel, 0.004)
    axis = (np.arange(n) + 0.5) * voxel
    gx, gy, gz = np.meshgrid(axis + origin[0], axis + origin[1], axis + origin[2], indexing="ij")
    centres_grid = np.stack([gx, gy, gz], axis=-1).reshape(-1, 3)
    centres_world = transform_points(T_world_grid, centres_grid)

    sdf_sum = np.zeros(len(centres_grid))
    weight = np.zeros(len(centres_grid))
    free = np.zeros(len(centres_grid), bool)
    other = np.zeros(len(centres_grid), bool)
    views_used = 0
    for i, (frame, T_wc) in enumerate(zip(frames, poses)):
        cam = transform_points(invert(T_wc), centres_world)
        uv, z = project(frame.K, cam)
        u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
        inside = (z > 0.05) & (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
        idx = np.nonzero(inside)[0]
        labels = segmentation.labels[i][v[idx], u[idx]]
        # The object's own masks, not its label: a second target on the same object is a copy
        # that shares the masks but has no label of its own.
        own = obj.masks[i][v[idx], u[idx]] if i in obj.masks else np.zeros(len(idx), bool)
        if own.any():
            views_used += 1
        if frame.depth is None:
            continue  # RGB-only frames get their depth (plane and visual hulls) before fusion
        d = frame.depth[v[idx], u[idx]]
        measured = d > 0
        sdf = d - z[idx]  # > 0: voxel in front of the measured surface
        free[idx[measured & (sdf > trunc)]] = True
        near = measured & (np.abs(sdf) <= trunc)
        sel = idx[near & own]
        sdf_sum[sel] += np.clip(sdf[near & own], -trunc, trunc) / trunc
        weight[sel] += 1.0
        # At another object's (or the support's) surface: taken by something else.
        other[idx[near & ~own & (labels != 0) & (sdf <= 0.5 * trunc)]] = True
        # Carve with the support label too: a voxel seen in front of the table is free.
        other[idx[near & (labels == SUPPORT_LABEL)]] = True

    sdf = np.where(weight > 0, sdf_sum / np.maximum(weight, 1e-9), 1.0)
    below = centres_grid[:, 2] < 0.0
    shape = (n, n, n)
    return EvidenceGrid(T_world_grid=T_world_grid, origin=origin, voxel=voxel,
                        sdf=sdf.reshape(shape).astype(np.float32), observed=weight.reshape(shape).astype(np.float32),
                        free=free.reshape(shape), other=other.reshape(shape), below=below.reshape(shape),
                        visible_points=visible, views_used=views_used)
