"""How exact is net2net widening, per module kind: this resize against an older one.

For each model of ``tests/test_resize_rules.py`` one group is widened with ``init="net2net"``
and the largest output change ``max |f_new(x) - f(x)|`` is printed, for the current
:func:`widthwise.resize.resize` and for ``resize`` as it was at git revision ``--baseline``
(loaded from ``git show``). A failure prints the exception class. Seeds are fixed, so one run
is the measurement (no spread to report).

    PYTHONPATH=src python benchmarks/resize_exactness.py [--baseline b73f0ac]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _baseline(rev: str) -> Callable[..., nn.Module]:
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/widthwise/resize.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "resize_baseline.py"
    path.write_text(src)
    return _load(path, "resize_baseline").resize  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b73f0ac", help="git revision of the old resize")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from widthwise.resize import resize

    sys.path.insert(0, str(ROOT / "tests"))  # its shared models (test_resize, archs)
    t = _load(ROOT / "tests" / "test_resize_rules.py", "resize_rules_models")
    import archs

    old_resize = _baseline(args.baseline)

    def found(model: nn.Module, x: object) -> list:
        return t._groups(model, x)

    cases: list[tuple[str, nn.Module, list, dict[str, int], object]] = []
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 5)
    cases.append(("MLP", net, found(net, x), {"0": 13}, x))
    net, x = t.randomise_bn(t.ResNet()), torch.randn(2, 3, 5, 5)
    gs = found(net, x)
    cases.append(("ResNet+BN residual", net, gs, {g.name: g.width + 3 for g in gs}, x))
    for label, cls, kw in [
        ("GRU 2 layers", nn.GRU, {"num_layers": 2}),
        ("LSTM 2 layers bidirectional", nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    ]:
        torch.manual_seed(0)
        net, x = t.RNNNet(cls, **kw).eval(), torch.randn(2, 5, 4)
        gs = found(net, x)
        cases.append((label + ", all named", net, gs, {g.name: 9 for g in gs}, x))
        cases.append((label + ", one named", net, gs, {gs[0].name: 9}, x))
    torch.manual_seed(0)
    net, x = t.MHANet().eval(), torch.randn(2, 5, 5)
    gs = found(net, x)
    cases.append(("nn.MultiheadAttention", net, gs, {g.name: 12 for g in gs}, x))
    torch.manual_seed(0)
    net, x = t.EncoderNet().eval(), torch.randn(2, 5, 5)
    gs = found(net, x)
    ffn = {g.name: 21 for g in gs if g.kind == "linear"}
    cases.append(("TransformerEncoder FFN", net, gs, ffn, x))
    stream = {g.name: 12 for g in gs if g.kind != "linear"}
    cases.append(("TransformerEncoder d_model", net, gs, stream, x))
    model, x = t.bert()
    gs = found(model, x)
    cases.append(("BERT attention 32->48", model, gs, {gs[0].name: 48}, x))
    model, x = t.gpt2()
    gs = found(model, x)
    cases.append(("GPT-2 attention 32->48", model, gs, {gs[0].name: 48}, x))
    model, x = t.llama_gqa()
    gs = [g for g in found(model, x) if g.kind == "attention"]
    cases.append(("Llama GQA key/value heads 2->4", model, gs, {gs[0].name: 4}, x))
    for label, builder in (("GPT-NeoX", "hf_gpt_neox_tiny"), ("Falcon MQA", "hf_falcon_mqa")):
        model, x = getattr(archs, builder)()
        gs = [g for g in found(model.eval(), x) if g.kind == "attention"]
        cases.append((f"{label} fused q/k/v heads 4->6", model, gs, {gs[0].name: 6}, x))

    print(f"{'model / group widened':40s} {'this resize':>22s} {'resize@' + args.baseline:>22s}")
    for label, model, groups, widths, x in cases:
        base = t._out(model, x)
        row = []
        for fn in (resize, old_resize):
            try:
                with torch.no_grad():
                    new = fn(model, groups, widths, init="net2net")
                    row.append(f"{(t._out(new, x) - base).abs().max().item():.1e}")
            except Exception as exc:  # the old code's crashes are part of the measurement
                row.append(type(exc).__name__)
        print(f"{label:40s} {row[0]:>22s} {row[1]:>22s}")


if __name__ == "__main__":
    main()
