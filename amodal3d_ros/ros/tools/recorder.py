"""``amodal3d_recorder``: save what the amodal3d node publishes, for the demo and for tests.

Subscribes to ``objects`` (amodal3d_ros/ReconstructedObjectArray; remap it to
``/amodal3d/objects``) and ``debug_image`` (remap to ``/amodal3d/debug/segmentation``), both with
the node's latched QoS. For each result it writes into ``out``: ``report.png`` (the input image
with masks, and the completed meshes rendered from three viewpoints), then ``result.json`` and
``objects/<id>.ply`` + ``objects/<id>_cloud.ply`` (the scene-format output, through the core's
``Reconstruction.write``: every file atomically, result.json last). It exits with code 0 after
``count`` results, or 1 after ``timeout`` seconds without them or as soon as the player reports on
``player_failure`` that it gave up.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from amodal3d_ros import safe_io
from amodal3d_ros.geometry import pixel_rays
from amodal3d_ros.result import ReconstructedObject, Reconstruction
from amodal3d_ros.ros import conversions as conv
from amodal3d_ros.ros import qos
from amodal3d_ros.ros.process import RosProcess


def _look_at(eye, target, up) -> np.ndarray:
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def render_views(objects: Sequence[ReconstructedObject], up: Sequence[float] = (0, 0, 1), size=(320, 240),
                 views: int = 3) -> list[np.ndarray]:
    """The completed meshes, coloured per object, seen from ``views`` viewpoints around them."""
    import trimesh

    meshes = [trimesh.Trimesh(o.vertices, o.faces, process=False) for o in objects if len(o.faces)]
    w, h = size
    if not meshes:
        return [np.full((h, w, 3), 40, np.uint8) for _ in range(views)]
    colors = [conv.object_color(i).astype(float) / 255.0 for i, o in enumerate(objects) if len(o.faces)]
    pts = np.concatenate([m.vertices for m in meshes])
    center = (pts.min(0) + pts.max(0)) / 2
    radius = max(float(np.linalg.norm(pts.max(0) - pts.min(0))) / 2, 0.05)
    K = np.array([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1.0]])
    dist = radius / np.tan(np.arctan(w / 2 / K[0, 0])) * 1.3
    up = np.asarray(up, float) / np.linalg.norm(up)
    # two horizontal axes orthogonal to up
    a = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    poses = []
    for k in range(views):
        az = 2 * np.pi * k / views + 0.4
        d = np.cos(np.radians(35)) * (np.cos(az) * a + np.sin(az) * b) + np.sin(np.radians(35)) * up
        poses.append(_look_at(center + dist * d, center, up))
    try:
        from amodal3d_ros.synth.render import MeshRenderer

        renderer = MeshRenderer(meshes, colors)
        return [renderer.render(K, T, w, h)[0] for T in poses]
    except ImportError:
        return [_raycast(meshes, colors, K, T, w, h) for T in poses]


def _raycast(meshes, colors, K, T, w, h) -> np.ndarray:
    """Fallback renderer: Open3D RaycastingScene, head-light Lambertian shading."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    for m in meshes:
        scene.add_triangles(o3d.core.Tensor(np.asarray(m.vertices, np.float32)),
                            o3d.core.Tensor(np.asarray(m.faces, np.uint32)))
    dirs = pixel_rays(K, h, w) @ T[:3, :3].T  # world directions of the pixel rays
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    rays = np.concatenate([np.broadcast_to(T[:3, 3], dirs.shape), dirs], -1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    gid = hit["geometry_ids"].numpy()
    normals = hit["primitive_normals"].numpy()
    shade = np.abs((normals * dirs).sum(-1)) * 0.8 + 0.2
    img = np.full((h, w, 3), 40.0)
    for i, c in enumerate(colors):
        sel = gid == i
        img[sel] = shade[sel, None] * np.asarray(c) * 255
    return img.astype(np.uint8)


def make_report(objects: Sequence[ReconstructedObject], debug_rgb: Optional[np.ndarray], frame_id: str,
                title: str = "") -> np.ndarray:
    """One RGB image: input with masks (left), three renders of the completed meshes (right)."""
    left = debug_rgb if debug_rgb is not None else np.full((480, 640, 3), 30, np.uint8)
    left = cv2.resize(left, (640, 480)) if left.shape[:2] != (480, 640) else left.copy()
    if debug_rgb is None:
        cv2.putText(left, "no debug image received", (150, 240), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (200, 200, 200), 2)
    up = (0, -1, 0) if "optical" in frame_id else (0, 0, 1)
    views = render_views(objects, up=up, size=(320, 240), views=3)
    grid = np.full((480, 640, 3), 40, np.uint8)
    for k, img in enumerate(views[:3]):
        y, x = divmod(k, 2)
        grid[y * 240:(y + 1) * 240, x * 320:(x + 1) * 320] = img
    legend = grid[240:480, 320:640]
    for i, o in enumerate(objects[:9]):
        color = tuple(int(c) for c in conv.object_color(i))
        cv2.putText(legend, f"{o.id}: vis {o.visible_fraction:.0%} conf {o.confidence:.2f} {o.completion_method}",
                    (8, 24 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    report = np.concatenate([left, grid], axis=1)
    header = np.full((30, report.shape[1], 3), 20, np.uint8)
    cv2.putText(header, title or f"amodal3d: {len(objects)} objects (frame {frame_id})", (8, 21),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, report], axis=0)


class Recorder(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        from amodal3d_ros.msg import ReconstructedObjectArray

        self.out = Path(self.declare_parameter("out", "recorder_out").value).expanduser()
        self.count = int(self.declare_parameter("count", 1).value)
        self.timeout = float(self.declare_parameter("timeout", 300.0).value)
        self.debug_wait = float(self.declare_parameter("debug_image_wait", 3.0).value)
        self.received = 0
        self.debug_rgb: Optional[np.ndarray] = None
        self.pending = None  # (msg, arrival time) waiting briefly for its debug image
        self.create_subscription(ReconstructedObjectArray, "objects", self._on_objects, qos.latched_qos())
        self.create_subscription(Image, "debug_image", self._on_debug, qos.latched_qos())
        self.player_failure: Optional[str] = None  # the player gave up: no result will come
        self.create_subscription(String, "player_failure", self._on_player_failure, qos.latched_qos())
        self.get_logger().info(f"recording {self.count} result(s) from "
                               f"{self.resolve_topic_name('objects')} into {self.out}")

    def _on_debug(self, msg: Image) -> None:
        try:
            self.debug_rgb = conv.image_to_rgb(msg)
        except conv.ConversionError as exc:
            self.get_logger().warning(f"debug_image: {exc}")

    def _on_player_failure(self, msg: String) -> None:
        self.player_failure = msg.data

    def _on_objects(self, msg) -> None:
        self.pending = (msg, time.monotonic())

    def poll(self) -> None:
        """Save a pending result once its debug image is there (or after debug_image_wait)."""
        if self.pending is None:
            return
        msg, t = self.pending
        if self.debug_rgb is None and time.monotonic() - t < self.debug_wait:
            return
        self.pending = None
        self.save(msg)

    def save(self, msg) -> None:
        objects = [conv.msg_to_object(m) for m in msg.objects]
        frame_id = msg.header.frame_id
        rec = Reconstruction(objects=objects, frame_id=frame_id, camera_poses=[], poses_estimated=False,
                             seconds_total=float(sum(o.seconds for o in objects)))
        report = make_report(objects, self.debug_rgb, frame_id)
        _, png = cv2.imencode(".png", cv2.cvtColor(report, cv2.COLOR_RGB2BGR))
        try:
            # Every file atomically, result.json last (Reconstruction.write): a killed recorder leaves
            # the previous complete result or the new one.
            safe_io.atomic_write(safe_io.writable_folder(self.out, "out") / "report.png", png.tobytes())
            rec.write(self.out)
        except (OSError, ValueError) as exc:  # an unsafe object id, a full disk: say so, keep recording
            self.get_logger().error(f"cannot save the result into {self.out}: {exc}")
            return
        self.received += 1
        self.get_logger().info(f"saved {len(objects)} objects [{', '.join(o.id for o in objects)}] "
                               f"(frame '{frame_id}') and report.png to {self.out}")


def main(argv: Optional[list[str]] = None) -> int:
    node = None
    with RosProcess(argv) as proc:
        node = proc.own(Recorder())
        t0 = time.monotonic()
        while rclpy.ok() and node.received < node.count:
            rclpy.spin_once(node, timeout_sec=0.1)
            node.poll()
            if time.monotonic() - t0 > node.timeout:
                node.get_logger().error(f"timeout: {node.received}/{node.count} results after {node.timeout:.0f} s")
                break
            if node.player_failure is not None and node.pending is None:
                node.get_logger().error(f"the player failed ({node.player_failure}): "
                                        f"{node.received}/{node.count} results, giving up")
                break
    if node is not None and node.received >= node.count:
        return 0
    return 130 if proc.interrupted else 1

if __name__ == "__main__":
    sys.exit(main())
