"""Unit tests: message <-> numpy conversions, synchroniser, keyframe selection, node settings."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import Pose  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from amodal3d_ros.result import ReconstructedObject  # noqa: E402
from amodal3d_ros.ros import conversions as conv  # noqa: E402
from amodal3d_ros.ros.keyframes import KeyframeParams, KeyframeSelector, new_area_fraction  # noqa: E402
from amodal3d_ros.ros.sync import ApproximateTimeSync  # noqa: E402
from amodal3d_ros.scene import Frame, read_scene  # noqa: E402

from conftest import EXAMPLE_SCENE  # noqa: E402

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)


# ---------------------------------------------------------------- images
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_encodings_round_trip(encoding):
    if encoding == "rgb8":
        arr, want = RGB, RGB
    elif encoding == "bgr8":
        arr, want = RGB[..., ::-1], RGB
    elif encoding == "rgba8":
        arr, want = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)]), RGB
    elif encoding == "bgra8":
        arr, want = np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)]), RGB
    else:
        arr = RGB[..., 0]
        want = np.repeat(arr[..., None], 3, axis=2)
    msg = conv.numpy_to_image(arr, encoding)
    assert msg.step == arr.shape[1] * (1 if arr.ndim == 2 else arr.shape[2])
    np.testing.assert_array_equal(conv.image_to_numpy(msg), arr)
    np.testing.assert_array_equal(conv.image_to_rgb(msg), want)


def test_image_with_row_padding_and_big_endian():
    arr = RNG.integers(0, 65535, size=(4, 5), dtype=np.uint16)
    msg = Image(height=4, width=5, encoding="16UC1", is_bigendian=1, step=12)
    padded = np.zeros((4, 12), np.uint8)
    padded[:, :10] = arr.astype(">u2").view(np.uint8).reshape(4, 10)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(conv.image_to_numpy(msg), arr)


def test_depth_16uc1_mm_and_32fc1_m():
    depth = np.array([[0.5, 1.234], [0.0, 2.0]], np.float32)
    mm = conv.depth_to_image(depth, "16UC1")
    assert mm.encoding == "16UC1"
    np.testing.assert_allclose(conv.image_to_depth(mm), depth, atol=1e-3)
    m = conv.depth_to_image(np.array([[np.nan, 1.5], [-1.0, np.inf]], np.float32), "32FC1")
    np.testing.assert_array_equal(conv.image_to_depth(m), [[0, 1.5], [0, 0]])


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "32FC1"])
def test_wrong_colour_encoding_is_named(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    with pytest.raises(conv.ConversionError, match=encoding):
        conv.image_to_rgb(msg)


def test_truncated_image_data_is_reported():
    msg = conv.numpy_to_image(RGB, "rgb8")
    msg.data = bytes(msg.data)[:-5]
    with pytest.raises(conv.ConversionError, match="bytes"):
        conv.image_to_rgb(msg)
    with pytest.raises(conv.ConversionError, match="16UC1"):
        conv.image_to_depth(conv.numpy_to_image(RGB, "rgb8"))


def test_camera_info_K():
    K = np.array([[615.0, 0, 320], [0, 615, 240], [0, 0, 1]])
    info = conv.K_to_camera_info(K, 640, 480)
    np.testing.assert_array_equal(conv.camera_info_to_K(info), K)
    info.k = [float("nan")] + list(info.k[1:])
    with pytest.raises(conv.ConversionError, match="non-finite"):
        conv.camera_info_to_K(info)
    info.k = [0.0] * 9
    with pytest.raises(conv.ConversionError, match="focal"):
        conv.camera_info_to_K(info)


# ---------------------------------------------------------------- geometry
def _random_T(seed=1):
    import transforms3d
    r = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = transforms3d.euler.euler2mat(*r.uniform(-3, 3, 3))
    T[:3, 3] = r.normal(size=3)
    return T


def test_pose_round_trip():
    T = _random_T()
    p = conv.matrix_to_pose(T)
    np.testing.assert_allclose(conv.pose_to_matrix(p), T, atol=1e-9)
    with pytest.raises(conv.ConversionError, match="quaternion"):
        bad = Pose()
        bad.orientation.w = 0.0  # all-zero quaternion
        conv.pose_to_matrix(bad)


def test_pointcloud_round_trip_with_fields():
    pts = RNG.normal(size=(50, 3))
    colors = RNG.integers(0, 256, size=(50, 3), dtype=np.uint8)
    ids = np.arange(50, dtype=np.uint32) % 3
    msg = conv.build_cloud(pts, conv.make_header("world", 1.5), rgb=conv.pack_rgb(colors), object_id=ids)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "object_id"]
    assert msg.point_step == 20 and msg.width == 50
    rec = conv.parse_cloud(msg)
    np.testing.assert_allclose(conv.cloud_to_xyz(msg), pts.astype(np.float32), atol=0)
    np.testing.assert_array_equal(conv.unpack_rgb(rec["rgb"]), colors)
    np.testing.assert_array_equal(rec["object_id"], ids)
    assert conv.cloud_to_xyz(conv.build_cloud(np.zeros((0, 3)))).shape == (0, 3)


def test_mesh_round_trip():
    import trimesh
    m = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    msg = conv.mesh_to_msg(m.vertices, m.faces)
    v, f = conv.msg_to_mesh(msg)
    np.testing.assert_allclose(v, m.vertices)
    np.testing.assert_array_equal(f, m.faces)


def _object(oid="a", offset=(0, 0, 0)):
    import trimesh
    m = trimesh.creation.box(extents=(0.1, 0.06, 0.12))
    m.apply_translation(np.array(offset) + [0, 0, 0.06])
    T = np.eye(4)
    T[:3, 3] = offset
    return ReconstructedObject(
        id=oid, label="box", vertices=m.vertices, faces=m.faces, cloud=m.sample(200), visible_points=m.vertices[:4],
        T_frame_object=T, bbox_center=np.array([0, 0, 0.06]), bbox_size=np.array([0.1, 0.06, 0.12]),
        visible_fraction=0.4, confidence=0.7, views_used=2, occluders=["b"], completion_method="hull", seconds=0.5,
        visible_masks={0: np.pad(np.ones((4, 4), bool), 3)},
        occlusion_masks={0: np.pad(np.ones((2, 4), bool), ((3, 5), (6, 0)))})


def test_markers_and_cloud_of_objects():
    objs = [_object("a"), _object("b", (0.3, 0, 0))]
    header = conv.make_header("world", 2.0)
    markers = conv.objects_to_markers(objs, header)
    assert markers.markers[0].action == Marker.DELETEALL
    meshes = [m for m in markers.markers if m.type == Marker.TRIANGLE_LIST]
    texts = [m for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(meshes) == 2 and len(texts) == 2
    assert len(meshes[0].points) == 3 * len(objs[0].faces)
    assert "a" in texts[0].text
    assert not [m for m in markers.markers if m.type == Marker.LINE_LIST]
    objs[1].symmetry_axis = np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 1.0]])  # found rotationally symmetric
    axes = [m for m in conv.objects_to_markers(objs, header).markers if m.type == Marker.LINE_LIST]
    assert len(axes) == 1 and axes[0].id == 1
    assert [(p.x, p.z) for p in axes[0].points] == [(0.3, 0.0), (0.3, pytest.approx(0.14))]  # 12 cm box + 2 cm
    cloud = conv.objects_to_cloud(objs, header)
    rec = conv.parse_cloud(cloud)
    assert rec.size == 400 and set(np.unique(rec["object_id"])) == {0, 1}
    img = conv.draw_debug_image(np.zeros((10, 10, 3), np.uint8), objs, 0, ["a"])
    assert img.shape == (10, 10, 3) and img.any()


def test_object_message_round_trip():
    try:
        import amodal3d_ros.msg  # noqa: F401
    except ImportError:
        pytest.skip("amodal3d_ros messages not built (make install)")
    obj = _object("a", (0.1, 0.2, 0.0))
    msg = conv.object_to_msg(obj, conv.make_header("world", 3.0))
    back = conv.msg_to_object(msg)
    np.testing.assert_allclose(back.vertices, obj.vertices)
    np.testing.assert_allclose(back.T_frame_object, obj.T_frame_object, atol=1e-9)
    np.testing.assert_allclose(back.bbox_center, obj.bbox_center, atol=1e-9)
    np.testing.assert_allclose(back.cloud, obj.cloud, atol=1e-6)
    assert back.occluders == ["b"] and back.views_used == 2 and back.completion_method == "hull"
    assert not msg.has_symmetry_axis and back.symmetry_axis is None
    obj.symmetry_axis = np.array([[0.1, 0.2, 0.0], [0.0, 0.0, 1.0]])  # pooled about its vertical axis
    msg = conv.object_to_msg(obj, conv.make_header("world", 3.0))
    assert msg.has_symmetry_axis and msg.symmetry_axis_point.y == 0.2 and msg.symmetry_axis_direction.z == 1.0
    np.testing.assert_allclose(conv.msg_to_object(msg).symmetry_axis, obj.symmetry_axis)
    arr = conv.objects_to_array_msg([obj], conv.make_header("world", 3.0))
    assert arr.header.frame_id == "world" and len(arr.objects) == 1


# ---------------------------------------------------------------- synchroniser
def test_sync_matches_within_tolerance_and_drops_orphans():
    out = []
    s = ApproximateTimeSync(["rgb", "info", "depth"], out.append, tolerance=0.01, queue_size=3)
    s.add("rgb", 1.000, "r1")
    s.add("info", 1.000, "i1")
    assert not out  # depth may still come
    s.add("depth", 1.004, "d1")
    assert out == [{"rgb": "r1", "info": "i1", "depth": "d1"}]
    # an rgb whose depth never comes is dropped once depth moved past it
    s.add("rgb", 2.0, "r2")
    s.add("info", 2.0, "i2")
    s.add("depth", 2.5, "d3")
    assert s.dropped == 1 and len(out) == 1
    # out-of-order partner arrival, closest wins
    s.add("rgb", 3.0, "r3")
    s.add("depth", 3.008, "d4b")
    s.add("depth", 2.995, "d4a")
    s.add("info", 3.001, "i3")
    s.add("info", 3.1, "i4")
    assert len(out) == 1  # depth 2.995 is before the image: a closer one might still come
    s.add("depth", 3.2, "d5")
    assert out[-1] == {"rgb": "r3", "info": "i3", "depth": "d4a"}  # the closest partner wins
    assert s.matched == 2 and s.dropped == 1


def test_sync_missing_stream_overflows_and_reports():
    out = []
    s = ApproximateTimeSync(["rgb", "info"], out.append, tolerance=0.01, queue_size=2)
    for i in range(5):
        s.add("rgb", float(i), i)
    assert not out and s.dropped == 3
    assert s.waiting_for() == ["info"]
    assert any("info" in r for r in s.dropped_reasons)


def test_sync_optional_stream():
    out = []
    s = ApproximateTimeSync(["rgb", "info", "depth"], out.append, tolerance=0.01, optional=["depth"])
    s.add("rgb", 1.0, "r")
    s.add("info", 1.0, "i")
    assert out == [{"rgb": "r", "info": "i", "depth": None}]


# ---------------------------------------------------------------- keyframes
@pytest.fixture(scope="module")
def sample_scene():
    """The example scene shipped in the package: 4 posed RGB-D views at 640x480."""
    return read_scene(EXAMPLE_SCENE)


def test_keyframes_from_sample(sample_scene):
    sel = KeyframeSelector(KeyframeParams(max_keyframes=3))
    frames = sample_scene.frames
    assert sel.consider(frames[0])[0]
    ok, why = sel.consider(frames[0])
    assert not ok and "little new" in why  # same view twice adds nothing
    # a slightly moved copy of a keyframe is not new either
    f = frames[0]
    T = f.T_world_camera.copy()
    T[0, 3] += 0.005
    assert not sel.consider(Frame(rgb=f.rgb, K=f.K, depth=f.depth, T_world_camera=T, stamp=f.stamp + 0.1))[0]
    for fr in frames[1:]:
        assert sel.consider(fr)[0]
    assert len(sel) == 3 and sel.accepted_total == 4 and sel.evicted_total == 1
    assert sel.keyframes[0].frame is frames[1]  # oldest evicted
    assert new_area_fraction(frames[0], [frames[0]]) < 0.05
    assert sel.reset() == 3 and len(sel) == 0


def test_keyframes_new_area_with_static_camera(sample_scene):
    f = sample_scene.frames[0]
    sel = KeyframeSelector(KeyframeParams(min_new_area=0.1))
    sel.consider(f)
    changed = f.depth.copy()
    changed[:, :320] *= 0.8  # something moved in front of the camera
    ok, why = sel.consider(Frame(rgb=f.rgb, K=f.K, depth=changed, T_world_camera=f.T_world_camera, stamp=1.0))
    assert ok and "new" in why


def test_keyframes_unposed_image_change(sample_scene):
    frames = sample_scene.frames
    sel = KeyframeSelector(KeyframeParams(min_interval=0.5))
    unposed = [Frame(rgb=f.rgb, K=f.K, depth=f.depth, stamp=f.stamp) for f in frames]
    assert sel.consider(unposed[0])[0]
    assert not sel.consider(unposed[0])[0]
    assert sel.consider(unposed[1])[0]
    too_soon = Frame(rgb=frames[2].rgb, K=frames[2].K, stamp=unposed[1].stamp + 0.1)
    ok, why = sel.consider(too_soon)
    assert not ok and "s after" in why


def test_keyframe_params_validation():
    with pytest.raises(ValueError, match="keyframes.max"):
        KeyframeSelector(KeyframeParams(max_keyframes=0))

