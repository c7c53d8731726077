"""widthwise: is each layer of your network wide enough?"""

from __future__ import annotations

from widthwise.groups import ChannelGroup, GroupingError, GroupingWarning, Member, find_groups

__version__ = "0.1.0"

__all__ = [
    "ChannelGroup",
    "GroupingError",
    "GroupingWarning",
    "Member",
    "__version__",
    "find_groups",
]
