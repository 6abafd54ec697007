"""Shared fixtures and the test environment.

Data: tests run on data the project owns (scenes rendered by ``synth``, the example scene shipped
in the package). Only tests that check the shared sample scenes' ground truth use ``../shared``;
they skip, saying why, where it is absent (``samples_dir``).

ROS 2: this module is the one place that sets up the environment of the tests and of the ROS
processes they start (``ros_env``). ``make test`` sets the same variables; what is set wins.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "samples"
SAMPLE_NAMES = ("sample0_posed_v1", "sample1_posed_v4", "sample2_unposed_v2")
# 4 posed RGB-D views 640x480, target obj0 (a copy of the shared sample1_posed_v4 without its gt/).
EXAMPLE_SCENE = REPO / "amodal3d_ros" / "ros" / "example_scene"

# ---------------------------------------------------------------- ROS 2 environment
# Before anything imports rclpy: ROS 2 traffic stays on this machine (shared/notes/ros2-from-pypi.md),
# in a domain of this run (`make test`: 1..100 from its shell's PID), with logs in a temporary folder,
# and the package index of this environment (the generated messages, the share files).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="amodal3d-test-roslog-"))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

# Whole graphs that a test starts (player, node, recorder) get a domain apart from the test process
# and the node tests (ROS_DOMAIN_ID), so that they never see each other's topics.
GRAPH_DOMAINS = {"demo": (101, 200), "bag": (201, 230)}


def ros_env(graph: str | None = None) -> dict[str, str]:
    """The environment for a ROS 2 process a test starts: this run's ROS settings, this checkout
    first on PYTHONPATH, and for ``graph`` (a key of GRAPH_DOMAINS) a domain of its own."""
    env = dict(os.environ)
    if graph is not None:
        env["ROS_DOMAIN_ID"] = str(random.randint(*GRAPH_DOMAINS[graph]))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    return env


# ---------------------------------------------------------------- data
@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The shared sample scenes with their ground truth; tests that need them skip where absent."""
    if not SAMPLES.is_dir():
        pytest.skip(f"needs the shared sample scenes: {SAMPLES} not found (no shared/ beside the checkout)")
    return SAMPLES


@pytest.fixture
def scene_folder(request):
    """name -> scene folder: 'example_scene' (shipped in the package), else a shared sample (the test
    skips where the shared samples are absent)."""
    def folder(name: str) -> Path:
        return EXAMPLE_SCENE if name == "example_scene" else request.getfixturevalue("samples_dir") / name

    return folder


@pytest.fixture(scope="session")
def synthetic_scene():
    """A small posed RGB-D scene (train-split objects), 3 views at 320x240, with ground truth."""
    from amodal3d_ros.synth import SynthConfig, generate_scene

    return generate_scene(7, SynthConfig(n_views=3, n_objects=(3, 4), width=320, height=240))


@pytest.fixture(scope="session")
def synthetic_scene_dir(tmp_path_factory, synthetic_scene) -> Path:
    from amodal3d_ros.synth.write import write_synthetic_scene

    return write_synthetic_scene(synthetic_scene, tmp_path_factory.mktemp("synthetic") / "scene")


@pytest.fixture(scope="session")
def camera_scene():
    """A posed RGB-D scene as a camera streams it: 4 views at 640x480 (the example scene's size and
    view count), one target, with ground truth in the world frame. Rendered in about 1 s."""
    from amodal3d_ros.synth import SynthConfig, generate_scene

    return generate_scene(7, SynthConfig(n_views=4, n_objects=(3, 4), width=640, height=480))


@pytest.fixture(scope="session")
def camera_scene_dir(tmp_path_factory, camera_scene) -> Path:
    from amodal3d_ros.synth.write import write_synthetic_scene

    return write_synthetic_scene(camera_scene, tmp_path_factory.mktemp("camera_scene") / "scene")


def centroid_distance(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
