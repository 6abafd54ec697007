"""Start-up and shutdown shared by the package's console-script nodes."""
from __future__ import annotations

import sys
from typing import Optional

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

STOP_SIGNALS = (KeyboardInterrupt, ExternalShutdownException)  # Ctrl-C, SIGTERM / context shutdown


class RosProcess:
    """rclpy for one console script: ``with RosProcess(argv) as proc: node = proc.own(MyNode())``.

    Ctrl-C and SIGTERM end the block quietly and set ``interrupted``; on the way out every owned node
    is closed (its ``close()``, where it has one: models, GPU memory) and destroyed, then rclpy is
    shut down, whatever happened inside.
    """

    def __init__(self, argv: Optional[list[str]] = None):
        self.argv = argv if argv is not None else sys.argv
        self.interrupted = False
        self._nodes: list[Node] = []

    def __enter__(self) -> "RosProcess":
        rclpy.init(args=self.argv)
        return self

    def own(self, node: Node) -> Node:
        self._nodes.append(node)
        return node

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            for node in reversed(self._nodes):
                close = getattr(node, "close", None)
                if callable(close):
                    close()
                node.destroy_node()
        finally:
            rclpy.try_shutdown()
        self.interrupted = exc_type is not None and issubclass(exc_type, STOP_SIGNALS)
        return self.interrupted
