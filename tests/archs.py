"""Small reference architectures shared by the test suite.

Every builder returns ``(model, example_inputs)``; models are tiny (CPU, milliseconds) and
deterministic (seeded). ``example_inputs`` is a tensor, a tuple of tensors, or a dict of keyword
arguments (Hugging Face models).
"""

from __future__ import annotations

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
# attention


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
        hd = d // self.heads
        q = self.q(h).view(b, t, self.heads, hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) / hd**0.5, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, t, d)
        h = h + self.proj(o)
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
