"""What the node tells about itself: bad input and errors (counted, logged, remembered) and the
``/diagnostics`` message built from every part's statistics.

The publisher and its timer exist while the node is configured (inactive or active); the problem
counters live as long as the node.
"""
from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from amodal3d_ros.ros import qos

# Problems of the node itself, not of its input: they do not count as bad messages.
NOT_INPUT_PROBLEMS = ("dropped", "reconstruct", "publish", "configure", "activate")
LOG_EVERY = 2.0  # s between two log lines about the same problem


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
class InputStats:
    """The camera inputs as /diagnostics shows them."""
    rates: dict[str, float]  # stream -> messages per second
    totals: dict[str, int]  # stream -> messages received
    dropped: Optional[int]  # frames the synchroniser dropped since activation; None while inactive
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    frame_latency: float = float("nan")  # s, synchronised frame to keyframe decision
    pose_mode: str = "none"
    waiting: int = 0  # frames waiting for their partners or their camera_info


@dataclass
class WorkerStats:
    """The reconstruction worker as /diagnostics shows it."""
    reconstructions: int = 0
    failed: int = 0
    last_latency: float = float("nan")
    busy: bool = False
    models_loaded: bool = False
    queued: int = 0  # runs waiting to start (every request meanwhile shares the one)


@dataclass
class NodeStatus:
    active: bool
    inputs: InputStats
    keyframes: int
    keyframes_accepted: int
    worker: WorkerStats


class Diagnostics:
    """Problem counters and the periodic /diagnostics message of one node."""

    def __init__(self, node, now: Callable[[], float]):
        self._node = node
        self._now = now
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_error = ""
        self._last_logged: dict[str, float] = {}
        self._publisher = None
        self._timer = None

    # ------------------------------------------------------------------ problems
    def record_error(self, kind: str, message: str) -> int:
        """Count a problem of ``kind`` and remember ``message`` as the last error; the new count."""
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._last_error = message
            return self._counts[kind]

    def bad(self, kind: str, message: str) -> None:
        """Bad input: count it, remember it, log it (each distinct problem at most every 2 s), carry on."""
        n = self.record_error(kind, message)
        now = self._now()
        key = kind + re.sub(r"[0-9.]+", "#", message)[:60]  # the same problem, whatever its numbers
        with self._lock:
            if now - self._last_logged.get(key, -1e9) < LOG_EVERY:
                return
            self._last_logged[key] = now
        self._node.get_logger().warning(f"{message} [{kind} x{n}]")

    @property
    def last_error(self) -> str:
        with self._lock:
            return self._last_error

    # ------------------------------------------------------------------ publishing
    def open(self, period: float, status: Callable[[], NodeStatus]) -> None:
        """Publish ``status()`` on /diagnostics every ``period`` s (configure)."""
        self._publisher = self._node.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
        self._timer = self._node.create_timer(period, lambda: self.publish(status()),
                                              callback_group=MutuallyExclusiveCallbackGroup())

    def close(self) -> None:
        """Stop publishing (cleanup)."""
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
        if self._publisher is not None:
            self._node.destroy_publisher(self._publisher)
        self._timer = self._publisher = None

    def set_period(self, period: float) -> None:
        if self._timer is not None:
            self._timer.timer_period_ns = int(period * 1e9)

    def publish(self, status: NodeStatus) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        with self._lock:
            counts, last_error = dict(self._counts), self._last_error
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = [self._inputs_status(status, counts), self._worker_status(status.worker, last_error)]
        publisher.publish(msg)

    def _inputs_status(self, status: NodeStatus, counts: dict[str, int]) -> DiagnosticStatus:
        inputs = status.inputs
        bad_total = sum(v for k, v in counts.items() if k not in NOT_INPUT_PROBLEMS)
        dropped = inputs.dropped if inputs.dropped is not None else counts.get("dropped", 0)
        values = {f"{k} rate (Hz)": f"{rate:.2f}" for k, rate in inputs.rates.items()}
        values.update({f"{k} received": str(n) for k, n in inputs.totals.items()})
        values.update({
            "dropped frames": str(dropped), "bad messages": str(bad_total),
            "keyframes": str(status.keyframes), "keyframes accepted total": str(status.keyframes_accepted),
            "frame processing latency (s)": f"{inputs.frame_latency:.4f}", "frames waiting": str(inputs.waiting),
            "pose source": inputs.pose_mode, "active": str(status.active),
        })
        values.update({f"count {k}": str(v) for k, v in sorted(counts.items())})
        values.update({f"dropped: {k}": str(v) for k, v in sorted(inputs.dropped_reasons.items())})
        out = DiagnosticStatus(name=f"{self._node.get_fully_qualified_name()}: inputs", hardware_id="camera")
        if not status.active:
            out.level, out.message = DiagnosticStatus.WARN, "inactive"
        elif bad_total or dropped:
            out.level, out.message = DiagnosticStatus.WARN, f"{bad_total} bad messages, {dropped} dropped frames"
        elif inputs.rates.get("synced", 0.0) == 0 and status.keyframes == 0:
            out.level, out.message = DiagnosticStatus.WARN, "no frames yet"
        else:
            out.level, out.message = DiagnosticStatus.OK, "ok"
        out.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return out

    def _worker_status(self, worker: WorkerStats, last_error: str) -> DiagnosticStatus:
        out = DiagnosticStatus(name=f"{self._node.get_fully_qualified_name()}: reconstruction",
                               hardware_id="pipeline")
        out.values = [KeyValue(key=k, value=v) for k, v in {
            "reconstructions": str(worker.reconstructions), "failed": str(worker.failed),
            "last latency (s)": f"{worker.last_latency:.3f}", "busy": str(worker.busy), "queued": str(worker.queued),
            "pipeline loaded": str(worker.models_loaded), "last error": last_error,
        }.items()]
        out.level = DiagnosticStatus.WARN if worker.failed else DiagnosticStatus.OK
        out.message = last_error[:200] if last_error else "ok"
        return out
