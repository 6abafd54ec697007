"""Camera poses of the views: given (TF, pose topic, scene.json) or estimated from the images."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..config import PoseConfig
from ..scene import Frame
from .registration import PoseEstimationError, estimate_poses, register_pair

__all__ = ["PoseEstimationError", "drop_weak_views", "estimate_poses", "register_pair", "resolve_poses"]


def resolve_poses(frames: Sequence[Frame], config: PoseConfig) -> tuple[list[np.ndarray], bool, list[float]]:
    """T_world_camera per frame, whether they were estimated, and each view's registration fitness.

    With given poses the world frame is the given one and every fitness is 1; estimated poses are
    relative to frame 0's optical frame, which then is the world frame of every output.
    """
    given = all(f.T_world_camera is not None for f in frames)
    if config.method == "given" and not given:
        missing = [i for i, f in enumerate(frames) if f.T_world_camera is None]
        raise PoseEstimationError(f"poses.method is 'given' but frames {missing} have no pose")
    if given and config.method in ("auto", "given"):
        return [f.T_world_camera for f in frames], False, [1.0] * len(frames)
    poses, fitness = estimate_poses(frames, config)
    return poses, True, fitness


def drop_weak_views(frames: Sequence[Frame], fitness: Sequence[float],
                    min_fitness: float) -> tuple[list[Frame], list[str]]:
    """The frames with every view registered below ``min_fitness`` emptied (no depth measured), and
    a warning naming each: a wrongly placed view would carve space its objects occupy and add
    surfaces where there are none, a confident wrong shape; without it the others still count.
    """
    kept, warnings = [], []
    for k, (frame, score) in enumerate(zip(frames, fitness)):
        if score >= min_fitness or frame.depth is None:
            kept.append(frame)
            continue
        kept.append(replace(frame, depth=np.zeros_like(frame.depth)))
        warnings.append(f"view {k}: its estimated pose disagrees with the other views (registration fitness "
                        f"{score:.2f} < poses.min_fitness {min_fitness}): not used")
    return kept, warnings
