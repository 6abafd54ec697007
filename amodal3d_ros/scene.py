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


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise SceneFormatError(f"{where}: missing required field '{key}'")
    return d[key]


def _read_image(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise SceneFormatError(f"image file not found: {path}")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise SceneFormatError(f"cannot decode image: {path}")
    return img


def read_scene(folder: str | Path) -> Scene:
    """Read a scene folder; never touches ``gt/``."""
    folder = Path(folder)
    meta_path = folder / "scene.json"
    if not meta_path.is_file():
        raise SceneFormatError(f"{folder}: no scene.json")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise SceneFormatError(f"{meta_path}: invalid JSON ({exc})") from exc
    version = meta.get("version", SCENE_FORMAT_VERSION)
    if version != SCENE_FORMAT_VERSION:
        raise SceneFormatError(f"{meta_path}: unsupported scene format version {version}")
    frames_meta = _require(meta, "frames", str(meta_path))
    if not frames_meta:
        raise SceneFormatError(f"{meta_path}: 'frames' is empty")
    frames = []
    for i, fm in enumerate(frames_meta):
        where = f"{meta_path} frame {i}"
        bgr = _read_image(folder / _require(fm, "rgb", where), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        depth = None
        if fm.get("depth"):
            raw = _read_image(folder / fm["depth"], cv2.IMREAD_UNCHANGED)
            if raw.ndim != 2:
                raise SceneFormatError(f"{where}: depth must be single channel, got shape {raw.shape}")
            depth = raw.astype(np.float32) * float(_require(fm, "depth_scale", where))
        w, h = fm.get("width"), fm.get("height")
        if (w is not None and w != rgb.shape[1]) or (h is not None and h != rgb.shape[0]):
            raise SceneFormatError(f"{where}: width/height {w}x{h} do not match image {rgb.shape[1]}x{rgb.shape[0]}")
        T = fm.get("T_world_camera")
        frames.append(Frame(rgb=rgb, depth=depth, K=np.array(_require(fm, "K", where), dtype=np.float64),
                            T_world_camera=None if T is None else np.array(T, dtype=np.float64),
                            stamp=float(fm.get("stamp", i))))
    targets = []
    for j, tm in enumerate(meta.get("targets") or []):
        where = f"{meta_path} target {j}"
        fi = int(_require(tm, "frame", where))
        if not 0 <= fi < len(frames):
            raise SceneFormatError(f"{where}: frame {fi} out of range (scene has {len(frames)} frames)")
        u, v = (int(x) for x in _require(tm, "pixel", where))
        if not (0 <= u < frames[fi].width and 0 <= v < frames[fi].height):
            raise SceneFormatError(f"{where}: pixel {[u, v]} outside the {frames[fi].width}x{frames[fi].height} image")
        targets.append(Target(id=str(_require(tm, "id", where)), frame=fi, pixel=(u, v)))
    posed = [f.T_world_camera is not None for f in frames]
    if any(posed) and not all(posed):
        raise SceneFormatError(f"{meta_path}: some frames have T_world_camera and some do not")
    default_world = "world" if all(posed) else "camera_0_optical"
    return Scene(frames=frames, targets=targets, world_frame=str(meta.get("world_frame", default_world)),
                 path=folder)


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
