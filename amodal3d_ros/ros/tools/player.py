"""``amodal3d_player``: publish a scene folder (or a rosbag) as a live camera for the amodal3d node.

Topics (relative, remappable): ``rgb/image`` (rgb8), ``rgb/camera_info``, ``depth/image`` (16UC1
mm by default), ``camera_pose`` (PoseStamped of the camera optical frame in the world frame, posed
scenes only), ``/tf`` where tf2_ros is installed, and ``prompt`` (PointStamped pixel prompts for
the scene's targets, if ``publish_targets``). Camera streams use reliable QoS (keep last 5;
see qos.py). The player waits until the node's subscriptions are matched before publishing, then
publishes every frame ``repeat`` times at ``rate`` Hz (fresh stamps, like a camera that stands
still a moment at each view), then optionally calls ``reconstruct_service`` and exits.

Parameters: scene ('' = the example scene shipped in the package), bag ('' = none; MCAP or
sqlite3, played instead of the scene: messages on topics ending in rgb/image, rgb/camera_info,
depth/image, camera_pose, prompt are republished on this node's topics with their own stamps),
rate (2.0), repeat (2), depth_encoding (16UC1 | 32FC1), camera_frame
(camera_color_optical_frame), publish_targets (true), reconstruct_service ('' = none),
wait_timeout (30 s), reconstruct_timeout (600 s), exit_when_done (true).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from amodal3d_ros.ros import conversions as conv
from amodal3d_ros.ros import qos
from amodal3d_ros.ros.process import STOP_SIGNALS, RosProcess
from amodal3d_ros.scene import read_scene

try:
    import tf2_ros  # type: ignore
    from geometry_msgs.msg import TransformStamped
except ImportError:  # pragma: no cover - depends on the install
    tf2_ros = None

EXAMPLE_SCENE = Path(__file__).resolve().parents[1] / "example_scene"  # package data beside the node
BAG_STREAMS = {"rgb/image": Image, "rgb/camera_info": CameraInfo, "depth/image": Image,
               "camera_pose": PoseStamped, "prompt": PointStamped}


class Player(Node):
    def __init__(self, **kwargs):
        super().__init__("player", **kwargs)
        p = self.declare_parameter
        self.scene_path = p("scene", "").value
        self.bag_path = p("bag", "").value
        self.rate = float(p("rate", 2.0).value)
        self.repeat = int(p("repeat", 2).value)
        self.depth_encoding = p("depth_encoding", "16UC1").value
        self.camera_frame = p("camera_frame", "camera_color_optical_frame").value
        self.publish_targets = bool(p("publish_targets", True).value)
        self.reconstruct_service = p("reconstruct_service", "").value
        self.wait_timeout = float(p("wait_timeout", 30.0).value)
        self.reconstruct_timeout = float(p("reconstruct_timeout", 600.0).value)
        self.exit_when_done = bool(p("exit_when_done", True).value)
        self.images_published = 0  # colour frames sent, to know when the node has them all
        if self.rate <= 0 or self.repeat < 1 or self.depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError("rate must be > 0, repeat >= 1, depth_encoding 16UC1 or 32FC1")
        # Reliable writers: they match best-effort and reliable readers alike, and deliver every
        # frame to a reliable reader (the node with qos.reliable, as in demo.yaml).
        cam = qos.camera_qos(5, reliable=True)
        self.pubs = {
            "rgb/image": self.create_publisher(Image, "rgb/image", cam),
            "rgb/camera_info": self.create_publisher(CameraInfo, "rgb/camera_info", cam),
            "depth/image": self.create_publisher(Image, "depth/image", cam),
            "camera_pose": self.create_publisher(PoseStamped, "camera_pose", qos.pose_qos(reliable=True)),
            "prompt": self.create_publisher(PointStamped, "prompt", qos.prompt_qos()),
        }
        self.tf = tf2_ros.TransformBroadcaster(self) if tf2_ros is not None else None
        # Latched, so that a recorder waiting for results hears that none will come and stops now
        # instead of at its timeout.
        self.failure_pub = self.create_publisher(String, "player_failure", qos.latched_qos())

    def report_failure(self, reason: str) -> None:
        self.failure_pub.publish(String(data=reason))
        end = time.monotonic() + 1.0  # a moment for the message to leave before the process ends
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)

    # ------------------------------------------------------------------ helpers
    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=min(0.05, max(end - time.monotonic(), 0.0)))

    def wait_for_subscribers(self, names: list[str]) -> bool:
        t0 = time.monotonic()
        while rclpy.ok() and time.monotonic() - t0 < self.wait_timeout:
            missing = [n for n in names if self.pubs[n].get_subscription_count() == 0]
            if not missing:
                self.get_logger().info(f"subscribers matched after {time.monotonic() - t0:.1f} s")
                self.sleep(0.5)  # let the other side finish matching too
                return True
            self.sleep(0.1)
        self.get_logger().warning(f"no subscriber on {', '.join(self.pubs[n].topic_name for n in missing)} after "
                                  f"{self.wait_timeout:.0f} s; publishing anyway")
        return False

    # ------------------------------------------------------------------ scene folder
    def play_scene(self, folder: Path) -> None:
        scene = read_scene(folder)
        posed = scene.posed
        world = scene.world_frame
        names = ["rgb/image", "rgb/camera_info"] + (["depth/image"] if scene.has_depth else []) + \
            (["camera_pose"] if posed else [])
        self.get_logger().info(f"playing {folder} ({len(scene.frames)} frames, {'posed' if posed else 'unposed'}, "
                               f"{'RGB-D' if scene.has_depth else 'RGB'}) at {self.rate} Hz x{self.repeat}")
        self.wait_for_subscribers(names)
        for i, frame in enumerate(scene.frames):
            for r in range(self.repeat):
                stamp = self.get_clock().now().to_msg()
                header = conv.make_header(self.camera_frame, stamp)
                if posed:
                    pose = PoseStamped(header=conv.make_header(world, stamp),
                                       pose=conv.matrix_to_pose(frame.T_world_camera))
                    self.pubs["camera_pose"].publish(pose)
                    if self.tf is not None:
                        t = TransformStamped(header=conv.make_header(world, stamp), child_frame_id=self.camera_frame)
                        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = \
                            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z
                        t.transform.rotation = pose.pose.orientation
                        self.tf.sendTransform(t)
                self.pubs["rgb/camera_info"].publish(conv.K_to_camera_info(frame.K, frame.width, frame.height, header))
                if frame.depth is not None:
                    self.pubs["depth/image"].publish(conv.depth_to_image(frame.depth, self.depth_encoding, header))
                self.pubs["rgb/image"].publish(conv.numpy_to_image(frame.rgb, "rgb8", header))
                self.images_published += 1
                if r == 0 and self.publish_targets:
                    for t in scene.targets:
                        if t.frame == i:
                            self.pubs["prompt"].publish(PointStamped(
                                header=conv.make_header("", stamp),
                                point=Point(x=float(t.pixel[0]), y=float(t.pixel[1]), z=0.0)))
                            self.get_logger().info(f"prompt for target '{t.id}' at pixel {t.pixel} of frame {i}")
                self.sleep(1.0 / self.rate)
            self.get_logger().info(f"frame {i + 1}/{len(scene.frames)} published")

    # ------------------------------------------------------------------ rosbag
    def play_bag(self, path: Path) -> None:
        from rosbags.rosbag2 import Reader, ReaderError

        try:
            self._play_bag(path, Reader(path))
        except ReaderError as exc:  # rosbags' own message names no file ("File magic is invalid.")
            raise ValueError(f"{path}: not a readable ROS 2 bag (MCAP .mcap, sqlite3 .db3 or a rosbag2 "
                             f"folder): {exc}") from None

    def _play_bag(self, path: Path, reader) -> None:
        from rclpy.serialization import deserialize_message

        with reader:
            conns = {}
            for c in reader.connections:
                for name in BAG_STREAMS:
                    if c.topic == name or c.topic.endswith("/" + name):
                        conns[c.id] = name
            if not conns:
                raise ValueError(f"{path}: no topic ending in {', '.join(BAG_STREAMS)}")
            self.wait_for_subscribers(sorted({n for n in conns.values() if n != "prompt"}))
            self.get_logger().info(f"playing {path}: {len(conns)} topics")
            t_bag0 = t_wall0 = None
            for conn, t_ns, raw in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
                if not rclpy.ok():
                    return
                if t_bag0 is None:
                    t_bag0, t_wall0 = t_ns, time.monotonic()
                delay = (t_ns - t_bag0) * 1e-9 - (time.monotonic() - t_wall0)
                if delay > 0:
                    self.sleep(delay)
                name = conns[conn.id]
                self.pubs[name].publish(deserialize_message(raw, BAG_STREAMS[name]))
                self.images_published += name == "rgb/image"

    # ------------------------------------------------------------------ service
    def wait_until_node_has_frames(self, expected: int, settle: float = 1.0) -> None:
        """Wait (bounded) until the node's /diagnostics count every published frame as handled.

        A busy node can lag seconds behind the player; asking for the reconstruction before it has
        the frames would reconstruct from fewer views, or from none.
        """
        handled = [0]

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.endswith(": inputs"):
                    values = {kv.key: kv.value for kv in status.values}
                    try:
                        handled[0] = int(values.get("synced received", 0)) + int(values.get("dropped frames", 0))
                    except ValueError:
                        pass

        sub = self.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        deadline = time.monotonic() + self.wait_timeout
        while rclpy.ok() and handled[0] < expected and time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.1)
        if handled[0] < expected:
            self.get_logger().warning(f"the node reports {handled[0]} of {expected} frames after "
                                      f"{self.wait_timeout:.0f} s; reconstructing anyway")
        self.destroy_subscription(sub)
        self.sleep(settle)  # the last frame's keyframe decision follows its synchronisation

    def call_reconstruct(self) -> bool:
        client = self.create_client(Trigger, self.reconstruct_service)
        if not client.wait_for_service(timeout_sec=self.wait_timeout):
            self.get_logger().error(f"service {client.srv_name} not available")
            return False
        self.wait_until_node_has_frames(self.images_published)
        self.get_logger().info(f"calling {client.srv_name}")
        t0 = time.monotonic()
        future = client.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(self, future, timeout_sec=self.reconstruct_timeout)
        if not future.done() or future.result() is None:
            self.get_logger().error(f"{client.srv_name}: no answer after {self.reconstruct_timeout:.0f} s")
            return False
        res = future.result()
        log = self.get_logger().info if res.success else self.get_logger().error
        log(f"{client.srv_name} -> success={res.success} after {time.monotonic() - t0:.2f} s: {res.message}")
        return bool(res.success)


def main(argv: Optional[list[str]] = None) -> int:
    code = 0
    node = None
    with RosProcess(argv) as proc:
        try:
            node = proc.own(Player())
            if node.bag_path:
                node.play_bag(Path(node.bag_path))
            else:
                node.play_scene(Path(node.scene_path) if node.scene_path else EXAMPLE_SCENE)
            if node.reconstruct_service:
                code = 0 if node.call_reconstruct() else 1
                if code:
                    node.report_failure("the reconstruction request failed (see the player's log)")
            if not node.exit_when_done:
                rclpy.spin(node)
        except STOP_SIGNALS:
            raise
        except Exception as exc:  # noqa: BLE001 - a clear message, not a traceback, for bad input
            print(f"[player] error: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
            if node is not None:
                node.report_failure(f"{type(exc).__name__}: {exc}")
    return code

if __name__ == "__main__":
    sys.exit(main())
