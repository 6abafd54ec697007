"""Segmentation of posed RGB-only views, and the depth their silhouettes give them.

Without depth nothing rises above the table, so objects are found by colour and located by
multi-view geometry:

1. Support plane: the world's z is up (scene format, ROS convention), so only the plane's height is
   unknown; it is fitted to the plane-sweep stereo points (:mod:`..stereo`), sparse but dense on
   the textured table. Stereo is not trusted on the objects: on their plain surfaces it often
   matches the table behind them.
2. Per view, regions bounded by chroma edges, the parts of one colour joined. The large ones that
   reach the image border (table, walls) are background: a ray through them passes every object
   before it ends.
3. Silhouette carving: a point above the table that projects onto background in any view is empty.
   Regions of two views are one object when the carved viewing cone of one lands on the other and
   their colours agree.
4. Each wanted object's visual hull (the voxels no view carves, inside the cones of its masks) gives
   every view a depth at the object's pixels (the hull's nearest voxel), and the plane gives the
   depth of background pixels. Fusion and
   completion then run exactly as for RGB-D input.

The hull bounds an object from outside, so shapes err on the fat side where views are few or close
together. Pixels whose region is uncertain (colour edges, small specks) never carve: one wrong
background pixel would cut a hole through an object, a missed one only leaves it fatter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
from scipy import ndimage

from ..config import SegmentConfig
from ..geometry import Plane, backproject, invert, pixel_rays, project, transform_points
from ..scene import Frame, Target
from .base import SUPPORT_LABEL, SceneSegmentation, SegmentedObject, nearest_label
from .depth import assign_targets

UP = np.array([0.0, 0.0, 1.0])  # world z, away from gravity (scene format)
CHROMA_EDGE = 4.0  # a*b* change per pixel that bounds a region (object outlines are antialiased: gentle)
BORDER_REGION_FRACTION = 0.05  # a region touching the border and larger than this share is table or wall
BORDER_CONTACT_FRACTION = 0.4  # a region touching the border over this share of the image height is background
LARGE_REGION_FRACTION = 0.3  # any region larger than this share of the image is background
FAR = 20.0  # m, depth of background pixels whose ray does not meet the support plane
HULL_CELLS = 72  # visual hull voxels along the longest side of an object's box
MIN_STEREO_POINTS = 200


class RgbOnlyError(ValueError):
    """RGB-only views that carry too little geometry to reconstruct from."""


@dataclass
class ViewRegions:
    """One view cut into regions: ``image`` > 0 object candidates, SUPPORT_LABEL background, 0 unsure."""

    image: np.ndarray
    colours: dict[int, np.ndarray]  # region -> mean signed CIE a*b*
    areas: dict[int, int]


class SilhouetteSegmenter:
    """Segments posed RGB-only frames (sparse stereo depth allowed) and gives them silhouette depth."""

    def __init__(self, config: SegmentConfig | None = None, max_height: float = 0.35,
                 region_masks: Optional[Callable[[Frame], list[np.ndarray]]] = None):
        self.config = config or SegmentConfig()
        self.max_height = max_height  # m above the support: the tallest object the cones reach
        # Where the regions come from: chroma edges, or a mask proposer (segment-anything's
        # automatic masks) that also finds objects of the table's colour.
        self.region_masks = region_masks

    def segment(self, frames: Sequence[Frame], poses: Sequence[np.ndarray],
                targets: Sequence[Target] = ()) -> tuple[SceneSegmentation, list[Frame]]:
        """Segmentation, and the frames with depth: plane at background pixels, visual hulls at the
        wanted objects' pixels (the targets, or every object without targets). Frames must be posed;
        their depth, if any, is sparse stereo (used for the support plane)."""
        poses = [np.asarray(T, dtype=np.float64) for T in poses]
        plane = self._support_plane(frames, poses)
        views = [self._regions(f) for f in frames]
        # Carving the association cones only needs to know what is background; computed once.
        not_background = [v.image != SUPPORT_LABEL for v in views]
        labels = [v.image.copy() for v in views]
        for lab in labels:
            lab[lab > 0] = 0  # object labels are given below, per associated object

        seeds = []
        for t in targets:
            r = nearest_label(np.maximum(views[t.frame].image, 0), t.pixel)
            if r > 0:
                seeds.append((t.frame, r))
        ordered = sorted(((i, r) for i, v in enumerate(views) for r in v.areas),
                         key=lambda ir: -views[ir[0]].areas[ir[1]])
        seeds += [s for s in ordered if s not in seeds]

        claimed: set[tuple[int, int]] = set()
        objects, cones = [], []
        for seed in seeds:
            if seed in claimed:
                continue
            members, survivors = self._associate(seed, frames, poses, views, not_background, plane, claimed)
            claimed.update(members)
            masks: dict[int, np.ndarray] = {}
            for i, r in members:
                masks[i] = masks[i] | (views[i].image == r) if i in masks else views[i].image == r
            k = len(objects)
            for i, mask in masks.items():
                labels[i][mask] = k + 1
            objects.append(SegmentedObject(id=f"object_{k}", masks=masks, points=np.zeros((0, 3)),
                                           colors=np.zeros((0, 3), np.uint8)))
            cones.append(survivors)
        seg = SceneSegmentation(plane=plane, labels=labels, objects=objects, warnings=[])
        assign_targets(seg, targets)
        for obj in objects[len(cones):]:  # a second target on one object: a copy sharing its masks
            source = next(j for j in range(len(cones)) if objects[j].masks.keys() == obj.masks.keys()
                          and all(objects[j].masks[i] is m for i, m in obj.masks.items()))
            cones.append(cones[source])

        depths = [background_depth(f, T, plane, lab == SUPPORT_LABEL) for f, T, lab in zip(frames, poses, labels)]
        wanted = [objects.index(o) for o in objects if o.is_target] if targets else list(range(len(objects)))
        # First the hulls of the wanted objects' occluders (the objects their masks touch): what a
        # view sees of an occluder lies at or behind its hull's front, so anything hidden by it does too.
        fronts = [np.zeros(lab.shape, np.float32) for lab in labels]
        for k in sorted({o for w in wanted for o in touching_objects(objects[w].masks, labels)} - set(wanted)):
            hull, voxel = visual_hull(objects[k].masks, cones[k], frames, poses, labels, plane)
            for i, mask in objects[k].masks.items():
                fronts[i] = np.where(mask, hull_depth(hull, voxel, frames[i], poses[i], mask), fronts[i])
        for k in wanted:
            obj = objects[k]
            hull, voxel = visual_hull(obj.masks, cones[k], frames, poses, labels, plane, fronts)
            if len(hull) == 0:
                seg.warnings.append(f"object '{obj.id}': every view carves it away (no visual hull)")
                continue
            points, colours = [], []
            for i, mask in obj.masks.items():
                depth = hull_depth(hull, voxel, frames[i], poses[i], mask)
                depths[i] = np.where(mask & (depth > 0), depth, depths[i])
                filled = mask & (depth > 0)
                cam = backproject(np.where(filled, depth, 0.0), frames[i].K)[filled]
                points.append(transform_points(poses[i], cam))
                colours.append(frames[i].rgb[filled])
            obj.points = np.concatenate(points) if points else np.zeros((0, 3))
            obj.colors = np.concatenate(colours) if colours else np.zeros((0, 3), np.uint8)
        out = [Frame(rgb=f.rgb, K=f.K, depth=d.astype(np.float32), T_world_camera=f.T_world_camera, stamp=f.stamp)
               for f, d in zip(frames, depths)]
        return seg, out

    # ------------------------------------------------------------------ stages
    def _support_plane(self, frames: Sequence[Frame], poses: Sequence[np.ndarray]) -> Plane:
        points = [transform_points(T, backproject(f.depth, f.K)[f.depth > 0])
                  for f, T in zip(frames, poses) if f.depth is not None]
        points = np.concatenate(points) if points else np.zeros((0, 3))
        if len(points) < MIN_STEREO_POINTS:
            raise RgbOnlyError(
                f"RGB-only views: stereo found only {len(points)} points, too few to locate the support surface "
                "(need textured surfaces seen from two or more posed views with some baseline, or depth images)")
        # The world's z is up, so the plane is the most common height of the stereo points: the
        # table is the textured surface that stereo fills best. (Not the highest large plane, as
        # with depth: stereo's gross errors on plain objects can form a second "plane".)
        z = points[:, 2]
        step = self.config.plane_distance
        bins = np.arange(z.min(), z.max() + 2 * step, step)
        counts, edges = np.histogram(z, bins=bins)
        peak = int(np.argmax(counts))
        near = np.abs(z - 0.5 * (edges[peak] + edges[peak + 1])) < step
        if near.sum() < MIN_STEREO_POINTS // 2:
            raise RgbOnlyError(f"RGB-only views: no support surface in the stereo points ({int(near.sum())} points at "
                               "the most common height; the world frame's z must point up)")
        return Plane(normal=UP.copy(), offset=-float(np.median(z[near])))

    def _regions(self, frame: Frame) -> ViewRegions:
        """Regions between chroma edges or from the mask proposer (neighbours of one colour joined);
        background by size and border contact."""
        cfg = self.config
        # Signed CIE a*b* (OpenCV's 8-bit Lab is offset by 128).
        ab = cv2.cvtColor(cv2.GaussianBlur(frame.rgb, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)[..., 1:] - 128.0
        if self.region_masks is None:
            n, comp = cv2.connectedComponents((chroma_gradient(ab) < CHROMA_EDGE).astype(np.uint8), connectivity=4)
        else:
            comp = paint_masks(self.region_masks(frame), ab.shape[:2])
            n = int(comp.max()) + 1
        area = np.bincount(comp.ravel(), minlength=n).astype(np.float64)
        size = comp.size
        contact = np.bincount(np.concatenate([comp[0], comp[-1], comp[1:-1, 0], comp[1:-1, -1]]), minlength=n)
        # Table and walls are large or run along the image border (a wall strip at the top is thin
        # but spans the width; an object cut by the border touches it over a short stretch).
        background = (area > LARGE_REGION_FRACTION * size) | ((contact > 0) & (area > BORDER_REGION_FRACTION * size)) \
            | (contact > BORDER_CONTACT_FRACTION * min(comp.shape))
        background[0] = False  # 0: the edge pixels themselves
        # Parts of one object (its lit and shaded sides, a lid) join; background never joins.
        objects_only = np.where(background[comp], 0, comp)
        merged = merge_similar_neighbours(objects_only, mean_per_label(ab, comp, n), cfg.color_edge)
        image = np.where(background[comp], SUPPORT_LABEL, merged).astype(np.int32)
        m = merged.max() + 1
        area = np.bincount(merged.ravel(), minlength=m).astype(np.float64)
        colours = mean_per_label(ab, merged, m)
        min_pixels = max(20, int(cfg.min_object_pixels * size / (640 * 480)))
        small = np.nonzero(area < min_pixels)[0]
        image[np.isin(image, small[small > 0])] = 0  # specks: unsure, never carve
        candidates = [r for r in range(1, m) if area[r] >= min_pixels]
        return ViewRegions(image=image, colours={int(r): colours[r] for r in candidates},
                           areas={int(r): int(area[r]) for r in candidates})

    def _associate(self, seed: tuple[int, int], frames, poses, views: list[ViewRegions],
                   not_background: list[np.ndarray], plane: Plane,
                   claimed: set) -> tuple[list[tuple[int, int]], np.ndarray]:
        """The seed region and the regions of other views that its carved cone lands on with its colour."""
        i, r = seed
        cone = viewing_cone(frames[i], poses[i], views[i].image == r, plane, self.max_height)
        survivors = cone[carve(cone, frames, poses, not_background)]
        members = [seed]
        colour = views[i].colours[r]
        for j, (frame, T) in enumerate(zip(frames, poses)):
            if j == i or len(survivors) == 0:
                continue
            u, v, inside = pixels_of(survivors, frame, T)
            hit = views[j].image[v[inside], u[inside]]
            regions, counts = np.unique(hit[hit > 0], return_counts=True)
            for s, count in zip(regions, counts):
                alike = same_colour(views[j].colours[int(s)], colour, self.config.color_edge)
                if alike and count >= max(15, 0.1 * inside.sum()) and (j, int(s)) not in claimed:
                    members.append((j, int(s)))
        return members, survivors


# ---------------------------------------------------------------------------- regions
def mean_per_label(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """(n, C) mean of (H, W, C) ``values`` over each label 0..n-1 of ``labels`` (0 where a label is empty)."""
    area = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
    return np.stack([np.bincount(labels.ravel(), weights=values[..., c].ravel(), minlength=n)
                     for c in range(values.shape[-1])], 1) / area[:, None]


def paint_masks(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 component image from possibly overlapping masks: larger ones first, so a part
    (an object) wins over the whole it lies on (the table); 0 where no mask covers."""
    comp = np.zeros(shape, np.int32)
    for k, mask in enumerate(sorted(masks, key=lambda m: -int(np.count_nonzero(m))), start=1):
        comp[np.asarray(mask, bool)] = k
    return comp


def chroma_gradient(ab: np.ndarray) -> np.ndarray:
    """Per-pixel change of CIE a*b* (Sobel, in a*b* units per pixel). Chroma, not lightness: shading
    changes lightness within one object, while two surfaces that meet rarely share a hue."""
    g = np.zeros(ab.shape[:2], np.float32)
    for c in range(ab.shape[2]):
        g += (cv2.Sobel(ab[..., c], cv2.CV_32F, 1, 0, ksize=3) / 4) ** 2
        g += (cv2.Sobel(ab[..., c], cv2.CV_32F, 0, 1, ksize=3) / 4) ** 2
    return np.sqrt(g)


def same_colour(ab1: np.ndarray, ab2: np.ndarray, threshold: float, max_hue_deg: float = 12.0,
                min_chroma: float = 8.0) -> bool:
    """Close in a*b*, or of one hue (a lid lighter than the body, a side in shade): saturation changes
    with light, hue hardly does. Greys have no reliable hue and must be close."""
    if np.linalg.norm(ab1 - ab2) < 0.5 * threshold:
        return True
    c1, c2 = np.linalg.norm(ab1), np.linalg.norm(ab2)
    if min(c1, c2) < min_chroma:
        return False
    cos = float(ab1 @ ab2) / (c1 * c2)
    return cos > np.cos(np.deg2rad(max_hue_deg))


def merge_similar_neighbours(comp: np.ndarray, colours: np.ndarray, threshold: float, reach: int = 3) -> np.ndarray:
    """Join components that lie within ``reach`` pixels of each other and have the same colour
    (:func:`same_colour`: an object's lit and shaded sides); component 0 (edges) stays 0."""
    n = len(colours)
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    h, w = comp.shape
    pairs = []
    for dv in range(0, reach + 1):
        for du in range(-reach, reach + 1):
            if dv == 0 and du <= 0:
                continue
            xa, xb = (slice(0, w - du), slice(du, w)) if du >= 0 else (slice(-du, w), slice(0, w + du))
            a, b = comp[0:h - dv, xa], comp[dv:h, xb]
            touch = (a != b) & (a > 0) & (b > 0)
            pairs.append(np.stack([a[touch], b[touch]], 1))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    for a, b in pairs:
        if same_colour(colours[a], colours[b], threshold):
            parent[root(a)] = root(b)
    roots = np.array([root(i) for i in range(n)])
    _, relabel = np.unique(roots, return_inverse=True)  # root 0 is the smallest: edges stay 0
    return relabel.reshape(-1)[comp].astype(np.int32)


# ---------------------------------------------------------------------------- geometry
def pixels_of(points: np.ndarray, frame: Frame, T_world_camera: np.ndarray):
    """Integer pixels of world points in a view and which of them fall inside the image (in front)."""
    uv, z = project(frame.K, transform_points(invert(T_world_camera), points))
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0.05) & (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
    return u, v, inside


def carve(points: np.ndarray, frames: Sequence[Frame], poses: Sequence[np.ndarray],
          allowed: Sequence[np.ndarray]) -> np.ndarray:
    """Which world points no view rules out: each view that sees a point sees it on an allowed pixel."""
    keep = np.ones(len(points), bool)
    for frame, T, ok in zip(frames, poses, allowed):
        u, v, inside = pixels_of(points, frame, T)
        idx = np.nonzero(inside)[0]
        keep[idx[~ok[v[idx], u[idx]]]] = False
    return keep


def touching_objects(masks: dict[int, np.ndarray], labels: Sequence[np.ndarray], reach: int = 3) -> set[int]:
    """Indices of the objects whose regions touch these masks in some view (their possible occluders)."""
    found = set()
    for i, mask in masks.items():
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
        found |= {int(k) - 1 for k in np.unique(labels[i][ring & ~mask & (labels[i] > 0)])}
    return found


def possible_pixels(labels: np.ndarray, mask: Optional[np.ndarray], reach: int = 3) -> np.ndarray:
    """Where an object can project in a view: anywhere but background when the view does not see it;
    where it does, its mask and the regions touching the mask (its occluders: the hidden rest of a
    connected object lies under something that borders its visible part), and unsure pixels."""
    if mask is None or not mask.any():
        return labels != SUPPORT_LABEL
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
    touching = np.unique(labels[ring & (labels > 0)])
    return mask | (labels == 0) | np.isin(labels, touching)


def viewing_cone(frame: Frame, T: np.ndarray, mask: np.ndarray, plane: Plane, max_height: float,
                 pixels: int = 600, steps: int = 48, seed: int = 0) -> np.ndarray:
    """World points along the rays of (a sample of) the mask's pixels, between the support plane and
    ``max_height`` above it: where the object seen there can be."""
    vs, us = np.nonzero(mask)
    if len(us) > pixels:
        pick = np.random.default_rng(seed).choice(len(us), pixels, replace=False)
        us, vs = us[pick], vs[pick]
    dirs = pixel_rays(frame.K, frame.height, frame.width)[vs, us] @ T[:3, :3].T
    centre = T[:3, 3]
    h0 = float(plane.height(centre[None])[0])
    rate = dirs @ plane.normal  # height change per unit of depth along each ray
    down = rate < -1e-6
    dirs, rate = dirs[down], rate[down]
    t_plane = -h0 / rate
    t_top = np.maximum(0.0, (max_height - h0) / rate)
    t = t_top[:, None] + (t_plane - t_top)[:, None] * np.linspace(0.0, 1.0, steps)[None]
    return (centre + dirs[:, None, :] * t[..., None]).reshape(-1, 3)


def visual_hull(masks: dict[int, np.ndarray], cone_points: np.ndarray, frames, poses, label_images,
                plane: Plane, fronts: Optional[Sequence[np.ndarray]] = None) -> tuple[np.ndarray, float]:
    """Voxel centres (world) of the object's visual hull and the voxel size.

    The box comes from the carved cone; a voxel is kept when no view sees through it and some view
    sees it on the object's mask; the largest connected part is the object. ``fronts`` (per view,
    0 where unknown) are depths that a voxel seen on another object's pixel must lie behind.
    """
    if len(cone_points) == 0:
        return np.zeros((0, 3)), 0.0
    T_world_box = plane.frame(cone_points.mean(axis=0))
    local = transform_points(invert(T_world_box), cone_points)
    lo, hi = local.min(axis=0) - 0.01, local.max(axis=0) + 0.01
    lo[2] = 0.0
    voxel = float(np.clip((hi - lo).max() / HULL_CELLS, 0.0015, 0.01))
    axes = [np.arange(a + voxel / 2, b, voxel) for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    centres = transform_points(T_world_box, grid.reshape(-1, 3))
    keep = carve(centres, frames, poses, [possible_pixels(lab, masks.get(i)) for i, lab in enumerate(label_images)])
    for i, front in enumerate(fronts or []):
        u, v, inside = pixels_of(centres, frames[i], poses[i])
        idx = np.nonzero(inside & keep)[0]
        z = transform_points(invert(poses[i]), centres[idx])[:, 2]
        own = masks[i][v[idx], u[idx]] if i in masks else np.zeros(len(idx), bool)
        limit = front[v[idx], u[idx]]
        keep[idx[~own & (limit > 0) & (z < limit - voxel)]] = False
    on_mask = np.zeros(len(centres), bool)
    for i, mask in masks.items():
        u, v, inside = pixels_of(centres, frames[i], poses[i])
        idx = np.nonzero(inside)[0]
        on_mask[idx[mask[v[idx], u[idx]]]] = True
    occupied = (keep & on_mask).reshape(grid.shape[:3])
    parts, count = ndimage.label(occupied, structure=np.ones((3, 3, 3)))
    if count == 0:
        return np.zeros((0, 3)), voxel
    largest = 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
    return centres[(parts == largest).ravel()], voxel


def hull_depth(hull: np.ndarray, voxel: float, frame: Frame, T: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) depth of the hull's nearest face at the mask's pixels (0 elsewhere or where it misses)."""
    uv, z = project(frame.K, transform_points(invert(T), hull))
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0.05) & (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
    big = np.float32(1e6)
    zbuf = np.full((frame.height, frame.width), big, np.float32)
    np.minimum.at(zbuf, (v[inside], u[inside]), (z[inside] - 0.5 * voxel).astype(np.float32))
    # Each voxel covers about its own footprint in the image, not one pixel.
    radius = int(np.ceil(0.5 * voxel * frame.K[0, 0] / max(float(np.median(z[inside])) if inside.any() else 1.0, 0.05)))
    if radius > 0:
        zbuf = cv2.erode(zbuf, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return np.where(mask & (zbuf < big), zbuf, 0.0).astype(np.float32)


def background_depth(frame: Frame, T: np.ndarray, plane: Plane, background: np.ndarray) -> np.ndarray:
    """Depth of the support plane at background pixels (``FAR`` where a ray never meets it), else 0."""
    vs, us = np.nonzero(background)
    rate = (pixel_rays(frame.K, frame.height, frame.width)[vs, us] @ T[:3, :3].T) @ plane.normal
    h0 = float(plane.height(T[:3, 3][None])[0])
    with np.errstate(divide="ignore"):
        t = np.where(rate < -1e-9, -h0 / np.minimum(rate, -1e-9), FAR)
    depth = np.zeros((frame.height, frame.width), np.float32)
    depth[vs, us] = np.clip(t, 0.0, FAR)
    return depth
