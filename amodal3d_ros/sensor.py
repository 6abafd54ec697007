"""What real depth cameras measure wrongly, undone before segmentation and fusion.

At a depth step a real sensor reports mixed pixels: depths between the near and the far surface,
which back-project to points floating in the gap (a mug seems to trail a fin into the space behind
it). Such a pixel differs steeply from the neighbours on both sides, as no surface the camera can
measure does: the surface it implies runs almost along the viewing ray. Those pixels become "no
measurement", which fusion treats as unknown, never as free space.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from .scene import Frame


def mixed_pixels(depth: np.ndarray, K: np.ndarray, max_grazing_deg: float) -> np.ndarray:
    """(H, W) bool: pixels whose depth steps steeply to both neighbours along a row or a column.

    Steep means a surface seen more than ``max_grazing_deg`` from face-on. A real edge pixel of
    the near or the far surface is smooth on its own side and is kept.
    """
    valid = depth > 0
    limit = np.tan(np.deg2rad(max_grazing_deg)) * depth  # allowed step per pixel, times the focal length
    mixed = np.zeros(depth.shape, bool)
    for axis, focal in ((1, K[0, 0]), (0, K[1, 1])):
        step = np.abs(np.diff(depth, axis=axis)) * focal
        both = np.zeros(depth.shape, bool)
        inner = [slice(None), slice(None)]
        inner[axis] = slice(1, -1)
        before = np.take(step, np.arange(0, step.shape[axis] - 1), axis=axis)
        after = np.take(step, np.arange(1, step.shape[axis]), axis=axis)
        both[tuple(inner)] = (before > limit[tuple(inner)]) & (after > limit[tuple(inner)])
        mixed |= both
    return mixed & valid


def drop_mixed_pixels(frames: Sequence[Frame], max_grazing_deg: float) -> list[Frame]:
    """The frames with mixed depth pixels set to 0 (no measurement); RGB-only frames unchanged."""
    if max_grazing_deg >= 90:
        return list(frames)
    out = []
    for frame in frames:
        if frame.depth is None:
            out.append(frame)
            continue
        mixed = mixed_pixels(frame.depth, frame.K, max_grazing_deg)
        out.append(replace(frame, depth=np.where(mixed, 0.0, frame.depth).astype(np.float32)) if mixed.any() else frame)
    return out
