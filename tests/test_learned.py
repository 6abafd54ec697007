"""The shipped completion model: safe loading, provenance, coarse-to-fine inference, constraints."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from amodal3d_ros.complete import constrain, make_completer
from amodal3d_ros.complete.learned import (DEFAULT_WEIGHTS, LearnedCompleter, WeightsError, grid_points, load_weights,
                                          quarter_turn)
from amodal3d_ros.config import CompleteConfig, ConfigError, FuseConfig, PipelineConfig
from amodal3d_ros.fuse import fuse_object
from amodal3d_ros.segment import DepthSegmenter


@pytest.fixture(scope="module")
def evidence(synthetic_scene):
    scene = synthetic_scene.scene
    poses = [f.T_world_camera for f in scene.frames]
    seg = DepthSegmenter().segment(scene.frames, poses, scene.targets)
    return fuse_object(scene.frames, poses, seg, seg.object(scene.targets[0].id), FuseConfig())


def test_shipped_weights_are_small_safe_and_documented():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 25 * 2 ** 20
    assert DEFAULT_WEIGHTS.read_bytes()[:8] != b"PK\x03\x04"  # not a pickle zip: safetensors
    model, meta = load_weights()
    assert meta["data_split"] == "train" and meta["steps"] > 0 and meta["version"]
    assert meta["train_config"]["data"]["split"] == "train"
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert PipelineConfig().complete.method == "learned"  # the default of reconstruct and the node


def test_config_train_yaml_is_the_recipe_of_the_shipped_weights():
    """`amodal3d train --config config/train.yaml` must remake the shipped model: same data, model,
    optimiser and grid settings as the weights record (paths and logging may differ)."""
    from dataclasses import asdict
    from pathlib import Path

    from amodal3d_ros.train.loop import TrainConfig

    recorded = load_weights()[1]["train_config"]
    recipe = asdict(TrainConfig.from_yaml(Path(__file__).parents[1] / "config" / "train.yaml"))
    run_only = {"folder", "workers", "include", "checkpoint_every", "log_every", "threads"}
    defaults = asdict(TrainConfig())  # a setting newer than the weights had its default when they were trained
    for section in ("data", "model", "optim", "fuse"):
        for key, value in recipe[section].items():
            if key not in run_only:
                trained = recorded[section].get(key, defaults[section][key])
                assert trained == (list(value) if isinstance(value, tuple) else value), f"{section}.{key}"


def test_shipped_model_knows_how_far_its_surfaces_were_thickened(evidence):
    completer = make_completer(CompleteConfig(method="learned"))
    thicken = completer.metadata["train_config"]["data"].get("thicken", 0.0)
    assert completer.surface_offset(evidence) == pytest.approx(thicken * evidence.voxel)


def test_bad_weights_give_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "none.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="cannot load completion weights"):
        LearnedCompleter(broken)


def test_coarse_to_fine_matches_dense_queries(evidence):
    completer = make_completer(CompleteConfig(method="learned", rotations=1))
    fine = completer.occupancy(evidence, 48)
    with torch.inference_mode():
        ev = torch.from_numpy(evidence.channels())[None]
        features = completer.model.encode(ev, torch.tensor([evidence.voxel]))
        dense = torch.sigmoid(completer.model.decode(features, grid_points(48)[None]))[0].reshape(48, 48, 48).numpy()
    assert fine.shape == (48, 48, 48)
    # Cells decided at the coarse level are far from the surface: both agree on the shape.
    assert np.mean((fine > 0.5) == (dense > 0.5)) > 0.99


def test_decoding_on_the_grid_cells_equals_sampling_there():
    """The coarse pass decodes the grid's own cells without sampling: same logits as ``decode``."""
    model, _ = load_weights()
    torch.manual_seed(0)
    with torch.inference_mode():
        features = model.encode(torch.rand(2, 6, 32, 32, 32), torch.tensor([0.004, 0.007]))
        dense = model.decode_cells(features)
        sampled = model.decode(features, grid_points(32)[None].expand(2, -1, -1)).reshape(2, 32, 32, 32)
    assert torch.allclose(dense, sampled, atol=1e-4)


def test_quarter_turn_moves_points_as_rot90_moves_volumes():
    volume = torch.randn(1, 1, 6, 6, 6)
    points = torch.rand(1, 40, 3) * 1.6 - 0.8

    def sample(v, p):  # grids are indexed (x, y, z), grid_sample wants (z, y, x)
        return torch.nn.functional.grid_sample(v, p.flip(-1)[:, :, None, None, :], align_corners=False)[0, 0, :, 0, 0]
    for k in range(4):
        turned = torch.rot90(volume, k, dims=(2, 3))
        assert torch.allclose(sample(turned, points @ quarter_turn(k).T), sample(volume, points), atol=1e-5)


def test_rotation_averaged_completion_turns_with_the_object(evidence):
    """With all four quarter turns the prediction is exactly equivariant: turning the evidence turns
    the completed occupancy the same way, whatever the network's own quirks."""
    def turn(a):
        return np.ascontiguousarray(np.rot90(a, 1, axes=(0, 1)))
    turned = replace(evidence, sdf=turn(evidence.sdf), observed=turn(evidence.observed), free=turn(evidence.free),
                     other=turn(evidence.other), below=turn(evidence.below))
    completer = make_completer(CompleteConfig(method="learned", rotations=4))
    assert completer.turns == (0, 1, 2, 3)
    np.testing.assert_allclose(completer.occupancy(turned, 40), turn(completer.occupancy(evidence, 40)), atol=1e-4)
    with pytest.raises(ValueError, match="rotations must be one of"):
        LearnedCompleter(rotations=3)
    with pytest.raises(ConfigError, match="complete.rotations must be 1, 2 or 4"):
        PipelineConfig.from_flat_dict({"complete.rotations": 3})


def test_learned_completion_obeys_the_evidence(evidence):
    completer = make_completer(CompleteConfig(method="learned"))
    occ = constrain(completer.occupancy(evidence, evidence.shape[0]), evidence)
    assert occ[evidence.empty & (evidence.observed == 0)].max() == 0.0
    assert occ[evidence.surface].min() >= 0.5
    assert 0.0 <= completer.certainty() <= 1.0
