"""Meshing keeps the object and the observed parts, not specks of noise (mesh.py)."""
from __future__ import annotations

import numpy as np
import trimesh

from amodal3d_ros.mesh import mesh_from_occupancy


def test_specks_near_observed_points_are_dropped_but_observed_parts_are_kept():
    size, r = 0.32, 32
    occupancy = np.zeros((r, r, r), np.float32)
    occupancy[4:20, 4:20, 0:16] = 1.0  # the object, 16 cm
    occupancy[24:28, 4:8, 0:4] = 1.0  # a separate observed part, 4 cm: 1.6 % of the object's volume ...
    occupancy[26, 20, 0] = 1.0  # ... and a one-cell speck of noise
    origin = np.zeros(3)
    observed = np.array([[0.05, 0.05, 0.155], [0.25, 0.05, 0.035], [0.265, 0.205, 0.005]])
    vertices, faces = mesh_from_occupancy(occupancy, origin, size, np.eye(4), keep_near=observed, min_part=0.01)
    parts = trimesh.Trimesh(vertices, faces).split(only_watertight=False)
    assert len(parts) == 2 and all(p.is_watertight for p in parts)
    vertices, faces = mesh_from_occupancy(occupancy, origin, size, np.eye(4), keep_near=observed, min_part=0.02)
    assert len(trimesh.Trimesh(vertices, faces).split(only_watertight=False)) == 1
