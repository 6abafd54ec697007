"""Tools around the amodal3d node, each its own console script or command: ``launcher``
(``amodal3d_launch``: the YAML launch files without ``ros2 launch``), ``player`` (``amodal3d_player``: a
scene folder or a rosbag as a live camera), ``recorder`` (``amodal3d_recorder``: results to files and a
report) and ``demo`` (``amodal3d demo``: the three together). The node itself does not import them.
"""
