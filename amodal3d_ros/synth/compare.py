"""The synthetic depth sensor against real RGB-D frames: the same statistics measured on both.

    amodal3d synth OUT --compare-real ../shared/real [--count 24 --seed 0]

renders ``count`` synthetic scenes once per sensor model (same layouts and RGB, only the depth
sensor differs), reads the real scene folders, and writes ``OUT/sensor_comparison.json`` and
``OUT/sensor_comparison.png``. Every statistic is measured the same way on both sides:

- region: pixels whose ray meets the support plane inside the sensor's working window, so that
  a source's range cut (the real ``dof_*`` frames hold no depth beyond 0.9 m) is not counted as holes;
- holes: share of region pixels without depth, within ``EDGE_BAND_PX`` of a depth edge and away from
  edges, by image brightness; hole runs along rows and columns that separate a near and a far surface
  (IR shadow), by the side the far surface lies on, and their width against the disparity step;
- noise: depth residual of support pixels from the support plane (real frames: world z = 0 through
  ``T_world_camera``; renders: the table top), robust std per depth bin, also after a local plane fit
  in small blocks (the part that is not the table's own unevenness);
- edges: profiles of depth across steps between two surfaces (rows and columns): in-between ("mixed")
  pixels per crossing, share of crossings with missing pixels, transition width and median profile;
- quantisation: the step between neighbouring depth values that occur, per depth bin.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from amodal3d_ros.geometry import pixel_rays
from amodal3d_ros.scene import read_scene

DEPTH_BINS_M = np.round(np.arange(0.4, 1.51, 0.1), 2)  # bin edges of the noise and quantisation statistics
WINDOW_M = (0.4, 1.5)  # the region never extends beyond this, whatever the sensor
WINDOW_MARGIN_M = 0.03  # inside a view's own measured depth range
SUPPORT_BAND_M = 0.01  # real frames: pixels this near the support plane are support
EDGE_BAND_PX = 3  # "near a depth edge"
MIN_STEP_M, MIN_STEP_REL = 0.03, 0.04  # a depth edge: a step larger than both (relative to the near depth)
MAX_SHADOW_RUN_PX = 80
PROFILE_HALF_PX = 8  # edge profiles: 2 x this + 1 pixels, levels from the outer LEVEL_PX on each side
LEVEL_PX = 3
MIXED_BAND = (0.15, 0.85)  # of the step: a pixel on neither surface
BLOCK_PX = 16  # local plane fits
BRIGHTNESS_BINS = (0, 40, 80, 160, 220, 256)  # luma
MAX_SAMPLES_PER_VIEW = 20000  # noise samples kept per view (evenly spaced), to bound memory


@dataclass
class DepthView:
    """One depth image with what the statistics need to know about it."""

    name: str
    depth: np.ndarray  # (H, W) float32 m, 0 = no measurement
    rgb: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray
    support_plane: np.ndarray  # (4,) n, d in the camera frame: n . p + d = height above the support
    support_mask: Optional[np.ndarray] = None  # pixels known to show the support (renders); None: near the plane
    surface_mask: Optional[np.ndarray] = None  # pixels with a surface to measure (renders: not the empty sky)

def support_plane_in_camera(T_world_camera: np.ndarray, support_z: float) -> np.ndarray:
    """The plane world z = support_z as (n, d) in the camera frame, n pointing up."""
    T = np.asarray(T_world_camera, dtype=np.float64)
    return np.r_[T[2, :3], T[2, 3] - support_z]


# ----------------------------------------------------------------------------- statistics of one view

@dataclass
class ViewGeometry:
    """Per-pixel quantities shared by the statistics."""

    valid: np.ndarray
    region: np.ndarray  # the support plane lies inside the working window here
    window: tuple[float, float]  # m: the working window
    ray_dot_normal: np.ndarray  # n . (x, y, 1): d(height) / d(depth)
    height: np.ndarray  # above the support plane (0 where no depth)
    support: np.ndarray  # valid support pixels
    near_edge: np.ndarray  # within EDGE_BAND_PX of a depth edge
    inside: np.ndarray  # region pixels between the first and last measured pixel of their row (not a band
    #                     the sensor never measures, nor a range cut)


def view_geometry(view: DepthView) -> ViewGeometry:
    depth = view.depth
    valid = depth > 0
    rays = pixel_rays(view.K, *depth.shape)
    n, d = view.support_plane[:3], view.support_plane[3]
    ray_dot_normal = rays @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        plane_depth = np.where(ray_dot_normal < -1e-6, -d / ray_dot_normal, np.inf)
    measured = depth[valid] if valid.any() else np.asarray(WINDOW_M)
    lo = max(WINDOW_M[0], float(np.percentile(measured, 0.5)) + WINDOW_MARGIN_M)
    hi = min(WINDOW_M[1], float(np.percentile(measured, 99.5)) - WINDOW_MARGIN_M)
    region = (plane_depth >= lo) & (plane_depth <= hi)
    if view.surface_mask is not None:
        region &= view.surface_mask
    height = np.where(valid, depth * ray_dot_normal + d, 0.0)
    support = valid & (np.abs(height) < SUPPORT_BAND_M)
    if view.support_mask is not None:
        support = valid & view.support_mask
    edges = _edge_pixels(depth)
    kernel = np.ones((2 * EDGE_BAND_PX + 1,) * 2, np.uint8)
    near_edge = cv2.dilate(edges.astype(np.uint8), kernel) > 0
    after_first = np.maximum.accumulate(valid, axis=1)
    before_last = np.maximum.accumulate(valid[:, ::-1], axis=1)[:, ::-1]
    inside = region & after_first & before_last
    return ViewGeometry(valid, region, (lo, hi), ray_dot_normal, height, support & region, near_edge, inside)


def _step_threshold(near_depth: np.ndarray) -> np.ndarray:
    return np.maximum(MIN_STEP_M, MIN_STEP_REL * near_depth)


def _edge_pixels(depth: np.ndarray) -> np.ndarray:
    """Depth edges: steps between neighbouring valid pixels, and both ends of hole runs between
    a near and a far surface (holes at an edge hide the step itself)."""
    edges = np.zeros(depth.shape, dtype=bool)
    for image, out in ((depth, edges), (depth.T, edges.T)):
        a, b = image[:, :-1], image[:, 1:]
        step = (a > 0) & (b > 0) & (np.abs(a - b) > _step_threshold(np.minimum(a, b)))
        out[:, :-1] |= step
        out[:, 1:] |= step
        runs = hole_runs(image)
        far = np.maximum(runs.left_depth, runs.right_depth)
        near = np.minimum(runs.left_depth, runs.right_depth)
        at_edge = far - near > _step_threshold(near)
        out[runs.row[at_edge], runs.start[at_edge]] = True
        out[runs.row[at_edge], runs.end[at_edge] - 1] = True
    return edges


@dataclass
class HoleRuns:
    """Runs of missing pixels along rows with a valid pixel at both ends."""

    row: np.ndarray
    start: np.ndarray  # first missing column
    end: np.ndarray  # one past the last
    left_depth: np.ndarray
    right_depth: np.ndarray

    @property
    def length(self) -> np.ndarray:
        return self.end - self.start


def hole_runs(depth: np.ndarray) -> HoleRuns:
    valid = np.pad(depth > 0, ((0, 0), (1, 1)), constant_values=True).astype(np.int8)
    change = np.diff(valid, axis=1)
    start_rows, starts = np.nonzero(change == -1)  # both in row-major order: the k-th start pairs the k-th end
    _, ends = np.nonzero(change == 1)
    inner = (starts > 0) & (ends < depth.shape[1])
    rows, starts, ends = start_rows[inner], starts[inner], ends[inner]
    return HoleRuns(rows, starts, ends, depth[rows, starts - 1], depth[rows, ends])


def hole_statistics(view: DepthView, geometry: ViewGeometry) -> tuple[dict, np.ndarray]:
    """Pixel counts (summed over views, shares taken at the end), and the shadow width per
    disparity step (m) of each hole run left of a nearer surface along rows."""
    missing = ~geometry.valid & geometry.region
    luma = cv2.cvtColor(view.rgb, cv2.COLOR_RGB2GRAY)
    away = geometry.inside & ~geometry.near_edge
    brightness = [(luma >= lo) & (luma < hi) for lo, hi in zip(BRIGHTNESS_BINS[:-1], BRIGHTNESS_BINS[1:])]
    counts = {
        "region_px": int(geometry.region.sum()), "missing_px": int(missing.sum()),
        "near_edge_px": int((geometry.region & geometry.near_edge).sum()),
        "near_edge_missing_px": int((missing & geometry.near_edge).sum()),
        "away_px": int(away.sum()), "away_missing_px": int((missing & away).sum()),
        "brightness_px": [int((away & b).sum()) for b in brightness],
        "brightness_missing_px": [int((away & missing & b).sum()) for b in brightness],
        "edge_runs_missing_px": {}}
    shadow_ratio = np.zeros(0)
    for axis, image, region, focal in (("rows", view.depth, geometry.region, view.K[0, 0]),
                                       ("columns", view.depth.T, geometry.region.T, view.K[1, 1])):
        runs = hole_runs(image)
        near = np.minimum(runs.left_depth, runs.right_depth)
        far = np.maximum(runs.left_depth, runs.right_depth)
        keep = ((far - near > _step_threshold(near)) & (runs.length <= MAX_SHADOW_RUN_PX)
                & region[runs.row, runs.start])
        far_first = runs.left_depth > runs.right_depth  # the far surface is left of (above) the hole
        for side, chosen in (("far_first", keep & far_first), ("far_last", keep & ~far_first)):
            counts["edge_runs_missing_px"][f"{axis}_{side}"] = int(runs.length[chosen].sum())
        if axis == "rows":
            chosen = keep & far_first
            shadow_ratio = runs.length[chosen] / (focal * (1.0 / near[chosen] - 1.0 / far[chosen]))
    return counts, shadow_ratio


def noise_samples(view: DepthView, geometry: ViewGeometry) -> dict:
    """Depth residuals of support pixels away from edges, and local-fit residual stds per block."""
    use = geometry.support & ~geometry.near_edge
    # a height error h of a pixel is a depth error h / (n . ray) along the optical axis
    residual = geometry.height[use] / geometry.ray_dot_normal[use]
    depth = view.depth[use]
    block_depth, block_std = _local_block_noise(view.depth, geometry, use)
    return {"depth": depth, "residual": residual, "block_depth": block_depth, "block_std": block_std}


def _local_block_noise(depth: np.ndarray, geometry: ViewGeometry, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Std of the depth residual after fitting a plane to each BLOCK_PX block of support pixels."""
    h, w = depth.shape
    bh, bw = h // BLOCK_PX, w // BLOCK_PX

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[:bh * BLOCK_PX, :bw * BLOCK_PX].reshape(bh, BLOCK_PX, bw, BLOCK_PX).transpose(0, 2, 1, 3).reshape(
            bh * bw, BLOCK_PX * BLOCK_PX)

    with np.errstate(divide="ignore", invalid="ignore"):
        residual = np.where(use, geometry.height / geometry.ray_dot_normal, 0.0)
    mask, values, z = blocks(use).astype(np.float64), blocks(residual), blocks(depth)
    enough = mask.sum(axis=1) >= 0.8 * BLOCK_PX * BLOCK_PX
    mask, values, z = mask[enough], values[enough], z[enough]
    v, u = np.divmod(np.arange(BLOCK_PX * BLOCK_PX), BLOCK_PX)
    design = np.stack([np.ones_like(u), u - BLOCK_PX / 2, v - BLOCK_PX / 2], axis=1).astype(np.float64)
    normal = np.einsum("bk,ki,kj->bij", mask, design, design)
    rhs = np.einsum("bk,ki,bk->bi", mask, design, values)
    coefficients = np.linalg.solve(normal + 1e-9 * np.eye(3), rhs[..., None])[..., 0]
    fitted = coefficients @ design.T
    count = mask.sum(axis=1)
    std = np.sqrt((mask * (values - fitted) ** 2).sum(axis=1) / np.maximum(count - 3, 1))
    return (mask * z).sum(axis=1) / count, std


def edge_profiles(depth: np.ndarray, geometry: ViewGeometry) -> np.ndarray:
    """Depth profiles (n, 2 PROFILE_HALF_PX + 1) across steps between two surfaces, along rows and
    columns inside the region, both surfaces measured on the outer pixels and inside the working
    window (far clutter is noisier than any edge). Normalised: 0 = near level, 1 = far level, ordered
    from the near side; NaN = no depth."""
    half = PROFILE_HALF_PX
    profiles = []
    for image, region in ((depth, geometry.region), (depth.T, geometry.region.T)):
        # candidates: local maxima of the jump across 2 (LEVEL_PX + 1) px, holes bridged by the last depth
        filled = _forward_filled(image)
        shift = LEVEL_PX + 1
        magnitude = np.zeros_like(filled)
        near = np.zeros_like(filled)
        magnitude[:, shift:-shift] = np.abs(filled[:, 2 * shift:] - filled[:, :-2 * shift])
        near[:, shift:-shift] = np.minimum(filled[:, 2 * shift:], filled[:, :-2 * shift])
        peak = np.zeros_like(magnitude, dtype=bool)
        peak[:, 1:-1] = (magnitude[:, 1:-1] >= magnitude[:, :-2]) & (magnitude[:, 1:-1] > magnitude[:, 2:])
        peak[:, :half] = peak[:, -half:] = False
        rows, cols = np.nonzero(peak & region & (near > 0) & (magnitude > _step_threshold(near)))
        windows = image[rows[:, None], cols[:, None] + np.arange(-half, half + 1)]
        outer = np.r_[0:LEVEL_PX, windows.shape[1] - LEVEL_PX:windows.shape[1]]
        windows = windows[(windows[:, outer] > 0).all(axis=1)]
        left = np.median(windows[:, :LEVEL_PX], axis=1)
        right = np.median(windows[:, -LEVEL_PX:], axis=1)
        near, far = np.minimum(left, right), np.maximum(left, right)
        keep = ((far - near > _step_threshold(near)) & _is_discontinuity(windows, right - left)
                & (near >= geometry.window[0]) & (far <= geometry.window[1]))
        flip = keep & (left > right)  # order every profile from the near side
        windows[flip] = windows[flip, ::-1]
        windows = np.where(windows > 0, windows, np.nan)
        profiles.append((windows[keep] - near[keep, None]) / (far - near)[keep, None])
    return np.concatenate(profiles)


def _is_discontinuity(windows: np.ndarray, step: np.ndarray) -> np.ndarray:
    """A step, not a steep surface (a table seen at a grazing angle): the sides' own slopes,
    carried across the window, account for less than half the step."""
    level_gap = windows.shape[1] - LEVEL_PX
    side_slope = ((windows[:, LEVEL_PX - 1] - windows[:, 0]) + (windows[:, -1] - windows[:, -LEVEL_PX])) / (
        2 * (LEVEL_PX - 1))
    return np.abs(step - side_slope * level_gap) > 0.5 * np.abs(step)


def _forward_filled(image: np.ndarray) -> np.ndarray:
    """Each missing pixel takes the last valid value to its left (for finding steps only)."""
    index = np.where(image > 0, np.arange(image.shape[1])[None, :], 0)
    np.maximum.accumulate(index, axis=1, out=index)
    return np.take_along_axis(image, index, axis=1)


def edge_statistics(p: np.ndarray) -> dict:
    """Per crossing (profiles from ``edge_profiles``): missing pixels, and measured pixels between both
    surfaces (mixed); on crossings without missing pixels, the transition width and the median profile."""
    if not len(p):
        return {"crossings": 0}
    with_holes = np.isnan(p).any(axis=1)
    mixed = ((p > MIXED_BAND[0]) & (p < MIXED_BAND[1])).sum(axis=1)  # NaN compares False: holes are not mixed
    complete = p[~with_holes]
    return {"crossings": int(len(p)), "crossings_with_holes": round(float(with_holes.mean()), 4),
            "mixed_per_crossing": round(float(mixed.mean()), 3),
            "crossings_with_mixed": round(float((mixed > 0).mean()), 4),
            "mixed_histogram": (np.bincount(np.minimum(mixed, 4), minlength=5) / len(p)).round(4).tolist(),
            "transition_width_px": round(float(_transition_width(complete).mean()), 3) if len(complete) else None,
            "median_profile": np.round(np.median(_centred(complete), axis=0), 3).tolist() if len(complete) else None}


def _transition_width(p: np.ndarray) -> np.ndarray:
    """Pixels between the last one within 10 % of the near level and the first within 10 % of the far one."""
    n = p.shape[1]
    idx = np.arange(n)
    last_near = np.where(p <= 0.1, idx, -1)
    first_far = np.where(p >= 0.9, idx, n)
    # the last near pixel before the first far one
    first_far_index = first_far.min(axis=1)
    last_near_index = np.where(idx[None, :] < first_far_index[:, None], last_near, -1).max(axis=1)
    return first_far_index - last_near_index - 1


def _centred(p: np.ndarray) -> np.ndarray:
    """Profiles shifted so that the first pixel past half the step sits in the middle."""
    half = PROFILE_HALF_PX
    crossing = np.argmax(p >= 0.5, axis=1)
    padded = np.concatenate([np.zeros((len(p), half)), p, np.ones((len(p), half))], axis=1)
    take = crossing[:, None] + np.arange(2 * half + 1)[None, :]
    return np.take_along_axis(padded, take, axis=1)


def quantisation_steps(depth: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Per depth bin: the median step (mm) between neighbouring depth values that occur."""
    values = depth[region & (depth > 0)]
    steps = {}
    for lo, hi in zip(DEPTH_BINS_M[:-1], DEPTH_BINS_M[1:]):
        levels = np.unique(values[(values >= lo) & (values < hi)])
        if len(levels) > 20:
            steps[f"{lo:.1f}"] = round(float(np.median(np.diff(levels))) * 1000, 3)
    return steps


VARIOGRAM_LAGS_PX = (1, 2, 4, 8, 16, 32, 64)


def noise_variogram(view: DepthView, geometry: ViewGeometry) -> dict[int, np.ndarray]:
    """Per lag along rows: squared differences of the depth residual / z^2 between support pixels
    (how the noise is correlated in space; white noise is flat, block-matching noise grows with the lag)."""
    use = geometry.support & ~geometry.near_edge
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(use, geometry.height / geometry.ray_dot_normal / np.maximum(view.depth, 1e-3) ** 2, np.nan)
    out = {}
    for lag in VARIOGRAM_LAGS_PX:
        difference = (scaled[:, lag:] - scaled[:, :-lag]).ravel()
        difference = difference[np.isfinite(difference)]
        out[lag] = difference[::max(1, len(difference) // MAX_SAMPLES_PER_VIEW)] ** 2
    return out


# ----------------------------------------------------------------------------- sources of views

def real_views(folder: Path) -> Iterator[DepthView]:
    """One view per real scene folder (scene format, posed: world z = 0 is the support)."""
    for scene_dir in sorted(p for p in Path(folder).iterdir() if (p / "scene.json").is_file()):
        for i, frame in enumerate(read_scene(scene_dir).frames):
            if frame.depth is None or frame.T_world_camera is None:
                continue
            yield DepthView(f"{scene_dir.name}/{i}", frame.depth, frame.rgb, frame.K,
                            support_plane_in_camera(frame.T_world_camera, 0.0))


def synthetic_views(count: int, seed: int, config) -> Iterator[DepthView]:
    """The frames of ``count`` synthetic scenes (as ``amodal3d synth`` makes them), the table as support."""
    from amodal3d_ros.synth.scenes import INSTANCE_NOTHING, INSTANCE_TABLE
    from amodal3d_ros.synth.write import _generate_with_retries

    for index in range(count):
        synthetic = _generate_with_retries(seed, index, config)
        top_z = synthetic.meta["table"]["top_z"]
        for i, frame in enumerate(synthetic.scene.frames):
            yield DepthView(f"scene_{index:05d}/{i}", frame.depth, frame.rgb, frame.K,
                            support_plane_in_camera(synthetic.gt_cameras[i], top_z),
                            synthetic.instance[i] == INSTANCE_TABLE, synthetic.instance[i] != INSTANCE_NOTHING)


# ----------------------------------------------------------------------------- pooled statistics

@dataclass
class _Pool:
    """Everything measured on a set of views, pooled."""

    views: int = 0
    holes: Optional[dict] = None
    shadow_ratio: list = dataclasses.field(default_factory=list)
    residual_depth: list = dataclasses.field(default_factory=list)
    residual: list = dataclasses.field(default_factory=list)
    block_depth: list = dataclasses.field(default_factory=list)
    block_std: list = dataclasses.field(default_factory=list)
    variogram: dict = dataclasses.field(default_factory=dict)
    profiles: list = dataclasses.field(default_factory=list)
    quantisation: dict = dataclasses.field(default_factory=dict)

    def add(self, view: DepthView) -> None:
        geometry = view_geometry(view)
        self.views += 1
        holes, shadow_ratio = hole_statistics(view, geometry)
        self.holes = _summed(self.holes, holes)
        self.shadow_ratio.append(shadow_ratio)
        noise = noise_samples(view, geometry)
        if len(noise["residual"]):  # the plane fit's own offset is not noise
            every = max(1, len(noise["residual"]) // MAX_SAMPLES_PER_VIEW)
            self.residual.append((noise["residual"] - np.median(noise["residual"]))[::every])
            self.residual_depth.append(noise["depth"][::every])
        self.block_depth.append(noise["block_depth"])
        self.block_std.append(noise["block_std"])
        for lag, squares in noise_variogram(view, geometry).items():
            self.variogram.setdefault(lag, []).append(squares)
        self.profiles.append(edge_profiles(view.depth, geometry))
        for key, step in quantisation_steps(view.depth, geometry.region).items():
            self.quantisation.setdefault(key, []).append(step)


def _summed(total, counts):
    """Counts added key by key (nested dicts, fixed-length lists of counts)."""
    if total is None:
        return counts
    if isinstance(counts, dict):
        return {k: _summed(total[k], v) for k, v in counts.items()}
    if isinstance(counts, list):
        return [a + b for a, b in zip(total, counts)]
    return total + counts


def _share(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


def _per_bin(depth: np.ndarray, values: np.ndarray, statistic, minimum: int) -> list[Optional[float]]:
    """``statistic`` of the values in each depth bin (mm), None where fewer than ``minimum``."""
    index = np.digitize(depth, DEPTH_BINS_M) - 1
    return [round(float(statistic(values[index == b])) * 1000, 3) if np.sum(index == b) >= minimum else None
            for b in range(len(DEPTH_BINS_M) - 1)]


def _robust_std(values: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def summarise(pool: _Pool) -> dict:
    """The pooled statistics of one source (the JSON's numbers)."""
    h = pool.holes
    runs = {k: round(1000 * v / h["region_px"], 2) for k, v in h["edge_runs_missing_px"].items()}
    shadow_ratio = np.concatenate(pool.shadow_ratio) if pool.shadow_ratio else np.zeros(0)
    depth, residual = (np.concatenate(a) if a else np.zeros(0) for a in (pool.residual_depth, pool.residual))
    block_depth, block_std = np.concatenate(pool.block_depth), np.concatenate(pool.block_std)
    variogram = []
    for lag in VARIOGRAM_LAGS_PX:
        squares = np.concatenate(pool.variogram[lag])
        squares = squares[squares <= np.percentile(squares, 99)] if len(squares) else squares
        variogram.append(round(float(np.sqrt(0.5 * squares.mean())) * 1000, 3) if len(squares) else None)
    return {
        "views": pool.views,
        "holes": {
            "missing": _share(h["missing_px"], h["region_px"]),
            "near_edges": _share(h["near_edge_missing_px"], h["near_edge_px"]),
            "away_from_edges": _share(h["away_missing_px"], h["away_px"]),
            "away_by_brightness": {f"{lo}-{hi - 1}": _share(m, n) for lo, hi, m, n in zip(
                BRIGHTNESS_BINS[:-1], BRIGHTNESS_BINS[1:], h["brightness_missing_px"], h["brightness_px"])},
            "edge_runs_px_per_1000": runs,
            "shadow_width_per_disparity_step_m": (round(float(np.median(shadow_ratio)), 4)
                                                  if len(shadow_ratio) else None),
        },
        "noise": {
            "plane_residual_std_mm": _per_bin(depth, residual, _robust_std, 500),
            "local_plane_residual_std_mm": _per_bin(block_depth, block_std, np.median, 5),
            "variogram_mm_per_m2": variogram,
        },
        "edges": edge_statistics(np.concatenate(pool.profiles)),
        "quantisation_step_mm": [round(float(np.median(pool.quantisation[f"{lo:.1f}"])), 3)
                                 if f"{lo:.1f}" in pool.quantisation else None for lo in DEPTH_BINS_M[:-1]],
    }


DEFINITIONS = {
    "region": "pixels whose ray meets the support plane at a depth inside the view's working window "
              f"({WINDOW_M[0]}-{WINDOW_M[1]} m, and {WINDOW_MARGIN_M} m inside the depth range the view measures)",
    "holes.missing": "share of region pixels without depth",
    "holes.near_edges": f"share of region pixels within {EDGE_BAND_PX} px of a depth edge without depth",
    "holes.away_from_edges": "the same away from edges, between the first and last measured pixel of the row",
    "holes.edge_runs_px_per_1000": "missing pixels in runs between a near and a far surface, per 1000 region "
                                   "pixels; far_first: the far surface is left of (rows) or above (columns) the run",
    "holes.shadow_width_per_disparity_step_m": "median run width along rows, far surface on the left, over "
                                               "fx (1/z_near - 1/z_far): the baseline of a stereo shadow",
    "noise.plane_residual_std_mm": "robust std of the depth residual of support pixels from the support plane, per "
                                   "depth bin (bins_m)",
    "noise.local_plane_residual_std_mm": f"median std after a plane fit in {BLOCK_PX} px blocks, per depth bin",
    "noise.variogram_mm_per_m2": "sqrt(semivariance) of residual / z^2 between pixels lag_px apart along rows",
    "edges": "steps between two surfaces crossed along rows and columns (levels from the outer "
             f"{LEVEL_PX} px of a {2 * PROFILE_HALF_PX + 1} px window); mixed: measured pixels between "
             f"{MIXED_BAND[0]} and {MIXED_BAND[1]} of the step; transition width (pixels between the last within "
             "10 % of the near level and the first within 10 % of the far one) and profile on crossings "
             "without missing pixels",
    "quantisation_step_mm": "median step between neighbouring depth values that occur, per depth bin",
}


def measure(views: Iterable[DepthView], groups=lambda name: ()) -> dict[str, _Pool]:
    """Pool the views: all of them under "all", and each also under ``groups(name)``."""
    pools: dict[str, _Pool] = {}
    for view in views:
        for key in ("all", *groups(view.name)):
            pools.setdefault(key, _Pool()).add(view)
    return pools


# ----------------------------------------------------------------------------- the comparison

REAL, SENSOR_LABELS = "real", {"structured_light_v1": "synthetic, old model (structured_light_v1)",
                               "realsense": "synthetic, new model (realsense)"}


def compare_with_real(real_folder: Path, out: Path, count: int, seed: int, config=None) -> dict:
    """Measure the real frames and ``count`` synthetic scenes per sensor model; write JSON and PNG."""
    from amodal3d_ros.synth.scenes import SynthConfig

    base = config if config is not None else SynthConfig(n_views=2)
    real = measure(real_views(real_folder), groups=lambda name: (f"{REAL}:{name.split('_')[0]}",))
    if not real:
        raise ValueError(f"{real_folder} holds no scene folder with a posed RGB-D frame")
    sources = {REAL if key == "all" else key: summarise(pool) for key, pool in sorted(real.items())}
    for sensor in SENSOR_LABELS:  # the same scenes (layouts, RGB) under each sensor model
        views = synthetic_views(count, seed, dataclasses.replace(base, sensor=sensor))
        sources[sensor] = summarise(measure(views)["all"])
    settings = dataclasses.asdict(base)
    scene_settings = {k: v for k, v in settings.items() if k not in ("sensor", "noise", "realsense")}
    report = {
        "real_folder": str(real_folder),
        "synthetic": {"scenes": count, "seed": seed, "config": scene_settings,
                      "structured_light_v1": settings["noise"], "realsense": settings["realsense"]},
        "bins_m": DEPTH_BINS_M.tolist(), "variogram_lags_px": list(VARIOGRAM_LAGS_PX),
        "brightness_bins": list(BRIGHTNESS_BINS), "definitions": DEFINITIONS, "sources": sources}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensor_comparison.json").write_text(json.dumps(report, indent=1))
    plot_comparison(report, out / "sensor_comparison.png")
    return report


def plot_comparison(report: dict, path: Path) -> None:
    """Real against both synthetic sensor models, one panel per statistic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [REAL, *SENSOR_LABELS]
    labels = {REAL: f"real ({report['sources'][REAL]['views']} frames)", **{
        k: f"{v} ({report['sources'][k]['views']} frames)" for k, v in SENSOR_LABELS.items()}}
    colours = {REAL: "black", "structured_light_v1": "tab:orange", "realsense": "tab:blue"}
    stats = {k: report["sources"][k] for k in shown}
    bins = np.asarray(report["bins_m"])
    centres = (bins[:-1] + bins[1:]) / 2
    fig, axes = plt.subplots(2, 4, figsize=(19, 8.5))

    def bars(ax, names, values_of, title, ylabel):
        x = np.arange(len(names))
        for i, key in enumerate(shown):
            values = [np.nan if v is None else v for v in values_of(stats[key])]
            ax.bar(x + (i - 1) * 0.27, values, 0.27, color=colours[key], label=labels[key])
        ax.set_xticks(x, names, fontsize=8)
        ax.set(title=title, ylabel=ylabel)

    def lines(ax, x, values_of, title, xlabel, ylabel, keys=shown):
        for key in keys:
            values = [np.nan if v is None else v for v in values_of(stats[key])]
            ax.plot(x, values, "o-", color=colours[key], label=labels[key])
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)

    bars(axes[0, 0], ["all", "near edges", "away from edges"],
         lambda s: [s["holes"]["missing"], s["holes"]["near_edges"], s["holes"]["away_from_edges"]],
         "Missing depth", "share of pixels")
    sides = list(stats[REAL]["holes"]["edge_runs_px_per_1000"])
    bars(axes[0, 1], [s.replace("_", "\n") for s in sides],
         lambda s: [s["holes"]["edge_runs_px_per_1000"][k] for k in sides],
         "Holes between a near and a far surface\n(far_first: the far surface left / above)", "pixels per 1000")
    brightness = list(stats[REAL]["holes"]["away_by_brightness"])
    bars(axes[0, 2], brightness, lambda s: [s["holes"]["away_by_brightness"][k] for k in brightness],
         "Missing depth away from edges, by image brightness", "share of pixels")
    lines(axes[0, 3], centres, lambda s: s["noise"]["plane_residual_std_mm"], "Noise: support-plane residual "
          "(solid)\nand after a local plane fit (dashed)", "depth (m)", "robust std (mm)")
    for key in shown:
        local = stats[key]["noise"]["local_plane_residual_std_mm"]
        axes[0, 3].plot(centres, [np.nan if v is None else v for v in local], "s--", color=colours[key])
    lines(axes[1, 0], report["variogram_lags_px"], lambda s: s["noise"]["variogram_mm_per_m2"],
          "Noise correlation in space", "lag (px)", "sqrt semivariance / z^2 (mm/m^2)")
    axes[1, 0].set_xscale("log")
    bars(axes[1, 1], ["0", "1", "2", "3", "4+"], lambda s: s["edges"].get("mixed_histogram") or [None] * 5,
         "Mixed pixels per edge crossing", "share of crossings")
    axes[1, 1].set_title(axes[1, 1].get_title() + "; with holes: " + ", ".join(
        f"{stats[k]['edges'].get('crossings_with_holes', 0):.0%}" for k in shown), fontsize=9)
    offsets = np.arange(-PROFILE_HALF_PX, PROFILE_HALF_PX + 1)
    lines(axes[1, 2], offsets, lambda s: s["edges"].get("median_profile") or [None] * len(offsets),
          "Median depth profile across edges", "px from the step", "0 = near surface, 1 = far")
    lines(axes[1, 3], centres, lambda s: s["quantisation_step_mm"], "Quantisation: step between depth values\n"
          "(dashed: each real camera)", "depth (m)", "mm", keys=list(SENSOR_LABELS))
    cameras = [k for k in sorted(report["sources"]) if k.startswith(f"{REAL}:")]
    for group, marker in zip(cameras, "vs^<>Dp"):
        steps = [np.nan if v is None else v for v in report["sources"][group]["quantisation_step_mm"]]
        axes[1, 3].plot(centres, steps, marker + "--", color="black", label=group)
    if cameras:
        axes[1, 3].legend(axes[1, 3].get_lines()[-len(cameras):], cameras, fontsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.965))
    fig.suptitle(f"Synthetic depth sensor models against the real frames in {report['real_folder']}")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=72)
    plt.close(fig)
