"""Old import path of :mod:`widthwise.groups.recurrent`, kept so existing imports still work."""

from widthwise.groups.recurrent import *  # noqa: F403
from widthwise.groups.recurrent import __all__  # noqa: F401
