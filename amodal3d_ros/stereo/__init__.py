"""Depth from posed RGB views: frames without depth get a metric multi-view stereo estimate.

``complete_depth(frames, poses)`` returns the frames with every missing depth map estimated by a
plane sweep (see :mod:`.sweep`) against all the other posed views that look at the same scene,
and warnings. Pixels are only filled where the estimate is trusted: a strong, unique ZNCC peak on
texture that runs across the epipolar lines, away from depth jumps, and confirmed by at least one
other view's depth (a multi-view cross-check, which for two views is the left-right check).
Depth estimates are metric because the poses are. Frames that already have depth are returned
unchanged (and serve as references for the cross-check).

Refused (``StereoError``): a single RGB-only view (no parallax, no metric geometry) and views
without poses (unposed RGB-only input needs poses from TF, a pose topic or scene.json).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..config import StereoConfig
from ..scene import Frame
from .sweep import cross_check, reference_depth

__all__ = ["StereoConfig", "StereoError", "complete_depth", "pair_depth", "reference_depth", "cross_check"]


class StereoError(ValueError):
    """RGB-only input that stereo cannot turn into metric depth."""


def pair_depth(frame_a: Frame, T_a: np.ndarray, frame_b: Frame, T_b: np.ndarray,
               config: Optional[StereoConfig] = None) -> np.ndarray:
    """(H, W) float32 depth of view a from the single partner b (0 where not trusted), without the
    cross-check (that needs b's depth too: use :func:`complete_depth`)."""
    return reference_depth(frame_a.rgb, frame_a.K, T_a, [(frame_b.rgb, frame_b.K, T_b)], config)


def complete_depth(frames: Sequence[Frame], poses: Optional[Sequence[Optional[np.ndarray]]] = None,
                   config: Optional[StereoConfig] = None) -> tuple[list[Frame], list[str]]:
    """Frames with depth estimated where missing, and warnings."""
    cfg = config or StereoConfig()
    frames = list(frames)
    missing = [i for i, f in enumerate(frames) if f.depth is None]
    if not missing:
        return frames, []
    if poses is None:
        poses = [f.T_world_camera for f in frames]
    unposed = [i for i, T in enumerate(poses) if T is None]
    if unposed:
        raise StereoError(f"frames {unposed} have no pose: RGB-only views need given camera poses (TF, a pose "
                          "topic or T_world_camera in scene.json), or depth images")
    if len(frames) < 2:
        raise StereoError("a single RGB-only view has no metric 3D geometry: give depth, or two or more posed "
                          "views with some baseline between them")
    poses = [np.asarray(T, dtype=np.float64) for T in poses]
    depths: list[Optional[np.ndarray]] = [f.depth for f in frames]
    for i in missing:
        sources = [(frames[j].rgb, frames[j].K, poses[j]) for j in range(len(frames)) if j != i]
        depths[i] = reference_depth(frames[i].rgb, frames[i].K, poses[i], sources, cfg)
    checked = cross_check(depths, [f.K for f in frames], poses, missing, cfg)
    warnings = []
    out = list(frames)
    for i in missing:
        depth = checked[i]
        fraction = float(np.mean(depth > 0))
        if fraction == 0:
            warnings.append(
                f"frame {i}: no stereo depth (no other posed view at least {cfg.min_baseline * 100:.0f} cm away, "
                f"looking within {cfg.max_angle_deg:.0f} degrees of it, with texture in common)")
        elif fraction < 0.05:
            warnings.append(f"frame {i}: stereo depth covers only {100 * fraction:.0f}% of the image")
        f = frames[i]
        out[i] = Frame(rgb=f.rgb, K=f.K, depth=depth, T_world_camera=f.T_world_camera, stamp=f.stamp)
    return out, warnings
