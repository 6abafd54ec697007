"""Relative camera poses of unposed RGB-D views of a table top: planar search, then ICP.

Table-top views 20-60 degrees apart share little texture (feature matchers find few matches on
smooth objects), but they share the support plane. Aligning each view's plane leaves a planar
motion (yaw and shift) which an exhaustive yaw search with FFT correlation of the objects'
height maps finds; point-to-plane ICP refines the best few hypotheses, judged on the objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scipy.spatial import cKDTree

from ..config import PoseConfig
from ..geometry import backproject, invert, project, transform_points
from ..segment.base import subsample
from ..scene import Frame


class PoseEstimationError(RuntimeError):
    """Relative poses could not be estimated (too little overlap or texture)."""


@dataclass
class PairRegistration:
    T_target_source: np.ndarray  # maps source-camera points into the target camera frame
    fitness: float  # mutual depth consistency of the two views (see view_consistency), <= 1


def _support_frame(frame: Frame, config: PoseConfig) -> tuple[np.ndarray, np.ndarray]:
    """T_cam_plane for the table plane seen in ``frame`` and the camera-frame points (N, 3).

    The plane frame has z up along the plane normal, its origin below the camera and x along the
    camera's viewing direction projected on the plane, so two views differ only by a planar motion.
    """
    from ..segment.base import find_support_plane

    pts = backproject(frame.depth, frame.K)[frame.depth > 0]
    sample = subsample(pts, 20000)
    # Camera "up" is -y in the optical frame; table-top cameras tilt down by well under 70 degrees.
    plane = find_support_plane(sample, np.array([0.0, -1.0, 0.0]), np.zeros((1, 3)),
                               threshold=0.006, max_tilt_deg=75.0)
    return plane.frame(np.zeros(3), x_hint=np.array([0.0, 0.0, 1.0])), pts


def _height_map(points_plane: np.ndarray, cell: float, size: int) -> np.ndarray:
    """Max height above the plane per cell of a size x size grid centred on the plane origin."""
    grid = np.zeros((size, size), np.float32)
    ij = np.floor(points_plane[:, :2] / cell).astype(int) + size // 2
    ok = (ij >= 0).all(1) & (ij < size).all(1)
    np.maximum.at(grid, (ij[ok, 0], ij[ok, 1]), points_plane[ok, 2].astype(np.float32))
    return grid


def _planar_alignment(src_plane_pts: np.ndarray, dst_plane_pts: np.ndarray, cell: float = 0.006,
                      extent: float = 1.5, candidates: int = 3) -> list[np.ndarray]:
    """Yaw and shift (4x4s in plane coordinates) that best overlay the objects' height maps.

    Returns the best few distinct yaw hypotheses, best first, for refinement to choose from.

    Exhaustive over yaw with FFT cross-correlation for the shift: the table alone constrains
    nothing in-plane, the objects standing on it do.
    """
    size = int(2 ** np.ceil(np.log2(extent / cell)))

    def objects(pts):
        return pts[(pts[:, 2] > 0.01) & (pts[:, 2] < 0.4)]

    src, dst = objects(src_plane_pts), objects(dst_plane_pts)
    if len(src) < 50 or len(dst) < 50:
        raise PoseEstimationError("too few points above the support plane to align views")
    dst_map = _height_map(dst, cell, size)
    dst_f = np.fft.rfft2(dst_map)

    def score_yaw(yaw):
        c, s_ = np.cos(yaw), np.sin(yaw)
        rot = src.copy()
        rot[:, 0], rot[:, 1] = c * src[:, 0] - s_ * src[:, 1], s_ * src[:, 0] + c * src[:, 1]
        corr = np.fft.irfft2(dst_f * np.conj(np.fft.rfft2(_height_map(rot, cell, size))), s=(size, size))
        k = int(np.argmax(corr))
        return corr.flat[k], k // size, k % size

    coarse = [(yaw, *score_yaw(yaw)) for yaw in np.deg2rad(np.arange(0.0, 360.0, 3.0))]
    coarse.sort(key=lambda c: -c[1])
    hypotheses = []
    for yaw, *_ in coarse:
        if all(abs(np.angle(np.exp(1j * (yaw - h)))) > np.deg2rad(15) for h in hypotheses):
            hypotheses.append(yaw)
        if len(hypotheses) == candidates:
            break
    out = []
    for yaw0 in hypotheses:
        fine = [(y, *score_yaw(y)) for y in yaw0 + np.deg2rad(np.arange(-2.5, 2.6, 0.5))]
        yaw, _, di, dj = max(fine, key=lambda c: c[1])
        shift = np.array([di if di < size // 2 else di - size, dj if dj < size // 2 else dj - size]) * cell
        T = np.eye(4)
        T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        T[:2, 3] = shift
        out.append(T)
    return out


def _refine_planar(src: np.ndarray, dst: np.ndarray, T: np.ndarray,
                   distances=(0.03, 0.015, 0.008, 0.005)) -> tuple[np.ndarray, float]:
    """Trimmed ICP restricted to planar motion (yaw, x, y) between object points in plane frames.

    Keeping the plane fixed stops the slide that free 6-DoF ICP shows when views see different
    sides of the objects. Returns the transform and the share of source points within 5 mm.
    """
    tree = cKDTree(dst)
    for distance in distances:
        for _ in range(15):
            moved = transform_points(T, src)
            dist, idx = tree.query(moved, distance_upper_bound=distance)
            ok = np.isfinite(dist)
            if ok.sum() < 10:
                break
            a, b = moved[ok, :2], dst[idx[ok], :2]
            ca, cb = a.mean(0), b.mean(0)
            U, _, Vt = np.linalg.svd((a - ca).T @ (b - cb))
            R = Vt.T @ np.diag([1.0, np.sign(np.linalg.det(Vt.T @ U.T))]) @ U.T
            step = np.eye(4)
            step[:2, :2] = R
            step[:2, 3] = cb - R @ ca
            T = step @ T
            if np.linalg.norm(step[:2, 3]) < 1e-4 and abs(np.arctan2(R[1, 0], R[0, 0])) < 1e-4:
                break
    dist, _ = tree.query(transform_points(T, src), distance_upper_bound=0.005)
    return T, float(np.mean(np.isfinite(dist)))


def view_consistency(T_target_source: np.ndarray, points: np.ndarray, target: Frame,
                     tolerance: float = 0.01) -> float:
    """How well source-camera ``points`` agree with ``target``'s depth when moved by the transform.

    Points that land on the target's measured surface count for the transform, points that land
    clearly in front of it (space the target camera saw through) count twice against it. On the
    objects' points this separates true alignments from ones that only overlay a symmetric object.
    """
    pts = points
    cam = transform_points(T_target_source, pts)
    uv, z = project(target.K, cam)
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (z > 0) & (u >= 0) & (u < target.width) & (v >= 0) & (v < target.height)
    d = np.zeros(len(pts))
    d[inside] = target.depth[v[inside], u[inside]]
    measured = inside & (d > 0)
    agree = measured & (np.abs(z - d) < tolerance)
    violate = measured & (z < d - tolerance)
    return float((agree.sum() - 2 * violate.sum()) / max(1, len(pts)))


def register_pair(source: Frame, target: Frame, config: PoseConfig | None = None) -> PairRegistration:
    """T_target_source for two RGB-D views of the same table-top scene."""
    cfg = config or PoseConfig()
    T_src_plane, src_pts = _support_frame(source, cfg)
    T_dst_plane, dst_pts = _support_frame(target, cfg)
    src = transform_points(invert(T_src_plane), subsample(src_pts, 80000))
    dst = transform_points(invert(T_dst_plane), subsample(dst_pts, 80000))
    src_objects = src[(src[:, 2] > 0.01) & (src[:, 2] < 0.4)]
    dst_objects = dst[(dst[:, 2] > 0.01) & (dst[:, 2] < 0.4)]
    src_cam, dst_cam = transform_points(T_src_plane, src), transform_points(T_dst_plane, dst)
    best_score, best_T = -np.inf, None
    for T_planar in _planar_alignment(src, dst):
        T_planar, _ = _refine_planar(subsample(src_objects, 4000), dst_objects, T_planar)
        T = T_dst_plane @ T_planar @ invert(T_src_plane)
        score = mutual_consistency(T, src_cam, dst_cam, source, target)
        if score > best_score:
            best_score, best_T = score, T
    T = _refine_icp(best_T, src_cam, dst_cam, cfg)
    # The fitness reported is the objects' alone: the table agrees with itself under any planar
    # motion, and objects moved out of each other's view agree with nothing (0).
    objects = mutual_consistency(T, transform_points(T_src_plane, src_objects),
                                 transform_points(T_dst_plane, dst_objects), source, target)
    return PairRegistration(T_target_source=T, fitness=objects)


def mutual_consistency(T_target_source: np.ndarray, source_points: np.ndarray, target_points: np.ndarray,
                       source: Frame, target: Frame) -> float:
    """``view_consistency`` both ways: each view's points against the other's depth, averaged."""
    return (view_consistency(T_target_source, source_points, target)
            + view_consistency(invert(T_target_source), target_points, source)) / 2


def _refine_icp(T: np.ndarray, source_points: np.ndarray, target_points: np.ndarray, config: PoseConfig) -> np.ndarray:
    """Final 6-DoF point-to-plane ICP with tight correspondences, started near the answer."""
    import open3d as o3d

    clouds = []
    for pts in (source_points, target_points):
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)).voxel_down_sample(config.voxel / 3)
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=config.voxel, max_nn=30))
        pcd.orient_normals_towards_camera_location(np.zeros(3))
        clouds.append(pcd)
    for distance in (config.voxel, config.voxel / 2):
        T = np.asarray(o3d.pipelines.registration.registration_icp(
            clouds[0], clouds[1], distance, T,
            o3d.pipelines.registration.TransformationEstimationPointToPlane(),
            o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=30)).transformation)
    return T


def estimate_poses(frames: Sequence[Frame], config: PoseConfig | None = None) -> tuple[list[np.ndarray], list[float]]:
    """T_cam0_camk for every frame (frame 0 is the identity) and each view's registration fitness.

    Each view is registered to frame 0 and, where that overlap is weak, chained through the
    previous view, keeping whichever fits better. Fitness is the views' mutual depth consistency
    (``view_consistency``): 1 for frame 0, near 1 for a view that agrees everywhere it overlaps, low
    or negative for one that puts surfaces where the other view saw through.
    """
    cfg = config or PoseConfig()
    for i, f in enumerate(frames):
        if not f.has_depth:
            raise PoseEstimationError(
                f"frame {i} has no depth: unposed RGB-only views need given poses (TF, pose topic or "
                "T_world_camera in scene.json)")
    poses, fitness = [np.eye(4)], [1.0]
    for k in range(1, len(frames)):
        direct = register_pair(frames[k], frames[0], cfg)
        best, T = direct, direct.T_target_source
        if k > 1 and direct.fitness < 0.6:
            chained = register_pair(frames[k], frames[k - 1], cfg)
            if chained.fitness > direct.fitness:
                best, T = chained, poses[k - 1] @ chained.T_target_source
        poses.append(T)
        fitness.append(float(best.fitness))
    return poses, fitness
