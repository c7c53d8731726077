"""Probes beside the core: they use a model or a run but the core never uses them.

* :mod:`widthwise.probes.similarity` — linear CKA between layers and models, block structure,
  first-PC share, prediction comparison (Nguyen, Raghu & Kornblith, ICLR 2021).
* :mod:`widthwise.probes.kernel` — the neural covariance kernel of residual networks over widths
  and depths (Hayou, 2023), on :class:`~widthwise.probes.residual_mlp.ResidualMLP`.
"""
