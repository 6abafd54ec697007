"""The training recipe's settings (``amodal3d train --config config/train.yaml --set optim.steps=...``).

Declared with the same schema as the pipeline (:mod:`amodal3d_ros.schema`) and read by the same
loader; ``fuse`` is the pipeline's own ``FuseConfig``, so training and inference grids agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import FuseConfig
from ..schema import Range, Schema, section, setting
from ..synth.objects import SPLITS
from ..synth.scenes import SENSORS

AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)


@dataclass
class DataConfig(Schema):
    folder: str = setting("build/train_data", "training data folder (shards and their dataset.json)")
    scenes: int = setting(600, "synthetic scenes to generate (more only add shards)", range=AT_LEAST_ONE)
    seed: int = setting(1000, "seed of the first scene", range=NON_NEGATIVE)
    split: str = setting("train", "objects the scenes are made of (shared/spec/data-split.md)", choices=SPLITS)
    views: tuple[int, int] = setting((1, 4), "views per scene, uniform in [first, second]", range=AT_LEAST_ONE)
    objects: tuple[int, int] = setting((2, 6), "objects per scene, uniform in [first, second]", range=AT_LEAST_ONE)
    width: int = setting(320, "px, rendered image width", range=Range(16))
    height: int = setting(240, "px, rendered image height", range=Range(16))
    points_per_sample: int = setting(2048, "labelled query points per object", range=AT_LEAST_ONE)
    thicken: float = setting(0.0, "voxels: query points this near the true surface are labelled inside",
                             range=NON_NEGATIVE)
    procedural_share: Optional[float] = setting(
        None, "chance that an object is one of the procedural shapes (synth.SynthConfig); null: every source of "
        "the split equally likely", range=Range(0, 1))
    sensor: str = setting("structured_light_v1", "synthetic depth model (synth/sensor.py)", choices=SENSORS)
    scenes_per_shard: int = setting(25, "scenes written to one shard file", range=AT_LEAST_ONE)
    workers: int = setting(2, "processes generating shards (0 or 1: this process)", range=NON_NEGATIVE)

    def problems(self) -> list[tuple[str, str]]:
        return [(name, f"must be [least, most], got {list(getattr(self, name))}")
                for name in ("views", "objects") if getattr(self, name)[0] > getattr(self, name)[1]]


@dataclass
class ModelConfig(Schema):
    width: int = setting(16, "channels of the 3D U-Net's first level", range=AT_LEAST_ONE)
    decoder_hidden: int = setting(64, "hidden units of the implicit decoder", range=AT_LEAST_ONE)
    fourier_bands: int = setting(4, "Fourier feature bands of the query point coordinates", range=NON_NEGATIVE)


@dataclass
class OptimConfig(Schema):
    steps: int = setting(3000, "optimiser steps", range=AT_LEAST_ONE)
    batch_size: int = setting(8, "samples per step (per process)", range=AT_LEAST_ONE)
    lr: float = setting(2e-3, "peak learning rate (linear warm-up, cosine decay)", range=Range(0, low_open=True))
    weight_decay: float = setting(1e-4, "AdamW weight decay", range=NON_NEGATIVE)
    hidden_weight: float = setting(2.0, "extra loss weight of query points in unknown space", range=NON_NEGATIVE)
    checkpoint_every: int = setting(200, "steps between checkpoints", range=AT_LEAST_ONE)
    log_every: int = setting(20, "steps between log lines", range=AT_LEAST_ONE)
    seed: int = setting(0, "seed of the weights and of the batch order", range=NON_NEGATIVE)
    threads: int = setting(0, "torch threads per process (0: torch's default)", range=NON_NEGATIVE)
    amp: bool = setting(True, "bfloat16 autocast on CUDA (ignored on CPU, where training stays float32)")


@dataclass
class TrainConfig(Schema):
    out: str = setting("build/train_run", "run folder: checkpoints, logs, weights")
    data: DataConfig = section(DataConfig, "training data: synthetic scenes of the split's objects")
    model: ModelConfig = section(ModelConfig, "the completion network")
    optim: OptimConfig = section(OptimConfig, "the optimiser")
    fuse: FuseConfig = section(FuseConfig, "the evidence grid, as the pipeline's fuse.*")
    export: str = setting("", "copy the final weights here (e.g. the package's shipped weights); '': not copied")
