"""The synthetic depth sensor models (synth/sensor.py) and their comparison with real frames
(synth/compare.py), on small rendered scenes."""
from __future__ import annotations

import argparse
import dataclasses
import json

import cv2
import numpy as np
import pytest
import trimesh

from amodal3d_ros.scene import write_scene
from amodal3d_ros.synth import SynthConfig, command, generate_dataset, generate_scene, look_at, render
from amodal3d_ros.synth.compare import (DepthView, edge_profiles, edge_statistics, hole_statistics,
                                        support_plane_in_camera, view_geometry)
from amodal3d_ros.synth.sensor import DepthNoiseModel, StereoDepthModel

WIDTH, HEIGHT = 320, 240
K = np.array([[307.5, 0.0, 160.0], [0.0, 307.5, 120.0], [0.0, 0.0, 1.0]])  # 640x480 RealSense-like, halved
# every random effect off: only the geometric ones (stereo shadow, border band, grazing surfaces) remain
QUIET = dict(white_noise_per_m2=0.0, smooth_noise_per_m2=0.0, hole_fraction=0.0, edge_dropout_prob=0.0,
             mixed_pixel_prob=0.0, inverse_depth_step=0.0)


@pytest.fixture(scope="module")
def box_before_wall():
    """Clean depth of a box whose front is 0.6 m from the camera, before a wall at 1.0 m."""
    T = look_at(eye=[0.0, 0.0, 1.0], target=[0.0, 0.0, 0.0], up=[0.0, 1.0, 0.0])
    wall = trimesh.creation.box(extents=[3.0, 3.0, 0.02], transform=trimesh.transformations.translation_matrix(
        [0.0, 0.0, -0.01]))
    box = trimesh.creation.box(extents=[0.2, 0.2, 0.4], transform=trimesh.transformations.translation_matrix(
        [0.0, 0.0, 0.2]))
    _, depth, _ = render([wall, box], None, K, T, WIDTH, HEIGHT)
    return depth


TABLE_CAMERA = look_at(eye=[0.0, -0.7 * np.cos(np.deg2rad(40)), 0.7 * np.sin(np.deg2rad(40))],
                       target=[0.0, 0.0, 0.0])  # 40 degrees above a table top at z = 0: depths 0.5-1.3 m


def _table(*objects: trimesh.Trimesh) -> np.ndarray:
    table = trimesh.creation.box(extents=[3.0, 3.0, 0.02], transform=trimesh.transformations.translation_matrix(
        [0.0, 0.0, -0.01]))
    return render([table, *objects], None, K, TABLE_CAMERA, WIDTH, HEIGHT)[1]


@pytest.fixture(scope="module")
def receding_table():
    return _table()


@pytest.fixture(scope="module")
def box_on_table():
    return _table(trimesh.creation.box(extents=[0.1, 0.1, 0.15],
                                       transform=trimesh.transformations.translation_matrix([0.0, 0.0, 0.075])))


def test_noise_grows_with_distance(receding_table):
    depth = receding_table
    model = dataclasses.replace(StereoDepthModel(), **{k: v for k, v in QUIET.items() if "noise" not in k})
    noisy = model.apply(depth, K, np.random.default_rng(0))
    measured = noisy > 0
    error, z = (noisy - depth)[measured], depth[measured]
    near, far = np.abs(z - 0.6) < 0.05, np.abs(z - 1.2) < 0.05
    ratio = error[far].std() / error[near].std()
    assert 2.5 < ratio < 6.0  # sigma grows as z^2: (1.2 / 0.6)^2 = 4
    # mostly smooth: neighbouring errors agree far better than the errors themselves vary
    step = np.where(measured[:, :-1] & measured[:, 1:], (noisy - depth)[:, 1:] - (noisy - depth)[:, :-1], np.nan)
    assert np.nanstd(step) < 0.5 * np.sqrt(2) * error.std()


def test_holes_on_the_far_side_of_depth_edges(box_before_wall):
    depth = box_before_wall
    noisy = dataclasses.replace(StereoDepthModel(), **QUIET).apply(depth, K, np.random.default_rng(0))
    row = HEIGHT // 2
    box_columns = np.flatnonzero(np.abs(depth[row] - 0.6) < 1e-3)
    left, right = box_columns[0], box_columns[-1]
    shadow_px = K[0, 0] * 0.07 * (1 / 0.6 - 1 / 1.0)  # the second imager, 7 cm to the right, cannot see these
    assert (noisy[row, left - int(shadow_px) + 1:left] == 0).all()  # wall just left of the box: shadow
    assert (noisy[row, right + 3:right + 20] > 0).all()  # wall right of the box: measured
    assert (noisy[row, left + 1:right] > 0).all()  # the box itself (its face is not grazing)
    band = K[0, 0] * 0.07 / 1.0  # left image border: outside the second imager's view
    assert (noisy[row, :int(band)] == 0).all() and (noisy[row, int(band) + 2:int(band) + 10] > 0).all()
    # the far-side edge band drops pixels on the wall around the box's top and bottom, not on the box
    dropping = dataclasses.replace(StereoDepthModel(), **{**QUIET, "edge_dropout_prob": 1.0})
    dropped = (dropping.apply(depth, K, np.random.default_rng(0)) == 0) & (depth > 0)
    top = np.flatnonzero(np.abs(depth[:, (left + right) // 2] - 0.6) < 1e-3)[0]
    assert dropped[top - 1, (left + right) // 2] and not dropped[top:top + 3, (left + right) // 2].any()


def test_mixed_pixels_at_edges_lie_between_the_surfaces(box_before_wall):
    depth = box_before_wall
    model = dataclasses.replace(StereoDepthModel(), **{**QUIET, "mixed_pixel_prob": 0.5})
    noisy = model.apply(depth, K, np.random.default_rng(1))
    between = (noisy > 0.6 + 0.01) & (noisy < 1.0 - 0.01)
    assert between.sum() > 20
    box = (np.abs(depth - 0.6) < 1e-3).astype(np.uint8)
    beside = (cv2.dilate(box, np.ones((3, 3), np.uint8)) > 0) & (box == 0)  # far-side pixels next to the step
    assert beside[between].all()
    unmixed = dataclasses.replace(model, mixed_pixel_prob=0.0).apply(depth, K, np.random.default_rng(1))
    assert not ((unmixed > 0.61) & (unmixed < 0.99)).any()


def test_deterministic_quantised_and_zero_means_missing(box_before_wall):
    model = StereoDepthModel()
    a = model.apply(box_before_wall, K, np.random.default_rng(5))
    np.testing.assert_array_equal(a, model.apply(box_before_wall, K, np.random.default_rng(5)))
    assert not np.array_equal(a, model.apply(box_before_wall, K, np.random.default_rng(6)))
    assert a.dtype == np.float32 and np.isfinite(a).all() and (a >= 0).all()
    measured = a[a > 0]
    assert np.allclose(measured * 1000, np.round(measured * 1000), atol=1e-3)  # 1 mm output unit
    # disparity steps are 1.6 mm at 1 m: only about 1 mm value in 1.6 occurs
    occurring = np.unique(np.round(measured[np.abs(measured - 1.0) < 0.01] * 1000))
    assert len(occurring) < 0.8 * 21
    assert 0.05 < (a == 0).mean() < 0.5


def test_realsense_sensor_is_opt_in_and_leaves_rgb_alone():
    small = dict(width=160, height=120, n_objects=(3, 4), n_views=2, split="val")
    assert SynthConfig().sensor == "structured_light_v1"
    assert isinstance(SynthConfig().depth_sensor(), DepthNoiseModel)
    old = generate_scene(4, SynthConfig(**small))
    new = generate_scene(4, SynthConfig(**small, sensor="realsense"))
    for a, b in zip(old.scene.frames, new.scene.frames):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert not np.array_equal(a.depth, b.depth)
    with pytest.raises(ValueError, match="sensor"):
        SynthConfig(sensor="kinect")
    round_trip = SynthConfig(sensor="realsense", realsense=dataclasses.asdict(StereoDepthModel(hole_fraction=0.0)))
    assert round_trip.depth_sensor() == StereoDepthModel(hole_fraction=0.0)


def test_dataset_records_only_the_sensor_in_use(tmp_path):
    config = SynthConfig(width=96, height=72, n_objects=(2, 3), n_views=1, split="val", sensor="realsense")
    generate_dataset(tmp_path / "rs", 1, seed=2, config=config, progress=False)
    record = json.loads((tmp_path / "rs" / "dataset.json").read_text())["config"]
    assert record["sensor"] == "realsense" and "realsense" in record and "noise" not in record
    assert len(generate_dataset(tmp_path / "rs", 2, seed=2, config=config, progress=False)) == 2  # resumes
    with pytest.raises(ValueError, match="config.sensor"):
        generate_dataset(tmp_path / "rs", 2, seed=2, config=dataclasses.replace(config, sensor="structured_light_v1"),
                         progress=False)


# ----------------------------------------------------------------------------- measuring (compare.py)

def _view(depth: np.ndarray, T_world_camera: np.ndarray, support_z: float = 0.0) -> DepthView:
    rgb = np.full(depth.shape + (3,), 128, dtype=np.uint8)
    return DepthView("test", depth, rgb, K, support_plane_in_camera(T_world_camera, support_z))


def test_measured_shadow_width_gives_the_stereo_baseline(box_on_table):
    clean = _view(box_on_table, TABLE_CAMERA)
    counts, _ = hole_statistics(clean, view_geometry(clean))
    assert counts["region_px"] > 0.5 * WIDTH * HEIGHT
    assert counts["missing_px"] == 0 and sum(counts["edge_runs_missing_px"].values()) == 0
    quiet = dataclasses.replace(StereoDepthModel(), **QUIET)
    noisy = _view(quiet.apply(box_on_table, K, np.random.default_rng(0)), TABLE_CAMERA)
    counts, shadow_ratio = hole_statistics(noisy, view_geometry(noisy))
    assert counts["edge_runs_missing_px"]["rows_far_first"] > 10 * counts["edge_runs_missing_px"]["rows_far_last"]
    assert abs(np.median(shadow_ratio) - 0.07) < 0.01


def test_edge_profiles_count_mixed_pixels(box_on_table):
    clean = _view(box_on_table, TABLE_CAMERA)
    stats = edge_statistics(edge_profiles(clean.depth, view_geometry(clean)))
    assert stats["crossings"] > 30 and stats["mixed_per_crossing"] < 0.1 and stats["crossings_with_holes"] == 0
    model = dataclasses.replace(StereoDepthModel(), **{**QUIET, "mixed_pixel_prob": 1.0, "stereo_baseline_m": 0.0,
                                                        "out_of_view_band": False})
    mixed = _view(model.apply(box_on_table, K, np.random.default_rng(0)), TABLE_CAMERA)
    stats = edge_statistics(edge_profiles(mixed.depth, view_geometry(mixed)))
    assert stats["crossings_with_mixed"] > 0.6  # a blend lands in the middle 70 % of the step 70 % of the time


def test_compare_real_command_writes_json_and_figure(tmp_path):
    """--compare-real on a stand-in "real" folder (a rendered scene written in the scene format)."""
    small = SynthConfig(width=160, height=120, n_objects=(2, 3), n_views=1, split="val", sensor="realsense",
                        table_top_z=(0.0, 0.0))  # world z = 0 on the table, as in the real scene folders
    write_scene(generate_scene(9, small).scene, tmp_path / "real" / "dof_standin")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "out"), "--compare-real", str(tmp_path / "real"), "--count", "1",
                              "--views", "1", "--width", "160", "--height", "120", "--objects", "2", "3"])
    assert command.run(args) == 0
    report = json.loads((tmp_path / "out" / "sensor_comparison.json").read_text())
    assert set(report["sources"]) == {"real", "real:dof", "structured_light_v1", "realsense"}
    for source in report["sources"].values():
        assert {"holes", "noise", "edges", "quantisation_step_mm"} <= set(source)
    assert (tmp_path / "out" / "sensor_comparison.png").stat().st_size > 10000
    missing = parser.parse_args([str(tmp_path / "out"), "--compare-real", str(tmp_path / "nowhere")])
    assert command.run(missing) == 2
