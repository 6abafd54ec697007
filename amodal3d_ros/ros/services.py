"""The node's services: ``~/reconstruct``, ``~/reset`` and ``~/save_meshes``.

Offered in every lifecycle state (they answer why they cannot act), on reentrant callback groups:
``~/reconstruct`` waits for the worker, on a group of its own, while other calls, parameters,
subscriptions and diagnostics go on. Each waiting call holds an executor thread, so at most
MAX_WAITING_CALLS wait at once (the executor has threads for them besides its others); a call beyond
that is answered at once that the node is busy. Calls that come while a run waits to start share it.

An action server (reconstruct with feedback per stage and cancellation) would be created here,
beside the Trigger service, on the same group: its execute callback would submit a job with
``ReconstructionWorker.submit(..., wait=True)`` as ``reconstruct`` below does.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from rclpy.callback_groups import ReentrantCallbackGroup
from std_srvs.srv import Trigger

from amodal3d_ros.ros.jobs import ReconstructionWorker
from amodal3d_ros.safe_io import confined_folder

MESH_FORMATS = ("ply", "obj", "glb")
MAX_WAITING_CALLS = 8  # ~/reconstruct calls waiting at once, each on an executor thread


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


class NodeServices:
    """Service handlers over the node's parts: the worker (runs, last result), ``reset`` (drops the
    keyframes, prompts and queued frames; returns how many keyframes went) and the settings."""

    def __init__(self, node, worker: ReconstructionWorker, is_active: Callable[[], bool],
                 reset: Callable[[], int], settings: Callable[[], object]):
        self._node = node
        self._worker = worker
        self._is_active = is_active
        self._reset = reset
        self._settings = settings
        self._waiting_calls = threading.BoundedSemaphore(MAX_WAITING_CALLS)
        node.create_service(Trigger, "~/reconstruct", self.reconstruct, callback_group=ReentrantCallbackGroup())
        group = ReentrantCallbackGroup()
        node.create_service(Trigger, "~/reset", self.reset, callback_group=group)
        try:
            from amodal3d_ros.srv import SaveMeshes
        except ImportError:
            node.get_logger().error("amodal3d_ros/SaveMeshes is not built; ~/save_meshes is not offered")
            return
        node.create_service(SaveMeshes, "~/save_meshes", self.save_meshes, callback_group=group)

    def reconstruct(self, request, response):
        if not (self._is_active() and self._worker.running):
            response.success = False
            response.message = "node is not active (lifecycle state); configure and activate it first"
            return response
        if not self._waiting_calls.acquire(blocking=False):
            response.success = False
            response.message = (f"busy: {MAX_WAITING_CALLS} ~/reconstruct calls are waiting already; "
                                "call again when one has its answer")
            return response
        try:
            timeout = self._settings().reconstruct_timeout
            job = self._worker.submit("service", wait=True)
            finished = job.done.wait(timeout)
        finally:
            self._waiting_calls.release()
        if not finished:
            response.success = False
            response.message = f"reconstruction still running after {timeout:.0f} s"
            return response
        if job.error:
            response.success = False
            response.message = job.error
            return response
        r = job.result
        ids = ", ".join(o.id for o in r.objects)
        response.success = True
        response.message = (f"{len(r.objects)} objects [{ids}] in frame '{r.frame_id}' from "
                            f"{job.keyframes_used} keyframes, {job.latency:.2f} s")
        return response

    def reset(self, request, response):
        n = self._reset()
        response.success = True
        response.message = f"dropped {n} keyframes and all prompts"
        self._node.get_logger().info(response.message)
        return response

    def save_meshes(self, request, response):
        fmt = (request.format or "ply").lower().lstrip(".")
        response.files = []
        if fmt not in MESH_FORMATS:
            response.success, response.message = False, f"format must be ply, obj or glb, got '{request.format}'"
            return response
        last = self._worker.last()
        if last is None:
            response.success, response.message = False, "nothing reconstructed yet (call ~/reconstruct first)"
            return response
        objects = last[0].objects
        try:
            folder, files = save_meshes(objects, self._settings().save_root, request.directory, fmt)
        except Exception as exc:  # noqa: BLE001 - any failure is the caller's answer, never the node's end
            response.success, response.message = False, f"cannot save into '{request.directory}': {exc}"
            return response
        response.success = True
        response.files = [str(p) for p in files]
        response.message = f"wrote {len(objects)} meshes ({fmt}) to {folder}"
        return response
