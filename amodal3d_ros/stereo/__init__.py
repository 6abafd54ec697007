"""Depth from posed RGB views: frames without depth get a metric stereo estimate.

``complete_depth(frames, poses)`` returns the frames with every missing depth map filled from
two-view stereo (see :mod:`.pair`) against the best partner views, and warnings. Pixels are only
filled where the estimate is trusted: left-right consistent, textured and, where two or more
pairs cover a pixel, agreeing between pairs. Depth estimates are metric because the poses are.
Frames that already have depth are returned unchanged.

Refused (``StereoError``): a single RGB-only view (no parallax, no metric geometry) and views
without poses (unposed RGB-only input needs poses from TF, a pose topic or scene.json).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..scene import Frame
from .pair import StereoConfig, StereoError, pair_depth, pair_geometry

__all__ = ["StereoConfig", "StereoError", "complete_depth", "pair_depth", "pair_geometry", "choose_partners"]


def choose_partners(i: int, poses: Sequence[np.ndarray], config: StereoConfig) -> list[int]:
    """Partner views of view i, best first: enough baseline, axes not too far apart."""
    scored = []
    for j, T in enumerate(poses):
        if j == i:
            continue
        baseline, angle = pair_geometry(poses[i], T)
        if baseline < config.min_baseline or angle > config.max_angle_deg:
            continue
        scored.append((abs(angle - config.best_angle_deg), j))
    return [j for _, j in sorted(scored)]


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
    warnings = []
    out = list(frames)
    for i in missing:
        partners = choose_partners(i, poses, cfg)[:max(1, cfg.partners + 1)]
        estimates = [pair_depth(frames[i], poses[i], frames[j], poses[j], cfg) for j in partners]
        estimates = [d for d in estimates if np.any(d > 0)][:cfg.partners + 1]
        if not estimates:
            raise StereoError(
                f"frame {i} has no depth and no view to do stereo with (need another posed view at least "
                f"{cfg.min_baseline * 100:.0f} cm away, looking within {cfg.max_angle_deg:.0f} degrees of it, "
                "with texture in common)")
        depth = _combine(estimates, cfg)
        fraction = float(np.mean(depth > 0))
        if fraction < 0.05:
            warnings.append(f"frame {i}: stereo depth covers only {100 * fraction:.0f}% of the image")
        f = frames[i]
        out[i] = Frame(rgb=f.rgb, K=f.K, depth=depth, T_world_camera=f.T_world_camera, stamp=f.stamp)
    return out, warnings


def _combine(estimates: list[np.ndarray], cfg: StereoConfig) -> np.ndarray:
    """One depth map: where pairs agree their mean, where only one pair sees a pixel its estimate,
    where pairs disagree nothing."""
    if len(estimates) == 1:
        return estimates[0]
    stack = np.stack(estimates)  # (P, H, W), 0 = none
    valid = stack > 0
    out = np.zeros(stack.shape[1:], np.float32)
    best = np.zeros(stack.shape[1:], np.int32)
    for p in range(len(estimates)):
        ref = stack[p]
        agree = valid & valid[p] & (np.abs(stack - ref) <= cfg.agreement * np.maximum(ref, 1e-6))
        count = agree.sum(axis=0)
        mean = np.where(agree, stack, 0).sum(axis=0) / np.maximum(count, 1)
        alone = valid[p] & (valid.sum(axis=0) == 1)
        better = ((count >= 2) | alone) & (count > best)
        out[better] = mean[better]
        best[better] = count[better]
    return out
