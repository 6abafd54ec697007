"""Two-view stereo between posed RGB views: rectify from the known relative pose, SGBM, back to depth.

``pair_depth(frame_a, T_a, frame_b, T_b)`` gives a metric depth map in view a's original pixels
(0 where unsure). The pair is rectified with ``cv2.stereoRectify`` from the relative pose (no lens
distortion: frames are pinhole), matched with ``cv2.StereoSGBM`` in both directions, and only
disparities that pass the left-right check, lie inside both rectified images and sit on enough
image texture are kept. The disparity search range comes from sparse SIFT matches that respect
the epipolar geometry, so no depth prior is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..geometry import invert
from ..scene import Frame


class StereoError(ValueError):
    """RGB-only input that stereo cannot turn into metric depth."""


@dataclass
class StereoConfig:
    min_baseline: float = 0.03  # m, shorter pairs give too little parallax
    max_angle_deg: float = 75.0  # between the optical axes; wider pairs look too different
    best_angle_deg: float = 20.0  # preferred angle between optical axes when ranking partners
    partners: int = 2  # stereo partners per view
    block: int = 5  # SGBM block size, px
    uniqueness: int = 10  # SGBM uniqueness ratio, %
    lr_tolerance: float = 1.0  # px, left-right consistency
    min_texture: float = 2.0  # grey-level std over the block below which a match is not trusted
    agreement: float = 0.015  # relative depth agreement of two pairs for a pixel they both cover
    min_matches: int = 20  # sparse matches needed to bound the disparity search
    rect_scale: float = 1.25  # rectified image size relative to the original
    max_disparities: int = 512


@dataclass
class _Rectified:
    axis: int  # 0: horizontal epipolar lines, 1: vertical (images transposed before matching)
    flip: bool  # images mirrored so that SGBM disparities are positive
    b: float  # P2[axis, 3] (f * baseline in the rectified frame, signed)
    off: float  # P1[axis, 2] - P2[axis, 2]
    R1: np.ndarray
    P1: np.ndarray
    size: tuple[int, int]  # rectified (width, height) before transposition


def pair_geometry(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """Baseline (m) and the angle (deg) between the two optical axes."""
    baseline = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    cos = float(np.clip(T_a[:3, 2] @ T_b[:3, 2], -1, 1))
    return baseline, float(np.degrees(np.arccos(cos)))


def _to_matching(img: np.ndarray, rect: _Rectified) -> np.ndarray:
    if rect.axis == 1:
        img = img.T
    if rect.flip:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def _from_matching(img: np.ndarray, rect: _Rectified) -> np.ndarray:
    if rect.flip:
        img = img[:, ::-1]
    if rect.axis == 1:
        img = img.T
    return np.ascontiguousarray(img)


def _grey(frame: Frame) -> np.ndarray:
    return cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)


def _disparity_range(left: np.ndarray, right: np.ndarray, valid_l: np.ndarray, valid_r: np.ndarray,
                     cfg: StereoConfig) -> Optional[tuple[int, int]]:
    """(minDisparity, numDisparities) bounding the sparse epipolar matches, None if too few."""
    sift = cv2.SIFT_create(nfeatures=3000)
    kl, dl = sift.detectAndCompute(left, valid_l.astype(np.uint8))
    kr, dr = sift.detectAndCompute(right, valid_r.astype(np.uint8))
    if dl is None or dr is None or len(kl) < cfg.min_matches or len(kr) < cfg.min_matches:
        return None
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(dl, dr, k=2)
    disp = []
    for pair in matches:
        if len(pair) < 2 or pair[0].distance > 0.8 * pair[1].distance:
            continue
        pl, pr = kl[pair[0].queryIdx].pt, kr[pair[0].trainIdx].pt
        if abs(pl[1] - pr[1]) < 2.0:
            disp.append(pl[0] - pr[0])
    disp = np.array(disp)
    if len(disp) < cfg.min_matches:
        return None
    lo, hi = np.percentile(disp, [2, 98])
    margin = 0.15 * (hi - lo) + 16
    lo, hi = lo - margin, hi + margin
    num = int(np.ceil((hi - lo) / 16.0)) * 16
    return int(np.floor(lo)), int(min(max(num, 16), cfg.max_disparities))


def _prior_range(T_a, T_b, rect: _Rectified, cfg: StereoConfig) -> tuple[int, int]:
    """Disparity bounds from where the optical axes (nearly) meet: the views look at the scene."""
    c_a, c_b, z_a, z_b = T_a[:3, 3], T_b[:3, 3], T_a[:3, 2], T_b[:3, 2]
    A = np.stack([z_a, -z_b], axis=1)
    s, _ = np.linalg.lstsq(A, c_b - c_a, rcond=None)[0]
    zc = float(np.clip(s, 0.2, 5.0))
    d = [rect.off - rect.b / z for z in (0.5 * zc, 2.0 * zc)]
    lo, hi = min(d), max(d)
    num = int(np.ceil((hi - lo) / 16.0)) * 16
    return int(np.floor(lo)), int(min(max(num, 16), cfg.max_disparities))


def _match(left: np.ndarray, right: np.ndarray, shift: int, num: int, cfg: StereoConfig) -> np.ndarray:
    """Disparities in [shift, shift + num) of ``left`` (NaN where SGBM finds none), any sign of shift."""
    h, w = left.shape
    base = num + max(0, -shift)  # SGBM leaves the first numDisparities columns empty
    width = base + w + max(0, shift) + 16
    lc = np.zeros((h, width), np.uint8)
    rc = np.zeros((h, width), np.uint8)
    lc[:, base:base + w] = left
    rc[:, base + shift:base + shift + right.shape[1]] = right
    disp = _sgbm(lc, rc, 0, num, cfg)[:, base:base + w]
    return np.where(disp >= 0, disp + shift, np.nan).astype(np.float32)


def _sgbm(left: np.ndarray, right: np.ndarray, min_disp: int, num: int, cfg: StereoConfig) -> np.ndarray:
    bs = cfg.block
    matcher = cv2.StereoSGBM_create(minDisparity=min_disp, numDisparities=num, blockSize=bs,
                                    P1=8 * bs * bs, P2=32 * bs * bs, disp12MaxDiff=-1,
                                    uniquenessRatio=cfg.uniqueness, speckleWindowSize=100, speckleRange=2,
                                    mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    return matcher.compute(left, right).astype(np.float32) / 16.0


def rectify(frame_a: Frame, T_a: np.ndarray, frame_b: Frame, T_b: np.ndarray, cfg: StereoConfig):
    """Rectify the pair from the known poses (Fusiello et al.): both views turned to a common
    orientation whose x axis runs along the baseline from a to b, so epipolar lines are rows and
    disparities x_a - x_b are positive. Each view keeps its own horizontal principal point so that
    converging cameras fit their rectified images."""
    c_a, c_b = T_a[:3, 3], T_b[:3, 3]
    x = (c_b - c_a) / np.linalg.norm(c_b - c_a)
    z = T_a[:3, 2] + T_b[:3, 2]
    z = z - (z @ x) * x
    z /= np.linalg.norm(z)
    y = np.cross(z, x)
    R_rect = np.stack([x, y, z])  # world -> rectified
    R1, R2 = R_rect @ T_a[:3, :3], R_rect @ T_b[:3, :3]  # camera -> rectified
    f = float(np.mean([frame_a.K[0, 0], frame_a.K[1, 1], frame_b.K[0, 0], frame_b.K[1, 1]]))
    boxes = []
    for frame, R in ((frame_a, R1), (frame_b, R2)):
        w, h = frame.width, frame.height
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
        rays = (R @ np.linalg.inv(frame.K) @ corners.T).T
        if np.any(rays[:, 2] <= 1e-3):
            return None
        xy = f * rays[:, :2] / rays[:, 2:]
        boxes.append((xy.min(axis=0), xy.max(axis=0)))
    y0 = max(boxes[0][0][1], boxes[1][0][1])
    y1 = min(boxes[0][1][1], boxes[1][1][1])
    if y1 - y0 < 16:
        return None
    widths = [b[1][0] - b[0][0] for b in boxes]
    limit = cfg.rect_scale * max(frame_a.width, frame_a.height)
    scale = min(1.0, limit / max(max(widths), y1 - y0))
    f *= scale
    size = (int(np.ceil(max(widths) * scale)), int(np.ceil((y1 - y0) * scale)))
    cy = -y0 * scale
    cxs = [-b[0][0] * scale for b in boxes]
    baseline = float(np.linalg.norm(c_b - c_a))
    P1 = np.array([[f, 0, cxs[0], 0], [0, f, cy, 0], [0, 0, 1, 0]])
    P2 = np.array([[f, 0, cxs[1], -f * baseline], [0, f, cy, 0], [0, 0, 1, 0]])
    rect = _Rectified(axis=0, flip=False, b=-f * baseline, off=cxs[0] - cxs[1], R1=R1, P1=P1, size=size)
    maps = []
    for frame, R, P in ((frame_a, R1, P1), (frame_b, R2, P2)):
        mx, my = cv2.initUndistortRectifyMap(frame.K, np.zeros(5), R, P[:, :3], size, cv2.CV_32FC1)
        img = cv2.remap(_grey(frame), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        inside = cv2.remap(np.full(frame.rgb.shape[:2], 255, np.uint8), mx, my, cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        maps.append((img, inside))
    return rect, maps


def pair_depth(frame_a: Frame, T_a: np.ndarray, frame_b: Frame, T_b: np.ndarray,
               config: Optional[StereoConfig] = None) -> np.ndarray:
    """(H, W) float32 metric depth of view a from the pair (a, b); 0 where not trusted."""
    cfg = config or StereoConfig()
    H, W = frame_a.height, frame_a.width
    depth = np.zeros((H, W), np.float32)
    if frame_b.rgb.shape != frame_a.rgb.shape:
        return depth
    rectified = rectify(frame_a, T_a, frame_b, T_b, cfg)
    if rectified is None:
        return depth
    rect, ((img_a, in_a), (img_b, in_b)) = rectified
    left, right = _to_matching(img_a, rect), _to_matching(img_b, rect)
    valid_l, valid_r = _to_matching(in_a, rect), _to_matching(in_b, rect)
    rng = _disparity_range(left, right, valid_l, valid_r, cfg)
    if rng is None:
        rng = _prior_range(T_a, T_b, rect, cfg)
    min_disp, num = rng
    disp_l = _match(left, right, min_disp, num, cfg)
    disp_r = _match(np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1]), min_disp, num,
                    cfg)[:, ::-1]
    ok = np.isfinite(disp_l) & valid_l
    h, w = disp_l.shape
    xs = np.arange(w)[None, :].repeat(h, 0)
    xr = np.rint(xs - np.where(ok, disp_l, 0)).astype(int)
    in_r = ok & (xr >= 0) & (xr < w)
    back = np.full_like(disp_l, -1.0)
    rows = np.nonzero(in_r)
    back[rows] = disp_r[rows[0], xr[rows]]
    ok &= in_r & (np.abs(back - disp_l) <= cfg.lr_tolerance)
    ok[in_r] &= valid_r[rows[0], xr[rows]]
    # Texture: block-scale grey-level spread (SGBM interpolates through flat regions).
    f = left.astype(np.float32)
    k = (cfg.block * 2 + 1, cfg.block * 2 + 1)
    std = np.sqrt(np.maximum(cv2.blur(f * f, k) - cv2.blur(f, k) ** 2, 0))
    ok &= std >= cfg.min_texture
    # Do not sample across disparity jumps: occlusion edges are where matches go wrong.
    dmax = cv2.dilate(np.where(ok, disp_l, -1e4).astype(np.float32), np.ones((3, 3), np.uint8))
    dmin = -cv2.dilate(np.where(ok, -disp_l, -1e4).astype(np.float32), np.ones((3, 3), np.uint8))
    ok &= (dmax - dmin) < 2.0
    disp = np.where(ok, disp_l, np.nan).astype(np.float32)
    disp = _from_matching(disp, rect)

    # Original pixels of a -> rectified coordinates -> disparity -> depth along a's own ray.
    uu, vv = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
    rp_ = cv2.undistortPoints(pts, frame_a.K, np.zeros(5), R=rect.R1, P=rect.P1[:, :3]).reshape(H, W, 2)
    mx, my = rp_[..., 0].astype(np.float32), rp_[..., 1].astype(np.float32)
    d = cv2.remap(disp, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    d_signed = -d if rect.flip else d
    with np.errstate(invalid="ignore", divide="ignore"):
        z_rect = -rect.b / (d_signed - rect.off)
    f1, cx1, cy1 = rect.P1[0, 0], rect.P1[0, 2], rect.P1[1, 2]
    ray_rect = np.stack([(mx - cx1) / f1, (my - cy1) / rect.P1[1, 1], np.ones_like(mx)], axis=-1)
    z_orig = z_rect * (ray_rect @ rect.R1)[..., 2]  # rectified point -> camera a (R1^T), its z
    good = np.isfinite(z_orig) & (z_rect > 0.05) & (z_orig > 0.05)
    depth[good] = z_orig[good]
    return depth
