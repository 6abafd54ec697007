"""Unit tests of the node's parts (amodal3d_ros/ros/): frame assembly (sync, then decoding), camera
info cache, keyframe and trigger reconfiguration, prompt placement, the worker and its models, and
the lifecycle of an in-process node (what each transition creates and releases)."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from amodal3d_ros.ros import conversions as conv  # noqa: E402
from amodal3d_ros.ros import inputs as inputs_module  # noqa: E402
from amodal3d_ros.ros.inputs import BadInput, CameraInfoCache, FrameAssembler  # noqa: E402
from amodal3d_ros.ros.jobs import AutoTrigger, JobRefused, ReconstructionRequest, ReconstructionWorker  # noqa: E402
from amodal3d_ros.ros.keyframes import Keyframe, KeyframeParams, KeyframeSelector  # noqa: E402
from amodal3d_ros.ros.models import PipelineModels  # noqa: E402
from amodal3d_ros.ros.prompts import Prompt, resolve_prompts  # noqa: E402
from amodal3d_ros.ros.settings import NodeSettings  # noqa: E402
from amodal3d_ros.ros.sync import ApproximateTimeSync  # noqa: E402
from amodal3d_ros.config import PipelineConfig  # noqa: E402
from amodal3d_ros.scene import Frame  # noqa: E402

W, H = 64, 48
K = np.array([[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]])


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)

    warning = error = info


def settings(**changes) -> NodeSettings:
    return NodeSettings.from_params({"sync.tolerance": 0.01, "sync.queue_size": 3, **changes})


def messages(t: float, depth: float = 1.0, info_size=(W, H), encoding="rgb8"):
    """rgb, camera_info, depth and pose messages of one camera frame at stamp ``t``."""
    header = conv.make_header("cam", t)
    rgb = conv.numpy_to_image(np.full((H, W, 3), 100, np.uint8), "rgb8", header)
    rgb.encoding = encoding
    return {"rgb": rgb, "camera_info": conv.K_to_camera_info(K, *info_size, header),
            "depth": conv.depth_to_image(np.full((H, W), depth, np.float32), "16UC1", header),
            "pose": PoseStamped(header=conv.make_header("world", t), pose=conv.matrix_to_pose(np.eye(4)))}


@pytest.fixture
def assembler(monkeypatch):
    """A FrameAssembler (depth and pose topic) that records frames, problems and every image decoded."""
    decoded = []
    for name in ("image_to_rgb", "image_to_depth"):
        real = getattr(conv, name)

        def counting(msg, real=real, name=name):
            decoded.append((name, conv.stamp_to_sec(msg.header.stamp)))
            return real(msg)
        monkeypatch.setattr(inputs_module.conv, name, counting)
    frames, problems = [], []
    asm = FrameAssembler(settings(pose_source="topic"), "topic", lambda f, fid: frames.append((f, fid)),
                         lambda kind, msg: problems.append((kind, msg)))
    return SimpleNamespace(asm=asm, frames=frames, problems=problems, decoded=decoded)


def feed(asm, msgs, streams=("pose", "camera_info", "depth", "rgb")):
    for stream in streams:
        asm.add(stream, msgs[stream])


# ---------------------------------------------------------------- inputs: sync, then decoding
def test_sync_keeps_exact_stamp_frames_and_decodes_only_those(assembler):
    a = assembler
    feed(a.asm, messages(1.0))
    feed(a.asm, messages(2.0), streams=("pose", "camera_info", "rgb"))  # no depth: sync drops it
    feed(a.asm, messages(3.0))  # depth moves past 2.0: that frame is dropped now
    feed(a.asm, messages(4.0), streams=("pose", "depth", "rgb"))  # no camera_info: the camera's kept one serves
    assert [f.stamp for f, _ in a.frames] == [1.0, 3.0, 4.0]
    assert all(fid == "cam" and f.depth.shape == (H, W) and f.T_world_camera is not None for f, fid in a.frames)
    assert sorted({t for _, t in a.decoded}) == [1.0, 3.0, 4.0], "a frame that sync dropped was decoded"
    assert a.asm.sync.drops()[0] == 1
    assert [kind for kind, _ in a.problems] == ["dropped"] and "no depth" in a.problems[0][1]


@pytest.mark.parametrize("kind, msgs", [
    ("rgb_encoding", messages(1.0, encoding="yuv422")),
    ("depth_invalid", messages(1.0, depth=0.0)),
    ("size_mismatch", messages(1.0, info_size=(32, 24))),
])
def test_bad_input_is_found_after_sync_and_reported(assembler, kind, msgs):
    feed(assembler.asm, msgs)
    assert assembler.frames == [] and [k for k, _ in assembler.problems] == [kind]
    assert assembler.asm.stats().dropped == 0  # synchronised, then refused: not a dropped frame


def test_pose_in_another_frame_is_refused(assembler):
    msgs = messages(1.0)
    msgs["pose"].header.frame_id = "odom"
    feed(assembler.asm, msgs)
    assert assembler.problems[0][0] == "pose_frame" and "'odom'" in assembler.problems[0][1]


def test_sync_reconfigure_applies_to_queued_messages():
    out = []
    sync = ApproximateTimeSync(["rgb", "info"], out.append, tolerance=0.001, queue_size=3)
    sync.add("rgb", 1.0, "rgb")
    sync.reconfigure(tolerance=0.05, queue_size=5)
    sync.add("info", 1.03, "info")
    assert out == [{"rgb": "rgb", "info": "info"}]
    assert (sync.tolerance, sync.queue_size, sync.stale_after) == (0.05, 5, 2.0)
    with pytest.raises(ValueError):
        sync.reconfigure(tolerance=-1.0, queue_size=5)


def test_camera_info_is_checked_once_per_frame_id_and_again_when_it_changes(monkeypatch):
    calls = []
    real = conv.camera_info_to_K
    monkeypatch.setattr(inputs_module.conv, "camera_info_to_K", lambda msg: calls.append(1) or real(msg))
    cache = CameraInfoCache()
    info = conv.K_to_camera_info(K, W, H, conv.make_header("cam", 1.0))
    first = cache.intrinsics(info)
    first[0, 0] = 0.0  # a frame's copy: changing it leaves the cache alone
    assert np.array_equal(cache.intrinsics(info), K) and len(calls) == 1
    cache.intrinsics(conv.K_to_camera_info(K, W, H, conv.make_header("other_cam", 1.0)))
    assert len(calls) == 2
    bad = conv.K_to_camera_info(K, W, H, conv.make_header("cam", 2.0))
    bad.k[0] = float("inf")
    with pytest.raises(BadInput) as exc:
        cache.intrinsics(bad)
    assert exc.value.kind == "camera_info" and "non-finite" in str(exc.value)


# ---------------------------------------------------------------- keyframes and trigger
def posed_frame(x: float, stamp: float) -> Frame:
    T = np.eye(4)
    T[0, 3] = x
    return Frame(rgb=np.zeros((H, W, 3), np.uint8), K=K, depth=np.ones((H, W), np.float32), T_world_camera=T,
                 stamp=stamp)


def test_keyframes_reconfigure_evicts_the_oldest_and_refuses_bad_params():
    sel = KeyframeSelector(KeyframeParams(max_keyframes=4))
    assert sel.newest_seq() is None
    for i in range(4):
        assert sel.consider(posed_frame(0.1 * i, float(i)), "cam")[0]
    sel.reconfigure(KeyframeParams(max_keyframes=2, min_translation=0.5))
    assert [k.seq for k in sel.snapshot()] == [2, 3] and sel.evicted_total == 2 and sel.newest_seq() == 3
    assert not sel.consider(posed_frame(0.4, 5.0), "cam")[0]  # the new min_translation applies
    with pytest.raises(ValueError, match="keyframes.max"):
        sel.reconfigure(KeyframeParams(max_keyframes=0))
    assert sel.params.max_keyframes == 2


def test_auto_trigger_modes():
    every_two = AutoTrigger("keyframes", 2)
    assert [every_two.keyframe_added(False, 8) for _ in range(3)] == [False, True, True]
    every_two.restart()
    assert not every_two.keyframe_added(False, 8)
    full = AutoTrigger("full", 2)
    assert not full.keyframe_added(False, 2) and full.keyframe_added(True, 2)
    full.reconfigure("service", 1)
    assert not full.keyframe_added(True, 1)


# ---------------------------------------------------------------- prompts
def test_prompts_become_targets_in_the_right_keyframe():
    kfs = [Keyframe(frame=posed_frame(0.0, 1.0), frame_id="cam", seq=0),
           Keyframe(frame=posed_frame(0.2, 2.0), frame_id="cam", seq=1)]
    pixel_of_first = Prompt(stamp=1.0, frame_id="", xyz=np.array([10.0, 20.0, 0.0]), pixel_mode=True, kf_seq=1)
    point = Prompt(stamp=0.0, frame_id="world", xyz=np.array([0.0, 0.0, 1.0]), pixel_mode=False, kf_seq=None)
    outside = Prompt(stamp=0.0, frame_id="", xyz=np.array([500.0, 20.0, 0.0]), pixel_mode=True, kf_seq=None)
    targets, warnings = resolve_prompts(kfs, [pixel_of_first, point, outside], "world", "world", 0.01)
    assert [(t.id, t.frame, t.pixel) for t in targets] == [("target0", 0, (10, 20)), ("target1", 1, (20, 24))]
    assert len(warnings) == 1 and "prompt 2: pixel (500, 20) outside the 64x48 keyframe" in warnings[0]


# ---------------------------------------------------------------- worker and models
class FakeReconstructor:
    instances: list = []

    def __init__(self, config, fail=False):
        self.config, self.fail, self.closed = config, fail, False
        self.release = threading.Event()
        self.release.set()
        FakeReconstructor.instances.append(self)

    def reconstruct(self, frames, targets, world_frame):
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("boom")
        return SimpleNamespace(objects=[], frame_id=world_frame, seconds_total=0.0, warnings=[])

    def close(self):
        self.closed = True


def test_models_load_release_and_reload_after_a_change():
    FakeReconstructor.instances = []
    models = PipelineModels(PipelineConfig(), FakeReconstructor, Log())
    with pytest.raises(RuntimeError, match="not loaded"):
        models.reconstruct([], None, "world")
    models.load()
    models.load()  # already loaded with these settings
    assert models.loaded and len(FakeReconstructor.instances) == 1
    changed = PipelineConfig.from_flat_dict({"fuse.voxels": 24})
    models.reconfigure(changed)
    models.reconstruct([], None, "world")
    first, second = FakeReconstructor.instances
    assert first.closed and not second.closed and second.config == changed
    models.release()
    assert second.closed and not models.loaded


def wait_until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def make_worker(plan, factory=FakeReconstructor):
    published, errors = [], []
    models = PipelineModels(PipelineConfig(), factory, Log())
    models.load()
    worker = ReconstructionWorker(models, plan, lambda result, request: published.append(request),
                                  lambda kind, msg: errors.append((kind, msg)), Log())
    worker.start()
    return worker, published, errors


def test_worker_runs_jobs_merges_automatic_ones_and_reports_failures():
    request = ReconstructionRequest(keyframes=[Keyframe(frame=posed_frame(0, 1.0), frame_id="cam", seq=0)],
                                    targets=[], world_frame="world")
    worker, published, errors = make_worker(lambda: request)
    try:
        job = worker.submit("service", wait=True)
        assert job.done.wait(10) and job.error is None and job.keyframes_used == 1
        assert worker.last()[1] == request.keyframes and worker.stats().reconstructions == 1
        slow = FakeReconstructor.instances[-1]
        slow.release.clear()  # the next run blocks: automatic triggers meanwhile are merged
        running = worker.submit("auto", wait=False)
        merged = [worker.submit("auto", wait=False) for _ in range(3)]
        assert all(j.done.is_set() for j in merged)
        slow.release.set()
        assert running.done.wait(10)
        wait_until(lambda: len(published) == 3 and not worker.stats().busy)  # the merged ones ran once
        time.sleep(0.2)
        assert len(published) == 3
        slow.fail = True
        failed = worker.submit("service", wait=True)
        assert failed.done.wait(10) and "reconstruction failed: RuntimeError: boom" in failed.error
        assert worker.stats().failed == 1 and errors[-1][0] == "reconstruct"
    finally:
        worker.stop()
    assert not worker.running


def test_worker_answers_a_refused_plan():
    def plan():
        raise JobRefused("no keyframes yet")

    worker, published, _ = make_worker(plan)
    try:
        job = worker.submit("service", wait=True)
        assert job.done.wait(10) and job.error == "no keyframes yet" and not published
    finally:
        worker.stop()


# ---------------------------------------------------------------- the node's lifecycle, in process
@pytest.fixture
def node():
    from amodal3d_ros.ros.node import Amodal3dNode

    context = rclpy.Context()
    rclpy.init(context=context)
    FakeReconstructor.instances = []
    node = Amodal3dNode(reconstructor_factory=FakeReconstructor, context=context, namespace="/node_parts_test")
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def topics(node) -> set[str]:
    return {p.topic_name for p in node.publishers} | {s.topic_name for s in node.subscriptions}


def test_lifecycle_creates_and_releases_in_each_transition(node):
    ns = "/node_parts_test/amodal3d"
    outputs = {f"{ns}/objects", f"{ns}/completed_cloud", f"{ns}/markers", f"{ns}/debug/segmentation", "/diagnostics"}
    camera = {"/node_parts_test/rgb/image", "/node_parts_test/rgb/camera_info", "/node_parts_test/depth/image",
              "/node_parts_test/prompt"}
    answer = node.service_handlers.reconstruct(Trigger.Request(), Trigger.Response())
    assert not answer.success and "not active" in answer.message  # services answer in every state
    assert not (outputs | camera) & topics(node) and not FakeReconstructor.instances

    assert node.trigger_configure() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
    assert outputs <= topics(node) and not camera & topics(node)
    assert node.worker.running and not node.models.loaded  # models wait for activation

    assert node.trigger_activate() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
    assert camera <= topics(node) and node.models.loaded and node.active

    assert node.trigger_deactivate() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
    assert not camera & topics(node) and not node.models.loaded and FakeReconstructor.instances[0].closed
    assert outputs <= topics(node)

    node.keyframes.consider(posed_frame(0.0, 1.0), "cam")
    assert node.trigger_cleanup() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
    assert not outputs & topics(node) and not node.worker.running and len(node.keyframes) == 0


def test_parameter_changes_reach_the_parts(node):
    from rclpy.parameter import Parameter

    for i in range(3):
        node.keyframes.consider(posed_frame(0.1 * i, float(i)), "cam")
    result = node.set_parameters([Parameter("keyframes.max", value=2), Parameter("sync.tolerance", value=0.5)])
    assert all(r.successful for r in result)
    assert len(node.keyframes) == 2 and node.keyframes.params.max_keyframes == 2
    assert node.settings.sync_tolerance == 0.5
    bad = node.set_parameters([Parameter("keyframes.max", value=0)])
    assert not bad[0].successful and "keyframes.max" in bad[0].reason and len(node.keyframes) == 2
