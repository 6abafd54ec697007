"""Camera input: subscriptions, their QoS, timestamp synchronisation, then decoding into core Frames.

Messages are queued as they arrive, undecoded; only a set that the synchroniser keeps (colour image,
depth, pose with matching stamps) is decoded and checked, so frames that sync drops cost nothing but
their queue slot. camera_info is not matched frame by frame: the latest calibration of each camera
frame id is kept (checked once per change) and a frame takes its camera's, so a late or lost
camera_info message costs no frame; frames that come before their camera's first camera_info wait
for it. Every stream is received on a callback group of its own, so a slow one holds up no other.
Bad input is reported (kind, message) and the frame skipped; a stream that never delivers or stops
while images arrive is reported by its resolved topic name.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict, deque
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
MISSING_INPUT_CHECK = 1.0  # s between checks for a stream that never delivered or stopped
IMAGES_RECENT = 2.0  # s: images count as arriving when the newest is this recent
# s: a stream is missing only when images have arrived this long without it (its first message
# may come seconds after the first image: discovery, or a reliable repair of a lost one)
MISSING_GRACE = 5.0
STOPPED_AFTER = 5.0  # s without a message of a stream that delivered before, while images arrive

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
    """The latest calibration per camera frame id: checked once, and again only when it changes.

    A frame takes the calibration sent with its own stamp where that came (a driver that changes
    resolution says so frame by frame), else its camera frame id's latest, else the newest one on
    the topic (one topic describes one camera, whatever frame ids its driver writes)."""

    RECENT_STAMPS = 64  # calibrations kept by stamp: a few seconds of a 30 Hz camera

    def __init__(self):
        self._lock = threading.Lock()
        # frame id -> ((k, width, height) as sent, K or None, the problem with it or "")
        self._by_frame: dict[str, tuple[tuple, Optional[np.ndarray], str]] = {}
        self._newest: Optional[str] = None
        self._by_stamp: OrderedDict[tuple[str, float], tuple[tuple, Optional[np.ndarray], str]] = OrderedDict()

    def update(self, msg: CameraInfo) -> None:
        """Keep ``msg`` as its camera's calibration; BadInput when it is unusable (that camera's frames
        are then skipped until a good one comes)."""
        raw = (tuple(msg.k), int(msg.width), int(msg.height))
        frame_id = msg.header.frame_id
        with self._lock:
            cached = self._by_frame.get(frame_id)
            self._newest = frame_id
        if cached is None or cached[0] != raw:
            try:
                cached = (raw, conv.camera_info_to_K(msg), "")
            except conv.ConversionError as exc:
                cached = (raw, None, f"rgb/camera_info: {exc}")
            with self._lock:
                self._by_frame[frame_id] = cached
        with self._lock:
            self._by_stamp[(frame_id, conv.stamp_to_sec(msg.header.stamp))] = cached
            while len(self._by_stamp) > self.RECENT_STAMPS:
                self._by_stamp.popitem(last=False)
        if cached[2]:
            raise BadInput("camera_info", cached[2])

    @property
    def newest_frame_id(self) -> Optional[str]:
        """The frame id of the newest camera_info (None before the first)."""
        with self._lock:
            return self._newest

    @property
    def empty(self) -> bool:
        """True until the first camera_info (before it, no frame has a calibration to take)."""
        with self._lock:
            return self._newest is None

    def lookup(self, frame_id: str, stamp: Optional[float] = None) -> tuple[np.ndarray, int, int]:
        """(K, width, height) for a frame of ``frame_id`` taken at ``stamp``; K is the frame's own copy.
        Raises BadInput."""
        with self._lock:
            cached = self._by_stamp.get((frame_id, stamp)) or self._by_frame.get(frame_id) \
                or self._by_frame.get(self._newest)
        if cached is None:
            raise BadInput("camera_info", "no rgb/camera_info received yet")
        (_, width, height), K, problem = cached
        if K is None:
            raise BadInput("camera_info", problem)
        return K.copy(), width, height  # each frame its own array: the pipeline may keep it

    def intrinsics(self, msg: CameraInfo) -> np.ndarray:
        """``update(msg)``, then the intrinsics of its camera."""
        self.update(msg)
        return self.lookup(msg.header.frame_id)[0]


class FrameThread:
    """Decoding and keyframe decisions on a thread of their own, in order, so that no subscription callback
    waits for them (a burst of late partners completes many frames at once). Holds at most ``capacity``
    frames: ``submit`` drops the oldest beyond that and says so."""

    def __init__(self, process: Callable[[Any], None], capacity: int, on_error: Callable[[Exception], None]):
        self._process = process
        self._on_error = on_error
        self.capacity = capacity
        self._cond = threading.Condition()
        self._frames: deque = deque()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="amodal3d-frames", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue ``item``; False when the oldest waiting one was dropped for it."""
        with self._cond:
            self._frames.append(item)
            kept_all = len(self._frames) <= self.capacity
            if not kept_all:
                self._frames.popleft()
            self._cond.notify()
        return kept_all

    def pending(self) -> int:
        with self._cond:
            return len(self._frames)

    def clear(self) -> None:
        with self._cond:
            self._frames.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after the frame it is on; frames still waiting are dropped."""
        with self._cond:
            self._stopped = True
            self._frames.clear()
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._frames and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                item = self._frames.popleft()
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - a failing frame must not end the thread
                self._on_error(exc)


class FrameAssembler:
    """Raw camera messages in, decoded and checked Frames out (``on_frame``), through the synchroniser.

    ROS-free apart from message types, so that it can be tested without a node. ``lookup_pose``
    gives T_world_camera for (camera frame id, stamp message) in TF mode, raising BadInput. With
    ``threaded``, frames are decoded and handed on by a FrameThread (``close()`` ends it); else by
    the call that completed them.
    """

    def __init__(self, settings: NodeSettings, pose_mode: str, on_frame: FrameCallback, report_bad: ProblemCallback,
                 rates: Optional[dict[str, RateMeter]] = None, lookup_pose=None, now=time.monotonic,
                 threaded: bool = False):
        synced = ["rgb"] + (["depth"] if settings.use_depth else []) + (["pose"] if pose_mode == "topic" else [])
        self.sync = ApproximateTimeSync(synced, self._on_synced, tolerance=settings.sync_tolerance,
                                        queue_size=settings.sync_queue_size)
        self.streams = ["rgb", "camera_info"] + synced[1:]  # every stream subscribed to
        self.settings = settings
        self.pose_mode = pose_mode
        self.rates = rates if rates is not None else new_rate_meters()
        self.frame_latency = float("nan")  # s, synchronised set -> keyframe decision, of the last good frame
        self._on_frame = on_frame
        self._report_bad = report_bad
        self._lookup_pose = lookup_pose
        self._now = now
        self._intrinsics = CameraInfoCache()
        self._calibration_lock = threading.Lock()  # a frame waits for its camera_info or finds it, never both
        self._without_calibration: deque = deque()  # synchronised sets that came before any camera_info
        self._drops: dict[str, int] = {}  # frames dropped here (not by the synchroniser), by reason
        self._opened = now()
        self._first_arrival: dict[str, float] = {}
        self._last_arrival: dict[str, float] = {}
        self._frame_thread = FrameThread(self._process, settings.sync_queue_size, self._frame_failed) \
            if threaded else None

    @property
    def last_image_time(self) -> Optional[float]:
        return self._last_arrival.get("rgb")

    def reconfigure(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.sync.reconfigure(settings.sync_tolerance, settings.sync_queue_size)

    def add(self, stream: str, msg: Any) -> None:
        """One message of ``stream`` as it arrived; frames complete with it are decoded and handed on."""
        now = self._now()
        self.rates[stream].tick(now)
        self._first_arrival.setdefault(stream, now)
        self._last_arrival[stream] = now
        if stream == "camera_info":
            self._add_calibration(msg)
            return
        before, _ = self.sync.drops()
        self.sync.add(stream, conv.stamp_to_sec(msg.header.stamp), msg)
        dropped, reasons = self.sync.drops()
        if dropped > before:
            reason = max(reasons, key=reasons.get)
            self._report_bad("dropped", f"frame dropped ({reason}); {dropped} dropped so far")

    def clear(self) -> None:
        """Drop the messages waiting for their partners or their camera_info, and the frames not decoded yet."""
        self.sync.clear()
        with self._calibration_lock:
            self._without_calibration.clear()
        if self._frame_thread is not None:
            self._frame_thread.clear()

    def close(self) -> None:
        """End the frame thread (frames not decoded yet are dropped)."""
        if self._frame_thread is not None:
            self._frame_thread.stop()

    def missing_streams(self) -> list[tuple[str, Optional[float]]]:
        """(stream, seconds since its last message, None: never) for each stream that frames need and that
        never delivered or stopped, while images arrive (nothing can be synchronised then)."""
        now = self._now()
        first_image = self._first_arrival.get("rgb")
        if first_image is None or now - self._last_arrival["rgb"] > IMAGES_RECENT:
            return []
        out = []
        for stream in self.streams[1:]:
            last = self._last_arrival.get(stream)
            if last is None and now - max(first_image, self._opened) >= MISSING_GRACE:
                out.append((stream, None))
            elif last is not None and stream != "camera_info" and now - last > STOPPED_AFTER:
                out.append((stream, now - last))  # a camera_info kept serves on, however old
        return out

    def stats(self) -> InputStats:
        now = self._now()
        dropped, reasons = self.sync.drops()
        with self._calibration_lock:
            for reason, n in self._drops.items():
                reasons[reason] = reasons.get(reason, 0) + n
                dropped += n
            waiting = len(self._without_calibration)
        if self._frame_thread is not None:
            waiting += self._frame_thread.pending()
        return InputStats(rates={k: m.rate(now) for k, m in self.rates.items()},
                          totals={k: m.total for k, m in self.rates.items()}, dropped=dropped,
                          dropped_reasons=reasons, frame_latency=self.frame_latency, pose_mode=self.pose_mode,
                          waiting=self.sync.pending() + waiting)

    def _add_calibration(self, msg: CameraInfo) -> None:
        problem = None
        with self._calibration_lock:
            try:
                self._intrinsics.update(msg)
            except BadInput as bad:
                problem = bad
            waiting = list(self._without_calibration)
            self._without_calibration.clear()
        if problem is not None:
            self._report_bad(problem.kind, str(problem))
        for group in waiting:
            self._hand_on(group)

    def _on_synced(self, group: dict[str, Any]) -> None:
        with self._calibration_lock:
            waits = self._intrinsics.empty
            if waits:
                self._without_calibration.append(group)
                overflow = len(self._without_calibration) > self.settings.sync_queue_size
                if overflow:
                    self._without_calibration.popleft()
        if not waits:
            self._hand_on(group)
        elif overflow:
            self._count_drop("queue overflow waiting for camera_info")

    def _hand_on(self, group: dict[str, Any]) -> None:
        """A synchronised set with a calibration: decoded and handed on, here or on the frame thread."""
        self.rates["synced"].tick(self._now())
        if self._frame_thread is None:
            self._process(group)
        elif not self._frame_thread.submit(group):
            self._count_drop("frames came faster than they were decoded")

    def _count_drop(self, reason: str) -> None:
        with self._calibration_lock:
            self._drops[reason] = n = self._drops.get(reason, 0) + 1
        self._report_bad("dropped", f"frame dropped ({reason}); {n} dropped so far")

    def _frame_failed(self, exc: Exception) -> None:
        self._report_bad("frame", f"frame processing failed: {type(exc).__name__}: {exc}")

    def _process(self, group: dict[str, Any]) -> None:
        """Decode a synchronised set and hand the frame on (or report why it cannot be used)."""
        t_start = self._now()
        try:
            frame, frame_id = self.decode(group)
        except BadInput as bad:
            self._report_bad(bad.kind, str(bad))
            return
        self._on_frame(frame, frame_id)
        self.frame_latency = self._now() - t_start

    def decode(self, group: dict[str, Any]) -> tuple[Frame, str]:
        """A synchronised set of messages -> (Frame, camera frame id), with the camera's calibration; raises
        BadInput."""
        rgb_msg = group["rgb"]
        frame_id = rgb_msg.header.frame_id or self._intrinsics.newest_frame_id or "camera_optical_frame"
        rgb = _decode_colour(rgb_msg)
        K, info_width, info_height = self._intrinsics.lookup(rgb_msg.header.frame_id,
                                                             conv.stamp_to_sec(rgb_msg.header.stamp))
        h, w = rgb.shape[:2]
        if info_width and info_height and (info_width, info_height) != (w, h):
            raise BadInput("size_mismatch", f"rgb/image is {w}x{h} but rgb/camera_info says "
                                            f"{info_width}x{info_height}; frame skipped")
        depth = None
        if group.get("depth") is not None:
            depth = _decode_depth(group["depth"], self.settings.min_valid_depth)
            if depth.shape != (h, w):
                raise BadInput("size_mismatch", f"depth/image is {depth.shape[1]}x{depth.shape[0]} but rgb/image "
                                                f"is {w}x{h} (register depth to colour); frame skipped")
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
        self._subscriptions: dict[str, Any] = {}  # stream -> its subscription
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
                                   lookup_pose=self._lookup_tf, threaded=True)
        camera_qos = qos.camera_qos(s.image_qos_depth, s.reliable_qos)
        for stream in assembler.streams:
            topic, msg_type = STREAMS[stream]
            profile = qos.pose_qos(s.pose_qos_depth, s.reliable_qos) if stream == "pose" else camera_qos
            # One group per stream: streams are received in parallel; the synchroniser locks.
            self._subscriptions[stream] = self._node.create_subscription(
                msg_type, topic, functools.partial(self._add, stream), profile,
                callback_group=MutuallyExclusiveCallbackGroup())
        self._timer = self._node.create_timer(MISSING_INPUT_CHECK, self._check_missing_inputs,
                                              callback_group=MutuallyExclusiveCallbackGroup())
        self._assembler = assembler

    def close(self) -> None:
        """Unsubscribe and drop queued messages (deactivate)."""
        assembler, self._assembler = self._assembler, None
        if assembler is not None:
            assembler.close()
        for sub in self._subscriptions.values():
            self._node.destroy_subscription(sub)
        self._subscriptions = {}
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None

    def clear(self) -> None:
        """Drop the messages waiting for their partners or their camera_info."""
        assembler = self._assembler
        if assembler is not None:
            assembler.clear()

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
        for stream, silent_for in missing:
            sub = self._subscriptions.get(stream)
            topic = sub.topic_name if sub is not None else self._node.resolve_topic_name(STREAMS[stream][0])
            since = "yet" if silent_for is None else f"for {silent_for:.0f} s"
            self._report_bad("missing_input", f"images arrive but nothing on {topic} {since}: frames cannot be used")

    def _lookup_tf(self, camera_frame: str, stamp) -> np.ndarray:
        s = self._settings
        try:
            t = self._tf_buffer.lookup_transform(s.world_frame, camera_frame, rclpy.time.Time.from_msg(stamp),
                                                 timeout=rclpy.duration.Duration(seconds=s.pose_tolerance))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several exception types
            raise BadInput("tf", f"no TF {s.world_frame} <- {camera_frame} at the image stamp: {exc}") from None
        return conv.transform_to_matrix(t.transform)
