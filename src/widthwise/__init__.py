"""widthwise: is each layer of your network wide enough?

The data flows one way: a model's channel groups (:func:`find_groups`), their weight-norm
statistics (:mod:`widthwise.norms`), recorded over training by a :class:`WidthTracker` into a
run file (:func:`open_run`), classified IS / DS (:func:`classify`), reported (:class:`Report`)
and turned into new widths (:func:`streamline`, :meth:`WidthPlan.apply`).

>>> import torch, widthwise
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> tracker = widthwise.WidthTracker(net, torch.randn(2, 8))
>>> [(g.name, g.width) for g in tracker.groups]
[('0', 16)]
>>> tracker.snapshot(step=0)  # False (never an exception) when a snapshot fails
True
>>> tracker.history()[["step", "group", "width"]].to_dict("records")
[{'step': 0, 'group': '0', 'width': 16}]

The framework integrations (:mod:`widthwise.integrations`) are imported on demand.
"""

from __future__ import annotations

from widthwise import _moved
from widthwise._version import __version__
from widthwise.groups import ChannelGroup, GroupingError, GroupingWarning, Member, find_groups
from widthwise.norms import GroupStats, NormPlan, channel_norms, group_stats
from widthwise.patterns import Verdict, classify, stable_from, synthetic_series
from widthwise.report import Report
from widthwise.resize import (
    ResizeError,
    ResizeWarning,
    WidthRule,
    check_widths,
    resize,
    width_rules,
)
from widthwise.store import Run, RunFileError, RunStore, open_run
from widthwise.streamline import WidthPlan, count_flops, count_params, streamline
from widthwise.tracker import TrackerWarning, WidthTracker

_moved.install()  # old paths: widthwise.zoo, widthwise.kernel, ... (moved to sub-packages)

__all__ = [
    "ChannelGroup",
    "GroupStats",
    "GroupingError",
    "GroupingWarning",
    "Member",
    "NormPlan",
    "Report",
    "ResizeError",
    "ResizeWarning",
    "Run",
    "RunFileError",
    "RunStore",
    "TrackerWarning",
    "Verdict",
    "WidthPlan",
    "WidthRule",
    "WidthTracker",
    "__version__",
    "channel_norms",
    "check_widths",
    "classify",
    "count_flops",
    "count_params",
    "find_groups",
    "group_stats",
    "open_run",
    "resize",
    "stable_from",
    "streamline",
    "synthetic_series",
    "width_rules",
]
