"""Frames, scenes and the scene folder format (version 1).

The format is specified in ``shared/spec/scene-format.md``: ``scene.json`` plus ``rgb/``,
optional ``depth/`` (16-bit PNG in ``depth_scale`` metres) and optional ``gt/``.
Frames are in the ROS optical convention (x right, y down, z forward); ``T_a_b`` maps points
from frame b into frame a.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from . import safe_io

SCENE_FORMAT_VERSION = 1


class SceneFormatError(ValueError):
    """A scene folder or frame that does not follow the scene format."""


@dataclass
class Frame:
    """One camera view: colour, optional metric depth, intrinsics and optional pose."""

    rgb: np.ndarray  # (H, W, 3) uint8, RGB order
    K: np.ndarray  # (3, 3) float64 pinhole intrinsics
    depth: Optional[np.ndarray] = None  # (H, W) float32 metres, 0 = no measurement
    T_world_camera: Optional[np.ndarray] = None  # (4, 4) float64, None = unposed
    stamp: float = 0.0

    def __post_init__(self) -> None:
        self.rgb = np.asarray(self.rgb)
        if self.rgb.ndim == 2:
            self.rgb = np.repeat(self.rgb[..., None], 3, axis=2)
        if self.rgb.ndim != 3 or self.rgb.shape[2] not in (3, 4):
            raise SceneFormatError(f"rgb must be HxWx3, got shape {self.rgb.shape}")
        self.rgb = np.ascontiguousarray(self.rgb[..., :3], dtype=np.uint8)
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        if not (self.K[0, 0] > 0 and self.K[1, 1] > 0):
            raise SceneFormatError(f"intrinsics K must have positive focal lengths, got {self.K.tolist()}")
        if self.depth is not None:
            depth = np.asarray(self.depth, dtype=np.float32)
            if depth.shape != self.rgb.shape[:2]:
                raise SceneFormatError(
                    f"depth shape {depth.shape} does not match rgb shape {self.rgb.shape[:2]}")
            # NaN, inf and negative values all mean "no measurement".
            self.depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        if self.T_world_camera is not None:
            T = np.asarray(self.T_world_camera, dtype=np.float64).reshape(4, 4)
            if not np.all(np.isfinite(T)):
                raise SceneFormatError("T_world_camera contains non-finite values")
            self.T_world_camera = T

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def has_depth(self) -> bool:
        return self.depth is not None and bool(np.any(self.depth > 0))


@dataclass
class Target:
    """A requested object, named by one pixel ``[u, v]`` (column, row) of it in frame ``frame``."""

    id: str
    frame: int
    pixel: tuple[int, int]


@dataclass
class Scene:
    frames: list[Frame]
    targets: list[Target] = field(default_factory=list)
    world_frame: str = "world"
    path: Optional[Path] = None

    @property
    def posed(self) -> bool:
        return all(f.T_world_camera is not None for f in self.frames)

    @property
    def has_depth(self) -> bool:
        return all(f.depth is not None for f in self.frames)


# Largest departure from a rotation (|R^T R - I|, |det R - 1|) a camera pose may have: poses rounded to a
# few decimals pass, sheared or scaled ones do not.
RIGID_TOLERANCE = 1e-3
_NO_VALUE = object()


def _shown(value) -> str:
    """A JSON value as a short one-line quote for an error message."""
    if isinstance(value, str) and len(value) > 60:
        value = value[:57] + "..."
    shown = json.dumps(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _problem(where: str, message: str, value=_NO_VALUE) -> SceneFormatError:
    """One line naming the field: ``frames[1].K: must be ..., got [[1, 2], [3, 4]]`` (read_scene adds the file)."""
    if value is not _NO_VALUE:
        message += f", got {_shown(value)}"
    return SceneFormatError(f"{where}: {message}")


def _required(d: dict, key: str, where: str):
    """``d[key]``; a missing or null field is an error naming it."""
    value = d.get(key)
    if value is None:
        raise _problem(f"{where}.{key}" if where else key,
                       "missing required field" if key not in d else "must not be null")
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value, where: str, minimum: int = 0) -> int:
    if not (_is_number(value) and np.isfinite(value) and float(value).is_integer() and value >= minimum):
        raise _problem(where, f"must be an integer >= {minimum}", value)
    return int(value)


def _positive_number(value, where: str) -> float:
    if not (_is_number(value) and np.isfinite(value) and value > 0):
        raise _problem(where, "must be a finite number > 0", value)
    return float(value)


def _matrix(value, rows: int, cols: int, where: str) -> np.ndarray:
    """A ``rows`` x ``cols`` matrix of finite JSON numbers (strings and booleans are not numbers)."""
    if not (isinstance(value, list) and len(value) == rows
            and all(isinstance(r, list) and len(r) == cols and all(map(_is_number, r)) for r in value)):
        raise _problem(where, f"must be a {rows}x{cols} matrix of numbers (a list of {rows} rows)", value)
    m = np.array(value, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise _problem(where, "must hold finite numbers only", value)
    return m


def _intrinsics(value, where: str) -> np.ndarray:
    K = _matrix(value, 3, 3, where)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise _problem(where, "focal lengths K[0][0] and K[1][1] must be > 0", value)
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise _problem(where, "must be a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]", value)
    return K


def _rigid_pose(value, where: str) -> np.ndarray:
    """A 4x4 rigid transform: R^T R = I and det R = +1 within RIGID_TOLERANCE, last row 0 0 0 1."""
    T = _matrix(value, 4, 4, where)
    R = T[:3, :3]
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise _problem(where, "last row must be [0, 0, 0, 1]", value)
    if (np.abs(R.T @ R - np.eye(3)).max() > RIGID_TOLERANCE
            or abs(np.linalg.det(R) - 1.0) > RIGID_TOLERANCE):
        raise _problem(where, "must be a rigid transform (rotation with R^T R = I, det R = +1; "
                              "no scale, shear or reflection)", value)
    return T


def _read_image(folder: Path, relative, where: str, flags: int) -> np.ndarray:
    """An image named by scene.json: a relative path that stays inside the scene folder."""
    try:
        path = safe_io.inside(folder, relative, what="scene file")
    except safe_io.UnsafePathError as exc:
        raise _problem(where, str(exc)) from None
    if not path.is_file():
        raise _problem(where, f"image file not found: {relative}")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise _problem(where, f"cannot decode image: {relative}")
    return img


def _read_frame(folder: Path, fm, where: str) -> Frame:
    if not isinstance(fm, dict):
        raise _problem(where, "must be an object with rgb, width, height, K, stamp", fm)
    rgb = cv2.cvtColor(_read_image(folder, _required(fm, "rgb", where), f"{where}.rgb", cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    width = _integer(_required(fm, "width", where), f"{where}.width", minimum=1)
    height = _integer(_required(fm, "height", where), f"{where}.height", minimum=1)
    if (width, height) != (rgb.shape[1], rgb.shape[0]):
        raise _problem(f"{where}.width/height", f"{width}x{height} do not match the rgb image "
                                                f"{rgb.shape[1]}x{rgb.shape[0]}")
    depth = None
    if fm.get("depth") is not None:
        raw = _read_image(folder, fm["depth"], f"{where}.depth", cv2.IMREAD_UNCHANGED)
        if raw.ndim != 2 or raw.dtype != np.uint16:
            raise _problem(f"{where}.depth", f"must be a 16-bit single-channel image, got {raw.dtype} "
                                             f"with shape {list(raw.shape)}")
        if raw.shape != rgb.shape[:2]:
            raise _problem(f"{where}.depth", f"{raw.shape[1]}x{raw.shape[0]} does not match the rgb image "
                                             f"{rgb.shape[1]}x{rgb.shape[0]}")
        depth = raw.astype(np.float32) * _positive_number(_required(fm, "depth_scale", where),
                                                          f"{where}.depth_scale")
    elif fm.get("depth_scale") is not None:
        _positive_number(fm["depth_scale"], f"{where}.depth_scale")
    K = _intrinsics(_required(fm, "K", where), f"{where}.K")
    T = fm.get("T_world_camera")
    T = None if T is None else _rigid_pose(T, f"{where}.T_world_camera")
    stamp = _required(fm, "stamp", where)
    if not (_is_number(stamp) and np.isfinite(stamp)):
        raise _problem(f"{where}.stamp", "must be a finite number (seconds)", stamp)
    return Frame(rgb=rgb, depth=depth, K=K, T_world_camera=T, stamp=float(stamp))


def _read_targets(targets_meta, frames: list[Frame]) -> list[Target]:
    if targets_meta is None:
        return []
    if not isinstance(targets_meta, list):
        raise _problem("targets", "must be a list of {id, frame, pixel} objects", targets_meta)
    targets, seen = [], set()
    for j, tm in enumerate(targets_meta):
        here = f"targets[{j}]"
        if not isinstance(tm, dict):
            raise _problem(here, "must be an object with id, frame and pixel", tm)
        target_id = _required(tm, "id", here)
        try:
            safe_io.check_id(target_id)
        except safe_io.UnsafePathError as exc:
            raise _problem(f"{here}.id {_shown(target_id)}", str(exc)) from None
        if target_id in seen:
            raise _problem(f"{here}.id {_shown(target_id)}", "is used by another target (ids must be unique)")
        seen.add(target_id)
        fi = _integer(_required(tm, "frame", here), f"{here}.frame")
        if fi >= len(frames):
            raise _problem(f"{here}.frame", f"frame {fi} out of range (scene has {len(frames)} frames)")
        pixel = _required(tm, "pixel", here)
        if not (isinstance(pixel, list) and len(pixel) == 2):
            raise _problem(f"{here}.pixel", "must be [u, v] (column, row)", pixel)
        u, v = (_integer(x, f"{here}.pixel") for x in pixel)
        if not (u < frames[fi].width and v < frames[fi].height):
            raise _problem(f"{here}.pixel", f"pixel {[u, v]} outside the {frames[fi].width}x{frames[fi].height} "
                                            f"image of frame {fi}")
        targets.append(Target(id=target_id, frame=fi, pixel=(u, v)))
    return targets


def read_scene(folder: str | Path) -> Scene:
    """Read and validate a scene folder; never touches ``gt/``.

    Every malformed field raises SceneFormatError with one line naming it; every file scene.json
    names must lie inside the folder.
    """
    folder = Path(folder)
    meta_path = folder / "scene.json"
    if not meta_path.is_file():
        raise SceneFormatError(f"{folder}: no scene.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SceneFormatError(f"{meta_path}: invalid JSON ({exc})") from exc
    try:
        return _parse_scene(folder, meta)
    except SceneFormatError as exc:
        raise SceneFormatError(f"{meta_path}: {exc}") from None


def _parse_scene(folder: Path, meta) -> Scene:
    if not isinstance(meta, dict):
        raise _problem("top level", "must be a JSON object with version, world_frame and frames", meta)
    version = _required(meta, "version", "")
    if type(version) is not int or version != SCENE_FORMAT_VERSION:
        raise _problem("version", f"unsupported scene format version (must be the number {SCENE_FORMAT_VERSION})",
                       version)
    world_frame = _required(meta, "world_frame", "")
    if not isinstance(world_frame, str) or not world_frame.strip():
        raise _problem("world_frame", "must be a non-empty string", world_frame)
    frames_meta = _required(meta, "frames", "")
    if not isinstance(frames_meta, list) or not frames_meta:
        raise _problem("frames", "must be a non-empty list of frame objects", frames_meta)
    frames = [_read_frame(folder, fm, f"frames[{i}]") for i, fm in enumerate(frames_meta)]
    targets = _read_targets(meta.get("targets"), frames)
    posed = [f.T_world_camera is not None for f in frames]
    if any(posed) and not all(posed):
        raise _problem("frames[].T_world_camera", "some frames have a pose and some do not")
    return Scene(frames=frames, targets=targets, world_frame=world_frame, path=folder)


def write_scene(scene: Scene, folder: str | Path, depth_scale: float = 0.001) -> Path:
    """Write a scene folder (without ``gt/``; the synthetic generator adds that)."""
    folder = Path(folder)
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    frames_meta = []
    for i, f in enumerate(scene.frames):
        name = f"{i:03d}.png"
        cv2.imwrite(str(folder / "rgb" / name), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        fm: dict = {"rgb": f"rgb/{name}"}
        if f.depth is not None:
            (folder / "depth").mkdir(exist_ok=True)
            raw = np.clip(np.round(f.depth / depth_scale), 0, 65535).astype(np.uint16)
            cv2.imwrite(str(folder / "depth" / name), raw)
            fm.update(depth=f"depth/{name}", depth_scale=depth_scale)
        fm.update(width=f.width, height=f.height, K=f.K.tolist())
        if f.T_world_camera is not None:
            fm["T_world_camera"] = f.T_world_camera.tolist()
        fm["stamp"] = float(f.stamp)
        frames_meta.append(fm)
    meta = {"version": SCENE_FORMAT_VERSION, "world_frame": scene.world_frame, "frames": frames_meta,
            "targets": [{"id": t.id, "frame": t.frame, "pixel": [int(t.pixel[0]), int(t.pixel[1])]}
                        for t in scene.targets]}
    (folder / "scene.json").write_text(json.dumps(meta, indent=1))
    return folder


def drop_poses(scene: Scene) -> Scene:
    """The same scene as an unposed one (outputs then go in frame 0's optical frame)."""
    frames = [Frame(rgb=f.rgb, K=f.K, depth=f.depth, T_world_camera=None, stamp=f.stamp) for f in scene.frames]
    return Scene(frames=frames, targets=list(scene.targets), world_frame="camera_0_optical", path=scene.path)


def drop_depth(scene: Scene, views: Optional[Sequence[int]] = None) -> Scene:
    """The same scene without depth (RGB-only input), optionally keeping only some views."""
    idx = list(range(len(scene.frames))) if views is None else list(views)
    frames = [Frame(rgb=scene.frames[i].rgb, K=scene.frames[i].K, depth=None,
                    T_world_camera=scene.frames[i].T_world_camera, stamp=scene.frames[i].stamp) for i in idx]
    return Scene(frames=frames, targets=list(scene.targets), world_frame=scene.world_frame, path=scene.path)


def read_ground_truth(folder: str | Path) -> dict[str, Path]:
    """Map object id -> ground-truth mesh path from ``gt/objects.json`` (evaluation only)."""
    folder = Path(folder)
    objects = json.loads((folder / "gt" / "objects.json").read_text())
    return {o["id"]: folder / o["mesh"] for o in objects}
