"""Outputs stay where they belong and are never half written.

- Object ids become file names: unsafe ones are refused by the scene reader (CLI exit 2) and by
  every writer; nothing is written outside the output folder.
- A symlink where an output file goes is replaced, never followed.
- A re-run into a folder holding a complete result, killed at any step, leaves the previous
  complete result or the new one (result.json and the files it names agree), never a mix.
- ``~/save_meshes`` writes only under the node's ``save_root``: as a plain function and through a
  real rclpy service call on an in-process node.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import trimesh

from amodal3d_ros import safe_io
from amodal3d_ros.cli import main
from amodal3d_ros.result import ReconstructedObject, Reconstruction

EXAMPLE_SCENE = Path(__file__).resolve().parents[1] / "amodal3d_ros" / "ros" / "example_scene"


def make_object(obj_id: str, size: float = 0.05) -> ReconstructedObject:
    box = trimesh.creation.box(extents=[size] * 3)
    return ReconstructedObject(
        id=obj_id, label="object", vertices=np.asarray(box.vertices), faces=np.asarray(box.faces),
        cloud=np.asarray(box.vertices), visible_points=np.asarray(box.vertices[:4]), T_frame_object=np.eye(4),
        bbox_center=np.zeros(3), bbox_size=np.full(3, size), visible_fraction=0.5, confidence=0.8, views_used=1)


def make_result(ids, size: float) -> Reconstruction:
    return Reconstruction(objects=[make_object(i, size) for i in ids], frame_id="world", camera_poses=[np.eye(4)],
                          poses_estimated=False, seconds_total=1.0)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------- ids and paths
@pytest.mark.parametrize("bad_id", ["../../x", "/abs/path", "objects/../../x", "a/b", ""])
def test_unsafe_target_id_ends_the_cli_with_exit_2_and_writes_nothing(tmp_path, capsys, bad_id):
    scene = tmp_path / "scene"
    shutil.copytree(EXAMPLE_SCENE, scene, copy_function=os.link)
    meta = json.loads((EXAMPLE_SCENE / "scene.json").read_text())
    meta["targets"][0]["id"] = bad_id
    (scene / "scene.json").unlink()
    (scene / "scene.json").write_text(json.dumps(meta))
    before = files_under(tmp_path)
    code = main(["reconstruct", str(scene), "--out", str(tmp_path / "a" / "b" / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "targets[0].id" in err and err.count("\n") == 1, err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("bad_id", ["../x", "/tmp/abs", "", "x" * 65, ".hidden", "-rf"])
def test_writers_refuse_unsafe_object_ids(tmp_path, bad_id):
    out = tmp_path / "nest" / "out"
    with pytest.raises(ValueError, match="object id"):
        make_result([bad_id], 0.05).write(out)
    with pytest.raises(ValueError, match="object id"):
        make_object(bad_id).write(out / "objects")
    assert files_under(tmp_path) == set()


def test_duplicate_object_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        make_result(["a", "a"], 0.05).write(tmp_path / "out")


def test_symlink_at_an_output_file_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    (out / "objects").mkdir(parents=True)
    (out / "objects" / "a.ply").symlink_to(victim)
    (out / "result.json").symlink_to(victim)
    result = make_result(["a"], 0.05)
    result.write(out)
    assert victim.read_text() == "precious"
    for name in ("objects/a.ply", "result.json"):
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert (out / "objects" / "a.ply").read_bytes() == result.objects[0].file_contents()[".ply"]


def test_previous_result_json_cannot_make_the_writer_delete_outside(tmp_path):
    """Stale files of the previous result are removed, but only files directly inside objects/."""
    victim = tmp_path / "victim.ply"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"objects": [
        {"id": "x", "mesh": "../victim.ply", "cloud": "objects/../../victim.ply", "visible": str(victim)}]}))
    make_result(["a"], 0.05).write(out)
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------- atomic re-runs
OLD_IDS, NEW_IDS = ["a", "b"], ["a", "c"]  # "a" in both: its files are overwritten; "b" goes stale


def assert_complete(out: Path, old: Reconstruction, new: Reconstruction) -> str:
    """result.json is the old or the new result, and every file it names holds that result's content."""
    doc = json.loads((out / "result.json").read_text())
    ids = [o["id"] for o in doc["objects"]]
    which = {tuple(OLD_IDS): ("old", old), tuple(NEW_IDS): ("new", new)}[tuple(ids)]
    for entry, obj in zip(doc["objects"], which[1].objects):
        contents = obj.file_contents("ply")
        for key, suffix in (("mesh", ".ply"), ("cloud", "_cloud.ply"), ("visible", "_visible.ply")):
            assert (out / entry[key]).read_bytes() == contents[suffix], f"{which[0]} result: {entry[key]}"
    return which[0]


def assert_clean_final(out: Path, new: Reconstruction) -> None:
    assert assert_complete(out, None, new) == "new"
    doc = json.loads((out / "result.json").read_text())
    assert [o["mesh"] for o in doc["objects"]] == [f"objects/{i}.ply" for i in NEW_IDS]  # the spec's names
    expected = {f"{i}{s}" for i in NEW_IDS for s in (".ply", "_cloud.ply", "_visible.ply")}
    assert {p.name for p in (out / "objects").iterdir()} == expected  # no stale "b", no staged copies
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def test_rewrite_killed_at_every_step_leaves_a_complete_result(tmp_path, monkeypatch):
    old, new = make_result(OLD_IDS, 0.05), make_result(NEW_IDS, 0.08)
    real_write = safe_io.atomic_write
    calls = []
    monkeypatch.setattr(safe_io, "atomic_write", lambda path, data: calls.append(path) or real_write(path, data))
    old.write(tmp_path / "count")
    calls.clear()
    new.write(tmp_path / "count")
    steps = len(calls)
    assert steps > 2 * len(NEW_IDS) * 3, "an overwrite stages the new files first"

    for kill_at in range(steps):
        out = tmp_path / f"killed_at_{kill_at}"
        monkeypatch.setattr(safe_io, "atomic_write", real_write)
        old.write(out)
        done = []

        def dying_write(path, data, kill_at=kill_at, done=done):
            if len(done) == kill_at:  # killed while writing this file: a partial temporary is left
                Path(path).with_name(f"{safe_io.TEMP_PREFIX}tmp-killed-{Path(path).name}").write_bytes(
                    data.encode()[:10] if isinstance(data, str) else data[:10])
                raise Killed()
            done.append(path)
            return real_write(path, data)

        monkeypatch.setattr(safe_io, "atomic_write", dying_write)
        with pytest.raises(Killed):
            new.write(out)
        monkeypatch.setattr(safe_io, "atomic_write", real_write)
        assert_complete(out, old, new)
        new.write(out)  # the next run completes and tidies up
        assert_clean_final(out, new)


def test_rewrite_killed_while_removing_stale_files_is_tidied_by_the_next_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    old, new = make_result(OLD_IDS, 0.05), make_result(NEW_IDS, 0.08)
    old.write(out)

    def dying_unlink(self, missing_ok=False):
        raise Killed()

    monkeypatch.setattr(Path, "unlink", dying_unlink)
    with pytest.raises(Killed):
        new.write(out)
    monkeypatch.undo()
    assert assert_complete(out, old, new) == "new"  # under staged names; "b" files not yet removed
    assert (out / "objects" / "b.ply").exists()
    new.write(out)
    assert_clean_final(out, new)


def test_export_failing_after_the_first_object_keeps_the_previous_result(tmp_path, monkeypatch):
    out = tmp_path / "out"
    old, new = make_result(OLD_IDS, 0.05), make_result(NEW_IDS, 0.08)
    old.write(out)
    before = {name: (out / name).read_bytes() for name in files_under(out) if (out / name).is_file()}
    real_export = trimesh.Trimesh.export
    exported = []

    def failing_export(self, *args, **kwargs):
        if exported:
            raise OSError("disk full")
        exported.append(1)
        return real_export(self, *args, **kwargs)

    monkeypatch.setattr(trimesh.Trimesh, "export", failing_export)
    with pytest.raises(OSError, match="disk full"):
        new.write(out)
    monkeypatch.undo()
    assert {name: (out / name).read_bytes() for name in files_under(out) if (out / name).is_file()} == before
    assert assert_complete(out, old, new) == "old"


# ---------------------------------------------------------------- ~/save_meshes
@pytest.fixture
def node_module():
    return pytest.importorskip("amodal3d_ros.ros.node", reason="rclpy not available")


@pytest.fixture
def save_root(tmp_path) -> Path:
    return tmp_path / "root"


@pytest.mark.parametrize("request_dir, expected", [("", "."), ("sub", "sub"), ("sub/deeper/", "sub/deeper"),
                                                   ("sub/../other", "other")])
def test_save_meshes_writes_under_the_root(node_module, save_root, request_dir, expected):
    folder, files = node_module.save_meshes([make_object("a"), make_object("b")], str(save_root), request_dir, "ply")
    assert folder == (save_root / expected).resolve()
    assert len(files) == 6 and all(f.is_absolute() and f.is_file() and f.parent == folder for f in files)


def test_save_meshes_accepts_an_absolute_folder_under_the_root(node_module, save_root):
    target = save_root / "abs"
    folder, files = node_module.save_meshes([make_object("a")], str(save_root), str(target), "glb")
    assert folder == target.resolve() and (target / "a.glb").is_file()


@pytest.mark.parametrize("request_dir", ["../escape", "sub/../../escape", "~", "~/escape", "ABSOLUTE", "link",
                                         "link/sub", "inner_link/sub"])
def test_save_meshes_refuses_folders_outside_the_root(node_module, tmp_path, save_root, request_dir):
    outside = tmp_path / "outside"
    outside.mkdir()
    save_root.mkdir()
    (save_root / "link").symlink_to(outside)  # a symlink leading out of the root
    (save_root / "inner").mkdir()
    (save_root / "inner_link").symlink_to(save_root / "inner" / ".." / ".." / "outside")
    request_dir = str(tmp_path / "escape") if request_dir == "ABSOLUTE" else request_dir
    with pytest.raises(safe_io.UnsafePathError):
        node_module.save_meshes([make_object("a")], str(save_root), request_dir, "ply")
    assert not any(outside.iterdir()) and not (tmp_path / "escape").exists()
    assert not list(save_root.rglob("*.ply"))


def test_save_meshes_replaces_a_symlinked_mesh_instead_of_following_it(node_module, tmp_path, save_root):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    save_root.mkdir()
    (save_root / "a.obj").symlink_to(victim)
    _, files = node_module.save_meshes([make_object("a")], str(save_root), "", "obj")
    assert victim.read_text() == "precious"
    assert not (save_root / "a.obj").is_symlink() and (save_root / "a.obj").read_text().startswith("#")
    assert save_root.resolve() / "a.obj" in files


def test_save_meshes_service_call_is_confined(node_module, tmp_path, save_root):
    """A real rclpy call on the node's ~/save_meshes (in-process node, no reconstruction: its last
    result is set directly)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from amodal3d_ros.srv import SaveMeshes

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    namespace = "/safe_outputs_test"  # apart from any other amodal3d node in this ROS domain
    node = node_module.Amodal3dNode(context=context, namespace=namespace, parameter_overrides=[
        Parameter("save_root", Parameter.Type.STRING, str(save_root))])
    client_node = rclpy.create_node("save_meshes_tester", context=context)
    try:
        node.worker.remember(make_result(["a"], 0.05), [], [])
        executor.add_node(node)
        executor.add_node(client_node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        client = client_node.create_client(SaveMeshes, f"{namespace}/amodal3d/save_meshes")
        assert client.wait_for_service(timeout_sec=30)

        def call(directory, fmt="ply"):
            future = client.call_async(SaveMeshes.Request(directory=directory, format=fmt))
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            assert done.wait(30), "no answer from ~/save_meshes"
            return future.result()

        res = call("")
        assert res.success, res.message
        assert sorted(Path(f).name for f in res.files) == ["a.ply", "a_cloud.ply", "a_visible.ply"]
        assert all(Path(f).is_absolute() and Path(f).parent == save_root.resolve() for f in res.files)
        res = call("meshes", "glb")
        assert res.success and Path(res.files[0]) == save_root.resolve() / "meshes" / "a.glb"
        for escape in ("../escape", str(tmp_path / "escape"), "~/escape"):
            res = call(escape)
            assert not res.success and not res.files and "escape" in res.message, res.message
        assert not (tmp_path / "escape").exists()
        # The root is set at start-up only: a caller on the graph cannot move it.
        refused = node.set_parameters([Parameter("save_root", Parameter.Type.STRING, "/")])[0]
        assert not refused.successful and node.settings.save_root == str(save_root)
    finally:
        executor.shutdown(timeout_sec=2)
        client_node.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
