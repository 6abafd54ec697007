"""Prompts: which objects to reconstruct, from PointStamped messages on ``prompt``.

A prompt is a pixel (empty ``frame_id``, or ``prompt.mode: pixel``) in the keyframe of its stamp
(else the newest keyframe when it arrived), or a 3D point (RViz "Publish Point") in the world
frame or the camera's own frame. At reconstruction time each becomes a core ``Target``: a pixel in
one keyframe, for a point the newest keyframe where the point is visible (depth agrees).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from amodal3d_ros.geometry import invert, project, transform_points
from amodal3d_ros.ros import conversions as conv
from amodal3d_ros.ros import qos
from amodal3d_ros.ros.keyframes import Keyframe
from amodal3d_ros.ros.settings import NodeSettings
from amodal3d_ros.scene import Target


@dataclass
class Prompt:
    stamp: float
    frame_id: str
    xyz: np.ndarray
    pixel_mode: bool
    kf_seq: Optional[int]  # newest keyframe when it arrived


class PromptBook:
    """The prompts received so far (the latest, or all with ``prompt.accumulate``), and their topic."""

    def __init__(self, node, settings: NodeSettings, newest_keyframe: Callable[[], Optional[int]],
                 report_bad: Callable[[str, str], None]):
        self._node = node
        self._settings = settings
        self._newest_keyframe = newest_keyframe
        self._report_bad = report_bad
        self._lock = threading.Lock()
        self._prompts: list[Prompt] = []
        self._subscription = None

    def open(self) -> None:
        """Subscribe to ``prompt`` (activate)."""
        self._subscription = self._node.create_subscription(
            PointStamped, "prompt", self.add, qos.prompt_qos(), callback_group=MutuallyExclusiveCallbackGroup())

    def close(self) -> None:
        """Unsubscribe (deactivate); the prompts are kept."""
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None

    def reconfigure(self, settings: NodeSettings) -> None:
        self._settings = settings

    def clear(self) -> None:
        with self._lock:
            self._prompts.clear()

    def snapshot(self) -> list[Prompt]:
        with self._lock:
            return list(self._prompts)

    def add(self, msg: PointStamped) -> None:
        s = self._settings
        pixel = s.prompt_mode == "pixel" or (s.prompt_mode == "auto" and not msg.header.frame_id)
        xyz = np.array([msg.point.x, msg.point.y, msg.point.z], dtype=np.float64)
        if not np.all(np.isfinite(xyz)):
            self._report_bad("prompt", f"prompt: non-finite point {xyz.tolist()}")
            return
        prompt = Prompt(stamp=conv.stamp_to_sec(msg.header.stamp), frame_id=msg.header.frame_id, xyz=xyz,
                        pixel_mode=pixel, kf_seq=self._newest_keyframe())
        with self._lock:
            if not s.prompt_accumulate:
                self._prompts.clear()
            self._prompts.append(prompt)
            index = len(self._prompts) - 1
        what = f"pixel ({xyz[0]:.0f}, {xyz[1]:.0f})" if pixel else \
            f"point {xyz.round(3).tolist()} in '{msg.header.frame_id}'"
        self._node.get_logger().info(f"prompt {index}: {what}")

    def targets(self, kfs: list[Keyframe], prompts: list[Prompt], output_frame: str) -> tuple[list[Target], list[str]]:
        """Targets for ``prompts`` in ``kfs``, and a warning for each prompt that could not be placed."""
        s = self._settings
        return resolve_prompts(kfs, prompts, output_frame, s.world_frame, max(s.sync_tolerance, 1e-3))


def resolve_prompts(kfs: list[Keyframe], prompts: list[Prompt], output_frame: str, world_frame: str,
                    stamp_tolerance: float) -> tuple[list[Target], list[str]]:
    targets, warnings = [], []
    for i, p in enumerate(prompts):
        placed = _place_pixel(kfs, p, stamp_tolerance) if p.pixel_mode else \
            _place_point(kfs, p, output_frame, world_frame)
        if isinstance(placed, str):
            warnings.append(f"prompt {i}: {placed}; ignored")
        else:
            targets.append(Target(id=f"target{i}", frame=placed[0], pixel=placed[1]))
    return targets, warnings


def _place_pixel(kfs: list[Keyframe], p: Prompt, stamp_tolerance: float):
    """(keyframe index, (u, v)): the keyframe of the prompt's stamp, else the newest when it came, else the newest."""
    idx = None
    if p.stamp > 0:
        diffs = [abs(k.frame.stamp - p.stamp) for k in kfs]
        j = int(np.argmin(diffs))
        if diffs[j] <= stamp_tolerance:
            idx = j
    if idx is None and p.kf_seq is not None:
        idx = next((j for j, k in enumerate(kfs) if k.seq == p.kf_seq), None)
    if idx is None:
        idx = len(kfs) - 1
    u, v = int(round(p.xyz[0])), int(round(p.xyz[1]))
    f = kfs[idx].frame
    if not (0 <= u < f.width and 0 <= v < f.height):
        return f"pixel ({u}, {v}) outside the {f.width}x{f.height} keyframe"
    return idx, (u, v)


def _place_point(kfs: list[Keyframe], p: Prompt, output_frame: str, world_frame: str):
    """Newest keyframe where the 3D point is visible (depth agrees), else the newest it projects into."""
    candidates = []
    newest = len(kfs) - 1
    for j in range(newest, -1, -1):
        frame = kfs[j].frame
        if p.frame_id in (output_frame, world_frame) and frame.T_world_camera is not None:
            point = transform_points(invert(frame.T_world_camera), p.xyz)[0]
        elif p.frame_id == kfs[j].frame_id and j == newest:
            point = p.xyz  # a point in the camera's own frame: meant for the newest view
        else:
            continue
        if point[2] <= 1e-6:
            continue
        uv, _ = project(frame.K, point[None])
        u, v = int(round(uv[0, 0])), int(round(uv[0, 1]))
        if not (0 <= u < frame.width and 0 <= v < frame.height):
            continue
        candidates.append((j, (u, v)))
        d = frame.depth
        if d is None or (d[v, u] > 0 and abs(d[v, u] - point[2]) <= max(0.02, 0.03 * point[2])):
            return j, (u, v)
    if candidates:
        return candidates[0]
    return (f"point in '{p.frame_id}' projects into no keyframe (frames known: '{world_frame}' "
            f"and the camera frames; TF lookups for other frames are not supported)")
