"""find_groups on a ResNet-50-size network, against plain Torch-Pruning on the same model.

Baseline: ``DependencyGraph.build_dependency`` + ``get_all_groups`` (what find_groups builds on).
find_groups adds the conversion to plain data, recurrent/attention handling, and the permutation
check of every group.

    python benchmarks/bench_groups.py [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch_pruning as tp
from torch import nn

from widthwise import find_groups


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet50(nn.Module):
    """torchvision's resnet50 layout (25.6 M parameters), written out (torchvision is optional)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin, stages = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * 4
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def plain_torch_pruning(model, x) -> int:
    dg = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    return sum(1 for _ in dg.get_all_groups())


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="example input is 1x3xSIZExSIZE")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = ResNet50()
    x = torch.randn(1, 3, args.size, args.size)
    n_params = sum(p.numel() for p in model.parameters())
    base = best_of(lambda: plain_torch_pruning(model, x), args.repeats)
    ours = best_of(lambda: find_groups(model, x), args.repeats)
    groups = find_groups(model, x)
    print(
        f"ResNet-50 ({n_params / 1e6:.1f} M params), input 1x3x{args.size}x{args.size}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  Torch-Pruning build + get_all_groups : {base:7.2f} s")
    print(f"  widthwise.find_groups                : {ours:7.2f} s  ({len(groups)} groups)")
    print(f"  ratio find_groups / Torch-Pruning    : {ours / base:7.2f}")


if __name__ == "__main__":
    main()
