"""Shape metrics for completed objects against ground-truth meshes (metres in, mm out where named).

- Chamfer-L1: mean of the two directed mean nearest-neighbour distances, in mm;
- F-score at tau: harmonic mean of precision (predicted points within tau of the truth) and
  recall (true points within tau of the prediction);
- volumetric IoU: inside tests of both watertight meshes on a regular grid over their union box;
- hidden surface: the true surface no input view saw (ray-cast against the whole scene); its
  recall at 10 mm and its one-sided Chamfer distance (truth -> prediction), in mm.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from .geometry import invert, project, transform_points


@dataclass
class ShapeScores:
    chamfer_mm: float
    fscore_5mm: float
    fscore_10mm: float
    iou: Optional[float] = None
    hidden_recall_10mm: Optional[float] = None
    hidden_chamfer_mm: Optional[float] = None
    centroid_error_mm: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def fscore(pred: np.ndarray, gt: np.ndarray, tau: float, d_pred_gt=None, d_gt_pred=None) -> float:
    if len(pred) == 0 or len(gt) == 0:
        return 0.0
    if d_pred_gt is None:
        d_pred_gt = cKDTree(gt).query(pred)[0]
    if d_gt_pred is None:
        d_gt_pred = cKDTree(pred).query(gt)[0]
    precision = float(np.mean(d_pred_gt < tau))
    recall = float(np.mean(d_gt_pred < tau))
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def point_scores(pred: np.ndarray, gt: np.ndarray) -> ShapeScores:
    """Chamfer-L1 and F-scores between two point sets (metres)."""
    if len(pred) == 0:
        return ShapeScores(chamfer_mm=float("inf"), fscore_5mm=0.0, fscore_10mm=0.0)
    d_pg = cKDTree(gt).query(pred)[0]
    d_gp = cKDTree(pred).query(gt)[0]
    return ShapeScores(chamfer_mm=1000 * 0.5 * (d_pg.mean() + d_gp.mean()),
                       fscore_5mm=fscore(pred, gt, 0.005, d_pg, d_gp),
                       fscore_10mm=fscore(pred, gt, 0.01, d_pg, d_gp))


def occupancy(mesh: trimesh.Trimesh, points: np.ndarray, thicken: float = 0.0) -> np.ndarray:
    """Inside test for (N, 3) points (ray parity in Open3D; the mesh should be watertight).

    With ``thicken`` (metres), points nearer the surface than that count as inside too: a wall
    thinner than the sampling grid (a mug's, a plate's) then still shows up on the grid.
    """
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    query = o3d.core.Tensor(points.astype(np.float32))
    inside = scene.compute_occupancy(query).numpy() > 0.5
    if thicken > 0:
        inside |= scene.compute_distance(query).numpy() < thicken
    return inside


def volumetric_iou(pred: trimesh.Trimesh, gt: trimesh.Trimesh, resolution: int = 64) -> float:
    lo = np.minimum(pred.bounds[0], gt.bounds[0])
    hi = np.maximum(pred.bounds[1], gt.bounds[1])
    axes = [np.linspace(lo[i], hi[i], resolution) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    a, b = occupancy(pred, grid), occupancy(gt, grid)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def visible_surface_mask(points: np.ndarray, scene_meshes: Sequence[trimesh.Trimesh], Ks: Sequence[np.ndarray],
                         poses: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                         tolerance: float = 0.003) -> np.ndarray:
    """Which surface points some view sees: inside its image and first along its camera ray."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    for m in scene_meshes:
        scene.add_triangles(o3d.core.Tensor(np.asarray(m.vertices, np.float32)),
                            o3d.core.Tensor(np.asarray(m.faces, np.uint32)))
    seen = np.zeros(len(points), bool)
    for K, T, (w, h) in zip(Ks, poses, sizes):
        cam = transform_points(invert(T), points)
        uv, z = project(K, cam)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        origin = T[:3, 3]
        dirs = points - origin
        dist = np.linalg.norm(dirs, axis=1)
        rays = np.concatenate([np.repeat(origin[None], len(points), 0), dirs / dist[:, None]], axis=1)
        t_hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
        seen |= inside & (t_hit > dist - tolerance)
    return seen


def score_object(pred_mesh: trimesh.Trimesh, gt_mesh: trimesh.Trimesh, samples: int = 20000,
                 hidden_mask_fn=None, seed: int = 0) -> ShapeScores:
    """All metrics of one completed mesh. ``hidden_mask_fn(points) -> bool`` marks unseen truth."""
    rng = np.random.default_rng(seed)
    gt_pts = np.asarray(trimesh.sample.sample_surface(gt_mesh, samples, seed=int(rng.integers(1 << 30)))[0])
    if len(pred_mesh.faces) == 0:
        return ShapeScores(chamfer_mm=float("inf"), fscore_5mm=0.0, fscore_10mm=0.0, iou=0.0,
                           hidden_recall_10mm=0.0, hidden_chamfer_mm=float("inf"), centroid_error_mm=float("inf"))
    pred_pts = np.asarray(trimesh.sample.sample_surface(pred_mesh, samples, seed=int(rng.integers(1 << 30)))[0])
    scores = point_scores(pred_pts, gt_pts)
    scores.iou = volumetric_iou(pred_mesh, gt_mesh)
    scores.centroid_error_mm = 1000 * float(np.linalg.norm(pred_mesh.centroid - gt_mesh.centroid))
    return _add_hidden_scores(scores, pred_pts, gt_pts, hidden_mask_fn)


def _add_hidden_scores(scores: ShapeScores, pred_pts: np.ndarray, gt_pts: np.ndarray, hidden_mask_fn) -> ShapeScores:
    """Recall at 10 mm and Chamfer (truth -> prediction) of the truth's surface no view saw."""
    if hidden_mask_fn is not None and len(pred_pts):
        hidden = hidden_mask_fn(gt_pts)
        if hidden.any():
            d = cKDTree(pred_pts).query(gt_pts[hidden])[0]
            scores.hidden_recall_10mm = float(np.mean(d < 0.01))
            scores.hidden_chamfer_mm = 1000 * float(d.mean())
    return scores


def score_points(pred_points: np.ndarray, gt_mesh: trimesh.Trimesh, samples: int = 20000,
                 hidden_mask_fn=None, seed: int = 0) -> ShapeScores:
    """Point-only metrics (for the visible points alone, which have no volume)."""
    gt_pts = np.asarray(trimesh.sample.sample_surface(gt_mesh, samples, seed=seed)[0])
    return _add_hidden_scores(point_scores(pred_points, gt_pts), pred_points, gt_pts, hidden_mask_fn)
