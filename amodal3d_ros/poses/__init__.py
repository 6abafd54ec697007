"""Camera poses of the views: given (TF, pose topic, scene.json) or estimated from the images."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import PoseConfig
from ..scene import Frame
from .registration import PoseEstimationError, estimate_poses, register_pair

__all__ = ["PoseEstimationError", "estimate_poses", "register_pair", "resolve_poses"]


def resolve_poses(frames: Sequence[Frame], config: PoseConfig) -> tuple[list[np.ndarray], bool, list[str]]:
    """T_world_camera per frame, whether they were estimated, and warnings.

    With given poses the world frame is the given one; estimated poses are relative to frame 0's
    optical frame, which then is the world frame of every output.
    """
    given = all(f.T_world_camera is not None for f in frames)
    if config.method == "given" and not given:
        missing = [i for i, f in enumerate(frames) if f.T_world_camera is None]
        raise PoseEstimationError(f"poses.method is 'given' but frames {missing} have no pose")
    if given and config.method in ("auto", "given"):
        return [f.T_world_camera for f in frames], False, []
    poses, warnings = estimate_poses(frames, config)
    return poses, True, warnings
