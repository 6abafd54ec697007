"""Depth sensor models applied to clean rendered depth (0 = no measurement), chosen by
``SynthConfig.sensor``:

- ``structured_light_v1`` (:class:`DepthNoiseModel`, the default; the benchmark and the shipped
  weights' training data use it): projector shadow (surfaces the projector cannot see get no
  depth), dropouts along depth discontinuities, axial noise sigma = k z^2, quantisation, random
  holes and the working range.
- ``realsense`` (:class:`StereoDepthModel`): an active-stereo camera fitted to real RealSense frames.

Both are deterministic given the numpy Generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from amodal3d_ros.geometry import pixel_rays


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


REFERENCE_WIDTH_PX = 640  # pixel-sized parameters below are given at this image width


@dataclass(frozen=True)
class StereoDepthModel:
    """An active-stereo depth camera (RealSense D4xx-like), depth registered to the colour image.

    The defaults were fitted to real RealSense frames with ``amodal3d synth OUT --compare-real DIR``
    (synth/compare.py; docs/sensor_comparison). Effects:

    - stereo occlusion: pixels the second imager (``stereo_baseline_m`` along +x) cannot see get no
      depth: a shadow on the far surface left of every nearer object, and the band at the left image
      border that the second imager does not cover (``out_of_view_band``);
    - grazing surfaces (normal more than ``grazing_angle_deg`` from the ray): dropped with
      ``grazing_dropout_prob`` (the matcher finds no texture there; real silhouettes are clean steps);
    - depth edges (a step above ``edge_jump_rel`` of the near depth): far-side pixels within
      ``edge_dropout_px`` dropped with ``edge_dropout_prob``; the far-side pixel next to the step, if
      still measured, takes a depth between both surfaces with ``mixed_pixel_prob`` (mixed pixels);
    - noise that grows as z^2 (stereo: constant disparity noise), mostly spatially smooth as block
      matching makes it: ``smooth_noise_per_m2`` with correlation length ``noise_correlation_px``, plus
      ``white_noise_per_m2`` per pixel;
    - holes in blobs (``hole_fraction`` of the image, blobs about ``hole_blob_px`` across);
    - disparity quantisation (depth steps of ``inverse_depth_step`` z^2), the output unit and the range.

    Pixel-sized parameters are at 640 px wide and scale with the image width. Deterministic given
    the numpy Generator; the colour image is not touched.
    """

    stereo_baseline_m: float = 0.07  # effective, in colour pixels: the real frames' shadow widths and border band
    out_of_view_band: bool = True
    grazing_angle_deg: float = 80.0
    grazing_dropout_prob: float = 1.0
    edge_jump_rel: float = 0.03
    edge_dropout_px: int = 2
    edge_dropout_prob: float = 0.2
    mixed_pixel_prob: float = 0.03
    white_noise_per_m2: float = 0.0006  # m of depth error per m^2 of depth (std)
    smooth_noise_per_m2: float = 0.0042
    noise_correlation_px: float = 8.0
    hole_fraction: float = 0.005
    hole_blob_px: float = 3.0
    inverse_depth_step: float = 0.0016  # 1/m: one disparity step (subpixel / (f b)) in inverse depth
    depth_unit_m: float = 0.001
    min_range_m: float = 0.2
    max_range_m: float = 10.0

    def apply(self, depth: np.ndarray, K: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy float32 depth (metres, 0 = no measurement) from clean depth."""
        depth = np.asarray(depth, dtype=np.float32)
        scale = depth.shape[1] / REFERENCE_WIDTH_PX
        missing = self._unmeasured(depth, K, scale, rng)
        measured = self._quantised(self._mixed_and_noisy(depth, scale, rng))
        missing |= (measured < self.min_range_m) | (measured > self.max_range_m)
        return np.where(missing, 0.0, measured).astype(np.float32)

    def _unmeasured(self, depth: np.ndarray, K: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        """Pixels without a measurement: stereo occlusion, grazing surfaces, edge dropouts, blob holes."""
        missing = (depth <= 0) | projector_shadow(depth, K, self.stereo_baseline_m)
        if self.out_of_view_band:
            missing |= _outside_second_view(depth, K, self.stereo_baseline_m)
        missing |= (grazing_mask(depth, K, self.grazing_angle_deg)
                    & (rng.random(depth.shape) < self.grazing_dropout_prob))
        nearest = _nearest_within(depth, max(1, round(self.edge_dropout_px * scale)))
        far_side = depth - nearest > self.edge_jump_rel * nearest
        missing |= far_side & (rng.random(depth.shape) < self.edge_dropout_prob)
        if self.hole_fraction > 0:
            threshold = NormalDist().inv_cdf(1.0 - self.hole_fraction)
            missing |= smooth_noise(depth.shape, self.hole_blob_px * scale, rng) > threshold
        return missing

    def _mixed_and_noisy(self, depth: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        """Mixed pixels beside depth steps, then z^2 noise (white plus spatially smooth)."""
        nearest = _nearest_within(depth, 1)
        mixed = (depth - nearest > self.edge_jump_rel * nearest) & (rng.random(depth.shape) < self.mixed_pixel_prob)
        blend = rng.random(depth.shape).astype(np.float32)
        depth = np.where(mixed, nearest + blend * (depth - nearest), depth)
        error_per_m2 = (self.white_noise_per_m2 * rng.standard_normal(depth.shape)
                        + self.smooth_noise_per_m2 * smooth_noise(depth.shape, self.noise_correlation_px * scale, rng))
        return depth + (error_per_m2 * depth.astype(np.float64) ** 2).astype(np.float32)

    def _quantised(self, depth: np.ndarray) -> np.ndarray:
        """Disparity comes in sub-pixel steps, so depth in steps of inverse depth; then the output unit."""
        if self.inverse_depth_step > 0:
            steps = np.round(1.0 / np.maximum(depth, 1e-6) / self.inverse_depth_step)
            depth = np.where(steps > 0, 1.0 / (np.maximum(steps, 1.0) * self.inverse_depth_step), np.inf)
        if self.depth_unit_m > 0:
            depth = np.round(depth / self.depth_unit_m) * self.depth_unit_m
        return depth.astype(np.float32)


def _outside_second_view(depth: np.ndarray, K: np.ndarray, baseline_m: float) -> np.ndarray:
    """Pixels whose surface point falls outside the image of a camera ``baseline_m`` along +x."""
    u = np.arange(depth.shape[1], dtype=np.float64)[None, :]
    with np.errstate(divide="ignore"):
        second_u = u - K[0, 0] * baseline_m / np.where(depth > 0, depth, np.inf)
    return (second_u < -0.5) | (second_u > depth.shape[1] - 0.5)


def _nearest_within(depth: np.ndarray, radius_px: int) -> np.ndarray:
    """The nearest measured depth within a (2 radius + 1) square (the pixel's own depth where none is nearer)."""
    padded = np.where(depth > 0, depth, np.inf).astype(np.float32)
    nearest = cv2.erode(padded, np.ones((2 * radius_px + 1,) * 2, np.uint8), borderType=cv2.BORDER_REPLICATE)
    return np.where(np.isfinite(nearest), nearest, depth)


def grazing_mask(depth: np.ndarray, K: np.ndarray, max_angle_deg: float) -> np.ndarray:
    """Measured pixels whose surface normal is more than ``max_angle_deg`` from the viewing ray.

    Tangents come from the flatter of the two one-sided differences along each axis, so that a
    depth edge does not pass for a grazing surface.
    """
    rays = pixel_rays(K, *depth.shape).astype(np.float32)
    points = rays * depth[..., None].astype(np.float32)
    normal = np.cross(_flatter_difference(points, axis=1), _flatter_difference(points, axis=0))
    along_ray = np.einsum("hwc,hwc->hw", normal, rays)
    squared_norms = np.einsum("hwc,hwc->hw", normal, normal) * np.einsum("hwc,hwc->hw", rays, rays)
    # |cos| < cos(max angle), compared squared: no square roots
    return (depth > 0) & (along_ray ** 2 < np.cos(np.deg2rad(max_angle_deg)) ** 2 * squared_norms)


def _flatter_difference(points: np.ndarray, axis: int) -> np.ndarray:
    """Per pixel, the forward or backward difference along ``axis``, whichever changes depth less."""
    step = np.diff(points, axis=axis)
    first, last = np.take(step, [0], axis=axis), np.take(step, [-1], axis=axis)
    forward, backward = np.concatenate([step, last], axis=axis), np.concatenate([first, step], axis=axis)
    return np.where(np.abs(forward[..., 2:]) <= np.abs(backward[..., 2:]), forward, backward)


def smooth_noise(shape: tuple[int, int], correlation_px: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed over about ``correlation_px`` (white below half a pixel)."""
    white = rng.standard_normal(shape).astype(np.float32)
    if correlation_px < 0.5:
        return white
    kernel = cv2.getGaussianKernel(2 * int(np.ceil(3 * correlation_px)) + 1, correlation_px)
    smoothed = cv2.sepFilter2D(white, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return smoothed / float(np.sum(kernel ** 2))  # the std of white noise through the separable kernel
