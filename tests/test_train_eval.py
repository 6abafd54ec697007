"""Training data, the training loop (resume, torchrun with 2 gloo processes) and the benchmark."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from amodal3d_ros.complete.learned import LearnedCompleter, load_weights
from amodal3d_ros.train.dataset import ShardDataset, write_shard
from amodal3d_ros.train.loop import TrainConfig, generate_data, train

from conftest import EXAMPLE_SCENE

TINY = {
    "data": {"scenes": 4, "seed": 5, "views": [1, 2], "objects": [2, 3], "width": 160, "height": 120,
             "points_per_sample": 256, "scenes_per_shard": 2, "workers": 1},
    "model": {"width": 8, "decoder_hidden": 16, "fourier_bands": 2},
    "optim": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "threads": 1},
    "fuse": {"voxels": 16},
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    cfg = json.loads(json.dumps(TINY))
    cfg["out"] = str(folder / "run")
    cfg["data"]["folder"] = str(folder / "data")
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_data_generation_is_resumable(tiny_config):
    config = TrainConfig.from_yaml(tiny_config)
    folder = generate_data(config, progress=False)
    shards = sorted(folder.glob("shard_*.npz"))
    assert len(shards) == 2
    stamp = [s.stat().st_mtime for s in shards]
    generate_data(config, progress=False)  # nothing left to do: shards untouched
    assert [s.stat().st_mtime for s in shards] == stamp
    data = ShardDataset(folder)
    sample = data[0]
    assert sample["evidence"].shape == (6, 16, 16, 16) and sample["points"].shape == (256, 3)
    assert 0.0 < float(torch.as_tensor(data.arrays["inside"]).float().mean()) < 0.8
    # A batch taken in one index is what stacking the samples one by one gives.
    batch = data.take([2, 0, 2])
    for key, value in batch.items():
        assert torch.equal(value, torch.stack([data[i][key] for i in (2, 0, 2)]))


def test_shard_folders_of_other_sample_shapes_do_not_mix(tmp_path):
    import numpy as np

    def sample(points):
        return {"evidence": np.zeros((6, 4, 4, 4), np.float16), "voxel": np.float32(0.01),
                "points": np.zeros((points, 3), np.float16), "inside": np.zeros(points, bool)}
    write_shard(tmp_path / "a" / "shard_00000.npz", [sample(8), sample(8)])
    write_shard(tmp_path / "b" / "shard_00000.npz", [sample(16)])
    assert len(ShardDataset([tmp_path / "a"])) == 2
    with pytest.raises(ValueError, match="'points' has shape"):
        ShardDataset([tmp_path / "a", tmp_path / "b"])


def test_shards_of_another_recipe_are_refused(tiny_config):
    from amodal3d_ros.config import ConfigError

    config = TrainConfig.from_yaml(tiny_config)
    generate_data(config, progress=False)
    config.data.workers = 2  # how the shards are made does not matter...
    generate_data(config, progress=False)
    config.data.thicken = 0.5  # ...what they hold does: other labels are refused, naming the setting
    with pytest.raises(ConfigError, match="data.thicken"):
        generate_data(config, progress=False)
    config.data.thicken = 0.0
    record = Path(config.data.folder) / "dataset.json"
    made = json.loads(record.read_text())
    record.write_text(json.dumps({**made, "sources": made["sources"][:-1]}))  # as if a shape was added since
    try:
        with pytest.raises(ConfigError, match="another set of objects"):
            generate_data(config, progress=False)
    finally:
        record.write_text(json.dumps(made))


def test_thickened_labels_make_a_thin_wall_visible_to_the_grid():
    import numpy as np
    import trimesh

    from amodal3d_ros.metrics import occupancy

    wall = trimesh.creation.box(extents=(0.1, 0.1, 0.002))  # a 2 mm plate
    probes = np.array([[0.0, 0.0, 0.0025], [0.0, 0.0, -0.0025], [0.0, 0.0, 0.02]])
    assert not occupancy(wall, probes).any()  # 2.5 mm off the mid-plane: outside the true plate
    assert occupancy(wall, probes, thicken=0.002).tolist() == [True, True, False]


def test_train_checkpoint_resume_and_weights(tiny_config):
    config = TrainConfig.from_yaml(tiny_config)
    generate_data(config, progress=False)
    config.optim.steps = 2
    train(config, progress=False)
    state = torch.load(f"{config.out}/checkpoint.pt", weights_only=True)
    assert state["step"] == 2
    config.optim.steps = 4
    weights = train(config, progress=False)  # resumes at step 2
    assert torch.load(f"{config.out}/checkpoint.pt", weights_only=True)["step"] == 4
    log = [json.loads(line) for line in open(f"{config.out}/train_log.jsonl")]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    model, meta = load_weights(weights)
    assert meta["steps"] == 4 and meta["model_config"]["width"] == 8 and meta["data_split"] == "train"
    assert LearnedCompleter(weights).model is not None


def test_torchrun_two_gloo_processes(tiny_config, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000),
                           "-m", "amodal3d_ros.train.command", "--config", str(tiny_config), "--out", str(out),
                           "--steps", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "completion.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 2


@pytest.fixture(scope="module")
def one_scene_bench(tmp_path_factory):
    """A benchmark of one rendered scene of validation objects, shared by the benchmark tests."""
    from amodal3d_ros.evaluate import build_benchmark

    bench = tmp_path_factory.mktemp("bench")
    build_benchmark(bench, 1, 20261127, progress=False)
    return bench


def test_eval_writes_report(tmp_path, one_scene_bench):
    from amodal3d_ros.cli import main

    bench = one_scene_bench
    code = main(["eval", "--bench", str(bench), "--scenes", "1", "--methods", "visible,extrusion,hull,truth",
                 "--views", "1,2", "--out", str(tmp_path / "docs"), "--name", "tiny"])
    assert code == 0
    report = json.loads((tmp_path / "docs" / "tiny.json").read_text())
    methods = report["aggregate"]["by_method"]
    assert set(methods) == {"visible", "extrusion", "hull", "truth"}
    assert methods["hull"]["fscore_10mm"] > 0.3 and methods["hull"]["iou"] is not None
    # the true shape through the same evidence and meshing: the ceiling no completion passes by much
    assert methods["truth"]["iou"] > max(methods["hull"]["iou"], methods["extrusion"]["iou"])
    assert (tmp_path / "docs" / "tiny.png").stat().st_size > 1000
    assert "| hull |" in (tmp_path / "docs" / "tiny.md").read_text()
    # results per target object, named by its mesh, e.g. "025_mug"
    by_object = report["aggregate"]["by_object"]["learned" if "learned" in methods else "hull"]
    assert by_object and all(name[:3].isdigit() for name in by_object)
    assert "By target object" in (tmp_path / "docs" / "tiny.md").read_text()
    # only validation-split objects in the benchmark
    meta = json.loads(next(bench.glob("*/gt/meta.json")).read_text())
    assert all(int(o["source"][:3]) % 2 == 1 and int(o["source"][:3]) < 30 for o in meta["objects"])


def test_ground_truth_masks_are_the_rendered_instances(one_scene_bench):
    import cv2
    import numpy as np
    import open3d as o3d
    import trimesh

    from amodal3d_ros.scene import read_ground_truth, read_scene
    from amodal3d_ros.segment.truth import read_ground_truth_segmentation

    folder = next(one_scene_bench.glob("scene_*"))
    scene = read_scene(folder)
    seg = read_ground_truth_segmentation(folder, scene)
    meta = json.loads((folder / "gt" / "meta.json").read_text())
    assert len(seg.labels) == len(scene.frames) and len(seg.objects) == len(meta["objects"])
    assert [o.id for o in seg.objects if o.is_target] == [t.id for t in scene.targets]
    instance = cv2.imread(str(folder / "gt" / "instance" / "000.png"), cv2.IMREAD_UNCHANGED)
    gt_paths = read_ground_truth(folder)
    for obj, om in zip(seg.objects, meta["objects"]):
        if 0 in obj.masks:
            assert np.array_equal(obj.masks[0], instance == om["instance_value"])
        if len(obj.points):
            # every observed point lies on its own object's true surface, up to the depth noise
            mesh = trimesh.load(gt_paths[obj.id], force="mesh")
            rc = o3d.t.geometry.RaycastingScene()
            rc.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                             o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
            distance = rc.compute_distance(o3d.core.Tensor(obj.points.astype(np.float32))).numpy()
            assert np.median(distance) < 0.004, obj.id
            assert len(obj.colors) == len(obj.points)
    # the support is the table top: the objects' points stand on it
    heights = seg.plane.height(np.concatenate([o.points for o in seg.objects if len(o.points)]))
    assert np.percentile(heights, 1) > -0.005 and np.median(heights) > 0.01


def test_eval_with_ground_truth_masks(tmp_path, one_scene_bench):
    from amodal3d_ros.cli import main

    code = main(["eval", "--bench", str(one_scene_bench), "--scenes", "1", "--methods", "extrusion,truth",
                 "--views", "2", "--masks", "truth", "--out", str(tmp_path), "--name", "gtmasks"])
    assert code == 0
    report = json.loads((tmp_path / "gtmasks.json").read_text())
    assert report["meta"]["masks"] == "truth"
    assert all("error" not in row for row in report["rows"])
    assert report["aggregate"]["by_method"]["truth"]["fscore_10mm"] > 0.8
    assert "(ground-truth masks)" in (tmp_path / "gtmasks.md").read_text()
    # the RGB-only path segments silhouettes itself: asking for both is refused, naming the problem
    assert main(["eval", "--bench", str(one_scene_bench), "--scenes", "1", "--methods", "extrusion",
                 "--rgb-only", "--masks", "truth", "--out", str(tmp_path), "--name", "x"]) == 2


def test_eval_unposed_scores_in_the_world_after_estimating_poses(tmp_path, one_scene_bench):
    from amodal3d_ros.cli import main

    for name, extra in (("posed", []), ("unposed", ["--unposed"])):
        assert main(["eval", "--bench", str(one_scene_bench), "--scenes", "1", "--methods", "extrusion",
                     "--views", "2", "--out", str(tmp_path), "--name", name, *extra]) == 0
    posed, unposed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("posed", "unposed"))
    assert unposed["meta"]["unposed"] and "(unposed)" in (tmp_path / "unposed.md").read_text()
    # Outputs in frame 0's optical frame are moved into the world before scoring: with the poses
    # recovered, the scores match the posed run's.
    f_posed = posed["aggregate"]["by_method"]["extrusion"]["fscore_10mm"]
    assert unposed["aggregate"]["by_method"]["extrusion"]["fscore_10mm"] > f_posed - 0.05


def test_bench_prints_and_writes_figures(tmp_path, capsys):
    from amodal3d_ros.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", str(EXAMPLE_SCENE), "--repeats", "1", "--methods", "extrusion,hull",
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    entry = figures["scenes"]["example_scene"]
    assert entry["prepare_median_s"] > 0 and entry["hull_evidence_to_mesh_median_s"] > 0
    assert figures["ratio_hull_over_extrusion"] > 0
    assert "evidence->mesh" in capsys.readouterr().out
