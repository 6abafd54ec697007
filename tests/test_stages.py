"""Each pipeline stage on a scene the project renders itself (ground truth known)."""
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from amodal3d_ros.complete import constrain, make_completer
from amodal3d_ros.config import CompleteConfig, FuseConfig, PipelineConfig, PoseConfig
from amodal3d_ros.fuse import fuse_object
from amodal3d_ros.geometry import invert, transform_points
from amodal3d_ros.mesh import mesh_from_occupancy, sample_surface, shrink_unobserved
from amodal3d_ros.metrics import occupancy, point_scores, score_object
from amodal3d_ros.poses import estimate_poses
from amodal3d_ros.scene import read_scene
from amodal3d_ros.segment import DepthSegmenter, TargetNotFoundError
from amodal3d_ros.segment.base import Target


@pytest.fixture(scope="module")
def segmentation(synthetic_scene):
    scene = synthetic_scene.scene
    poses = [f.T_world_camera for f in scene.frames]
    return DepthSegmenter().segment(scene.frames, poses, scene.targets)


def test_support_plane_is_the_table_top(synthetic_scene, segmentation):
    plane = segmentation.plane
    assert plane.normal[2] > 0.999
    assert abs(-plane.offset - synthetic_scene.meta["table"]["top_z"]) < 0.004


def test_target_mask_matches_ground_truth(synthetic_scene, segmentation):
    target = synthetic_scene.scene.targets[0]
    obj = segmentation.object(target.id)
    value = next(o["instance_value"] for o in synthetic_scene.meta["objects"] if o["id"] == target.id)
    for i, inst in enumerate(synthetic_scene.instance):
        truth = inst == value
        if truth.sum() < 50:
            continue
        mask = obj.masks.get(i, np.zeros_like(truth))
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.75, f"frame {i}: mask IoU {iou:.2f}"


def test_target_on_background_is_a_clear_error(synthetic_scene):
    scene = synthetic_scene.scene
    poses = [f.T_world_camera for f in scene.frames]
    with pytest.raises(TargetNotFoundError, match="not on any segmented object"):
        DepthSegmenter().segment(scene.frames, poses, [Target("nothing", 0, (2, 2))])


def test_unposed_registration_recovers_relative_poses(synthetic_scene):
    frames = synthetic_scene.scene.frames
    poses, _ = estimate_poses(frames, PoseConfig())
    for k in range(1, len(frames)):
        truth = invert(frames[0].T_world_camera) @ frames[k].T_world_camera
        error = invert(truth) @ poses[k]
        angle = np.degrees(np.arccos(np.clip((np.trace(error[:3, :3]) - 1) / 2, -1, 1)))
        assert np.linalg.norm(error[:3, 3]) < 0.015 and angle < 1.5, (k, error[:3, 3], angle)


def test_evidence_agrees_with_ground_truth(synthetic_scene, segmentation):
    scene = synthetic_scene.scene
    target = scene.targets[0]
    obj = segmentation.object(target.id)
    ev = fuse_object(scene.frames, [f.T_world_camera for f in scene.frames], segmentation, obj, FuseConfig())
    centres = transform_points(ev.T_world_grid, ev.centres().reshape(-1, 3))
    inside = occupancy(synthetic_scene.gt_meshes[target.id], centres).reshape(ev.shape)
    # Seen-through space is outside the object; the observed surface lies on it.
    assert ev.free.sum() > 100 and ev.surface.sum() > 20
    assert inside[ev.free & ~ev.surface].mean() < 0.02
    surface_pts = centres.reshape(ev.shape + (3,))[ev.surface]
    d = cKDTree(synthetic_scene.gt_meshes[target.id].sample(20000)).query(surface_pts)[0]
    assert np.median(d) < 1.5 * ev.voxel
    assert ev.below[:, :, 0].all() and not ev.below[:, :, -1].any()
    assert ev.unknown.sum() > 0 and ev.views_used >= 1

    # The constraints' grid: the same bounds in cells twice as fine, and a measured surface that hugs
    # the truth more closely than the coarse cells can.
    fine = ev.fine
    assert fine.shape == (2 * ev.shape[0],) * 3 and fine.fine is None
    assert np.allclose(fine.origin, ev.origin) and np.isclose(fine.size, ev.size)
    fine_centres = transform_points(fine.T_world_grid, fine.centres().reshape(-1, 3))
    fine_inside = occupancy(synthetic_scene.gt_meshes[target.id], fine_centres).reshape(fine.shape)
    assert fine_inside[fine.free & ~fine.surface].mean() < 0.02
    d_fine = cKDTree(synthetic_scene.gt_meshes[target.id].sample(20000)).query(
        fine_centres.reshape(fine.shape + (3,))[fine.surface])[0]
    assert np.median(d_fine) < 0.75 * np.median(d)
    coarse_only = fuse_object(scene.frames, [f.T_world_camera for f in scene.frames], segmentation, obj,
                              FuseConfig(constraint_factor=1))
    assert coarse_only.fine is None and np.array_equal(coarse_only.sdf, ev.sdf)


def test_constraints_come_from_the_grid_fused_at_the_meshing_resolution(synthetic_scene, segmentation):
    scene = synthetic_scene.scene
    obj = segmentation.object(scene.targets[0].id)
    ev = fuse_object(scene.frames, [f.T_world_camera for f in scene.frames], segmentation, obj, FuseConfig())
    n = ev.shape[0]
    guess = np.random.default_rng(0).uniform(size=(2 * n,) * 3).astype(np.float32)
    np.testing.assert_array_equal(constrain(guess, ev), constrain(guess, ev.fine))
    other = guess[:n, :n, :n].copy()  # a resolution without its own grid: the evidence grid's, resampled
    np.testing.assert_array_equal(constrain(other, ev), constrain(other, replace(ev, fine=None)))


@pytest.mark.parametrize("resolution, fused_fine", [(64, True), (48, False)])
def test_pipeline_fuses_the_constraint_grid_only_for_the_meshing_resolution(synthetic_scene, resolution, fused_fine):
    from amodal3d_ros.pipeline import Reconstructor

    scene = synthetic_scene.scene
    config = PipelineConfig.from_flat_dict({"device": "cpu", "complete.method": "extrusion",
                                            "complete.resolution": resolution})
    prepared = Reconstructor(config).prepare(scene.frames, scene.targets, scene.world_frame)
    assert prepared.evidence and all((ev.fine is not None) == fused_fine for ev in prepared.evidence.values())


@pytest.mark.parametrize("method", ["extrusion", "hull"])
def test_classical_completion_respects_evidence(synthetic_scene, segmentation, method):
    scene = synthetic_scene.scene
    obj = segmentation.object(scene.targets[0].id)
    ev = fuse_object(scene.frames, [f.T_world_camera for f in scene.frames], segmentation, obj, FuseConfig())
    completer = make_completer(CompleteConfig(method=method))
    occ = constrain(completer.occupancy(ev, ev.shape[0]), ev)
    assert occ.shape == ev.shape
    assert occ[ev.empty & (ev.observed == 0)].max() == 0.0  # seen-through space stays empty
    assert occ[ev.surface].min() >= 0.5  # observed surface stays occupied


def test_mesh_of_a_sphere_is_watertight_and_metric():
    r, n, size = 0.04, 48, 0.12
    axis = (np.arange(n) + 0.5) * size / n - size / 2
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    occ = (np.sqrt(x ** 2 + y ** 2 + z ** 2) < r).astype(np.float32)
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 3.0]
    v, f = mesh_from_occupancy(occ, np.array([-size / 2] * 3), size, T, smooth_sigma=0.8)
    mesh = trimesh.Trimesh(v, f)
    assert mesh.is_watertight
    assert np.allclose(mesh.centroid, [1, 2, 3], atol=0.002)
    assert abs(mesh.volume - 4 / 3 * np.pi * r ** 3) / (4 / 3 * np.pi * r ** 3) < 0.08
    assert sample_surface(v, f, 500).shape == (500, 3)


def test_shrink_moves_predicted_surface_in_and_keeps_the_measured_one():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    observed = sphere.vertices[sphere.vertices[:, 2] > 0.04]  # a measured cap on top
    moved = shrink_unobserved(sphere.vertices, sphere.faces, 0.002, observed, blend=0.004)
    radius = np.linalg.norm(moved, axis=1)
    assert np.allclose(radius[sphere.vertices[:, 2] > 0.04], 0.05, atol=1e-9)  # measured: in place
    assert np.allclose(radius[sphere.vertices[:, 2] < 0.0], 0.048, atol=1e-4)  # predicted: 2 mm in
    assert np.all(radius >= 0.048 - 1e-4)  # the fade between them only ever moves less


def test_shrink_leaves_the_base_on_the_support():
    box = trimesh.creation.box(extents=[0.06, 0.06, 0.04])
    box.apply_translation([0, 0, 0.02])  # standing on z = 0
    box = box.subdivide().subdivide()
    moved = shrink_unobserved(box.vertices, box.faces, 0.002, np.zeros((0, 3)), blend=0.004, floor=0.0)
    base = box.vertices[:, 2] < 1e-9
    assert np.allclose(moved[base, 2], 0.0)  # cut by the support plane: measured, not predicted
    top = box.vertices[:, 2] > 0.04 - 1e-9
    assert np.allclose(moved[top, 2], 0.038, atol=1e-3)  # the predicted top still moves in
    assert np.all(np.abs(moved[base, :2]) <= np.abs(box.vertices[base, :2]) + 1e-9)  # base edges move in, not out


def test_meshing_moves_back_predicted_surfaces_beyond_half_a_constraint_cell(synthetic_scene):
    from amodal3d_ros.evaluate import TrueShape
    from amodal3d_ros.pipeline import Reconstructor

    scene = synthetic_scene.scene
    reconstructor = Reconstructor(PipelineConfig.from_flat_dict({"device": "cpu", "complete.method": "extrusion"}))
    prepared = reconstructor.prepare(scene.frames, scene.targets, scene.world_frame)
    oid = scene.targets[0].id
    ev = prepared.evidence[oid]
    assert ev.fine is not None and ev.fine.shape[0] == reconstructor.config.complete.resolution
    offset = 0.3 * ev.voxel
    thick = TrueShape(synthetic_scene.gt_meshes[oid], thicken=offset)  # surfaces `offset` too far out
    thick.surface_offset = lambda evidence: offset
    moved, _, _ = reconstructor.mesh_evidence(ev, thick)
    thick.surface_offset = lambda evidence: 0.0  # the same occupancy, meshed without moving back
    unmoved, _, _ = reconstructor.mesh_evidence(ev, thick)
    assert len(unmoved) == len(moved)
    shift = np.linalg.norm(moved - unmoved, axis=1)
    grid_vertices = transform_points(invert(ev.T_world_grid), unmoved)
    near = cKDTree(ev.visible_points).query(grid_vertices)[0]
    assert np.all(shift[near < 0.5 * ev.fine.voxel] < 1e-9)  # the measured surface stays where constrained
    # Predicted surface one to two coarse voxels from any measurement (and off the support) moves back
    # the full offset; it was kept as if measured while the zone was a whole voxel.
    beyond = (near > ev.voxel) & (near < 2 * ev.voxel) & (grid_vertices[:, 2] > ev.voxel)
    assert beyond.sum() > 10
    assert np.median(shift[beyond]) == pytest.approx(offset, rel=1e-3)


def test_metrics_on_known_shapes():
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    same = score_object(box, box)
    assert same.fscore_5mm > 0.99 and same.iou > 0.97 and same.chamfer_mm < 1.0
    shifted = box.copy()
    shifted.apply_translation([0.02, 0, 0])
    moved = score_object(shifted, box)
    assert 0.55 < moved.iou < 0.75  # 8 cm of 12 cm overlap: IoU 0.667
    assert abs(moved.centroid_error_mm - 20.0) < 0.5
    pts = box.sample(2000)
    assert point_scores(pts + [0.02, 0, 0], pts).fscore_10mm < 0.8


def test_reconstructor_end_to_end_on_rendered_scene(synthetic_scene_dir):
    from amodal3d_ros.pipeline import Reconstructor
    from amodal3d_ros.scene import read_ground_truth

    scene = read_scene(synthetic_scene_dir)
    result = Reconstructor(PipelineConfig.from_dict({"complete": {"method": "hull"}})).reconstruct_scene(scene)
    obj = result.object(scene.targets[0].id)
    gt = trimesh.load(read_ground_truth(synthetic_scene_dir)[obj.id], force="mesh")
    mesh = trimesh.Trimesh(obj.vertices, obj.faces)
    assert mesh.is_watertight
    assert np.linalg.norm(mesh.centroid - gt.centroid) < 0.03
    assert obj.views_used >= 1 and 0 < obj.visible_fraction <= 1 and 0 < obj.confidence <= 1
    assert obj.occlusion_masks[0].any()  # the target is partly hidden in frame 0 by construction


def test_two_targets_on_one_object_both_come_out_whole(synthetic_scene_dir):
    """Two prompts on the same object (a user clicking twice): both ids get the same full shape, and
    the object is not named as its own occluder."""
    from amodal3d_ros.pipeline import Reconstructor

    scene = read_scene(synthetic_scene_dir)
    t = scene.targets[0]
    twice = [t, Target(id="again", frame=t.frame, pixel=t.pixel)]
    result = Reconstructor(PipelineConfig.from_dict({"complete": {"method": "hull"}})).reconstruct(
        scene.frames, twice, scene.world_frame)
    assert any("point at the same object" in w for w in result.warnings)
    first, second = result.object(t.id), result.object("again")
    assert np.allclose(first.vertices.mean(axis=0), second.vertices.mean(axis=0), atol=1e-6)
    assert t.id not in second.occluders and "again" not in first.occluders
