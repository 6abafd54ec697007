"""A structured-light depth sensor model (RealSense-like) applied to clean rendered depth.

Effects, in order: projector shadow (surfaces the projector cannot see get no depth), dropouts
along depth discontinuities, axial noise sigma = k z^2, quantisation, random holes and the
working range. Deterministic given the numpy Generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DepthNoiseModel:
    sigma_per_m2: float = 0.0012  # axial noise sigma = sigma_per_m2 * z^2 (m)
    quantization_m: float = 0.001
    projector_baseline_m: float = 0.05  # projector sits this far along the camera's +x axis
    edge_jump_m: float = 0.015  # a depth step larger than this (at 1 m, grows with z) is an edge
    edge_width_px: int = 1  # dropout band on each side of an edge
    edge_dropout_prob: float = 0.7
    hole_fraction: float = 0.01  # random isolated missing pixels
    min_range_m: float = 0.1
    max_range_m: float = 3.0

    def apply(self, depth: np.ndarray, K: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy float32 depth (metres, 0 = no measurement) from clean depth."""
        depth = np.asarray(depth, dtype=np.float32)
        valid = depth > 0
        missing = ~valid | projector_shadow(depth, K, self.projector_baseline_m)
        edges = depth_edges(depth, self.edge_jump_m, self.edge_width_px)
        missing |= edges & (rng.random(depth.shape) < self.edge_dropout_prob)
        noisy = depth + rng.standard_normal(depth.shape).astype(np.float32) * (self.sigma_per_m2 * depth ** 2)
        if self.quantization_m > 0:
            noisy = np.round(noisy / self.quantization_m) * self.quantization_m
        missing |= rng.random(depth.shape) < self.hole_fraction
        missing |= (noisy < self.min_range_m) | (noisy > self.max_range_m)
        return np.where(missing, 0.0, noisy).astype(np.float32)


def projector_shadow(depth: np.ndarray, K: np.ndarray, baseline_m: float) -> np.ndarray:
    """Pixels whose surface point the projector (offset by ``baseline_m`` along x) cannot see.

    Projector and camera share image rows, and a point at pixel u lands on projector column
    u - fx b / z. Scanning away from the projector side, a pixel is shadowed when a pixel
    between it and the projector side lands on a projector column at or left of its own, i.e.
    a nearer surface blocks the projector ray.
    """
    if baseline_m == 0:
        return np.zeros(depth.shape, dtype=bool)
    valid = depth > 0
    u = np.arange(depth.shape[1], dtype=np.float64)[None, :]
    projector_u = np.where(valid, u - K[0, 0] * baseline_m / np.where(valid, depth, 1.0), np.inf)
    if baseline_m < 0:  # mirror so that the projector is always on the +u side
        projector_u = -projector_u[:, ::-1]
        projector_u[~np.isfinite(projector_u)] = np.inf
    # minimum projector column over all pixels strictly to the right of each pixel
    right_min = np.minimum.accumulate(projector_u[:, ::-1], axis=1)[:, ::-1]
    right_min = np.concatenate([right_min[:, 1:], np.full((depth.shape[0], 1), np.inf)], axis=1)
    shadow = projector_u > right_min + 0.5  # half a pixel of slack for sloped surfaces
    if baseline_m < 0:
        shadow = shadow[:, ::-1]
    return shadow & valid


def depth_edges(depth: np.ndarray, jump_at_1m: float, width_px: int) -> np.ndarray:
    """Pixels within ``width_px`` of a depth discontinuity (including valid/invalid borders)."""
    padded = np.pad(depth, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    step = np.zeros(depth.shape, dtype=np.float32)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        neighbour = padded[dy:dy + depth.shape[0], dx:dx + depth.shape[1]]
        step = np.maximum(step, np.abs(neighbour - centre))
    edge = step > jump_at_1m * np.maximum(centre, 1.0) ** 2
    if width_px > 1:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((2 * width_px - 1,) * 2, np.uint8)) > 0
    return edge
