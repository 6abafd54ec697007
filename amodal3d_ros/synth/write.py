"""Writing synthetic scenes (scene folder + ``gt/``) and whole datasets of them."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

from amodal3d_ros.config import changed_settings
from amodal3d_ros.scene import write_scene
from amodal3d_ros.synth.scenes import (GENERATOR_NAME, GENERATOR_VERSION, SceneGenerationError, SynthConfig,
                                       SyntheticScene, generate_scene)

DEPTH_SCALE = 0.001  # 16-bit PNG depth in millimetres
SCENE_SEED_RETRIES = 3  # fresh seeds tried for a scene index whose layout search fails
CAMERAS_NOTE = "true camera poses in the gt frame (the frame of gt/*.ply); K as in scene.json"


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1))


def write_synthetic_scene(synthetic: SyntheticScene, folder: str | Path) -> Path:
    """Write the scene folder and its full ``gt/`` set (objects.json, <id>.ply, table.ply,
    cameras.json, visibility.json, instance/NNN.png, meta.json)."""
    folder = Path(folder)
    write_scene(synthetic.scene, folder, depth_scale=DEPTH_SCALE)
    gt = folder / "gt"
    (gt / "instance").mkdir(parents=True, exist_ok=True)
    _write_json(gt / "objects.json", [{"id": i, "mesh": f"gt/{i}.ply"} for i in sorted(synthetic.gt_meshes)])
    for object_id, mesh in synthetic.gt_meshes.items():
        mesh.export(gt / f"{object_id}.ply", encoding="binary", vertex_normal=False)
    synthetic.table_mesh.export(gt / "table.ply", encoding="binary", vertex_normal=False)
    _write_json(gt / "cameras.json", {"frame": synthetic.gt_frame, "note": CAMERAS_NOTE,
                                      "T_world_camera": [np.round(T, 9).tolist() for T in synthetic.gt_cameras]})
    _write_json(gt / "visibility.json", synthetic.visibility)
    for i, instance in enumerate(synthetic.instance):
        assert instance.max() < 256, "instance values must fit an 8-bit PNG"
        cv2.imwrite(str(gt / "instance" / f"{i:03d}.png"), instance.astype(np.uint8))
    _write_json(gt / "meta.json", synthetic.meta)
    return folder


def scene_seed(base_seed: int, index: int, retry: int = 0) -> int:
    """The seed of scene ``index`` in a dataset: independent streams per (base seed, index)."""
    key = (index,) if retry == 0 else (index, retry)
    return int(np.random.SeedSequence(base_seed, spawn_key=key).generate_state(1)[0])


def _dataset_record(seed: int, config: SynthConfig) -> dict:
    settings = dataclasses.asdict(config)
    # Only the sensor model in use: retuning the other one must not orphan this dataset.
    settings.pop("noise" if config.sensor == "realsense" else "realsense")
    return json.loads(json.dumps({"generator": GENERATOR_NAME, "gen_version": GENERATOR_VERSION, "seed": seed,
                                  "config": settings}))


def generate_dataset(out_dir: str | Path, count: int, seed: int = 0, config: Optional[SynthConfig] = None,
                     progress: bool = True) -> list[Path]:
    """Write scenes ``scene_00000`` ... ``scene_{count-1}`` under ``out_dir``.

    Deterministic per scene (its seed comes from ``seed`` and its index) and resumable: finished
    scenes are skipped; each scene is written to a temporary folder and renamed when complete,
    so an interrupted run never leaves a half-written scene that looks finished. ``dataset.json``
    records seed and config; resuming with different ones raises ``ValueError``.
    """
    config = config if config is not None else SynthConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = _dataset_record(seed, config)
    record_path = out_dir / "dataset.json"
    if record_path.is_file():
        existing = json.loads(record_path.read_text())
        differences = [k for k in record if k != "config" and existing.get(k) != record[k]] + [
            f"config.{k}" for k in changed_settings(existing.get("config", {}), record["config"],
                                                    _dataset_record(seed, SynthConfig())["config"])]
        if differences:
            raise ValueError(f"{out_dir} holds a dataset made with another seed or config "
                             f"({', '.join(differences)}); use a new folder")
    _write_json(record_path, record)

    folders = []
    for index in tqdm(range(count), desc="synth", unit="scene", disable=not progress):
        folder = out_dir / f"scene_{index:05d}"
        folders.append(folder)
        if (folder / "scene.json").is_file():
            continue
        partial = out_dir / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_synthetic_scene(_generate_with_retries(seed, index, config), partial)
        partial.rename(folder)
    return folders


def _generate_with_retries(base_seed: int, index: int, config: SynthConfig) -> SyntheticScene:
    error: Optional[SceneGenerationError] = None
    for retry in range(SCENE_SEED_RETRIES):
        try:
            return generate_scene(scene_seed(base_seed, index, retry), config)
        except SceneGenerationError as exc:  # rare: redraw the whole scene from a derived seed
            error = exc
    raise SceneGenerationError(f"scene {index}: {error}")
