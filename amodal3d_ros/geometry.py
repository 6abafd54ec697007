"""Small geometric helpers shared by every stage: projection, transforms, planes.

Conventions: metres; camera frames are ROS optical frames; ``T_a_b`` maps points from b into a.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return points @ T[:3, :3].T + T[:3, 3]


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def normalized_coordinates(K: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the rays of pixels (u, v) meet the plane z = 1: x = (u - cx) / fx, y = (v - cy) / fy.

    Integer (u, v) is a pixel's centre. ``u`` and ``v`` are arrays of any (broadcastable) shapes.
    """
    return (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]


def pixel_rays(K: np.ndarray, height: int, width: int, first_pixel: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(H, W, 3) ray directions with z = 1 for the pixel centres of an image, or of the window of
    H rows and W columns whose top-left pixel is ``first_pixel`` (u, v)."""
    u0, v0 = first_pixel
    u, v = np.meshgrid(np.arange(width, dtype=np.float64) + u0, np.arange(height, dtype=np.float64) + v0)
    x, y = normalized_coordinates(K, u, v)
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame points of a depth image (zeros where there is no depth)."""
    return pixel_rays(K, *depth.shape) * depth[..., None]


def backproject_to_world(depth: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points of a depth image (the camera centre where there is no depth)."""
    return transform_points(T_world_camera, backproject(depth, K).reshape(-1, 3)).reshape(depth.shape + (3,))


def backproject_pixels(K: np.ndarray, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points seen at pixels (u, v) (N,) at depths z (N,)."""
    x, y = normalized_coordinates(K, u, v)
    return np.stack([x * z, y * z, z], axis=1)


def project(K: np.ndarray, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) as (u, v) and depth z (N,) of camera-frame points."""
    z = points_cam[:, 2]
    safe_z = np.where(np.abs(z) > 1e-9, z, 1e-9)
    u = K[0, 0] * points_cam[:, 0] / safe_z + K[0, 2]
    v = K[1, 1] * points_cam[:, 1] / safe_z + K[1, 2]
    return np.stack([u, v], axis=1), z


@dataclass
class Plane:
    """The plane n . x + d = 0 with unit normal n pointing up (away from gravity / towards the cameras)."""

    normal: np.ndarray
    offset: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of (N, 3) points above the plane."""
        return points @ self.normal + self.offset

    def project(self, points: np.ndarray) -> np.ndarray:
        return points - np.outer(self.height(points), self.normal)

    def frame(self, origin_hint: np.ndarray, x_hint: np.ndarray | None = None) -> np.ndarray:
        """T_world_support: z along the normal, origin on the plane below ``origin_hint``."""
        z = self.normal / np.linalg.norm(self.normal)
        if x_hint is None or abs(np.dot(x_hint, z)) > 0.95 * np.linalg.norm(x_hint):
            x_hint = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        x = x_hint - np.dot(x_hint, z) * z
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = x, y, z
        T[:3, 3] = self.project(np.asarray(origin_hint, dtype=np.float64).reshape(1, 3))[0]
        return T


def fit_plane(points: np.ndarray, threshold: float, iterations: int = 400, seed: int = 0) -> tuple[Plane, np.ndarray]:
    """RANSAC plane fit with a least-squares refit on the inliers; returns the plane and inlier mask."""
    rng = np.random.default_rng(seed)
    n = len(points)
    if n < 3:
        raise ValueError("a plane needs at least 3 points")
    best_count, best = -1, None
    samples = rng.integers(0, n, size=(iterations, 3))
    p0, p1, p2 = points[samples[:, 0]], points[samples[:, 1]], points[samples[:, 2]]
    normals = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    normals, p0 = normals[ok] / norms[ok, None], p0[ok]
    # Score hypotheses on a subsample: the full cloud only for the winner's refit.
    sub = points[rng.choice(n, size=min(n, 4000), replace=False)]
    for normal, origin in zip(normals, p0):
        count = int(np.count_nonzero(np.abs((sub - origin) @ normal) < threshold))
        if count > best_count:
            best_count, best = count, (normal, origin)
    normal, origin = best
    inliers = np.abs((points - origin) @ normal) < threshold
    centroid = points[inliers].mean(axis=0)
    _, _, vt = np.linalg.svd(points[inliers] - centroid, full_matrices=False)
    normal = vt[2]
    inliers = np.abs((points - centroid) @ normal) < threshold
    return Plane(normal=normal, offset=float(-normal @ centroid)), inliers

