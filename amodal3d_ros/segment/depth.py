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
from ..geometry import backproject, backproject_to_world
from ..scene import Frame, Target
from .base import (SUPPORT_LABEL, SceneSegmentation, SegmentedObject, Segmenter, TargetNotFoundError,
                   associate_segments, nearest_label, subsample, support_from_depth)


class DepthSegmenter(Segmenter):
    def __init__(self, config: SegmentConfig | None = None):
        self.config = config or SegmentConfig()

    # ------------------------------------------------------------------ public
    def segment(self, frames: Sequence[Frame], poses: Sequence[np.ndarray],
                targets: Sequence[Target] = (), up_hint: np.ndarray | None = None) -> SceneSegmentation:
        cfg = self.config
        for i, f in enumerate(frames):
            if f.depth is None:  # a depth image with nothing measured (a view left out) is fine
                raise ValueError(f"frame {i} has no depth: the depth segmenter needs RGB-D input")
        world = [backproject_to_world(f.depth, f.K, T) for f, T in zip(frames, poses)]
        valid = [f.depth > 0 for f in frames]
        plane = support_from_depth(frames, poses, world, cfg.plane_distance, up_hint)

        labels, region_images, seg_points, seg_colors, seg_frames, seg_ids = [], [], [], [], [], []
        heights = []
        for i, (f, w, m) in enumerate(zip(frames, world, valid)):
            height = plane.height(w.reshape(-1, 3)).reshape(m.shape)
            heights.append(height)
            regions = self._regions(f, height, m)
            regions = split_between_seeds(regions, f, [t.pixel for t in targets if t.frame == i], cfg)
            regions = join_insides(regions, w, plane, [t.pixel for t in targets if t.frame == i])
            region_images.append(regions)
            labels.append(np.where(m & (np.abs(height) < cfg.plane_distance), SUPPORT_LABEL, 0).astype(np.int32))
            for r in range(1, regions.max() + 1):
                mask = regions == r
                pts = w[mask]
                extent = robust_extent(pts)
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
        floor = rise_above_noise(height, frame.depth, valid, cfg.min_height, cfg.noise_sigmas)
        above = valid & (height > floor) & (height < cfg.max_object_size)
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
        regions = split_at_valleys(regions, height, cfg.split_valley, min_pixels)
        return self._attach_low_parts(frame, regions, height, valid, floor)

    def _attach_low_parts(self, frame: Frame, regions: np.ndarray, height: np.ndarray,
                          valid: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """Give an object its parts that lie too low to rise above the support (a plate's floor).

        Such a part is a colour-bounded patch of low pixels that objects enclose: most of its
        outline touches object regions rather than the open support, the image border or missing
        depth. It joins the region it shares most of that outline with. The support itself is open
        (its outline runs along chroma edges, the image border and the table edge) and far larger.
        """
        cfg = self.config
        if regions.max() == 0:
            return regions
        low = valid & (regions == 0) & (height > -cfg.plane_distance) & (height <= floor)
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


def robust_extent(points: np.ndarray) -> float:
    """Largest extent (m) along a world axis of the middle 98 % of ``points``.

    Mixed pixels along depth edges scatter a few points far behind an object; they must not make
    it look as large as a wall.
    """
    if len(points) == 0:
        return 0.0
    lo, hi = np.percentile(points, [1, 99], axis=0)
    return float((hi - lo).max())


def split_at_valleys(regions: np.ndarray, height: np.ndarray, valley: float, min_pixels: int) -> np.ndarray:
    """Split regions that hold several objects joined only low down, as real depth joins them.

    A real sensor smooths depth across the gap between two objects standing close together, so
    no depth jump separates them: they meet in a valley of height above the support. Each region
    is cut where the floods from its peaks meet (watershed on the height), keeping only peaks that
    rise ``valley`` above the lowest pass to a higher one, so one object's own dips (a bowl's
    inside, a mug's rim) never cut it. Parts smaller than ``min_pixels`` stay with the region.
    """
    from skimage.morphology import reconstruction
    from skimage.segmentation import watershed

    if valley <= 0 or regions.max() == 0:
        return regions
    # Lone flying pixels would each make a peak: a median filter takes them out first.
    smooth = cv2.medianBlur(np.where(regions > 0, height, 0).astype(np.float32), 5)
    out = regions.copy()
    next_id = int(regions.max()) + 1
    for r in range(1, int(regions.max()) + 1):
        mask = regions == r
        if mask.sum() < 2 * min_pixels:
            continue
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        window, local = mask[y0:y1, x0:x1], np.where(mask[y0:y1, x0:x1], smooth[y0:y1, x0:x1], 0.0)
        # The top ``valley`` of every peak (its dome); a peak that rises that far above every pass
        # to a higher one fills its dome to the full depth, a bump on a slope does not.
        dome = local - reconstruction(local - valley, local, method="dilation")
        count, peaks = cv2.connectedComponents((dome > 0).astype(np.uint8), connectivity=8)
        tops = np.zeros(count)
        np.maximum.at(tops, peaks.ravel(), dome.ravel())
        kept = np.flatnonzero(tops >= 0.99 * valley)
        kept = kept[kept > 0]
        relabel = np.zeros(count, np.int32)
        relabel[kept] = np.arange(1, len(kept) + 1)
        peaks, count = relabel[peaks], len(kept)
        if count < 2:
            continue
        parts = watershed(-local, peaks, mask=window)
        sizes = np.bincount(parts.ravel(), minlength=count + 1)
        if np.count_nonzero(sizes[1:] >= min_pixels) < 2:
            continue
        view = out[y0:y1, x0:x1]
        for part in range(2, count + 1):  # part 1 keeps the region's id
            if sizes[part] >= min_pixels:
                view[parts == part] = next_id
                next_id += 1
    return out


def split_between_seeds(regions: np.ndarray, frame: Frame, seeds: Sequence[tuple[int, int]],
                        config: SegmentConfig) -> np.ndarray:
    """Give each of several target pixels that land on one region a part of its own.

    Each target pixel names one object, so a region holding two of them holds two objects that
    nothing above separated (a can standing on a tin, a mug against a bottle). The region is split
    by flooding from the pixels over the image's edges: depth steps (relative to the depth, as
    ``depth_edge``) and chroma changes (as ``color_edge``), whichever is stronger.
    """
    from skimage.segmentation import watershed

    by_region: dict[int, list[tuple[int, int]]] = {}
    for u, v in seeds:
        r = nearest_label(regions, (u, v), radius=6)
        if r > 0:
            by_region.setdefault(r, []).append((u, v))
    shared = {r: px for r, px in by_region.items() if len(px) >= 2}
    if not shared:
        return regions
    elevation = edge_strength(frame, config)
    out = regions.copy()
    next_id = int(regions.max()) + 1
    for r, pixels in shared.items():
        mask = regions == r
        markers = np.zeros(regions.shape, np.int32)
        for k, (u, v) in enumerate(pixels, start=1):
            cv2.circle(markers, (int(u), int(v)), 3, k, -1)
        markers[~mask] = 0
        parts = watershed(elevation, markers, mask=mask)
        for k in range(2, len(pixels) + 1):  # the first pixel's part keeps the region's id
            out[parts == k] = next_id
            next_id += 1
    return out


def edge_strength(frame: Frame, config: SegmentConfig) -> np.ndarray:
    """Per pixel, the strongest of the depth step, the chroma change and the crease (the turn of the
    surface: a can standing on a tin meets it at a right angle) to its neighbours, each in units of
    the threshold that makes it an edge on its own."""
    depth = frame.depth.astype(np.float32)
    step = np.zeros_like(depth)
    for axis in (0, 1):
        d = np.abs(np.diff(depth, axis=axis, append=np.take(depth, [-1], axis=axis)))
        step = np.maximum(step, d / (config.depth_edge * np.maximum(depth, 0.1)))
    lab = cv2.cvtColor(cv2.GaussianBlur(frame.rgb, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    chroma = np.zeros_like(depth)
    for axis in (0, 1):
        d = np.linalg.norm(np.diff(lab[..., 1:], axis=axis, append=np.take(lab[..., 1:], [-1], axis=axis)), axis=2)
        chroma = np.maximum(chroma, d / max(config.color_edge, 1e-6))
    normals = surface_normals(frame)
    crease = np.zeros_like(depth)
    for axis in (0, 1):
        cos = np.clip((normals * np.roll(normals, -2, axis=axis)).sum(axis=2), -1.0, 1.0)
        crease = np.maximum(crease, np.degrees(np.arccos(cos)) / config.crease_edge)
    crease[frame.depth == 0] = 0.0
    return np.maximum(np.maximum(step, chroma), crease)


def surface_normals(frame: Frame) -> np.ndarray:
    """(H, W, 3) unit normals of the lightly smoothed depth surface, camera frame (0 without depth)."""
    points = backproject(cv2.GaussianBlur(frame.depth.astype(np.float32), (5, 5), 0), frame.K)
    along_u, along_v = np.zeros_like(points), np.zeros_like(points)
    along_u[:, 1:-1] = points[:, 2:] - points[:, :-2]
    along_v[1:-1] = points[2:] - points[:-2]
    normals = np.cross(along_u, along_v)
    return normals / np.maximum(np.linalg.norm(normals, axis=2, keepdims=True), 1e-12)


def join_insides(regions: np.ndarray, world: np.ndarray, plane, seeds: Sequence[tuple[int, int]],
                 margin: float = 0.005) -> np.ndarray:
    """Give a container back its inside: a mug's or a bowl's inner wall lies behind its rim, so a
    depth step cuts it off as a region of its own.

    A region joins a neighbouring one when nearly all of its points stand within the neighbour's
    footprint on the support (its convex hull, ``margin`` wider) and no higher than the neighbour's
    top (``margin`` again, for noise): what lies inside and below a rim. A region holding a target pixel other than the
    neighbour's (a can standing in a bowl) stays apart.
    """
    if regions.max() < 2:
        return regions
    T_support_world = np.linalg.inv(plane.frame(np.zeros(3)))
    local = (world.reshape(-1, 3) @ T_support_world[:3, :3].T + T_support_world[:3, 3]).reshape(world.shape)
    seeded = {int(regions[v, u]) for u, v in seeds if regions[v, u] > 0}
    out = regions.copy()
    ids = [r for r in range(1, int(regions.max()) + 1) if (regions == r).any()]
    kernel = np.ones((5, 5), np.uint8)
    for inner in ids:
        mask = out == inner
        if not mask.any():
            continue
        touching = np.unique(out[cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask])
        for outer in (int(r) for r in touching if r > 0 and r != inner):
            if inner in seeded and outer in seeded:
                continue
            rim = local[out == outer]
            hull = cv2.convexHull((rim[:, :2] * 1000).astype(np.float32))
            pts = local[mask]
            inside = [cv2.pointPolygonTest(hull, (float(x), float(y)), True) >= -margin * 1000
                      for x, y in pts[:: max(1, len(pts) // 300), :2] * 1000]
            if np.mean(inside) >= 0.9 and np.percentile(pts[:, 2], 95) <= np.percentile(rim[:, 2], 99) + margin:
                out[mask] = outer
                seeded = {outer if r == inner else r for r in seeded}
                break
    return out


def rise_above_noise(height: np.ndarray, depth: np.ndarray, valid: np.ndarray, min_height: float,
                     sigmas: float) -> np.ndarray:
    """(H, W) height a pixel must exceed to stand above the support, growing with the depth noise.

    Depth noise of real cameras grows with the square of the distance, so a fixed height leaves far
    table pixels poking above it and joined to the objects there. The noise is measured on the
    support itself: the spread of the heights of pixels near it, relative to the squared depth.
    """
    near = valid & (np.abs(height) < 0.03)
    if sigmas <= 0 or near.sum() < 500:
        return np.full(height.shape, min_height, np.float32)
    spread = np.abs(height[near]) / np.square(depth[near])
    per_square_metre = 1.4826 * float(np.median(spread))  # robust std of the height at 1 m
    return np.maximum(min_height, sigmas * per_square_metre * np.square(depth)).astype(np.float32)
