"""Old import path of ``amodal3d_ros.ros.tools.launcher`` (runnable with ``python -m`` as before).

Kept only while callers still use it (tests, ``amodal3d_ros.cli``); new code imports the tools package.
"""
import sys

from amodal3d_ros.ros.tools.launcher import *  # noqa: F401,F403
from amodal3d_ros.ros.tools.launcher import main

if __name__ == "__main__":
    sys.exit(main())
