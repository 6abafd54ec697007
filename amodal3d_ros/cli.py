"""The ``amodal3d`` command: reconstruct | synth | eval | calibrate | train | bench | demo.

Every subcommand lives with its stage; this module only builds the parser and dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from .config import ConfigError, PipelineConfig

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
SUBCOMMANDS = {
    "reconstruct": ("amodal3d_ros.cli", "complete the objects of a scene folder (scene format v1)"),
    "synth": ("amodal3d_ros.synth.command", "render synthetic table-top scenes with ground truth"),
    "eval": ("amodal3d_ros.evaluate", "score completions on a benchmark of held-out objects"),
    "calibrate": ("amodal3d_ros.confidence_fit", "fit the per-point confidence on validation scenes, or check it"),
    "train": ("amodal3d_ros.train.command", "train the learned completion model"),
    "bench": ("amodal3d_ros.bench", "time the pipeline stages and print medians"),
    "demo": ("amodal3d_ros.ros.tools.demo", "run the ROS 2 demo graph on the embedded example scene"),
}


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that runs the pipeline."""
    parser.add_argument("--config", type=Path, help="pipeline YAML (plain or a ROS 2 parameter file)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where models run (default: auto)")
    parser.add_argument("--method", help="completion method: learned, extrusion, hull or visible")
    parser.add_argument("--segmenter", choices=["depth", "sam"], help="segmentation backend")
    parser.add_argument("--sam-checkpoint", help="segment-anything checkpoint (.pth) for --segmenter sam")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any configuration key, e.g. --set fuse.voxels=48 (repeatable)")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The YAML (``--config``), then ``--set``, then the shortcut options, validated."""
    base = PipelineConfig.from_yaml(args.config) if args.config else PipelineConfig()
    shortcuts = {"device": args.device, "complete.method": args.method, "segment.method": args.segmenter,
                 "segment.sam_checkpoint": args.sam_checkpoint}
    return base.with_overrides(args.set, {key: value for key, value in shortcuts.items() if value})


# ---------------------------------------------------------------------- reconstruct
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="scene folder (scene.json, rgb/, depth/)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (result.json, objects/)")
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .pipeline import Reconstructor
    from .safe_io import writable_folder
    from .scene import read_scene

    config = pipeline_config(args)
    scene = read_scene(args.scene)
    writable_folder(args.out, "--out")  # refuse a file or a read-only folder before the work, not after
    reconstructor = Reconstructor(config)
    result = reconstructor.reconstruct_scene(scene)
    result.write(args.out)
    for w in result.warnings:
        logging.warning(w)
    summary = [{"id": o.id, "vertices": len(o.vertices), "visible_fraction": round(o.visible_fraction, 3),
                "views_used": o.views_used, "occluders": o.occluders, "seconds": round(o.seconds, 3)}
               for o in result.objects]
    print(json.dumps({"out": str(args.out), "frame": result.frame_id, "poses_estimated": result.poses_estimated,
                      "device": reconstructor.device, "method": config.complete.method,
                      "seconds_total": round(result.seconds_total, 3), "objects": summary}, indent=1))
    found = {o.id for o in result.objects}
    # Partial results are written; the exit code says that a requested target is missing.
    return 0 if all(t.id in found for t in scene.targets) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amodal3d", description="Amodal 3D reconstruction of partly hidden objects.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except (ConfigError, ValueError, OSError, RuntimeError) as exc:
        # Bad input, an impossible request or an unwritable output: one clear line, no traceback.
        print(f"amodal3d {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
