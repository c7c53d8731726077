"""Loaded at start-up by every pytest process, the pytest-xdist controller included.

The controller rebuilds each warning a worker reports by importing the module that defines its
class (``widthwise.tracker.TrackerWarning``, ...). Two workers reporting at once made it import
``widthwise`` from two threads, half-initialised ("partially initialized module") and the run
crashed; importing the package here, once, before any worker starts, takes that race away.
"""

import widthwise
import widthwise.integrations
import widthwise.reproduction  # noqa: F401
