"""The ``amodal3d`` node: camera stream -> keyframes -> core pipeline -> completed objects.

A lifecycle node (rclpy.lifecycle): *configure* loads the Reconstructor (models, GPU memory),
*activate* subscribes to the camera and starts keyframing, *deactivate* unsubscribes and releases
the Reconstructor, *cleanup* also drops keyframes. With ``autostart`` (default) a plain launch
comes up active. Reconstruction runs on a worker thread; subscriptions, services and diagnostics
keep running on a MultiThreadedExecutor meanwhile. All message <-> numpy work is in
``conversions``; all geometry in the core pipeline. Topic / parameter / service tables: see
docs/ros.md or README.
"""
from __future__ import annotations

import queue
import re
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from amodal3d_ros.config import ConfigError, PipelineConfig
from amodal3d_ros.ros import conversions as conv
from amodal3d_ros.ros import qos
from amodal3d_ros.ros.keyframes import Keyframe, KeyframeSelector
from amodal3d_ros.ros.process import RosProcess
from amodal3d_ros.ros.settings import NODE_PARAMETERS, READ_ONLY_PARAMETERS, all_parameter_defaults, split_parameters
from amodal3d_ros.ros.sync import ApproximateTimeSync
from amodal3d_ros.safe_io import confined_folder
from amodal3d_ros.scene import Frame, SceneFormatError, Target

try:  # TF where the full ROS 2 stack is installed; the PyPI stack has no tf2_ros.
    import tf2_ros  # type: ignore
    HAVE_TF2 = True
except ImportError:  # pragma: no cover - depends on the install
    tf2_ros = None
    HAVE_TF2 = False

NODE_NAME = "amodal3d"


def default_reconstructor_factory(config: PipelineConfig):
    from amodal3d_ros.pipeline import Reconstructor

    return Reconstructor(config)


class RateMeter:
    """Messages per second over a sliding window."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self.times: deque = deque()
        self.total = 0

    def tick(self, now: float) -> None:
        self.times.append(now)
        self.total += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(now - self.times[0], 1e-6)


@dataclass
class Prompt:
    stamp: float
    frame_id: str
    xyz: np.ndarray
    pixel_mode: bool
    kf_seq: Optional[int]  # newest keyframe when it arrived


@dataclass
class Job:
    reason: str
    done: threading.Event
    result: Any = None
    error: Optional[str] = None
    latency: float = 0.0


class Amodal3dNode(LifecycleNode):
    def __init__(self, reconstructor_factory: Optional[Callable[[PipelineConfig], Any]] = None, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._factory = reconstructor_factory or default_reconstructor_factory
        self._declare_parameters()
        values = {name: self.get_parameter(name).value for name in all_parameter_defaults()}
        # Raises ConfigError with every bad value named: main() reports it and exits with code 2.
        self.settings, self.pipeline_config = split_parameters(values)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._lock = threading.RLock()  # guards keyframes/prompts/stats/trigger state
        self._recon_lock = threading.Lock()  # held while the Reconstructor runs or (un)loads
        self._reconstructor = None
        self._config_dirty = False
        self.active = False
        self.keyframes = KeyframeSelector(self.settings.keyframes)
        self._prompts: list[Prompt] = []
        self._new_keyframes = 0
        self._last: Optional[tuple[Any, list[Keyframe], list[Target]]] = None  # (Reconstruction, kfs, targets)
        self._jobs: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._auto_pending = False
        self._busy = False
        self._worker: Optional[threading.Thread] = None
        self._subs: list = []
        self._sync: Optional[ApproximateTimeSync] = None
        self._tf_buffer = None
        self._tf_listener = None
        self._pose_mode = "none"

        # statistics for /diagnostics
        self.rates = {name: RateMeter() for name in ("rgb", "camera_info", "depth", "pose", "synced")}
        self.bad_counts: dict[str, int] = {}
        self.last_error = ""
        self._last_logged: dict[str, float] = {}
        self.last_latency = float("nan")
        self.last_frame_latency = float("nan")
        self.reconstructions = 0
        self.failed_reconstructions = 0
        self.last_rgb_wall = None

        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()

        self.pub_objects = None
        self.pub_cloud = self.create_publisher(PointCloud2, "~/completed_cloud", qos.latched_qos())
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", qos.latched_qos())
        self.pub_debug = self.create_publisher(Image, "~/debug/segmentation", qos.latched_qos())
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
        try:
            from amodal3d_ros.msg import ReconstructedObjectArray
            self.pub_objects = self.create_publisher(ReconstructedObjectArray, "~/objects", qos.latched_qos())
        except ImportError as exc:
            self.get_logger().error(f"amodal3d_ros messages are not built ({exc}); ~/objects is not published. "
                                    "Run 'make install'.")
        self.create_service(Trigger, "~/reconstruct", self._srv_reconstruct, callback_group=self._service_group)
        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._service_group)
        try:
            from amodal3d_ros.srv import SaveMeshes
            self.create_service(SaveMeshes, "~/save_meshes", self._srv_save_meshes, callback_group=self._service_group)
        except ImportError:
            self.get_logger().error("amodal3d_ros/SaveMeshes is not built; ~/save_meshes is not offered")
        self._diag_timer = self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics,
                                             callback_group=self._timer_group)
        self._missing_timer = self.create_timer(1.0, self._check_missing_inputs, callback_group=self._timer_group)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        for name, (default, doc) in NODE_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=doc, dynamic_typing=isinstance(default, float),
                read_only=name in READ_ONLY_PARAMETERS))
        for key, default in PipelineConfig().to_flat_dict().items():
            self.declare_parameter(f"pipeline.{key}", default, ParameterDescriptor(
                description=f"core pipeline setting '{key}' (amodal3d_ros/config.py)",
                dynamic_typing=isinstance(default, float)))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = {name: self.get_parameter(name).value for name in all_parameter_defaults()}
        defaults = all_parameter_defaults()
        changed = {}
        for p in params:
            if p.name not in values:
                return SetParametersResult(successful=False, reason=f"unknown parameter '{p.name}'")
            if isinstance(defaults[p.name], float) and (isinstance(p.value, bool) or not isinstance(p.value, (int, float))):
                return SetParametersResult(successful=False,
                                           reason=f"parameter '{p.name}' must be a number, got {p.value!r}")
            changed[p.name] = p.value
        values.update(changed)
        try:
            settings, config = split_parameters(values)
        except ConfigError as exc:
            self.get_logger().error(f"rejected parameter change {changed}: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        with self._lock:
            old = self.settings
            self.settings = settings
            if config != self.pipeline_config:
                self.pipeline_config = config
                self._config_dirty = True  # the worker reloads the Reconstructor before its next run
            self.keyframes.params = settings.keyframes
            while len(self.keyframes.keyframes) > settings.keyframes.max_keyframes:
                self.keyframes.keyframes.pop(0)
            if self._sync is not None:
                self._sync.tolerance = settings.sync_tolerance
                self._sync.queue_size = settings.sync_queue_size
        restart = [n for n in ("pose_source", "use_depth", "qos.image_depth", "qos.pose_depth", "qos.reliable")
                   if n in changed]
        if restart and self.active:
            self.get_logger().warning(f"{', '.join(restart)} take effect at the next deactivate/activate")
        if old.diagnostics_period != settings.diagnostics_period:
            self._diag_timer.timer_period_ns = int(settings.diagnostics_period * 1e9)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_reconstructor()
        except Exception as exc:  # noqa: BLE001 - report any loading failure and stay unconfigured
            self._record_error("configure", f"cannot load the reconstruction pipeline: {exc}")
            self.get_logger().error(traceback.format_exc())
            return TransitionCallbackReturn.FAILURE
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._worker_loop, name="amodal3d-worker", daemon=True)
            self._worker.start()
        self.get_logger().info("configured (pipeline loaded)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self._reconstructor is None:
                self._load_reconstructor()
            self._create_inputs()
        except Exception as exc:  # noqa: BLE001
            self._record_error("activate", f"cannot activate: {exc}")
            self._destroy_inputs()
            return TransitionCallbackReturn.FAILURE
        self.active = True
        self.get_logger().info(
            f"active: pose source '{self._pose_mode}', depth {'on' if self.settings.use_depth else 'off'}, "
            f"trigger '{self.settings.trigger_mode}', up to {self.settings.keyframes.max_keyframes} keyframes")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._destroy_inputs()
        self._release_reconstructor()  # memory is held only while active
        self.get_logger().info("inactive (subscriptions closed, pipeline released)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._destroy_inputs()
        self._release_reconstructor()
        with self._lock:
            self.keyframes.reset()
            self._prompts.clear()
            self._new_keyframes = 0
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def autostart(self) -> bool:
        """Configure + activate when the ``autostart`` parameter is set; True when active."""
        if not self.settings.autostart:
            self.get_logger().info("autostart is false: waiting for lifecycle transitions (configure, activate)")
            return False
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error(f"autostart: configure failed: {self.last_error}")
            return False
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error(f"autostart: activate failed: {self.last_error}")
            return False
        return True

    def close(self) -> None:
        """Stop the worker and release the pipeline (idempotent)."""
        self.active = False
        if self._worker is not None and self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join(timeout=5.0)
        self._worker = None
        self._release_reconstructor()

    def _load_reconstructor(self) -> None:
        with self._recon_lock:
            if self._reconstructor is not None and not self._config_dirty:
                return
            self._close_reconstructor_locked()
            t0 = time.monotonic()
            with self._lock:
                config = self.pipeline_config
                self._config_dirty = False
            self._reconstructor = self._factory(config)
            self.get_logger().info(f"pipeline loaded in {time.monotonic() - t0:.2f} s")

    def _close_reconstructor_locked(self) -> None:
        if self._reconstructor is not None:
            close = getattr(self._reconstructor, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001
                    self.get_logger().warning(f"closing the pipeline failed: {exc}")
            self._reconstructor = None

    def _release_reconstructor(self) -> None:
        with self._recon_lock:
            self._close_reconstructor_locked()

    # ------------------------------------------------------------------ inputs
    def _resolve_pose_mode(self) -> str:
        src = self.settings.pose_source
        if src == "auto":
            return "tf" if HAVE_TF2 else "topic"
        if src == "tf" and not HAVE_TF2:
            raise ConfigError("pose_source 'tf' needs tf2_ros, which is not installed here; "
                              "use pose_source 'topic' (PoseStamped on camera_pose) or 'none'")
        return src

    def _create_inputs(self) -> None:
        s = self.settings
        self._pose_mode = self._resolve_pose_mode()
        streams = ["rgb", "camera_info"] + (["depth"] if s.use_depth else []) + \
            (["pose"] if self._pose_mode == "topic" else [])
        self._sync = ApproximateTimeSync(streams, self._on_synced, tolerance=s.sync_tolerance,
                                         queue_size=s.sync_queue_size)
        cam_qos = qos.camera_qos(s.image_qos_depth, s.reliable_qos)

        def g():  # one group per input: streams are converted in parallel; the synchroniser locks
            return MutuallyExclusiveCallbackGroup()

        self._subs = [
            self.create_subscription(Image, "rgb/image", self._cb_rgb, cam_qos, callback_group=g()),
            self.create_subscription(CameraInfo, "rgb/camera_info", self._cb_info, cam_qos, callback_group=g()),
            self.create_subscription(PointStamped, "prompt", self._cb_prompt, qos.prompt_qos(), callback_group=g()),
        ]
        if s.use_depth:
            self._subs.append(self.create_subscription(Image, "depth/image", self._cb_depth, cam_qos,
                                                       callback_group=g()))
        if self._pose_mode == "topic":
            self._subs.append(self.create_subscription(PoseStamped, "camera_pose", self._cb_pose,
                                                       qos.pose_qos(s.pose_qos_depth, s.reliable_qos),
                                                       callback_group=g()))
        if self._pose_mode == "tf" and self._tf_buffer is None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self, spin_thread=True)

    def _destroy_inputs(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._sync = None

    def _now(self) -> float:
        return time.monotonic()

    def _cb_rgb(self, msg: Image) -> None:
        self.rates["rgb"].tick(self._now())
        self.last_rgb_wall = self._now()
        try:
            rgb = conv.image_to_rgb(msg)
        except conv.ConversionError as exc:
            return self._bad("rgb_encoding" if "encoding" in str(exc) else "rgb_data", f"rgb/image: {exc}")
        self._feed("rgb", msg.header, (msg, rgb))

    def _cb_info(self, msg: CameraInfo) -> None:
        self.rates["camera_info"].tick(self._now())
        try:
            K = conv.camera_info_to_K(msg)
        except conv.ConversionError as exc:
            return self._bad("camera_info", f"rgb/camera_info: {exc}")
        self._feed("camera_info", msg.header, (msg, K))

    def _cb_depth(self, msg: Image) -> None:
        self.rates["depth"].tick(self._now())
        try:
            depth = conv.image_to_depth(msg)
        except conv.ConversionError as exc:
            return self._bad("depth_encoding" if "encoding" in str(exc) else "depth_data", f"depth/image: {exc}")
        valid = float(np.count_nonzero(depth)) / depth.size
        if valid < self.settings.min_valid_depth:
            return self._bad("depth_invalid", f"depth/image: only {valid:.1%} valid pixels (NaN, inf or 0 elsewhere; "
                                              f"need >= {self.settings.min_valid_depth:.1%}); frame skipped")
        self._feed("depth", msg.header, (msg, depth))

    def _cb_pose(self, msg: PoseStamped) -> None:
        self.rates["pose"].tick(self._now())
        if msg.header.frame_id and msg.header.frame_id != self.settings.world_frame:
            return self._bad("pose_frame", f"camera_pose: frame_id '{msg.header.frame_id}' is not the world frame "
                                           f"'{self.settings.world_frame}' (set the world_frame parameter)")
        try:
            T = conv.pose_to_matrix(msg.pose)
        except conv.ConversionError as exc:
            return self._bad("pose", f"camera_pose: {exc}")
        self._feed("pose", msg.header, (msg, T))

    def _feed(self, stream: str, header, item) -> None:
        sync = self._sync
        if sync is None or not self.active:
            return
        before = sync.dropped
        sync.add(stream, conv.stamp_to_sec(header.stamp), item)
        if sync.dropped > before:
            reason = max(sync.dropped_reasons, key=sync.dropped_reasons.get)
            self._bad("dropped", f"frame dropped ({reason}); {sync.dropped} dropped so far")

    def _check_missing_inputs(self) -> None:
        sync = self._sync
        if sync is None or not self.active or self.last_rgb_wall is None or self._now() - self.last_rgb_wall > 2.0:
            return  # only while images are arriving
        missing = sync.waiting_for()
        if "rgb" not in missing and missing:
            names = {"camera_info": "rgb/camera_info", "depth": "depth/image", "pose": "camera_pose"}
            topics = ", ".join(self.resolve_topic_name(names[m]) for m in missing if m in names)
            self._bad("missing_input", f"images arrive but nothing on {topics} yet: frames cannot be used")

    def _on_synced(self, group: dict[str, Any]) -> None:
        t_start = self._now()
        self.rates["synced"].tick(t_start)
        rgb_msg, rgb = group["rgb"]
        info_msg, K = group["camera_info"]
        h, w = rgb.shape[:2]
        if info_msg.width and info_msg.height and (info_msg.width, info_msg.height) != (w, h):
            return self._bad("size_mismatch", f"rgb/image is {w}x{h} but rgb/camera_info says "
                                              f"{info_msg.width}x{info_msg.height}; frame skipped")
        depth = None
        if group.get("depth") is not None:
            depth = group["depth"][1]
            if depth.shape != (h, w):
                return self._bad("size_mismatch", f"depth/image is {depth.shape[1]}x{depth.shape[0]} but rgb/image is "
                                                  f"{w}x{h} (register depth to colour); frame skipped")
        stamp = conv.stamp_to_sec(rgb_msg.header.stamp)
        frame_id = rgb_msg.header.frame_id or info_msg.header.frame_id or "camera_optical_frame"
        T = None
        if self._pose_mode == "topic":
            T = group["pose"][1]
        elif self._pose_mode == "tf":
            T = self._lookup_tf(frame_id, rgb_msg.header.stamp)
            if T is None:
                return
        try:
            frame = Frame(rgb=rgb, K=K, depth=depth, T_world_camera=T, stamp=stamp)
        except SceneFormatError as exc:
            return self._bad("frame", f"frame rejected: {exc}")
        with self._lock:
            accepted, why = self.keyframes.consider(frame, frame_id)
            if accepted:
                self._new_keyframes += 1
                n = len(self.keyframes)
                trigger = self._should_trigger()
        self.last_frame_latency = self._now() - t_start
        if accepted:
            self.get_logger().info(f"keyframe {self.keyframes.accepted_total} ({n} kept): {why}")
            if trigger:
                self._submit(f"auto ({self.settings.trigger_mode})", wait=False)

    def _lookup_tf(self, camera_frame: str, stamp) -> Optional[np.ndarray]:
        try:
            t = self._tf_buffer.lookup_transform(self.settings.world_frame, camera_frame, rclpy.time.Time.from_msg(stamp),
                                                 timeout=rclpy.duration.Duration(seconds=self.settings.pose_tolerance))
        except Exception as exc:  # noqa: BLE001 - tf2 raises several exception types
            self._bad("tf", f"no TF {self.settings.world_frame} <- {camera_frame} at the image stamp: {exc}")
            return None
        return conv.transform_to_matrix(t.transform)

    def _should_trigger(self) -> bool:
        s = self.settings
        if s.trigger_mode == "keyframes":
            return self._new_keyframes >= s.trigger_every_n
        if s.trigger_mode == "full":
            return self.keyframes.full and self._new_keyframes >= s.keyframes.max_keyframes
        return False

    # ------------------------------------------------------------------ prompts
    def _cb_prompt(self, msg: PointStamped) -> None:
        mode = self.settings.prompt_mode
        pixel = mode == "pixel" or (mode == "auto" and not msg.header.frame_id)
        xyz = np.array([msg.point.x, msg.point.y, msg.point.z], dtype=np.float64)
        if not np.all(np.isfinite(xyz)):
            return self._bad("prompt", f"prompt: non-finite point {xyz.tolist()}")
        with self._lock:
            kfs = self.keyframes.keyframes
            p = Prompt(stamp=conv.stamp_to_sec(msg.header.stamp), frame_id=msg.header.frame_id, xyz=xyz,
                       pixel_mode=pixel, kf_seq=kfs[-1].seq if kfs else None)
            if not self.settings.prompt_accumulate:
                self._prompts.clear()
            self._prompts.append(p)
        what = f"pixel ({xyz[0]:.0f}, {xyz[1]:.0f})" if pixel else f"point {xyz.round(3).tolist()} in '{msg.header.frame_id}'"
        self.get_logger().info(f"prompt {len(self._prompts) - 1}: {what}")

    def _resolve_prompts(self, kfs: list[Keyframe], prompts: list[Prompt], world_frame: str) -> tuple[list[Target], list[str]]:
        targets, warnings = [], []
        tol = max(self.settings.sync_tolerance, 1e-3)
        for i, p in enumerate(prompts):
            tid = f"target{i}"
            if p.pixel_mode:
                idx = None
                if p.stamp > 0:
                    diffs = [abs(k.frame.stamp - p.stamp) for k in kfs]
                    j = int(np.argmin(diffs))
                    if diffs[j] <= tol:
                        idx = j
                if idx is None and p.kf_seq is not None:
                    idx = next((j for j, k in enumerate(kfs) if k.seq == p.kf_seq), None)
                if idx is None:
                    idx = len(kfs) - 1
                u, v = int(round(p.xyz[0])), int(round(p.xyz[1]))
                f = kfs[idx].frame
                if not (0 <= u < f.width and 0 <= v < f.height):
                    warnings.append(f"prompt {i}: pixel ({u}, {v}) outside the {f.width}x{f.height} keyframe; ignored")
                    continue
                targets.append(Target(id=tid, frame=idx, pixel=(u, v)))
                continue
            hit = self._project_point(kfs, p, world_frame)
            if isinstance(hit, str):
                warnings.append(f"prompt {i}: {hit}; ignored")
            else:
                targets.append(Target(id=tid, frame=hit[0], pixel=hit[1]))
        return targets, warnings

    def _project_point(self, kfs: list[Keyframe], p: Prompt, world_frame: str):
        """Newest keyframe where the 3D point is visible (depth agrees), else newest it projects into."""
        candidates = []
        newest = len(kfs) - 1
        for j in range(newest, -1, -1):
            kf = kfs[j]
            if p.frame_id in (world_frame, self.settings.world_frame) and kf.frame.T_world_camera is not None:
                pc = (np.linalg.inv(kf.frame.T_world_camera) @ np.append(p.xyz, 1.0))[:3]
            elif p.frame_id == kf.frame_id and j == newest:
                pc = p.xyz  # a point in the camera's own frame: meant for the newest view
            else:
                continue
            if pc[2] <= 1e-6:
                continue
            K = kf.frame.K
            u = int(round(K[0, 0] * pc[0] / pc[2] + K[0, 2]))
            v = int(round(K[1, 1] * pc[1] / pc[2] + K[1, 2]))
            if not (0 <= u < kf.frame.width and 0 <= v < kf.frame.height):
                continue
            candidates.append((j, (u, v)))
            d = kf.frame.depth
            if d is None or (d[v, u] > 0 and abs(d[v, u] - pc[2]) <= max(0.02, 0.03 * pc[2])):
                return j, (u, v)
        if candidates:
            return candidates[0]
        return (f"point in '{p.frame_id}' projects into no keyframe (frames known: '{self.settings.world_frame}' "
                f"and the camera frames; TF lookups for other frames are not supported)")

    # ------------------------------------------------------------------ reconstruction
    def _submit(self, reason: str, wait: bool) -> Job:
        job = Job(reason=reason, done=threading.Event())
        with self._lock:
            if not wait and (self._busy or not self._jobs.empty()):
                self._auto_pending = True  # coalesce automatic triggers while one is running
                job.done.set()
                return job
        self._jobs.put(job)
        return job

    def _worker_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._busy = True
            try:
                self._run_job(job)
            finally:
                with self._lock:
                    self._busy = False
                    again = self._auto_pending and self._jobs.empty()
                    self._auto_pending = False
                job.done.set()
            if again and self.active:
                self._submit("auto (coalesced)", wait=False)

    def _run_job(self, job: Job) -> None:
        t0 = self._now()
        with self._lock:
            kfs = self.keyframes.snapshot()
            prompts = list(self._prompts)
            self._new_keyframes = 0
        if not kfs:
            job.error = "no keyframes yet (is the camera publishing rgb/image, rgb/camera_info" + \
                (", depth/image" if self.settings.use_depth else "") + \
                (", camera_pose" if self._pose_mode == "topic" else "") + "?)"
            return
        posed = all(k.frame.T_world_camera is not None for k in kfs)
        world = self.settings.world_frame if posed else kfs[0].frame_id
        targets, warnings = self._resolve_prompts(kfs, prompts, world)
        if prompts and not targets:
            job.error = "no prompt could be placed in a keyframe: " + "; ".join(warnings)
            return
        for w in warnings:
            self.get_logger().warning(w)
        try:
            self._load_reconstructor()  # no-op unless released (inactive) or parameters changed
            with self._recon_lock:
                if self._reconstructor is None:
                    raise RuntimeError("the pipeline was released (node deactivated)")
                result = self._reconstructor.reconstruct([k.frame for k in kfs], targets or None, world_frame=world)
        except Exception as exc:  # noqa: BLE001 - survive any pipeline failure, report it
            self.failed_reconstructions += 1
            job.error = f"reconstruction failed: {type(exc).__name__}: {exc}"
            self._record_error("reconstruct", job.error)
            self.get_logger().error(traceback.format_exc())
            return
        with self._lock:
            self._last = (result, kfs, targets)
        try:
            self._publish_result(result, kfs, targets)
        except Exception as exc:  # noqa: BLE001
            job.error = f"publishing the result failed: {type(exc).__name__}: {exc}"
            self._record_error("publish", job.error)
            self.get_logger().error(traceback.format_exc())
            return
        job.result = result
        job.latency = self.last_latency = self._now() - t0
        self.reconstructions += 1
        self.get_logger().info(
            f"reconstruction ({job.reason}): {len(result.objects)} objects from {len(kfs)} keyframes in "
            f"{job.latency:.2f} s (pipeline {result.seconds_total:.2f} s), frame '{result.frame_id}'")
        for w in getattr(result, "warnings", []) or []:
            self.get_logger().warning(f"pipeline: {w}")

    def _publish_result(self, result, kfs: list[Keyframe], targets: list[Target]) -> None:
        header = conv.make_header(result.frame_id, max(k.frame.stamp for k in kfs))
        if self.pub_objects is not None:
            self.pub_objects.publish(conv.objects_to_array_msg(result.objects, header))
        self.pub_cloud.publish(conv.objects_to_cloud(result.objects, header))
        self.pub_markers.publish(conv.objects_to_markers(result.objects, header))
        if self.settings.publish_debug_image:
            idx = targets[0].frame if targets else len(kfs) - 1
            img = conv.draw_debug_image(kfs[idx].frame.rgb, result.objects, idx, [t.id for t in targets])
            self.pub_debug.publish(conv.numpy_to_image(img, "rgb8", conv.make_header(kfs[idx].frame_id, kfs[idx].frame.stamp)))

    # ------------------------------------------------------------------ services
    def _srv_reconstruct(self, request, response):
        if self._worker is None or not self._worker.is_alive():
            response.success = False
            response.message = "node is not configured (lifecycle state); configure and activate it first"
            return response
        job = self._submit("service", wait=True)
        if not job.done.wait(self.settings.reconstruct_timeout):
            response.success = False
            response.message = f"reconstruction still running after {self.settings.reconstruct_timeout:.0f} s"
            return response
        if job.error:
            response.success = False
            response.message = job.error
            return response
        r = job.result
        ids = ", ".join(o.id for o in r.objects)
        response.success = True
        response.message = (f"{len(r.objects)} objects [{ids}] in frame '{r.frame_id}' from "
                            f"{len(self._last[1])} keyframes, {job.latency:.2f} s")
        return response

    def _srv_reset(self, request, response):
        with self._lock:
            n = self.keyframes.reset()
            self._prompts.clear()
            self._new_keyframes = 0
            if self._sync is not None:
                self._sync.clear()
        response.success = True
        response.message = f"dropped {n} keyframes and all prompts"
        self.get_logger().info(response.message)
        return response

    def _srv_save_meshes(self, request, response):
        fmt = (request.format or "ply").lower().lstrip(".")
        response.files = []
        if fmt not in ("ply", "obj", "glb"):
            response.success, response.message = False, f"format must be ply, obj or glb, got '{request.format}'"
            return response
        with self._lock:
            last = self._last
        if last is None:
            response.success, response.message = False, "nothing reconstructed yet (call ~/reconstruct first)"
            return response
        try:
            folder, files = save_meshes(last[0].objects, self.settings.save_root, request.directory, fmt)
        except Exception as exc:  # noqa: BLE001 - any failure is the caller's answer, never the node's end
            response.success, response.message = False, f"cannot save into '{request.directory}': {exc}"
            return response
        response.success = True
        response.files = [str(p) for p in files]
        response.message = f"wrote {len(last[0].objects)} meshes ({fmt}) to {folder}"
        return response

    # ------------------------------------------------------------------ errors and diagnostics
    def _record_error(self, kind: str, message: str) -> None:
        with self._lock:
            self.bad_counts[kind] = self.bad_counts.get(kind, 0) + 1
            self.last_error = message

    def _bad(self, kind: str, message: str) -> None:
        """Bad input: count it, remember it, log it (each distinct problem at most every 2 s), carry on."""
        self._record_error(kind, message)
        now = self._now()
        key = kind + re.sub(r"[0-9.]+", "#", message)[:60]  # the same problem, whatever its numbers
        if now - self._last_logged.get(key, -1e9) >= 2.0:
            self._last_logged[key] = now
            n = self.bad_counts[kind]
            self.get_logger().warning(f"{message} [{kind} x{n}]")

    def _publish_diagnostics(self) -> None:
        now = self._now()
        with self._lock:
            counts = dict(self.bad_counts)
            nkf = len(self.keyframes)
            last_error = self.last_error
        sync = self._sync
        inputs = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: inputs", hardware_id="camera")
        bad_total = sum(v for k, v in counts.items() if k not in ("dropped", "reconstruct", "publish", "configure",
                                                                    "activate"))
        dropped = sync.dropped if sync is not None else counts.get("dropped", 0)
        values = {f"{k} rate (Hz)": f"{m.rate(now):.2f}" for k, m in self.rates.items()}
        values.update({f"{k} received": str(m.total) for k, m in self.rates.items()})
        values.update({
            "dropped frames": str(dropped), "bad messages": str(bad_total),
            "keyframes": str(nkf), "keyframes accepted total": str(self.keyframes.accepted_total),
            "frame processing latency (s)": f"{self.last_frame_latency:.4f}",
            "pose source": self._pose_mode, "active": str(self.active),
        })
        values.update({f"count {k}": str(v) for k, v in sorted(counts.items())})
        if sync is not None:
            values.update({f"dropped: {k}": str(v) for k, v in sorted(sync.dropped_reasons.items())})
        if not self.active:
            inputs.level, inputs.message = DiagnosticStatus.WARN, "inactive"
        elif bad_total or dropped:
            inputs.level, inputs.message = DiagnosticStatus.WARN, f"{bad_total} bad messages, {dropped} dropped frames"
        elif self.rates["synced"].rate(now) == 0 and nkf == 0:
            inputs.level, inputs.message = DiagnosticStatus.WARN, "no frames yet"
        else:
            inputs.level, inputs.message = DiagnosticStatus.OK, "ok"
        inputs.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        recon = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: reconstruction", hardware_id="pipeline")
        recon.values = [KeyValue(key=k, value=v) for k, v in {
            "reconstructions": str(self.reconstructions), "failed": str(self.failed_reconstructions),
            "last latency (s)": f"{self.last_latency:.3f}", "busy": str(self._busy),
            "pipeline loaded": str(self._reconstructor is not None), "last error": last_error,
        }.items()]
        recon.level = DiagnosticStatus.WARN if self.failed_reconstructions else DiagnosticStatus.OK
        recon.message = last_error[:200] if last_error else "ok"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [inputs, recon]
        self.pub_diag.publish(arr)


def save_meshes(objects, save_root: str, directory: str, fmt: str) -> tuple[Path, list[Path]]:
    """``~/save_meshes`` without ROS: write ``objects`` into ``directory`` under ``save_root``.

    ``directory`` is relative to the root ('' = the root; an absolute path only where it lies under
    the root); '..' and symlinks leading out are refused (UnsafePathError), and every file is
    written atomically, replacing a symlink rather than following it. Returns the absolute folder
    and the absolute paths written.
    """
    folder = confined_folder(save_root, directory)
    files = []
    for obj in objects:
        files += obj.write(folder, fmt)
    return folder, files


def main(argv: Optional[list[str]] = None) -> int:
    with RosProcess(argv) as proc:
        try:
            node = proc.own(Amodal3dNode())
            executor = MultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            node.autostart()
            executor.spin()
        except ConfigError as exc:
            print(f"[amodal3d] invalid parameters: {exc}", file=sys.stderr)
            return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
