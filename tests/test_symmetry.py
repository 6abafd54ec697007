"""Rotational symmetry: the axis fit, the pooling, and the acceptance on scenes the project renders."""
import numpy as np
import pytest

from amodal3d_ros.complete import constrain, make_completer
from amodal3d_ros.complete.symmetry import fit_vertical_axis, pool_about_axis, symmetrize
from amodal3d_ros.config import CompleteConfig, FuseConfig, PipelineConfig
from amodal3d_ros.fuse import fuse_object
from amodal3d_ros.geometry import invert, transform_points
from amodal3d_ros.metrics import occupancy
from amodal3d_ros.segment import DepthSegmenter

VOXEL = 0.005


def cylinder_side(centre, radius, arc_deg, rng, count=1500, noise=0.0005):
    """Points on a third of a cylinder's side and on its top face, as one view measures a can."""
    a = np.radians(rng.uniform(0, arc_deg, count))
    z = rng.uniform(0.005, 0.05, count)
    side = np.c_[centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a), z]
    r, b = radius * np.sqrt(rng.uniform(0, 1, count // 2)), rng.uniform(0, 2 * np.pi, count // 2)
    top = np.c_[centre[0] + r * np.cos(b), centre[1] + r * np.sin(b), np.full(count // 2, 0.05)]
    return np.concatenate([side, top]) + rng.normal(scale=noise, size=(count + count // 2, 3))


def test_axis_of_a_partly_seen_cylinder_and_none_of_an_oval_or_a_box_corner():
    rng = np.random.default_rng(0)
    axis = fit_vertical_axis(cylinder_side((0.11, 0.07), 0.04, 120, rng), VOXEL)
    assert axis is not None and axis.plausible
    assert np.linalg.norm(axis.centre - [0.11, 0.07]) < 0.0015  # the top face did not pull it off
    assert np.allclose(axis.radii, 0.04, atol=0.0015) and 100 < axis.span_deg < 130

    # An oval bottle (9 x 8 cm) seen all round, on a tall object's coarse grid: circles fit it within a
    # quarter voxel, not within the millimetre that depth noise leaves on a true cylinder.
    a = np.radians(rng.uniform(0, 360, 1500))
    oval = np.c_[0.045 * np.cos(a), 0.04 * np.sin(a), rng.uniform(0.01, 0.18, 1500)]
    found = fit_vertical_axis(oval + rng.normal(scale=0.0005, size=oval.shape), 0.01)
    assert found is not None and found.residual_voxels < 0.25 and found.residual_m > 0.001
    assert not found.plausible

    # Two faces of a box meeting at a corner: no circle explains them.
    u = rng.uniform(0, 0.08, 1500)
    z = rng.uniform(0.005, 0.05, 1500)
    corner = np.concatenate([np.c_[u[:750], np.zeros(750), z[:750]], np.c_[np.zeros(750), u[750:], z[750:]]])
    found = fit_vertical_axis(corner + rng.normal(scale=0.0005, size=corner.shape), VOXEL)
    assert found is None or not found.plausible


class _Grid:
    """The two things pooling reads from an evidence grid."""

    def __init__(self, size):
        self.size = size

    def centres(self, r):
        axis = (np.arange(r) + 0.5) * self.size / r
        return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)


def test_pooling_is_the_average_over_turns_about_the_axis():
    grid = _Grid(0.16)
    cells = grid.centres(64)
    centre = np.array([0.08, 0.08])
    d = np.linalg.norm(cells[..., :2] - centre, axis=-1)
    half = ((d < 0.04) & (cells[..., 0] > 0.08)).astype(np.float32)  # half a cylinder: p = 1 there
    pooled = pool_about_axis(half, grid, centre)
    inner = d < 0.035
    assert np.allclose(pooled[inner], 0.5, atol=0.08)  # every ring is half full
    assert pooled[d > 0.045].max() == 0.0
    whole = (d < 0.04).astype(np.float32)  # already symmetric: only rings that straddle the wall change
    changed = np.abs(pool_about_axis(whole, grid, centre) - whole) > 0.5
    assert changed.mean() < 0.002


def _one_view_synthetic(seed):
    from amodal3d_ros.synth import SynthConfig, generate_scene

    return generate_scene(seed, SynthConfig(n_views=1, n_objects=(2, 3), width=320, height=240, procedural_share=1.0))


def _one_view_scene(seed):
    synthetic = _one_view_synthetic(seed)
    scene = synthetic.scene
    poses = [f.T_world_camera for f in scene.frames]
    target = scene.targets[0]
    segmentation = DepthSegmenter().segment(scene.frames, poses, scene.targets)
    evidence = fuse_object(scene.frames, poses, segmentation, segmentation.object(target.id), FuseConfig())
    source = {o["id"]: o["source"] for o in synthetic.meta["objects"]}[target.id]
    return evidence, synthetic.gt_meshes[target.id], source


@pytest.fixture(scope="module")
def learned():
    return make_completer(CompleteConfig(method="learned"))


def test_a_partly_seen_cylinder_is_completed_about_its_axis(learned):
    evidence, truth, source = _one_view_scene(14)  # seeds chosen for the object they hold
    assert source == "procedural/cylinder"
    raw = learned.occupancy(evidence, 64)
    pooled, axis = symmetrize(raw, evidence)
    assert axis is not None
    true_centre = transform_points(invert(evidence.T_world_grid), truth.bounds.mean(axis=0)[None])[0, :2]
    assert np.linalg.norm(axis.centre - true_centre) < 0.002
    inside = occupancy(truth, transform_points(evidence.T_world_grid, evidence.centres(64).reshape(-1, 3)))
    inside = inside.reshape((64,) * 3)

    def iou(p):
        shape = constrain(p, evidence) > 0.5
        return (shape & inside).sum() / (shape | inside).sum()

    assert iou(pooled) > iou(raw) + 0.03  # measured 0.722 -> 0.799


def test_a_box_is_left_as_completed(learned):
    evidence, _, source = _one_view_scene(9)
    assert source == "procedural/box"
    raw = learned.occupancy(evidence, 64)
    pooled, axis = symmetrize(raw, evidence)
    assert axis is None and pooled is raw


def test_symmetry_is_a_pipeline_setting_for_depth_views(learned):
    from amodal3d_ros.pipeline import Reconstructor

    evidence, _, _ = _one_view_scene(14)
    on = Reconstructor(PipelineConfig.from_flat_dict({"device": "cpu"}))
    off = Reconstructor(PipelineConfig.from_flat_dict({"device": "cpu", "complete.symmetry": False}))
    (pooled, axis), (raw, none) = on.complete_evidence(evidence, learned), off.complete_evidence(evidence, learned)
    assert axis is not None and none is None and not np.array_equal(pooled, raw)
    np.testing.assert_array_equal(on.complete_evidence(evidence, learned, rgb_only=True)[0], raw)


def test_the_axis_is_reported_in_the_result_frame(tmp_path):
    """A grasp planner gets the axis (result.json, the ROS message): here a cylinder's, not a box's."""
    import json

    from amodal3d_ros.pipeline import Reconstructor

    reconstructor = Reconstructor(PipelineConfig.from_flat_dict({"device": "cpu"}))
    for seed, symmetric in ((14, True), (9, False)):
        synthetic = _one_view_synthetic(seed)
        scene = synthetic.scene
        result = reconstructor.reconstruct(scene.frames, scene.targets, scene.world_frame)
        target = scene.targets[0].id
        axis = result.object(target).symmetry_axis
        entry = next(o for o in json.loads(result.write(tmp_path / str(seed)).joinpath("result.json").read_text())
                     ["objects"] if o["id"] == target)
        if not symmetric:
            assert axis is None and entry["symmetry_axis"] is None
            continue
        truth = synthetic.gt_meshes[target].bounds.mean(axis=0)
        assert np.linalg.norm(axis[0, :2] - truth[:2]) < 0.003  # the can's centre, in the world frame
        assert abs(axis[0, 2] - synthetic.meta["table"]["top_z"]) < 0.003 and axis[1] @ [0, 0, 1] > 0.999
        np.testing.assert_allclose(entry["symmetry_axis"]["point"], axis[0], atol=1e-6)
