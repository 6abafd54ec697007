"""``amodal3d train``: generate training data (if missing) and train the completion model.

Single process:   amodal3d train --config config/train.yaml [--set optim.steps=500 ...]
Several (DDP):    torchrun --nproc_per_node 2 -m amodal3d_ros.train.command --config config/train.yaml
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import TrainConfig
from .loop import generate_data, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config/train.yaml"), help="training YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any training key, e.g. --set optim.steps=500 (repeatable)")
    parser.add_argument("--out", help="run folder (checkpoints, logs, weights): the key out")
    parser.add_argument("--steps", type=int, help="optimiser steps: the key optim.steps")
    parser.add_argument("--scenes", type=int, help="synthetic scenes to generate: the key data.scenes")
    parser.add_argument("--data", help="training data folder: the key data.folder")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    parser.add_argument("--data-only", action="store_true", help="only generate the training data")
    parser.add_argument("--export", help="copy the final weights here (e.g. the package's shipped weights): the key "
                                         "export")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The YAML (when the file exists), then ``--set``, then the shortcut options, validated."""
    config = TrainConfig.from_yaml(args.config) if args.config and args.config.is_file() else TrainConfig()
    shortcuts = {"out": args.out, "optim.steps": args.steps, "data.scenes": args.scenes, "data.folder": args.data,
                 "export": args.export}
    return config.with_overrides(args.set, {key: value for key, value in shortcuts.items() if value is not None})


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
