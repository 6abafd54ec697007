"""End to end: `amodal3d demo` (player -> amodal3d node -> recorder through amodal3d_launch)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("amodal3d_ros.msg", reason="amodal3d_ros messages not built (make install)")
pytest.importorskip("amodal3d_ros.pipeline", reason="core pipeline not available")

from conftest import ros_env  # noqa: E402


def run_demo(tmp_path: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "amodal3d_ros.cli", "demo", *args], env=ros_env("demo"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    try:
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return proc.returncode, log


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo_out"
    code, log = run_demo(tmp_path, "--out", str(out), "--timeout", "150")
    assert code == 0, log[-4000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["frame"] == "world" and len(doc["objects"]) == 1
    assert (out / doc["objects"][0]["mesh"]).stat().st_size > 0
    assert (out / "report.png").stat().st_size > 10_000
    assert "demo: done" in log


def test_demo_rgb_only_camera(tmp_path):
    """The example scene without its depth images: the node runs with use_depth false (no depth
    subscription) and reconstructs from posed RGB views alone, near where the RGB-D run puts it."""
    import trimesh
    from amodal3d_ros.config import PipelineConfig
    from amodal3d_ros.pipeline import Reconstructor
    from amodal3d_ros.ros.tools.player import EXAMPLE_SCENE
    from amodal3d_ros.scene import drop_depth, read_scene, write_scene

    scene_dir = write_scene(drop_depth(read_scene(EXAMPLE_SCENE)), tmp_path / "rgb_scene")
    out = tmp_path / "demo_out"
    code, log = run_demo(tmp_path, "--scene", str(scene_dir), "--out", str(out), "--timeout", "180")
    assert code == 0, log[-4000:]
    assert "use_depth:=false" in log
    doc = json.loads((out / "result.json").read_text())
    assert len(doc["objects"]) == 1
    mesh = trimesh.load(out / doc["objects"][0]["mesh"], force="mesh")
    rgbd = Reconstructor(PipelineConfig(device="cpu")).reconstruct_scene(read_scene(EXAMPLE_SCENE)).objects[0]
    rgbd_bounds = np.array([rgbd.vertices.min(axis=0), rgbd.vertices.max(axis=0)])
    assert np.linalg.norm(mesh.bounds.mean(axis=0) - rgbd_bounds.mean(axis=0)) < 0.03


def test_demo_with_a_corrupt_bag_fails_fast(tmp_path):
    """The player cannot read the bag: it says so on player_failure and the recorder (and with it the
    whole graph) stops at once instead of waiting for its timeout."""
    import time

    bag = tmp_path / "corrupt.mcap"
    bag.write_bytes(b"\x89MCAP0\r\n" + os.urandom(2000))
    t0 = time.monotonic()
    code, log = run_demo(tmp_path, "--bag", str(bag), "--out", str(tmp_path / "out"), "--timeout", "200")
    assert code != 0, log[-3000:]
    assert time.monotonic() - t0 < 120, "the graph waited for the recorder's timeout"
    assert "corrupt.mcap" in log and "the player failed" in log
    assert not (tmp_path / "out" / "result.json").exists()
