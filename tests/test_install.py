"""Checks of the installed package: generated interfaces, share files, scripts, package.xml."""
import ast
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = "amodal3d_ros"
SCRIPTS = ["amodal3d", "amodal3d_node", "amodal3d_player", "amodal3d_recorder", "amodal3d_launch"]


def _share_dir() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PKG))


def test_interfaces_import():
    from amodal3d_ros.msg import ReconstructedObject, ReconstructedObjectArray
    from amodal3d_ros.srv import SaveMeshes

    fields = ReconstructedObject.get_fields_and_field_types()
    assert fields["mesh"] == "shape_msgs/Mesh"
    assert fields["completed_cloud"] == "sensor_msgs/PointCloud2"
    assert fields["visible_cloud"] == "sensor_msgs/PointCloud2"
    assert fields["pose"] == "geometry_msgs/Pose"
    assert fields["bbox_size"] == "geometry_msgs/Vector3"
    assert fields["bbox_center"] == "geometry_msgs/Pose"
    assert fields["views_used"] == "uint32"
    assert fields["occluder_ids"] == "sequence<string>"
    assert fields["reconstruction_seconds"] == "float"
    assert list(ReconstructedObjectArray.get_fields_and_field_types()) == ["header", "objects"]
    assert list(SaveMeshes.Request.get_fields_and_field_types()) == ["directory", "format"]
    assert list(SaveMeshes.Response.get_fields_and_field_types()) == [
        "success", "message", "files"]


def _xyz_cloud(points, frame):
    import numpy as np
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.asarray(points, dtype=np.float32)
    msg = PointCloud2()
    msg.header.frame_id = frame
    msg.height, msg.width = 1, len(pts)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate("xyz")]
    msg.is_bigendian = False
    msg.point_step, msg.row_step = 12, 12 * len(pts)
    msg.data = pts.tobytes()
    msg.is_dense = True
    return msg


def test_message_roundtrip_serialization():
    import numpy as np
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message, serialize_message
    from shape_msgs.msg import MeshTriangle

    from amodal3d_ros.msg import ReconstructedObject, ReconstructedObjectArray

    frame = "table"
    obj = ReconstructedObject()
    obj.header.frame_id = frame
    obj.header.stamp.sec, obj.header.stamp.nanosec = 12, 345
    obj.id, obj.label = "obj_1", "mug"
    verts = [(0.0, 0.0, 0.0), (0.1, 0.0, 0.0), (0.0, 0.1, 0.0), (0.0, 0.0, 0.1)]
    obj.mesh.vertices = [Point(x=x, y=y, z=z) for x, y, z in verts]
    obj.mesh.triangles = [MeshTriangle(vertex_indices=np.array(t, dtype=np.uint32))
                          for t in [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]]
    rng = np.random.default_rng(0)
    completed = rng.uniform(0, 0.1, size=(50, 3))
    obj.completed_cloud = _xyz_cloud(completed, frame)
    obj.visible_cloud = _xyz_cloud(completed[:20], frame)
    obj.pose.position.x, obj.pose.position.y = 0.4, -0.1
    obj.pose.orientation.z, obj.pose.orientation.w = 0.7071068, 0.7071068
    obj.bbox_size.x, obj.bbox_size.y, obj.bbox_size.z = 0.1, 0.1, 0.1
    obj.bbox_center.position.z = 0.05
    obj.bbox_center.orientation.w = 1.0
    obj.visible_fraction, obj.confidence, obj.views_used = 0.375, 0.75, 3  # exact in float32
    obj.occluder_ids = ["obj_0", "obj_2"]
    obj.completion_method = "learned"
    obj.reconstruction_seconds = 1.5

    arr = ReconstructedObjectArray()
    arr.header = obj.header
    arr.objects = [obj, ReconstructedObject(id="obj_2")]

    data = serialize_message(arr)
    back = deserialize_message(data, ReconstructedObjectArray)
    assert back == arr
    b = back.objects[0]
    assert b.header.frame_id == frame and b.header.stamp.nanosec == 345
    assert [(p.x, p.y, p.z) for p in b.mesh.vertices] == verts
    assert [list(t.vertex_indices) for t in b.mesh.triangles][1] == [0, 1, 3]
    got = np.frombuffer(bytes(b.completed_cloud.data), dtype=np.float32).reshape(-1, 3)
    np.testing.assert_array_equal(got, completed.astype(np.float32))
    assert b.visible_cloud.width == 20
    assert b.pose.orientation.z == pytest.approx(0.7071068)
    assert list(b.occluder_ids) == ["obj_0", "obj_2"]
    assert b.views_used == 3 and b.completion_method == "learned"
    assert b.confidence == 0.75 and b.visible_fraction == 0.375


def test_service_types_roundtrip():
    from rclpy.serialization import deserialize_message, serialize_message

    from amodal3d_ros.srv import SaveMeshes

    req = SaveMeshes.Request(directory="/tmp/meshes", format="glb")
    assert deserialize_message(serialize_message(req), SaveMeshes.Request) == req
    resp = SaveMeshes.Response(success=True, message="ok", files=["/tmp/meshes/a.glb"])
    assert deserialize_message(serialize_message(resp), SaveMeshes.Response) == resp


def test_share_files_installed():
    share = _share_dir()
    assert (share / "package.xml").is_file()
    assert (share / "msg" / "ReconstructedObject.msg").is_file()
    assert (share / "srv" / "SaveMeshes.srv").is_file()
    marker = Path(sys.prefix, "share", "ament_index", "resource_index", "packages", PKG)
    assert marker.is_file()
    for folder in ("launch", "config"):
        sources = [p for p in (REPO / folder).rglob("*") if p.is_file() and p.name != ".gitkeep"]
        for src in sources:
            installed = share / folder / src.relative_to(REPO / folder)
            assert installed.is_file(), f"{src.relative_to(REPO)} is not installed at {installed}"
            assert installed.read_bytes() == src.read_bytes(), (
                f"{installed} is stale: run `make install`")


def _setup_py_scripts():
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "CONSOLE_SCRIPTS" for t in node.targets):
            return [s.replace(" ", "") for s in ast.literal_eval(node.value)]
    raise AssertionError("CONSOLE_SCRIPTS not found in setup.py")


def test_console_scripts_and_ros2_run_launchers():
    entries = _setup_py_scripts()
    assert sorted(e.split("=")[0] for e in entries) == sorted(SCRIPTS)
    cmake = (REPO / "CMakeLists.txt").read_text()
    block = re.search(r"set\(AMODAL3D_EXECUTABLES(.*?)\)", cmake, re.S).group(1)
    assert sorted(re.findall(r'"([^"]+)"', block)) == sorted(entries), (
        "console scripts of setup.py and AMODAL3D_EXECUTABLES of CMakeLists.txt differ")
    bindir = Path(sys.prefix, "bin")
    libdir = Path(sys.prefix, "lib", PKG)
    for name in SCRIPTS:
        assert (bindir / name).is_file(), f"console script {name} missing in {bindir}"
        assert os.access(bindir / name, os.X_OK)
        assert (libdir / name).is_file(), f"`ros2 run` launcher {name} missing in {libdir}"
        assert os.access(libdir / name, os.X_OK)


def test_package_xml():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(REPO / "package.xml"))
    pkg.validate()
    assert pkg.name == PKG
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    assert pkg.licenses == ["Apache-2.0"]
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]
    buildtool = {d.name for d in pkg.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= buildtool
    execs = {d.name for d in pkg.exec_depends}
    assert {"rclpy", "rosidl_default_runtime", "tf2_ros", "cv_bridge", "std_srvs"} <= execs
    import amodal3d_ros

    assert pkg.version == amodal3d_ros.__version__
