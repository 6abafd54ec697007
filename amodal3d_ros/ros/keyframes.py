"""Sparse keyframe selection for a live camera stream (no ROS imports).

A frame becomes a keyframe when it adds information over every keyframe kept so far:
- posed frames: the camera moved beyond ``min_translation`` (m) or ``min_rotation`` (deg) from
  every keyframe, or (with depth) at least ``min_new_area`` of its valid depth pixels were not
  seen by any keyframe (outside their images, hidden in them, or in front of what they saw: the
  scene changed);
- unposed frames (poses estimated later by the pipeline): the image changed by at least
  ``min_image_change`` (mean absolute difference of small grey thumbnails, 0..1).
Frames closer than ``min_interval`` seconds to the newest keyframe are skipped. The set is
bounded by ``max_keyframes``: when full, the oldest keyframe is evicted (a sliding window that
follows the camera).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from amodal3d_ros.geometry import backproject, invert, project, transform_points
from amodal3d_ros.scene import Frame
from amodal3d_ros.schema import Range, Schema, setting


# The new-area test looks at every NEW_AREA_STRIDE-th pixel; depths agree within
# max(NEW_AREA_DEPTH_TOLERANCE m, 3 % of the depth).
NEW_AREA_STRIDE = 8
NEW_AREA_DEPTH_TOLERANCE = 0.02


@dataclass
class KeyframeParams(Schema):
    """The node's ``keyframes.*`` parameters."""
    max_keyframes: int = setting(8, "largest number of keyframes kept (oldest evicted when full)", key="max",
                                 range=Range(1))
    min_translation: float = setting(0.05, "m, camera motion from every keyframe that makes a new keyframe",
                                     range=Range(0))
    min_rotation: float = setting(10.0, "deg, camera rotation from every keyframe that makes a new keyframe",
                                  range=Range(0))
    min_new_area: float = setting(0.15, "fraction of depth pixels unseen by all keyframes that makes a new keyframe",
                                  range=Range(0, 1))
    min_image_change: float = setting(0.03, "unposed mode: mean grey-level change (0..1) that makes a new keyframe",
                                      range=Range(0, 1))
    min_interval: float = setting(0.0, "s, least time between two keyframes", range=Range(0))


@dataclass
class Keyframe:
    frame: Frame
    frame_id: str  # the camera's optical frame name
    seq: int  # increasing number, never reused (counts all keyframes ever accepted)
    thumb: np.ndarray = field(repr=False, default=None)


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def pose_change(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation m, rotation deg) between two camera poses."""
    d = np.linalg.inv(T_a) @ T_b
    cos = np.clip((np.trace(d[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(d[:3, 3])), float(np.degrees(np.arccos(cos)))


def new_area_fraction(frame: Frame, keyframes: list[Frame], stride: int = NEW_AREA_STRIDE,
                      tolerance: float = NEW_AREA_DEPTH_TOLERANCE) -> float:
    """Share of ``frame``'s valid depth pixels that no keyframe saw (posed frames with depth)."""
    if frame.depth is None or frame.T_world_camera is None:
        return 1.0
    d = frame.depth[::stride, ::stride]
    valid = d > 0
    if not valid.any():
        return 0.0
    # The subsampled image is a camera of its own: focal lengths and centre divided by the stride.
    K_strided = np.diag([1.0 / stride, 1.0 / stride, 1.0]) @ frame.K
    points_world = transform_points(frame.T_world_camera, backproject(d, K_strided)[valid])
    seen = np.zeros(len(points_world), dtype=bool)
    for kf in keyframes:
        if kf.T_world_camera is None or kf.depth is None:
            continue
        uv, z = project(kf.K, transform_points(invert(kf.T_world_camera), points_world))
        inside = z > 1e-6
        pixels = np.full((len(z), 2), -1, dtype=np.int64)
        pixels[inside] = np.round(uv[inside]).astype(np.int64)
        u, v = pixels[:, 0], pixels[:, 1]
        inside &= (u >= 0) & (u < kf.width) & (v >= 0) & (v < kf.height)
        depth_seen = np.zeros(len(z))
        depth_seen[inside] = kf.depth[v[inside], u[inside]]
        tol = np.maximum(tolerance, 0.03 * np.abs(z))
        seen |= inside & (depth_seen > 0) & (np.abs(z - depth_seen) <= tol)
    return float(1.0 - seen.mean())


class KeyframeSelector:
    """The keyframe set: what is kept, and the rules for keeping a frame (``params``), behind one lock."""

    def __init__(self, params: Optional[KeyframeParams] = None):
        self.params = params or KeyframeParams()
        self.params.validate(prefix="keyframes.")  # ConfigError (a ValueError) naming the node's parameter
        self.keyframes: list[Keyframe] = []
        self.accepted_total = 0
        self.evicted_total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def full(self) -> bool:
        return len(self.keyframes) >= self.params.max_keyframes

    def snapshot(self) -> list[Keyframe]:
        with self._lock:
            return list(self.keyframes)

    def newest_seq(self) -> Optional[int]:
        """``seq`` of the newest keyframe, None while there is none."""
        with self._lock:
            return self.keyframes[-1].seq if self.keyframes else None

    def reset(self) -> int:
        """Drop every keyframe; returns how many there were."""
        with self._lock:
            n = len(self.keyframes)
            self.keyframes.clear()
            return n

    def reconfigure(self, params: KeyframeParams) -> None:
        """New selection parameters; a smaller ``max_keyframes`` evicts the oldest keyframes now."""
        params.validate(prefix="keyframes.")
        with self._lock:
            self.params = params
            self._evict_overflow()

    def _evict_overflow(self) -> None:
        while len(self.keyframes) > self.params.max_keyframes:
            self.keyframes.pop(0)
            self.evicted_total += 1

    def evaluate(self, frame: Frame) -> tuple[bool, str]:
        """Would ``frame`` be a keyframe? (accept, reason); does not change the set."""
        with self._lock:
            return self._evaluate(frame, list(self.keyframes), _thumbnail(frame.rgb))

    def consider(self, frame: Frame, frame_id: str = "") -> tuple[bool, str]:
        """Add ``frame`` if it adds information; returns (accepted, reason)."""
        thumb = _thumbnail(frame.rgb)
        with self._lock:
            ok, reason = self._evaluate(frame, list(self.keyframes), thumb)
            if ok:
                self.keyframes.append(Keyframe(frame=frame, frame_id=frame_id, seq=self.accepted_total, thumb=thumb))
                self.accepted_total += 1
                self._evict_overflow()
            return ok, reason

    def _evaluate(self, frame: Frame, kfs: list[Keyframe], thumb: np.ndarray) -> tuple[bool, str]:
        p = self.params
        if not kfs:
            return True, "first keyframe"
        newest = kfs[-1].frame
        if frame.stamp - newest.stamp < p.min_interval:
            return False, f"{frame.stamp - newest.stamp:.3f} s after the newest keyframe (< {p.min_interval} s)"
        posed = frame.T_world_camera is not None and all(k.frame.T_world_camera is not None for k in kfs)
        if posed:
            changes = [pose_change(k.frame.T_world_camera, frame.T_world_camera) for k in kfs]
            dt = min(c[0] for c in changes)
            dr = min(c[1] for c in changes)
            # Nearest keyframe in a combined metric decides whether the camera moved "enough".
            moved = all(c[0] >= p.min_translation or c[1] >= p.min_rotation for c in changes)
            if moved:
                return True, f"camera moved (>= {dt:.3f} m or >= {dr:.1f} deg from every keyframe)"
            if frame.depth is not None:
                area = new_area_fraction(frame, [k.frame for k in kfs])
                if area >= p.min_new_area:
                    return True, f"{area:.0%} newly seen area"
                return False, f"little new: moved {dt:.3f} m / {dr:.1f} deg, {area:.0%} new area"
            return False, f"little new: moved {dt:.3f} m / {dr:.1f} deg"
        change = min(float(np.mean(np.abs(thumb - k.thumb))) for k in kfs)
        if change >= p.min_image_change:
            return True, f"image changed by {change:.3f}"
        return False, f"image changed by only {change:.3f} (< {p.min_image_change})"
