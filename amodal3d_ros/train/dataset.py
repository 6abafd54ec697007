"""Training samples for the completion model, made from synthetic scenes of train-split objects.

Each sample is one object of one scene: its evidence grid (fused from 1-4 views exactly as at run
time) and occupancy labels of query points (near the true surface and uniform in the grid),
from inside tests against the object's complete mesh. Segmentation comes from the renderer's
instance masks, so the model learns completion rather than the segmenter's mistakes.
Samples are written in shards (compressed npz) so generation can resume and run in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import trimesh

from ..config import FuseConfig
from ..fuse import EvidenceGrid, fuse_object
from ..geometry import invert, transform_points
from ..metrics import occupancy
from ..segment.truth import segmentation_from_instances


def normalised(points_grid: np.ndarray, evidence: EvidenceGrid) -> np.ndarray:
    """Grid-frame points -> [-1, 1] grid coordinates (the network's query space)."""
    return (points_grid - evidence.origin) / evidence.size * 2.0 - 1.0


def query_labels(evidence: EvidenceGrid, mesh_world: trimesh.Trimesh, count: int,
                 rng: np.random.Generator, thicken: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Half near the true surface (jittered by about a voxel), half uniform over the grid.

    ``thicken`` (in voxels): points this near the surface are labelled inside, so thin walls
    (mugs, bowls, plates) are learnt as walls instead of as empty space between grid samples.
    """
    near = count // 2
    surface = np.asarray(trimesh.sample.sample_surface(mesh_world, near, seed=int(rng.integers(1 << 30)))[0])
    surface_grid = transform_points(invert(evidence.T_world_grid), surface)
    surface_grid += rng.normal(scale=evidence.voxel * 0.75, size=surface_grid.shape)
    uniform = evidence.origin + rng.uniform(0, evidence.size, size=(count - near, 3))
    pts_grid = np.concatenate([surface_grid, uniform])
    inside = occupancy(mesh_world, transform_points(evidence.T_world_grid, pts_grid), thicken * evidence.voxel)
    return normalised(pts_grid, evidence).astype(np.float32), inside


def samples_from_scene(synthetic, fuse_config: FuseConfig, points_per_sample: int, rng: np.random.Generator,
                       min_points: int = 40, thicken: float = 0.0) -> list[dict]:
    frames = synthetic.scene.frames
    poses = [f.T_world_camera for f in frames]
    seg = segmentation_from_instances(frames, poses, synthetic.instance, synthetic.meta["objects"],
                                      synthetic.meta["table"]["top_z"])
    out = []
    for obj in seg.objects:
        if len(obj.points) < min_points:
            continue  # hidden or almost: no evidence to place a grid on
        # The model sees the evidence grid only; the finer constraint grid is for meshing.
        evidence = fuse_object(frames, poses, seg, obj, replace(fuse_config, constraint_factor=1))
        pts, inside = query_labels(evidence, synthetic.gt_meshes[obj.id], points_per_sample, rng, thicken)
        out.append({"evidence": evidence.channels().astype(np.float16), "voxel": np.float32(evidence.voxel),
                    "points": pts.astype(np.float16), "inside": inside, "views": np.int8(len(frames))})
    return out


def write_shard(path: Path, samples: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **{key: np.stack([s[key] for s in samples]) for key in samples[0]})
    tmp.rename(path)  # a shard is either complete or absent: generation can resume


@dataclass
class ShardDataset(torch.utils.data.Dataset):
    """All shards of one or more folders in memory (about 0.4 MB a sample: 4 GB for 10000)."""

    folders: Path | Sequence[Path]

    def __post_init__(self):
        folders = [self.folders] if isinstance(self.folders, (str, Path)) else list(self.folders)
        shards = []
        for folder in folders:
            found = sorted(s for s in Path(folder).glob("shard_*.npz") if not s.name.endswith(".tmp.npz"))
            if not found:
                raise FileNotFoundError(f"no training shards (shard_*.npz) in {folder}")
            shards += found
        # Sized first, then filled shard by shard: memory peaks at the dataset plus one shard, not twice.
        counts = []
        for shard in shards:
            with np.load(shard) as part:
                counts.append(len(part["voxel"]))
        self.arrays, start = {}, 0
        for shard, count in zip(shards, counts):
            with np.load(shard) as part:
                for key in part.files:
                    value = part[key]
                    if key not in self.arrays:
                        self.arrays[key] = np.empty((sum(counts),) + value.shape[1:], value.dtype)
                    elif value.shape[1:] != self.arrays[key].shape[1:]:
                        raise ValueError(f"{shard}: '{key}' has shape {value.shape[1:]} per sample, the shards "
                                         f"before it {self.arrays[key].shape[1:]} (made with other data settings)")
                    self.arrays[key][start:start + count] = value
            start += count

    def __len__(self) -> int:
        return len(self.arrays["voxel"])

    def __getitem__(self, i: int) -> dict:
        return {k: torch.from_numpy(np.asarray(v[i])) for k, v in self.arrays.items()}

    def take(self, indices: Sequence[int]) -> dict:
        """A whole batch by one fancy index per array: what per-item collation would stack, without
        the per-sample Python work that starves a GPU."""
        return {k: torch.from_numpy(np.ascontiguousarray(v[np.asarray(indices)])) for k, v in self.arrays.items()}


def iterate_scene_seeds(base_seed: int, start: int, stop: int) -> Iterator[int]:
    for index in range(start, stop):
        yield int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])
