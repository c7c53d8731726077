"""find_groups on a ResNet-50-size network, against plain Torch-Pruning on the same model;
and (``--hf``) a coverage battery of Hugging Face models built from tiny configs.

Baseline: ``DependencyGraph.build_dependency`` + ``get_all_groups`` (what find_groups builds on).
find_groups adds the conversion to plain data, recurrent/attention handling, and the permutation
check of every group.

``--hf``: every model class in :data:`HF_BATTERY` that builds here from a tiny config (random
weights, no download; the first 72 entries are the original battery, the vision entries after
``clip-vision`` were added for issue 13) goes through ``find_groups(timeout=60)``; per model it prints the groups,
the left-out warning, the seconds, and an independent permutation check of every group (the
naive per-channel loops of ``tests/test_groups.py``). The last line is the share of models
grouped with nothing left out.

    python benchmarks/bench_groups.py [--size 64] [--repeats 3]
    python benchmarks/bench_groups.py --hf [--only NAME ...]
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


# -- the Hugging Face battery (--hf) ----------------------------------------------------------

#: sizes applied to every config that has the attribute (a tiny but non-degenerate model)
_TINY = dict(
    vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=48, max_position_embeddings=64, num_labels=3, pad_token_id=0,
    d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
    decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, n_embd=32, n_layer=2,
    n_head=4, n_positions=64, d_ff=48, d_kv=8, num_layers=2, num_heads=4, n_ctx=64,
    decoder_start_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
)  # fmt: skip
_TEXT, _SEQ2SEQ, _IMAGE, _AUDIO, _WAVE = "text", "seq2seq", "image", "audio", "wave"
_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
_VIT = dict(_SMALL, image_size=32, patch_size=8, num_channels=3)
_CNN = dict(
    image_size=32,
    num_channels=3,
    hidden_sizes=[8, 16],
    depths=[1, 1],
    embedding_size=8,
    num_stages=2,
)

_WAV = dict(_SMALL, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)  # fmt: skip

#: name: (model class in transformers, config overrides, inputs)
HF_BATTERY: dict[str, tuple[str, dict, str]] = {
    "bert": ("BertForSequenceClassification", {}, _TEXT),
    "distilbert": ("DistilBertForSequenceClassification", dict(dim=32, hidden_dim=48, n_heads=4, n_layers=2), _TEXT),
    "roberta": ("RobertaForSequenceClassification", {}, _TEXT),
    "xlm-roberta": ("XLMRobertaForSequenceClassification", {}, _TEXT),
    "albert": ("AlbertForSequenceClassification", dict(embedding_size=16), _TEXT),
    "electra": ("ElectraForSequenceClassification", dict(embedding_size=16), _TEXT),
    "deberta": ("DebertaForSequenceClassification", {}, _TEXT),
    "deberta-v2": ("DebertaV2ForSequenceClassification", {}, _TEXT),
    "mpnet": ("MPNetForSequenceClassification", {}, _TEXT),
    "convbert": ("ConvBertForSequenceClassification", dict(embedding_size=32), _TEXT),
    "squeezebert": ("SqueezeBertForSequenceClassification", dict(embedding_size=32), _TEXT),
    "mobilebert": ("MobileBertForSequenceClassification", dict(embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16, num_feedforward_networks=2), _TEXT),
    "ernie": ("ErnieForSequenceClassification", {}, _TEXT),
    "roformer": ("RoFormerForSequenceClassification", dict(embedding_size=32), _TEXT),
    "funnel": ("FunnelForSequenceClassification", dict(num_hidden_layers=None, block_sizes=[1, 1], d_head=8, d_inner=48, num_decoder_layers=1), _TEXT),
    "xlnet": ("XLNetForSequenceClassification", dict(d_inner=48, n_layer=2, max_position_embeddings=None), _TEXT),
    "gpt2": ("GPT2LMHeadModel", {}, _TEXT),
    "gpt-neo": ("GPTNeoForCausalLM", dict(attention_types=[[["global", "local"], 1]], window_size=8), _TEXT),
    "gptj": ("GPTJForCausalLM", dict(rotary_dim=4), _TEXT),
    "gpt-neox": ("GPTNeoXForCausalLM", {}, _TEXT),
    "opt": ("OPTForCausalLM", dict(ffn_dim=48, word_embed_proj_dim=32), _TEXT),
    "bloom": ("BloomForCausalLM", {}, _TEXT),
    "falcon": ("FalconForCausalLM", {}, _TEXT),
    "phi": ("PhiForCausalLM", {}, _TEXT),
    "phi3": ("Phi3ForCausalLM", dict(num_key_value_heads=2), _TEXT),
    "gemma": ("GemmaForCausalLM", dict(head_dim=8, num_key_value_heads=2), _TEXT),
    "gemma2": ("Gemma2ForCausalLM", dict(head_dim=8, num_key_value_heads=2), _TEXT),
    "llama": ("LlamaForCausalLM", dict(num_key_value_heads=2), _TEXT),
    "mistral": ("MistralForCausalLM", dict(num_key_value_heads=2), _TEXT),
    "mixtral": ("MixtralForCausalLM", dict(num_key_value_heads=2, num_local_experts=2, num_experts_per_tok=1), _TEXT),
    "qwen2": ("Qwen2ForCausalLM", dict(num_key_value_heads=2), _TEXT),
    "qwen3": ("Qwen3ForCausalLM", dict(num_key_value_heads=2, head_dim=8), _TEXT),
    "olmo": ("OlmoForCausalLM", {}, _TEXT),
    "stablelm": ("StableLmForCausalLM", dict(num_key_value_heads=4), _TEXT),
    "starcoder2": ("Starcoder2ForCausalLM", dict(num_key_value_heads=2), _TEXT),
    "codegen": ("CodeGenForCausalLM", dict(rotary_dim=4), _TEXT),
    "mpt": ("MptForCausalLM", {}, _TEXT),
    "biogpt": ("BioGptForCausalLM", {}, _TEXT),
    "xglm": ("XGLMForCausalLM", dict(ffn_dim=48), _TEXT),
    "mamba": ("MambaForCausalLM", dict(state_size=4, expand=2, conv_kernel=3), _TEXT),
    "rwkv": ("RwkvForCausalLM", dict(attention_hidden_size=32, context_length=64), _TEXT),
    "bart": ("BartForConditionalGeneration", {}, _SEQ2SEQ),
    "t5": ("T5ForConditionalGeneration", {}, _SEQ2SEQ),
    "mbart": ("MBartForConditionalGeneration", {}, _SEQ2SEQ),
    "pegasus": ("PegasusForConditionalGeneration", {}, _SEQ2SEQ),
    "marian": ("MarianMTModel", {}, _SEQ2SEQ),
    "m2m100": ("M2M100ForConditionalGeneration", {}, _SEQ2SEQ),
    "whisper": ("WhisperForConditionalGeneration", dict(num_mel_bins=8, max_source_positions=8, max_target_positions=16), _AUDIO),
    "vit": ("ViTForImageClassification", _VIT, _IMAGE),
    "deit": ("DeiTForImageClassification", _VIT, _IMAGE),
    "beit": ("BeitForImageClassification", _VIT, _IMAGE),
    "dinov2": ("Dinov2ForImageClassification", _VIT, _IMAGE),
    "swin": ("SwinForImageClassification", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4), _IMAGE),
    "swinv2": ("Swinv2ForImageClassification", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4), _IMAGE),
    "convnext": ("ConvNextForImageClassification", _CNN, _IMAGE),
    "convnextv2": ("ConvNextV2ForImageClassification", _CNN, _IMAGE),
    "resnet": ("ResNetForImageClassification", _CNN, _IMAGE),
    "regnet": ("RegNetForImageClassification", dict(_CNN, groups_width=4), _IMAGE),
    "bit": ("BitForImageClassification", dict(_CNN, hidden_sizes=[128, 256], embedding_size=32), _IMAGE),
    "mobilenet-v1": ("MobileNetV1ForImageClassification", dict(image_size=32, depth_multiplier=0.25), _IMAGE),
    "mobilenet-v2": ("MobileNetV2ForImageClassification", dict(image_size=32, depth_multiplier=0.25), _IMAGE),
    "efficientnet": ("EfficientNetForImageClassification", dict(image_size=32, width_coefficient=1.0, depth_coefficient=0.25, hidden_dim=1280), _IMAGE),
    "mobilevit": ("MobileViTForImageClassification", dict(image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64]), _IMAGE),
    "poolformer": ("PoolFormerForImageClassification", dict(image_size=32, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1]), _IMAGE),
    "levit": ("LevitForImageClassification", dict(image_size=32, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8]), _IMAGE),
    "segformer": ("SegformerForImageClassification", dict(image_size=32, hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1]), _IMAGE),
    "cvt": ("CvtForImageClassification", dict(embed_dim=[16, 32, 32], num_heads=[1, 2, 2], depth=[1, 2, 3], drop_path_rate=[0.0, 0.0, 0.0]), _IMAGE),
    "pvt": ("PvtForImageClassification", dict(image_size=32, hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1]), _IMAGE),
    "focalnet": ("FocalNetForImageClassification", dict(image_size=32, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3]), _IMAGE),
    "clip-vision": ("CLIPVisionModelWithProjection", _VIT, _IMAGE),
    "swinv2-shift": ("Swinv2ForImageClassification", dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4), _IMAGE),
    "mobilevitv2": ("MobileViTV2ForImageClassification", dict(image_size=64, width_multiplier=0.25), _IMAGE),
    "swiftformer": ("SwiftFormerForImageClassification", dict(image_size=32, depths=[1, 1, 1, 1], embed_dims=[8, 16, 16, 32]), _IMAGE),
    "pvt-v2": ("PvtV2ForImageClassification", dict(image_size=32, hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 2, 2, 4], depths=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2]), _IMAGE),
    "dinov2-reg": ("Dinov2WithRegistersForImageClassification", _VIT, _IMAGE),
    "siglip-vision": ("SiglipVisionModel", _VIT, _IMAGE),
    "data2vec-vision": ("Data2VecVisionForImageClassification", _VIT, _IMAGE),
    "vitdet": ("VitDetModel", dict(_VIT, pretrain_image_size=32), _IMAGE),
    "ijepa": ("IJepaForImageClassification", _VIT, _IMAGE),
    "vit-msn": ("ViTMSNForImageClassification", _VIT, _IMAGE),
    "dinov3-convnext": ("DINOv3ConvNextModel", dict(hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1]), _IMAGE),
    "wav2vec2": ("Wav2Vec2ForSequenceClassification", _WAV, _WAVE),
    "hubert": ("HubertForSequenceClassification", _WAV, _WAVE),
}  # fmt: skip


def build_hf(name: str):
    """(model, example inputs) for one battery entry; random weights, no download."""
    import transformers

    cls_name, extra, kind = HF_BATTERY[name]
    model_cls = getattr(transformers, cls_name)
    config_cls = model_cls.config_class
    defaults = config_cls()
    tiny = _TINY if kind in (_TEXT, _SEQ2SEQ, _AUDIO) else {"num_labels": 3}
    kw = {k: v for k, v in tiny.items() if hasattr(defaults, k)}
    kw.update(extra)
    kw = {k: v for k, v in kw.items() if v is not None}  # None: leave the config's default
    torch.manual_seed(0)
    cfg = config_cls(**kw)
    model = model_cls(cfg).eval()
    g = torch.Generator().manual_seed(0)
    if kind in (_TEXT, _SEQ2SEQ):
        ids = torch.randint(3, cfg.vocab_size, (1, 7), generator=g)
        x = {"input_ids": ids}
        if kind == _SEQ2SEQ:
            x["decoder_input_ids"] = ids[:, :4]
    elif kind == _IMAGE:
        size = getattr(cfg, "image_size", 32)
        size = size if isinstance(size, int) else 32
        x = {"pixel_values": torch.randn(1, 3, size, size, generator=g)}
    elif kind == _AUDIO:
        frames = 2 * cfg.max_source_positions
        x = {
            "input_features": torch.randn(1, cfg.num_mel_bins, frames, generator=g),
            "decoder_input_ids": torch.tensor([[0, 5, 6]]),
        }
    else:
        x = {"input_values": torch.randn(1, 400, generator=g)}
    return model, x


def wrong_groups(model, x, groups) -> list[str]:
    """Names of the groups whose permutation changes the output (naive per-channel loops of
    ``tests/test_groups.py`` on fresh random weights, compared element-wise): all groups at
    once, then, on a failure, each group alone."""
    import copy
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_groups import _permute_copy
    from widthwise.groups.verify import call_model, out_tensors

    def _outputs(model):
        return torch.cat([t.flatten() for t in out_tensors(call_model(model, x))])

    model = copy.deepcopy(model)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5 if p.ndim > 1 else 4.0))
    model.eval()  # after the new weights: eval() clears attention-bias caches (timm, HF LeViT)
    with torch.no_grad():
        ref = _outputs(model)

        def same(gs, seed):
            out = _outputs(_permute_copy(model, gs, seed=seed).eval())
            return bool(torch.allclose(out, ref, rtol=1e-4, atol=1e-5))

        if same(groups, 0):
            return []
        return [g.name for k, g in enumerate(groups) if not same([g], k + 1)]


def _permutation_check(model, x, groups) -> str:
    """'pass', or the first group whose permutation changes the output."""
    wrong = wrong_groups(model, x, groups)
    return f"FAIL {wrong[0]}" if wrong else "pass"


def hf_battery(only: list[str], verbose: bool) -> None:
    import warnings

    from widthwise import GroupingWarning

    names = only or list(HF_BATTERY)
    clean = grouped = 0
    print(f"{'model':14s} {'groups':>6s} {'left':>4s} {'secs':>6s}  check  left out")
    for name in names:
        try:
            model, x = build_hf(name)
        except Exception as e:  # a config this transformers version cannot build: not counted
            print(f"{name:14s} not built: {type(e).__name__}: {str(e).splitlines()[0][:90]}")
            continue
        grouped += 1
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                groups = find_groups(model, x, timeout=60)
                error = ""
            except Exception as e:
                groups, error = [], f"{type(e).__name__}: {str(e)[:200]}"
        secs = time.perf_counter() - t
        msgs = [str(r.message) for r in record if r.category is GroupingWarning]
        left = [m for m in msgs if "left out" in m]
        check = _permutation_check(model, x, groups) if groups else "-"
        ok = not left and not error and groups and check == "pass"
        clean += bool(ok)
        n_left = left[0].split("left out ")[1].split(" ")[0] if left else "0"
        why = error or (left[0] if left else (msgs[0] if msgs else ""))
        print(
            f"{name:14s} {len(groups):6d} {n_left:>4s} {secs:6.1f}  {check:5s}  "
            f"{why if verbose else why[:150]}"
        )
    print(
        f"grouped with nothing left out: {clean}/{grouped} = {clean / max(grouped, 1):.0%} "
        f"(transformers {__import__('transformers').__version__})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="example input is 1x3xSIZExSIZE")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hf", action="store_true", help="the Hugging Face coverage battery")
    ap.add_argument("--only", nargs="*", default=[], help="battery entries to run (default: all)")
    ap.add_argument("--verbose", action="store_true", help="print whole warnings")
    args = ap.parse_args()
    if args.hf:
        torch.set_num_threads(1)
        hf_battery(args.only, args.verbose)
        return
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
