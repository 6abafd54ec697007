"""What the pipeline reports about each completed object besides its shape: its frame and box, and what
of it each view sees and what hides the rest. How far each point of its surface can be trusted is
confidence.py's.
"""
from __future__ import annotations

import numpy as np

from .geometry import invert, pixel_rays, project, transform_points
from .scene import Frame
from .segment.base import SUPPORT_LABEL, SceneSegmentation, SegmentedObject


def object_box(vertices: np.ndarray, T_world_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object frame (base centre on the support, z up, x along the main axis) and its bounding box."""
    local = transform_points(invert(T_world_grid), vertices)
    xy = local[:, :2] - local[:, :2].mean(axis=0)
    _, _, vt = np.linalg.svd(xy, full_matrices=False)
    R2 = vt if np.linalg.det(vt) > 0 else vt * np.array([[1.0], [-1.0]])
    rotated = xy @ R2.T
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    centre_xy = local[:, :2].mean(axis=0) + ((lo + hi) / 2) @ R2
    T_grid_object = np.eye(4)
    T_grid_object[:2, :2] = R2.T
    T_grid_object[:2, 3] = centre_xy
    T_grid_object[2, 3] = max(0.0, float(local[:, 2].min()))
    T_world_object = T_world_grid @ T_grid_object
    in_object = transform_points(invert(T_world_object), vertices)
    lo3, hi3 = in_object.min(axis=0), in_object.max(axis=0)
    return T_world_object, (lo3 + hi3) / 2, hi3 - lo3


def render_depth(vertices: np.ndarray, faces: np.ndarray, frame: Frame, T_world_camera: np.ndarray) -> np.ndarray:
    """(H, W) depth of a mesh seen from a view (inf where it is not), rays cast only over its box."""
    import open3d as o3d

    cam_vertices = transform_points(invert(T_world_camera), vertices)
    depth = np.full((frame.height, frame.width), np.inf, np.float32)
    uv, z = project(frame.K, cam_vertices)
    front = z > 1e-3
    if not front.any():
        return depth
    u0, v0 = np.floor(uv[front].min(axis=0)).astype(int)
    u1, v1 = np.ceil(uv[front].max(axis=0)).astype(int)
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, frame.width - 1), min(v1, frame.height - 1)
    if u1 < u0 or v1 < v0:
        return depth
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(cam_vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    dirs = pixel_rays(frame.K, v1 - v0 + 1, u1 - u0 + 1, first_pixel=(u0, v0))
    rays = np.concatenate([np.zeros_like(dirs), dirs], axis=-1).astype(np.float32)
    t_hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()  # along dirs with z = 1: depth
    depth[v0:v1 + 1, u0:u1 + 1] = t_hit
    return depth


def analyse_visibility(frames, poses, segmentation: SceneSegmentation, obj: SegmentedObject,
                       vertices: np.ndarray, faces: np.ndarray, min_pixels: int = 15):
    """Visible and occluded masks per view, the visible fraction and the occluders' names.

    The completed mesh is rendered into each view: where it would be seen but the view shows
    something else, that something (another object, the support, missing depth, the image
    border) hides it.
    """
    visible, occluded = {}, {}
    best_fraction, occluders = 0.0, {}
    for i, (frame, T) in enumerate(zip(frames, poses)):
        depth = render_depth(vertices, faces, frame, T)
        silhouette = np.isfinite(depth)
        mask = obj.masks.get(i, np.zeros_like(silhouette))
        hidden = silhouette & ~mask
        visible[i], occluded[i] = mask, hidden
        if mask.any():
            best_fraction = max(best_fraction, float(mask.sum()) / max(1, int((silhouette | mask).sum())))
        labels = segmentation.labels[i][hidden]
        for label in np.unique(labels):
            count = int(np.count_nonzero(labels == label))
            if count < min_pixels:
                continue
            if label > 0 and segmentation.objects[label - 1].masks.get(i) is not obj.masks.get(i):
                name = segmentation.objects[label - 1].id  # another object (not the one a copy shares)
            elif label == SUPPORT_LABEL:
                name = "support"
            elif frame.depth is not None:
                no_depth = frame.depth[hidden] == 0
                name = "no_depth" if np.count_nonzero(no_depth & (labels == label)) >= min_pixels else None
            else:
                name = None
            if name:
                occluders[name] = occluders.get(name, 0) + count
        cam = transform_points(invert(T), vertices)
        uv, z = project(frame.K, cam)
        outside = (uv[:, 0] < 0) | (uv[:, 0] >= frame.width) | (uv[:, 1] < 0) | (uv[:, 1] >= frame.height)
        if np.any(outside & (z > 0)) and mask.any():
            occluders["border"] = occluders.get("border", 0) + int(np.count_nonzero(outside))
    names = sorted(occluders, key=lambda n: -occluders[n])
    return visible, occluded, best_fraction, names
