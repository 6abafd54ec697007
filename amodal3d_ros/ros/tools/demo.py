"""``amodal3d demo``: the whole ROS graph on an example scene, end to end.

Runs ``launch/demo.launch.yaml`` through ``amodal3d_launch`` (player -> amodal3d node ->
recorder), then checks that the output folder holds meshes, ``result.json`` and ``report.png``.
Sets ROS environment hygiene where unset: discovery on localhost only, a random domain id, logs
in a temporary folder, ``AMENT_PREFIX_PATH`` = this environment.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from amodal3d_ros.scene import read_scene


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (meshes, result.json, report.png)")
    parser.add_argument("--scene", default="", help="scene folder to play (default: the shipped example scene)")
    parser.add_argument("--bag", default="", help="rosbag (MCAP/sqlite3) to play instead of a scene folder")
    parser.add_argument("--timeout", type=float, default=300.0, help="s before the demo gives up")
    parser.add_argument("--rate", type=float, default=2.0, help="frames per second of the player")


def ros_environment(env: Optional[dict] = None) -> dict:
    """A copy of ``env`` (default os.environ) with the ROS hygiene variables set where unset."""
    env = dict(os.environ if env is None else env)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    if "ROS_LOG_DIR" not in env:
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="amodal3d-roslog-")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check_output(out: Path) -> tuple[bool, str]:
    result = out / "result.json"
    if not result.is_file():
        return False, f"{result} is missing"
    doc = json.loads(result.read_text())
    meshes = [out / o["mesh"] for o in doc.get("objects", [])]
    missing = [str(m) for m in meshes if not m.is_file()]
    if not meshes:
        return False, "result.json lists no objects"
    if missing:
        return False, f"meshes missing: {', '.join(missing)}"
    if not (out / "report.png").is_file():
        return False, f"{out / 'report.png'} is missing"
    return True, f"{len(meshes)} objects in frame '{doc.get('frame')}'"


def run(args: argparse.Namespace) -> int:
    # Check inputs before starting a graph that would otherwise wait for the recorder's timeout.
    if args.bag and not Path(args.bag).exists():
        raise FileNotFoundError(f"--bag {args.bag}: no such file or rosbag2 folder")
    if args.scene and not (Path(args.scene) / "scene.json").is_file():
        raise FileNotFoundError(f"--scene {args.scene}: not a scene folder (no scene.json)")
    # An RGB-only scene needs a node that does not wait for depth images.
    rgb_only = bool(args.scene) and not read_scene(Path(args.scene)).has_depth
    out = Path(args.out).resolve()
    for stale in ("result.json", "report.png"):
        (out / stale).unlink(missing_ok=True)
    env = ros_environment()
    cmd = [sys.executable, "-m", "amodal3d_ros.ros.tools.launcher", "amodal3d_ros", "demo.launch.yaml",
           f"out:={out}", f"scene:={Path(args.scene).resolve() if args.scene else ''}",
           f"bag:={Path(args.bag).resolve() if args.bag else ''}", f"timeout:={float(args.timeout)}",
           f"rate:={float(args.rate)}", f"use_depth:={'false' if rgb_only else 'true'}"]
    print(f"demo: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} ROS_LOG_DIR={env['ROS_LOG_DIR']}", flush=True)
    print("demo: " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env)
    try:
        code = proc.wait(timeout=args.timeout + 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(2)
        code = proc.wait(timeout=30)
    except KeyboardInterrupt:
        proc.send_signal(2)
        code = proc.wait(timeout=30)
    elapsed = time.monotonic() - t0
    ok, summary = check_output(out)
    if code == 0 and ok:
        doc = json.loads((out / "result.json").read_text())
        print(f"demo: done in {elapsed:.1f} s: {summary}")
        for o in doc["objects"]:
            print(f"  {o['id']}: {o['mesh']} visible {o['visible_fraction']:.0%}, {o['views_used']} views, "
                  f"{o.get('completion_method', '')}")
        print(f"  report: {out / 'report.png'}")
        return 0
    print(f"demo: FAILED (launch exit code {code}, {summary}) after {elapsed:.1f} s; ROS logs in {env['ROS_LOG_DIR']}",
          file=sys.stderr)
    return code or 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="amodal3d demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
