"""What every segmenter returns, and the pieces they share (support plane, cross-view association)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from ..geometry import Plane, fit_plane, invert, project, transform_points
from ..scene import Frame, Target

SUPPORT_LABEL = -1  # label image value of support-plane pixels; 0 = nothing, k + 1 = object k


@dataclass
class SegmentedObject:
    """One object found in the views: its visible mask per frame and its observed world points."""

    id: str
    masks: dict[int, np.ndarray]  # frame index -> (H, W) bool visible mask
    points: np.ndarray  # (N, 3) observed surface points, world frame (may be empty without depth)
    colors: np.ndarray  # (N, 3) uint8 colours of those points
    is_target: bool = False


@dataclass
class SceneSegmentation:
    plane: Optional[Plane]  # the support surface the objects rest on
    labels: list[np.ndarray]  # per frame (H, W) int32: 0 nothing, -1 support, k + 1 object k
    objects: list[SegmentedObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def object(self, object_id: str) -> SegmentedObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(object_id)


class Segmenter:
    """A segmentation backend of views with depth (``make_segmenter`` builds the configured one)."""

    # Optional: region proposals of one view, ``region_masks(frame) -> list of (H, W) bool masks``, which
    # the RGB-only silhouette segmenter (``segment.rgb``) uses instead of its colour regions. None: none.
    region_masks: Optional[Callable[[Frame], list[np.ndarray]]] = None

    def segment(self, frames: Sequence[Frame], poses: Sequence[np.ndarray], targets: Sequence[Target] = (),
                up_hint: Optional[np.ndarray] = None) -> SceneSegmentation:
        """Find the support plane and the objects; ``poses`` are T_world_camera per frame. ``up_hint``:
        a rough up direction where the poses were estimated (None: the world's z is up)."""
        raise NotImplementedError


class TargetNotFoundError(ValueError):
    """A target pixel that does not land on any segmented object."""


def find_support_plane(points: np.ndarray, up_hint: np.ndarray, camera_centres: np.ndarray,
                       threshold: float, max_tilt_deg: float, seed: int = 0,
                       view_points: Sequence[np.ndarray] = ()) -> Plane:
    """The plane objects rest on: of the large planes roughly facing ``up_hint``, the highest.

    Scenes show a table top and often the floor below it; objects stand on the higher one. A box
    top or a lid also faces up and sits higher, and its plane may gather enough scattered coplanar
    points elsewhere to count as large. With ``view_points`` (per view (H, W, 3) world points, NaN
    where there is no depth) a plane must also be large as the largest connected patch of its
    inliers in the images, which a box top never is beside a table; a horizontal slice through a
    wall is one long strip in the images but holds few points. The returned normal points towards
    the cameras.
    """
    up_hint = up_hint / np.linalg.norm(up_hint)
    remaining = points
    candidates: list[tuple[Plane, int, int]] = []
    min_cos = np.cos(np.deg2rad(max_tilt_deg))
    for attempt in range(4):
        if len(remaining) < 100:
            break
        plane, inliers = fit_plane(remaining, threshold, seed=seed + attempt)
        count = int(inliers.sum())
        if count < 0.04 * len(points):
            break
        if np.mean(plane.height(camera_centres)) < 0:  # orient towards the cameras
            plane = Plane(-plane.normal, -plane.offset)
        if plane.normal @ up_hint >= min_cos:
            patch = sum(_largest_patch(plane, w, threshold) for w in view_points) if len(view_points) else count
            candidates.append((plane, count, patch))
        remaining = remaining[~inliers]
    if not candidates:
        raise ValueError("no support plane found: the views show no large surface facing up")
    most_points, largest_patch = max(c for _, c, _ in candidates), max(a for _, _, a in candidates)
    eligible = [p for p, c, a in candidates if c >= 0.2 * most_points and a >= 0.2 * largest_patch]
    # The highest plane is the one nearest to the cameras along its normal.
    return min(eligible, key=lambda p: float(np.mean(p.height(camera_centres))))


def support_from_depth(frames: Sequence[Frame], poses: Sequence[np.ndarray], world: Sequence[Optional[np.ndarray]],
                       plane_distance: float, up_hint: Optional[np.ndarray] = None) -> Plane:
    """The support plane of RGB-D views; ``world`` holds per view (H, W, 3) world points or None.

    ``up_hint``: None when the poses are given (world z is up); else only a rough hint (camera "up"
    of frame 0), so the plane may tilt much further from it.
    """
    centres = np.array([T[:3, 3] for T in poses])
    views = [np.where((f.depth > 0)[..., None], w, np.nan) for f, w in zip(frames, world) if w is not None]
    sample = np.concatenate([subsample(w[np.isfinite(w[..., 0])], 15000, seed=i) for i, w in enumerate(views)])
    if up_hint is None:
        up_hint, max_tilt = np.array([0.0, 0.0, 1.0]), 35.0
    else:
        max_tilt = 70.0
    return find_support_plane(sample, up_hint, centres, plane_distance, max_tilt, view_points=views)


def _largest_patch(plane: Plane, world: np.ndarray, threshold: float, step: int = 2) -> int:
    """Pixels (at every ``step``-th row and column) of the largest connected patch of plane inliers."""
    import cv2

    sub = world[::step, ::step]
    with np.errstate(invalid="ignore"):
        inlier = np.abs(plane.height(sub.reshape(-1, 3)).reshape(sub.shape[:2])) < threshold
    # Depth noise and thin objects lying on the table pepper it with holes: close them first.
    inlier = cv2.morphologyEx(inlier.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(inlier, connectivity=4)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0


def associate_segments(segment_frames: Sequence[int], segment_regions: Sequence[int],
                       segment_points: Sequence[np.ndarray], frames: Sequence[Frame],
                       poses: Sequence[np.ndarray], region_images: Sequence[np.ndarray],
                       tolerance: float, min_share: float = 0.4) -> list[int]:
    """Group per-view segments that are the same object (union-find over cross-view agreement).

    A segment's points are projected into every other view; of those that view actually sees
    (measured depth within ``tolerance``), the share landing on one segment links the two. Points
    hidden in the other view say nothing, so partial and differently occluded views still link.
    Returns a group index per segment.
    """
    n = len(segment_points)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index = {(f, r): k for k, (f, r) in enumerate(zip(segment_frames, segment_regions))}
    for a in range(n):
        for j, (frame, T) in enumerate(zip(frames, poses)):
            if j == segment_frames[a] or frame.depth is None:
                continue
            uv, z = project(frame.K, transform_points(invert(T), segment_points[a]))
            u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
            inside = (z > 0) & (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
            d = frame.depth[v[inside], u[inside]]
            seen = (d > 0) & (np.abs(d - z[inside]) < tolerance)
            regions = region_images[j][v[inside][seen], u[inside][seen]]
            if len(regions) < 20:
                continue
            labels, counts = np.unique(regions[regions > 0], return_counts=True)
            for label, count in zip(labels, counts):
                if count >= max(20, min_share * len(regions)) and (j, int(label)) in index:
                    parent[root(a)] = root(index[(j, int(label))])
    roots = [root(i) for i in range(n)]
    order = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return [order[r] for r in roots]


def nearest_label(labels: np.ndarray, pixel: tuple[int, int], radius: int = 12) -> int:
    """The object label at ``pixel`` or, on a hole or edge, the nearest one within ``radius``."""
    u, v = pixel
    h, w = labels.shape
    if labels[v, u] > 0:
        return int(labels[v, u])
    v0, v1, u0, u1 = max(0, v - radius), min(h, v + radius + 1), max(0, u - radius), min(w, u + radius + 1)
    window = labels[v0:v1, u0:u1]
    ys, xs = np.nonzero(window > 0)
    if len(ys) == 0:
        return 0
    k = np.argmin((ys + v0 - v) ** 2 + (xs + u0 - u) ** 2)
    return int(window[ys[k], xs[k]])


def subsample(points: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    if len(points) <= count:
        return points
    return points[np.random.default_rng(seed).choice(len(points), size=count, replace=False)]
