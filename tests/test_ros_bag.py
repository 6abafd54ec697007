"""The player's rosbag path: a bag of a rendered scene (``synth``, with ground truth) through the
demo graph, and bad bag files.

The bag is written with ``rosbags`` (pure Python; no rosbag2_py in the PyPI ROS 2 stack) and its
ROS 2 typestore, on topics under a ``/camera`` namespace (the player keeps every topic that *ends*
in rgb/image, rgb/camera_info, depth/image, camera_pose or prompt), as a camera driver + pose
estimator + clicked prompt would have recorded them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("rosbags", reason="rosbags (pure-Python rosbag2 reader/writer) not installed")
pytest.importorskip("amodal3d_ros.msg", reason="amodal3d_ros messages not built (make install)")
pytest.importorskip("amodal3d_ros.pipeline", reason="core pipeline not available")

from conftest import ros_env  # noqa: E402

T0_NS = 1_700_000_000 * 10**9  # bag time of the first frame
FRAME_PERIOD_NS = 500_000_000  # 2 Hz: the player replays at bag time, so this sets the test's pace
REPEAT = 2  # copies of each view (fresh stamps), like the scene player's repeat: a camera that stands
# still a moment at each view. One copy each is lossless too, but leaves a busy node no slack
# before the player's reconstruct call (0.5 s after the last message).


def run(cmd: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run ``cmd`` to the end (SIGINT, then kill, if it overruns); (exit code, stdout+stderr)."""
    proc = subprocess.Popen(cmd, env=ros_env("bag"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(cwd))
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(2)
        try:
            log, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:4])} ran past {timeout} s:\n{log[-4000:]}")
    return proc.returncode, log


def write_scene_bag(scene_dir: Path, bag_dir: Path, storage: str) -> Path:
    """The scene as a ROS 2 bag (folder with metadata.yaml); returns the path of its storage file."""
    import transforms3d
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from amodal3d_ros.scene import read_scene

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
    Image, CameraInfo = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"]
    ROI = T["sensor_msgs/msg/RegionOfInterest"]
    Pose, PoseStamped = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/PoseStamped"]
    Point, Quaternion = T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]
    PointStamped = T["geometry_msgs/msg/PointStamped"]

    def header(frame_id: str, t_ns: int):
        return Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id=frame_id)

    def image(arr: np.ndarray, encoding: str, hdr):
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        return Image(header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
                     step=w * (arr.shape[2] if arr.ndim == 3 else 1) * arr.dtype.itemsize,
                     data=arr.view(np.uint8).reshape(-1))

    scene = read_scene(scene_dir)
    cam = "camera_color_optical_frame"
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(bag_dir, version=9, storage_plugin=plugin) as writer:
        conns = {name: writer.add_connection(f"/camera/{name}", msgtype, typestore=ts) for name, msgtype in (
            ("rgb/image", "sensor_msgs/msg/Image"), ("rgb/camera_info", "sensor_msgs/msg/CameraInfo"),
            ("depth/image", "sensor_msgs/msg/Image"), ("camera_pose", "geometry_msgs/msg/PoseStamped"),
            ("prompt", "geometry_msgs/msg/PointStamped"))}

        def write(name: str, t_ns: int, msg) -> None:
            writer.write(conns[name], t_ns, ts.serialize_cdr(msg, conns[name].msgtype))

        for i, f in enumerate(scene.frames):
            K = np.asarray(f.K, dtype=np.float64)
            P = np.zeros((3, 4))
            P[:, :3] = K
            w, x, y, z = transforms3d.quaternions.mat2quat(f.T_world_camera[:3, :3])
            px, py, pz = (float(v) for v in f.T_world_camera[:3, 3])
            depth_mm = np.clip(np.round(f.depth * 1000.0), 0, 65535).astype(np.uint16)
            for r in range(REPEAT):
                t = T0_NS + (i * REPEAT + r) * FRAME_PERIOD_NS
                write("camera_pose", t, PoseStamped(header=header(scene.world_frame, t), pose=Pose(
                    position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=x, y=y, z=z, w=w))))
                write("rgb/camera_info", t, CameraInfo(
                    header=header(cam, t), height=f.height, width=f.width, distortion_model="plumb_bob",
                    d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0,
                    binning_y=0, roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))
                write("depth/image", t, image(depth_mm, "16UC1", header(cam, t)))
                write("rgb/image", t, image(f.rgb.astype(np.uint8), "rgb8", header(cam, t)))
                for target in scene.targets:
                    if target.frame == i and r == 0:  # a pixel prompt (empty frame_id) stamped like its frame
                        write("prompt", t + 1_000_000, PointStamped(header=header("", t), point=Point(
                            x=float(target.pixel[0]), y=float(target.pixel[1]), z=0.0)))
    files = sorted(bag_dir.glob("*.mcap" if storage == "mcap" else "*.db3"))
    assert len(files) == 1 and (bag_dir / "metadata.yaml").is_file(), sorted(bag_dir.iterdir())
    return files[0]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_demo_plays_a_bag(tmp_path, storage, camera_scene, camera_scene_dir):
    import trimesh

    bag_file = write_scene_bag(camera_scene_dir, tmp_path / "bag", storage)
    # A bare storage file (MCAP) and a rosbag2 folder (sqlite3) are both accepted by bag:=.
    bag = bag_file if storage == "mcap" else bag_file.parent
    out = tmp_path / "out"
    code, log = run([sys.executable, "-m", "amodal3d_ros.cli", "demo", "--bag", str(bag), "--out", str(out),
                     "--timeout", "120"], tmp_path, timeout=200)
    assert code == 0, log[-4000:]
    assert "demo: done" in log
    assert f"playing {bag}: 5 topics" in log, log[-4000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["frame"] == "world" and len(doc["objects"]) == 1, doc
    mesh = trimesh.load(out / doc["objects"][0]["mesh"], force="mesh")
    truth = camera_scene.gt_meshes[camera_scene.scene.targets[0].id]  # in the world frame
    err = float(np.linalg.norm(mesh.centroid - truth.centroid))
    assert err < 0.02, f"mesh centroid {err * 100:.1f} cm from the ground truth\n{log[-4000:]}"
    assert (out / "report.png").stat().st_size > 10_000


def write_chatter_bag(bag_dir: Path) -> Path:
    """A valid MCAP bag with a few std_msgs/String on /chatter only; returns its .mcap file."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        for i in range(20):
            msg = ts.types["std_msgs/msg/String"](data=f"hello {i} " * 20)
            writer.write(conn, T0_NS + i * 10**8, ts.serialize_cdr(msg, conn.msgtype))
    return next(bag_dir.glob("*.mcap"))


def bad_bags(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (bag path, text the error must contain)."""
    corrupt_mcap = tmp_path / "corrupt.mcap"
    corrupt_mcap.write_bytes(b"\x89MCAP0\r\n" + os.urandom(2000))
    garbage_mcap = tmp_path / "garbage.mcap"
    garbage_mcap.write_bytes(b"this is not a bag\n" * 50)
    corrupt_db3 = tmp_path / "corrupt.db3"
    corrupt_db3.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    truncated = tmp_path / "truncated.mcap"  # a recording that was cut off: no footer
    data = write_chatter_bag(tmp_path / "chatter").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    other = tmp_path / "other.txt"
    other.write_text("not a bag\n")
    return {
        "missing": (tmp_path / "nope.mcap", "nope.mcap"),
        "missing_dir": (tmp_path / "nope_dir", "nope_dir"),
        "corrupt_mcap": (corrupt_mcap, "corrupt.mcap"),
        "garbage_mcap": (garbage_mcap, "garbage.mcap"),
        "corrupt_db3": (corrupt_db3, "corrupt.db3"),
        "truncated_mcap": (truncated, "truncated.mcap"),
        "not_a_bag": (other, "other.txt"),
    }


def test_player_rejects_bad_bags(tmp_path):
    """Missing, corrupt or unrecognised bag files: one clear line on stderr, exit code 1, no traceback."""
    cases = bad_bags(tmp_path)
    cmd = [sys.executable, "-m", "amodal3d_ros.ros.tools.player", "--ros-args", "-p", "wait_timeout:=2.0"]
    procs = {}
    env = ros_env("bag")
    for name, (bag, _) in cases.items():  # all at once: each pays the rclpy start-up once, in parallel
        procs[name] = subprocess.Popen(cmd + ["-p", f"bag:={bag}"], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    failures = []
    try:
        for name, proc in procs.items():
            log, _ = proc.communicate(timeout=60)
            needle = cases[name][1]
            errors = [line for line in log.splitlines() if line.startswith("[player] error:")]
            if proc.returncode != 1 or "Traceback" in log or len(errors) != 1 or needle not in errors[0]:
                failures.append(f"{name}: exit code {proc.returncode}, output:\n{log[-2000:]}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not failures, "\n".join(failures)


def test_player_rejects_a_bag_without_camera_topics(tmp_path):
    bag = write_chatter_bag(tmp_path / "bag").parent
    code, log = run([sys.executable, "-m", "amodal3d_ros.ros.tools.player", "--ros-args", "-p", f"bag:={bag}"],
                    tmp_path, timeout=60)
    assert code == 1 and "Traceback" not in log, log
    assert "[player] error: ValueError" in log and "no topic ending in rgb/image" in log, log


def test_demo_refuses_missing_inputs_at_once(tmp_path):
    import subprocess
    import sys

    for flag in ("--bag", "--scene"):
        proc = subprocess.run([sys.executable, "-m", "amodal3d_ros.cli", "demo", flag, str(tmp_path / "nothing"),
                               "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr
