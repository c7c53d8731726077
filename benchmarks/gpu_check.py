"""GPU check: the tracker on CUDA (float32 and bfloat16) gives the CPU numbers; snapshot cost.

    python benchmarks/gpu_check.py

Needs a CUDA device (exits with a message otherwise). Compares ``group_stats`` of a zoo ResNet
on the GPU with the same weights on the CPU, in float32 and in bfloat16 (computed in float32),
then times one tracker snapshot of a ResNet-50 against one ``torch._foreach_norm`` over the same
weights (the floor), both on the GPU, in the same run.
"""

from __future__ import annotations

import sys
import time

import torch


def main() -> None:
    dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"  # "cpu" dry-runs the script
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: nothing to check")
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    from widthwise import WidthTracker, find_groups, group_stats, zoo

    torch.manual_seed(0)
    cpu = zoo.ResNet("basic", [16, 32, 64], [2, 2, 2], in_channels=3)
    x = torch.randn(2, 3, 32, 32)
    groups = find_groups(cpu, x)
    ref = group_stats(cpu, groups).set_index(["group", "gate"])
    gpu = zoo.ResNet("basic", [16, 32, 64], [2, 2, 2], in_channels=3)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.to(dev)
    got = group_stats(gpu, groups).set_index(["group", "gate"])
    err = float(((got.variance - ref.variance).abs() / ref.variance).max())
    print(f"float32 cuda vs cpu: max relative variance error {err:.2e} over {len(ref)} series")
    bf = gpu.to(torch.bfloat16)
    ref_bf = group_stats(bf.float().cpu(), groups).set_index(["group", "gate"])
    got_bf = group_stats(gpu.to(torch.bfloat16), groups).set_index(["group", "gate"])
    err_bf = float(((got_bf.variance - ref_bf.variance).abs() / ref_bf.variance).max())
    print(f"bfloat16 cuda vs the same weights in float32 on cpu: max relative error {err_bf:.2e}")

    big = zoo.resnet50(num_classes=1000, stem="imagenet").to(dev)
    tracker = WidthTracker(big, torch.randn(1, 3, 64, 64, device=dev))
    weights = [p for g in tracker.groups for m in g.members
               for n, p in big.named_parameters() if n == m.param and p.ndim >= 2]  # fmt: skip
    weights = list({id(w): w for w in weights}.values())

    def timed(fn, repeats=30):
        fn()
        sync()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        return sorted(ts)[repeats // 2] * 1e3

    floor = timed(lambda: torch._foreach_norm(weights))
    snap = timed(lambda: tracker.snapshot())
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"ResNet-50 on {name}: floor {floor:.2f} ms, "
          f"snapshot {snap:.2f} ms, ratio {snap / floor:.2f}")  # fmt: skip
    print("OK" if err < 1e-5 and err_bf < 1e-3 else "MISMATCH")


if __name__ == "__main__":
    main()
