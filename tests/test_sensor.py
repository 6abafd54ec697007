"""Mixed depth pixels at depth steps are dropped; steep but real surfaces are kept (sensor.py)."""
from __future__ import annotations

import numpy as np

from amodal3d_ros.scene import Frame
from amodal3d_ros.sensor import drop_mixed_pixels, mixed_pixels

K = np.array([[600.0, 0, 40], [0, 600.0, 30], [0, 0, 1]])


def test_pixels_between_a_near_and_a_far_surface_are_mixed_and_the_surfaces_are_not():
    depth = np.full((60, 80), 0.9, np.float32)
    depth[:, :40] = 0.6
    depth[:, 40] = 0.72  # two mixed pixels: the sensor's footprint straddled the step
    depth[:, 41] = 0.81
    mixed = mixed_pixels(depth, K, 80.0)
    assert mixed[:, 40:42].all()
    assert not mixed[:, :40].any() and not mixed[:, 42:].any()


def test_a_table_seen_at_a_grazing_seventy_degrees_is_kept():
    rows = np.arange(60, dtype=np.float32)[:, None]
    # Depth grows by tan(70 deg) * z / f per row: a plane seen 70 degrees from face-on.
    depth = np.repeat(0.8 * np.exp(np.tan(np.deg2rad(70)) * rows / 600.0), 80, axis=1).astype(np.float32)
    assert not mixed_pixels(depth, K, 80.0).any()


def test_dropped_pixels_become_no_measurement_and_rgb_only_frames_pass_through():
    depth = np.full((60, 80), 0.9, np.float32)
    depth[:, :40] = 0.6
    depth[:, 40] = 0.75
    rgb = np.zeros((60, 80, 3), np.uint8)
    cleaned, rgb_only = drop_mixed_pixels([Frame(rgb=rgb, K=K, depth=depth), Frame(rgb=rgb, K=K)], 80.0)
    assert (cleaned.depth[:, 40] == 0).all() and (cleaned.depth[:, 39] == 0.6).all()
    assert rgb_only.depth is None
    assert drop_mixed_pixels([Frame(rgb=rgb, K=K, depth=depth)], 90.0)[0].depth[0, 40] == np.float32(0.75)
