"""``amodal3d train``: generate training data (if missing) and train the completion model.

Single process:   amodal3d train --config config/train.yaml
Several (DDP):    torchrun --nproc_per_node 2 -m amodal3d_ros.train.command --config config/train.yaml
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .loop import TrainConfig, generate_data, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config/train.yaml"), help="training YAML")
    parser.add_argument("--out", help="run folder (checkpoints, logs, weights); overrides the YAML")
    parser.add_argument("--steps", type=int, help="optimiser steps; overrides the YAML")
    parser.add_argument("--scenes", type=int, help="synthetic scenes to generate; overrides the YAML")
    parser.add_argument("--data", help="training data folder; overrides the YAML")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    parser.add_argument("--data-only", action="store_true", help="only generate the training data")
    parser.add_argument("--export", help="copy the final weights here (e.g. the package's shipped weights)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.from_yaml(args.config) if args.config and args.config.is_file() else TrainConfig()
    if args.out:
        config.out = args.out
    if args.steps:
        config.optim.steps = args.steps
    if args.scenes:
        config.data.scenes = args.scenes
    if args.data:
        config.data.folder = args.data
    if args.export:
        config.export = args.export
    return config


def run(args: argparse.Namespace) -> int:
    import os

    config = config_from_args(args)
    # Under torchrun only rank 0 writes data; the others wait for it at the start of training.
    if int(os.environ.get("RANK", "0")) == 0:
        generate_data(config)
    if args.data_only:
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.init_process_group(backend="gloo")
        dist.barrier()
    weights = train(config, resume=not args.no_resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"weights: {weights}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="amodal3d-train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
