"""How find_groups' cost grows with model size, against Torch-Pruning's graph build, same run.

For each family (an MLP, a ResNet-style CNN with residual blocks, a pre-norm transformer, a
Hugging Face Mistral with rotary grouped-query attention, where Torch-Pruning's walk cycles) and
depths 2, 4, ..., find_groups and ``tp.DependencyGraph().build_dependency`` are timed (best of
``--repeats``) on the same model and input. Prints per depth the two times and their ratio, and
per family the slope of log(time) against log(depth) (1.0 = linear, 2.0 = quadratic).

    python benchmarks/groups_scaling.py [--depths 2 4 8 16 32] [--repeats 3] [--families ...]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from widthwise import find_groups


class MLP(nn.Module):
    def __init__(self, depth: int, width: int = 64):
        super().__init__()
        self.inp = nn.Linear(16, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, 4)

    def forward(self, x):
        x = F.relu(self.inp(x))
        for fc in self.hidden:
            x = F.relu(fc(x))
        return self.out(x)


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, depth: int, c: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(*(Block(c) for _ in range(depth)))
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class Transformer(nn.Module):
    """Pre-norm blocks with hand-written multi-head attention (q/k/v Linear) and an MLP."""

    def __init__(self, depth: int, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(8, d)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln1": nn.LayerNorm(d),
                    "q": nn.Linear(d, d),
                    "k": nn.Linear(d, d),
                    "v": nn.Linear(d, d),
                    "o": nn.Linear(d, d),
                    "ln2": nn.LayerNorm(d),
                    "fc1": nn.Linear(d, 2 * d),
                    "fc2": nn.Linear(2 * d, d),
                }
            )
            for _ in range(depth)
        )
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.embed(x)
        b, t, d = h.shape
        for blk in self.blocks:
            y = blk["ln1"](h)
            q, k, v = (blk[n](y).view(b, t, self.heads, -1).transpose(1, 2) for n in "qkv")
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
            h = h + blk["o"](a)
            h = h + blk["fc2"](F.gelu(blk["fc1"](blk["ln2"](h))))
        return self.head(h.mean(1))


def Mistral(depth: int) -> nn.Module:
    """Hugging Face Mistral (rotary, 4 query heads on 2 key/value heads), returning logits."""
    import transformers as tf

    cfg = tf.MistralConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=depth,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = tf.MistralForCausalLM(cfg)

        def forward(self, ids):
            return self.m(input_ids=ids).logits

    return Logits()


FAMILIES = {
    "mlp": (MLP, lambda: torch.randn(2, 16)),
    "mistral": (Mistral, lambda: torch.randint(0, 40, (1, 6))),
    "resnet": (ResNet, lambda: torch.randn(1, 3, 8, 8)),
    "transformer": (Transformer, lambda: torch.randn(2, 5, 8)),
}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    for fam in args.families:
        cls, make_x = FAMILIES[fam]
        print(f"\n{fam}: depth  params  groups  torch-pruning build  find_groups  ratio")
        ours_t, base_t = [], []
        for depth in args.depths:
            torch.manual_seed(0)
            model, x = cls(depth), make_x()
            n = sum(p.numel() for p in model.parameters())
            base = best_of(
                lambda m=model, x=x: tp.DependencyGraph().build_dependency(m, x, verbose=False),
                args.repeats,
            )
            ours = best_of(lambda m=model, x=x: find_groups(m, x), args.repeats)
            groups = find_groups(model, x)
            base_t.append(base)
            ours_t.append(ours)
            print(
                f"{'':>8}{depth:5d} {n:7d} {len(groups):7d} {base * 1e3:17.1f} ms "
                f"{ours * 1e3:9.1f} ms {ours / base:6.2f}"
            )
        print(
            f"  log-log slope vs depth: torch-pruning build {slope(args.depths, base_t):.2f}, "
            f"find_groups {slope(args.depths, ours_t):.2f}"
        )


if __name__ == "__main__":
    main()
