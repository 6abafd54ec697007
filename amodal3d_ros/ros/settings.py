"""The node's own parameters (besides ``pipeline.*``): names, defaults, documentation, validation.

ROS-free so that it can be unit-tested; the node declares one ROS parameter per entry of
``NODE_PARAMETERS`` and one per key of ``PipelineConfig().to_flat_dict()`` (prefix ``pipeline.``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from amodal3d_ros.config import ConfigError, PipelineConfig
from amodal3d_ros.ros.keyframes import KeyframeParams

POSE_SOURCES = ("auto", "tf", "topic", "none")
TRIGGER_MODES = ("service", "keyframes", "full")
PROMPT_MODES = ("auto", "pixel", "point")

# name -> (default, description). The default's type is the parameter's type.
NODE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "autostart": (True, "configure and activate at start-up (a plain launch comes up active)"),
    "world_frame": ("world", "fixed frame of the camera poses and of the outputs (posed modes)"),
    "pose_source": ("auto", "camera poses from 'tf' (needs tf2_ros), 'topic' (PoseStamped on camera_pose), "
                    "'none' (unposed: the pipeline estimates poses; outputs in the first keyframe's optical "
                    "frame) or 'auto' (tf when tf2_ros is installed, else topic)"),
    "pose_tolerance": (0.05, "s, largest stamp difference between an image and its camera pose"),
    "use_depth": (True, "subscribe to depth/image (16UC1 mm or 32FC1 m) and require it for every frame"),
    "sync.tolerance": (0.02, "s, largest stamp difference between rgb/image, rgb/camera_info and depth/image"),
    "sync.queue_size": (10, "frames waiting for their partners before the oldest is dropped"),
    "qos.image_depth": (5, "history depth of the camera subscriptions (best effort)"),
    "qos.pose_depth": (50, "history depth of the camera_pose subscription"),
    "qos.reliable": (False, "reliable camera/pose subscriptions (only reliable publishers match; lossless "
                     "playback of recorded data) instead of best effort (matches any camera driver)"),
    "keyframes.max": (8, "largest number of keyframes kept (oldest evicted when full)"),
    "keyframes.min_translation": (0.05, "m, camera motion from every keyframe that makes a new keyframe"),
    "keyframes.min_rotation": (10.0, "deg, camera rotation from every keyframe that makes a new keyframe"),
    "keyframes.min_new_area": (0.15, "fraction of depth pixels unseen by all keyframes that makes a new keyframe"),
    "keyframes.min_image_change": (0.03, "unposed mode: mean grey-level change (0..1) that makes a new keyframe"),
    "keyframes.min_interval": (0.0, "s, least time between two keyframes"),
    "trigger.mode": ("service", "'service': reconstruct only on ~/reconstruct; 'keyframes': also every "
                     "trigger.every_n new keyframes; 'full': also whenever keyframes.max new keyframes filled the set"),
    "trigger.every_n": (3, "new keyframes between automatic reconstructions (trigger.mode 'keyframes')"),
    "prompt.mode": ("auto", "prompt PointStamped: 'pixel' (x=u, y=v in the latest keyframe), 'point' (3D point in "
                    "header.frame_id) or 'auto' (pixel when header.frame_id is empty)"),
    "prompt.accumulate": (False, "keep every prompt as a target (true) or only the latest (false)"),
    "reconstruct_timeout": (600.0, "s, longest a ~/reconstruct call waits for its result"),
    "diagnostics_period": (1.0, "s between /diagnostics messages"),
    "publish_debug_image": (True, "publish ~/debug/segmentation after each reconstruction"),
    "min_valid_depth": (0.01, "least fraction of valid (finite, > 0) depth pixels for a frame to be used"),
    "save_root": ("amodal3d_meshes", "folder ~/save_meshes writes under (relative: to the node's working "
                  "directory); requests name a sub-folder of it, '' the folder itself; read-only at run time"),
}
# Set at start-up only: a caller on the ROS graph must not move where ~/save_meshes may write.
READ_ONLY_PARAMETERS = frozenset({"save_root"})


@dataclass
class NodeSettings:
    autostart: bool = True
    world_frame: str = "world"
    pose_source: str = "auto"
    pose_tolerance: float = 0.05
    use_depth: bool = True
    sync_tolerance: float = 0.02
    sync_queue_size: int = 10
    image_qos_depth: int = 5
    pose_qos_depth: int = 50
    reliable_qos: bool = False
    keyframes: KeyframeParams = None
    trigger_mode: str = "service"
    trigger_every_n: int = 3
    prompt_mode: str = "auto"
    prompt_accumulate: bool = False
    reconstruct_timeout: float = 600.0
    diagnostics_period: float = 1.0
    publish_debug_image: bool = True
    min_valid_depth: float = 0.01
    save_root: str = "amodal3d_meshes"

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> "NodeSettings":
        """From a {name: value} dict of node parameters (missing names take defaults); validates."""
        def get(name):
            return p.get(name, NODE_PARAMETERS[name][0])

        def num(name, kind=float):
            v = get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"parameter '{name}' must be a number, got {v!r}")
            if kind is int and float(v) != int(v):
                raise ConfigError(f"parameter '{name}' must be an integer, got {v!r}")
            return kind(v)

        s = cls(
            autostart=bool(get("autostart")), world_frame=str(get("world_frame")),
            pose_source=str(get("pose_source")), pose_tolerance=num("pose_tolerance"),
            use_depth=bool(get("use_depth")), sync_tolerance=num("sync.tolerance"),
            sync_queue_size=num("sync.queue_size", int), image_qos_depth=num("qos.image_depth", int),
            pose_qos_depth=num("qos.pose_depth", int), reliable_qos=bool(get("qos.reliable")),
            keyframes=KeyframeParams(
                max_keyframes=num("keyframes.max", int), min_translation=num("keyframes.min_translation"),
                min_rotation=num("keyframes.min_rotation"), min_new_area=num("keyframes.min_new_area"),
                min_image_change=num("keyframes.min_image_change"), min_interval=num("keyframes.min_interval")),
            trigger_mode=str(get("trigger.mode")), trigger_every_n=num("trigger.every_n", int),
            prompt_mode=str(get("prompt.mode")), prompt_accumulate=bool(get("prompt.accumulate")),
            reconstruct_timeout=num("reconstruct_timeout"), diagnostics_period=num("diagnostics_period"),
            publish_debug_image=bool(get("publish_debug_image")), min_valid_depth=num("min_valid_depth"),
            save_root=str(get("save_root")))
        s.validate()
        return s

    def validate(self) -> None:
        errors = list(self.keyframes.validate()) if self.keyframes else []

        def check(ok, msg):
            if not ok:
                errors.append(msg)

        check(bool(self.world_frame.strip()), "world_frame must not be empty")
        check(bool(self.save_root.strip()), "save_root must not be empty")
        check(self.pose_source in POSE_SOURCES,
              f"pose_source must be one of {', '.join(POSE_SOURCES)}, got '{self.pose_source}'")
        check(self.trigger_mode in TRIGGER_MODES,
              f"trigger.mode must be one of {', '.join(TRIGGER_MODES)}, got '{self.trigger_mode}'")
        check(self.prompt_mode in PROMPT_MODES,
              f"prompt.mode must be one of {', '.join(PROMPT_MODES)}, got '{self.prompt_mode}'")
        for name, v, lo in (("pose_tolerance", self.pose_tolerance, 0.0), ("sync.tolerance", self.sync_tolerance, 0.0),
                            ("reconstruct_timeout", self.reconstruct_timeout, 1e-3),
                            ("diagnostics_period", self.diagnostics_period, 1e-3)):
            check(math.isfinite(v) and v >= lo, f"{name} must be a finite number >= {lo}, got {v}")
        for name, v in (("sync.queue_size", self.sync_queue_size), ("qos.image_depth", self.image_qos_depth),
                        ("qos.pose_depth", self.pose_qos_depth), ("trigger.every_n", self.trigger_every_n)):
            check(v >= 1, f"{name} must be >= 1, got {v}")
        check(0.0 <= self.min_valid_depth <= 1.0, f"min_valid_depth must be in [0, 1], got {self.min_valid_depth}")
        if errors:
            raise ConfigError("invalid node parameters: " + "; ".join(errors))


def all_parameter_defaults() -> dict[str, Any]:
    """Every parameter the node declares, with its default: node params + ``pipeline.*``."""
    out = {name: default for name, (default, _) in NODE_PARAMETERS.items()}
    out.update({f"pipeline.{k}": v for k, v in PipelineConfig().to_flat_dict().items()})
    return out


def split_parameters(values: dict[str, Any]) -> tuple[NodeSettings, PipelineConfig]:
    """Validate a full {name: value} parameter dict; raises ConfigError naming every bad value."""
    node_values = {k: v for k, v in values.items() if not k.startswith("pipeline.")}
    pipe_values = {k[len("pipeline."):]: v for k, v in values.items() if k.startswith("pipeline.")}
    errors = []
    settings = config = None
    try:
        settings = NodeSettings.from_params(node_values)
    except ConfigError as exc:
        errors.append(str(exc))
    try:
        config = PipelineConfig.from_flat_dict(pipe_values)
    except ConfigError as exc:
        errors.append(str(exc))
    if errors:
        raise ConfigError("; ".join(errors))
    return settings, config


def apply_changes(values: dict[str, Any], changes: dict[str, Any]) -> tuple[NodeSettings, PipelineConfig]:
    """``values`` (every parameter) with ``changes`` applied, validated; raises ConfigError naming the problem."""
    defaults = all_parameter_defaults()
    for name, value in changes.items():
        if name not in defaults:
            raise ConfigError(f"unknown parameter '{name}'")
        if isinstance(defaults[name], float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"parameter '{name}' must be a number, got {value!r}")
    return split_parameters({**values, **changes})
