"""Unposed views: each carries its registration fitness, and a view that does not fit is not used."""
from __future__ import annotations

import numpy as np

from amodal3d_ros.config import PipelineConfig, PoseConfig
from amodal3d_ros.pipeline import Reconstructor
from amodal3d_ros.poses import drop_weak_views, estimate_poses
from amodal3d_ros.scene import Frame, drop_poses
from amodal3d_ros.synth import SynthConfig, generate_scene


def _foreign_view(width: int, height: int) -> Frame:
    """A view of another table top altogether (a camera that was somewhere else)."""
    other = generate_scene(91, SynthConfig(n_views=1, n_objects=(3, 4), width=width, height=height)).scene.frames[0]
    return Frame(rgb=other.rgb, K=other.K, depth=other.depth)


def test_a_view_of_another_scene_registers_badly_and_is_not_used(synthetic_scene):
    scene = drop_poses(synthetic_scene.scene)
    frames = list(scene.frames[:2]) + [_foreign_view(scene.frames[0].width, scene.frames[0].height)]
    _, fitness = estimate_poses(frames, PoseConfig())
    assert fitness[0] == 1.0 and fitness[1] > 0.5 and fitness[2] < PoseConfig().min_fitness

    result = Reconstructor(PipelineConfig(device="cpu")).reconstruct(frames, scene.targets, scene.world_frame)
    # (the pipeline registers the views after dropping mixed pixels: nearly the same fitness)
    assert result.poses_estimated and np.allclose(result.view_fitness, fitness, atol=0.05)
    assert any(w.startswith("view 2:") and "not used" in w for w in result.warnings)
    assert any(o.id == scene.targets[0].id for o in result.objects)


def test_weak_views_lose_their_depth_and_given_poses_keep_every_view(synthetic_scene):
    frames = synthetic_scene.scene.frames
    kept, warnings = drop_weak_views(frames, [1.0, 0.9, 0.1], min_fitness=0.3)
    assert not kept[2].depth.any() and np.array_equal(kept[1].depth, frames[1].depth)
    assert len(warnings) == 1 and "view 2" in warnings[0] and "0.10" in warnings[0]
    assert drop_weak_views(frames, [1.0] * len(frames), 0.3) == (list(frames), [])
