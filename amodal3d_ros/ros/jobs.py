"""Reconstruction jobs: one worker thread runs them in order, off the executor, so that subscriptions,
services and diagnostics keep running meanwhile. The queue is bounded: at most one run waits to
start, and every request that comes meanwhile shares it (a run plans its work when it starts, from
the keyframes and prompts of then, which covers each request made before); automatic triggers that
come while one runs are merged into one follow-up run. ``AutoTrigger`` decides when new keyframes
call for a run.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from amodal3d_ros.ros.diagnostics import WorkerStats
from amodal3d_ros.ros.keyframes import Keyframe
from amodal3d_ros.ros.models import PipelineModels
from amodal3d_ros.scene import Target

STOP_TIMEOUT = 5.0  # s a stopping worker may take to finish its job


@dataclass
class Job:
    reason: str
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: Optional[str] = None
    latency: float = 0.0
    keyframes_used: int = 0


@dataclass
class ReconstructionRequest:
    """What one run reconstructs: the keyframes, the targets placed in them, the output frame."""
    keyframes: list[Keyframe]
    targets: list[Target]
    world_frame: str


class JobRefused(Exception):
    """The job cannot run (no keyframes, no prompt could be placed); the message says why."""


class AutoTrigger:
    """Counts new keyframes since the last run; ``trigger.mode`` says how many call for the next."""

    def __init__(self, mode: str, every_n: int):
        self._lock = threading.Lock()
        self._new_keyframes = 0
        self.reconfigure(mode, every_n)

    def reconfigure(self, mode: str, every_n: int) -> None:
        with self._lock:
            self._mode, self._every_n = mode, every_n

    def restart(self) -> None:
        """A run took the keyframes (or they were dropped): count from zero."""
        with self._lock:
            self._new_keyframes = 0

    def keyframe_added(self, set_full: bool, capacity: int) -> bool:
        """Count a new keyframe; True when an automatic run is due."""
        with self._lock:
            self._new_keyframes += 1
            if self._mode == "keyframes":
                return self._new_keyframes >= self._every_n
            if self._mode == "full":
                return set_full and self._new_keyframes >= capacity
            return False


class ReconstructionWorker:
    """The worker thread, its job queue, the models it runs and the last result.

    ``plan()`` turns the node's current keyframes and prompts into a request (or raises JobRefused);
    ``publish(result, request)`` sends a result out.
    """

    def __init__(self, models: PipelineModels, plan: Callable[[], ReconstructionRequest],
                 publish: Callable[[Any, ReconstructionRequest], None], record_error: Callable[[str, str], Any],
                 logger, now: Callable[[], float] = time.monotonic):
        self.models = models
        self._plan = plan
        self._publish = publish
        self._record_error = record_error
        self._logger = logger
        self._now = now
        self._lock = threading.Lock()
        self._jobs: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._busy = False
        self._queued: Optional[Job] = None  # the run that waits to start: later requests share it
        self._auto_pending = False
        self._last: Optional[tuple[Any, list[Keyframe], list[Target]]] = None
        self._stats = WorkerStats()

    # ------------------------------------------------------------------ thread
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._jobs = queue.Queue()  # a worker that is still finishing keeps its own queue
        self._thread = threading.Thread(target=self._loop, args=(self._jobs,), name="amodal3d-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after its current job (waits up to STOP_TIMEOUT s for it)."""
        if self.running:
            self._jobs.put(None)
            self._thread.join(timeout=STOP_TIMEOUT)
        self._thread = None
        with self._lock:
            abandoned, self._queued = self._queued, None
        if abandoned is not None:  # its callers get an answer now, not at their timeout
            abandoned.error = "the reconstruction worker stopped before this run started"
            abandoned.done.set()

    # ------------------------------------------------------------------ jobs
    def submit(self, reason: str, wait: bool) -> Job:
        """Queue a run, or share the one that waits to start (returned). An automatic one (``wait``
        False) while another runs or waits is merged into a single follow-up run and returned already done."""
        with self._lock:
            if wait and self._queued is not None:
                return self._queued
            if not wait and (self._busy or self._queued is not None):
                self._auto_pending = True
                return _done(Job(reason=reason))
            job = self._queued = Job(reason=reason)
            self._jobs.put(job)
        return job

    def last(self) -> Optional[tuple[Any, list[Keyframe], list[Target]]]:
        """(Reconstruction, keyframes, targets) of the last successful run, None before one."""
        with self._lock:
            return self._last

    def remember(self, result, keyframes: list[Keyframe], targets: list[Target]) -> None:
        with self._lock:
            self._last = (result, keyframes, targets)

    def stats(self) -> WorkerStats:
        with self._lock:
            return WorkerStats(reconstructions=self._stats.reconstructions, failed=self._stats.failed,
                               last_latency=self._stats.last_latency, busy=self._busy,
                               models_loaded=self.models.loaded, queued=int(self._queued is not None))

    def _loop(self, jobs: "queue.Queue[Optional[Job]]") -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            with self._lock:
                self._busy = True
                if self._queued is job:  # from now on a request needs a run of its own
                    self._queued = None
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._busy = False
                    again = self._auto_pending and self._queued is None
                    self._auto_pending = False
                job.done.set()
            if again and self.models.loaded:  # models are loaded exactly while the node is active
                self.submit("auto (coalesced)", wait=False)

    def _run(self, job: Job) -> None:
        t0 = self._now()
        try:
            request = self._plan()
        except JobRefused as exc:
            job.error = str(exc)
            return
        frames = [k.frame for k in request.keyframes]
        try:
            result = self.models.reconstruct(frames, request.targets or None, request.world_frame)
        except Exception as exc:  # noqa: BLE001 - survive any pipeline failure, report it
            self._fail(job, "reconstruct", f"reconstruction failed: {type(exc).__name__}: {exc}")
            return
        self.remember(result, request.keyframes, request.targets)
        try:
            self._publish(result, request)
        except Exception as exc:  # noqa: BLE001
            self._fail(job, "publish", f"publishing the result failed: {type(exc).__name__}: {exc}", count=False)
            return
        job.result, job.keyframes_used = result, len(request.keyframes)
        job.latency = self._now() - t0
        with self._lock:
            self._stats.reconstructions += 1
            self._stats.last_latency = job.latency
        self._logger.info(
            f"reconstruction ({job.reason}): {len(result.objects)} objects from {len(frames)} keyframes in "
            f"{job.latency:.2f} s (pipeline {result.seconds_total:.2f} s), frame '{result.frame_id}'")
        for w in getattr(result, "warnings", []) or []:
            self._logger.warning(f"pipeline: {w}")

    def _fail(self, job: Job, kind: str, message: str, count: bool = True) -> None:
        """A run that failed: its answer, the error counters, the traceback in the log."""
        if count:
            with self._lock:
                self._stats.failed += 1
        job.error = message
        self._record_error(kind, message)
        self._logger.error(traceback.format_exc())


def _done(job: Job) -> Job:
    job.done.set()
    return job
