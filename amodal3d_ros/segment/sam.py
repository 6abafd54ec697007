"""segment-anything backend: prompted instance masks for the targets, their occluders and the support.

- Targets: the target pixel prompts ``SamPredictor`` in the target's view; of the multimask outputs
  the best-scoring one is kept.
- Other views: with depth, the target's masked 3D points are projected into every other view;
  the projections that view actually sees (its depth agrees) prompt SAM there (points + their box).
- RGB-only views: SAM's automatic masks (``region_masks``) replace the colour regions of the
  silhouette segmenter (``segment.rgb``), which associates them across views by carving.
- Occluders: points on a ring around the target's dilated boundary prompt SAM; masks that are not
  the target, not huge (table, background) and not duplicates become the other objects. Segments
  of different views are grouped with ``associate_segments`` (depth) as in the depth segmenter.
- Support: with depth the same plane fit as the depth segmenter (``support_from_depth``); without
  depth the largest mask prompted along the image bottom.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..config import SegmentConfig
from ..geometry import backproject_to_world, invert, project, transform_points
from ..scene import Frame, Target
from .base import (SUPPORT_LABEL, SceneSegmentation, SegmentedObject, Segmenter, TargetNotFoundError,
                   associate_segments, subsample, support_from_depth)

_EMBED_DIMS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def load_sam(checkpoint: str, model_type: str, device: str = "cpu"):
    """A segment-anything model from a checkpoint; ValueError naming the file and what is wrong."""
    import torch
    from segment_anything import sam_model_registry

    if not checkpoint:
        raise ValueError("segment.sam_checkpoint is empty: give the path of a SAM .pth checkpoint")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f"SAM checkpoint not found: {path} (download sam_{model_type}_*.pth from the "
                         "segment-anything release and set segment.sam_checkpoint)")
    if model_type not in sam_model_registry:
        raise ValueError(f"unknown SAM model type '{model_type}' for {path} (choose vit_b, vit_l or vit_h)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean an unreadable file
        raise ValueError(f"SAM checkpoint {path} cannot be read (corrupt, truncated or not a PyTorch file): "
                         f"{type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not any(str(k).startswith("image_encoder.") for k in state):
        raise ValueError(f"SAM checkpoint {path} is not a segment-anything state dict (no image_encoder weights)")
    model = sam_model_registry[model_type](checkpoint=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        weight = state.get("image_encoder.patch_embed.proj.weight")
        guess = _EMBED_DIMS.get(int(weight.shape[0])) if weight is not None else None
        hint = f"; it looks like a {guess} checkpoint" if guess and guess != model_type else ""
        raise ValueError(f"SAM checkpoint {path} does not match segment.sam_model_type '{model_type}'{hint} "
                         f"({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval()


class SamSegmenter(Segmenter):
    def __init__(self, config: SegmentConfig, device: str = "cpu", ring_points: int = 12,
                 max_mask_fraction: float = 0.25):
        from segment_anything import SamPredictor

        self.config = config
        self.device = device
        self.model = load_sam(config.sam_checkpoint, config.sam_model_type, device)
        self.predictor = SamPredictor(self.model)
        self.ring_points = ring_points
        self.max_mask_fraction = max_mask_fraction

    # ------------------------------------------------------------------ SAM calls
    def region_masks(self, frame: Frame) -> list[np.ndarray]:
        """SAM's automatic masks of a view (a grid of prompts): the regions of RGB-only views, which
        have no depth to prompt the other views with (``segment.rgb``)."""
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(self.model, points_per_side=self.config.sam_points_per_side,
                                              pred_iou_thresh=self.config.sam_min_quality,
                                              stability_score_thresh=self.config.sam_min_quality)
        return [m["segmentation"] for m in generator.generate(frame.rgb)]

    def _set(self, frame: Frame) -> None:
        self.predictor.set_image(frame.rgb)

    def _best(self, points: np.ndarray, box: Optional[np.ndarray] = None) -> tuple[np.ndarray, float]:
        """Best-scoring multimask output for positive ``points`` (N, 2) [u, v] (and a box)."""
        masks, scores, _ = self.predictor.predict(point_coords=np.asarray(points, np.float32).reshape(-1, 2),
                                                  point_labels=np.ones(len(points), np.int64),
                                                  box=None if box is None else np.asarray(box, np.float32),
                                                  multimask_output=True)
        k = int(np.argmax(scores))
        return masks[k].astype(bool), float(scores[k])

    # ------------------------------------------------------------------ public
    def segment(self, frames: Sequence[Frame], poses: Sequence[np.ndarray], targets: Sequence[Target] = (),
                up_hint: Optional[np.ndarray] = None) -> SceneSegmentation:
        warnings: list[str] = []
        world = [backproject_to_world(f.depth, f.K, T) if f.has_depth else None for f, T in zip(frames, poses)]
        plane = None
        if any(w is not None for w in world):
            plane = support_from_depth(frames, poses, world, self.config.plane_distance, up_hint)
        else:
            warnings.append("no depth in any view: SAM gives masks but no support plane or 3D points")
        segs, target_masks = self._view_segments(frames, poses, targets, world)
        # Group segments across views: target segments by their id, the rest by 3D agreement.
        labels = self._support_labels(frames, world, plane)
        objects = self._objects(segs, self._group(segs, frames, poses, world), frames, world)
        # Targets first in the label order they win ties: paint others first, targets last.
        for k, obj in sorted(enumerate(objects), key=lambda kv: kv[1].is_target):
            for i, mask in obj.masks.items():
                labels[i][mask] = k + 1
        for t in targets:
            if t.id not in target_masks:
                raise TargetNotFoundError(f"target '{t.id}': SAM gives no mask in frame {t.frame}")
        return SceneSegmentation(plane=plane, labels=labels, objects=objects, warnings=warnings)

    # ------------------------------------------------------------------ stages
    def _view_segments(self, frames, poses, targets: Sequence[Target], world):
        """Per-view segments (frame, mask, id of the target it is, or None) from SAM prompted by the
        targets (their pixel in their own view, their projected points in the others) and by rings
        around them; and per target id its masks by frame."""
        segs: list[tuple[int, np.ndarray, Optional[str]]] = []
        by_frame: dict[int, list[Target]] = {}
        for t in targets:
            by_frame.setdefault(t.frame, []).append(t)
        target_masks: dict[str, dict[int, np.ndarray]] = {}
        for i in range(len(frames)):
            prompts: list[tuple[np.ndarray, Optional[np.ndarray], Optional[str]]] = []
            for t in by_frame.get(i, []):
                prompts.append((np.array([t.pixel], float), None, t.id))
            # Targets seen in other views: prompt with their projected, visible 3D points.
            for t in targets:
                if t.frame == i or world[i] is None or t.id not in target_masks:
                    continue
                pts = self._target_points(world, frames, t, target_masks[t.id])
                uvs = self._visible_projection(pts, frames[i], poses[i], self.config.association_distance)
                if len(uvs) >= 3:
                    centre = uvs[np.argmin(np.linalg.norm(uvs - np.median(uvs, axis=0), axis=1))]
                    box = np.r_[uvs.min(axis=0), uvs.max(axis=0)]
                    prompts.append((centre[None], box, t.id))
            if not prompts and not targets:
                prompts.append((np.array([[frames[i].width / 2, frames[i].height / 2]]), None, None))
            if not prompts:
                continue
            self._set(frames[i])
            view_targets = []
            for pts, box, tid in prompts:
                mask, _ = self._best(pts, box)
                if tid is not None and i == next(t.frame for t in targets if t.id == tid) and not mask.any():
                    raise TargetNotFoundError(
                        f"target '{tid}': SAM gives no mask for pixel {[int(v) for v in pts[0]]} in frame {i}")
                if not mask.any():
                    continue
                if tid is not None:
                    target_masks.setdefault(tid, {})[i] = mask
                segs.append((i, mask, tid))
                view_targets.append(mask)
            # Occluders and neighbours: prompts on a ring around each target's dilated boundary.
            for mask in view_targets:
                for m in self._ring_masks(frames[i], mask):
                    if all(_iou(m, s) < 0.7 for f, s, _ in segs if f == i):
                        segs.append((i, m, None))
        return segs, target_masks

    def _support_labels(self, frames, world, plane) -> list[np.ndarray]:
        """Per view label images with the support's pixels labelled (from the plane, or without
        depth from SAM prompted along the image bottom)."""
        labels = [np.zeros((f.height, f.width), np.int32) for f in frames]
        if plane is not None:
            for i, w in enumerate(world):
                if w is not None:
                    h = plane.height(w.reshape(-1, 3)).reshape(labels[i].shape)
                    labels[i][(frames[i].depth > 0) & (np.abs(h) < self.config.plane_distance)] = SUPPORT_LABEL
        else:
            for i, f in enumerate(frames):
                support = self._support_without_depth(f)
                labels[i][support] = SUPPORT_LABEL
        return labels

    @staticmethod
    def _objects(segs, groups: list[int], frames, world) -> list[SegmentedObject]:
        """One object per group of segments: its masks joined per view, its points where there is depth."""
        objects = []
        for g in dict.fromkeys(groups):
            members = [s for s, gg in zip(segs, groups) if gg == g]
            tid = next((s[2] for s in members if s[2] is not None), None)
            obj = SegmentedObject(id=tid or f"object_{len([o for o in objects if not o.is_target])}", masks={},
                                  points=np.zeros((0, 3)), colors=np.zeros((0, 3), np.uint8),
                                  is_target=tid is not None)
            pts, cols = [], []
            for i, mask, _ in members:
                obj.masks[i] = obj.masks[i] | mask if i in obj.masks else mask
            for i, mask in obj.masks.items():
                if world[i] is not None:
                    m = mask & (frames[i].depth > 0)
                    pts.append(world[i][m])
                    cols.append(frames[i].rgb[m])
            if pts:
                obj.points, obj.colors = np.concatenate(pts), np.concatenate(cols)
            objects.append(obj)
        return objects

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _target_points(world, frames, t: Target, masks: dict[int, np.ndarray]) -> np.ndarray:
        mask = masks.get(t.frame)
        if mask is None or world[t.frame] is None:
            return np.zeros((0, 3))
        return subsample(world[t.frame][mask & (frames[t.frame].depth > 0)], 2000)

    @staticmethod
    def _visible_projection(points: np.ndarray, frame: Frame, T: np.ndarray, tolerance: float) -> np.ndarray:
        if len(points) == 0:
            return np.zeros((0, 2))
        uv, z = project(frame.K, transform_points(invert(T), points))
        u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
        inside = (z > 0) & (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
        d = np.zeros_like(z)
        d[inside] = frame.depth[v[inside], u[inside]]
        seen = inside & (d > 0) & (np.abs(d - z) < tolerance)
        return np.stack([u[seen], v[seen]], axis=1).astype(float)

    def _ring_masks(self, frame: Frame, target: np.ndarray) -> list[np.ndarray]:
        ys, xs = np.nonzero(target)
        size = max(4, int(0.15 * np.sqrt(len(ys))))
        grown = cv2.dilate(target.astype(np.uint8), np.ones((2 * size + 1, 2 * size + 1), np.uint8)) > 0
        contours, _ = cv2.findContours(grown.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            return []
        ring = np.concatenate([c.reshape(-1, 2) for c in contours])
        picks = ring[np.linspace(0, len(ring) - 1, self.ring_points).astype(int)]
        out: list[np.ndarray] = []
        limit = self.max_mask_fraction * target.size
        for u, v in picks:
            mask, _ = self._best(np.array([[u, v]], float))
            area = int(mask.sum())
            if area < 20 or area > limit or (mask & target).sum() > 0.5 * area:
                continue
            mask &= ~target
            if all(_iou(mask, m) < 0.7 for m in out):
                out.append(mask)
        return out

    def _support_without_depth(self, frame: Frame) -> np.ndarray:
        """The largest mask prompted along the image bottom: the table top in a table-top view."""
        self._set(frame)
        best = np.zeros((frame.height, frame.width), bool)
        for fx in (0.25, 0.5, 0.75):
            mask, _ = self._best(np.array([[fx * frame.width, frame.height - 2]]))
            if mask[-1].any() and mask.sum() > best.sum():
                best = mask
        return best

    def _group(self, segs, frames, poses, world) -> list[int]:
        """Group index per segment: same target id -> same group; others by 3D agreement."""
        region_images = [np.zeros((f.height, f.width), np.int32) for f in frames]
        regions, points = [], []
        for k, (i, mask, _) in enumerate(segs):
            region_images[i][mask & (region_images[i] == 0)] = k + 1
            regions.append(k + 1)
            pts = world[i][mask & (frames[i].depth > 0)] if world[i] is not None else np.zeros((0, 3))
            points.append(subsample(pts, 1500, seed=k))
        if any(w is not None for w in world):
            groups = associate_segments([s[0] for s in segs], regions, points, frames, poses, region_images,
                                        self.config.association_distance)
        else:
            groups = list(range(len(segs)))
        # Target segments are grouped by id (their prompts came from the target), and never merged
        # with another target.
        by_id: dict[str, int] = {}
        for k, (_, _, tid) in enumerate(segs):
            if tid is not None:
                by_id.setdefault(tid, groups[k])
        out = []
        for k, (_, _, tid) in enumerate(segs):
            out.append(by_id[tid] if tid is not None else groups[k])
        return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0
