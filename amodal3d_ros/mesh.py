"""Occupancy -> watertight triangle mesh and a sampled surface cloud, in metres."""
from __future__ import annotations

import numpy as np
import trimesh
from scipy.ndimage import gaussian_filter
from skimage.measure import marching_cubes

from .geometry import transform_points


def mesh_from_occupancy(probability: np.ndarray, origin: np.ndarray, size: float, T_world_grid: np.ndarray,
                        level: float = 0.5, smooth_sigma: float = 0.0,
                        keep_near: np.ndarray | None = None,
                        min_part: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on an (R, R, R) occupancy over a cube of edge ``size`` at ``origin``.

    The volume is padded with empty cells so the surface always closes (watertight). Small
    disconnected blobs are dropped; with ``keep_near`` (grid-frame points), components that touch
    them are kept, otherwise only the largest; of those, none under ``min_part`` of the largest's
    volume.
    Returns world-frame vertices (N, 3) and faces (M, 3), both empty when nothing is occupied.
    """
    r = probability.shape[0]
    step = size / r
    vol = gaussian_filter(probability.astype(np.float32), smooth_sigma) if smooth_sigma > 0 else probability
    vol = np.pad(vol, 1, mode="constant", constant_values=0.0)
    if vol.max() <= level:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int32)
    verts, faces, _, _ = marching_cubes(vol, level=level)
    # Padded index i is cell i - 1, whose centre sits at origin + (i - 1 + 0.5) * step.
    verts_grid = origin + (verts - 0.5) * step
    mesh = trimesh.Trimesh(verts_grid, faces[:, ::-1], process=True)
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        if keep_near is not None and len(keep_near):
            from scipy.spatial import cKDTree

            tree = cKDTree(keep_near)
            keep = [p for p in parts if np.any(tree.query(p.vertices, distance_upper_bound=2 * step)[0] < np.inf)]
            parts = keep or [max(parts, key=lambda p: len(p.faces))]
        else:
            parts = [max(parts, key=lambda p: len(p.faces))]
        # Specks: a few noisy cells near an observed point close on their own; a grasp planner needs
        # the object, not a cloud of crumbs around it.
        largest = max(abs(p.volume) for p in parts)
        parts = [p for p in parts if abs(p.volume) >= min_part * largest]
        mesh = trimesh.util.concatenate(parts)
    if mesh.volume < 0:  # marching cubes winding depends on the axis order: make normals point out
        mesh.invert()
    return transform_points(T_world_grid, mesh.vertices), np.asarray(mesh.faces, dtype=np.int32)


def shrink_unobserved(vertices: np.ndarray, faces: np.ndarray, distance: float, observed: np.ndarray,
                      blend: float, floor: float | None = None) -> np.ndarray:
    """Move vertices ``distance`` inwards along their normals, except near ``observed`` points.

    Undoes a surface that was predicted ``distance`` outside the true one (a model trained on
    thickened walls) where it was predicted; vertices within ``blend`` of an observed point keep
    their measured place, and between ``blend`` and 2 ``blend`` the shift fades in.
    With ``floor`` (the support's height; z is up), vertices within ``blend`` of it do not move
    up or down: the base was cut by the support plane, a measurement, not predicted.
    """
    if distance <= 0 or len(faces) == 0:
        return vertices
    from scipy.spatial import cKDTree

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    normals = np.nan_to_num(np.asarray(mesh.vertex_normals))  # a vertex of degenerate faces only: stays
    if len(observed):
        near = cKDTree(observed).query(vertices, distance_upper_bound=2 * blend)[0]
        weight = np.clip(np.where(np.isfinite(near), near, 2 * blend) / blend - 1.0, 0.0, 1.0)
    else:
        weight = np.ones(len(vertices))
    shift = (distance * weight)[:, None] * normals
    if floor is not None:
        shift[vertices[:, 2] < floor + blend, 2] = 0.0
    return vertices - shift


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points spread evenly (by area) over the mesh surface."""
    if len(faces) == 0:
        return np.zeros((0, 3))
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points)
