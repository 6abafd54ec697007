"""Multi-view plane-sweep stereo for posed RGB views (any camera geometry, no rectification).

For a reference view, depth hypotheses are swept uniformly in inverse depth; for every hypothesis
each source view is sampled where the reference pixels would project (``cv2.remap``, the same
pixel-centre convention as the renderer and :mod:`amodal3d_ros.geometry`: integer (u, v) is the
pixel centre) and compared with the reference by zero-mean normalised cross-correlation over a
box window. The per-source scores are combined as the mean of the best ``top_k`` (robust to a
source in which the pixel is hidden), the best hypothesis wins (parabolic sub-step refinement),
and only pixels with a clear, unique and strong peak on enough texture are kept. The work is done
at a reduced resolution (``scale``) and brought back to the full image without interpolating
across depth jumps. :func:`cross_check` then keeps only depths that another view agrees with.

The sweep is coarse to fine: a full-range sweep at ``coarse_scale``, then at ``scale`` a narrow
per-pixel band of hypotheses around the (upsampled) coarse depth.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from ..config import StereoConfig
from ..geometry import backproject_pixels, invert, project, transform_points


def scaled_K(K: np.ndarray, s: float) -> np.ndarray:
    """Intrinsics of the image resized by ``s`` (pixel centres at integers: u' = s (u + 0.5) - 0.5)."""
    Ks = np.asarray(K, dtype=np.float64).copy()
    Ks[0, 0] *= s
    Ks[1, 1] *= s
    Ks[0, 1] *= s
    Ks[0, 2] = s * (K[0, 2] + 0.5) - 0.5
    Ks[1, 2] = s * (K[1, 2] + 0.5) - 0.5
    return Ks


def _grey(rgb: np.ndarray, s: float) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if s == 1.0:
        return g
    h, w = g.shape
    return cv2.resize(g, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)


def axes_meet_depth(T_ref: np.ndarray, others: Sequence[np.ndarray]) -> float:
    """Median depth along the reference axis where it passes closest to the other optical axes."""
    zs = []
    for T in others:
        c_a, c_b, z_a, z_b = T_ref[:3, 3], T[:3, 3], T_ref[:3, 2], T[:3, 2]
        A = np.stack([z_a, -z_b], axis=1)
        if np.linalg.cond(A) > 1e6:
            continue
        s, _ = np.linalg.lstsq(A, c_b - c_a, rcond=None)[0]
        if s > 0:
            zs.append(s)
    return float(np.median(zs)) if zs else 1.0


class _Source:
    """A source view seen from the reference: p ~ A(pixel) + b * inverse_depth."""

    def __init__(self, grey: np.ndarray, K_src: np.ndarray, T_src: np.ndarray, K_ref: np.ndarray,
                 T_ref: np.ndarray, shape: tuple[int, int]):
        self.grey = grey
        T = invert(T_src) @ T_ref  # reference camera -> source camera
        H, W = shape
        u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)
        M = K_src @ T[:3, :3] @ np.linalg.inv(K_ref)
        self.A = (pix @ M.T).astype(np.float32)  # (H, W, 3)
        self.b = (K_src @ T[:3, 3]).astype(np.float32)

    def rate(self, inv_depth: float) -> float:
        """Largest image motion (px) per unit of inverse depth over the reference image."""
        A = self.A[::8, ::8]
        p0 = A + self.b * inv_depth
        p1 = A + self.b * (inv_depth * 1.001 + 1e-4)
        ok = (p0[..., 2] > 1e-6) & (p1[..., 2] > 1e-6)
        if not np.any(ok):
            return 0.0
        uv0 = p0[..., :2] / p0[..., 2:]
        uv1 = p1[..., :2] / p1[..., 2:]
        motion = np.linalg.norm(uv1 - uv0, axis=-1)[ok] / (inv_depth * 0.001 + 1e-4)
        return float(np.max(motion))

    def sample(self, inv_depth) -> np.ndarray:
        """The source image at the projections of the reference pixels (NaN outside / behind)."""
        p = self.A + self.b * (np.asarray(inv_depth, np.float32)[..., None] if np.ndim(inv_depth) else
                               np.float32(inv_depth))
        z = p[..., 2]
        ok = z > 1e-6
        zs = np.where(ok, z, 1.0)
        mx = np.where(ok, p[..., 0] / zs, -1e4).astype(np.float32)
        my = np.where(ok, p[..., 1] / zs, -1e4).astype(np.float32)
        return cv2.remap(self.grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)


class _Zncc:
    def __init__(self, ref: np.ndarray, window: int):
        self.k = (window, window)
        self.ref = ref
        self.mean = cv2.blur(ref, self.k)
        self.var = np.maximum(cv2.blur(ref * ref, self.k) - self.mean ** 2, 0)
        self.std = np.sqrt(self.var)

    def score(self, warped: np.ndarray) -> np.ndarray:
        """ZNCC in [-1, 1]; -1 where the window leaves the source or the source window is flat."""
        k = self.k
        inside = np.isfinite(warped)
        warped = np.where(inside, warped, 0).astype(np.float32)  # box filters run on sums: no NaN
        full = cv2.blur(inside.astype(np.float32), k) > 0.999
        mj = cv2.blur(warped, k)
        vj = cv2.blur(warped * warped, k) - mj ** 2
        cov = cv2.blur(self.ref * warped, k) - self.mean * mj
        s = cov / np.sqrt(np.maximum(self.var * vj, 1e-6))
        s[~(full & (vj > 0.25))] = -1.0
        return s


def _combine(scores: list[np.ndarray], top_k: int) -> np.ndarray:
    if len(scores) == 1:
        return scores[0]
    stack = np.sort(np.stack(scores), axis=0)
    k = min(top_k, len(scores))
    return stack[-k:].mean(axis=0)


def _sweep_level(ref: np.ndarray, sources: list[_Source], window: int, inv_depths: np.ndarray, top_k: int):
    """Score volume (D, H, W) over hypotheses ``inv_depths`` ((D,) planes or (D, H, W) per pixel)."""
    z = _Zncc(ref, window)
    vol = np.empty((len(inv_depths),) + ref.shape, np.float32)
    for d, inv in enumerate(inv_depths):
        vol[d] = _combine([z.score(s.sample(inv)) for s in sources], top_k)
    return vol, z


def _winner(vol: np.ndarray, exclude: int = 2):
    """Best index, sub-step offset, best score and best score away (> exclude) from the winner."""
    D = vol.shape[0]
    best = np.argmax(vol, axis=0)
    score = np.take_along_axis(vol, best[None], 0)[0]
    lo = np.take_along_axis(vol, np.clip(best - 1, 0, D - 1)[None], 0)[0]
    hi = np.take_along_axis(vol, np.clip(best + 1, 0, D - 1)[None], 0)[0]
    curv = lo - 2 * score + hi
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(curv < -1e-6, 0.5 * (lo - hi) / curv, 0.0)
    off = np.clip(off, -0.5, 0.5)
    interior = (best > 0) & (best < D - 1)
    idx = np.arange(D)[:, None, None]
    away = np.abs(idx - best[None]) > exclude
    second = np.where(away, vol, -1.0).max(axis=0)
    return best, off, score, second, interior


def reference_depth(ref_rgb: np.ndarray, K_ref: np.ndarray, T_ref: np.ndarray,
                    sources: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    cfg: Optional[StereoConfig] = None, debug: Optional[dict] = None) -> np.ndarray:
    """(H, W) float32 depth of the reference view (0 where not trusted) from source views given as
    (rgb, K, T_world_camera)."""
    cfg = cfg or StereoConfig()
    H, W = ref_rgb.shape[:2]
    usable = []
    for rgb, K, T in sources:
        baseline = float(np.linalg.norm(T[:3, 3] - T_ref[:3, 3]))
        angle = float(np.degrees(np.arccos(np.clip(T[:3, 2] @ T_ref[:3, 2], -1, 1))))
        if baseline >= cfg.min_baseline and angle <= cfg.max_angle_deg:
            usable.append((rgb, K, T))
    if not usable:
        return np.zeros((H, W), np.float32)
    zc = axes_meet_depth(T_ref, [T for _, _, T in usable])
    z_near = max(cfg.near, cfg.range_factors[0] * zc)
    z_far = min(cfg.far, cfg.range_factors[1] * zc)
    d_lo, d_hi = 1.0 / z_far, 1.0 / z_near

    # Coarse: planes over the whole range.
    sc = cfg.coarse_scale
    ref_c = _grey(ref_rgb, sc)
    Kc = scaled_K(K_ref, sc)
    src_c = [_Source(_grey(rgb, sc), scaled_K(K, sc), T, Kc, T_ref, ref_c.shape) for rgb, K, T in usable]
    rate = float(np.median([s.rate(0.5 * (d_lo + d_hi)) for s in src_c]))
    n = int(np.clip(np.ceil((d_hi - d_lo) * rate / cfg.step_px) + 1, 16, cfg.max_planes))
    planes = np.linspace(d_lo, d_hi, n).astype(np.float32)
    vol, _ = _sweep_level(ref_c, src_c, cfg.coarse_window, planes, cfg.top_k)
    best, off, score, second, interior = _winner(vol)
    step_c = planes[1] - planes[0]
    inv_c = planes[best] + off * step_c
    ok_c = interior & (score > cfg.min_score - 0.1) & (score - second >= cfg.min_margin)
    if debug is not None:
        debug.update(planes=n, inv_c=inv_c, interior_c=interior, score_c=score, second_c=second)
    del vol

    # Fine: a per-pixel band around the coarse estimate.
    s = cfg.scale
    ref_f = _grey(ref_rgb, s)
    Kf = scaled_K(K_ref, s)
    hf, wf = ref_f.shape
    inv0 = cv2.resize(np.where(ok_c, inv_c, np.nan).astype(np.float32), (wf, hf), interpolation=cv2.INTER_NEAREST)
    known = np.isfinite(inv0)
    inv0 = np.where(known, inv0, 0.5 * (d_lo + d_hi)).astype(np.float32)
    src_f = [_Source(_grey(rgb, s), scaled_K(K, s), T, Kf, T_ref, ref_f.shape) for rgb, K, T in usable]
    step_f = step_c * cfg.refine_step_px / cfg.step_px * (sc / s)
    offsets = np.arange(-cfg.refine_band, cfg.refine_band + 1, dtype=np.float32) * step_f
    hyps = inv0[None] + offsets[:, None, None]
    vol, zn = _sweep_level(ref_f, src_f, cfg.window, hyps, cfg.top_k)
    best, off, score, _, interior = _winner(vol)
    inv = np.take_along_axis(hyps, best[None], 0)[0] + off * step_f
    ok = known & interior & (score >= cfg.min_score) & (zn.std >= cfg.min_texture) & (inv > 0)
    epi = np.max([epipolar_texture(ref_f, Kf, T_ref, T, cfg.window) for _, _, T in usable], axis=0)
    ok &= epi >= cfg.min_epipolar_texture
    if debug is not None:
        debug.update(inv_f=inv, known=known, interior_f=interior, score_f=score, std=zn.std, epi=epi)
    depth_f = np.where(ok, 1.0 / np.maximum(inv, 1e-6), 0.0).astype(np.float32)
    return upsample_depth(depth_f, (H, W), cfg.edge_jump)


def epipolar_texture(ref: np.ndarray, K_ref: np.ndarray, T_ref: np.ndarray, T_src: np.ndarray,
                     window: int) -> np.ndarray:
    """RMS image gradient along the epipolar lines of a source view over the window (grey levels
    per px): stripes running along the epipolar lines cannot be matched, however strong they are."""
    c = (invert(T_ref) @ np.append(T_src[:3, 3], 1.0))[:3]
    e = K_ref @ c  # epipole, homogeneous
    h, w = ref.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dx, dy = e[0] - u * e[2], e[1] - v * e[2]
    n = np.sqrt(dx * dx + dy * dy) + 1e-9
    gx = cv2.Sobel(ref, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(ref, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    g = (gx * dx + gy * dy) / n
    return np.sqrt(np.maximum(cv2.blur(g * g, (window, window)), 0))


def upsample_depth(depth: np.ndarray, shape: tuple[int, int], edge_jump: float) -> np.ndarray:
    """Depth at a reduced resolution -> (H, W): bilinear in inverse depth where all four neighbours
    are filled and agree (no filling across depth jumps or hole borders), 0 elsewhere."""
    H, W = shape
    valid = depth > 0
    big = np.float32(1e6)
    dmax = cv2.dilate(np.where(valid, depth, 0).astype(np.float32), np.ones((3, 3), np.uint8))
    dmin = -cv2.dilate(np.where(valid, -depth, -big).astype(np.float32), np.ones((3, 3), np.uint8))
    smooth = valid & (dmax - dmin <= edge_jump * depth)
    inv = np.where(smooth, 1.0 / np.maximum(depth, 1e-6), 0).astype(np.float32)
    h, w = depth.shape
    if (h, w) == (H, W):
        return np.where(smooth, depth, 0).astype(np.float32)
    # Full-res pixel centre u -> reduced coordinate (u + 0.5) * w / W - 0.5, as cv2.resize does.
    inv_up = cv2.resize(inv, (W, H), interpolation=cv2.INTER_LINEAR)
    mask_up = cv2.resize(smooth.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    keep = (mask_up > 0.999) & (inv_up > 0)
    return np.where(keep, 1.0 / np.maximum(inv_up, 1e-9), 0).astype(np.float32)


def cross_check(depths: Sequence[Optional[np.ndarray]], Ks: Sequence[np.ndarray], poses: Sequence[np.ndarray],
                check: Sequence[int], cfg: Optional[StereoConfig] = None) -> dict[int, np.ndarray]:
    """Depths of views ``check`` kept only where at least ``min_consistent`` other views' depths
    agree: the point seen at the pixel, moved into the other view, lands (within
    ``consistency_px``) on a pixel whose depth is the point's depth there (within ``consistency``)."""
    cfg = cfg or StereoConfig()
    out = {}
    for i in check:
        depth = depths[i]
        v, u = np.nonzero(depth > 0)
        if len(u) == 0:
            out[i] = depth
            continue
        pts = backproject_pixels(Ks[i], u, v, depth[v, u].astype(np.float64))
        votes = np.zeros(len(u), np.int32)
        for j, other in enumerate(depths):
            if j == i or other is None or not np.any(other > 0):
                continue
            T = invert(poses[j]) @ poses[i]
            uvj, zq = project(Ks[j], transform_points(T, pts))
            h, w = other.shape
            ui, vi = np.rint(uvj[:, 0]).astype(np.int64), np.rint(uvj[:, 1]).astype(np.int64)
            ok = (zq > 1e-3) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
            zj = np.zeros(len(u))
            zj[ok] = other[vi[ok], ui[ok]]
            agree = ok & (zj > 0) & (np.abs(zj - zq) <= cfg.consistency * zq)
            if cfg.consistency_px > 0 and np.any(agree):
                # Back from the other view: its point at that pixel must land near our pixel (in front of us).
                a = np.nonzero(agree)[0]
                back = transform_points(invert(T), backproject_pixels(Ks[j], ui[a], vi[a], zj[a]))
                uv, z_back = project(Ks[i], back)
                near = np.hypot(uv[:, 0] - u[a], uv[:, 1] - v[a]) <= cfg.consistency_px
                agree[a] &= near & (z_back > 1e-3)
            votes += agree
        keep = np.zeros_like(depth, dtype=bool)
        keep[v, u] = votes >= cfg.min_consistent
        out[i] = np.where(keep, depth, 0).astype(np.float32)
    return out
