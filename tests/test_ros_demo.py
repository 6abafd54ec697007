"""End to end: `amodal3d demo` (player -> amodal3d node -> recorder through amodal3d_launch)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("amodal3d_ros.msg", reason="amodal3d_ros messages not built (make install)")
pytest.importorskip("amodal3d_ros.pipeline", reason="core pipeline not available")

REPO = Path(__file__).resolve().parents[1]


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo_out"
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["ROS_DOMAIN_ID"] = str(random.randint(101, 200))  # not the domain of the other ROS tests
    env.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="amodal3d-test-roslog-"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    proc = subprocess.Popen([sys.executable, "-m", "amodal3d_ros.cli", "demo", "--out", str(out), "--timeout", "150"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    try:
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0, log[-4000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["frame"] == "world" and len(doc["objects"]) == 1
    assert (out / doc["objects"][0]["mesh"]).stat().st_size > 0
    assert (out / "report.png").stat().st_size > 10_000
    assert "demo: done" in log
