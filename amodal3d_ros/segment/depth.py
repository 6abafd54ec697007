"""Depth-based instance segmentation, no learned weights: support plane + depth-edge components.

Per view, pixels clearly above the support plane are split into connected regions wherever the
depth jumps (an occluder's silhouette); regions of different views that overlap in 3D are the same
object. Parts too low to rise above the support (a plate's floor) join the object that encloses
them. Targets are picked by their pixel.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from scipy.ndimage import binary_fill_holes

from ..config import SegmentConfig
from ..geometry import backproject, transform_points
from ..scene import Frame, Target
from .base import (SUPPORT_LABEL, SceneSegmentation, SegmentedObject, TargetNotFoundError,
                   associate_segments, find_support_plane, nearest_label, subsample)


class DepthSegmenter:
    def __init__(self, config: SegmentConfig | None = None):
        self.config = config or SegmentConfig()

    # ------------------------------------------------------------------ public
    def segment(self, frames: Sequence[Frame], poses: Sequence[np.ndarray],
                targets: Sequence[Target] = (), up_hint: np.ndarray | None = None) -> SceneSegmentation:
        cfg = self.config
        for i, f in enumerate(frames):
            if not f.has_depth:
                raise ValueError(f"frame {i} has no depth: the depth segmenter needs RGB-D input")
        world = [transform_points(T, backproject(f.depth, f.K).reshape(-1, 3)).reshape(f.depth.shape + (3,))
                 for f, T in zip(frames, poses)]
        valid = [f.depth > 0 for f in frames]
        centres = np.array([T[:3, 3] for T in poses])
        sample = np.concatenate([subsample(w[m], 15000, seed=i) for i, (w, m) in enumerate(zip(world, valid))])
        if up_hint is None:
            up_hint, max_tilt = np.array([0.0, 0.0, 1.0]), 35.0
        else:
            max_tilt = 70.0  # only a rough hint (camera "up" of frame 0)
        plane = find_support_plane(sample, up_hint, centres, cfg.plane_distance, max_tilt)

        labels, region_images, seg_points, seg_colors, seg_frames, seg_ids = [], [], [], [], [], []
        heights = []
        for i, (f, w, m) in enumerate(zip(frames, world, valid)):
            height = plane.height(w.reshape(-1, 3)).reshape(m.shape)
            heights.append(height)
            regions = self._regions(f, height, m)
            region_images.append(regions)
            labels.append(np.where(m & (np.abs(height) < cfg.plane_distance), SUPPORT_LABEL, 0).astype(np.int32))
            for r in range(1, regions.max() + 1):
                mask = regions == r
                pts = w[mask]
                extent = np.ptp(pts, axis=0).max() if len(pts) else 0.0
                if extent > cfg.max_object_size:
                    continue  # walls, furniture: not a graspable object
                seg_points.append(pts)
                seg_colors.append(f.rgb[mask])
                seg_frames.append(i)
                seg_ids.append((i, r))

        groups = associate_segments(seg_frames, [r for _, r in seg_ids],
                                    [subsample(p, 1500, seed=k) for k, p in enumerate(seg_points)],
                                    frames, poses, region_images, cfg.association_distance)
        n_groups = max(groups) + 1 if groups else 0
        # Order objects by observed size so that ids of untargeted objects are stable.
        sizes = np.zeros(n_groups)
        for g, p in zip(groups, seg_points):
            sizes[g] += len(p)
        order = np.argsort(-sizes)
        rank = {int(g): k for k, g in enumerate(order)}
        objects = [SegmentedObject(id=f"object_{k}", masks={}, points=np.zeros((0, 3)),
                                   colors=np.zeros((0, 3), np.uint8)) for k in range(n_groups)]
        pts_by_obj: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
        col_by_obj: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
        for (i, r), g, p, c in zip(seg_ids, groups, seg_points, seg_colors):
            k = rank[g]
            mask = region_images[i] == r
            obj = objects[k]
            obj.masks[i] = obj.masks[i] | mask if i in obj.masks else mask
            labels[i][mask] = k + 1
            pts_by_obj[k].append(p)
            col_by_obj[k].append(c)
        for k, obj in enumerate(objects):
            obj.points = np.concatenate(pts_by_obj[k]) if pts_by_obj[k] else np.zeros((0, 3))
            obj.colors = np.concatenate(col_by_obj[k]) if col_by_obj[k] else np.zeros((0, 3), np.uint8)

        seg = SceneSegmentation(plane=plane, labels=labels, objects=objects, warnings=[])
        for t in targets:
            if nearest_label(labels[t.frame], t.pixel) <= 0:
                self._add_flat_target(seg, frames[t.frame], t, heights[t.frame], world[t.frame], valid[t.frame])
        assign_targets(seg, targets)
        return seg

    def _add_flat_target(self, seg: SceneSegmentation, frame: Frame, target: Target, height: np.ndarray,
                         world: np.ndarray, valid: np.ndarray) -> None:
        """A target too flat to rise above the depth noise (a plate, a sheet): its colour region.

        The region around the target pixel bounded by chroma edges becomes an object, unless it is
        as large as a table top.
        """
        cfg = self.config
        labels = seg.labels[target.frame]
        free = valid & (height > -cfg.plane_distance) & (height < cfg.max_object_size) & (labels <= 0)
        if cfg.color_edge > 0:
            free &= ~color_edges(frame.rgb, cfg.color_edge)
        n, regions = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
        u, v = target.pixel
        region = nearest_label(regions, (u, v), radius=6)
        if region <= 0:
            return
        mask = regions == region
        min_pixels = max(20, int(cfg.min_object_pixels * mask.size / (640 * 480)))
        if not min_pixels <= mask.sum() <= 0.15 * mask.size:
            return
        seg.objects.append(SegmentedObject(id=f"object_{len(seg.objects)}", masks={target.frame: mask},
                                           points=world[mask], colors=frame.rgb[mask]))
        labels[mask] = len(seg.objects)
        seg.warnings.append(f"target '{target.id}' is flat (no depth above the support): segmented by colour "
                            "in one view")

    # ------------------------------------------------------------------ internals
    def _regions(self, frame: Frame, height: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Connected regions of above-plane pixels, cut at depth discontinuities."""
        cfg = self.config
        depth = frame.depth
        above = valid & (height > cfg.min_height) & (height < cfg.max_object_size)
        # A pixel is an edge when a neighbour is much nearer: the pixel lies behind an occluder's
        # silhouette. Cutting only the farther side keeps the occluder's own mask whole.
        jump = cfg.depth_edge * np.maximum(depth, 0.1)
        edge = np.zeros_like(above)
        for dv, du in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            neighbour = np.roll(depth, shift=(-dv, -du), axis=(0, 1))
            nvalid = np.roll(valid, shift=(-dv, -du), axis=(0, 1))
            edge |= nvalid & (depth - neighbour > jump)
        if cfg.color_edge > 0:
            edge |= color_edges(frame.rgb, cfg.color_edge)
        core = (above & ~edge).astype(np.uint8)
        core = cv2.morphologyEx(core, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        n, regions, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
        min_pixels = max(20, int(cfg.min_object_pixels * depth.size / (640 * 480)))
        keep = np.zeros(n, dtype=np.int32)
        next_id = 1
        for r in range(1, n):
            if stats[r, cv2.CC_STAT_AREA] >= min_pixels:
                keep[r] = next_id
                next_id += 1
        regions = keep[regions]
        # Give removed edge pixels back to the adjacent region of similar depth.
        pending = above & (regions == 0)
        for _ in range(2):
            if not pending.any():
                break
            grown = cv2.dilate(regions.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
            grown_depth = np.where(regions > 0, depth, 0)
            near = cv2.dilate(grown_depth.astype(np.float32), np.ones((3, 3), np.uint8))
            take = pending & (grown > 0) & (np.abs(near - depth) < jump)
            regions = np.where(take, grown, regions)
            pending &= ~take
        return self._attach_low_parts(frame, regions, height, valid)

    def _attach_low_parts(self, frame: Frame, regions: np.ndarray, height: np.ndarray,
                          valid: np.ndarray) -> np.ndarray:
        """Give an object its parts that lie too low to rise above the support (a plate's floor).

        Such a part is a colour-bounded patch of low pixels that objects enclose: most of its
        outline touches object regions rather than the open support, the image border or missing
        depth. It joins the region it shares most of that outline with. The support itself is open
        (its outline runs along chroma edges, the image border and the table edge) and far larger.
        """
        cfg = self.config
        if regions.max() == 0:
            return regions
        low = valid & (regions == 0) & (height > -cfg.plane_distance) & (height <= cfg.min_height)
        if cfg.color_edge > 0:
            low &= ~color_edges(frame.rgb, cfg.color_edge)
        n, parts, stats, _ = cv2.connectedComponentsWithStats(low.astype(np.uint8), connectivity=4)
        min_pixels = max(20, int(cfg.min_object_pixels * low.size / (640 * 480)))
        h, w = regions.shape
        out = regions.copy()
        for p in range(1, n):
            x, y, bw, bh, area = stats[p]
            if area < min_pixels or area > 0.15 * low.size:
                continue
            if x == 0 or y == 0 or x + bw == w or y + bh == h:
                continue  # cut by the image border: cannot tell whether objects enclose it
            y0, y1, x0, x1 = max(0, y - 1), min(h, y + bh + 1), max(0, x - 1), min(w, x + bw + 1)
            # Holes (depth noise poking above min_height) are part of the patch, not its outline.
            part = binary_fill_holes(parts[y0:y1, x0:x1] == p)
            ring = cv2.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~part
            # Missing depth (the projector's shadow beside an occluder) says nothing either way.
            ring &= valid[y0:y1, x0:x1]
            touching = regions[y0:y1, x0:x1][ring]
            touching = touching[touching > 0]
            if 2 * len(touching) <= ring.sum():
                continue  # mostly open: support or background
            labels_, counts = np.unique(touching, return_counts=True)
            window = out[y0:y1, x0:x1]
            window[part & valid[y0:y1, x0:x1] & (regions[y0:y1, x0:x1] == 0)] = labels_[np.argmax(counts)]
        return out


def color_edges(rgb: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose chroma (CIE a*b*, lightly blurred) differs from a neighbour's by ``threshold``.

    Objects that touch show no depth jump where they meet, but their surfaces rarely share a
    colour. Lightness is left out: shading (a mug's dark inside, a shadow) changes it within one
    object. Shading scales a*, b* and L* + 16 alike (all go with the cube root of the light), so
    a*b* are rescaled to a common lightness first: a shaded face keeps its chroma, and two dark
    surfaces of different colour (a box in shadow beside a dark bottle) differ as much as lit ones.
    """
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    lightness = lab[..., :1] * (100.0 / 255.0)  # L* in 0..100
    ab = (lab[..., 1:] - 128.0) * ((50.0 + 16.0) / (lightness + 16.0))  # chroma as at L* = 50
    edge = np.zeros(rgb.shape[:2], bool)
    for dv, du in ((0, 1), (1, 0)):
        diff = np.linalg.norm(ab - np.roll(ab, shift=(-dv, -du), axis=(0, 1)), axis=2) > threshold
        edge |= diff | np.roll(diff, shift=(dv, du), axis=(0, 1))
    return edge


def assign_targets(seg: SceneSegmentation, targets: Sequence[Target]) -> None:
    """Rename the objects that targets point at to the target ids.

    A target on nothing is reported in ``seg.warnings`` and the others go on; only when no target
    lands on an object is that an error.
    """
    claimed: dict[int, str] = {}
    missing = []
    for t in targets:
        k = nearest_label(seg.labels[t.frame], t.pixel)
        if k <= 0:
            missing.append(f"target '{t.id}': pixel {list(t.pixel)} in frame {t.frame} is not on any segmented "
                           "object (on the support surface, background or missing depth)")
            continue
        if k - 1 in claimed:
            seg.warnings.append(f"targets '{claimed[k - 1]}' and '{t.id}' point at the same object")
            # A second target on the same object gets its own copy, so both ids appear in the output.
            src = seg.objects[k - 1]
            seg.objects.append(SegmentedObject(id=t.id, masks=dict(src.masks), points=src.points,
                                               colors=src.colors, is_target=True))
            continue
        claimed[k - 1] = t.id
        seg.objects[k - 1].id = t.id
        seg.objects[k - 1].is_target = True
    if missing and len(missing) == len(targets):
        raise TargetNotFoundError("; ".join(missing))
    seg.warnings.extend(missing)
