"""Per-point confidence (confidence.py): observed and inferred points, the shipped calibration, the
outputs that carry it (PLY files, result.json, PointCloud2, RViz colours), and its reliability on a
rendered scene."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import trimesh

from amodal3d_ros.complete.base import Completer
from amodal3d_ros.confidence import (CALIBRATION_PATH, FEATURES, TOLERANCE, SurfaceEvidence, calibration_key,
                                     load_calibration)
from amodal3d_ros.confidence_fit import fit_isotonic, fit_logistic, reliability, true_distance
from amodal3d_ros.result import CONFIDENCE_TOLERANCE, ReconstructedObject, Reconstruction


@pytest.fixture(scope="module")
def by_views(camera_scene):
    """views -> the camera scene's target completed by the shipped model from its first 1, 2 and 4 views."""
    from amodal3d_ros.config import PipelineConfig
    from amodal3d_ros.evaluate import subset
    from amodal3d_ros.pipeline import Reconstructor

    reconstructor = Reconstructor(PipelineConfig(device="cpu"))
    out = {}
    for views in (1, 2, 4):
        scene = subset(camera_scene.scene, views)
        out[views] = reconstructor.reconstruct(scene.frames, scene.targets, scene.world_frame).object(
            scene.targets[0].id)
    return out


def test_measured_points_are_observed_and_confident_far_inferred_ones_less(by_views):
    obj = by_views[1]  # one view: most of the object is inferred
    from scipy.spatial import cKDTree

    assert obj.cloud_confidence.shape == obj.cloud_observed.shape == (len(obj.cloud),)
    assert obj.vertex_confidence.shape == obj.vertex_observed.shape == (len(obj.vertices),)
    for confidence in (obj.cloud_confidence, obj.vertex_confidence):
        assert confidence.dtype == np.float32 and np.all((confidence >= 0) & (confidence <= 1))
    to_measured = cKDTree(obj.visible_points).query(obj.cloud)[0]
    on_measured = to_measured < 0.001
    far = to_measured > 0.02
    assert on_measured.sum() > 50 and far.sum() > 50, "the scene should have measured and hidden surface"
    assert obj.cloud_observed[on_measured].all() and not obj.cloud_observed[far].any()
    assert obj.cloud_confidence[on_measured].mean() > 0.9
    assert obj.cloud_confidence[far].mean() < obj.cloud_confidence[on_measured].mean() - 0.2
    assert obj.confidence == pytest.approx(float(obj.cloud_confidence.mean()), abs=1e-6)


def test_confidence_is_about_as_often_right_as_it_says(by_views, camera_scene):
    """Reliability on one rendered scene (train-split objects, which the calibration never saw), from 1, 2
    and 4 views: the mean predicted confidence is near the share of points truly within 5 mm."""
    objects = list(by_views.values())
    truth = camera_scene.gt_meshes[objects[0].id]
    within = np.concatenate([true_distance(truth, obj.cloud) <= TOLERANCE for obj in objects])
    report = reliability(np.concatenate([obj.cloud_confidence for obj in objects]), within, bins=5)
    assert abs(report["mean_predicted"] - report["share_within"]) < 0.12, report
    assert report["ece"] < 0.15, report


def test_shipped_calibration_loads_for_every_method():
    doc = json.loads(CALIBRATION_PATH.read_text())
    assert doc["tolerance_m"] == TOLERANCE == CONFIDENCE_TOLERANCE and doc["features"] == list(FEATURES)
    calibrations = load_calibration()
    for method in ("learned", "extrusion", "hull"):
        assert method in calibrations, f"no calibration for {method}"
        calibration = calibrations[method]
        assert np.all(np.diff(calibration.score_knots) >= 0) and np.all(np.diff(calibration.probability_knots) >= 0)
        assert 0.0 <= calibration.probability_knots[0] <= calibration.probability_knots[-1] <= 1.0
        fitted = doc["methods"][method]["fitted_on"]
        assert fitted["seed"] != 20261127, "fitted on the benchmark's scenes"


class _Uncalibrated(Completer):
    name = "no_calibration_for_this"

    def certainty(self) -> float:
        return 0.3


def test_a_completer_without_calibration_gets_its_certainty_on_inferred_points(by_views):
    obj = by_views[1]
    assert calibration_key("no_calibration_for_this", False) not in load_calibration()
    evidence = _evidence_of(obj)
    surface = SurfaceEvidence(evidence, np.zeros((64,) * 3, np.float32))
    assessed = surface.assess(obj.cloud, _Uncalibrated())
    np.testing.assert_array_equal(assessed.confidence, np.where(assessed.observed, 1.0, 0.3).astype(np.float32))


def _evidence_of(obj):
    """An evidence grid (world frame = grid frame) around the object, its visible points the observed ones."""
    from amodal3d_ros.fuse import EvidenceGrid

    n = 32
    origin = obj.cloud.min(axis=0) - 0.01
    voxel = float((obj.cloud.max(axis=0) - origin).max() + 0.01) / n
    empty = np.zeros((n,) * 3, bool)
    return EvidenceGrid(T_world_grid=np.eye(4), origin=origin, voxel=voxel, sdf=np.ones((n,) * 3, np.float32),
                        observed=np.zeros((n,) * 3, np.float32), free=empty, other=empty, below=empty,
                        visible_points=obj.visible_points, views_used=2)


def test_fit_recovers_a_known_probability():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(20000, 1))
    truth = 1 / (1 + np.exp(-(2 * x[:, 0] - 1)))
    labels = rng.uniform(size=len(x)) < truth
    coefficients, intercept = fit_logistic(x, labels)
    assert coefficients[0] == pytest.approx(2, abs=0.15) and intercept == pytest.approx(-1, abs=0.15)
    knots, probability = fit_isotonic(x[:, 0] * coefficients[0] + intercept, labels)
    assert np.all(np.diff(probability) >= 0)
    assert np.abs(np.interp(x[:, 0] * 2 - 1, knots, probability) - truth).mean() < 0.03


def _object_with_confidence() -> ReconstructedObject:
    mesh = trimesh.creation.box(extents=(0.1, 0.06, 0.12))
    cloud = np.asarray(trimesh.sample.sample_surface(mesh, 300, seed=1)[0])
    n = len(mesh.vertices)
    return ReconstructedObject(
        id="a", label="box", vertices=np.asarray(mesh.vertices), faces=np.asarray(mesh.faces), cloud=cloud,
        visible_points=cloud[:20], T_frame_object=np.eye(4), bbox_center=np.zeros(3), bbox_size=np.ones(3),
        visible_fraction=0.5, confidence=0.6, views_used=2, completion_method="learned",
        cloud_confidence=np.linspace(0, 1, len(cloud)).astype(np.float32),
        cloud_observed=np.arange(len(cloud)) % 3 == 0,
        vertex_confidence=np.linspace(1, 0, n).astype(np.float32), vertex_observed=np.arange(n) < n // 2)


def test_ply_files_keep_confidence_and_observed_and_still_read_as_xyz(tmp_path):
    obj = _object_with_confidence()
    out = Reconstruction(objects=[obj], frame_id="world", camera_poses=[np.eye(4)], poses_estimated=False,
                         seconds_total=1.0).write(tmp_path / "out")
    doc = json.loads((out / "result.json").read_text())
    entry = doc["objects"][0]
    assert doc["confidence_tolerance_m"] == CONFIDENCE_TOLERANCE
    assert entry["cloud_properties"] == ["confidence", "observed"]
    assert entry["mesh_vertex_properties"] == ["confidence", "observed"]
    assert entry["observed_share"] == pytest.approx(float(obj.cloud_observed.mean()), abs=1e-4)

    cloud = trimesh.load(out / entry["cloud"])  # a reader that knows only xyz
    np.testing.assert_allclose(cloud.vertices, obj.cloud, atol=1e-6)
    fields = cloud.metadata["_ply_raw"]["vertex"]["data"]
    np.testing.assert_array_equal(fields["confidence"], obj.cloud_confidence)
    np.testing.assert_array_equal(fields["observed"].astype(bool), obj.cloud_observed)

    mesh = trimesh.load(out / entry["mesh"], process=False)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) == len(obj.faces)
    np.testing.assert_allclose(mesh.vertices, obj.vertices, atol=1e-6)
    vertex_fields = mesh.metadata["_ply_raw"]["vertex"]["data"]
    np.testing.assert_array_equal(vertex_fields["confidence"], obj.vertex_confidence)
    np.testing.assert_array_equal(vertex_fields["observed"].astype(bool), obj.vertex_observed)
    visible = trimesh.load(io.BytesIO((out / entry["visible"]).read_bytes()), file_type="ply")
    assert visible.vertices.shape == (20, 3)


def test_an_object_without_per_point_confidence_writes_plain_xyz(tmp_path):
    obj = _object_with_confidence()
    obj.cloud_confidence = obj.cloud_observed = obj.vertex_confidence = obj.vertex_observed = None
    header = obj.file_contents()["_cloud.ply"].split(b"end_header")[0].decode()
    assert "confidence" not in header and "observed" not in header


def test_point_clouds_and_markers_carry_confidence():
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import PointField
    from visualization_msgs.msg import Marker

    from amodal3d_ros.ros import conversions as conv

    obj = _object_with_confidence()
    header = conv.make_header("world", 1.0)
    clouds = [conv.objects_to_cloud([obj], header)]  # the node's ~/completed_cloud
    if _messages_built():
        clouds.append(conv.object_to_msg(obj, header).completed_cloud)  # ReconstructedObject.completed_cloud
        back = conv.msg_to_object(conv.object_to_msg(obj, header))
        np.testing.assert_array_equal(back.cloud_confidence, obj.cloud_confidence)
        np.testing.assert_array_equal(back.cloud_observed, obj.cloud_observed)
    for cloud in clouds:
        types = {f.name: f.datatype for f in cloud.fields}
        assert types["confidence"] == PointField.FLOAT32 and types["observed"] == PointField.FLOAT32
        rec = conv.parse_cloud(cloud)
        np.testing.assert_array_equal(rec["confidence"], obj.cloud_confidence)
        np.testing.assert_array_equal(rec["observed"], obj.cloud_observed.astype(np.float32))

    mesh = next(m for m in conv.objects_to_markers([obj], header).markers if m.type == Marker.TRIANGLE_LIST)
    assert len(mesh.colors) == len(mesh.points) == 3 * len(obj.faces)
    colors = np.array([[c.r, c.g, c.b] for c in mesh.colors])
    corners = np.asarray(obj.faces).reshape(-1)
    base = conv.object_color(0) / 255.0
    observed = obj.vertex_observed[corners]
    np.testing.assert_allclose(colors[observed], np.tile(base, (observed.sum(), 1)), atol=1e-6)
    # Inferred surface is paler (nearer white), and palest where least confident.
    whiteness = colors[~observed].mean(axis=1)
    assert np.all(whiteness > base.mean() + 0.05)
    confidence = obj.vertex_confidence[corners][~observed]
    assert whiteness[np.argmin(confidence)] >= whiteness[np.argmax(confidence)]


def _messages_built() -> bool:
    try:
        import amodal3d_ros.msg  # noqa: F401
    except ImportError:
        return False
    return True
