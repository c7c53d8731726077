"""Small reference architectures shared by the test suite.

Every builder returns ``(model, example_inputs)``; models are tiny (CPU, milliseconds) and
deterministic (seeded). ``example_inputs`` is a tensor, a tuple of tensors, or a dict of keyword
arguments (Hugging Face models).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHS",
    "channel_shuffle_cnn",
    "depthwise_cnn",
    "groupnorm_cnn",
    "gru_model",
    "handwritten_attention",
    "hf_bert_tiny",
    "hf_vit_tiny",
    "layernorm_mlp",
    "lstm_model",
    "mha_model",
    "mlp",
    "raw_param_linear",
    "resnet_small",
    "unet_concat",
    "untraceable",
    "vgg_bn_flatten",
]


def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# plain feed-forward


def mlp(seed: int = 0):
    """8 -> 16 -> 12 -> 3. Hidden groups: ``0`` (16) and ``2`` (12)."""
    g = _seed(seed)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)
    )
    return model, torch.randn(2, 8, generator=g)


def layernorm_mlp(seed: int = 0):
    """8 -> 16 (LayerNorm) -> 4."""
    g = _seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 4))
    return model, torch.randn(2, 8, generator=g)


# ---------------------------------------------------------------------------------------------
# convolutional


class VGGBN(nn.Module):
    """conv-BN-ReLU-pool x2, flatten (16 channels x 2 x 2) -> Linear(64, 10) -> Linear(10, 4)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 4)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg_bn_flatten(seed: int = 0):
    g = _seed(seed)
    return VGGBN(), torch.randn(2, 3, 8, 8, generator=g)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNetSmall(nn.Module):
    """stem(8) -> layer1: 2 blocks 8->8 -> layer2: 2 blocks 8->16 (first one downsamples) -> fc."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2), BasicBlock(16, 16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet_small(seed: int = 0):
    g = _seed(seed)
    return ResNetSmall(), torch.randn(2, 3, 8, 8, generator=g)


def depthwise_cnn(seed: int = 0):
    """conv 3->8, depthwise 8 (groups=8), pointwise 8->12, pool, fc 12->4."""
    g = _seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 4),
    )
    return model, torch.randn(2, 3, 8, 8, generator=g)


def groupnorm_cnn(seed: int = 0):
    """conv 3->8 GroupNorm(4 groups), conv 8->12 GroupNorm(3 groups), pool, fc 12->4."""
    g = _seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.GroupNorm(4, 8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.GroupNorm(3, 12),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 4),
    )
    return model, torch.randn(2, 3, 8, 8, generator=g)


class UNetConcat(nn.Module):
    """enc1 (8) -> pool -> enc2 (16) -> upsample -> up (8) -> cat([up, enc1]) -> dec (8) -> head.

    The decoder's input columns ``[0, 8)`` read ``up`` and ``[8, 16)`` read ``enc1``.
    """

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 16, 3, padding=1)
        self.up = nn.Conv2d(16, 8, 3, padding=1)
        self.dec = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        u = F.relu(self.up(F.interpolate(e2, scale_factor=2.0, mode="nearest")))
        d = F.relu(self.dec(torch.cat([u, e1], dim=1)))
        return self.head(d)


def unet_concat(seed: int = 0):
    g = _seed(seed)
    return UNetConcat(), torch.randn(2, 3, 8, 8, generator=g)


# ---------------------------------------------------------------------------------------------
# attention: the hand-written blocks share how heads are split, attended and merged; what each
# block tests is how it projects q/k/v (separate, fused, from a conv, from reduced tokens)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * hd) -> (B, heads, N, hd)."""
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)


def _split_fused(x: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
    """A fused projection (B, N, parts * heads * hd) -> ``parts`` tensors (B, heads, N, hd)."""
    b, n, _ = x.shape
    return x.reshape(b, n, parts, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) [+ bias]) v, written out (not scaled_dot_product_attention)."""
    logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    return (logits if bias is None else logits + bias).softmax(-1) @ v


def _merge_heads(o: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, hd) -> (B, N, heads * hd)."""
    b, heads, n, hd = o.shape
    return o.transpose(1, 2).reshape(b, n, heads * hd)


class MHAModel(nn.Module):
    """embed Linear(6, 16) -> nn.MultiheadAttention(16, 4 heads) -> head Linear(16, 3)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a.mean(1))


def mha_model(seed: int = 0):
    g = _seed(seed)
    return MHAModel(), torch.randn(2, 5, 6, generator=g)


class HandwrittenAttention(nn.Module):
    """embed(6->16), q/k/v Linear(16->16) with 4 heads, proj Linear(16->16), residual, head."""

    def __init__(self, dim: int = 16, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(6, dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        b, t, d = h.shape
        q, k, v = (_split_heads(f(h), self.heads) for f in (self.q, self.k, self.v))
        # reshaped to the residual width d, a literal: the attention width must equal it
        h = h + self.proj(_attend(q, k, v).transpose(1, 2).reshape(b, t, d))
        return self.head(h.mean(1))


def handwritten_attention(seed: int = 0):
    g = _seed(seed)
    return HandwrittenAttention(), torch.randn(2, 5, 6, generator=g)


def hf_bert_tiny(seed: int = 0):
    """BertForSequenceClassification from a config: hidden 16, 2 layers, 2 heads, FFN 32."""
    from transformers import BertConfig, BertForSequenceClassification

    g = _seed(seed)
    cfg = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    model = BertForSequenceClassification(cfg)
    ids = torch.randint(0, cfg.vocab_size, (1, 6), generator=g)
    return model, {"input_ids": ids}


def hf_vit_tiny(seed: int = 0):
    """ViTForImageClassification from a config: 8x8 images, 4x4 patches, hidden 16, 2 layers."""
    from transformers import ViTConfig, ViTForImageClassification

    g = _seed(seed)
    cfg = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = ViTForImageClassification(cfg)
    return model, {"pixel_values": torch.randn(1, 3, 8, 8, generator=g)}


# ---------------------------------------------------------------------------------------------
# recurrent


class RecurrentModel(nn.Module):
    """embed Linear(6->10) -> 2-layer GRU/LSTM (hidden 8) -> head Linear(8->3) on the last step."""

    def __init__(self, cell: type[nn.Module]):
        super().__init__()
        self.embed = nn.Linear(6, 10)
        self.rnn = cell(10, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(self.embed(x))
        return self.head(out[:, -1])


def gru_model(seed: int = 0):
    g = _seed(seed)
    return RecurrentModel(nn.GRU), torch.randn(2, 5, 6, generator=g)


def lstm_model(seed: int = 0):
    g = _seed(seed)
    return RecurrentModel(nn.LSTM), torch.randn(2, 5, 6, generator=g)


# ---------------------------------------------------------------------------------------------
# models that cannot be grouped (fully or in part)


class RawParamLinear(nn.Module):
    """fc1 (8->16) -> F.linear with a raw nn.Parameter ``w`` (16->12) -> fc2 (12->10) -> fc3.

    Only the ``fc2`` group (10) can be grouped reliably.
    """

    def __init__(self, form: str = "linear"):
        super().__init__()
        self.form = form
        self.fc1 = nn.Linear(8, 16)
        self.w = nn.Parameter(torch.randn(12, 16) * 0.1)
        self.fc2 = nn.Linear(12, 10)
        self.fc3 = nn.Linear(10, 3)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        if self.form == "linear":
            h = F.linear(h, self.w)
        elif self.form == "einsum":
            h = torch.einsum("bi,oi->bo", h, self.w)
        else:
            h = h @ self.w.t()
        return self.fc3(F.relu(self.fc2(F.relu(h))))


def raw_param_linear(seed: int = 0, form: str = "linear"):
    """``form``: "linear" (F.linear), "einsum" or "matmul" (``h @ w.t()``)."""
    g = _seed(seed)
    return RawParamLinear(form), torch.randn(2, 8, generator=g)


class ChannelShuffleCNN(nn.Module):
    """conv 3->8, ShuffleNet channel shuffle (2 groups), conv 8->8, conv 8->12, pool, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def channel_shuffle_cnn(seed: int = 0):
    g = _seed(seed)
    return ChannelShuffleCNN(), torch.randn(2, 3, 8, 8, generator=g)


class Untraceable(nn.Module):
    """Data-dependent Python control flow that fails on the example input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if x.shape[-1] != 4:
            raise ValueError("Untraceable expects 4 features")
        return self.fc(x)


def untraceable(seed: int = 0):
    g = _seed(seed)
    return Untraceable(), torch.randn(2, 8, generator=g)


# name -> builder, for parametrised tests over the groupable architectures
ARCHS = {
    "mlp": mlp,
    "vgg_bn_flatten": vgg_bn_flatten,
    "resnet_small": resnet_small,
    "depthwise_cnn": depthwise_cnn,
    "groupnorm_cnn": groupnorm_cnn,
    "layernorm_mlp": layernorm_mlp,
    "unet_concat": unet_concat,
    "mha_model": mha_model,
    "handwritten_attention": handwritten_attention,
    "hf_bert_tiny": hf_bert_tiny,
    "hf_vit_tiny": hf_vit_tiny,
    "gru_model": gru_model,
    "lstm_model": lstm_model,
}


# ---------------------------------------------------------------------------------------------
# patterns of public architectures (issue 13), written out: torchvision/timm are not installed.
# Each reproduces one way real models couple channels; Hugging Face ones are built from tiny
# configs (no download).


def hf_gpt2_tiny(seed: int = 0):
    """GPT2LMHeadModel: Conv1D layers (weight [in, out]), fused c_attn, lm_head tied to wte."""
    from transformers import GPT2Config, GPT2LMHeadModel

    g = _seed(seed)
    cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=4)
    return GPT2LMHeadModel(cfg), {"input_ids": torch.randint(0, 50, (1, 6), generator=g)}


def hf_t5_tiny(seed: int = 0):
    """T5ForConditionalGeneration: shared embedding tied to encoder, decoder and lm_head."""
    from transformers import T5Config, T5ForConditionalGeneration

    g = _seed(seed)
    cfg = T5Config(
        vocab_size=40,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_heads=4,
        decoder_start_token_id=0,
    )
    ids = torch.randint(0, 40, (1, 5), generator=g)
    return T5ForConditionalGeneration(cfg), {"input_ids": ids, "decoder_input_ids": ids[:, :3]}


def _hf_causal(kind: str, kv_heads: int, seed: int):
    import transformers as tf

    g = _seed(seed)
    Config, Model = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
    }[kind]
    cfg = Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    return Model(cfg), {"input_ids": torch.randint(0, 40, (1, 6), generator=g)}


def hf_llama_tiny(seed: int = 0):
    """LlamaForCausalLM: RoPE attention (4 heads), SwiGLU MLP, RMSNorm."""
    return _hf_causal("llama", 4, seed)


def hf_mistral_gqa(seed: int = 0):
    """MistralForCausalLM with grouped-query attention: 4 query heads share 2 key/value heads."""
    return _hf_causal("mistral", 2, seed)


def hf_qwen2_gqa(seed: int = 0):
    """Qwen2ForCausalLM (q/k/v biases) with 4 query heads on 2 key/value heads."""
    return _hf_causal("qwen2", 2, seed)


class ResNeXtBlock(nn.Module):
    """stem 16 -> [1x1 16->16, 3x3 groups=4 16->16, 1x1 16->16] + identity -> fc."""

    def __init__(self, width: int = 16, groups: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        x = F.relu(x + self.bn3(self.conv3(y)))
        return self.fc(x.mean((2, 3)))


def resnext_block(seed: int = 0):
    g = _seed(seed)
    return ResNeXtBlock(), torch.randn(2, 3, 8, 8, generator=g)


class FusedQKVViT(nn.Module):
    """timm-style ViT block: qkv = Linear(d, 3d) -> reshape(B, N, 3, H, hd) -> permute -> unbind,
    scaled_dot_product_attention, transpose/reshape -> proj; MLP; residual stream."""

    def __init__(self, dim: int = 16, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.patch = nn.Linear(12, dim)
        self.pos = nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x) + self.pos
        q, k, v = _split_fused(self.qkv(self.norm1(x)), 3, self.heads)
        x = x + self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def fused_qkv_vit(seed: int = 0):
    g = _seed(seed)
    return FusedQKVViT(), torch.randn(2, 5, 12, generator=g)


class RawLinearBias(nn.Module):
    """fc1 -> F.linear(h, w, b) with raw weight and bias parameters -> fc2."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.w = nn.Parameter(torch.randn(12, 16) * 0.25)
        self.b = nn.Parameter(torch.randn(12) * 0.1)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(F.relu(F.linear(F.relu(self.fc1(x)), self.w, self.b)))


def raw_linear_bias(seed: int = 0):
    g = _seed(seed)
    return RawLinearBias(), torch.randn(2, 8, generator=g)


class SwiGLU(nn.Module):
    """Llama MLP: down(silu(gate(x)) * up(x)), and a fused variant (one Linear, then chunk)."""

    def __init__(self, fused: bool = False, dim: int = 8, hidden: int = 12):
        super().__init__()
        self.fused = fused
        self.embed = nn.Linear(6, dim)
        if fused:
            self.gate_up = nn.Linear(dim, 2 * hidden)
        else:
            self.gate = nn.Linear(dim, hidden)
            self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        if self.fused:
            a, b = self.gate_up(h).chunk(2, dim=-1)
        else:
            a, b = self.gate(h), self.up(h)
        return self.head(h + self.down(F.silu(a) * b))


def swiglu(seed: int = 0):
    g = _seed(seed)
    return SwiGLU(), torch.randn(2, 6, generator=g)


def swiglu_fused(seed: int = 0):
    g = _seed(seed)
    return SwiGLU(fused=True), torch.randn(2, 6, generator=g)


class GhostModule(nn.Module):
    """GhostNet: primary 1x1 conv (c/2), cheap depthwise conv on it (c/2), cat, then a 1x1."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.primary = nn.Conv2d(8, 6, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.cheap = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.out = nn.Conv2d(12, 10, 1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        a = F.relu(self.bn1(self.primary(x)))
        b = F.relu(self.bn2(self.cheap(a)))
        x = F.relu(self.out(torch.cat([a, b], dim=1)))
        return self.fc(x.mean((2, 3)))


def ghost_module(seed: int = 0):
    g = _seed(seed)
    return GhostModule(), torch.randn(2, 3, 8, 8, generator=g)


class Res2NetBlock(nn.Module):
    """Res2Net: 1x1 conv to 4 splits of 4, a 3x3 conv per split fed by the previous one, cat."""

    def __init__(self, scale: int = 4, w: int = 4):
        super().__init__()
        self.w = w
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, scale * w, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(scale * w)
        self.convs = nn.ModuleList(nn.Conv2d(w, w, 3, padding=1) for _ in range(scale - 1))
        self.conv3 = nn.Conv2d(scale * w, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        parts = torch.split(F.relu(self.bn1(self.conv1(x))), self.w, dim=1)
        outs, sp = [], None
        for i, conv in enumerate(self.convs):
            sp = parts[i] if i == 0 else sp + parts[i]
            sp = F.relu(conv(sp))
            outs.append(sp)
        outs.append(parts[-1])
        x = x + self.conv3(torch.cat(outs, dim=1))
        return self.fc(x.mean((2, 3)))


def res2net_block(seed: int = 0):
    g = _seed(seed)
    return Res2NetBlock(), torch.randn(2, 3, 8, 8, generator=g)


class CSPBlock(nn.Module):
    """CSP: 1x1 conv, chunk in two halves, one half through two convs, cat, 1x1 transition."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.trans = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x1, x2 = x.chunk(2, dim=1)
        x2 = x2 + self.b(F.relu(self.a(x2)))
        x = F.relu(self.trans(torch.cat([x1, x2], dim=1)))
        return self.fc(x.mean((2, 3)))


def csp_block(seed: int = 0):
    g = _seed(seed)
    return CSPBlock(), torch.randn(2, 3, 8, 8, generator=g)


class ScaledStdConv2d(nn.Conv2d):
    """NFNet's weight-standardised conv (timm's ScaledStdConv2d) with a per-channel ``gain``."""

    def __init__(self, cin: int, cout: int, k: int, padding: int = 0):
        super().__init__(cin, cout, k, padding=padding)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1))
        self.scale = (cin * k * k) ** -0.5

    def forward(self, x):
        w = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            weight=(self.gain * self.scale).view(-1),
            training=True,
            momentum=0.0,
            eps=1e-6,
        ).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class NFNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ScaledStdConv2d(3, 8, 3, padding=1)
        self.conv2 = ScaledStdConv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def nfnet_tiny(seed: int = 0):
    g = _seed(seed)
    return NFNetTiny(), torch.randn(2, 3, 8, 8, generator=g)


class ProjLSTM(nn.Module):
    """embed -> LSTM(hidden 8, proj_size 5, 2 layers) -> head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 10)
        self.rnn = nn.LSTM(10, 8, num_layers=2, proj_size=5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.rnn(self.embed(x))[0][:, -1])


def proj_lstm(seed: int = 0):
    g = _seed(seed)
    return ProjLSTM(), torch.randn(2, 4, 6, generator=g)


class LearnedH0GRU(nn.Module):
    """embed -> GRU(hidden 8) started from a learned nn.Parameter h0 -> head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 10)
        self.h0 = nn.Parameter(torch.randn(1, 1, 8) * 0.1)
        self.rnn = nn.GRU(10, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h0 = self.h0.expand(1, x.shape[0], 8).contiguous()
        return self.head(self.rnn(self.embed(x), h0)[0][:, -1])


def learned_h0_gru(seed: int = 0):
    g = _seed(seed)
    return LearnedH0GRU(), torch.randn(2, 4, 6, generator=g)


class MaskedMLP(nn.Module):
    """fc1 -> hidden * mask (an input: per token [B, T, 1], or per channel [B, 16]) -> fc2."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x, mask):
        return self.fc2(F.relu(self.fc1(x)) * mask)


def masked_mlp(seed: int = 0, per_channel: bool = False):
    g = _seed(seed)
    x = torch.randn(2, 4, 8, generator=g)
    if per_channel:
        mask = (torch.rand(2, 4, 16, generator=g) > 0.5).float()
    else:
        mask = (torch.rand(2, 4, 1, generator=g) > 0.5).float()
    return MaskedMLP(), (x, mask)


class BoTBlock(nn.Module):
    """BoTNet-style self-attention over the pixels of a feature map: one 1x1 conv makes q/k/v
    (split), relative-position logits from raw height/width parameters, 4 heads."""

    def __init__(self, dim: int = 16, heads: int = 4, size: int = 4):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.stem = nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(size, self.hd) * 0.1)
        self.rel_w = nn.Parameter(torch.randn(size, self.hd) * 0.1)
        self.bn = nn.BatchNorm2d(dim)
        self.fc = nn.Linear(dim, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        b, c, h, w = x.shape
        q, k, v = torch.split(self.qkv(x), c, dim=1)
        q = q.reshape(b * self.heads, self.hd, h * w).transpose(1, 2)
        k = k.reshape(b * self.heads, self.hd, h * w)
        v = v.reshape(b * self.heads, self.hd, h * w).transpose(1, 2)
        pos = (self.rel_h[:, None, :] + self.rel_w[None, :, :]).reshape(h * w, self.hd)
        logits = q @ k / self.hd**0.5 + q @ pos.t()
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, c, h, w)
        x = F.relu(x + self.bn(o))
        return self.fc(x.mean((2, 3)))


def bot_block(seed: int = 0):
    g = _seed(seed)
    return BoTBlock(), torch.randn(2, 3, 8, 8, generator=g)


def single_linear(seed: int = 0):
    """nn.Linear(8, 3): every width is fixed by the input or the output."""
    g = _seed(seed)
    return nn.Linear(8, 3), torch.randn(2, 8, generator=g)


# issue 13 patterns; tests/test_groups_archs.py states what each must give
PATTERNS = {
    "hf_gpt2_tiny": hf_gpt2_tiny,
    "hf_t5_tiny": hf_t5_tiny,
    "hf_llama_tiny": hf_llama_tiny,
    "hf_mistral_gqa": hf_mistral_gqa,
    "hf_qwen2_gqa": hf_qwen2_gqa,
    "resnext_block": resnext_block,
    "fused_qkv_vit": fused_qkv_vit,
    "raw_linear_bias": raw_linear_bias,
    "swiglu": swiglu,
    "swiglu_fused": swiglu_fused,
    "ghost_module": ghost_module,
    "res2net_block": res2net_block,
    "csp_block": csp_block,
    "nfnet_tiny": nfnet_tiny,
    "proj_lstm": proj_lstm,
    "learned_h0_gru": learned_h0_gru,
    "masked_mlp": masked_mlp,
    "masked_mlp_per_channel": lambda seed=0: masked_mlp(seed, per_channel=True),
    "bot_block": bot_block,
    "single_linear": single_linear,
}


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 7x7 conv, permute to channels-last, LayerNorm, Linear 4x, GELU,
    Linear back, per-channel layer scale ``gamma``, permute back, residual."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(F.gelu(self.pw1(self.norm(y))))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def convnext_block(seed: int = 0):
    g = _seed(seed)
    return ConvNeXtBlock(), torch.randn(2, 3, 8, 8, generator=g)


class SEBlock(nn.Module):
    """MobileNetV2/EfficientNet block: expand 1x1, depthwise 3x3, squeeze-excitation (pool,
    reduce 1x1, expand 1x1, sigmoid gate), project 1x1, residual."""

    def __init__(self, c: int = 8, e: int = 24, r: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.expand = nn.Conv2d(c, e, 1)
        self.bn1 = nn.BatchNorm2d(e)
        self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e)
        self.bn2 = nn.BatchNorm2d(e)
        self.se_reduce = nn.Conv2d(e, r, 1)
        self.se_expand = nn.Conv2d(r, e, 1)
        self.project = nn.Conv2d(e, c, 1)
        self.fc = nn.Linear(c, 4)

    def forward(self, x):
        x = self.stem(x)
        y = F.silu(self.bn2(self.dw(F.silu(self.bn1(self.expand(x))))))
        s = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        x = x + self.project(y * s)
        return self.fc(x.mean((2, 3)))


def se_block(seed: int = 0):
    g = _seed(seed)
    return SEBlock(), torch.randn(2, 3, 8, 8, generator=g)


class WindowAttention(nn.Module):
    """Swin-style attention: fused qkv, a learned relative-position bias table (heads columns)
    indexed and added to the attention logits, proj; residual."""

    def __init__(self, dim: int = 16, heads: int = 4, n: int = 4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(6, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.table = nn.Parameter(torch.randn(2 * n - 1, heads) * 0.1)
        idx = torch.arange(n)
        self.register_buffer("rel", (idx[:, None] - idx[None, :] + n - 1).flatten())
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        n = x.shape[1]
        q, k, v = _split_fused(self.qkv(x), 3, self.heads)
        bias = self.table[self.rel].view(n, n, -1).permute(2, 0, 1)
        x = x + self.proj(_merge_heads(_attend(q, k, v, bias)))
        return self.head(x.mean(1))


def window_attention(seed: int = 0):
    g = _seed(seed)
    return WindowAttention(), torch.randn(2, 4, 6, generator=g)


PATTERNS.update(
    {"convnext_block": convnext_block, "se_block": se_block, "window_attention": window_attention}
)


class SpatialReductionAttention(nn.Module):
    """PVT-style attention: q = Linear(d, d) on all tokens; keys and values from one fused
    kv = Linear(d, 2d) on tokens reduced by a strided conv; proj; residual."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(3, dim, 1)
        self.q = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, 2, stride=2)
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        t = x.flatten(2).transpose(1, 2)
        q = _split_heads(self.q(t), self.heads)
        r = self.norm(self.sr(x).flatten(2).transpose(1, 2))
        k, v = _split_fused(self.kv(r), 2, self.heads)
        t = t + self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return self.head(t.mean(1))


def spatial_reduction_attention(seed: int = 0):
    g = _seed(seed)
    return SpatialReductionAttention(), torch.randn(2, 3, 4, 4, generator=g)


class DenseBlock(nn.Module):
    """DenseNet: each layer reads the concat of all earlier feature maps."""

    def __init__(self, c: int = 8, growth: int = 4, n: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(c + i * growth),
                nn.ReLU(),
                nn.Conv2d(c + i * growth, growth, 3, padding=1),
            )
            for i in range(n)
        )
        self.fc = nn.Linear(c + n * growth, 4)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return self.fc(torch.cat(feats, 1).mean((2, 3)))


def dense_block(seed: int = 0):
    g = _seed(seed)
    return DenseBlock(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS.update(
    {"spatial_reduction_attention": spatial_reduction_attention, "dense_block": dense_block}
)


def hf_gpt_neox_tiny(seed: int = 0):
    """GPTNeoXForCausalLM: one fused query_key_value whose rows are grouped by head
    ([q_h, k_h, v_h] per head), partial rotary embeddings."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    g = _seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    return GPTNeoXForCausalLM(cfg), {"input_ids": torch.randint(0, 40, (1, 6), generator=g)}


def hf_gemma_mqa(seed: int = 0):
    """GemmaForCausalLM with multi-query attention: 4 query heads share 1 key/value head."""
    from transformers import GemmaConfig, GemmaForCausalLM

    g = _seed(seed)
    cfg = GemmaConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    return GemmaForCausalLM(cfg), {"input_ids": torch.randint(0, 40, (1, 6), generator=g)}


PATTERNS.update({"hf_gpt_neox_tiny": hf_gpt_neox_tiny, "hf_gemma_mqa": hf_gemma_mqa})


def hf_falcon_mqa(seed: int = 0):
    """FalconForCausalLM: one fused query_key_value [q | k | v] with a single key/value head."""
    from transformers import FalconConfig, FalconForCausalLM

    g = _seed(seed)
    cfg = FalconConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    return FalconForCausalLM(cfg), {"input_ids": torch.randint(0, 40, (1, 6), generator=g)}


PATTERNS["hf_falcon_mqa"] = hf_falcon_mqa


class PatchMerging(nn.Module):
    """Swin's patch merging, channels-last: each 2x2 neighbourhood of C channels becomes 4C
    features (``reshape`` + ``permute`` + ``flatten``), LayerNorm(4C), Linear(4C, 2C)."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.embed = nn.Linear(3, c)
        self.norm = nn.LayerNorm(4 * c)
        self.reduction = nn.Linear(4 * c, 2 * c, bias=False)
        self.head = nn.Linear(2 * c, 3)

    def forward(self, x):
        x = self.embed(x)  # [B, H, W, C]
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.head(self.reduction(self.norm(x)).mean((1, 2)))


def patch_merging(seed: int = 0):
    g = _seed(seed)
    return PatchMerging(), torch.randn(2, 4, 4, 3, generator=g)


PATTERNS["patch_merging"] = patch_merging


class PixelShuffleNet(nn.Module):
    """conv 3->16, pixel_shuffle(2) (4 consecutive channels -> one channel at 2x2), conv 4->4."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.b(F.pixel_shuffle(self.a(x), 2))).mean((2, 3)))


def pixel_shuffle_net(seed: int = 0):
    g = _seed(seed)
    return PixelShuffleNet(), torch.randn(2, 3, 4, 4, generator=g)


PATTERNS["pixel_shuffle_net"] = pixel_shuffle_net


def hf_swin_tiny(seed: int = 0):
    """SwinForImageClassification: window attention with a relative-position bias table, patch
    merging between two stages (2x2 neighbourhoods concatenated to 4C, LayerNorm, Linear)."""
    from transformers import SwinConfig, SwinForImageClassification

    g = _seed(seed)
    cfg = SwinConfig(
        image_size=16, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4
    )
    return SwinForImageClassification(cfg), {"pixel_values": torch.randn(1, 3, 16, 16, generator=g)}


PATTERNS["hf_swin_tiny"] = hf_swin_tiny


# ---------------------------------------------------------------------------------------------
# found by the Hugging Face battery (benchmarks/bench_groups.py --hf)


class FrozenPositions(nn.Module):
    """Whisper's encoder / Marian / Pegasus: token embedding + a *frozen* position table
    (``nn.Embedding`` with ``requires_grad=False``, sinusoidal values) added to the stream, one
    pre-norm MLP block with a residual, a head on the mean."""

    def __init__(self, vocab: int = 20, dim: int = 16, seq: int = 8):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq, dim)
        self.pos.requires_grad_(False)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids):
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        h = h + self.fc2(F.gelu(self.fc1(self.norm(h))))
        return self.head(h.mean(1))


def frozen_positions(seed: int = 0):
    g = _seed(seed)
    return FrozenPositions(), torch.randint(0, 20, (2, 6), generator=g)


def hf_marian_tiny(seed: int = 0):
    """MarianMTModel: frozen sinusoidal position tables in encoder and decoder, shared
    embedding, final_logits_bias."""
    from transformers import MarianConfig, MarianMTModel

    g = _seed(seed)
    cfg = MarianConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=24,
        decoder_ffn_dim=24,
        max_position_embeddings=16,
        pad_token_id=0,
        decoder_start_token_id=0,
    )
    ids = torch.randint(3, 40, (1, 6), generator=g)
    return MarianMTModel(cfg), {"input_ids": ids, "decoder_input_ids": ids[:, :4]}


PATTERNS["frozen_positions"] = frozen_positions
PATTERNS["hf_marian_tiny"] = hf_marian_tiny


class WeightNormNet(nn.Module):
    """wav2vec2's positional conv: weight-normalised convs, whose ``weight`` is computed from a
    magnitude ``g`` and a direction ``v``. ``a``: norm over each output channel (``dim=0``, g is
    per channel); ``pos``: norm over the kernel taps (``dim=2``, as wav2vec2), added back to the
    stream. ``form="hooks"``: the older ``nn.utils.weight_norm`` (``weight_g``/``weight_v``)."""

    def __init__(self, form: str = "parametrize"):
        super().__init__()
        if form == "parametrize":
            wn = nn.utils.parametrizations.weight_norm
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wn = nn.utils.weight_norm
        self.a = wn(nn.Conv1d(3, 8, 3, padding=1), dim=0)
        self.pos = wn(nn.Conv1d(8, 8, 3, padding=1), dim=2)
        self.b = nn.Conv1d(8, 12, 1)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = self.a(x)
        h = h + F.gelu(self.pos(h))
        return self.head(F.relu(self.b(h)).mean(2))


def weight_norm_net(seed: int = 0, form: str = "parametrize"):
    g = _seed(seed)
    return WeightNormNet(form), torch.randn(2, 3, 10, generator=g)


PATTERNS["weight_norm_net"] = weight_norm_net
PATTERNS["weight_norm_hooks"] = lambda seed=0: weight_norm_net(seed, form="hooks")


class BagClassifier(nn.Module):
    """The PyTorch text-classification tutorial: ``nn.EmbeddingBag`` (mean of each bag's rows,
    bags given by offsets into a flat index tensor) -> Linear -> ReLU -> head."""

    def __init__(self, vocab: int = 30, dim: int = 16, hidden: int = 12):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.fc = nn.Linear(dim, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, ids, offsets):
        return self.head(F.relu(self.fc(self.bag(ids, offsets))))


def embedding_bag(seed: int = 0):
    g = _seed(seed)
    return BagClassifier(), (torch.randint(0, 30, (10,), generator=g), torch.tensor([0, 4, 7]))


PATTERNS["embedding_bag"] = embedding_bag


class ClsMeanHead(nn.Module):
    """DINOv2's classifier: a ViT (class token, a 3-D parameter, concatenated along tokens;
    learned positions; one pre-norm MLP block) whose head reads ``cat([cls, mean of patches])``
    along features, so each stream channel is read at ``c`` and at ``d + c``."""

    def __init__(self, dim: int = 16, tokens: int = 4):
        super().__init__()
        self.patch = nn.Linear(6, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(2 * dim, 3)

    def forward(self, x):
        h = self.patch(x)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
        h = h + self.fc2(F.gelu(self.fc1(self.norm(h))))
        return self.head(torch.cat([h[:, 0], h[:, 1:].mean(dim=1)], dim=1))


def cls_mean_head(seed: int = 0):
    g = _seed(seed)
    return ClsMeanHead(), torch.randn(2, 4, 6, generator=g)


PATTERNS["cls_mean_head"] = cls_mean_head


class FrozenRotary(nn.Module):
    """RoFormer: one *frozen* sinusoidal table (``nn.Embedding``, head-size wide) computed once
    and applied as a rotary embedding to q and k in every layer (2 layers, 2 heads)."""

    def __init__(self, dim: int = 16, heads: int = 2, seq: int = 8):
        super().__init__()
        self.heads, hd = heads, dim // heads
        self.embed = nn.Linear(6, dim)
        self.table = nn.Embedding(seq, hd)
        self.table.requires_grad_(False)
        self.layers = nn.ModuleList(
            nn.ModuleDict({k: nn.Linear(dim, dim) for k in ("q", "k", "v", "o")}) for _ in range(2)
        )
        self.head = nn.Linear(dim, 3)

    @staticmethod
    def _rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)

    def forward(self, x):
        h = self.embed(x)
        sin, cos = self.table(torch.arange(x.shape[1])).chunk(2, dim=-1)
        for layer in self.layers:
            q, k, v = (_split_heads(layer[p](h), self.heads) for p in ("q", "k", "v"))
            q, k = self._rotate(q, sin, cos), self._rotate(k, sin, cos)
            h = h + layer["o"](_merge_heads(_attend(q, k, v)))
        return self.head(h.mean(1))


def frozen_rotary(seed: int = 0):
    g = _seed(seed)
    return FrozenRotary(), torch.randn(2, 5, 6, generator=g)


PATTERNS["frozen_rotary"] = frozen_rotary


class FusedGQA(nn.Module):
    """Phi-3's attention: one fused ``qkv_proj`` whose rows are [q | k | v] with half as many
    key/value heads (4 query heads, 2 key/value heads of size 4): ``2 * dim`` rows, as many as
    a fused [gate | up]; k and v heads repeated for their query heads, then ``o_proj``."""

    def __init__(self, dim: int = 16, heads: int = 4, kv_heads: int = 2):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.embed = nn.Linear(6, dim)
        self.qkv_proj = nn.Linear(dim, dim + 2 * kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        qkv = self.qkv_proj(h)
        d, kvw = h.shape[-1], self.kv_heads * self.hd
        q = _split_heads(qkv[..., :d], self.heads)
        k = _split_heads(qkv[..., d : d + kvw], self.kv_heads)
        v = _split_heads(qkv[..., d + kvw :], self.kv_heads)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        h = h + self.o_proj(_merge_heads(_attend(q, k, v)))
        return self.head(h.mean(1))


def fused_gqa(seed: int = 0):
    g = _seed(seed)
    return FusedGQA(), torch.randn(2, 5, 6, generator=g)


PATTERNS["fused_gqa"] = fused_gqa


class BufferPositions(nn.Module):
    """XGLM / M2M100: a sinusoidal position table kept as a *buffer* (not a parameter) and
    added to the token embeddings; one MLP block with a residual; a head on the mean."""

    def __init__(self, vocab: int = 20, dim: int = 16, seq: int = 8):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        pos = torch.arange(seq)[:, None] / 10000 ** (torch.arange(0, dim, 2) / dim)
        self.register_buffer("table", torch.cat([pos.sin(), pos.cos()], 1), persistent=False)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids):
        h = self.tok(ids) + self.table[: ids.shape[1]]
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.head(h.mean(1))


def buffer_positions(seed: int = 0):
    g = _seed(seed)
    return BufferPositions(), torch.randint(0, 20, (2, 6), generator=g)


PATTERNS["buffer_positions"] = buffer_positions


class TrigramEmbedding(nn.Module):
    """MobileBERT's embedding: the token embeddings shifted one token left, unshifted, and
    shifted right, concatenated on features (``dim=2``) and projected by one Linear; an MLP
    block with a residual; a head on the mean."""

    def __init__(self, vocab: int = 20, emb: int = 8, dim: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, emb)
        self.proj = nn.Linear(3 * emb, dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, ids):
        e = self.tok(ids)
        left = F.pad(e[:, 1:], [0, 0, 0, 1])
        right = F.pad(e[:, :-1], [0, 0, 1, 0])
        h = self.proj(torch.cat([left, e, right], dim=2))
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.head(h.mean(1))


def trigram_embedding(seed: int = 0):
    g = _seed(seed)
    return TrigramEmbedding(), torch.randint(0, 20, (2, 6), generator=g)


class TimeCat(nn.Module):
    """A conv net that concatenates along *time* (the last dim of (batch, channels, time)):
    not a concat on channels, whatever the dim."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(3, 8, 3, padding=1)
        self.b = nn.Conv1d(8, 12, 3, padding=1)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h = torch.cat([h, h.flip(-1)], dim=-1)
        return self.head(F.relu(self.b(h)).mean(-1))


def time_cat(seed: int = 0):
    g = _seed(seed)
    return TimeCat(), torch.randn(2, 3, 6, generator=g)


PATTERNS["trigram_embedding"] = trigram_embedding
PATTERNS["time_cat"] = time_cat


class InterpolatedPositions(nn.Module):
    """PVT (and timm's position-embedding resampling): a learned position table for a 2x2
    grid, bilinearly interpolated to the 4x4 patch grid and added to the patch embeddings;
    tokens; one pre-norm MLP block with a residual; a head on the mean."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 4, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.patch(x)
        _, c, hh, ww = h.shape
        grid = self.pos.reshape(1, 2, 2, c).permute(0, 3, 1, 2)
        pos = F.interpolate(grid, size=(hh, ww), mode="bilinear", align_corners=False)
        h = (h + pos).flatten(2).transpose(1, 2)
        h = h + self.fc2(F.gelu(self.fc1(self.norm(h))))
        return self.head(h.mean(1))


def interpolated_positions(seed: int = 0):
    g = _seed(seed)
    return InterpolatedPositions(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["interpolated_positions"] = interpolated_positions


# ---------------------------------------------------------------------------------------------
# vision patterns (issue 13): gates broadcast over channels, per-head tables, conv projections


class FocalModulation(nn.Module):
    """timm's FocalNet block (focal modulation), channels first: a 1x1 conv ``f`` makes
    ``[q | ctx | gates]`` (split ``C, C, L+1``); ``L`` depthwise convs refine ctx, each level
    scaled by its one-channel gate; the global context (mean) by the last gate; ``h`` (1x1)
    turns the summed context into a modulator of q; ``proj`` (1x1) back to the stream."""

    def __init__(self, dim: int = 16, levels: int = 2):
        super().__init__()
        self.dim, self.levels = dim, levels
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.f = nn.Conv2d(dim, 2 * dim + levels + 1, 1)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, 3 + 2 * k, padding=1 + k, groups=dim, bias=False), nn.GELU()
            )
            for k in range(levels)
        )
        self.h = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        q, ctx, gates = torch.split(self.f(x), (self.dim, self.dim, self.levels + 1), 1)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_global = F.gelu(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.levels :]
        x = x + self.proj(q * self.h(ctx_all))
        return self.head(x.mean((2, 3)))


def focal_modulation(seed: int = 0):
    g = _seed(seed)
    return FocalModulation(), torch.randn(2, 3, 8, 8, generator=g)


def hf_focalnet_tiny(seed: int = 0):
    """Hugging Face FocalNet (random weights): focal modulation with a Linear ``f`` on
    channels-last tokens, permuted to channels first for the split."""
    from transformers import FocalNetConfig, FocalNetForImageClassification

    torch.manual_seed(seed)
    cfg = FocalNetConfig(
        image_size=32, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3],
        num_labels=3,
    )  # fmt: skip
    x = {"pixel_values": torch.randn(1, 3, 32, 32, generator=_seed(seed))}
    return FocalNetForImageClassification(cfg).eval(), x


PATTERNS.update({"focal_modulation": focal_modulation, "hf_focalnet_tiny": hf_focalnet_tiny})


class LearnedH0StackedGRU(nn.Module):
    """embed -> 2-layer GRU (hidden 8) started from one learned h0 ``[2, 1, 8]`` (expanded
    over the batch) -> head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 10)
        self.h0 = nn.Parameter(torch.randn(2, 1, 8) * 0.1)
        self.rnn = nn.GRU(10, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h0 = self.h0.expand(2, x.shape[0], 8).contiguous()
        return self.head(self.rnn(self.embed(x), h0)[0][:, -1])


def learned_h0_stacked_gru(seed: int = 0):
    g = _seed(seed)
    return LearnedH0StackedGRU(), torch.randn(2, 4, 6, generator=g)


PATTERNS["learned_h0_stacked_gru"] = learned_h0_stacked_gru


class SwinV2Block(nn.Module):
    """Swin-V2 (timm/HF): a 4x4 patch map as one window; cosine attention (q and k normalised
    per head) times a per-head learned ``logit_scale`` (clamped, exponentiated); a continuous
    position bias from an MLP on log-spaced relative coordinates (one output per head, 16 *
    sigmoid); post-norm residuals; patch merging that reduces before it normalises."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 4):
        super().__init__()
        self.heads, self.hd, self.window = heads, dim // heads, window
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, heads, bias=False))
        r = torch.arange(-(window - 1), window, dtype=torch.float32) / (window - 1) * 8
        table = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1)
        self.register_buffer("coords", torch.sign(table) * torch.log2(table.abs() + 1) / 3)
        pos = torch.stack(torch.meshgrid(*[torch.arange(window)] * 2, indexing="ij")).flatten(1)
        rel = (pos[:, :, None] - pos[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.merge_norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, 3)

    def attention(self, x):
        b, n, c = x.shape

        def heads(t):
            return t.view(b, n, self.heads, self.hd).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        scores = scores * torch.clamp(self.logit_scale, max=4.6052).exp()
        bias = self.cpb_mlp(self.coords).view(-1, self.heads)[self.index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)
        scores = scores + 16 * torch.sigmoid(bias).unsqueeze(0)
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(o)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # B, 16 tokens, C
        x = x + self.norm1(self.attention(x))
        x = x + self.norm2(self.fc2(F.gelu(self.fc1(x))))
        b, _, c = x.shape
        m = x.view(b, self.window, self.window, c)
        m = torch.cat([m[:, 0::2, 0::2], m[:, 1::2, 0::2], m[:, 0::2, 1::2], m[:, 1::2, 1::2]], -1)
        m = self.merge_norm(self.reduction(m.view(b, -1, 4 * c)))
        return self.head(m.mean(1))


def swinv2_block(seed: int = 0):
    g = _seed(seed)
    return SwinV2Block(), torch.randn(2, 3, 8, 8, generator=g)


def hf_swinv2_tiny(seed: int = 0):
    from transformers import Swinv2Config, Swinv2ForImageClassification

    torch.manual_seed(seed)
    cfg = Swinv2Config(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4,
        num_labels=3,
    )  # fmt: skip
    x = {"pixel_values": torch.randn(1, 3, 32, 32, generator=_seed(seed))}
    return Swinv2ForImageClassification(cfg).eval(), x


PATTERNS.update({"swinv2_block": swinv2_block, "hf_swinv2_tiny": hf_swinv2_tiny})


class ConvProjectionAttention(nn.Module):
    """CvT: a class token beside the patch tokens; attention splits it off, turns the patch
    tokens back into a ``B, C, H, W`` map, projects q/k/v each with a depthwise conv and a
    BatchNorm, puts the class token back in front (concat along tokens), then Linear q/k/v
    and 2 heads; pre-norm residual block and MLP; the head reads the class token."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.norm1 = nn.LayerNorm(dim)
        self.conv_q, self.conv_k, self.conv_v = (
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim))
            for _ in range(3)
        )  # fmt: skip
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def attention(self, x, h, w):
        cls, x = torch.split(x, [1, h * w], 1)
        b, n, c = x.shape
        m = x.permute(0, 2, 1).reshape(b, c, h, w)

        def heads(t):
            return t.view(b, -1, self.heads, c // self.heads).permute(0, 2, 1, 3)

        q, k, v = (
            heads(lin(torch.cat((cls, conv(m).flatten(2).permute(0, 2, 1)), dim=1)))
            for conv, lin in ((self.conv_q, self.q), (self.conv_k, self.k), (self.conv_v, self.v))
        )
        o = (q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5).softmax(-1) @ v
        return self.out(o.permute(0, 2, 1, 3).reshape(b, n + 1, c))

    def forward(self, x):
        x = self.patch(x)
        b, _, h, w = x.shape
        x = torch.cat((self.cls_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)), dim=1)
        x = x + self.attention(self.norm1(x), h, w)
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x[:, 0])


def conv_projection_attention(seed: int = 0):
    g = _seed(seed)
    return ConvProjectionAttention(), torch.randn(2, 3, 8, 8, generator=g)


def hf_cvt_tiny(seed: int = 0):
    """Hugging Face CvT (random weights); the last stage carries the class token. (Depths
    1, 2, 3: CvT indexes its drop-path rates by stage, so a stage needs more layers than its
    index.)"""
    from transformers import CvtConfig, CvtForImageClassification

    torch.manual_seed(seed)
    cfg = CvtConfig(
        embed_dim=[16, 32, 32], num_heads=[1, 2, 2], depth=[1, 2, 3], drop_path_rate=[0.0] * 3,
        num_labels=3,
    )  # fmt: skip
    x = {"pixel_values": torch.randn(1, 3, 32, 32, generator=_seed(seed))}
    return CvtForImageClassification(cfg).eval(), x


PATTERNS.update(
    {"conv_projection_attention": conv_projection_attention, "hf_cvt_tiny": hf_cvt_tiny}
)


class MambaMixer(nn.Module):
    """A selective state-space mixer (Mamba, as ``mamba_ssm``'s reference scan) in a
    pre-norm residual block: in_proj to input x and gate z (I each), depthwise causal conv,
    x_proj to the step rank R and the state inputs B, C (N each), dt_proj back to I, a scan
    with A = -exp(A_log) [I, N] and a skip D [I], out_proj."""

    def __init__(self, dim: int = 8, inner: int = 12, state: int = 4, rank: int = 2):
        super().__init__()
        self.inner, self.state, self.rank = inner, state, rank
        self.embed = nn.Linear(5, dim)
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, 3, groups=inner, padding=2)
        self.x_proj = nn.Linear(inner, rank + 2 * state, bias=False)
        self.dt_proj = nn.Linear(rank, inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state + 1.0)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.head = nn.Linear(dim, 3)

    def mix(self, h):
        t = h.shape[1]
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :t]).transpose(1, 2)  # B, T, I
        dt, b, c = torch.split(self.x_proj(x), [self.rank, self.state, self.state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # B, T, I
        a = -torch.exp(self.A_log)
        s = torch.zeros(h.shape[0], self.inner, self.state)
        ys = []
        for k in range(t):
            s = (
                torch.exp(dt[:, k, :, None] * a) * s
                + dt[:, k, :, None] * b[:, k, None] * x[:, k, :, None]
            )
            ys.append((s @ c[:, k, :, None])[..., 0])
        y = torch.stack(ys, 1) + x * self.D
        return self.out_proj(y * F.silu(z.transpose(1, 2)))

    def forward(self, x):
        h = self.embed(x)
        h = h + self.mix(self.norm(h))
        return self.head(h.mean(1))


def mamba_mixer(seed: int = 0):
    g = _seed(seed)
    return MambaMixer(), torch.randn(2, 5, 5, generator=g)


def hf_mamba_tiny(seed: int = 0):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    cfg = MambaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, state_size=4, expand=2,
        conv_kernel=3, intermediate_size=32,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference-scan fallback notice
        model = MambaForCausalLM(cfg).eval()
    return model, {"input_ids": torch.randint(3, 64, (1, 6), generator=_seed(seed))}


PATTERNS.update({"mamba_mixer": mamba_mixer, "hf_mamba_tiny": hf_mamba_tiny})


class LinearNorm(nn.Module):
    """timm LeViT's ``LinearNorm``: a Linear and a BatchNorm1d over the flattened tokens."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return self.bn(self.linear(x).flatten(0, 1)).reshape_as(self.linear(x))


class LeViTAttention(nn.Module):
    """timm's LeViT attention: one LinearNorm makes q/k/v interleaved per head
    (``view(B, N, heads, -1).split([key, key, val])``), per-head bias tables indexed by the
    relative offset of two points, Hardswish then a LinearNorm back to the stream; conv stem
    with BatchNorm, residual MLP of LinearNorms, head on the mean token."""

    def __init__(self, dim: int = 16, heads: int = 2, key_dim: int = 4, ratio: int = 2):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = heads, key_dim, ratio * key_dim
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, stride=2), nn.BatchNorm2d(dim))
        self.qkv = LinearNorm(dim, heads * (2 * key_dim + self.val_dim))
        # named children, as in timm (Hugging Face's LeViT numbers them: hf_levit_tiny)
        act, ln = nn.Hardswish(), LinearNorm(heads * self.val_dim, dim)
        self.proj = nn.Sequential(OrderedDict(act=act, ln=ln))
        points = [(i, j) for i in range(4) for j in range(4)]
        offsets: dict[tuple[int, int], int] = {}
        idx = [
            offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets))
            for a in points
            for b in points
        ]
        self.attention_biases = nn.Parameter(torch.randn(heads, len(offsets)) * 0.1)
        self.register_buffer("bias_idxs", torch.tensor(idx).view(16, 16))
        self.up, self.down = LinearNorm(dim, 2 * dim), LinearNorm(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def attention(self, x):
        b, n, _ = x.shape
        q, k, v = (
            self.qkv(x)
            .view(b, n, self.num_heads, -1)
            .split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        )
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        att = q @ k.transpose(-2, -1) * self.key_dim**-0.5
        att = (att + self.attention_biases[:, self.bias_idxs]).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, -1))

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attention(x)
        x = x + self.down(F.hardswish(self.up(x)))
        return self.head(x.mean(1))


def levit_attention(seed: int = 0):
    g = _seed(seed)
    return LeViTAttention(), torch.randn(2, 3, 8, 8, generator=g)


def hf_levit_tiny(seed: int = 0):
    """Hugging Face LeViT (random weights): attention and subsampling attention."""
    from transformers import LevitConfig, LevitForImageClassification

    torch.manual_seed(seed)
    cfg = LevitConfig(
        image_size=32, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
        key_dim=[8, 8, 8], num_labels=3,
    )  # fmt: skip
    x = {"pixel_values": torch.randn(1, 3, 32, 32, generator=_seed(seed))}
    return LevitForImageClassification(cfg).eval(), x


PATTERNS.update({"levit_attention": levit_attention, "hf_levit_tiny": hf_levit_tiny})


def _rel_logits_1d(q, rel_k, permute_mask):
    """timm's ``rel_logits_1d``: logits of q against relative offsets along one axis,
    turned into absolute key positions by the pad-and-reshape trick."""
    b, h, w, _ = q.shape
    x = q @ rel_k.transpose(-1, -2)  # B, H, W, 2W-1
    x = x.reshape(-1, w, 2 * w - 1)
    x = F.pad(x, [0, 1]).flatten(1)
    x = F.pad(x, [0, w - 1]).reshape(-1, w + 1, 2 * w - 1)
    x = x[:, :w, w - 1 :].reshape(b, h, 1, w, w).expand(-1, -1, h, -1, -1)
    return x.permute(permute_mask)


class PosEmbedRel(nn.Module):
    """timm's ``PosEmbedRel``: learned relative-position tables per axis, [2S-1, head dim]."""

    def __init__(self, size: int, dim_head: int):
        super().__init__()
        self.size = size
        self.height_rel = nn.Parameter(torch.randn(2 * size - 1, dim_head) * 0.1)
        self.width_rel = nn.Parameter(torch.randn(2 * size - 1, dim_head) * 0.1)

    def forward(self, q):
        b, hw, _ = q.shape
        q = q.reshape(b, self.size, self.size, -1)
        rel_w = _rel_logits_1d(q, self.width_rel, (0, 1, 3, 2, 4))
        rel_h = _rel_logits_1d(q.transpose(1, 2), self.height_rel, (0, 3, 1, 4, 2))
        return (rel_h + rel_w).reshape(b, hw, hw)


class BottleneckAttn(nn.Module):
    """timm's BoTNet bottleneck: 1x1 conv in, ``BottleneckAttn`` (one 1x1 qkv conv, 2 heads,
    ``q @ k`` plus relative-position logits), BatchNorm + ReLU, 1x1 conv out, residual."""

    def __init__(self, dim: int = 16, inner: int = 8, heads: int = 2, size: int = 4):
        super().__init__()
        self.num_heads, self.dim_head_qk = heads, inner // heads
        self.dim_head_v, self.dim_out_qk, self.dim_out_v = inner // heads, inner, inner
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, stride=2), nn.BatchNorm2d(dim))
        self.conv1 = nn.Sequential(nn.Conv2d(dim, inner, 1, bias=False), nn.BatchNorm2d(inner))
        self.qkv = nn.Conv2d(inner, 3 * inner, 1, bias=False)
        self.pos_embed = PosEmbedRel(size, self.dim_head_qk)
        self.post_attn = nn.BatchNorm2d(inner)
        self.conv3 = nn.Sequential(nn.Conv2d(inner, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.head = nn.Linear(dim, 3)

    def attn(self, x):
        b, _, h, w = x.shape
        q, k, v = torch.split(self.qkv(x), [self.dim_out_qk, self.dim_out_qk, self.dim_out_v], 1)
        q = q.reshape(b * self.num_heads, self.dim_head_qk, -1).transpose(-1, -2)
        k = k.reshape(b * self.num_heads, self.dim_head_qk, -1)
        v = v.reshape(b * self.num_heads, self.dim_head_v, -1).transpose(-1, -2)
        att = (q @ k) * self.dim_head_qk**-0.5 + self.pos_embed(q)
        return (att.softmax(-1) @ v).transpose(-1, -2).reshape(b, self.dim_out_v, h, w)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.conv1(x))
        y = F.relu(self.post_attn(self.attn(y)))
        x = F.relu(x + self.conv3(y))
        return self.head(x.mean((2, 3)))


def bottleneck_attn(seed: int = 0):
    g = _seed(seed)
    return BottleneckAttn(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["bottleneck_attn"] = bottleneck_attn


class AdditiveAttention(nn.Module):
    """SwiftFormer's efficient additive attention: q and k (Linear, normalised), a learned
    scoring vector ``w_g`` [C, 1] (a raw parameter: ``q @ w_g``) whose softmax over tokens
    pools q into one global query, ``proj(global * k) + q``, ``final``; a residual around it."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.embed = nn.Linear(6, dim)
        self.to_query, self.to_key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.w_g = nn.Parameter(torch.randn(dim, 1))
        self.proj, self.final = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def attention(self, x):
        q = F.normalize(self.to_query(x), dim=-1)
        k = F.normalize(self.to_key(x), dim=-1)
        weight = (q @ self.w_g * q.shape[-1] ** -0.5).softmax(dim=1)
        g = torch.sum(weight * q, dim=1).unsqueeze(1).repeat(1, k.shape[1], 1)
        return self.final(self.proj(g * k) + q)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attention(h)
        return self.head(h.mean(1))


def additive_attention(seed: int = 0):
    g = _seed(seed)
    return AdditiveAttention(), torch.randn(2, 5, 6, generator=g)


def hf_swiftformer_tiny(seed: int = 0):
    from transformers import SwiftFormerConfig, SwiftFormerForImageClassification

    torch.manual_seed(seed)
    cfg = SwiftFormerConfig(
        image_size=32, depths=[1, 1, 1, 1], embed_dims=[8, 16, 16, 32], num_labels=3
    )
    x = {"pixel_values": torch.randn(1, 3, 32, 32, generator=_seed(seed))}
    return SwiftFormerForImageClassification(cfg).eval(), x


PATTERNS.update(
    {"additive_attention": additive_attention, "hf_swiftformer_tiny": hf_swiftformer_tiny}
)


class SeparableAttention(nn.Module):
    """MobileViT-V2's separable self-attention: one 1x1 conv makes [query (1) | key (C) |
    value (C)]; the one-channel query's softmax over patches pools the keys into a context
    vector, which multiplies relu(value) channel by channel; 1x1 out conv; residual."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.qkv = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out = nn.Conv2d(dim, dim, 1)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        p = x.reshape(b, c, 1, h * w)  # one patch position, h*w patches
        q, k, v = torch.split(self.qkv(p), [1, self.dim, self.dim], dim=1)
        context = (k * q.softmax(dim=-1)).sum(dim=-1, keepdim=True)
        y = self.out(F.relu(v) * context.expand_as(v)).reshape(b, c, h, w)
        return self.head((x + y).mean((2, 3)))


def separable_attention(seed: int = 0):
    g = _seed(seed)
    return SeparableAttention(), torch.randn(2, 3, 8, 8, generator=g)


class ConvNormAct(nn.Module):
    """timm EfficientViT's ``ConvNormAct``: ``conv``, then ``norm`` (BatchNorm or nothing)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, norm: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not norm)
        self.norm = nn.BatchNorm2d(cout) if norm else nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


class LiteMLA(nn.Module):
    """timm's EfficientViT (MIT) ``LiteMLA``: a 1x1 qkv conv (per head ``[q | k | v]`` of
    ``dim`` channels), one more scale made by a 5x5 depthwise and a 1x1 conv grouped per
    block, ReLU linear attention per head with the ones-padded value trick, a 1x1 conv-norm
    back to the stream; conv stem, residual, head on the mean."""

    def __init__(self, width: int = 16, dim: int = 4):
        super().__init__()
        self.dim = dim
        heads = width // dim
        total = heads * dim
        self.stem = ConvNormAct(3, width, 3, norm=True)
        self.qkv = ConvNormAct(width, 3 * total)
        self.aggreg = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(3 * total, 3 * total, 5, padding=2, groups=3 * total, bias=False),
                    nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
                )
            ]
        )
        self.proj = ConvNormAct(2 * total, width, norm=True)
        self.head = nn.Linear(width, 3)

    def attn(self, x):
        b, _, h, w = x.shape
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        qkv = qkv.reshape(b, -1, 3 * self.dim, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        out = q @ (k.transpose(-1, -2) @ v)
        out = out[..., :-1] / (out[..., -1:] + 1e-5)
        return self.proj(out.transpose(-1, -2).reshape(b, -1, h, w))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.attn(x)
        return self.head(x.mean((2, 3)))


def lite_mla(seed: int = 0):
    g = _seed(seed)
    return LiteMLA(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["lite_mla"] = lite_mla


# --- timm CNN patterns ---


class InceptionDWBlock(nn.Module):
    """timm's InceptionNeXt block: the channels split four ways (``torch.split``), three pieces
    through depthwise convs (square, wide, tall), concatenated back; BatchNorm, a 1x1 MLP, a
    per-channel scale applied as ``x.mul(gamma.reshape(1, -1, 1, 1))``, a residual. Two stages
    joined by a 2x2 stride-2 downsampling conv; head on the mean."""

    def __init__(self, dims: tuple[int, ...] = (8, 16), gc: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, dims[0], 2, stride=2)
        self.down = nn.ModuleList(
            [nn.Identity()]
            + [nn.Conv2d(dims[i], dims[i + 1], 2, stride=2) for i in range(len(dims) - 1)]
        )
        self.splits = [(d - 3 * gc, gc, gc, gc) for d in dims]
        self.dw = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.Conv2d(gc, gc, 3, padding=1, groups=gc),
                    nn.Conv2d(gc, gc, (1, 5), padding=(0, 2), groups=gc),
                    nn.Conv2d(gc, gc, (5, 1), padding=(2, 0), groups=gc),
                ]
            )
            for _ in dims
        )
        self.norm = nn.ModuleList(nn.BatchNorm2d(d) for d in dims)
        self.fc1 = nn.ModuleList(nn.Conv2d(d, 2 * d, 1) for d in dims)
        self.fc2 = nn.ModuleList(nn.Conv2d(2 * d, d, 1) for d in dims)
        self.gamma = nn.ParameterList(nn.Parameter(torch.rand(d) + 0.5) for d in dims)
        self.head = nn.Linear(dims[-1], 3)

    def forward(self, x):
        x = self.stem(x)
        for s in range(len(self.splits)):
            x = self.down[s](x)
            x_id, *rest = torch.split(x, self.splits[s], dim=1)
            y = torch.cat([x_id, *(conv(r) for conv, r in zip(self.dw[s], rest))], dim=1)
            y = self.fc2[s](F.gelu(self.fc1[s](self.norm[s](y))))
            x = x + y.mul(self.gamma[s].reshape(1, -1, 1, 1))
        return self.head(x.mean((2, 3)))


def inception_dw(seed: int = 0):
    g = _seed(seed)
    return InceptionDWBlock(), torch.randn(2, 3, 16, 16, generator=g)


class PartialAttention(nn.Module):
    """timm's SHViT single-head attention on part of the channels: ``x1, x2 = split(x, [p,
    C - p])``, q/k/v from a 1x1 conv on ``x1`` (``split([d, d, p])``, ``flatten(2)``),
    ``(v @ attn.T).reshape(B, p, H, W)`` concatenated back with the untouched ``x2`` into a
    1x1 projection; conv stem, residual, head on the mean."""

    def __init__(self, width: int = 12, part: int = 4, qk: int = 3):
        super().__init__()
        self.pdim, self.qk_dim = part, qk  # timm's names
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.pre_norm = nn.BatchNorm2d(part)
        self.qkv = nn.Conv2d(part, 2 * qk + part, 1)
        self.proj = nn.Conv2d(width, width, 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        p, qk = self.pdim, self.qk_dim
        x1, x2 = torch.split(x, [p, c - p], dim=1)
        q, k, v = torch.split(self.qkv(self.pre_norm(x1)), [qk, qk, p], dim=1)
        q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
        attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)
        x1 = (v @ attn.transpose(-2, -1)).reshape(b, p, h, w)
        x = x + self.proj(F.relu(torch.cat([x1, x2], dim=1)))
        return self.head(x.mean((2, 3)))


def partial_attention(seed: int = 0):
    g = _seed(seed)
    return PartialAttention(), torch.randn(2, 3, 4, 4, generator=g)


PATTERNS.update({"inception_dw": inception_dw, "partial_attention": partial_attention})


class PartialConvNet(nn.Module):
    """timm's FasterNet block: a 3x3 conv on the first ``part`` channels only
    (``split([part, C - part])``, conv, ``cat`` back), a 1x1 MLP, a residual; conv stem, head
    on the mean."""

    def __init__(self, width: int = 8, part: int = 2):
        super().__init__()
        self.part = part
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.partial_conv3 = nn.Conv2d(part, part, 3, padding=1, bias=False)
        self.fc1 = nn.Conv2d(width, 2 * width, 1)
        self.bn = nn.BatchNorm2d(2 * width)
        self.fc2 = nn.Conv2d(2 * width, width, 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        x1, x2 = torch.split(x, [self.part, x.shape[1] - self.part], dim=1)
        y = torch.cat((self.partial_conv3(x1), x2), 1)
        x = x + self.fc2(F.relu(self.bn(self.fc1(y))))
        return self.head(x.mean((2, 3)))


def partial_conv(seed: int = 0):
    g = _seed(seed)
    return PartialConvNet(), torch.randn(2, 3, 6, 6, generator=g)


class PartialResidualNet(nn.Module):
    """timm's RexNet block: the block widens its input (``cin -> cout``) and the shortcut is
    added to the first ``cin`` channels only: ``cat([x[:, :cin] + shortcut, x[:, cin:]])``."""

    def __init__(self, cin: int = 4, cout: int = 7):
        super().__init__()
        self.cin = cin
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        self.expand = nn.Conv2d(cin, 2 * cin, 1)
        self.dw = nn.Conv2d(2 * cin, 2 * cin, 3, padding=1, groups=2 * cin)
        self.pwl = nn.Conv2d(2 * cin, cout, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.head = nn.Linear(cout, 3)

    def forward(self, x):
        shortcut = self.stem(x)
        x = self.bn(self.pwl(F.relu(self.dw(F.relu(self.expand(shortcut))))))
        x = torch.cat([x[:, 0 : self.cin] + shortcut, x[:, self.cin :]], dim=1)
        return self.head(x.mean((2, 3)))


def partial_residual(seed: int = 0):
    g = _seed(seed)
    return PartialResidualNet(), torch.randn(2, 3, 6, 6, generator=g)


class GhostSliceNet(nn.Module):
    """timm's GhostNet module: ``cat([x1, cheap(x1)])[:, :out]`` with a depthwise ``cheap``
    conv and an odd ``out`` (the last cheap channel is cut off), read by a 1x1 conv."""

    def __init__(self, out: int = 7):
        super().__init__()
        init = -(-out // 2)
        self.out = out
        self.conv_stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.primary_conv = nn.Conv2d(4, init, 1, bias=False)
        self.cheap_operation = nn.Conv2d(init, init, 3, padding=1, groups=init, bias=False)
        self.conv_head = nn.Conv2d(out, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv_stem(x)))
        x1 = self.primary_conv(x)
        y = torch.cat([x1, self.cheap_operation(x1)], dim=1)[:, : self.out]
        return self.head(self.conv_head(y).mean((2, 3)))


def ghost_slice(seed: int = 0):
    g = _seed(seed)
    return GhostSliceNet(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS.update(
    {"partial_conv": partial_conv, "partial_residual": partial_residual, "ghost_slice": ghost_slice}
)


class SplitChainNet(nn.Module):
    """timm's EdgeNeXt ``SplitTransposeBlock`` (convolutional part): the stream chunked into
    ``scales`` pieces; piece 0 through a depthwise conv, each next piece added to the previous
    conv's output before its own depthwise conv, the last piece untouched; ``cat`` back, a
    1x1 MLP, a residual; conv stem, head on the mean."""

    def __init__(self, width: int = 9, scales: int = 3):
        super().__init__()
        self.scales = scales
        w = width // scales
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv2d(w, w, 3, padding=1, groups=w) for _ in range(scales - 1)
        )
        self.norm = nn.BatchNorm2d(width)
        self.fc1 = nn.Conv2d(width, 2 * width, 1)
        self.fc2 = nn.Conv2d(2 * width, width, 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        spx = x.chunk(self.scales, dim=1)
        spo, sp = [], spx[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + spx[i])
            spo.append(sp)
        y = torch.cat([*spo, spx[-1]], dim=1)
        x = x + self.fc2(F.gelu(self.fc1(self.norm(y))))
        return self.head(x.mean((2, 3)))


def split_chain(seed: int = 0):
    g = _seed(seed)
    return SplitChainNet(), torch.randn(2, 3, 5, 5, generator=g)


PATTERNS["split_chain"] = split_chain


class ConvNormQK(nn.Module):
    """timm EfficientFormer-V2's ``ConvNorm``: ``conv`` then ``bn``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class TalkingHeadsAttention2d(nn.Module):
    """timm's EfficientFormer-V2 ``Attention2d``: conv-norm q, k, v on a feature map reshaped
    to ``B, heads, dim, N``; logits ``q @ k`` mixed across heads by 1x1 convs (talking heads)
    before and after the softmax; ``attn @ v`` back to ``B, C, H, W`` plus a depthwise
    ``v_local`` of v, a 1x1 projection, a residual; conv stem, head on the mean."""

    def __init__(self, width: int = 8, num_heads: int = 2, key_dim: int = 3, ratio: int = 2):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.dh = ratio * key_dim * num_heads
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.q = ConvNormQK(width, num_heads * key_dim)
        self.k = ConvNormQK(width, num_heads * key_dim)
        self.v = ConvNormQK(width, self.dh)
        self.v_local = ConvNormQK(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = ConvNormQK(self.dh, width)
        self.head = nn.Linear(width, 3)

    def attn(self, x):
        b, _, h, w = x.shape
        n = h * w
        q = self.q(x).reshape(b, self.num_heads, -1, n).permute(0, 1, 3, 2)
        k = self.k(x).reshape(b, self.num_heads, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, -1, n).permute(0, 1, 3, 2)
        a = self.talking_head2(self.talking_head1(q @ k * self.key_dim**-0.5).softmax(dim=-1))
        out = (a @ v).transpose(2, 3).reshape(b, self.dh, h, w) + v_local
        return self.proj(F.gelu(out))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.attn(x)
        return self.head(x.mean((2, 3)))


def talking_heads_2d(seed: int = 0):
    g = _seed(seed)
    return TalkingHeadsAttention2d(), torch.randn(2, 3, 3, 3, generator=g)


#: timm patterns grouped in part only (tested one by one, not among the fully grouped)
PARTLY_GROUPED = {"talking_heads_2d": talking_heads_2d}


# --- timm attention patterns ---


class CatBiasAttention(nn.Module):
    """timm's BEiT / Eva / Swin-V2 attention: a fused ``qkv`` Linear without bias, called as
    ``F.linear(x, qkv.weight, cat(q_bias, k_bias, v_bias))`` with raw ``q_bias``/``v_bias``
    parameters and a zero ``k_bias`` buffer; optionally a relative position bias table of shape
    ``(positions, heads)`` indexed per token pair and added to the scores (BEiT, Swin)."""

    def __init__(self, dim: int = 16, heads: int = 2, window: int = 3, table: bool = True):
        super().__init__()
        self.num_heads, self.hd = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = None
        if table:
            self.relative_position_bias_table = nn.Parameter(
                torch.randn((2 * window - 1) ** 2, heads) * 0.1
            )
            pos = torch.stack(torch.meshgrid(*[torch.arange(window)] * 2, indexing="ij"))
            rel = (pos.flatten(1)[:, :, None] - pos.flatten(1)[:, None, :]).permute(1, 2, 0)
            rel = rel + window - 1
            self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, weight=self.qkv.weight, bias=bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * self.hd**-0.5) @ k.transpose(-2, -1)
        if self.relative_position_bias_table is not None:
            rel = self.relative_position_bias_table[self.index.view(-1)].view(n, n, -1)
            scores = scores + rel.permute(2, 0, 1).unsqueeze(0)
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(o)


class CatBiasViT(nn.Module):
    """A one-block pre-norm ViT around :class:`CatBiasAttention` (a 3x3 patch map, no class
    token), head on the token mean."""

    def __init__(self, dim: int = 16, heads: int = 2, table: bool = True):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CatBiasAttention(dim, heads, 3, table)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def cat_bias_vit(seed: int = 0):
    g = _seed(seed)
    return CatBiasViT(), torch.randn(2, 3, 6, 6, generator=g)


def cat_bias_vit_no_table(seed: int = 0):
    g = _seed(seed)
    return CatBiasViT(table=False), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["cat_bias_vit"] = cat_bias_vit
PATTERNS["cat_bias_vit_no_table"] = cat_bias_vit_no_table


class WindowedAttentionViT(nn.Module):
    """timm Twins' locally grouped attention: tokens cut into ``ws x ws`` windows, a fused
    ``qkv`` Linear on the 6-D windowed map, heads as a 5-D ``(B, windows, heads, T, hd)``
    tensor, ``q @ k^T`` and ``attn @ v`` as 5-D matmuls (Torch-Pruning reads their broadcast
    expand as a key/value-head repeat), windows merged back, ``proj``; pre-norm residual."""

    def __init__(self, dim: int = 16, heads: int = 2, ws: int = 2):
        super().__init__()
        self.num_heads, self.ws = heads, ws
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def attn(self, x, h, w):
        b, n, c = x.shape
        ws, nh = self.ws, self.num_heads
        x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
        qkv = self.qkv(x).reshape(b, -1, ws * ws, 3, nh, c // nh).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)
        a = ((q * (c // nh) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        o = (a @ v).transpose(2, 3).reshape(b, h // ws, w // ws, ws, ws, c)
        o = o.transpose(2, 3).reshape(b, n, c)
        return self.proj(o)

    def forward(self, x):
        x = self.patch(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm1(x), h, w)
        return self.head(x.mean(1))


def windowed_attention_vit(seed: int = 0):
    g = _seed(seed)
    return WindowedAttentionViT(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["windowed_attention_vit"] = windowed_attention_vit


class FlattenPatchMerging(nn.Module):
    """timm Swin's patch merging on a channels-last ``(B, H, W, C)`` map: each 2x2
    neighbourhood flattened as ``reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5)
    .flatten(3)`` (channel ``c`` lands at ``c + j*C`` for the four positions ``j``),
    LayerNorm over the ``4C`` features, a bias-less reduction; a residual MLP before it."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.head = nn.Linear(2 * dim, 3)

    def forward(self, x):
        x = self.patch(x).permute(0, 2, 3, 1)  # B, H, W, C
        x = x + self.fc2(F.gelu(self.fc1(self.norm1(x))))
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        x = self.reduction(self.norm(x))
        return self.head(x.mean((1, 2)))


def flatten_patch_merging(seed: int = 0):
    g = _seed(seed)
    return FlattenPatchMerging(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["flatten_patch_merging"] = flatten_patch_merging


def windowed_attention_vit_one_head(seed: int = 0):
    """:class:`WindowedAttentionViT` with one head (timm Hiera's first stage)."""
    g = _seed(seed)
    return WindowedAttentionViT(heads=1), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["windowed_attention_vit_one_head"] = windowed_attention_vit_one_head


class OneHotPositionTable(nn.Module):
    """timm Gemma-4 ViT's position embedding: a raw ``(2, P, C)`` table read as
    ``one_hot(positions) @ table`` (one row per axis, summed), added to the patch embedding;
    a residual MLP and a head on the token mean."""

    def __init__(self, dim: int = 12, side: int = 3):
        super().__init__()
        self.side = side
        self.input_proj = nn.Linear(12, dim, bias=False)
        self.position_embedding_table = nn.Parameter(torch.randn(2, side, dim) * 0.1)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        b = x.shape[0]
        ys, xs = torch.meshgrid(*[torch.arange(self.side)] * 2, indexing="ij")
        pos = torch.stack([xs.flatten(), ys.flatten()], -1).expand(b, -1, -1)
        one_hot = F.one_hot(pos, self.side).permute(0, 2, 1, 3).to(x.dtype)
        x = self.input_proj(x) + (one_hot @ self.position_embedding_table).sum(1)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


def one_hot_position_table(seed: int = 0):
    g = _seed(seed)
    return OneHotPositionTable(), torch.randn(2, 9, 12, generator=g)


PATTERNS["one_hot_position_table"] = one_hot_position_table


class LinearWeightsAttention(nn.Module):
    """timm VOLO's outlook attention, reduced: the attention weights are made by a Linear
    (``heads * T`` outputs per token, no query or key), softmaxed and multiplied with the
    values of ``v`` per head, merged into ``proj``; pre-norm residual over ``T`` tokens."""

    def __init__(self, dim: int = 16, heads: int = 2, tokens: int = 9):
        super().__init__()
        self.num_heads, self.tokens = heads, tokens
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.norm1 = nn.LayerNorm(dim)
        self.v = nn.Linear(dim, dim, bias=False)
        self.attn = nn.Linear(dim, heads * tokens)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def mix(self, x):
        b, n, c = x.shape
        v = self.v(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        a = self.attn(x).reshape(b, n, self.num_heads, n).transpose(1, 2).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.mix(self.norm1(x))
        return self.head(x.mean(1))


def linear_weights_attention(seed: int = 0):
    g = _seed(seed)
    return LinearWeightsAttention(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["linear_weights_attention"] = linear_weights_attention


class MapPositionEmbedding(nn.Module):
    """timm Visformer's and SAM2-Hiera's position embedding: a raw ``(1, C, H, W)`` parameter
    added to a conv stem's map (Torch-Pruning guesses a raw parameter's channels are its last
    dim, here the width of the map); a residual 1x1-conv MLP, a head on the mean."""

    def __init__(self, dim: int = 8, side: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.pos_embed = nn.Parameter(torch.randn(1, dim, side, side) * 0.1)
        self.fc1, self.fc2 = nn.Conv2d(dim, 2 * dim, 1), nn.Conv2d(2 * dim, dim, 1)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x) + self.pos_embed
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean((2, 3)))


def map_position_embedding(seed: int = 0):
    g = _seed(seed)
    return MapPositionEmbedding(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["map_position_embedding"] = map_position_embedding


# ---------------------------------------------------------------------------------------------
# convs (helper branch `convs`): convolution patterns of timm CNN-ish models


class DepthwiseMultiplier(nn.Module):
    """FastViT's downsample (and MobileNet's "depth multiplier"): two convolutions with
    ``groups == in_channels`` and ``k`` outputs per input channel, summed; input channel ``i``
    owns outputs ``k*i .. k*i+k-1``, so those blocks move with it."""

    def __init__(self, dim: int = 4, k: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.bn = nn.BatchNorm2d(dim)
        self.large = nn.Conv2d(dim, k * dim, 3, stride=2, padding=1, groups=dim)
        self.small = nn.Conv2d(dim, k * dim, 1, stride=2, groups=dim, bias=False)
        self.bn2 = nn.BatchNorm2d(k * dim)
        self.pw = nn.Conv2d(k * dim, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(self.bn2(self.large(x) + self.small(x)))
        return self.head(F.relu(self.pw(x)).mean((2, 3)))


def depthwise_multiplier(seed: int = 0):
    g = _seed(seed)
    return DepthwiseMultiplier(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["depthwise_multiplier"] = depthwise_multiplier


class MultiplierStages(nn.Module):
    """PiT's pooling between stages: a residual stream pooled by a depthwise conv with 2
    outputs per channel into the next stage's stream (twice, so the last stream holds blocks of
    4); a Linear on the pooled mean (PiT's class token) adds to the next stream too."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.fc1a, self.fc1b = nn.Conv2d(dim, 2 * dim, 1), nn.Conv2d(2 * dim, dim, 1)
        self.pool1 = nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1, groups=dim)
        self.token = nn.Linear(dim, 2 * dim)
        self.fc2a, self.fc2b = nn.Conv2d(2 * dim, 3 * dim, 1), nn.Conv2d(3 * dim, 2 * dim, 1)
        self.pool2 = nn.Conv2d(2 * dim, 4 * dim, 3, stride=2, padding=1, groups=2 * dim)
        self.head = nn.Linear(4 * dim, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.fc1b(F.gelu(self.fc1a(x)))
        x = self.pool1(x) + self.token(x.mean((2, 3)))[:, :, None, None]
        x = x + self.fc2b(F.gelu(self.fc2a(x)))
        return self.head(self.pool2(x).mean((2, 3)))


def multiplier_stages(seed: int = 0):
    g = _seed(seed)
    return MultiplierStages(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["multiplier_stages"] = multiplier_stages


class _GainConv(nn.Conv2d):
    """timm's ScaledStdConv2d, reduced: each filter standardised, scaled by a learned
    per-output-channel ``gain`` of shape ``(out, 1, 1, 1)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x):
        w = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            weight=self.gain.view(-1),
            training=True,
            momentum=0.0,
            eps=1e-6,
        ).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class GroupedGainConvs(nn.Module):
    """NFNet's bottleneck with group_size: two grouped weight-standardised convs in a row; the
    grouped convs' ``gain`` rows belong to their outputs like their weight rows."""

    def __init__(self, dim: int = 8, groups: int = 2):
        super().__init__()
        self.conv1 = _GainConv(3, dim, 1)
        self.conv2 = _GainConv(dim, dim, 3, padding=1, groups=groups)
        self.conv2b = _GainConv(dim, dim, 3, padding=1, groups=groups)
        self.conv3 = _GainConv(dim, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = F.silu(self.conv1(x))
        x = F.silu(self.conv2b(F.silu(self.conv2(x))))
        return self.head(F.silu(self.conv3(x)).mean((2, 3)))


def grouped_gain_convs(seed: int = 0):
    g = _seed(seed)
    return GroupedGainConvs(), torch.randn(2, 3, 5, 5, generator=g)


PATTERNS["grouped_gain_convs"] = grouped_gain_convs


class _SelectiveKernelAttn(nn.Module):
    def __init__(self, dim: int, paths: int, rd: int):
        super().__init__()
        self.num_paths = paths
        self.fc_reduce = nn.Conv2d(dim, rd, 1, bias=False)
        self.bn = nn.BatchNorm2d(rd)
        self.fc_select = nn.Conv2d(rd, dim * paths, 1, bias=False)

    def forward(self, x):
        x = self.fc_reduce(x.sum(1).mean((2, 3), keepdim=True))
        x = self.fc_select(F.relu(self.bn(x)))
        b, c, h, w = x.shape
        return torch.softmax(x.view(b, self.num_paths, c // self.num_paths, h, w), dim=1)


class SelectiveKernel(nn.Module):
    """timm's SelectiveKernel (SKNet), reduced: the input split between two conv paths, their
    outputs stacked on a new dim 1 (``B, paths, C, H, W``), weighted by a softmax over the
    paths from ``fc_select`` (rows ``[path 0 | path 1]``, viewed as ``B, paths, C``) and
    summed; output channel ``c`` is channel ``c`` of every path and rows ``c`` and ``C + c``
    of ``fc_select``."""

    def __init__(self, dim: int = 4, out: int = 6, rd: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 1)
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim // 2, out, 3, padding=d, dilation=d), nn.BatchNorm2d(out))
            for d in (1, 2)
        )
        self.attn = _SelectiveKernelAttn(out, 2, rd)
        self.conv2 = nn.Conv2d(out, 5, 1)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        xs = torch.split(x, x.shape[1] // 2, 1)
        x = torch.stack([F.relu(p(xi)) for p, xi in zip(self.paths, xs)], dim=1)
        x = (x * self.attn(x)).sum(1)
        return self.head(F.relu(self.conv2(x)).mean((2, 3)))


def selective_kernel(seed: int = 0):
    g = _seed(seed)
    return SelectiveKernel(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["selective_kernel"] = selective_kernel


class FactorizedPositions(nn.Module):
    """timm NaFlexViT's factorised position embedding: row and column tables ``(1, H, C)``
    and ``(1, W, C)`` summed by broadcasting (``pos_y[:, :, None] + pos_x[:, None]``: every
    operand broadcast, channels last) and written *in place* into the patch Linear's output
    (a view of a 3-D matmul), then register tokens and a pre-norm MLP block."""

    def __init__(self, dim: int = 8, patch: int = 2, side: int = 3):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(3 * patch * patch, dim)
        self.pos_embed_y = nn.Parameter(torch.randn(1, side, dim) * 0.1)
        self.pos_embed_x = nn.Parameter(torch.randn(1, side, dim) * 0.1)
        self.reg_token = nn.Parameter(torch.randn(1, 2, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        x = self.proj(x.reshape(b, (h // p) * (w // p), p, p, c).flatten(2))
        pos = self.pos_embed_y.unsqueeze(2) + self.pos_embed_x.unsqueeze(1)
        x.add_(pos.flatten(1, 2))
        x = torch.cat([self.reg_token.expand(b, -1, -1), x], 1)
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x.mean(1))


def factorized_positions(seed: int = 0):
    g = _seed(seed)
    return FactorizedPositions(), torch.randn(1, 3, 6, 6, generator=g)


PATTERNS["factorized_positions"] = factorized_positions


class MultiplierFeatures(DepthwiseMultiplier):
    """``DepthwiseMultiplier`` that also returns the map its multiplier convs read (a
    features-only backbone): those channels are fixed, and the convs' outputs keep their own
    group, permutable within the blocks of each input channel."""

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        y = F.relu(self.bn2(self.large(x) + self.small(x)))
        return self.head(F.relu(self.pw(y)).mean((2, 3))), x


def multiplier_features(seed: int = 0):
    g = _seed(seed)
    return MultiplierFeatures(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["multiplier_features"] = multiplier_features


# ---------------------------------------------------------------------------------------------
# branch `mults` (issue 13): per-head norms and channel products


class SpatialGatingMlp(nn.Module):
    """timm gMLP's gated MLP: ``fc1`` makes ``2d`` features, chunked into ``u | v``; ``v`` is
    normalised (``gate.norm``) and mixed across tokens (``gate.proj``, a Linear over the token
    axis), then multiplies ``u`` feature by feature; ``fc2`` reads the ``d`` products. Feature
    ``j`` of ``u`` and feature ``j`` of ``v`` are one channel."""

    def __init__(self, dim: int = 8, hidden: int = 12, tokens: int = 9):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.gate = nn.Module()
        self.gate.norm = nn.LayerNorm(hidden)
        self.gate.proj = nn.Linear(tokens, tokens)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        u, v = F.gelu(self.fc1(x)).chunk(2, dim=-1)
        v = self.gate.proj(self.gate.norm(v).transpose(-1, -2)).transpose(-1, -2)
        return self.fc2(u * v)


class SpatialGatingNet(nn.Module):
    """A patch stem, a pre-norm residual gMLP block, a head on the mean token."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.norm = nn.LayerNorm(dim)
        self.mlp = SpatialGatingMlp(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(1))


def spatial_gating(seed: int = 0):
    g = _seed(seed)
    return SpatialGatingNet(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["spatial_gating"] = spatial_gating


class DecomposedRelPosAttention(nn.Module):
    """timm SAM-ViT's attention: a fused ``qkv`` Linear, ``heads`` heads on a ``side x side``
    map, logits plus ``q`` against relative-position tables ``rel_pos_h/w`` of shape
    ``(2 * side - 1, head_dim)``, raw parameters shared by all heads (gathered by relative
    coordinates, then ``einsum`` with ``q``); ``proj``; pre-norm residual over a patch stem."""

    def __init__(self, dim: int = 16, heads: int = 4, side: int = 3):
        super().__init__()
        self.heads, self.side, hd = heads, side, dim // heads
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.randn(2 * side - 1, hd) * 0.5)
        self.rel_pos_w = nn.Parameter(torch.randn(2 * side - 1, hd) * 0.5)
        self.head = nn.Linear(dim, 3)

    def attend(self, x):
        b, n, c = x.shape
        s, h = self.side, self.heads
        qkv = self.qkv(x).view(b, n, 3, h, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * h, n, -1).unbind(0)
        coords = torch.arange(s)[:, None] - torch.arange(s)[None, :] + s - 1
        rh, rw = self.rel_pos_h[coords], self.rel_pos_w[coords]  # (s, s, hd)
        r_q = q.reshape(b * h, s, s, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
        bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(-1, n, n)
        attn = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias).softmax(-1)
        out = (attn @ v).view(b, h, n, -1).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attend(self.norm(x))
        return self.head(x.mean(1))


def decomposed_rel_pos(seed: int = 0):
    g = _seed(seed)
    return DecomposedRelPosAttention(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["decomposed_rel_pos"] = decomposed_rel_pos


class BiasedInterleavedAttention(nn.Module):
    """timm EfficientFormer's (L1) attention: one Linear *with a bias* makes q/k/v interleaved
    per head (``reshape(B, N, heads, -1).split([key, key, val])``), a per-head bias table
    indexed by the offset of two points, ``proj`` back to the stream; patch stem, residual."""

    def __init__(self, dim: int = 16, heads: int = 2, key_dim: int = 4, ratio: int = 2):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = heads, key_dim, ratio * key_dim
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.qkv = nn.Linear(dim, heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(heads * self.val_dim, dim)
        pos = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"))
        rel = (pos.flatten(1)[:, :, None] - pos.flatten(1)[:, None, :]).abs()
        self.attention_biases = nn.Parameter(torch.randn(heads, 9) * 0.5)
        self.register_buffer("attention_bias_idxs", rel[0] * 3 + rel[1])
        self.head = nn.Linear(dim, 3)

    def attention(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        att = (q @ k.transpose(-2, -1)) * self.key_dim**-0.5
        att = (att + self.attention_biases[:, self.attention_bias_idxs]).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, -1))

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attention(x)
        return self.head(x.mean(1))


def biased_interleaved_attention(seed: int = 0):
    g = _seed(seed)
    return BiasedInterleavedAttention(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["biased_interleaved_attention"] = biased_interleaved_attention


class LocalGlobalQuery(nn.Module):
    """timm EfficientFormer-V2's downsampling query: a strided depthwise conv plus a strided
    pool of the map, then a 1x1 conv-norm ``proj``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.local = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin)
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.proj = ConvNormQK(cin, cout)

    def forward(self, x):
        return self.proj(self.local(x) + self.pool(x))


class DownsampleAttention2d(nn.Module):
    """timm EfficientFormer-V2's ``Attention2dDownsample``: the query at half resolution
    (:class:`LocalGlobalQuery`), conv-norm k and v at full resolution, per-head bias table,
    ``attn @ v`` merged to ``B, dh, H/2, W/2`` plus a strided depthwise ``v_local`` of v,
    GELU, conv-norm ``proj`` to a new width; conv stem, head on the mean."""

    def __init__(self, width: int = 8, num_heads: int = 2, key_dim: int = 3, ratio: int = 2):
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.dh = ratio * key_dim * num_heads
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.q = LocalGlobalQuery(width, num_heads * key_dim)
        self.k = ConvNormQK(width, num_heads * key_dim)
        self.v = ConvNormQK(width, self.dh)
        self.v_local = ConvNormQK(self.dh, self.dh, 3, groups=self.dh)
        self.v_local.conv.stride = (2, 2)  # strided, as in timm
        self.attention_biases = nn.Parameter(torch.randn(num_heads, 16) * 0.5)
        self.proj = ConvNormQK(self.dh, 2 * width)
        self.head = nn.Linear(2 * width, 3)

    def forward(self, x):
        x = self.stem(x)
        b, _, h, w = x.shape
        n, n2 = h * w, (h // 2) * (w // 2)
        q = self.q(x).reshape(b, self.num_heads, -1, n2).permute(0, 1, 3, 2)
        k = self.k(x).reshape(b, self.num_heads, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, -1, n).permute(0, 1, 3, 2)
        a = (q @ k * self.key_dim**-0.5 + self.attention_biases[:, None, :n]).softmax(-1)
        out = (a @ v).transpose(2, 3).reshape(b, self.dh, h // 2, w // 2) + v_local
        return self.head(self.proj(F.gelu(out)).mean((2, 3)))


def downsample_attention_2d(seed: int = 0):
    g = _seed(seed)
    return DownsampleAttention2d(), torch.randn(2, 3, 4, 4, generator=g)


PATTERNS["downsample_attention_2d"] = downsample_attention_2d


class GatedSingleHeadAttention(nn.Module):
    """timm iFormer's ``SHMA``: conv-norm q and k of ``a`` channels, one head (``q^T @ k`` on
    ``B, C, H*W`` maps); conv-norm ``v_gate`` of ``2m`` channels, sigmoid, chunked into
    ``v | gate``; ``(v @ attn^T) * gate`` into conv-norm ``proj``; conv stem, residual, head."""

    def __init__(self, width: int = 8, a: int = 4, mid: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.q, self.k = ConvNormQK(width, a), ConvNormQK(width, a)
        self.v_gate = ConvNormQK(width, 2 * mid)
        self.proj = ConvNormQK(mid, width)
        self.head = nn.Linear(width, 3)

    def attend(self, x):
        b, _, h, w = x.shape
        v, gate = torch.sigmoid(self.v_gate(x)).chunk(2, dim=1)
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), v.flatten(2)
        attn = (q.transpose(-2, -1) @ k * q.shape[1] ** -0.5).softmax(dim=-1)
        return self.proj((v @ attn.transpose(-2, -1)).view(b, -1, h, w) * gate)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.attend(x)
        return self.head(x.mean((2, 3)))


def gated_single_head(seed: int = 0):
    g = _seed(seed)
    return GatedSingleHeadAttention(), torch.randn(2, 3, 4, 4, generator=g)


PATTERNS["gated_single_head"] = gated_single_head


class PooledAttention(nn.Module):
    """timm MViT-v2's pooled attention: a fused ``qkv`` Linear, ``heads`` heads; q, k and v of
    every head pooled by depthwise convs over ``head_dim`` channels (on ``B * heads, hd, H,
    W``: one conv shared by the heads; k and v strided) and LayerNorms of ``head_dim``;
    ``attn @ v + q`` (residual pooling), ``proj``; patch stem, residual, head on the mean."""

    def __init__(self, dim: int = 16, heads: int = 2, side: int = 4):
        super().__init__()
        self.heads, self.side, hd = heads, side, dim // heads
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.pool_q = nn.Conv2d(hd, hd, 3, padding=1, groups=hd, bias=False)
        self.pool_k = nn.Conv2d(hd, hd, 3, stride=2, padding=1, groups=hd, bias=False)
        self.pool_v = nn.Conv2d(hd, hd, 3, stride=2, padding=1, groups=hd, bias=False)
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(hd), nn.LayerNorm(hd), nn.LayerNorm(hd)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def pool(self, t, conv, norm):
        b, h, _, d = t.shape
        t = t.reshape(b * h, self.side, self.side, d).permute(0, 3, 1, 2)
        t = conv(t)
        return norm(t.reshape(b, h, d, -1).transpose(2, 3))

    def attend(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q = self.pool(q, self.pool_q, self.norm_q)
        k = self.pool(k, self.pool_k, self.norm_k)
        v = self.pool(v, self.pool_v, self.norm_v)
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        out = attn @ v + q
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attend(x)
        return self.head(x.mean(1))


def pooled_attention(seed: int = 0):
    g = _seed(seed)
    return PooledAttention(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["pooled_attention"] = pooled_attention


class WrappedLinear(nn.Module):
    """timm Gemma-4's ``Gemma4ClippableLinear`` without clipping: a module holding a Linear."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=False)

    def forward(self, x):
        return self.linear(x)


class PerHeadNormAttention(nn.Module):
    """timm Gemma-4 ViT's (and Qwen3's) attention: q, k, v projections (wrapped Linears),
    ``q_norm``/``k_norm`` LayerNorms over ``head_dim`` shared by all heads, ``o_proj``;
    pre-norm residual over a patch stem, a gated MLP, head on the mean token."""

    def __init__(self, dim: int = 16, heads: int = 4):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.q_proj, self.k_proj = WrappedLinear(dim, dim), WrappedLinear(dim, dim)
        self.v_proj, self.o_proj = WrappedLinear(dim, dim), WrappedLinear(dim, dim)
        self.q_norm, self.k_norm = nn.LayerNorm(self.head_dim), nn.LayerNorm(self.head_dim)
        self.head = nn.Linear(dim, 3)

    def attend(self, x):
        b, n, c = x.shape
        shape = (b, n, self.num_heads, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.o_proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attend(x)
        return self.head(x.mean(1))


def per_head_norm_attention(seed: int = 0):
    g = _seed(seed)
    return PerHeadNormAttention(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["per_head_norm_attention"] = per_head_norm_attention


def pooled_attention_one_head(seed: int = 0):
    """:class:`PooledAttention` with one head (MViT-v2's first stage): the pooling convs and
    norms run over all the channels, which permute together with them."""
    g = _seed(seed)
    return PooledAttention(dim=8, heads=1), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["pooled_attention_one_head"] = pooled_attention_one_head


# ---------------------------------------------------------------------------------------------
# walks that did not end (branch `walks`): timm models whose dependency walks cycled


class GatedConvBlock(nn.Module):
    """timm MambaOut's gated CNN block on channels-last maps: one Linear makes
    ``[g | i | c]``, split on the last dim; ``c`` goes through a depthwise conv (permuted to
    channels first and back) and is concatenated back with ``i``; ``act(g) * cat(i, c)``;
    a Linear back to the stream; residual. The split and the concat of its pieces made
    Torch-Pruning's index maps shift the indices on every lap."""

    def __init__(self, dim: int = 8, hidden: int = 12, conv: int = 8):
        super().__init__()
        self.split = (hidden, hidden - conv, conv)
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.conv = nn.Conv2d(conv, conv, 3, padding=1, groups=conv)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)  # B, H, W, C
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split, dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.fc2(F.gelu(g) * torch.cat((i, c), dim=-1))
        return self.head(x.mean((1, 2)))


def gated_conv_block(seed: int = 0):
    g = _seed(seed)
    return GatedConvBlock(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["gated_conv_block"] = gated_conv_block


class DimMajorHeadsAttention(nn.Module):
    """timm NesT's attention on ``B, T, N, C`` blocks: a fused ``[q | k | v]`` Linear,
    ``(attn @ v).permute(0, 2, 3, 4, 1).reshape(B, T, N, C)``: the heads are merged back
    dim-major, so dim j of head h is channel ``j * heads + h`` of the projection's input."""

    def __init__(self, dim: int = 8, heads: int = 2):
        super().__init__()
        self.heads = self.num_heads = heads
        self.stem = nn.Linear(3, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        b, t, n, c = x.shape
        qkv = self.qkv(x).reshape(b, t, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # B, heads, T, N, hd
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
        y = (attn @ v).permute(0, 2, 3, 4, 1).reshape(b, t, n, c)
        return self.head((x + self.proj(y)).mean((1, 2)))


def dim_major_heads_attention(seed: int = 0):
    g = _seed(seed)
    return DimMajorHeadsAttention(), torch.randn(2, 3, 4, 3, generator=g)


PATTERNS["dim_major_heads_attention"] = dim_major_heads_attention


# ---------------------------------------------------------------------------------------------
# branch `tokens` (issue 13): Linears over the token axis, talking heads


class TokenMixingNet(nn.Module):
    """MLP-Mixer (timm's ``MixerBlock``): a patch stem, then per block a token-mixing MLP
    applied to ``norm1(x).transpose(1, 2)`` (``mlp_tokens.fc1: tokens -> hidden``,
    ``fc2: hidden -> tokens``) and transposed back into the stream, then a channel MLP; a
    head on the mean token. The token MLP is applied to each channel alike: the stream's
    channel ``c`` stays channel ``c`` through it; its hidden units are a group of their own;
    its inputs and outputs are tokens (fixed by the data)."""

    def __init__(self, dim: int = 8, tokens: int = 9, hidden: int = 5, blocks: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            b = nn.Module()
            b.norm1, b.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            b.mlp_tokens = nn.Sequential(
                OrderedDict(
                    fc1=nn.Linear(tokens, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, tokens)
                )
            )
            b.mlp_channels = nn.Sequential(
                OrderedDict(fc1=nn.Linear(dim, 2 * dim), act=nn.GELU(), fc2=nn.Linear(2 * dim, dim))
            )
            self.blocks.append(b)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            x = x + b.mlp_tokens(b.norm1(x).transpose(1, 2)).transpose(1, 2)
            x = x + b.mlp_channels(b.norm2(x))
        return self.head(self.norm(x).mean(1))


def token_mixing(seed: int = 0):
    g = _seed(seed)
    return TokenMixingNet(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["token_mixing"] = token_mixing


class _Affine(nn.Module):
    """ResMLP's ``Affine`` norm: ``beta + alpha * x`` with ``(1, 1, C)`` parameters."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


class TokenLinearNet(nn.Module):
    """ResMLP (timm's ``ResBlock``): one Linear over the tokens (``linear_tokens``, square)
    on ``norm1(x).transpose(1, 2)``, transposed back, scaled per channel by ``ls1`` and added
    to the stream; then a channel MLP scaled by ``ls2``. The stream's channels pass through
    ``linear_tokens`` unchanged, and its rows and columns are tokens. Twelve blocks: deep enough
    that the channel dim of a late block's input is followed back past the first blocks."""

    def __init__(self, dim: int = 8, tokens: int = 9, blocks: int = 12):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            b = nn.Module()
            b.norm1, b.norm2 = _Affine(dim), _Affine(dim)
            b.linear_tokens = nn.Linear(tokens, tokens)
            b.fc1, b.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
            b.ls1 = nn.Parameter(torch.rand(dim) + 0.5)
            b.ls2 = nn.Parameter(torch.rand(dim) + 0.5)
            self.blocks.append(b)
        self.norm = _Affine(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            x = x + b.ls1 * b.linear_tokens(b.norm1(x).transpose(1, 2)).transpose(1, 2)
            x = x + b.ls2 * b.fc2(F.gelu(b.fc1(b.norm2(x))))
        return self.head(self.norm(x).mean(1))


def token_linear(seed: int = 0):
    g = _seed(seed)
    return TokenLinearNet(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["token_linear"] = token_linear


class PerStepHeads(nn.Module):
    """:class:`MHAModel` and :class:`RecurrentModel` with their heads applied at every step of
    the ``(batch, time, features)`` output, not to one pooled vector: the heads read the
    features (last dim) of a batch-first layer, not a time axis."""

    def __init__(self, cell: type[nn.Module] | None):
        super().__init__()
        self.embed = nn.Linear(6, 16 if cell is None else 10)
        if cell is None:
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        else:
            self.rnn = cell(10, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(16 if cell is None else 8, 3)

    def forward(self, x):
        h = self.embed(x)
        out = self.attn(h, h, h, need_weights=False)[0] if hasattr(self, "attn") else self.rnn(h)[0]
        return self.head(out).mean(1)


PATTERNS["per_step_attention"] = lambda seed=0: (PerStepHeads(None), mha_model(seed)[1])
PATTERNS["per_step_lstm"] = lambda seed=0: (PerStepHeads(nn.LSTM), lstm_model(seed)[1])


class _ConvNorm(nn.Module):
    """timm LeViT-conv's ``ConvNorm``: a 1x1 convolution (named ``linear``) and a BatchNorm."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.linear(x))


class LeViTConvAttention(nn.Module):
    """timm's ``levit_conv`` attention on ``B, C, H, W`` maps: a ConvNorm ``qkv`` with q/k/v
    interleaved per head (``view(B, heads, -1, H*W).split([key, key, val], dim=2)``), logits
    ``q^T @ k`` plus per-head bias tables, ``(v @ attn^T).view(B, -1, H, W)`` into
    Hardswish + ConvNorm ``proj``; then the subsampling attention (``AttentionDownsample``):
    ConvNorm ``kv`` with k/v interleaved per head, ``q`` a stride-2 pool then a ConvNorm, its
    output of another width (no residual). Head on the mean pixel."""

    def __init__(self, dim: int = 16, out: int = 24, heads: int = 2, key_dim: int = 4):
        super().__init__()
        self.heads, self.key_dim, self.val_dim = heads, key_dim, 2 * key_dim
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, stride=2), nn.BatchNorm2d(dim))
        vd = self.val_dim
        self.attn = nn.Module()
        self.attn.qkv = _ConvNorm(dim, heads * (2 * key_dim + vd))
        self.attn.proj = nn.Sequential(
            OrderedDict(act=nn.Hardswish(), ln=_ConvNorm(heads * vd, dim))
        )
        self.attn.attention_biases = nn.Parameter(torch.randn(heads, 16, 16) * 0.1)
        self.down = nn.Module()
        self.down.kv = _ConvNorm(dim, heads * (key_dim + vd))
        self.down.q = nn.Sequential(
            OrderedDict(down=nn.AvgPool2d(1, stride=2), ln=_ConvNorm(dim, heads * key_dim))
        )
        self.down.proj = nn.Sequential(
            OrderedDict(act=nn.Hardswish(), ln=_ConvNorm(heads * vd, out))
        )
        self.down.attention_biases = nn.Parameter(torch.randn(heads, 4, 16) * 0.1)
        for m in (self.attn, self.down):  # as timm's modules carry them
            m.num_heads, m.key_dim, m.val_dim = heads, key_dim, vd
        self.head = nn.Linear(out, 3)

    def forward(self, x):
        x = self.stem(x)
        b, _, h, w = x.shape
        a, kd, vd = self.attn, self.key_dim, self.val_dim
        q, k, v = a.qkv(x).view(b, self.heads, -1, h * w).split([kd, kd, vd], dim=2)
        att = ((q.transpose(-2, -1) @ k) * kd**-0.5 + a.attention_biases).softmax(-1)
        x = x + a.proj((v @ att.transpose(-2, -1)).view(b, -1, h, w))
        d = self.down
        k, v = d.kv(x).view(b, self.heads, -1, h * w).split([kd, vd], dim=2)
        q = d.q(x).view(b, self.heads, kd, -1)
        att = ((q.transpose(-2, -1) @ k) * kd**-0.5 + d.attention_biases).softmax(-1)
        x = d.proj((v @ att.transpose(-2, -1)).reshape(b, -1, h // 2, w // 2))
        return self.head(x.mean((2, 3)))


def levit_conv_attention(seed: int = 0):
    g = _seed(seed)
    return LeViTConvAttention(), torch.randn(2, 3, 8, 8, generator=g)


PATTERNS["levit_conv_attention"] = levit_conv_attention


class TalkingHeadsNet(nn.Module):
    """CaiT (timm's ``LayerScaleBlock`` with ``TalkingHeadAttn``): a patch stem; a pre-norm
    block whose fused ``qkv`` Linear makes ``[q | k | v]`` of ``heads`` heads, logits mixed
    across heads by ``proj_l`` (a Linear over the heads dim of ``B, H, N, N``) before the
    softmax and by ``proj_w`` after it, ``attn @ v`` into ``proj``, scaled per channel by
    ``gamma_1``; then an MLP scaled by ``gamma_2``; a head on the mean token."""

    def __init__(self, dim: int = 12, heads: int = 3):
        super().__init__()
        self.heads = heads
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.num_heads = heads
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj_l, self.attn.proj_w = nn.Linear(heads, heads), nn.Linear(heads, heads)
        self.attn.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.gamma_1 = nn.Parameter(torch.rand(dim) + 0.5)
        self.gamma_2 = nn.Parameter(torch.rand(dim) + 0.5)
        self.head = nn.Linear(dim, 3)

    def attend(self, x):
        a, (b, n, c) = self.attn, x.shape
        qkv = a.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // self.heads) ** -0.5, qkv[1], qkv[2]
        att = a.proj_l((q @ k.transpose(-2, -1)).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        att = a.proj_w(att.softmax(-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return a.proj((att @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.gamma_1 * self.attend(self.norm1(x))
        x = x + self.gamma_2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def talking_heads(seed: int = 0):
    g = _seed(seed)
    return TalkingHeadsNet(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["talking_heads"] = talking_heads


class SharedSlopeMlp(nn.Module):
    """Linears on ``(batch, tokens, features)`` with a one-slope ``nn.PReLU()`` between them:
    a layer with a parameter that is element-wise, not a channels-first layer, so the second
    Linear reads features (no token-mixing Linear)."""

    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(5, 8), nn.PReLU(), nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.b(self.act(self.a(x)))).mean(1)


PATTERNS["shared_slope_mlp"] = lambda seed=0: (
    SharedSlopeMlp(),
    torch.randn(2, 4, 5, generator=_seed(seed)),
)


def _halo_rel_logits_1d(q, rel_k, permute_mask):
    """timm's halo ``rel_logits_1d``: logits of a block's queries against relative offsets
    within its window (block plus halo), along one axis."""
    b, h, w, _ = q.shape
    rel_size = rel_k.shape[0]
    win = (rel_size + 1) // 2
    x = (q @ rel_k.transpose(-1, -2)).reshape(-1, w, rel_size)
    x = F.pad(F.pad(x, [0, 1]).flatten(1), [0, rel_size - w]).reshape(-1, w + 1, rel_size)
    x = x[:, :w, win - 1 :].reshape(b, h, 1, w, win).expand(-1, -1, win, -1, -1)
    return x.permute(permute_mask)


class HaloPosEmbedRel(nn.Module):
    """timm's halo ``PosEmbedRel``: tables [2 * window - 1, key head dim] per axis."""

    def __init__(self, block: int, win: int, dim_head: int):
        super().__init__()
        self.block, self.dim_head = block, dim_head
        self.height_rel = nn.Parameter(torch.randn(2 * win - 1, dim_head) * 0.1)
        self.width_rel = nn.Parameter(torch.randn(2 * win - 1, dim_head) * 0.1)

    def forward(self, q):
        b, bb, hw, _ = q.shape
        q = q.reshape(-1, self.block, self.block, self.dim_head)
        rel_w = _halo_rel_logits_1d(q, self.width_rel, (0, 1, 3, 2, 4))
        rel_h = _halo_rel_logits_1d(q.transpose(1, 2), self.height_rel, (0, 3, 1, 4, 2))
        return (rel_h + rel_w).reshape(b, bb, hw, -1)


class HaloAttn(nn.Module):
    """timm's ``HaloAttn``: 1x1 ``q`` conv (``heads * dqk``), 1x1 ``kv`` conv (``[k | v]``
    per head), padded and unfolded into overlapping windows around each block, ``q @ k`` plus
    relative-position logits, ``attn @ v`` folded back to the map."""

    def __init__(self, dim: int, heads: int = 2, dqk: int = 4, dv: int = 3, block: int = 2):
        super().__init__()
        self.num_heads, self.dim_head_qk, self.dim_head_v = heads, dqk, dv
        self.dim_out_qk, self.dim_out_v = heads * dqk, heads * dv
        self.block_size, self.halo_size, self.win_size = block, 1, block + 2
        self.q = nn.Conv2d(dim, self.dim_out_qk, 1, bias=False)
        self.kv = nn.Conv2d(dim, self.dim_out_qk + self.dim_out_v, 1, bias=False)
        self.pos_embed = HaloPosEmbedRel(block, self.win_size, dqk)

    def forward(self, x):
        b, _, h, w = x.shape
        bs, nh, nw = self.block_size, h // self.block_size, w // self.block_size
        q = self.q(x).reshape(-1, self.dim_head_qk, nh, bs, nw, bs).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(b * self.num_heads, self.dim_head_qk, -1, nh * nw).transpose(1, 3)
        kv = F.pad(self.kv(x), [self.halo_size] * 4)
        kv = kv.unfold(2, self.win_size, bs).unfold(3, self.win_size, bs)
        kv = kv.reshape(b * self.num_heads, self.dim_head_qk + self.dim_head_v, nh * nw, -1)
        k, v = torch.split(kv.permute(0, 2, 3, 1), [self.dim_head_qk, self.dim_head_v], dim=-1)
        att = (q @ k.transpose(-1, -2)) * self.dim_head_qk**-0.5 + self.pos_embed(q)
        out = (att.softmax(-1) @ v).transpose(1, 3)
        out = out.reshape(-1, bs, bs, nh, nw).permute(0, 3, 1, 4, 2)
        return out.contiguous().view(b, self.dim_out_v, h, w)


class LambdaLayer(nn.Module):
    """timm's ``LambdaLayer`` (LambdaNet): one 1x1 ``qkv`` conv split into q (``heads * K``,
    BatchNorm), k (``K``, softmax over positions) and v (``V``, BatchNorm); content lambda
    ``k @ v``, position lambda a Conv3d over v's map; every head reads one v."""

    def __init__(self, dim: int, heads: int = 2, dk: int = 4, dv: int = 3, r: int = 3):
        super().__init__()
        self.num_heads, self.dim_qk, self.dim_v = heads, dk, dv
        self.qkv = nn.Conv2d(dim, heads * dk + dk + dv, 1, bias=False)
        self.norm_q, self.norm_v = nn.BatchNorm2d(heads * dk), nn.BatchNorm2d(dv)
        self.conv_lambda = nn.Conv3d(1, dk, (r, r, 1), padding=(r // 2, r // 2, 0))

    def forward(self, x):
        b, _, h, w = x.shape
        m, hd = h * w, self.num_heads
        q, k, v = torch.split(self.qkv(x), [hd * self.dim_qk, self.dim_qk, self.dim_v], 1)
        q = self.norm_q(q).reshape(b, hd, self.dim_qk, m).transpose(-1, -2)
        v = self.norm_v(v).reshape(b, self.dim_v, m).transpose(-1, -2)
        k = F.softmax(k.reshape(b, self.dim_qk, m), dim=-1)
        content = q @ (k @ v).unsqueeze(1)
        lam = self.conv_lambda(v.reshape(b, 1, h, w, self.dim_v))
        lam = lam.reshape(b, 1, self.dim_qk, m, self.dim_v).transpose(2, 3)
        position = (q.unsqueeze(-2) @ lam).squeeze(-2)
        return (content + position).transpose(-1, -2).reshape(b, hd * self.dim_v, h, w)


class AttnBottleneck(nn.Module):
    """timm's ByobNet ``SelfAttnBlock`` around an attention over the map: 1x1 conv-bn in, the
    attention, BatchNorm + ReLU, 1x1 conv-bn out, residual."""

    def __init__(self, attn: str, dim: int = 8, inner: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, stride=2), nn.BatchNorm2d(dim))
        self.conv1 = nn.Sequential(nn.Conv2d(dim, inner, 1, bias=False), nn.BatchNorm2d(inner))
        self.self_attn = HaloAttn(inner) if attn == "halo" else LambdaLayer(inner)
        out = self.self_attn.num_heads * getattr(self.self_attn, "dim_v", 3)
        self.post_attn = nn.BatchNorm2d(out)
        self.conv3 = nn.Sequential(nn.Conv2d(out, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.conv1(x))
        y = F.relu(self.post_attn(self.self_attn(y)))
        x = F.relu(x + self.conv3(y))
        return self.head(x.mean((2, 3)))


PATTERNS["halo_attn"] = lambda seed=0: (
    AttnBottleneck("halo"),
    torch.randn(2, 3, 8, 8, generator=_seed(seed)),
)
PATTERNS["lambda_layer"] = lambda seed=0: (
    AttnBottleneck("lambda"),
    torch.randn(2, 3, 8, 8, generator=_seed(seed)),
)


class ConvRelPosEnc(nn.Module):
    """CoaT's convolutional relative position encoding: v's channels split by groups of heads
    into depthwise convs of one kernel size each, ``q * conv(v)`` (class token left out)."""

    def __init__(self, d: int, window: dict[int, int]):
        super().__init__()
        self.conv_list = nn.ModuleList(
            nn.Conv2d(s * d, s * d, k, padding=k // 2, groups=s * d) for k, s in window.items()
        )
        self.head_splits = list(window.values())
        self.channel_splits = [s * d for s in self.head_splits]

    def forward(self, q, v, size):
        b, heads, _, d = q.shape
        h, w = size
        v_img = v[:, :, 1:, :].transpose(-1, -2).reshape(b, heads * d, h, w)
        pieces = torch.split(v_img, self.channel_splits, dim=1)
        conv_v = torch.cat([c(p) for c, p in zip(self.conv_list, pieces)], dim=1)
        conv_v = conv_v.reshape(b, heads, d, h * w).transpose(-1, -2)
        return F.pad(q[:, :, 1:, :] * conv_v, (0, 0, 1, 0, 0, 0))


class FactorAttnConvRelPosEnc(nn.Module):
    """CoaT's factorized attention: ``q @ (softmax(k)^T @ v)`` plus a shared ``crpe``."""

    def __init__(self, dim: int, heads: int, crpe: ConvRelPosEnc):
        super().__init__()
        self.num_heads, self.crpe = heads, crpe
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, size):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        att = q @ (k.softmax(dim=2).transpose(-1, -2) @ v)
        x = (c // self.num_heads) ** -0.5 * att + self.crpe(q, v, size)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class CoaTLite(nn.Module):
    """CoaT-Lite's serial blocks: a patch conv, a class token, two pre-norm blocks whose
    factorized attentions share one ``crpe`` (3 heads: kernel 3 for two heads, 5 for one),
    an MLP each, the class token to the head."""

    def __init__(self, dim: int = 12, heads: int = 3):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.crpe = ConvRelPosEnc(dim // heads, {3: 2, 5: 1})
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.attn = nn.ModuleList(FactorAttnConvRelPosEnc(dim, heads, self.crpe) for _ in range(2))
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.fc1 = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(2))
        self.fc2 = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(2))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x)
        size = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for i in range(2):
            x = x + self.attn[i](self.norm1[i](x), size)
            x = x + self.fc2[i](F.gelu(self.fc1[i](self.norm2[i](x))))
        return self.head(x[:, 0])


PATTERNS["coat_factor_attn"] = lambda seed=0: (
    CoaTLite(),
    torch.randn(2, 3, 8, 8, generator=_seed(seed)),
)


class SelectiveKernelUnit(nn.Module):
    """timm's SKNet unit (``SelectiveKernel`` with ``SelectiveKernelAttn``) as in its
    bottlenecks (``split_input=False``, unlike :class:`SelectiveKernel`): a stem conv; two
    paths (a 3x3 and a dilated 3x3 conv, each with BN and ReLU) of ``c`` channels, stacked on
    dim 1 as ``(B, 2, c, H, W)``; their sum, pooled, goes through ``fc_reduce`` (1x1 conv),
    ``attn_bn``, a ReLU and ``fc_select`` (1x1 conv, ``2 * c`` rows) viewed as
    ``(B, 2, c, 1, 1)`` (row ``p * c + i`` weighs channel ``i`` of path ``p``: two blocks),
    softmax over the paths; the paths' weighted sum feeds a 1x1 conv and a head.
    ``dead_bias``: ``attn_bn``'s bias (-100: the ReLU is zero for every input, by
    construction, so ``fc_select`` has no effect on the output)."""

    def __init__(self, c: int = 8, attn: int = 4, dead_bias: float | None = None):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(6, c, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(c), nn.ReLU()
            )
            for d in (1, 2)
        )
        self.fc_reduce = nn.Conv2d(c, attn, 1, bias=False)
        self.attn_bn = nn.BatchNorm2d(attn)
        self.fc_select = nn.Conv2d(attn, 2 * c, 1, bias=False)
        self.conv3 = nn.Conv2d(c, 5, 1)
        self.head = nn.Linear(5, 3)
        if dead_bias is not None:
            with torch.no_grad():
                self.attn_bn.bias.fill_(dead_bias)

    def forward(self, x):
        x = self.stem(x)
        xs = torch.stack([p(x) for p in self.paths], dim=1)
        b, k, c = xs.shape[:3]
        s = xs.sum(1).mean((2, 3), keepdim=True)
        a = self.fc_select(F.relu(self.attn_bn(self.fc_reduce(s))))
        a = a.view(b, k, c, 1, 1).softmax(dim=1)
        return self.head(self.conv3((xs * a).sum(1)).mean((2, 3)))


def selective_kernel_unit(seed: int = 0, dead_bias: float | None = None):
    g = _seed(seed)
    torch.manual_seed(seed)
    return SelectiveKernelUnit(dead_bias=dead_bias), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["selective_kernel_unit"] = selective_kernel_unit


class SplitAttnNet(nn.Module):
    """timm's ResNeSt split attention (``SplitAttn`` with ``RadixSoftmax``), radix 2,
    cardinality 1: ``conv`` (groups = radix) makes ``radix * c`` channels, reshaped to
    ``(B, radix, c, H, W)`` and summed over the radix for the pooled ``fc1`` -> ``bn1`` ->
    ReLU -> ``fc2`` (``radix * c`` rows), viewed as ``(B, cardinality, radix, -1)``,
    transposed, softmaxed over the radix and reshaped back; the radix paths' weighted sum feeds
    a 1x1 conv and a head. Channel ``i`` of the output is rows ``i`` and ``c + i`` of ``conv``,
    ``bn0`` and ``fc2``, column ``i`` of ``fc1`` and of ``conv3``."""

    def __init__(self, cin: int = 8, c: int = 6, radix: int = 2, card: int = 1, attn: int = 4):
        super().__init__()
        self.radix, self.card = radix, card
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        self.conv = nn.Conv2d(cin, c * radix, 3, padding=1, groups=card * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(c * radix)
        self.fc1 = nn.Conv2d(c, attn, 1, groups=card)
        self.bn1 = nn.BatchNorm2d(attn)
        self.fc2 = nn.Conv2d(attn, c * radix, 1, groups=card)
        self.conv3 = nn.Conv2d(c, 5, 1)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv(self.stem(x))))
        b, rc, h, w = x.shape
        x = x.reshape(b, self.radix, rc // self.radix, h, w)
        a = self.fc2(F.relu(self.bn1(self.fc1(x.sum(1).mean((2, 3), keepdim=True)))))
        a = a.view(b, self.card, self.radix, -1).transpose(1, 2)
        a = F.softmax(a, dim=1).reshape(b, -1).view(b, -1, 1, 1)
        out = (x * a.reshape(b, self.radix, rc // self.radix, 1, 1)).sum(1)
        return self.head(self.conv3(out).mean((2, 3)))


def split_attn(seed: int = 0):
    g = _seed(seed)
    torch.manual_seed(seed)
    return SplitAttnNet(), torch.randn(2, 3, 6, 6, generator=g)


PATTERNS["split_attn"] = split_attn


# ---------------------------------------------------------------------------------------------
# hand-written norms (timm's EvoNorm): statistics computed with reshapes, not nn modules


def _group_std(x, groups: int, flatten: bool = False):
    """timm's ``group_std``: one standard deviation per sample and group of channels."""
    b, c, h, w = x.shape
    if flatten:
        x = x.reshape(b, groups, -1)
        std = x.var(dim=2, unbiased=False, keepdim=True).add(1e-5).sqrt()
    else:
        x = x.reshape(b, groups, c // groups, h, w)
        std = x.var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(1e-5).sqrt()
    return std.expand(x.shape).reshape(b, c, h, w)


class EvoNormS0(nn.Module):
    """timm's ``EvoNorm2dS0``: ``x * sigmoid(v * x) / group_std(x)``, then a per-channel affine;
    the statistic is computed by hand (reshape into groups, variance, expand back)."""

    def __init__(self, c: int, groups: int, flatten: bool = False):
        super().__init__()
        self.groups, self.flatten = groups, flatten
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.randn(c) / 4)
        self.v = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        v = self.v.view(1, -1, 1, 1)
        x = x * (x * v).sigmoid() / _group_std(x, self.groups, self.flatten)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class EvoNormB0(nn.Module):
    """timm's ``EvoNorm2dB0`` in eval mode: ``x / max(sqrt(running_var), v * x +
    instance_std(x))``, per channel (a running-variance buffer, a per-channel spatial std)."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.randn(c) / 4)
        self.v = nn.Parameter(torch.rand(c) + 0.5)
        self.register_buffer("running_var", torch.rand(c) + 0.5)

    def forward(self, x):
        shape = (1, -1, 1, 1)
        left = self.running_var.add(1e-3).sqrt().view(shape).expand_as(x)
        std = x.var(dim=(2, 3), unbiased=False, keepdim=True).add(1e-5).sqrt().expand(x.shape)
        x = x / left.max(x * self.v.view(shape) + std)
        return x * self.weight.view(shape) + self.bias.view(shape)


class EvoNormResNet(nn.Module):
    """A pre-activation residual block normalised by EvoNorms (timm's ``resnetv2_50d_evos``,
    ``ese_vovnet39b_evos``): the stream's norm has 4 groups of 2 channels, the hidden one 3
    groups of 4 (the ``(B, G, -1)`` form), the stem's is an EvoNorm-B0 (per channel)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.n0 = EvoNormB0(8)
        self.n1 = EvoNormS0(8, groups=4)
        self.conv1 = nn.Conv2d(8, 12, 3, padding=1)
        self.n2 = EvoNormS0(12, groups=3, flatten=True)
        self.conv2 = nn.Conv2d(12, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.n0(self.stem(x))
        x = x + self.conv2(self.n2(self.conv1(self.n1(x))))
        return self.head(x.mean((2, 3)))


class EvoNormConcat(nn.Module):
    """Two convs concatenated, then one hand-written group norm over the concatenation: ``a``'s
    8 channels are whole groups of 4 of it (they permute within each); ``b``'s 6 channels
    with ``c``'s 2 share a group (``b`` covers one and a half groups: no block structure)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(3, 2, 1)
        self.norm = EvoNormS0(16, groups=4)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        y = self.norm(torch.cat([self.a(x), self.b(x), self.c(x)], 1))
        return self.head(y.mean((2, 3)))


PATTERNS["evonorm_resnet"] = lambda seed=0: (
    EvoNormResNet(),
    torch.randn(2, 3, 6, 6, generator=_seed(seed)),
)
PARTLY_GROUPED["evonorm_concat"] = lambda seed=0: (
    EvoNormConcat(),
    torch.randn(2, 3, 5, 5, generator=_seed(seed)),
)


# ---------------------------------------------------------------------------------------------
# GC-ViT: a global query made from the stream, a per-head relative position table


class GlobalQueryAttention(nn.Module):
    """timm GC-ViT's ``WindowAttentionGlobal`` with a global query: keys and values from
    ``qkv`` (``2 * dim`` rows), queries from a tensor made outside (``q_global``), a
    ``(positions, heads)`` relative position table added to the scores per head."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = nn.Module()
        table = torch.randn((2 * window - 1) ** 2, heads) / 4
        self.rel_pos.relative_position_bias_table = nn.Parameter(table)
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()])
        rel = (pos[:, :, None] - pos[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())

    def forward(self, x, q_global):
        b, n, c = x.shape
        h = self.num_heads
        kv = self.qkv(x).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        q = q_global.reshape(b, n, h, c // h).permute(0, 2, 1, 3) * (c // h) ** -0.5
        bias = self.rel_pos.relative_position_bias_table[self.index].view(n, n, h)
        attn = (q @ k.transpose(-2, -1) + bias.permute(2, 0, 1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class GlobalQueryNet(nn.Module):
    """A GC-ViT block on one window: the global query is the stream after a residual conv
    (GC-ViT's ``global_block``), so the keys' rows meet the stream's channels within heads."""

    def __init__(self, dim: int = 8, heads: int = 2, window: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.gconv = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = GlobalQueryAttention(dim, heads, window)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        q = (x + self.gconv(x)).flatten(2).transpose(1, 2)
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm1(t), q)
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return self.head(t.mean(1))


PATTERNS["global_query_window"] = lambda seed=0: (
    GlobalQueryNet(),
    torch.randn(2, 3, 4, 4, generator=_seed(seed)),
)


# ---------------------------------------------------------------------------------------------
# EdgeNeXt: split-depthwise blocks with cross-covariance attention (a 3-D parameter)


class CrossCovarianceAttention(nn.Module):
    """timm EdgeNeXt's ``CrossCovarianceAttn`` (XCA): q and k normalised over tokens, a
    channels-by-channels attention within each head scaled by a per-head ``temperature`` of
    shape ``(heads, 1, 1)``, applied to v; ``proj`` after."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.temperature = nn.Parameter(torch.rand(heads, 1, 1) + 0.5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = (attn * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, c))


class SplitTransposeBlock(nn.Module):
    """timm EdgeNeXt's ``SplitTransposeBlock``: the chained split-depthwise convs of
    :class:`SplitChainNet`, then XCA on the tokens (channels last) and an MLP, residual."""

    def __init__(self, dim: int = 9, scales: int = 3, heads: int = 3):
        super().__init__()
        self.scales = scales
        w = dim // scales
        self.convs = nn.ModuleList(
            nn.Conv2d(w, w, 3, padding=1, groups=w) for _ in range(scales - 1)
        )
        self.norm_xca, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.xca = CrossCovarianceAttention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        shortcut = x
        spx = x.chunk(self.scales, dim=1)
        spo, sp = [], spx[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + spx[i])
            spo.append(sp)
        x = torch.cat([*spo, spx[-1]], dim=1)
        b, c, h, w = x.shape
        t = x.reshape(b, c, h * w).permute(0, 2, 1)
        t = t + self.xca(self.norm_xca(t))
        y = self.fc2(F.gelu(self.fc1(self.norm(t.reshape(b, h, w, c)))))
        return shortcut + y.permute(0, 3, 1, 2)


class SplitTransposeNet(nn.Module):
    """Two EdgeNeXt split-transpose blocks on a conv stem, a head on the mean. Torch-Pruning
    turns off the index maps of every concat below a 3-D parameter (XCA's ``temperature``):
    the blocks' ``cat`` then dropped its pieces' offsets and tied all the pieces together."""

    def __init__(self, dim: int = 9):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.Sequential(SplitTransposeBlock(dim), SplitTransposeBlock(dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


PATTERNS["split_transpose_xca"] = lambda seed=0: (
    SplitTransposeNet(),
    torch.randn(2, 3, 4, 4, generator=_seed(seed)),
)


class Mamba2Mixer(nn.Module):
    """A Mamba-2 mixer (Hugging Face's ``Mamba2Mixer``/``NemotronHMamba2Mixer``, torch path):
    ``in_proj`` makes ``[z | x | B | C | dt]`` (``inner = heads * head_dim``, ``B``/``C`` of
    ``groups * state`` each, ``dt`` one per head), split off with ``split``; a causal depthwise
    ``conv1d`` over ``x | B | C``; per-head ``dt_bias``, ``A_log`` and ``D``; a sequential scan
    whose heads read the ``B``/``C`` of their group (``heads // groups`` heads each); a gated
    RMSNorm over ``inner // norm_groups`` channels at a time; ``out_proj``."""

    def __init__(self, dim=6, heads=4, head_dim=3, state=2, groups=1, norm_groups=1):
        super().__init__()
        self.num_heads, self.head_dim, self.n_groups, self.state = heads, head_dim, groups, state
        self.inner, self.norm_groups = heads * head_dim, norm_groups
        self.conv_dim = self.inner + 2 * groups * state
        self.in_proj = nn.Linear(dim, self.inner + self.conv_dim + heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, 3, groups=self.conv_dim, padding=2)
        self.dt_bias = nn.Parameter(torch.rand(heads))
        self.A_log = nn.Parameter(torch.rand(heads))
        self.D = nn.Parameter(torch.rand(heads) + 0.5)
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.rand(self.inner) + 0.5)
        self.out_proj = nn.Linear(self.inner, dim, bias=False)

    def forward(self, u):
        b, t, _ = u.shape
        h, p, g, n = self.num_heads, self.head_dim, self.n_groups, self.state
        z, xbc, dt = self.in_proj(u).split([self.inner, self.conv_dim, h], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :t].transpose(1, 2))
        x, B, C = xbc.split([self.inner, g * n, g * n], dim=-1)
        x = x.reshape(b, t, h, p)
        B = B.reshape(b, t, g, n).repeat_interleave(h // g, dim=2)  # (b, t, h, n)
        C = C.reshape(b, t, g, n).repeat_interleave(h // g, dim=2)
        dt = F.softplus(dt + self.dt_bias)  # (b, t, h)
        decay = torch.exp(dt * -torch.exp(self.A_log))
        state = u.new_zeros(b, h, p, n)
        ys = []
        for i in range(t):
            upd = (dt[:, i, :, None] * x[:, i])[..., None] * B[:, i, :, None, :]
            state = decay[:, i, :, None, None] * state + upd
            ys.append((state * C[:, i, :, None, :]).sum(-1) + self.D[:, None] * x[:, i])
        y = torch.stack(ys, 1).reshape(b, t, h * p) * F.silu(z)
        yg = y.reshape(b, t, self.norm_groups, -1)
        y = (yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + 1e-6)).reshape(b, t, -1)
        return self.out_proj(y * self.norm.weight)


class Mamba2Net(nn.Module):
    """An embedding, one pre-norm residual block around :class:`Mamba2Mixer`, a head."""

    def __init__(self, dim=6, **kw):
        super().__init__()
        self.embed = nn.Embedding(10, dim)
        self.ln = nn.LayerNorm(dim)
        self.mixer = Mamba2Mixer(dim, **kw)
        self.head = nn.Linear(dim, 5)

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(x + self.mixer(self.ln(x)))


def mamba2_mixer(seed: int = 0, **kw):
    g = _seed(seed)
    return Mamba2Net(**kw), torch.randint(0, 10, (2, 5), generator=g)


PATTERNS["mamba2_mixer"] = mamba2_mixer
PATTERNS["mamba2_mixer_groups"] = lambda seed=0: mamba2_mixer(
    seed, heads=4, groups=2, norm_groups=2
)


class HsmSsdNet(nn.Module):
    """EfficientViM's HSM-SSD mixer (timm ``HSMSSD``): a 1x1 ``BCdt_proj`` makes ``[B | C | dt]``
    of ``state`` rows each, a depthwise 3x3 ``dw`` conv over all three, ``a = softmax_tokens(dt +
    A)`` with ``A`` of ``(state,)``, the hidden state ``h = x @ (a * B)^T`` (channels x states),
    gated by ``hz_proj`` and projected by ``out_proj`` along the channels, ``y = h @ C``; the head
    reads ``y`` and ``h`` (normalised over channels, averaged over states)."""

    def __init__(self, dim=6, state=4):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.mixer = nn.Module()
        self.mixer.BCdt_proj = nn.Conv1d(dim, 3 * state, 1, bias=False)
        self.mixer.dw = nn.Conv2d(3 * state, 3 * state, 3, padding=1, groups=3 * state)
        self.mixer.hz_proj = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.mixer.out_proj = nn.Conv1d(dim, dim, 1, bias=False)
        self.mixer.A = nn.Parameter(torch.rand(state) * 4)
        self.mixer.D = nn.Parameter(torch.ones(1))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(2 * dim, 3)

    def forward(self, x):
        x = self.stem(x)
        m, (b, _, hh, ww) = self.mixer, x.shape
        x = x.flatten(2)
        bcdt = m.dw(m.BCdt_proj(x).reshape(b, -1, hh, ww)).flatten(2)
        bb, cc, dt = bcdt.chunk(3, dim=1)
        a = (dt + m.A.view(1, -1, 1)).softmax(-1)
        h = x @ (a * bb).transpose(-2, -1)
        h, z = m.hz_proj(h).chunk(2, dim=1)
        h = m.out_proj(h * F.silu(z) + h * m.D)
        y = (h @ cc).mean(-1)
        hs = self.norm(h.transpose(1, 2)).mean(1)
        return self.head(torch.cat([y, hs], dim=1))


def hsm_ssd(seed: int = 0):
    """Not in PATTERNS: its stream channels (read through ``x @ (a * B)^T``) are left out, with
    a warning (tests/test_groups_ssm.py)."""
    return HsmSsdNet(), torch.randn(2, 3, 6, 6, generator=_seed(seed))
