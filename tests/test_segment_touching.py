"""The depth segmenter on what real depth cameras show: touching objects, box tops, smoothed gaps.

Unit cases are built here; the real frames are read from ``../shared/real`` (hand-checked masks of
each target, licensed for test use only) and skipped when it is not beside the checkout.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from amodal3d_ros.config import SegmentConfig
from amodal3d_ros.scene import Frame, read_scene
from amodal3d_ros.segment import DepthSegmenter
from amodal3d_ros.segment.base import find_support_plane
from amodal3d_ros.segment.depth import split_at_valleys, split_between_seeds

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"


def _plane_image(size: int = 100, spacing: float = 0.01) -> np.ndarray:
    """(size, size, 3) world points of a table at z = 0 seen straight from above."""
    ys, xs = np.mgrid[0:size, 0:size] * spacing
    return np.stack([xs, ys, np.zeros_like(xs)], axis=-1)


def test_a_box_top_is_not_the_support_even_with_many_coplanar_points():
    image = _plane_image()
    image[10:35, 10:35, 2] = 0.07  # a box top, 7 cm up
    rng = np.random.default_rng(0)
    table = rng.uniform([0, 0, 0], [1, 1, 0], (10000, 3))
    # Scattered points that happen to lie in the box top's plane make it look large to RANSAC.
    box_top = np.c_[rng.uniform(0, 1, (3000, 2)), np.full(3000, 0.07)]
    points = np.concatenate([table, box_top])
    cameras = np.array([[0.5, 0.5, 1.0]])
    by_count = find_support_plane(points, np.array([0, 0, 1.0]), cameras, 0.005, 30)
    assert abs(by_count.height(np.zeros((1, 3)))[0] + 0.07) < 1e-3  # counting points alone picks the box
    by_patch = find_support_plane(points, np.array([0, 0, 1.0]), cameras, 0.005, 30, view_points=[image])
    assert abs(by_patch.height(np.zeros((1, 3)))[0]) < 1e-3


def _bump(shape, centre, radius, peak):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return peak * np.clip(1 - ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / radius ** 2, 0, None)


def test_two_objects_joined_low_down_are_split_and_a_bowl_is_not():
    shape = (80, 160)
    height = np.maximum(_bump(shape, (40, 45), 35, 0.12), _bump(shape, (40, 115), 35, 0.10))
    height = np.maximum(height, 0.015)  # the smoothed gap between them, 1.5 cm up
    regions = np.ones(shape, np.int32)
    split = split_at_valleys(regions, height.astype(np.float32), valley=0.02, min_pixels=150)
    assert len(np.unique(split)) == 2
    assert split[40, 45] != split[40, 115]

    yy, xx = np.mgrid[0:80, 0:80]
    radius = np.hypot(yy - 40, xx - 40)
    bowl = np.where(radius < 35, 0.01 + 0.06 * (radius / 35) ** 2, 0.0).astype(np.float32)
    one = (radius < 35).astype(np.int32)
    assert np.array_equal(split_at_valleys(one, bowl, valley=0.02, min_pixels=150), one)


def test_two_target_pixels_on_one_region_get_one_object_each():
    h, w = 60, 120
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :70] = (200, 40, 40)  # a red can ...
    rgb[:, 70:] = (40, 60, 200)  # ... standing against a blue box, at the same depth
    frame = Frame(rgb=rgb, K=np.array([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]]),
                  depth=np.full((h, w), 0.6, np.float32))
    regions = np.ones((h, w), np.int32)
    split = split_between_seeds(regions, frame, [(20, 30), (100, 30)], SegmentConfig())
    assert len(np.unique(split)) == 2
    assert (split[:, :68] == split[30, 20]).all() and (split[:, 72:] == split[30, 100]).all()
    # One pixel per region: nothing to split.
    assert np.array_equal(split_between_seeds(regions, frame, [(20, 30)], SegmentConfig()), regions)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real RGB-D frames not found at {REAL} (shared/ beside the checkout)")
def test_real_frames_support_and_targets():
    """On all 19 real frames: the table is the support, every target is found, and targets rarely
    share a segment (hand masks: the share of a target's segment on another target's mask)."""
    segmenter = DepthSegmenter()
    found, merged, total = 0, [], 0
    for folder in sorted(p for p in REAL.iterdir() if (p / "scene.json").is_file()):
        scene = read_scene(folder)
        frame = scene.frames[0]
        seg = segmenter.segment(scene.frames, [frame.T_world_camera], scene.targets)
        # World z = 0 is the table in these frames (shared/real/README.md).
        assert abs(seg.plane.normal[2]) > np.cos(np.deg2rad(2)), folder.name
        assert abs(seg.plane.height(np.zeros((1, 3)))[0]) < 0.006, folder.name
        meta = json.loads((folder / "masks" / "meta.json").read_text())
        hand = {t["id"]: cv2.imread(str(folder / "masks" / t["mask"]), cv2.IMREAD_GRAYSCALE) > 127
                for t in meta["targets"]}
        for target in scene.targets:
            total += 1
            mask = next((o.masks.get(0) for o in seg.objects if o.id == target.id), None)
            if mask is None or not mask.any():
                continue
            found += 1
            others = np.any([m for tid, m in hand.items() if tid != target.id] or [np.zeros_like(mask)], axis=0)
            if (mask & others).sum() > 0.15 * mask.sum():
                merged.append(f"{folder.name}/{target.id}")
    assert found == total
    assert len(merged) <= 2, merged  # stacked and nested objects with one colour edge between them


def test_a_mug_gets_its_inside_back_but_a_target_standing_in_a_bowl_keeps_its_own():
    from amodal3d_ros.geometry import Plane
    from amodal3d_ros.segment.depth import join_insides

    h, w = 60, 60
    yy, xx = np.mgrid[0:h, 0:w]
    world = np.stack([xx * 0.002, yy * 0.002, np.zeros((h, w))], axis=-1)  # 2 mm pixels on the table
    radius = np.hypot(yy - 30, xx - 30)
    regions = np.zeros((h, w), np.int32)
    regions[(radius >= 20) & (radius < 25)] = 1  # the rim and outer wall, 10 cm up
    world[..., 2] = np.where(regions == 1, 0.10, 0.0)
    regions[radius < 20] = 2  # the inner wall, lower, cut off by a depth step at the rim
    world[..., 2] = np.where(regions == 2, 0.04 + 0.05 * radius / 20, world[..., 2])
    table = Plane(normal=np.array([0.0, 0.0, 1.0]), offset=0.0)
    joined = join_insides(regions, world, table, seeds=[(30, 30)])
    assert set(np.unique(joined)) == {0, 1}
    # A target pixel on each: a can standing in a bowl, both asked for.
    assert np.array_equal(join_insides(regions, world, table, seeds=[(30, 30), (30, 7)]), regions)


def test_far_table_noise_does_not_rise_above_the_support():
    from amodal3d_ros.segment.depth import rise_above_noise

    rng = np.random.default_rng(0)
    depth = np.repeat(np.linspace(0.5, 1.5, 200, dtype=np.float32)[:, None], 100, axis=1)
    height = (rng.normal(0, 1, depth.shape) * 0.004 * depth ** 2).astype(np.float32)  # 4 mm at 1 m
    floor = rise_above_noise(height, depth, depth > 0, min_height=0.004, sigmas=2.0)
    assert floor[0, 0] == pytest.approx(0.004)  # near: the fixed height
    assert 0.015 < floor[-1, 0] < 0.025  # at 1.5 m: about twice the noise there
    assert (height > floor).mean() < 0.05
    assert np.all(rise_above_noise(height, depth, depth > 0, 0.004, sigmas=0.0) == np.float32(0.004))


def test_two_target_pixels_split_at_a_crease_where_colour_and_depth_run_on():
    h, w = 60, 120
    u = np.arange(w, dtype=np.float32)
    # Two faces of one colour turned 60 degrees away on either side of a ridge at column 80, no step:
    # depth steps and chroma give no edge there, the turn of the surface does.
    row = (0.8 - np.abs(u - 80) * np.tan(np.deg2rad(60)) / 1000).astype(np.float32)
    frame = Frame(rgb=np.full((h, w, 3), 150, np.uint8), K=np.array([[600.0, 0, w / 2], [0, 600.0, h / 2], [0, 0, 1]]),
                  depth=np.repeat(row[None], h, axis=0))
    seeds = [(10, 30), (110, 30)]
    split = split_between_seeds(np.ones((h, w), np.int32), frame, seeds, SegmentConfig())
    assert (split[:, :76] == split[30, 10]).all() and (split[:, 84:] == split[30, 110]).all()
    without = split_between_seeds(np.ones((h, w), np.int32), frame, seeds, SegmentConfig(crease_edge=1e6))
    assert abs(int((without[30] == without[30, 10]).sum()) - 80) > 10
