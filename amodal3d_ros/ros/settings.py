"""The node's parameters: one schema for its own settings and the pipeline's (``pipeline.*``).

ROS-free so that it can be unit-tested. The node declares one ROS parameter per key of
``NodeSettings.settings()`` (description, range and read-only flag from the schema) and reads
them back through ``NodeSettings.from_params``, the loader the CLI and the YAML files use too.
``config/amodal3d.yaml`` and the README's parameter table are generated from this schema:
``python -m amodal3d_ros.ros.settings --write`` (tests/test_config_schema.py checks they are current).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from amodal3d_ros.config import ConfigError, PipelineConfig
from amodal3d_ros.ros.keyframes import KeyframeParams
from amodal3d_ros.schema import Range, Schema, markdown_rows, section, setting, yaml_text

POSE_SOURCES = ("auto", "tf", "topic", "none")
TRIGGER_MODES = ("service", "keyframes", "full")
PROMPT_MODES = ("auto", "pixel", "point")
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)


@dataclass
class NodeSettings(Schema):
    autostart: bool = setting(True, "configure and activate at start-up (a plain launch comes up active)")
    world_frame: str = setting("world", "fixed frame of the camera poses and of the outputs (posed modes)")
    pose_source: str = setting(
        "auto", "camera poses from 'tf' (needs tf2_ros), 'topic' (PoseStamped on camera_pose), 'none' (unposed: "
        "the pipeline estimates poses; outputs in the first keyframe's optical frame) or 'auto' (tf when tf2_ros "
        "is installed, else topic)", choices=POSE_SOURCES)
    pose_tolerance: float = setting(0.05, "s, largest stamp difference between an image and its camera pose",
                                    range=NON_NEGATIVE)
    use_depth: bool = setting(True, "subscribe to depth/image (16UC1 mm or 32FC1 m) and require it for every frame")
    min_valid_depth: float = setting(0.01, "least fraction of valid (finite, > 0) depth pixels for a frame to be "
                                     "used", range=Range(0, 1))
    sync_tolerance: float = setting(0.02, "s, largest stamp difference between rgb/image and its depth/image and "
                                    "camera_pose (camera_info: the camera's latest)", range=NON_NEGATIVE,
                                    key="sync.tolerance")
    # Deep enough for partners seconds late (a reliable repair) at 30 Hz: bounded memory, no frame lost.
    sync_queue_size: int = setting(150, "frames waiting for their partners before the oldest is dropped",
                                   range=AT_LEAST_ONE, key="sync.queue_size")
    image_qos_depth: int = setting(30, "history depth of the camera subscriptions",
                                   range=AT_LEAST_ONE, key="qos.image_depth")
    pose_qos_depth: int = setting(300, "history depth of the camera_pose subscription", range=AT_LEAST_ONE,
                                  key="qos.pose_depth")
    reliable_qos: bool = setting(False, "reliable camera/pose subscriptions (only reliable publishers match; "
                                 "lossless playback of recorded data) instead of best effort (matches any camera "
                                 "driver)", key="qos.reliable")
    keyframes: KeyframeParams = section(KeyframeParams, "keyframe selection (amodal3d_ros/ros/keyframes.py)")
    trigger_mode: str = setting(
        "service", "'service': reconstruct only on ~/reconstruct; 'keyframes': also every trigger.every_n new "
        "keyframes; 'full': also whenever keyframes.max new keyframes filled the set", choices=TRIGGER_MODES,
        key="trigger.mode")
    trigger_every_n: int = setting(3, "new keyframes between automatic reconstructions (trigger.mode 'keyframes')",
                                   range=AT_LEAST_ONE, key="trigger.every_n")
    prompt_mode: str = setting(
        "auto", "prompt PointStamped: 'pixel' (x=u, y=v in the latest keyframe), 'point' (3D point in "
        "header.frame_id) or 'auto' (pixel when header.frame_id is empty)", choices=PROMPT_MODES, key="prompt.mode")
    prompt_accumulate: bool = setting(False, "keep every prompt as a target (true) or only the latest (false)",
                                      key="prompt.accumulate")
    reconstruct_timeout: float = setting(600.0, "s, longest a ~/reconstruct call waits for its result",
                                         range=Range(0.001))
    diagnostics_period: float = setting(1.0, "s between /diagnostics messages", range=Range(0.001))
    publish_debug_image: bool = setting(True, "publish ~/debug/segmentation after each reconstruction")
    # Set at start-up only: a caller on the ROS graph must not move where ~/save_meshes may write.
    save_root: str = setting(
        "amodal3d_meshes", "folder ~/save_meshes writes under (relative: to the node's working directory); requests "
        "name a sub-folder of it, '' the folder itself", read_only=True)
    pipeline: PipelineConfig = section(PipelineConfig, "the core pipeline (amodal3d_ros/config.py): the keys of "
                                       "the command line's --set")

    @classmethod
    def from_params(cls, values: dict[str, Any], base: Optional[NodeSettings] = None) -> NodeSettings:
        """From ``{parameter name: value}`` (names missing: ``base``'s values, or the defaults); raises
        ConfigError naming every bad value, unknown names included."""
        return cls.from_flat_dict(values, base)

    def problems(self) -> list[tuple[str, str]]:
        empty = [name for name in ("world_frame", "save_root") if not getattr(self, name).strip()]
        return [(name, "must not be empty") for name in empty]


# ---------------------------------------------------------------------- generated files
PARAMETER_FILE = Path(__file__).resolve().parents[2] / "config" / "amodal3d.yaml"
README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_START = "<!-- parameter table: generated by `python -m amodal3d_ros.ros.settings --write` -->"
TABLE_END = "<!-- end of the parameter table -->"
PARAMETER_FILE_HEADER = """\
# Parameters of the amodal3d node (ROS 2 parameter file; loaded by launch/amodal3d.launch.yaml).
# Generated from the schema (amodal3d_ros/ros/settings.py, amodal3d_ros/config.py) by
# `python -m amodal3d_ros.ros.settings --write`; tests/test_config_schema.py checks that it is current.
# Every value here is the default; `ros2 param describe /amodal3d <name>` shows the same description.
# Bad values are rejected with a message naming them (at start-up: the node exits with code 2; at run
# time: `ros2 param set` fails and the node keeps its old value). "/**" applies to the node whatever
# its name and namespace.
/**:
  ros__parameters:
"""


def parameter_file_text() -> str:
    """config/amodal3d.yaml: every parameter with its default and description."""
    return PARAMETER_FILE_HEADER + yaml_text(NodeSettings, indent=4)


def parameter_table() -> str:
    """The README's parameter table, between its markers."""
    rows = ["| parameter | default | allowed | meaning |", "|---|---|---|---|", *markdown_rows(NodeSettings)]
    return "\n".join([TABLE_START, *rows, TABLE_END])


def readme_with_table(readme: str) -> str:
    """``readme`` with its parameter table replaced by the current one."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ConfigError(f"README has no parameter table markers ({TABLE_START} ... {TABLE_END})")
    return readme[:start] + parameter_table() + readme[end + len(TABLE_END):]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or check) config/amodal3d.yaml and the README's "
                                                 "parameter table from the node's parameter schema.")
    parser.add_argument("--write", action="store_true", help="rewrite both files (default: only check them)")
    args = parser.parse_args(argv)
    wanted = {PARAMETER_FILE: parameter_file_text(), README: readme_with_table(README.read_text())}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if args.write:
        for path in stale:
            path.write_text(wanted[path])
    for path in stale:
        print(f"{path}: {'rewritten' if args.write else 'out of date (run with --write)'}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
