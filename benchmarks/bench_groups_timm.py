"""find_groups on timm's image models: one model per timm module (its smallest registered
variant), random weights, no download. A battery nobody here wrote the patterns from.

timm is not a dependency of widthwise: install it without its dependencies (its torchvision
would be the registry's CUDA build, which fails to import beside the CPU torch), and this script
puts a stand-in torchvision (``benchmarks/_stubs``) on the path first:

    pip install --no-deps timm==1.0.31
    OMP_NUM_THREADS=1 python benchmarks/bench_groups_timm.py --out timm.jsonl [--jobs 2] [--only NAME ...]

Each model runs in its own forked process under a wall-clock bound (``--limit`` seconds; a model past it
counts as a hang). Per model: ``find_groups(model, x, timeout=60)`` on one example of the model's
default input size, the groups, the left-out warning, the seconds, and an independent
permutation check: every returned group permuted at once with the naive per-channel loops of
``tests/test_groups.py`` on fresh random weights, outputs compared element-wise
(``rtol=1e-4, atol=1e-5``); on a failure, each group alone. Rows go to ``--out`` as JSON lines
(rerun with the same file to continue). The last line: models grouped with nothing left out,
crashes, hangs, wrong groups.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: The smallest registered model of each of timm 1.0.31's 98 model modules (by parameter count,
#: built on the meta device: ``--select`` recomputes it).
BATTERY = [
    "beit_base_patch16_224",
    "halonet_h1",
    "test_byobnet",
    "cait_xxs24_224",
    "coat_tiny",
    "convit_tiny",
    "convmixer_768_32",
    "test_convnext",
    "cpubone_nano",
    "crossvit_tiny_240",
    "csatv2",
    "cs3darknet_focus_s",
    "cspnext_tiny",
    "davit_tiny",
    "deepseek_vit_412m",
    "deit_tiny_patch16_224",
    "densenet121",
    "dla46x_c",
    "dpn48b",
    "edgenext_xx_small",
    "efficientformer_l1",
    "efficientformerv2_s0",
    "test_efficientnet",
    "efficientvim_m1",
    "efficientvit_b0",
    "efficientvit_m0",
    "vit_tiny_patch16_dinov3_qkvb",
    "fasternet_t0",
    "fastvit_t8",
    "focalnet_tiny_srf",
    "gcvit_xxtiny",
    "gemma4_vit_167m",
    "ghostnet_050",
    "hardcorenas_b",
    "hgnetv2_b0",
    "hiera_tiny_224",
    "sam2_hiera_tiny",
    "hrnet_w18_small",
    "iformer_t",
    "inception_next_atto",
    "inception_resnet_v2",
    "inception_v3",
    "inception_v4",
    "lcnetv2_small",
    "levit_128s",
    "lowformer_b0",
    "test_mambaout",
    "test_coatnet",
    "poolformerv2_s12",
    "gmlp_ti16_224",
    "mobilenetv3_small_050",
    "mobilenetv5_base",
    "mobilevit_xxs",
    "mvitv2_tiny",
    "naflexvit_base_patch16_parfac_gap",
    "nasnetalarge",
    "nest_tiny",
    "nextvit_small",
    "test_nfnet",
    "pit_ti_224",
    "pnasnet5large",
    "pvt_v2_b0",
    "qwen3_vit_88m",
    "rdnet_tiny",
    "regnetx_002",
    "repghostnet_050",
    "repvit_m1",
    "res2next50",
    "resnest14d",
    "test_resnet",
    "resnetv2_18",
    "rexnet_100",
    "selecsls42",
    "legacy_seresnet18",
    "sequencer2d_s",
    "shvit_s1",
    "skresnet18",
    "starnet_s050",
    "swiftformer_xs",
    "swin_tiny_patch4_window7_224",
    "swinv2_tiny_window8_256",
    "swinv2_cr_tiny_224",
    "tiny_vit_5m_224",
    "tnt_s_legacy_patch16_224",
    "tresnet_m",
    "twins_svt_small",
    "vgg11",
    "visformer_tiny",
    "test_vit",
    "vit_tiny_r_s16_p8_224",
    "test_vit_relpos",
    "samvit_base_patch16_224",
    "vitamin_small_224",
    "volo_d1_224",
    "ese_vovnet19b_slim_dw",
    "legacy_xception",
    "xception41p",
    "xcit_nano_12_p8_224",
]

#: A second battery: another model of each module, drawn by ``--variants`` (seed 0, at most 30M
#: parameters; 26 modules have no other model under the cap). Drawn after the first battery's
#: fixes and measured before any fix written from it.
VARIANTS = [
    "lambda_resnet26t",
    "gcresnext26ts",
    "cait_xxs24_384",
    "coat_lite_small",
    "convit_small",
    "convmixer_1024_20_ks9_p14",
    "convnext_tiny",
    "cpubone_s0",
    "crossvit_9_240",
    "csatv2_21m",
    "cspdarknet53",
    "cspnext_m",
    "deit3_small_patch16_384",
    "densenet161",
    "dla46_c",
    "dpn68",
    "edgenext_small",
    "efficientformerv2_l",
    "efficientnetv2_s",
    "efficientvim_m3_dist",
    "efficientvit_b2",
    "efficientvit_m4",
    "vit_small_patch16_rope_ape_224",
    "fasternet_t1",
    "fastvit_t12",
    "focalnet_tiny_lrf",
    "gcvit_xtiny",
    "ghostnetv3_130",
    "hardcorenas_e",
    "hgnet_tiny",
    "hrnet_w18_small_v2",
    "iformer_l",
    "inception_next_tiny",
    "lcnetv2_base",
    "levit_conv_128s",
    "lowformer_b1",
    "mambaout_femto",
    "maxvit_pico_rw_256",
    "caformer_s18",
    "mixer_s16_224",
    "lcnet_075",
    "mobilevitv2_100",
    "nest_tiny_jx",
    "eca_nfnet_l0",
    "pit_s_distilled_224",
    "pvt_v2_b2",
    "regnetz_040_h",
    "repghostnet_150",
    "repvit_m0_9",
    "res2net50_48w_2s",
    "resnest50d_1s4x24d",
    "resnext50d_32x4d",
    "resnetv2_50x1_bit",
    "rexnet_150",
    "legacy_seresnet34",
    "shvit_s4",
    "skresnet50d",
    "starnet_s3",
    "swiftformer_l1",
    "swin_s3_tiny_224",
    "swinv2_tiny_window16_256",
    "swinv2_cr_tiny_384",
    "tiny_vit_11m_224",
    "tnt_s_patch16_224",
    "twins_pcpvt_small",
    "vit_small_patch14_reg4_dinov2",
    "vit_tiny_r_s16_p8_384",
    "vit_relpos_small_patch16_rpn_224",
    "volo_d1_384",
    "ese_vovnet39b",
    "xception41",
    "xcit_nano_12_p16_224",
]


#: A third battery, drawn last (``--variants 1``: seed 1, neither in ``BATTERY`` nor in
#: ``VARIANTS``, at most 30M parameters) and run once, on the final code of the stop that drew
#: it: the held-out measurement.
VARIANTS2 = [
    "lamhalobotnet50ts_256",
    "repvgg_a0",
    "cait_xs24_384",
    "coat_lite_tiny",
    "convnextv2_nano",
    "cpubone_b1_dwnorm",
    "crossvit_15_dagger_240",
    "cs3darknet_l",
    "cspnext_s",
    "deit_small_distilled_patch16_224",
    "densenet169",
    "dla34",
    "dpn68b",
    "edgenext_base",
    "efficientformerv2_s2",
    "tf_efficientnet_lite4",
    "efficientvim_m4_dist",
    "efficientvit_b1",
    "efficientvit_m2",
    "eva02_tiny_patch14_336",
    "fasternet_t2",
    "fastvit_s12",
    "gcvit_tiny",
    "ghostnetv3_100",
    "hardcorenas_f",
    "hgnetv2_b1",
    "hrnet_w18",
    "iformer_l_distilled",
    "lcnetv2_large",
    "levit_conv_192",
    "lowformer_e2",
    "mambaout_kobe",
    "maxxvitv2_nano_rw_256",
    "poolformer_s24",
    "gmixer_24_224",
    "tf_mobilenetv3_small_minimal_100",
    "mobilevitv2_050",
    "nf_ecaresnet50",
    "pit_xs_distilled_224",
    "pvt_v2_b1",
    "regnetx_004_tv",
    "repghostnet_130",
    "repvit_m3",
    "res2net50d",
    "resnest50d",
    "seresnext26t_32x4d",
    "resnetv2_50d_evos",
    "rexnetr_200",
    "legacy_seresnext50_32x4d",
    "shvit_s3",
    "skresnet34",
    "starnet_s100",
    "swiftformer_s",
    "swinv2_cr_tiny_ns_224",
    "tiny_vit_21m_384",
    "test_vit2",
    "vit_relpos_small_patch16_224",
    "ese_vovnet19b_slim",
    "xcit_tiny_12_p8_384",
]

#: A fourth battery (``--variants 2``: seed 2, in none of the three above), drawn at the start of
#: the stop after VARIANTS2's and run once on that stop's first code (the held-out measurement);
#: its failures were then fixed.
VARIANTS3 = [
    "halonet26t",
    "resnet50_mlp",
    "cait_xxs36_224",
    "coat_lite_mini",
    "convnext_atto_rms",
    "cpubone_b0_bfrobust",
    "crossvit_9_dagger_240",
    "cspresnext50",
    "cspnext_l",
    "deit3_small_patch16_224",
    "densenet201",
    "dla60",
    "edgenext_small_rw",
    "efficientformerv2_s1",
    "tf_mixnet_l",
    "efficientvim_m2",
    "efficientvit_m5",
    "eva02_tiny_patch14_224",
    "fastvit_sa24",
    "ghostnetv3_160",
    "hardcorenas_a",
    "hgnet_small",
    "hrnet_w18_ssld",
    "iformer_l2_distilled",
    "levit_256d",
    "lowformer_e1",
    "mambaout_tiny",
    "maxxvit_rmlp_tiny_rw_256",
    "poolformer_s12",
    "mixer_s32_224",
    "fbnetv3_b",
    "mobilevitv2_200",
    "nf_regnet_b1",
    "pit_ti_distilled_224",
    "pvt_v2_b2_li",
    "regnety_016",
    "repghostnet_111",
    "repvit_m1_5",
    "res2net50_14w_8s",
    "resnest26d",
    "resnetaa34d",
    "resnetv2_34",
    "rexnetr_100",
    "legacy_seresnet50",
    "shvit_s2",
    "skresnet50",
    "starnet_s150",
    "swiftformer_l3",
    "tiny_vit_21m_512",
    "test_vit4",
    "vit_srelpos_small_patch16_224",
    "ese_vovnet39b_evos",
    "xcit_tiny_24_p16_384",
]


def _import_timm():
    sys.path.insert(0, str(HERE / "_stubs"))
    import timm

    return timm


def select() -> list[str]:
    """The smallest model of each timm module, counted on the meta device."""
    import torch

    timm = _import_timm()
    from timm.models import _registry

    smallest: dict[str, tuple[int, str]] = {}
    for name in timm.list_models():
        module = _registry.model_entrypoint(name).__module__.rpartition(".")[2]
        try:
            with torch.device("meta"):
                n = sum(p.numel() for p in timm.create_model(name).parameters())
        except Exception:
            continue
        if module not in smallest or n < smallest[module][0]:
            smallest[module] = (n, name)
    return [name for _, (_, name) in sorted(smallest.items())]


def variants(seed: int = 0, max_params: float = 30e6) -> list[str]:
    """Another model of each timm module, drawn at random (seeded) among its registered models
    other than ``BATTERY``'s (and, from seed 1, ``VARIANTS``', from seed 2 ``VARIANTS2``', from seed 3 ``VARIANTS3``') and under ``max_params``
    parameters (counted on the meta device).

    A second battery: the same modules' code, other configurations (sizes, rotary or relative
    positions, register tokens, other block types).
    """
    import random

    import torch

    timm = _import_timm()
    from timm.models import _registry

    by_module: dict[str, list[str]] = {}
    for name in timm.list_models():
        module = _registry.model_entrypoint(name).__module__.rpartition(".")[2]
        by_module.setdefault(module, []).append(name)
    rng = random.Random(seed)
    chosen = []
    for module in sorted(by_module):
        taken = set(BATTERY) | (set(VARIANTS) if seed >= 1 else set())
        taken |= set(VARIANTS2) if seed >= 2 else set()
        taken |= set(VARIANTS3) if seed >= 3 else set()
        names = [n for n in sorted(by_module[module]) if n not in taken]
        rng.shuffle(names)
        for name in names:
            try:
                with torch.device("meta"):
                    n = sum(p.numel() for p in timm.create_model(name).parameters())
            except Exception:
                continue
            if n <= max_params:
                chosen.append(name)
                break
    return chosen


def one(name: str) -> dict:
    """Build, group and check one model (runs in a child process)."""
    import torch

    timm = _import_timm()
    row: dict = {"model": name}
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    return group_row(row, model, x)


def group_row(row: dict, model, x) -> dict:
    """``row`` with the measurement of one model: parameters, seconds, groups, left-out and other
    warnings, and the groups the independent permutation check finds wrong."""
    import warnings

    from widthwise import GroupingWarning, find_groups

    row["params"] = sum(p.numel() for p in model.parameters())
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            groups = find_groups(model, x, timeout=60)
        except Exception as e:
            groups, row["error"] = [], f"{type(e).__name__}: {str(e)[:300]}"
    row["secs"] = round(time.perf_counter() - t, 2)
    msgs = [str(r.message) for r in record if issubclass(r.category, GroupingWarning)]
    row["groups"] = len(groups)
    row["left"] = [m for m in msgs if "left out" in m]
    row["warnings"] = [m for m in msgs if "left out" not in m]
    if groups:
        from bench_groups import wrong_groups

        row["wrong"] = wrong_groups(model, x, groups)
    return row


def _child(one_fn: Callable[[str], dict], name: str, conn) -> None:
    try:
        row = one_fn(name)
    except BaseException as e:  # reported as a crash of this model, not of the battery
        row = {"model": name, "crash": f"{type(e).__name__}: {str(e)[:300]}"}
    conn.send(json.dumps(row))
    conn.close()


def run_battery(
    one_fn: Callable[[str], dict], names: list[str], out: Path, jobs: int, limit: float
) -> None:
    """Run ``one_fn(name)`` for every name not yet in ``out`` (JSON lines, resumable), each in
    a forked child (the parent has imported the heavy libraries once), at most ``jobs`` at once,
    each killed after ``limit`` wall seconds (a hang)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    done = {json.loads(line)["model"] for line in out.open()} if out.exists() else set()
    todo = [n for n in names if n not in done]
    running: list[tuple[str, Any, Any, float]] = []
    while todo or running:
        while todo and len(running) < jobs:
            name = todo.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(one_fn, name, send), daemon=True)
            proc.start()
            send.close()
            running.append((name, proc, recv, time.monotonic()))
        time.sleep(0.2)
        for item in list(running):
            name, proc, recv, start = item
            if recv.poll():
                try:
                    row = json.loads(recv.recv())
                except EOFError:
                    row = None
                proc.join()
                if row is None:
                    row = {"model": name, "crash": f"exit {proc.exitcode}"}
            elif proc.is_alive() and time.monotonic() - start < limit:
                continue
            elif proc.is_alive():
                proc.kill()
                proc.join()
                row = {"model": name, "hang": f"still running after {limit:g} s"}
            else:
                row = {"model": name, "crash": f"exit {proc.exitcode}"}
            recv.close()
            running.remove(item)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(_line(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_groups_timm.jsonl", help="JSON lines, resumable")
    ap.add_argument("--only", nargs="*", default=[], help="timm model names (default: BATTERY)")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once")
    ap.add_argument("--limit", type=float, default=600, help="wall seconds per model")
    ap.add_argument("--select", action="store_true", help="print the battery anew and exit")
    ap.add_argument(
        "--variants",
        type=int,
        metavar="SEED",
        help="draw another battery (seed 0: VARIANTS, 1: VARIANTS2, 2: VARIANTS3), print, exit",
    )
    ap.add_argument(
        "--battery", choices=["smallest", "variants", "variants2", "variants3"], default="smallest"
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    if args.select:
        print(" ".join(select()))
        return
    if args.variants is not None:
        print(" ".join(variants(args.variants)))
        return
    batteries = {
        "smallest": BATTERY,
        "variants": VARIANTS,
        "variants2": VARIANTS2,
        "variants3": VARIANTS3,
    }
    names = args.only or batteries[args.battery]
    _import_timm()
    import widthwise  # noqa: F401  (imported once, before the children fork)

    run_battery(one, names, Path(args.out), args.jobs, args.limit)
    out = Path(args.out)
    summary([json.loads(line) for line in out.open() if json.loads(line)["model"] in set(names)])


def _clean(row: dict) -> bool:
    return bool(row.get("groups")) and not (
        row.get("left") or row.get("error") or row.get("wrong") or row.get("hang")
        or row.get("crash")
    )  # fmt: skip


def _line(row: dict) -> str:
    why = (
        row.get("hang") or row.get("crash") or row.get("error") or row.get("not_built")
        or (f"WRONG {row['wrong']}" if row.get("wrong") else "")
        or (row["left"][0] if row.get("left") else "")
    )  # fmt: skip
    mark = "ok" if _clean(row) else "--"
    return (
        f"{mark} {row['model'][:34]:34s} {row.get('params', 0) / 1e6:7.1f}M "
        f"{row.get('groups', 0):4d} groups {row.get('secs', 0):6.1f} s  {why[:160]}"
    )


def summary(rows: list[dict]) -> None:
    n = len(rows)
    clean = sum(map(_clean, rows))
    print(
        f"grouped with nothing left out: {clean}/{n} = {clean / max(n, 1):.0%}; "
        f"crashes {sum(bool(r.get('crash') or r.get('error')) for r in rows)}, "
        f"hangs {sum(bool(r.get('hang')) for r in rows)}, "
        f"models with a wrong group {sum(bool(r.get('wrong')) for r in rows)}, "
        f"median find_groups {sorted(r.get('secs', 0) for r in rows)[n // 2] if n else 0:.1f} s"
    )


if __name__ == "__main__":
    main()
