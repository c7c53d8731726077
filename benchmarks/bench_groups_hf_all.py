"""find_groups on every Hugging Face model type outside the two hand-configured lists
(``bench_groups.HF_BATTERY``, ``bench_groups_text.HF_TEXT_EXTRA``): a held-out battery.

One class per model type of transformers' auto mappings (causal LM, else sequence
classification, else sequence-to-sequence, else image classification), built from its default
config shrunk by generic rules only — the sizes of ``bench_groups._TINY`` on attributes the config
has, one block per stage of a vision model — with random weights, no download. Nothing here is
tuned per model: a type whose config does not build or run with these rules is reported as
"not built" and not counted. Each model runs in its own process under a wall bound, with the
same measurement and independent permutation check as ``bench_groups_timm.py``:

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_groups_hf_all.py --out hf.jsonl --jobs 2

``--variant``: a second, held-out battery over every model type (the hand-configured ones too):
the class of the last mapping that has the type (sequence classification before causal LM),
other sizes (hidden 48 in 6 heads of 8, one key/value head where the config has the field, FFN
80, untied embeddings) — the same generic rules otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_groups as B  # noqa: E402
import bench_groups_text as BT  # noqa: E402
import bench_groups_timm as BTIMM  # noqa: E402

#: auto mappings in order of preference, and the inputs each class takes
_MAPPINGS = [
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", B._TEXT),
    ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", B._TEXT),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", B._SEQ2SEQ),
    ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", B._IMAGE),
]


#: the sizes of ``--variant`` (over ``bench_groups._TINY``)
_VARIANT = dict(
    hidden_size=48, num_attention_heads=6, intermediate_size=80, d_model=48,
    encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=80, decoder_ffn_dim=80,
    n_embd=48, n_head=6, d_ff=80, num_heads=6, tie_word_embeddings=False,
)  # fmt: skip
VARIANT = False  # set by --variant before the children fork

#: larger models after shrinking are not built (memory: two run at once beside other work)
MAX_PARAMS = 50e6


def candidates() -> dict[str, tuple[str, str]]:
    """model type: (class name, inputs), for types no hand-configured list covers."""
    from transformers.models.auto import modeling_auto

    if VARIANT:
        last: dict[str, tuple[str, str]] = {}
        for mapping, kind in _MAPPINGS[::-1]:
            for model_type, cls in getattr(modeling_auto, mapping).items():
                last.setdefault(
                    model_type, (cls[0] if isinstance(cls, (list, tuple)) else cls, kind)
                )
        return dict(sorted(last.items()))
    covered = {cls for cls, _, _ in B.HF_BATTERY.values()}
    covered |= {cls for cls, _, _ in BT.HF_TEXT_EXTRA.values()}
    covered_types: set[str] = set()
    chosen: dict[str, tuple[str, str]] = {}
    for mapping, kind in _MAPPINGS:
        for model_type, cls in getattr(modeling_auto, mapping).items():
            if isinstance(cls, (list, tuple)):
                cls = cls[0]
            if cls in covered:
                covered_types.add(model_type)
            chosen.setdefault(model_type, (cls, kind))
    return {t: v for t, v in sorted(chosen.items()) if t not in covered_types}


def _shrink(defaults, kind: str) -> dict:
    """Generic size overrides for one config (attributes it has only)."""
    sizes = {**B._TINY, **_VARIANT} if VARIANT else B._TINY
    kw = {k: v for k, v in sizes.items() if hasattr(defaults, k)}
    if kind == B._IMAGE:
        kw = {k: v for k, v in kw.items() if k in ("num_hidden_layers", "num_labels")}
        if isinstance(getattr(defaults, "depths", None), (list, tuple)):
            kw["depths"] = [1] * len(defaults.depths)
        if isinstance(getattr(defaults, "image_size", None), int):
            kw["image_size"] = 64
    for key in ("num_key_value_heads", "num_kv_heads", "multi_query_group_num"):
        if isinstance(getattr(defaults, key, None), int):
            kw[key] = 1 if VARIANT else 2  # grouped-query attention where the model has it
    if isinstance(getattr(defaults, "head_dim", None), int):
        kw["head_dim"] = 8
    return kw


def build(model_type: str):
    import transformers

    cls_name, kind = candidates()[model_type]
    model_cls = getattr(transformers, cls_name)
    config_cls = model_cls.config_class
    defaults = config_cls()
    config = config_cls(**_shrink(defaults, kind))
    with torch.device("meta"):  # nested configs (multimodal) are not shrunk: skip what stays big
        n = sum(p.numel() for p in model_cls(config).parameters())
    if n > MAX_PARAMS:
        raise ValueError(f"the generic rules leave it at {n / 1e6:.0f}M parameters")
    torch.manual_seed(0)
    model = model_cls(config).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    if kind == B._IMAGE:
        size = cfg.image_size if isinstance(getattr(cfg, "image_size", None), int) else 64
        channels = getattr(cfg, "num_channels", 3)
        x = {"pixel_values": torch.randn(1, channels, size, size, generator=g)}
    else:
        ids = torch.randint(3, min(cfg.vocab_size, 64), (1, 7), generator=g)
        x = {"input_ids": ids}
        if kind == B._SEQ2SEQ:
            x["decoder_input_ids"] = ids[:, :4]
    with torch.no_grad():
        model(**x)  # a config these rules cannot run is "not built", not a grouping failure
    return cls_name, model, x


def one(model_type: str) -> dict:
    row: dict = {"model": model_type}
    try:
        row["class"], model, x = build(model_type)
    except Exception as e:
        row["not_built"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        return row
    return BTIMM.group_row(row, model, x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_groups_hf_all.jsonl", help="JSON lines, resumable")
    ap.add_argument("--only", nargs="*", default=[], help="model types (default: all candidates)")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once")
    ap.add_argument("--limit", type=float, default=300, help="wall seconds per model")
    ap.add_argument("--list", action="store_true", help="print the candidates and exit")
    ap.add_argument("--variant", action="store_true", help="the second, held-out battery")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    global VARIANT
    VARIANT = args.variant
    if args.one:
        print(json.dumps(one(args.one)))
        return
    names = args.only or list(candidates())
    if args.list:
        print(" ".join(names))
        return
    out = Path(args.out)
    import transformers  # noqa: F401  (imported once, before the children fork)

    import widthwise  # noqa: F401

    BTIMM.run_battery(one, names, out, args.jobs, args.limit)
    rows = [json.loads(line) for line in out.open()]
    rows = [r for r in rows if r["model"] in set(names)]
    built = [r for r in rows if "not_built" not in r]
    print(f"{len(rows) - len(built)} of {len(rows)} model types not built by the generic rules")
    BTIMM.summary(built)


if __name__ == "__main__":
    main()
