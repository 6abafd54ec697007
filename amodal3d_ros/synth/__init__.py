"""Deterministic synthetic table-top scenes: the data source for tests, training and the benchmark.

- :func:`generate_scene` / :class:`SynthConfig` / :class:`SyntheticScene`: one scene in memory.
- :func:`write_synthetic_scene`, :func:`generate_dataset`: scene folders with ``gt/``.
- :func:`render`, :class:`MeshRenderer`, :func:`look_at`: the CPU ray-casting renderer.
- :class:`DepthNoiseModel` (sensor ``structured_light_v1``, the default) and :class:`StereoDepthModel`
  (sensor ``realsense``, opt-in, fitted to real frames): depth sensor models, chosen by ``SynthConfig.sensor``.
- ``amodal3d synth OUT --compare-real DIR`` (``compare.py``): the same statistics on real and synthetic depth.
- :func:`object_library`: mesh sources by data split (reserved objects raise).
"""
from amodal3d_ros.synth.objects import (PROCEDURAL_SHAPES, SPLITS, YCB_TRAIN, YCB_VAL, MeshSource, ObjectSample,
                                        ProceduralSource, ReservedObjectError, YcbSource, ensure_not_reserved,
                                        is_reserved, load_ycb_mesh, object_library)
from amodal3d_ros.synth.render import (Lighting, MeshRenderer, ProceduralTexture, look_at, random_texture,
                                       render)
from amodal3d_ros.synth.scenes import SENSORS, SceneGenerationError, SynthConfig, SyntheticScene, generate_scene
from amodal3d_ros.synth.sensor import DepthNoiseModel, StereoDepthModel
from amodal3d_ros.synth.write import generate_dataset, scene_seed, write_synthetic_scene

__all__ = [
    "PROCEDURAL_SHAPES", "SPLITS", "YCB_TRAIN", "YCB_VAL", "MeshSource", "ObjectSample", "ProceduralSource",
    "ReservedObjectError", "YcbSource", "ensure_not_reserved", "is_reserved", "load_ycb_mesh", "object_library",
    "Lighting", "MeshRenderer", "ProceduralTexture", "look_at", "random_texture", "render",
    "SENSORS", "SceneGenerationError", "SynthConfig", "SyntheticScene", "generate_scene", "DepthNoiseModel",
    "StereoDepthModel",
    "generate_dataset", "scene_seed", "write_synthetic_scene",
]
