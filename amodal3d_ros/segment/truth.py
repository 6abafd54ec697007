"""Ground-truth segmentation of synthetic scenes, from the renderer's instance images.

Training uses it so that the model learns completion rather than the segmenter's mistakes; the
benchmark uses it (``amodal3d eval --masks truth``) to tell segmentation errors from completion
errors. Scene folders keep the instance images in ``gt/instance/NNN.png`` (one 8-bit value per
object, ``gt/meta.json`` says which) and the table height in ``gt/meta.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..geometry import Plane, backproject_to_world
from ..scene import Frame, Scene
from .base import SUPPORT_LABEL, SceneSegmentation, SegmentedObject


def segmentation_from_instances(frames: Sequence[Frame], poses: Sequence[np.ndarray], instances: Sequence[np.ndarray],
                                objects: Sequence[dict], support_height: float, target_ids: Sequence[str] = (),
                                min_pixels: int = 30) -> SceneSegmentation:
    """The segmentation that instance images give, in the pipeline's own types.

    ``objects``: ``{"id", "instance_value"}`` per object; ``support_height``: the table top's world z
    (the synthetic world is z up). An object with fewer than ``min_pixels`` pixels in a view is not
    seen there, as a segmenter would miss it.
    """
    from ..synth.scenes import INSTANCE_TABLE  # the renderer's value for the table (importing synth is heavy)

    plane = Plane(normal=np.array([0.0, 0.0, 1.0]), offset=-float(support_height))
    segmented = [SegmentedObject(id=o["id"], masks={}, points=np.zeros((0, 3)), colors=np.zeros((0, 3), np.uint8),
                                 is_target=o["id"] in target_ids) for o in objects]
    points = [[] for _ in objects]
    colors = [[] for _ in objects]
    labels = []
    for i, (frame, T, instance) in enumerate(zip(frames, poses, instances)):
        label = np.zeros(instance.shape, np.int32)
        label[instance == INSTANCE_TABLE] = SUPPORT_LABEL
        world = None
        if frame.depth is not None:
            world = backproject_to_world(frame.depth, frame.K, T)
        for k, meta in enumerate(objects):
            mask = instance == meta["instance_value"]
            if mask.sum() < min_pixels:
                continue
            label[mask] = k + 1
            segmented[k].masks[i] = mask
            if world is not None:
                measured = mask & (frame.depth > 0)
                points[k].append(world[measured])
                colors[k].append(frame.rgb[measured][:, :3])
        labels.append(label)
    for k, obj in enumerate(segmented):
        if points[k]:
            obj.points = np.concatenate(points[k])
            obj.colors = np.concatenate(colors[k]).astype(np.uint8)
    return SceneSegmentation(plane=plane, labels=labels, objects=segmented)


def read_ground_truth_segmentation(folder: Path, scene: Scene) -> SceneSegmentation:
    """The ground-truth segmentation of a rendered scene folder, for the frames and targets of ``scene``."""
    gt = Path(folder) / "gt"
    meta_path = gt / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} is missing: ground-truth masks need a scene rendered by amodal3d synth")
    meta = json.loads(meta_path.read_text())
    instances = []
    for i in range(len(scene.frames)):
        path = gt / "instance" / f"{i:03d}.png"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise FileNotFoundError(f"{path} is missing or unreadable")
        instances.append(image)
    poses = [f.T_world_camera for f in scene.frames]
    if any(T is None for T in poses):
        raise ValueError(f"{folder}: ground-truth masks need posed frames")
    return segmentation_from_instances(scene.frames, poses, instances, meta["objects"], meta["table"]["top_z"],
                                       target_ids=[t.id for t in scene.targets])
