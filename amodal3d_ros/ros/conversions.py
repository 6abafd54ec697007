"""ROS message <-> numpy conversions (no node, no executor: plain functions, unit-tested).

Replaces the pieces of cv_bridge / sensor_msgs_py / tf_transformations that are missing from the
PyPI ROS 2 stack. Conventions: metres, ROS optical camera frame, ``T_a_b`` maps points from frame
b into frame a, quaternions as ROS (x, y, z, w).
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import transforms3d
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from shape_msgs.msg import Mesh, MeshTriangle
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from amodal3d_ros.result import ReconstructedObject


class ConversionError(ValueError):
    """A message that cannot be converted (wrong encoding, inconsistent size, bad values)."""


# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")


# --------------------------------------------------------------------------- time / header
def stamp_to_sec(stamp: Time) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def sec_to_stamp(t: float) -> Time:
    sec = int(np.floor(t))
    nsec = int(round((t - sec) * 1e9))
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return Time(sec=sec, nanosec=nsec)


def make_header(frame_id: str, stamp) -> Header:
    if isinstance(stamp, (int, float)):
        stamp = sec_to_stamp(float(stamp))
    return Header(frame_id=frame_id, stamp=stamp)


# --------------------------------------------------------------------------- images
def image_to_numpy(msg: Image) -> np.ndarray:
    """The pixel array of ``msg`` as (H, W) or (H, W, C), in the message's own encoding."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding '{msg.encoding}' "
                              f"(supported: {', '.join(IMAGE_ENCODINGS)})")
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ConversionError(f"image has empty size {w}x{h}")
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    step = int(msg.step) or row
    if step < row:
        raise ConversionError(f"image step {step} is smaller than width*channels*bytes = {row} "
                              f"({msg.encoding}, {w}x{h})")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * h:
        raise ConversionError(f"image data has {buf.size} bytes, expected step*height = {step * h} "
                              f"({msg.encoding}, {w}x{h})")
    rows = buf[: step * h].reshape(h, step)[:, :row]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, channels) if channels > 1 else \
        np.ascontiguousarray(rows).view(dt).reshape(h, w)
    return arr.astype(dtype, copy=False)


def numpy_to_image(arr: np.ndarray, encoding: str, header: Optional[Header] = None) -> Image:
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding '{encoding}'")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if (channels == 1 and arr.ndim != 2) or (channels > 1 and (arr.ndim != 3 or arr.shape[2] != channels)):
        raise ConversionError(f"array of shape {arr.shape} does not fit encoding {encoding}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * channels * arr.dtype.itemsize)
    msg.data = arr.tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a colour image message (rgb8, bgr8, rgba8, bgra8, mono8)."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ConversionError(f"colour image has encoding '{msg.encoding}', expected one of "
                              f"{', '.join(COLOR_ENCODINGS)}")
    arr = image_to_numpy(msg)
    if msg.encoding == "rgb8":
        return arr
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if msg.encoding == "bgra8":
        return np.ascontiguousarray(arr[..., 2::-1])
    return np.repeat(arr[..., None], 3, axis=2)  # mono8


def image_to_depth(msg: Image) -> np.ndarray:
    """(H, W) float32 metres from a depth image (16UC1 millimetres or 32FC1 metres).

    Invalid pixels (0, NaN, inf, negative) become 0 = no measurement.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ConversionError(f"depth image has encoding '{msg.encoding}', expected 16UC1 (mm) or 32FC1 (m)")
    arr = image_to_numpy(msg)
    depth = arr.astype(np.float32) * (0.001 if msg.encoding == "16UC1" else 1.0)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def depth_to_image(depth_m: np.ndarray, encoding: str = "16UC1", header: Optional[Header] = None) -> Image:
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if encoding == "16UC1":
        mm = np.where(np.isfinite(depth_m), depth_m, 0.0) * 1000.0
        return numpy_to_image(np.clip(np.round(mm), 0, 65535).astype(np.uint16), "16UC1", header)
    if encoding == "32FC1":
        return numpy_to_image(depth_m, "32FC1", header)
    raise ConversionError(f"depth encoding must be 16UC1 or 32FC1, got '{encoding}'")


# --------------------------------------------------------------------------- camera info
def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    """3x3 intrinsics from ``msg.k``; raises ConversionError on non-finite or non-positive focal."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise ConversionError(f"camera_info K has non-finite values: {K.ravel().tolist()}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ConversionError(f"camera_info K has non-positive focal lengths fx={K[0, 0]}, fy={K[1, 1]} "
                              "(uncalibrated camera?)")
    return K


def K_to_camera_info(K: np.ndarray, width: int, height: int, header: Optional[Header] = None) -> CameraInfo:
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.ravel().tolist()
    return msg


# --------------------------------------------------------------------------- poses
def matrix_to_pose(T: np.ndarray) -> Pose:
    T = np.asarray(T, dtype=np.float64).reshape(4, 4)
    w, x, y, z = transforms3d.quaternions.mat2quat(T[:3, :3])
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in T[:3, 3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = float(x), float(y), float(z), float(w)
    return p


def pose_to_matrix(p: Pose) -> np.ndarray:
    q = np.array([p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ConversionError(f"pose has an invalid quaternion {q.tolist()} (w, x, y, z)")
    T = np.eye(4)
    T[:3, :3] = transforms3d.quaternions.quat2mat(q / n)
    T[:3, 3] = [p.position.x, p.position.y, p.position.z]
    if not np.all(np.isfinite(T)):
        raise ConversionError("pose has non-finite position")
    return T


def transform_to_matrix(t) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    p = Pose()
    p.position.x, p.position.y, p.position.z = t.translation.x, t.translation.y, t.translation.z
    p.orientation = t.rotation
    return pose_to_matrix(p)


# --------------------------------------------------------------------------- point clouds
_PF_DTYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}
_NP_TO_PF = {np.dtype(v): k for k, v in _PF_DTYPES.items()}


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) float32 carrying 0x00RRGGBB bits (the PCL / RViz 'rgb' field)."""
    c = np.asarray(colors, dtype=np.uint32).reshape(-1, 3)
    packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    return packed.astype(np.uint32).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    u = np.asarray(packed).astype(np.float32).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1).astype(np.uint8)


def build_cloud(points: np.ndarray, header: Optional[Header] = None, **fields: np.ndarray) -> PointCloud2:
    """PointCloud2 with float32 x, y, z plus extra per-point fields (name=array, dtype kept).

    Use ``rgb=pack_rgb(colors)`` for RViz colours.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = pts.shape[0]
    names = ["x", "y", "z"] + list(fields)
    arrays = [pts[:, 0], pts[:, 1], pts[:, 2]] + [np.asarray(a).reshape(n) for a in fields.values()]
    dtype = np.dtype([(name, a.dtype) for name, a in zip(names, arrays)])
    rec = np.empty(n, dtype=dtype)
    for name, a in zip(names, arrays):
        rec[name] = a
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=name, offset=dtype.fields[name][1], datatype=_NP_TO_PF[dtype.fields[name][0]],
                             count=1) for name in names]
    msg.is_bigendian = False
    msg.point_step = dtype.itemsize
    msg.row_step = dtype.itemsize * n
    msg.is_dense = bool(np.all(np.isfinite(pts)))
    msg.data = rec.tobytes()
    return msg


def parse_cloud(msg: PointCloud2) -> np.ndarray:
    """Structured numpy array (one record per point) with every field of ``msg``."""
    if msg.point_step == 0 or msg.width * msg.height == 0:
        return np.zeros(0, dtype=[("x", np.float32), ("y", np.float32), ("z", np.float32)])
    dtype = np.dtype({
        "names": [f.name for f in msg.fields],
        "formats": [np.dtype(_PF_DTYPES[f.datatype]).newbyteorder(">" if msg.is_bigendian else "<")
                    if f.count == 1 else (_PF_DTYPES[f.datatype], (f.count,)) for f in msg.fields],
        "offsets": [f.offset for f in msg.fields],
        "itemsize": msg.point_step,
    })
    n = msg.width * msg.height
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if msg.height > 1 and msg.row_step != msg.point_step * msg.width:
        buf = buf.reshape(msg.height, msg.row_step)[:, : msg.point_step * msg.width].ravel()
    if buf.size < n * msg.point_step:
        raise ConversionError(f"PointCloud2 has {buf.size} bytes, expected {n * msg.point_step}")
    return np.frombuffer(buf[: n * msg.point_step].tobytes(), dtype=dtype)


def cloud_to_xyz(msg: PointCloud2) -> np.ndarray:
    rec = parse_cloud(msg)
    if rec.size == 0:
        return np.zeros((0, 3))
    return np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)


# --------------------------------------------------------------------------- meshes
def mesh_to_msg(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    msg = Mesh()
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.uint32).reshape(-1, 3)
    msg.vertices = [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in v.tolist()]
    msg.triangles = [MeshTriangle(vertex_indices=tri) for tri in f]
    return msg


def msg_to_mesh(msg: Mesh) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[p.x, p.y, p.z] for p in msg.vertices], dtype=np.float64).reshape(-1, 3)
    f = np.array([np.asarray(t.vertex_indices) for t in msg.triangles], dtype=np.int32).reshape(-1, 3)
    return v, f


# --------------------------------------------------------------------------- objects
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190], [0, 128, 128], [170, 110, 40],
], dtype=np.uint8)


def object_color(index: int) -> np.ndarray:
    return PALETTE[index % len(PALETTE)]


def cloud_point_fields(obj: ReconstructedObject) -> dict[str, np.ndarray]:
    """float32 ``confidence`` (probability of lying within 5 mm of the true surface) and ``observed`` (1
    measured, 0 inferred) per point of an object's completed cloud. An object without them (not assessed)
    gets its overall confidence, and 0: not known to be measured."""
    n = len(np.asarray(obj.cloud).reshape(-1, 3))
    confidence = np.full(n, obj.confidence) if obj.cloud_confidence is None else obj.cloud_confidence
    observed = np.zeros(n) if obj.cloud_observed is None else obj.cloud_observed
    return {"confidence": np.asarray(confidence, np.float32).reshape(n),
            "observed": np.asarray(observed, np.float32).reshape(n)}


def object_to_msg(obj: ReconstructedObject, header: Header):
    """core ReconstructedObject -> amodal3d_ros/ReconstructedObject (all geometry in header.frame_id)."""
    from amodal3d_ros.msg import ReconstructedObject as ObjectMsg

    m = ObjectMsg()
    m.header = header
    m.id = str(obj.id)
    m.label = str(obj.label or "")
    m.mesh = mesh_to_msg(obj.vertices, obj.faces)
    m.completed_cloud = build_cloud(obj.cloud, header, **cloud_point_fields(obj))
    m.visible_cloud = build_cloud(obj.visible_points, header)
    T = np.asarray(obj.T_frame_object, dtype=np.float64).reshape(4, 4)
    m.pose = matrix_to_pose(T)
    T_box = T.copy()
    T_box[:3, 3] = T[:3, :3] @ np.asarray(obj.bbox_center, dtype=np.float64).reshape(3) + T[:3, 3]
    m.bbox_center = matrix_to_pose(T_box)
    sx, sy, sz = (float(v) for v in np.asarray(obj.bbox_size).reshape(3))
    m.bbox_size = Vector3(x=sx, y=sy, z=sz)
    m.visible_fraction = float(obj.visible_fraction)
    m.confidence = float(obj.confidence)
    m.views_used = int(obj.views_used)
    m.occluder_ids = [str(o) for o in obj.occluders]
    m.completion_method = str(obj.completion_method)
    m.reconstruction_seconds = float(obj.seconds)
    if obj.symmetry_axis is not None:
        (px, py, pz), (dx, dy, dz) = (np.asarray(v, dtype=np.float64) for v in obj.symmetry_axis)
        m.has_symmetry_axis = True
        m.symmetry_axis_point = Point(x=float(px), y=float(py), z=float(pz))
        m.symmetry_axis_direction = Vector3(x=float(dx), y=float(dy), z=float(dz))
    return m


def msg_to_object(m) -> ReconstructedObject:
    """amodal3d_ros/ReconstructedObject -> core ReconstructedObject (no masks, no per-vertex confidence)."""
    vertices, faces = msg_to_mesh(m.mesh)
    completed = parse_cloud(m.completed_cloud)
    names = completed.dtype.names or ()
    T = pose_to_matrix(m.pose)
    T_box = pose_to_matrix(m.bbox_center)
    bbox_center = np.linalg.inv(T)[:3, :3] @ (T_box[:3, 3] - T[:3, 3])
    return ReconstructedObject(
        id=m.id, label=m.label, vertices=vertices, faces=faces,
        cloud=cloud_to_xyz(m.completed_cloud), visible_points=cloud_to_xyz(m.visible_cloud),
        T_frame_object=T, bbox_center=bbox_center,
        bbox_size=np.array([m.bbox_size.x, m.bbox_size.y, m.bbox_size.z]),
        visible_fraction=float(m.visible_fraction), confidence=float(m.confidence),
        views_used=int(m.views_used), occluders=list(m.occluder_ids),
        completion_method=m.completion_method, seconds=float(m.reconstruction_seconds),
        cloud_confidence=completed["confidence"].astype(np.float32) if "confidence" in names else None,
        cloud_observed=completed["observed"] > 0.5 if "observed" in names else None,
        symmetry_axis=np.array([[m.symmetry_axis_point.x, m.symmetry_axis_point.y, m.symmetry_axis_point.z],
                                [m.symmetry_axis_direction.x, m.symmetry_axis_direction.y,
                                 m.symmetry_axis_direction.z]]) if m.has_symmetry_axis else None)


def objects_to_array_msg(objects: Sequence[ReconstructedObject], header: Header):
    from amodal3d_ros.msg import ReconstructedObjectArray

    arr = ReconstructedObjectArray()
    arr.header = header
    arr.objects = [object_to_msg(o, header) for o in objects]
    return arr


def objects_to_cloud(objects: Sequence[ReconstructedObject], header: Header) -> PointCloud2:
    """All completed clouds in one PointCloud2: x, y, z, rgb (object colour), object_id (uint32 index),
    confidence and observed (float32, ``cloud_point_fields``)."""
    if not objects:
        return build_cloud(np.zeros((0, 3)), header, rgb=np.zeros(0, np.float32), object_id=np.zeros(0, np.uint32),
                           confidence=np.zeros(0, np.float32), observed=np.zeros(0, np.float32))
    pts = [np.asarray(o.cloud, dtype=np.float64).reshape(-1, 3) for o in objects]
    ids = np.concatenate([np.full(len(p), i, dtype=np.uint32) for i, p in enumerate(pts)])
    colors = PALETTE[ids % len(PALETTE)]
    fields = [cloud_point_fields(o) for o in objects]
    return build_cloud(np.concatenate(pts), header, rgb=pack_rgb(colors), object_id=ids,
                       confidence=np.concatenate([f["confidence"] for f in fields]),
                       observed=np.concatenate([f["observed"] for f in fields]))


def vertex_colors(obj: ReconstructedObject, rgb: np.ndarray) -> np.ndarray:
    """(N, 3) colours in [0, 1] per mesh vertex: the object's ``rgb`` where measured; inferred surface paler
    (mixed with white), the more so the lower its confidence, so that even a confident inference is told
    from a measurement."""
    n = len(np.asarray(obj.vertices).reshape(-1, 3))
    colors = np.tile(np.asarray(rgb, np.float64).reshape(1, 3), (n, 1))
    if obj.vertex_confidence is None or obj.vertex_observed is None:
        return colors
    share = 0.3 + 0.5 * np.clip(np.asarray(obj.vertex_confidence, np.float64).reshape(n), 0.0, 1.0)
    paler = share[:, None] * colors + (1.0 - share[:, None])
    return np.where(np.asarray(obj.vertex_observed, bool).reshape(n, 1), colors, paler)


def objects_to_markers(objects: Sequence[ReconstructedObject], header: Header, ns: str = "amodal3d",
                       alpha: float = 0.85) -> MarkerArray:
    """DELETEALL, then per object a TRIANGLE_LIST mesh (coloured per vertex: ``vertex_colors``), a
    TEXT_VIEW_FACING label above it and, for an object found rotationally symmetric, a LINE_LIST of its
    axis from the support through its top."""
    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    for i, obj in enumerate(objects):
        r, g, b = (float(c) / 255.0 for c in object_color(i))
        mesh = _new_marker(header, f"{ns}/meshes", i, Marker.TRIANGLE_LIST)
        mesh.scale = Vector3(x=1.0, y=1.0, z=1.0)
        mesh.color = ColorRGBA(r=r, g=g, b=b, a=float(alpha))
        corners = np.asarray(obj.faces, dtype=np.int64).reshape(-1)
        tri = np.asarray(obj.vertices, dtype=np.float64)[corners]
        mesh.points = [Point(x=a, y=b_, z=c) for a, b_, c in tri.tolist()]
        mesh.colors = [ColorRGBA(r=cr, g=cg, b=cb, a=float(alpha))
                       for cr, cg, cb in vertex_colors(obj, (r, g, b))[corners].tolist()]
        out.markers.append(mesh)

        text = _new_marker(header, f"{ns}/labels", i, Marker.TEXT_VIEW_FACING)
        v = np.asarray(obj.vertices).reshape(-1, 3)
        top = v.mean(axis=0) if len(v) else np.zeros(3)
        if len(v):
            top = top.copy()
            top[2] = v[:, 2].max() + 0.03  # above the object (world z up for posed scenes)
        text.pose.position = Point(x=float(top[0]), y=float(top[1]), z=float(top[2]))
        text.scale.z = 0.025
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label = f"{obj.id}" + (f" ({obj.label})" if obj.label and obj.label != obj.id else "")
        text.text = f"{label} vis {obj.visible_fraction:.0%} conf {obj.confidence:.2f}"
        out.markers.append(text)

        if obj.symmetry_axis is not None:
            base, up = (np.asarray(a, dtype=np.float64) for a in obj.symmetry_axis)
            height = float(((v - base) @ up).max()) if len(v) else 0.0
            line = _new_marker(header, f"{ns}/symmetry_axes", i, Marker.LINE_LIST)
            line.scale.x = 0.002  # line width, m
            line.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
            ends = (base, base + (height + 0.02) * up)
            line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in ends]
            out.markers.append(line)
    return out


def _new_marker(header, ns: str, marker_id: int, marker_type: int) -> Marker:
    marker = Marker()
    marker.header = header
    marker.ns = ns
    marker.id = marker_id
    marker.type = marker_type
    marker.action = Marker.ADD
    marker.pose.orientation.w = 1.0
    return marker


def draw_debug_image(rgb: np.ndarray, objects: Sequence[ReconstructedObject], frame_index: int,
                     target_ids: Iterable[str] = ()) -> np.ndarray:
    """The input image with each object's visible mask (tinted, outlined) and its hidden part
    (occlusion mask, hatched); targets get a thick outline and their id."""
    import cv2

    img = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    overlay = img.copy()
    h, w = img.shape[:2]
    hatch = ((np.add.outer(np.arange(h), np.arange(w)) // 4) % 2 == 0)
    targets = set(target_ids)
    outlines = []
    for i, obj in enumerate(objects):
        color = tuple(int(c) for c in object_color(i))
        vis = obj.visible_masks.get(frame_index)
        occ = obj.occlusion_masks.get(frame_index)
        if occ is not None and occ.shape == (h, w):
            sel = occ & hatch
            overlay[sel] = color
            cnts, _ = cv2.findContours(occ.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outlines.append((cnts, color, 1))
        if vis is not None and vis.shape == (h, w):
            overlay[vis] = (0.5 * overlay[vis] + 0.5 * np.array(color)).astype(np.uint8)
            cnts, _ = cv2.findContours(vis.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outlines.append((cnts, color, 3 if obj.id in targets else 1))
            ys, xs = np.nonzero(vis)
            if len(xs):
                cv2.putText(overlay, str(obj.id), (int(xs.mean()) - 10, int(ys.min()) - 4),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    img = (0.35 * img + 0.65 * overlay).astype(np.uint8)
    for cnts, color, thick in outlines:
        cv2.drawContours(img, cnts, -1, color, thick)
    return img
