"""Data generation and the training loop (single process or torchrun / DDP with gloo or nccl)."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..complete.learned import DEFAULT_WEIGHTS, save_weights
from ..complete.learned.model import CompletionNet
from ..config import ConfigError, FuseConfig, changed_settings
from ..fuse import CHANNELS
from .config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from .dataset import ShardDataset, iterate_scene_seeds, samples_from_scene, write_shard

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data
def _generate_shard(args) -> int:
    shard_path, seeds, data_cfg, fuse_cfg = args
    from ..synth import SynthConfig, generate_scene
    from ..synth.scenes import SceneGenerationError

    torch.set_num_threads(1)
    synth_cfg = SynthConfig(split=data_cfg.split, n_views=tuple(data_cfg.views), n_objects=tuple(data_cfg.objects),
                            width=data_cfg.width, height=data_cfg.height, procedural_share=data_cfg.procedural_share,
                            sensor=data_cfg.sensor)
    samples = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        try:
            synthetic = generate_scene(seed, synth_cfg)
        except SceneGenerationError:
            continue
        samples += samples_from_scene(synthetic, fuse_cfg, data_cfg.points_per_sample, rng,
                                      thicken=data_cfg.thicken)
    if samples:
        write_shard(Path(shard_path), samples)
    return len(samples)


# Keys that do not change what a shard holds: more scenes only add shards. ("include", extra shard
# folders to train on, is a key of older records.)
_RECIPE_FREE_KEYS = {"folder", "scenes", "workers", "include"}


def _check_same_recipe(existing: dict, wanted: dict, folder: Path) -> None:
    """Refuse to add shards made another way (e.g. other labels) to a folder of existing shards."""
    defaults = json.loads(json.dumps({"data": asdict(DataConfig()), "fuse": asdict(FuseConfig())}))
    if existing.get("sources") not in (None, wanted["sources"]):
        raise ConfigError(f"{folder} holds shards drawn from another set of objects: "
                          "choose another data.folder or delete the old shards")
    changed = [f"{section}.{k}" for section in ("data", "fuse")
               for k in changed_settings(existing.get(section, {}), wanted[section], defaults[section])
               if k not in _RECIPE_FREE_KEYS]
    if changed:
        raise ConfigError(f"{folder} holds shards made with other settings ({', '.join(changed)}): "
                          "choose another data.folder or delete the old shards")


def generate_data(config: TrainConfig, progress: bool = True) -> Path:
    """Write missing shards (resumable); returns the data folder."""
    from ..synth.objects import object_library

    cfg = config.data
    folder = Path(cfg.folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "dataset.json"
    wanted = {"data": asdict(cfg), "fuse": asdict(config.fuse),
              "sources": [source.name for source in object_library(cfg.split)]}
    if record.is_file() and any(folder.glob("shard_*.npz")):
        _check_same_recipe(json.loads(record.read_text()), json.loads(json.dumps(wanted)), folder)
    record.write_text(json.dumps(wanted, indent=1))
    jobs = []
    for start in range(0, cfg.scenes, cfg.scenes_per_shard):
        path = folder / f"shard_{start // cfg.scenes_per_shard:05d}.npz"
        if not path.exists():
            seeds = list(iterate_scene_seeds(cfg.seed, start, min(cfg.scenes, start + cfg.scenes_per_shard)))
            jobs.append((str(path), seeds, cfg, config.fuse))
    if not jobs:
        return folder
    bar = tqdm(total=len(jobs), desc="training data shards", disable=not progress)
    if cfg.workers > 1:
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            for _ in pool.imap_unordered(_generate_shard, jobs):
                bar.update()
    else:
        for job in jobs:
            _generate_shard(job)
            bar.update()
    bar.close()
    return folder


# ---------------------------------------------------------------------------- training
def augment(evidence: torch.Tensor, points: torch.Tensor, generator: torch.Generator):
    """A random symmetry of the square footprint (flips and the x/y swap), z (up) untouched."""
    if torch.rand(1, generator=generator) < 0.5:
        evidence, points = evidence.flip(2), points * torch.tensor([-1.0, 1.0, 1.0])
    if torch.rand(1, generator=generator) < 0.5:
        evidence, points = evidence.flip(3), points * torch.tensor([1.0, -1.0, 1.0])
    if torch.rand(1, generator=generator) < 0.5:
        evidence, points = evidence.transpose(2, 3), points[..., [1, 0, 2]]
    return evidence.contiguous(), points.contiguous()


def loss_fn(model, batch, hidden_weight: float):
    evidence = batch["evidence"].float()
    points = batch["points"].float()
    logits = model(evidence, batch["voxel"].float(), points)
    target = batch["inside"].float()
    # Query points in unknown space, the hidden space the model exists for, weigh more.
    g = points.flip(-1)[:, :, None, None, :]
    channel = CHANNELS.index("unknown")
    unknown = F.grid_sample(evidence[:, channel:channel + 1], g, mode="nearest", align_corners=False)[:, 0, :, 0, 0]
    weight = 1.0 + hidden_weight * unknown
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    with torch.no_grad():
        pred = logits > 0
        inter = (pred & (target > 0.5)).sum().item()
        union = (pred | (target > 0.5)).sum().item()
    return loss, inter / max(union, 1)


def learning_rate(step: int, opt: OptimConfig) -> float:
    """Linear warm-up then cosine decay to 2 % over ``opt.steps``; a function of the step alone, so a
    resumed run (even one given more steps) continues on the same curve."""
    warmup = max(1, int(0.05 * opt.steps))
    if step < warmup:
        return opt.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, opt.steps - warmup))
    return float(opt.lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * progress))))


def _start_process(opt: OptimConfig) -> tuple[bool, int, int, torch.device]:
    """Whether this process is one of several (torchrun), its rank, their number and its device."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed grid size: the fastest 3D convolution is found once
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed + rank)
    return distributed, rank, world, device


def _optimise(model, ddp, optimizer, batch: dict, step: int, opt: OptimConfig, device: torch.device):
    """One optimiser step on a batch (already on the device); returns its loss and query IoU."""
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=opt.amp and device.type == "cuda"):
        loss, iou = loss_fn(ddp, batch, opt.hidden_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, opt)
    optimizer.step()
    return loss.item(), iou


def _save_trained(model, weights: Path, meta: dict, export: str) -> None:
    """The final weights with their record, and a copy at ``export`` (e.g. the package's shipped weights)."""
    save_weights(model, weights, meta)
    if export:
        target = Path(export)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, target)
        shutil.copyfile(weights.with_suffix(".json"), target.with_suffix(".json"))


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    opt = config.optim
    distributed, rank, world, device = _start_process(opt)
    out = Path(config.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=1))

    dataset = ShardDataset(Path(config.data.folder))
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, seed=opt.seed) \
        if distributed else torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(opt.seed))
    batches = torch.utils.data.BatchSampler(sampler, opt.batch_size, drop_last=True)

    model = CompletionNet(**asdict(config.model)).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    step = 0
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if rank == 0:
            log.info("resumed from %s at step %d", checkpoint, step)

    generator = torch.Generator().manual_seed(opt.seed + 7 * rank)
    log_file = (out / "train_log.jsonl").open("a") if rank == 0 else None
    bar = tqdm(total=opt.steps, initial=step, desc="training", disable=not progress or rank != 0)
    epoch, started, window = 0, time.time(), []
    while step < opt.steps:
        if distributed:
            sampler.set_epoch(epoch)
        for indices in batches:
            if step >= opt.steps:
                break
            batch = dataset.take(indices)
            batch["evidence"], batch["points"] = augment(batch["evidence"], batch["points"], generator)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            window.append(_optimise(model, ddp, optimizer, batch, step, opt, device))
            step += 1
            bar.update()
            if rank == 0 and (step % opt.log_every == 0 or step == opt.steps):
                loss, query_iou = np.mean(window, axis=0)
                window = []
                bar.set_postfix(loss=f"{loss:.4f}", iou=f"{query_iou:.3f}")
                log_file.write(json.dumps({"step": step, "loss": float(loss), "query_iou": float(query_iou),
                                           "lr": learning_rate(step - 1, opt),
                                           "elapsed_s": round(time.time() - started, 1)}) + "\n")
                log_file.flush()
            if rank == 0 and (step % opt.checkpoint_every == 0 or step == opt.steps):
                tmp = checkpoint.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp)
                tmp.replace(checkpoint)
        epoch += 1
    bar.close()
    weights = out / "completion.safetensors"
    if rank == 0:
        meta = {"version": time.strftime("%Y.%m.%d"), "steps": step, "samples": len(dataset), "world_size": world,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "train_config": asdict(config), "data_split": config.data.split,
                "trained_seconds": round(time.time() - started, 1)}
        _save_trained(model, weights, meta, config.export)
        log_file.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return weights


__all__ = ["DEFAULT_WEIGHTS", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "generate_data", "train"]
