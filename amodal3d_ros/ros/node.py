"""The ``amodal3d`` node: camera stream -> keyframes -> core pipeline -> completed objects.

A lifecycle node (rclpy.lifecycle) that wires parts, each owning its state:

- ``inputs.CameraInputs``: subscriptions, QoS, timestamp sync, decoding into Frames;
- ``keyframes.KeyframeSelector``: the few informative frames kept;
- ``prompts.PromptBook``: which objects to reconstruct;
- ``jobs.ReconstructionWorker`` (with ``models.PipelineModels`` and ``jobs.AutoTrigger``): runs
  reconstructions on its own thread, keeps the last result;
- ``outputs.ResultPublishers``, ``diagnostics.Diagnostics``, ``services.NodeServices``.

Lifecycle: *configure* creates the publishers and starts the worker; *activate* loads the models
and subscribes; *deactivate* unsubscribes and releases the models (and their GPU memory);
*cleanup* removes the publishers, stops the worker and drops keyframes and prompts. With
``autostart`` (default) a plain launch comes up active. The services answer in every state.
Topic / parameter / service tables: README, section "ROS 2 node".
"""
from __future__ import annotations

import math
import sys
import time
import traceback
from typing import Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from amodal3d_ros.config import ConfigError
from amodal3d_ros.ros.diagnostics import Diagnostics, NodeStatus
from amodal3d_ros.ros.inputs import STREAMS, CameraInputs
from amodal3d_ros.ros.jobs import AutoTrigger, JobRefused, ReconstructionRequest, ReconstructionWorker
from amodal3d_ros.ros.keyframes import KeyframeSelector
from amodal3d_ros.ros.models import PipelineModels, ReconstructorFactory
from amodal3d_ros.ros.outputs import ResultPublishers
from amodal3d_ros.ros.process import RosProcess
from amodal3d_ros.ros.prompts import PromptBook
from amodal3d_ros.ros.services import MAX_WAITING_CALLS, NodeServices, save_meshes
from amodal3d_ros.ros.settings import NodeSettings
from amodal3d_ros.scene import Frame
from amodal3d_ros.schema import Setting

__all__ = ["NODE_NAME", "Amodal3dNode", "main", "save_meshes"]

NODE_NAME = "amodal3d"
# A thread per camera stream, per ~/reconstruct call allowed to wait, and a few for timers, parameters
# and the other services: waiting calls never leave the streams or the diagnostics without one.
EXECUTOR_THREADS = len(STREAMS) + MAX_WAITING_CALLS + 4
# Read when subscribing: a change waits for the next activation.
SUBSCRIPTION_PARAMETERS = ("pose_source", "use_depth", "qos.image_depth", "qos.pose_depth", "qos.reliable")


class Amodal3dNode(LifecycleNode):
    def __init__(self, reconstructor_factory: Optional[ReconstructorFactory] = None, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        # Raises ConfigError with every bad value named: main() reports it and exits with code 2.
        self.settings = NodeSettings.from_params(self._parameter_values())
        self.active = False
        s = self.settings
        self.diagnostics = Diagnostics(self, time.monotonic)
        self.keyframes = KeyframeSelector(s.keyframes)
        self.trigger = AutoTrigger(s.trigger_mode, s.trigger_every_n)
        self.inputs = CameraInputs(self, s, self._on_frame, self.diagnostics.bad)
        self.prompts = PromptBook(self, s, self.keyframes.newest_seq, self.diagnostics.bad)
        self.results = ResultPublishers(self)
        self.models = PipelineModels(s.pipeline, reconstructor_factory, self.get_logger())
        self.worker = ReconstructionWorker(self.models, self._plan_job, self._publish_result,
                                           self.diagnostics.record_error, self.get_logger())
        self.service_handlers = NodeServices(self, self.worker, lambda: self.active, self.reset, lambda: self.settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        """One parameter per key of the schema, its description, range and read-only flag with it."""
        for spec in NodeSettings.settings().values():
            default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            try:
                self.declare_parameter(spec.key, default, parameter_descriptor(spec))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                raise ConfigError(f"{spec.key}: {exc}") from exc  # a start-up value of the wrong type or range

    def _parameter_values(self) -> dict:
        return {name: self.get_parameter(name).value for name in NodeSettings.settings()}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        try:
            settings = NodeSettings.from_params(changes, base=self.settings)
        except ConfigError as exc:
            self.get_logger().error(f"rejected parameter change {changes}: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        old, self.settings = self.settings, settings
        self.keyframes.reconfigure(settings.keyframes)
        self.trigger.reconfigure(settings.trigger_mode, settings.trigger_every_n)
        self.inputs.reconfigure(settings)
        self.prompts.reconfigure(settings)
        self.models.reconfigure(settings.pipeline)  # rebuilt before the next run when it differs
        if old.diagnostics_period != settings.diagnostics_period:
            self.diagnostics.set_period(settings.diagnostics_period)
        restart = [name for name in SUBSCRIPTION_PARAMETERS if name in changes]
        if restart and self.active:
            self.get_logger().warning(f"{', '.join(restart)} take effect at the next deactivate/activate")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.results.create()
        self.diagnostics.open(self.settings.diagnostics_period, self._status)
        self.worker.start()
        self.get_logger().info("configured (publishers created, worker started)")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for step, action in (("cannot load the reconstruction pipeline", self.models.load),
                             ("cannot subscribe", self.inputs.open), ("cannot subscribe", self.prompts.open)):
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - report any failure and stay inactive
                self.diagnostics.record_error("activate", f"{step}: {exc}")
                self.get_logger().error(traceback.format_exc())
                self._close_inputs()
                self.models.release()
                return TransitionCallbackReturn.FAILURE
        self.active = True
        s = self.settings
        self.get_logger().info(
            f"active: pose source '{self.inputs.pose_mode}', depth {'on' if s.use_depth else 'off'}, "
            f"trigger '{s.trigger_mode}', up to {s.keyframes.max_keyframes} keyframes")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._close_inputs()
        self.models.release()  # models and their memory are held only while active
        self.get_logger().info("inactive (subscriptions closed, pipeline released)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.worker.stop()
        self.results.destroy()
        self.diagnostics.close()
        self.reset()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return super().on_shutdown(state)

    def autostart(self) -> bool:
        """Configure + activate when the ``autostart`` parameter is set; True when active."""
        if not self.settings.autostart:
            self.get_logger().info("autostart is false: waiting for lifecycle transitions (configure, activate)")
            return False
        for name, transition in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            if transition() != TransitionCallbackReturn.SUCCESS:
                self.get_logger().error(f"autostart: {name} failed: {self.diagnostics.last_error}")
                return False
        return True

    def close(self) -> None:
        """Unsubscribe, stop the worker and release the models (idempotent)."""
        self.active = False
        self._close_inputs()
        self.worker.stop()
        self.models.release()

    def _close_inputs(self) -> None:
        self.inputs.close()
        self.prompts.close()

    # ------------------------------------------------------------------ wiring the parts
    def reset(self) -> int:
        """Drop keyframes, prompts and queued frames; returns how many keyframes there were."""
        n = self.keyframes.reset()
        self.prompts.clear()
        self.trigger.restart()
        self.inputs.clear()
        return n

    def _on_frame(self, frame: Frame, frame_id: str) -> None:
        """A decoded camera frame: keep it if it adds information, and start a run when one is due."""
        accepted, why = self.keyframes.consider(frame, frame_id)
        if not accepted:
            return
        s = self.settings
        due = self.trigger.keyframe_added(self.keyframes.full, s.keyframes.max_keyframes)
        self.get_logger().info(f"keyframe {self.keyframes.accepted_total} ({len(self.keyframes)} kept): {why}")
        if due:
            self.worker.submit(f"auto ({s.trigger_mode})", wait=False)

    def _plan_job(self) -> ReconstructionRequest:
        """The current keyframes and prompts as a reconstruction request (the worker's ``plan``)."""
        kfs = self.keyframes.snapshot()
        prompts = self.prompts.snapshot()
        self.trigger.restart()
        if not kfs:
            raise JobRefused("no keyframes yet (is the camera publishing rgb/image, rgb/camera_info"
                             + (", depth/image" if self.settings.use_depth else "")
                             + (", camera_pose" if self.inputs.pose_mode == "topic" else "") + "?)")
        posed = all(k.frame.T_world_camera is not None for k in kfs)
        world = self.settings.world_frame if posed else kfs[0].frame_id
        targets, warnings = self.prompts.targets(kfs, prompts, world)
        if prompts and not targets:
            raise JobRefused("no prompt could be placed in a keyframe: " + "; ".join(warnings))
        for w in warnings:
            self.get_logger().warning(w)
        return ReconstructionRequest(keyframes=kfs, targets=targets, world_frame=world)

    def _publish_result(self, result, request: ReconstructionRequest) -> None:
        self.results.publish(result, request, debug_image=self.settings.publish_debug_image)

    def _status(self) -> NodeStatus:
        return NodeStatus(active=self.active, inputs=self.inputs.stats(), keyframes=len(self.keyframes),
                          keyframes_accepted=self.keyframes.accepted_total, worker=self.worker.stats())


def parameter_descriptor(spec: Setting) -> ParameterDescriptor:
    """The ROS descriptor of a schema setting: its description, allowed values and read-only flag.

    ROS ranges are closed: an open bound (e.g. > 0) is given as closed here and the schema's
    validator, which every change goes through, refuses the bound itself."""
    descriptor = ParameterDescriptor(description=spec.doc, read_only=spec.read_only,
                                     additional_constraints=spec.constraint(),
                                     dynamic_typing=spec.kind is float)  # 10 as well as 10.0
    bounds = spec.range
    if bounds is not None and spec.kind is int:
        descriptor.integer_range = [IntegerRange(
            from_value=int(bounds.low) if bounds.low is not None else -2 ** 63,
            to_value=int(bounds.high) if bounds.high is not None else 2 ** 63 - 1, step=bounds.step)]
    elif bounds is not None and spec.kind is float:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(bounds.low) if bounds.low is not None else -math.inf,
            to_value=float(bounds.high) if bounds.high is not None else math.inf, step=0.0)]
    return descriptor


def main(argv: Optional[list[str]] = None) -> int:
    with RosProcess(argv) as proc:
        try:
            node = proc.own(Amodal3dNode())
            executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
            executor.add_node(node)
            node.autostart()
            executor.spin()
        except ConfigError as exc:
            print(f"[amodal3d] invalid parameters: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
