"""find_groups' cost on the vision and state-space models of issue 13 as they grow deeper.

Hugging Face FocalNet, Swin-V2, CvT, LeViT and Mamba from tiny configs (random weights) with
1, 2, 4, 8 blocks per stage (Mamba: layers), timed (best of ``--repeats``) against Torch-Pruning's
graph build on the same model; per family the slope of log(time) against log(blocks)
(1.0 = linear) and whether anything was left out. (Torch-Pruning's build fails on CvT: nan.)

    python benchmarks/groups_scaling_vision.py [--blocks 1 2 4 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from groups_scaling import best_of, slope

from widthwise import GroupingWarning, find_groups


def build(family: str, n: int) -> tuple[torch.nn.Module, dict]:
    import transformers as T

    torch.manual_seed(0)
    img = {"pixel_values": torch.randn(1, 3, 32, 32)}
    if family == "focalnet":
        cfg = T.FocalNetConfig(image_size=32, embed_dim=16, depths=[n, n], focal_levels=[2, 2],
                               focal_windows=[3, 3], num_labels=3)  # fmt: skip
        return T.FocalNetForImageClassification(cfg).eval(), img
    if family == "swinv2":
        cfg = T.Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[n, n],
                             num_heads=[2, 4], window_size=4, num_labels=3)  # fmt: skip
        return T.Swinv2ForImageClassification(cfg).eval(), img
    if family == "cvt":
        cfg = T.CvtConfig(embed_dim=[16, 32, 32], num_heads=[1, 2, 2], depth=[n, n + 1, n + 2],
                          drop_path_rate=[0.0] * 3, num_labels=3)  # fmt: skip
        return T.CvtForImageClassification(cfg).eval(), img
    if family == "levit":
        cfg = T.LevitConfig(image_size=32, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2],
                            depths=[n, n, n], key_dim=[8, 8, 8], num_labels=3)  # fmt: skip
        return T.LevitForImageClassification(cfg).eval(), img
    cfg = T.MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2 * n, state_size=4,
                        expand=2, conv_kernel=3)  # fmt: skip
    return T.MambaForCausalLM(cfg).eval(), {"input_ids": torch.randint(3, 64, (1, 6))}


FAMILIES = ("focalnet", "swinv2", "cvt", "levit", "mamba")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, 1 thread, best of {args.repeats}")
    for fam in args.families:
        print(f"\n{fam}: blocks  params  groups  torch-pruning build  find_groups  ratio  left out")
        ours_t, base_t = [], []
        for n in args.blocks:
            model, x = build(fam, n)
            params = sum(p.numel() for p in model.parameters())
            try:  # Torch-Pruning's own build fails on some of these (CvT's class token)
                base = best_of(
                    lambda m=model, x=x: tp.DependencyGraph().build_dependency(
                        m, example_inputs=x, forward_fn=lambda m, i: m(**i)[0], verbose=False
                    ),
                    args.repeats,
                )
            except Exception:
                base = float("nan")
            ours = best_of(lambda m=model, x=x: find_groups(m, x), args.repeats)
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", GroupingWarning)
                groups = find_groups(model, x)
            left = sum(issubclass(w.category, GroupingWarning) for w in said)
            base_t.append(base)
            ours_t.append(ours)
            print(
                f"{n:>14d} {params:7d} {len(groups):7d} {base * 1e3:17.1f} ms "
                f"{ours * 1e3:9.1f} ms {ours / base:6.2f}  {'yes' if left else 'no'}"
            )
        if len(args.blocks) < 2:
            continue
        blocks = [float(b) for b in args.blocks]
        tp_slope = slope(blocks, base_t) if base_t[0] == base_t[0] else float("nan")
        print(
            f"  log-log slope vs blocks: torch-pruning build {tp_slope:.2f}, "
            f"find_groups {slope(blocks, ours_t):.2f}"
        )


if __name__ == "__main__":
    main()
