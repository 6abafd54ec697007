"""Camera input: subscriptions, their QoS, timestamp synchronisation, then decoding into core Frames.

Messages are queued as they arrive, undecoded; only a set that the synchroniser keeps (colour image,
camera info, depth, pose with matching stamps) is decoded and checked, so frames that sync drops
cost nothing but their queue slot. Intrinsics are cached per camera frame id: an unchanged
calibration is checked once. Bad input is reported (kind, message) and the frame skipped.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Optional

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo, Image

from amodal3d_ros.config import ConfigError
from amodal3d_ros.ros import conversions as conv
from amodal3d_ros.ros import qos
from amodal3d_ros.ros.diagnostics import InputStats, RateMeter
from amodal3d_ros.ros.settings import NodeSettings
from amodal3d_ros.ros.sync import ApproximateTimeSync
from amodal3d_ros.scene import Frame, SceneFormatError

try:  # TF where the full ROS 2 stack is installed; the PyPI stack has no tf2_ros.
    import tf2_ros  # type: ignore
    HAVE_TF2 = True
except ImportError:  # pragma: no cover - depends on the install
    tf2_ros = None
    HAVE_TF2 = False

# stream -> (topic, message type); the colour image is the synchroniser's pivot
STREAMS = {"rgb": ("rgb/image", Image), "camera_info": ("rgb/camera_info", CameraInfo),
           "depth": ("depth/image", Image), "pose": ("camera_pose", PoseStamped)}
MISSING_INPUT_CHECK = 1.0  # s between checks for a stream that never delivered
IMAGES_RECENT = 2.0  # s: images count as arriving when the newest is this recent

FrameCallback = Callable[[Frame, str], None]  # (frame, camera frame id)
ProblemCallback = Callable[[str, str], None]  # (kind, message)


class BadInput(Exception):
    """A message that cannot make a frame; ``kind`` names the counter in /diagnostics."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def resolve_pose_mode(pose_source: str) -> str:
    if pose_source == "auto":
        return "tf" if HAVE_TF2 else "topic"
    if pose_source == "tf" and not HAVE_TF2:
        raise ConfigError("pose_source 'tf' needs tf2_ros, which is not installed here; "
                          "use pose_source 'topic' (PoseStamped on camera_pose) or 'none'")
    return pose_source


class CameraInfoCache:
    """Intrinsics per camera frame id: a calibration is checked once, and again only when it changes."""

    def __init__(self):
        self._by_frame: dict[str, tuple[tuple, np.ndarray]] = {}

    def intrinsics(self, msg: CameraInfo) -> np.ndarray:
        raw = tuple(msg.k)
        cached = self._by_frame.get(msg.header.frame_id)
        if cached is None or cached[0] != raw:
            try:
                cached = (raw, conv.camera_info_to_K(msg))
            except conv.ConversionError as exc:
                raise BadInput("camera_info", f"rgb/camera_info: {exc}") from None
            self._by_frame[msg.header.frame_id] = cached
        return cached[1].copy()  # each frame its own array: the pipeline may keep it


class FrameAssembler:
    """Raw camera messages in, decoded and checked Frames out (``on_frame``), through the synchroniser.

    ROS-free apart from message types, so that it can be tested without a node. ``lookup_pose``
    gives T_world_camera for (camera frame id, stamp message) in TF mode, raising BadInput.
    """

    def __init__(self, settings: NodeSettings, pose_mode: str, on_frame: FrameCallback, report_bad: ProblemCallback,
                 rates: Optional[dict[str, RateMeter]] = None, lookup_pose=None, now=time.monotonic):
        streams = ["rgb", "camera_info"] + (["depth"] if settings.use_depth else []) + \
            (["pose"] if pose_mode == "topic" else [])
        self.sync = ApproximateTimeSync(streams, self._on_synced, tolerance=settings.sync_tolerance,
                                        queue_size=settings.sync_queue_size)
        self.settings = settings
        self.pose_mode = pose_mode
        self.rates = rates if rates is not None else new_rate_meters()
        self.frame_latency = float("nan")  # s, synchronised set -> keyframe decision, of the last good frame
        self.last_image_time: Optional[float] = None
        self._on_frame = on_frame
        self._report_bad = report_bad
        self._lookup_pose = lookup_pose
        self._now = now
        self._intrinsics = CameraInfoCache()

    def reconfigure(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.sync.reconfigure(settings.sync_tolerance, settings.sync_queue_size)

    def add(self, stream: str, msg: Any) -> None:
        """One message of ``stream`` as it arrived; frames complete with it are decoded and handed on."""
        now = self._now()
        self.rates[stream].tick(now)
        if stream == "rgb":
            self.last_image_time = now
        before, _ = self.sync.drops()
        self.sync.add(stream, conv.stamp_to_sec(msg.header.stamp), msg)
        dropped, reasons = self.sync.drops()
        if dropped > before:
            reason = max(reasons, key=reasons.get)
            self._report_bad("dropped", f"frame dropped ({reason}); {dropped} dropped so far")

    def missing_streams(self) -> list[str]:
        """Streams that never delivered while images do arrive (nothing can be synchronised)."""
        if self.last_image_time is None or self._now() - self.last_image_time > IMAGES_RECENT:
            return []
        missing = self.sync.waiting_for()
        return [] if "rgb" in missing else missing

    def stats(self) -> InputStats:
        now = self._now()
        dropped, reasons = self.sync.drops()
        return InputStats(rates={k: m.rate(now) for k, m in self.rates.items()},
                          totals={k: m.total for k, m in self.rates.items()}, dropped=dropped,
                          dropped_reasons=reasons, frame_latency=self.frame_latency, pose_mode=self.pose_mode)

    def _on_synced(self, group: dict[str, Any]) -> None:
        t_start = self._now()
        self.rates["synced"].tick(t_start)
        try:
            frame, frame_id = self.decode(group)
        except BadInput as bad:
            self._report_bad(bad.kind, str(bad))
            return
        self._on_frame(frame, frame_id)
        self.frame_latency = self._now() - t_start

    def decode(self, group: dict[str, Any]) -> tuple[Frame, str]:
        """A synchronised set of messages -> (Frame, camera frame id); raises BadInput."""
        rgb_msg, info_msg = group["rgb"], group["camera_info"]
        rgb = _decode_colour(rgb_msg)
        K = self._intrinsics.intrinsics(info_msg)
        h, w = rgb.shape[:2]
        if info_msg.width and info_msg.height and (info_msg.width, info_msg.height) != (w, h):
            raise BadInput("size_mismatch", f"rgb/image is {w}x{h} but rgb/camera_info says "
                                            f"{info_msg.width}x{info_msg.height}; frame skipped")
        depth = None
        if group.get("depth") is not None:
            depth = _decode_depth(group["depth"], self.settings.min_valid_depth)
            if depth.shape != (h, w):
                raise BadInput("size_mismatch", f"depth/image is {depth.shape[1]}x{depth.shape[0]} but rgb/image "
                                                f"is {w}x{h} (register depth to colour); frame skipped")
        frame_id = rgb_msg.header.frame_id or info_msg.header.frame_id or "camera_optical_frame"
        T = None
        if self.pose_mode == "topic":
            T = _decode_pose(group["pose"], self.settings.world_frame)
        elif self.pose_mode == "tf":
            T = self._lookup_pose(frame_id, rgb_msg.header.stamp)
        try:
            frame = Frame(rgb=rgb, K=K, depth=depth, T_world_camera=T, stamp=conv.stamp_to_sec(rgb_msg.header.stamp))
        except SceneFormatError as exc:
            raise BadInput("frame", f"frame rejected: {exc}") from None
        return frame, frame_id


def new_rate_meters() -> dict[str, RateMeter]:
    return {name: RateMeter() for name in ("rgb", "camera_info", "depth", "pose", "synced")}


def _decode_colour(msg: Image) -> np.ndarray:
    try:
        return conv.image_to_rgb(msg)
    except conv.ConversionError as exc:
        raise BadInput("rgb_encoding" if "encoding" in str(exc) else "rgb_data", f"rgb/image: {exc}") from None


def _decode_depth(msg: Image, min_valid: float) -> np.ndarray:
    try:
        depth = conv.image_to_depth(msg)
    except conv.ConversionError as exc:
        raise BadInput("depth_encoding" if "encoding" in str(exc) else "depth_data", f"depth/image: {exc}") from None
    valid = float(np.count_nonzero(depth)) / depth.size
    if valid < min_valid:
        raise BadInput("depth_invalid", f"depth/image: only {valid:.1%} valid pixels (NaN, inf or 0 elsewhere; "
                                        f"need >= {min_valid:.1%}); frame skipped")
    return depth


def _decode_pose(msg: PoseStamped, world_frame: str) -> np.ndarray:
    if msg.header.frame_id and msg.header.frame_id != world_frame:
        raise BadInput("pose_frame", f"camera_pose: frame_id '{msg.header.frame_id}' is not the world frame "
                                     f"'{world_frame}' (set the world_frame parameter)")
    try:
        return conv.pose_to_matrix(msg.pose)
    except conv.ConversionError as exc:
        raise BadInput("pose", f"camera_pose: {exc}") from None


class CameraInputs:
    """The node's camera subscriptions (while active) feeding a FrameAssembler; TF where it is the pose source."""

    def __init__(self, node, settings: NodeSettings, on_frame: FrameCallback, report_bad: ProblemCallback):
        self._node = node
        self._settings = settings
        self._on_frame = on_frame
        self._report_bad = report_bad
        self._rates = new_rate_meters()  # kept across activations, like the counters
        self._assembler: Optional[FrameAssembler] = None
        self._subscriptions: list = []
        self._timer = None
        self._tf_buffer = None
        self._tf_listener = None
        self.pose_mode = "none"

    def open(self) -> None:
        """Subscribe (activate). Raises ConfigError when the pose source cannot work here."""
        s = self._settings
        self.pose_mode = resolve_pose_mode(s.pose_source)
        if self.pose_mode == "tf" and self._tf_buffer is None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self._node, spin_thread=True)
        assembler = FrameAssembler(s, self.pose_mode, self._on_frame, self._report_bad, self._rates,
                                   lookup_pose=self._lookup_tf)
        camera_qos = qos.camera_qos(s.image_qos_depth, s.reliable_qos)
        for stream in assembler.sync.streams:
            topic, msg_type = STREAMS[stream]
            profile = qos.pose_qos(s.pose_qos_depth, s.reliable_qos) if stream == "pose" else camera_qos
            # One group per stream: streams are received in parallel; the synchroniser locks.
            self._subscriptions.append(self._node.create_subscription(
                msg_type, topic, functools.partial(self._add, stream), profile,
                callback_group=MutuallyExclusiveCallbackGroup()))
        self._timer = self._node.create_timer(MISSING_INPUT_CHECK, self._check_missing_inputs,
                                              callback_group=MutuallyExclusiveCallbackGroup())
        self._assembler = assembler

    def close(self) -> None:
        """Unsubscribe and drop queued messages (deactivate)."""
        self._assembler = None
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions = []
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None

    def clear(self) -> None:
        """Drop the messages waiting for their partners."""
        assembler = self._assembler
        if assembler is not None:
            assembler.sync.clear()

    def reconfigure(self, settings: NodeSettings) -> None:
        """Settings changed at run time (stream choice and QoS wait for the next activation)."""
        self._settings = settings
        assembler = self._assembler
        if assembler is not None:
            assembler.reconfigure(settings)

    def stats(self) -> InputStats:
        assembler = self._assembler
        if assembler is not None:
            return assembler.stats()
        now = time.monotonic()
        return InputStats(rates={k: m.rate(now) for k, m in self._rates.items()},
                          totals={k: m.total for k, m in self._rates.items()}, dropped=None,
                          pose_mode=self.pose_mode)

    def _add(self, stream: str, msg: Any) -> None:
        assembler = self._assembler
        if assembler is not None:
            assembler.add(stream, msg)

    def _check_missing_inputs(self) -> None:
        assembler = self._assembler
        missing = assembler.missing_streams() if assembler is not None else []
        if missing:
            topics = ", ".join(self._node.resolve_topic_name(STREAMS[m][0]) for m in missing)
            self._report_bad("missing_input", f"images arrive but nothing on {topics} yet: frames cannot be used")

    def _lookup_tf(self, camera_frame: str, stamp) -> np.ndarray:
        s = self._settings
        try:
            t = self._tf_buffer.lookup_transform(s.world_frame, camera_frame, rclpy.time.Time.from_msg(stamp),
                                                 timeout=rclpy.duration.Duration(seconds=s.pose_tolerance))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several exception types
            raise BadInput("tf", f"no TF {s.world_frame} <- {camera_frame} at the image stamp: {exc}") from None
        return conv.transform_to_matrix(t.transform)
