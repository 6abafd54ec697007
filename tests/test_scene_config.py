"""Scene format reader/writer and the configuration schema."""
import json

import numpy as np
import pytest

from amodal3d_ros.config import ConfigError, PipelineConfig
from amodal3d_ros.scene import SceneFormatError, drop_poses, read_scene, write_scene

from conftest import EXAMPLE_SCENE, SAMPLE_NAMES


@pytest.mark.parametrize("name", ("example_scene",) + SAMPLE_NAMES)
def test_samples_read(scene_folder, name):
    folder = scene_folder(name)
    scene = read_scene(folder)
    meta = json.loads((folder / "scene.json").read_text())
    assert len(scene.frames) == len(meta["frames"])
    assert scene.posed == ("unposed" not in name)
    for f in scene.frames:
        assert f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
        assert 0.2 < np.median(f.depth[f.depth > 0]) < 3.0  # metres
    assert scene.targets and scene.targets[0].frame == 0


def test_roundtrip(tmp_path):
    scene = read_scene(EXAMPLE_SCENE)
    write_scene(scene, tmp_path / "copy")
    again = read_scene(tmp_path / "copy")
    assert len(again.frames) == 4
    for a, b in zip(scene.frames, again.frames):
        assert np.array_equal(a.rgb, b.rgb)
        assert np.abs(a.depth - b.depth).max() < 1e-6
        assert np.allclose(a.T_world_camera, b.T_world_camera)
    assert again.targets == scene.targets
    unposed = drop_poses(scene)
    assert not unposed.posed and unposed.world_frame == "camera_0_optical"


def test_bad_scenes_name_the_problem(tmp_path, synthetic_scene):
    with pytest.raises(SceneFormatError, match="no scene.json"):
        read_scene(tmp_path)
    write_scene(synthetic_scene.scene, tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "scene.json").read_text())
    meta["targets"][0]["pixel"] = [9999, 3]
    (tmp_path / "s" / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(SceneFormatError, match="outside"):
        read_scene(tmp_path / "s")
    meta["targets"] = []
    meta["frames"][0]["rgb"] = "rgb/missing.png"
    (tmp_path / "s" / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(SceneFormatError, match="not found"):
        read_scene(tmp_path / "s")


def test_config_flat_roundtrip_and_validation(tmp_path):
    config = PipelineConfig()
    flat = config.to_flat_dict()
    assert flat["fuse.voxels"] == config.fuse.voxels
    flat["fuse.voxels"] = 48
    assert PipelineConfig.from_flat_dict(flat).fuse.voxels == 48
    (tmp_path / "p.yaml").write_text(
        "amodal3d:\n  ros__parameters:\n    pipeline:\n      complete:\n        method: extrusion\n")
    assert PipelineConfig.from_yaml(tmp_path / "p.yaml").complete.method == "extrusion"
    with pytest.raises(ConfigError, match="unknown configuration key 'fuse.voxel_count'"):
        PipelineConfig.from_dict({"fuse": {"voxel_count": 3}})
    with pytest.raises(ConfigError, match="fuse.voxels must be a multiple of 8"):
        PipelineConfig.from_dict({"fuse": {"voxels": 30}})
    with pytest.raises(ConfigError, match="'fuse.margin' must be float"):
        PipelineConfig.from_dict({"fuse": {"margin": "wide"}})
    with pytest.raises(ConfigError, match="sam_checkpoint"):
        PipelineConfig.from_dict({"segment": {"method": "sam"}})
