"""Malformed scene input: every case ends the real CLI with exit code 2 and one line naming the field.

Each case is the example scene shipped in the package (4 posed RGB-D views 640x480, target obj0),
hard-linked into a temporary folder, with one thing in scene.json (or a file it names) broken.
The scene is refused while it is read, before any reconstruction, so each case takes milliseconds.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from amodal3d_ros.cli import main
from amodal3d_ros.scene import read_scene

EXAMPLE_SCENE = Path(__file__).resolve().parents[1] / "amodal3d_ros" / "ros" / "example_scene"


@pytest.fixture
def scene_copy(tmp_path):
    """A writable copy of the example scene (images hard-linked: cheap) and its scene.json as a dict."""
    folder = tmp_path / "scene"
    shutil.copytree(EXAMPLE_SCENE, folder, copy_function=os.link)
    (folder / "scene.json").unlink()  # the copy's own file, not a link to the package's
    meta = json.loads((EXAMPLE_SCENE / "scene.json").read_text())
    return folder, meta


def run_cli(capsys, folder: Path, out: Path) -> tuple[int, str]:
    code = main(["reconstruct", str(folder), "--out", str(out)])
    return code, capsys.readouterr().err


def frame0(meta):
    return meta["frames"][0]


def set_frame0(key, value):
    def change(meta, folder):
        frame0(meta)[key] = value
    return change


def drop_frame0(key):
    def change(meta, folder):
        del frame0(meta)[key]
    return change


def set_target0(key, value):
    def change(meta, folder):
        meta["targets"][0][key] = value
    return change


def set_top(key, value):
    def change(meta, folder):
        meta[key] = value
    return change


def replace_all(value):
    def change(meta, folder):
        return value
    return change


def pose(matrix_of_R, t=(0.1, 0.2, 1.0)):
    T = np.eye(4)
    T[:3, :3] = matrix_of_R
    T[:3, 3] = t
    return T.tolist()


def symlink_rgb_out_of_folder(meta, folder):
    outside = folder.parent / "outside.png"
    shutil.copy(folder / "rgb" / "001.png", outside)
    (folder / "rgb" / "001.png").unlink()
    (folder / "rgb" / "001.png").symlink_to(outside)


def small_depth(meta, folder):
    cv2.imwrite(str(folder / "depth" / "small.png"), np.full((240, 320), 800, np.uint16))
    frame0(meta)["depth"] = "depth/small.png"


def eight_bit_depth(meta, folder):
    cv2.imwrite(str(folder / "depth" / "eight.png"), np.full((480, 640), 80, np.uint8))
    frame0(meta)["depth"] = "depth/eight.png"


def text_as_rgb(meta, folder):
    (folder / "rgb" / "note.png").write_text("not an image")
    frame0(meta)["rgb"] = "rgb/note.png"


def some_frames_unposed(meta, folder):
    meta["frames"][2]["T_world_camera"] = None


def duplicate_target(meta, folder):
    meta["targets"].append(dict(meta["targets"][0], pixel=[10, 10]))


SHEAR = [[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
CASES = [
    # the file as a whole
    pytest.param(replace_all([]), "top level", id="scene-is-list"),
    pytest.param(replace_all("scene"), "top level", id="scene-is-string"),
    pytest.param(set_top("version", "1"), "version", id="version-string"),
    pytest.param(set_top("version", 2), "version", id="version-2"),
    pytest.param(set_top("version", None), "version", id="version-null"),
    pytest.param(set_top("world_frame", ""), "world_frame", id="world-frame-empty"),
    pytest.param(set_top("world_frame", None), "world_frame", id="world-frame-null"),
    pytest.param(set_top("frames", [1, 2, 3]), "frames[0]", id="frames-of-numbers"),
    pytest.param(set_top("frames", []), "frames", id="frames-empty"),
    pytest.param(set_top("frames", None), "frames", id="frames-null"),
    pytest.param(set_top("frames", "rgb/000.png"), "frames", id="frames-string"),
    # a frame's fields
    pytest.param(drop_frame0("rgb"), "frames[0].rgb", id="rgb-missing"),
    pytest.param(set_frame0("rgb", None), "frames[0].rgb", id="rgb-null"),
    pytest.param(set_frame0("rgb", "rgb/missing.png"), "frames[0].rgb", id="rgb-file-missing"),
    pytest.param(set_frame0("rgb", 7), "frames[0].rgb", id="rgb-number"),
    pytest.param(text_as_rgb, "frames[0].rgb", id="rgb-not-an-image"),
    pytest.param(set_frame0("K", [[615.0, 0.0], [0.0, 615.0]]), "frames[0].K", id="K-2x2"),
    pytest.param(set_frame0("K", "615 0 320 0 615 240 0 0 1"), "frames[0].K", id="K-string"),
    pytest.param(set_frame0("K", [["615", 0, 320], [0, 615, 240], [0, 0, 1]]), "frames[0].K", id="K-string-entry"),
    pytest.param(set_frame0("K", [[float("inf"), 0, 320], [0, 615, 240], [0, 0, 1]]), "frames[0].K", id="K-inf"),
    pytest.param(set_frame0("K", [[float("nan"), 0, 320], [0, 615, 240], [0, 0, 1]]), "frames[0].K", id="K-nan"),
    pytest.param(set_frame0("K", [[0, 0, 320], [0, 615, 240], [0, 0, 1]]), "frames[0].K", id="K-zero-focal"),
    pytest.param(set_frame0("K", [[615, 0, 320], [0, 615, 240], [0, 0, 0]]), "frames[0].K", id="K-last-row"),
    pytest.param(drop_frame0("K"), "frames[0].K", id="K-missing"),
    pytest.param(set_frame0("depth_scale", "abc"), "frames[0].depth_scale", id="depth-scale-string"),
    pytest.param(set_frame0("depth_scale", 0), "frames[0].depth_scale", id="depth-scale-zero"),
    pytest.param(set_frame0("depth_scale", -0.001), "frames[0].depth_scale", id="depth-scale-negative"),
    pytest.param(drop_frame0("depth_scale"), "frames[0].depth_scale", id="depth-scale-missing"),
    pytest.param(set_frame0("depth", ""), "frames[0].depth", id="depth-empty-name"),
    pytest.param(small_depth, "frames[0].depth", id="depth-size-mismatch"),
    pytest.param(eight_bit_depth, "frames[0].depth", id="depth-8-bit"),
    pytest.param(set_frame0("width", "640"), "frames[0].width", id="width-string"),
    pytest.param(set_frame0("width", 640.5), "frames[0].width", id="width-fraction"),
    pytest.param(set_frame0("width", 320), "frames[0].width/height", id="width-not-image-size"),
    pytest.param(set_frame0("height", 479), "frames[0].width/height", id="height-not-image-size"),
    pytest.param(drop_frame0("height"), "frames[0].height", id="height-missing"),
    pytest.param(set_frame0("stamp", "now"), "frames[0].stamp", id="stamp-string"),
    pytest.param(drop_frame0("stamp"), "frames[0].stamp", id="stamp-missing"),
    # camera poses
    pytest.param(set_frame0("T_world_camera", np.eye(3).tolist()), "frames[0].T_world_camera", id="pose-3x3"),
    pytest.param(set_frame0("T_world_camera", np.zeros((4, 4)).tolist()), "frames[0].T_world_camera",
                 id="pose-all-zeros"),
    pytest.param(set_frame0("T_world_camera", pose(SHEAR)), "frames[0].T_world_camera", id="pose-sheared"),
    pytest.param(set_frame0("T_world_camera", pose(2 * np.eye(3))), "frames[0].T_world_camera", id="pose-scaled"),
    pytest.param(set_frame0("T_world_camera", pose(np.diag([1.0, 1.0, -1.0]))), "frames[0].T_world_camera",
                 id="pose-reflection"),
    pytest.param(set_frame0("T_world_camera", np.eye(4).ravel().tolist()), "frames[0].T_world_camera",
                 id="pose-flat-16"),
    pytest.param(set_frame0("T_world_camera", "identity"), "frames[0].T_world_camera", id="pose-string"),
    pytest.param(some_frames_unposed, "T_world_camera", id="pose-some-frames-only"),
    # targets
    pytest.param(set_top("targets", "obj0"), "targets", id="targets-string"),
    pytest.param(set_top("targets", [5]), "targets[0]", id="target-number"),
    pytest.param(set_target0("pixel", None), "targets[0].pixel", id="pixel-null"),
    pytest.param(set_target0("pixel", [9999, 3]), "targets[0].pixel", id="pixel-outside"),
    pytest.param(set_target0("pixel", [-1, 3]), "targets[0].pixel", id="pixel-negative"),
    pytest.param(set_target0("pixel", [339]), "targets[0].pixel", id="pixel-one-number"),
    pytest.param(set_target0("pixel", ["339", "212"]), "targets[0].pixel", id="pixel-strings"),
    pytest.param(set_target0("frame", 4), "targets[0].frame", id="target-frame-out-of-range"),
    pytest.param(set_target0("frame", -1), "targets[0].frame", id="target-frame-negative"),
    pytest.param(set_target0("frame", "0"), "targets[0].frame", id="target-frame-string"),
    pytest.param(set_target0("id", None), "targets[0].id", id="id-null"),
    pytest.param(set_target0("id", ""), "targets[0].id", id="id-empty"),
    pytest.param(set_target0("id", 5), "targets[0].id", id="id-number"),
    pytest.param(set_target0("id", "x" * 300), "targets[0].id", id="id-300-characters"),
    pytest.param(set_target0("id", ".hidden"), "targets[0].id", id="id-leading-dot"),
    pytest.param(set_target0("id", "a b"), "targets[0].id", id="id-space"),
    pytest.param(duplicate_target, "targets[1].id", id="id-duplicate"),
]


@pytest.mark.parametrize("change, field", CASES)
def test_malformed_scene_exits_2_naming_the_field(scene_copy, capsys, change, field):
    folder, meta = scene_copy
    changed = change(meta, folder)
    (folder / "scene.json").write_text(json.dumps(meta if changed is None else changed))
    code, err = run_cli(capsys, folder, folder.parent / "out")
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert field in err, err
    assert not (folder.parent / "out").exists(), "a refused scene must not create the output folder"


@pytest.mark.parametrize("relative", ["/etc/hostname", "../outside.png", "rgb/../../outside.png"],
                         ids=["absolute", "dotdot", "dotdot-inside-path"])
@pytest.mark.parametrize("key", ["rgb", "depth"])
def test_scene_files_outside_the_folder_are_refused(scene_copy, capsys, key, relative):
    folder, meta = scene_copy
    shutil.copy(folder / key / "000.png", folder.parent / "outside.png")  # readable, but not the scene's
    frame0(meta)[key] = relative
    (folder / "scene.json").write_text(json.dumps(meta))
    code, err = run_cli(capsys, folder, folder.parent / "out")
    assert code == 2 and f"frames[0].{key}" in err and "Traceback" not in err, err


def test_symlink_out_of_the_scene_folder_is_refused(scene_copy, capsys):
    folder, meta = scene_copy
    symlink_rgb_out_of_folder(meta, folder)
    (folder / "scene.json").write_text(json.dumps(meta))
    code, err = run_cli(capsys, folder, folder.parent / "out")
    assert code == 2 and "frames[1].rgb" in err and "outside" in err, err


def test_invalid_json_exits_2(scene_copy, capsys):
    folder, _ = scene_copy
    (folder / "scene.json").write_text('{"version": 1, "frames": [')
    code, err = run_cli(capsys, folder, folder.parent / "out")
    assert code == 2 and "invalid JSON" in err and err.count("\n") == 1, err


def test_out_that_is_a_file_exits_2(scene_copy, capsys):
    folder, meta = scene_copy
    (folder / "scene.json").write_text(json.dumps(meta))
    out = folder.parent / "out.txt"
    out.write_text("keep me")
    code, err = run_cli(capsys, folder, out)
    assert code == 2 and "--out" in err and "not a folder" in err, err
    assert out.read_text() == "keep me"


def test_out_that_is_read_only_exits_2(scene_copy, capsys):
    folder, meta = scene_copy
    (folder / "scene.json").write_text(json.dumps(meta))
    out = folder.parent / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, err = run_cli(capsys, folder, out)
    finally:
        out.chmod(0o755)
    assert code == 2 and "--out" in err and "not writable" in err, err
    assert not any(out.iterdir())


def test_valid_variants_still_read(scene_copy):
    """What the format allows stays accepted: ids of the safe set, poses rounded to a few decimals,
    integral numbers written as floats, no targets, RGB-only frames."""
    folder, meta = scene_copy
    meta["targets"][0].update(id="Mug-1.a_B", frame=0.0, pixel=[339.0, 212])
    T = np.asarray(frame0(meta)["T_world_camera"])
    frame0(meta)["T_world_camera"] = T.round(4).tolist()
    (folder / "scene.json").write_text(json.dumps(meta))
    scene = read_scene(folder)
    assert scene.targets[0].id == "Mug-1.a_B" and scene.targets[0].pixel == (339, 212)
    assert np.allclose(scene.frames[0].T_world_camera, T, atol=1e-4)

    meta["targets"] = None
    for f in meta["frames"]:
        del f["depth"], f["depth_scale"]
    (folder / "scene.json").write_text(json.dumps(meta))
    scene = read_scene(folder)
    assert not scene.targets and not scene.has_depth and scene.posed
