"""RGB-only input: stereo depth from posed views, and clear refusals where there is no metric geometry."""
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


@pytest.mark.xfail(strict=False, reason="issue 4 open: wide-baseline SGBM on the synthetic textures has a ~1 cm "
                   "systematic depth bias and gross outliers (see the stage report)")
def test_stereo_depth_agrees_with_rendered_depth(pair_scene):
    f0, f1 = pair_scene.scene.frames
    depth = pair_depth(drop_depth(pair_scene.scene).frames[0], f0.T_world_camera, f1, f1.T_world_camera)
    truth = f0.depth
    valid = (depth > 0) & (truth > 0)
    assert valid.mean() > 0.2, f"only {valid.mean():.0%} of the pixels got a stereo depth"
    error = np.abs(depth[valid] - truth[valid])
    assert np.median(error) < 0.01, f"median stereo depth error {1000 * np.median(error):.1f} mm"


@pytest.mark.xfail(strict=False, reason="issue 4 open: wide-baseline SGBM on the synthetic textures has a ~1 cm "
                   "systematic depth bias and gross outliers (see the stage report)")
def test_rgb_only_posed_scene_reconstructs_target(pair_scene):
    from amodal3d_ros.pipeline import Reconstructor

    scene = drop_depth(pair_scene.scene)
    assert not scene.has_depth and scene.posed
    frames, warnings = complete_depth(scene.frames, [f.T_world_camera for f in scene.frames])
    assert all(f.has_depth for f in frames)
    rec = Reconstructor(PipelineConfig(device="cpu"))
    result = rec.reconstruct(frames, scene.targets, scene.world_frame)
    target = scene.targets[0]
    objects = {o.id: o for o in result.objects}
    assert target.id in objects, result.warnings
    centroid = objects[target.id].vertices.mean(axis=0)
    truth = pair_scene.gt_meshes[target.id]
    gt_centroid = np.asarray(truth.bounds).mean(axis=0)
    assert np.linalg.norm(centroid - gt_centroid) < 0.04


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
