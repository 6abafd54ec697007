"""Shared fixtures: the shared sample scenes and small scenes rendered by the project itself."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "samples"
SAMPLE_NAMES = ("sample0_posed_v1", "sample1_posed_v4", "sample2_unposed_v2")

# Keep ROS 2 traffic of any test on this machine (see shared/notes/ros2-from-pypi.md).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("AMENT_PREFIX_PATH", str(Path(os.sys.prefix)))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.fail(f"shared samples not found at {SAMPLES}: the checkout must have shared/ beside it")
    return SAMPLES


@pytest.fixture(scope="session")
def synthetic_scene():
    """A small posed RGB-D scene (train-split objects), 3 views at 320x240, with ground truth."""
    from amodal3d_ros.synth import SynthConfig, generate_scene

    return generate_scene(7, SynthConfig(n_views=3, n_objects=(3, 4), width=320, height=240))


@pytest.fixture(scope="session")
def synthetic_scene_dir(tmp_path_factory, synthetic_scene) -> Path:
    from amodal3d_ros.synth.write import write_synthetic_scene

    return write_synthetic_scene(synthetic_scene, tmp_path_factory.mktemp("synthetic") / "scene")


def centroid_distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
