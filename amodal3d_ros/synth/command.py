"""The ``amodal3d synth`` subcommand: write a synthetic dataset of scene folders, or compare the
synthetic depth sensor with real frames.

    amodal3d synth OUT --count N --seed S --views 4 --split train --objects 2 6
                   [--no-depth] [--unposed] [--width 640 --height 480] [--procedural-share P]
                   [--sensor structured_light_v1|realsense]
    amodal3d synth OUT --compare-real REAL_DIR [--count N --seed S ...]   # OUT/sensor_comparison.{json,png}
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from amodal3d_ros.synth.objects import SPLITS
from amodal3d_ros.synth.scenes import SENSORS, SceneGenerationError, SynthConfig
from amodal3d_ros.synth.write import generate_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("out", help="output folder (scene_00000, scene_00001, ...); reruns resume")
    parser.add_argument("--count", type=int, default=10, help="number of scenes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; scene i uses a seed derived from it and i")
    parser.add_argument("--views", type=int, default=None,
                        help=f"views per scene (default: random {defaults.n_views[0]}-{defaults.n_views[1]})")
    parser.add_argument("--split", choices=SPLITS, default=defaults.split,
                        help="object split: train (even YCB + procedural) or val (odd YCB < 30)")
    parser.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"), default=defaults.n_objects,
                        help="objects per scene (default: %(default)s)")
    parser.add_argument("--procedural-share", type=float, default=None, metavar="P",
                        help="chance that an object comes from the procedural shape families "
                             "(default: every source of the split equally likely)")
    parser.add_argument("--no-depth", action="store_true", help="RGB-only scenes")
    parser.add_argument("--sensor", choices=SENSORS, default=defaults.sensor,
                        help="depth sensor model: structured_light_v1 (the benchmark's and the shipped weights' "
                             "training data) or realsense (fitted to real RealSense frames; --compare-real)")
    parser.add_argument("--compare-real", type=Path, metavar="REAL_DIR",
                        help="instead of writing scenes: measure holes, noise, depth edges and quantisation on "
                             "the real scene folders in REAL_DIR and on --count synthetic scenes with each sensor "
                             "model; write OUT/sensor_comparison.json and .png")
    parser.add_argument("--unposed", action="store_true",
                        help="omit camera poses; ground truth in frame 0's optical frame")
    parser.add_argument("--width", type=int, default=defaults.width, help="image width; intrinsics scale with it")
    parser.add_argument("--height", type=int, default=defaults.height, help="image height")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    views = {} if args.views is None else {"n_views": args.views}
    return SynthConfig(split=args.split, n_objects=tuple(args.objects), depth=not args.no_depth,
                       posed=not args.unposed, width=args.width, height=args.height,
                       procedural_share=args.procedural_share, sensor=args.sensor, **views)


def run(args: argparse.Namespace) -> int:
    try:
        if args.count < 0:
            raise ValueError(f"--count must be >= 0, got {args.count}")
        config = config_from_args(args)
    except ValueError as exc:
        print(f"amodal3d synth: {exc}", file=sys.stderr)
        return 2
    if args.compare_real is not None:
        return _compare(args, config)
    start = time.perf_counter()
    try:
        folders = generate_dataset(args.out, args.count, seed=args.seed, config=config,
                                   progress=not args.no_progress)
    except (ValueError, SceneGenerationError) as exc:
        print(f"amodal3d synth: {exc}", file=sys.stderr)
        return 1
    print(f"{len(folders)} scenes in {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _compare(args: argparse.Namespace, config: SynthConfig) -> int:
    from amodal3d_ros.synth.compare import compare_with_real

    if not args.compare_real.is_dir():
        print(f"amodal3d synth: --compare-real: {args.compare_real} is not a folder", file=sys.stderr)
        return 2
    if not config.depth or not config.posed:
        print("amodal3d synth: --compare-real needs depth and posed scenes", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        compare_with_real(args.compare_real, Path(args.out), args.count, args.seed, config)
    except (ValueError, SceneGenerationError) as exc:
        print(f"amodal3d synth: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}/sensor_comparison.json and .png ({time.perf_counter() - start:.1f} s)")
    return 0
