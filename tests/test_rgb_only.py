"""RGB-only input: stereo and silhouette depth from posed views, and clear refusals where there is no
metric geometry."""
from __future__ import annotations

import numpy as np
import pytest

from amodal3d_ros.config import PipelineConfig
from amodal3d_ros.poses import PoseEstimationError
from amodal3d_ros.scene import drop_depth, drop_poses
from amodal3d_ros.stereo import StereoError, complete_depth, pair_depth

PAIR = dict(n_views=2, n_objects=(2, 3), azimuth_step_deg=(20, 25), camera_distance=(0.6, 0.7),
            elevation_deg=(35, 45))


@pytest.fixture(scope="module")
def pair_scene():
    """Two posed RGB-D views (train split) about 20 cm apart, with ground truth."""
    from amodal3d_ros.synth import SynthConfig, generate_scene

    return generate_scene(2, SynthConfig(width=640, height=480, **PAIR))


@pytest.fixture(scope="module")
def multiview_scene():
    """Four posed RGB-D views (train split) as in the benchmark, with ground truth."""
    from amodal3d_ros.synth import SynthConfig, generate_scene

    return generate_scene(100, SynthConfig(n_views=4, split="train"))


def test_plane_sweep_geometry_matches_renderer(multiview_scene):
    """At the rendered depth the sweep samples each source view where the renderer's ray went:
    the pixel-centre convention of the sweep matches the renderer's."""
    from amodal3d_ros.geometry import backproject, invert, project, transform_points
    from amodal3d_ros.stereo.sweep import _Source

    f0, f1 = multiview_scene.scene.frames[:2]
    v, u = np.argwhere(f0.depth > 0)[len(np.argwhere(f0.depth > 0)) // 2]
    world = transform_points(f0.T_world_camera, backproject(f0.depth, f0.K)[v, u][None])
    uv, _ = project(f1.K, transform_points(invert(f1.T_world_camera), world))
    src = _Source(np.zeros((f1.height, f1.width), np.float32), f1.K, f1.T_world_camera, f0.K, f0.T_world_camera,
                  (f0.height, f0.width))
    p = src.A[v, u] + src.b / f0.depth[v, u]
    assert np.allclose(p[:2] / p[2], uv[0], atol=1e-2)


@pytest.mark.xfail(strict=False, reason="dense stereo is out of reach on the plain synthetic surfaces (lighting moves "
                   "with the camera): the plane sweep fills few pixels, so the RGB-only path uses it for the "
                   "support plane and silhouettes for the objects")
def test_stereo_depth_agrees_with_rendered_depth(multiview_scene):
    scene = drop_depth(multiview_scene.scene)
    frames, _ = complete_depth(scene.frames, [f.T_world_camera for f in scene.frames])
    for f, truth_frame in zip(frames, multiview_scene.scene.frames):
        depth, truth = f.depth, truth_frame.depth
        valid = (depth > 0) & (truth > 0)
        assert valid.mean() > 0.2, f"only {valid.mean():.0%} of the pixels got a stereo depth"
        error = np.abs(depth[valid] - truth[valid])
        assert np.median(error) < 0.01, f"median stereo depth error {1000 * np.median(error):.1f} mm"
        assert np.mean(error > 0.03) < 0.05, f"{np.mean(error > 0.03):.1%} gross (> 3 cm) errors"


def test_pair_depth_is_metric_where_filled(pair_scene):
    """Two views only: few pixels, but the ones filled are mostly right (no systematic bias)."""
    f0, f1 = pair_scene.scene.frames
    depth = pair_depth(drop_depth(pair_scene.scene).frames[0], f0.T_world_camera, f1, f1.T_world_camera)
    truth = f0.depth
    valid = (depth > 0) & (truth > 0)
    assert valid.sum() > 500
    assert abs(np.median(depth[valid] - truth[valid])) < 0.005


def test_silhouette_depth_of_support_and_target(multiview_scene):
    """Four posed RGB views: the support plane lands at the table's height, background pixels get the
    plane's depth, and the target's hull depth bounds its true surface from the camera side."""
    from amodal3d_ros.segment.rgb import SilhouetteSegmenter
    from amodal3d_ros.segment.base import SUPPORT_LABEL

    truth_scene = multiview_scene.scene
    scene = drop_depth(truth_scene)
    poses = [f.T_world_camera for f in scene.frames]
    frames, _ = complete_depth(scene.frames, poses)
    seg, out = SilhouetteSegmenter().segment(frames, poses, scene.targets)
    assert abs(-seg.plane.offset - multiview_scene.meta["table"]["top_z"]) < 0.003
    target = next(o for o in seg.objects if o.is_target)
    assert len(target.masks) >= 3, "the target is found in at least three of the four views"
    for i, (f, truth) in enumerate(zip(out, truth_scene.frames)):
        table = (seg.labels[i] == SUPPORT_LABEL) & (truth.depth > 0) & (truth.depth < 1.5)
        assert np.median(np.abs(f.depth[table] - truth.depth[table])) < 0.003
        if i in target.masks:
            on = target.masks[i] & (f.depth > 0) & (truth.depth > 0)
            assert on.mean() > 0 and np.mean(f.depth[on] <= truth.depth[on] + 0.01) > 0.9


def test_rgb_only_posed_scene_reconstructs_target(multiview_scene):
    """The whole pipeline on four posed RGB views, no depth anywhere: the target comes out where it is."""
    import trimesh
    from amodal3d_ros.metrics import score_object
    from amodal3d_ros.pipeline import Reconstructor

    scene = drop_depth(multiview_scene.scene)
    assert not scene.has_depth and scene.posed
    rec = Reconstructor(PipelineConfig(device="cpu"))
    result = rec.reconstruct(scene.frames, scene.targets, scene.world_frame)
    target = scene.targets[0]
    objects = {o.id: o for o in result.objects}
    assert target.id in objects, result.warnings
    obj = objects[target.id]
    truth = multiview_scene.gt_meshes[target.id]
    assert np.linalg.norm(obj.vertices.mean(axis=0) - np.asarray(truth.bounds).mean(axis=0)) < 0.03
    scores = score_object(trimesh.Trimesh(obj.vertices, obj.faces, process=False), truth)
    assert scores.fscore_10mm > 0.4, scores


def test_unposed_rgb_only_is_refused(pair_scene):
    from amodal3d_ros.pipeline import Reconstructor

    scene = drop_poses(drop_depth(pair_scene.scene))
    with pytest.raises(StereoError, match="no pose.*TF, a pose topic or T_world_camera"):
        complete_depth(scene.frames)
    rec = Reconstructor(PipelineConfig(device="cpu"))
    with pytest.raises(PoseEstimationError, match="no depth.*need given poses.*TF, pose topic"):
        rec.reconstruct(scene.frames, scene.targets, scene.world_frame)


def test_single_rgb_only_view_is_refused(pair_scene):
    scene = drop_depth(pair_scene.scene, views=[0])
    with pytest.raises(StereoError, match="single RGB-only view has no metric 3D geometry"):
        complete_depth(scene.frames, [f.T_world_camera for f in scene.frames])
