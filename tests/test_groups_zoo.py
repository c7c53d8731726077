"""find_groups on patterns first seen failing in the second timm battery
(``benchmarks/bench_groups_timm.py --battery variants``), each written here from its definition:

* GCNet's global context block (timm ``gcresnet*``/``gcresnext*``): a 1-channel attention map,
  softmax over positions, ``x @ attn`` pools each channel; the stream's channels stay apart.
* a ViT whose output is its residual stream (a feature extractor, timm's DINOv2 with
  ``num_classes=0``): the stream is fixed, and trying it as an attention group once per block
  made the search quadratic in depth.

And one first seen in the Hugging Face held-out battery (``benchmarks/bench_groups_hf_all.py``):
an embedding module that calls ``F.embedding`` on its own parameter (I-BERT's QuantEmbedding).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_groups import M, assert_each_group_is_a_symmetry, check, consumer
from test_groups_text import grouped
from widthwise import find_groups
from widthwise.groups import verify

pytestmark = pytest.mark.usefixtures("one_thread")


def _conv(name):
    return [M(f"{name}.weight", 0, "producer"), M(f"{name}.bias", 0, "other")]


class GlobalContext(nn.Module):
    """timm's ``GlobalContext`` (fuse_scale): attention pooling, then a bottleneck gate."""

    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.conv_attn = nn.Conv2d(c, 1, 1)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        attn = F.softmax(self.conv_attn(x).reshape(b, 1, h * w), dim=-1).unsqueeze(3)
        context = (x.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c, 1, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(context))))


class GCNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3)
        self.gc = GlobalContext(12, 4)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        return self.head(self.gc(F.relu(self.stem(x)))).mean((2, 3))


def test_global_context_block():
    torch.manual_seed(0)
    model, x = GCNet(), torch.randn(2, 3, 9, 9)
    groups, msgs = grouped(model, x)
    assert msgs == []
    stream = next(g for g in groups if g.width == 12)
    assert set(stream.members) == {
        *_conv("stem"),
        *consumer("gc.conv_attn"),
        *consumer("gc.fc1"),
        *_conv("gc.fc2"),
        *consumer("head"),
    }
    hidden = next(g for g in groups if g.width == 4)
    check([hidden], {hidden.name: (4, "conv", 1, [*_conv("gc.fc1"), *consumer("gc.fc2")])})
    assert_each_group_is_a_symmetry(model, x, groups)


class FeatureViT(nn.Module):
    """Pre-norm ViT blocks with a fused qkv; the output is the normalised stream (no head)."""

    def __init__(self, depth: int, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.patch = nn.Linear(12, dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                dict(
                    n1=nn.LayerNorm(dim),
                    qkv=nn.Linear(dim, 3 * dim),
                    proj=nn.Linear(dim, dim),
                    n2=nn.LayerNorm(dim),
                    fc1=nn.Linear(dim, 2 * dim),
                    fc2=nn.Linear(2 * dim, dim),
                )
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.patch(x)
        b, n, d = x.shape
        for blk in self.blocks:
            qkv = blk["qkv"](blk["n1"](x)).reshape(b, n, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
            x = x + blk["proj"](o)
            x = x + blk["fc2"](F.gelu(blk["fc1"](blk["n2"](x))))
        return self.norm(x)


def _checks(depth: int, monkeypatch) -> tuple[int, list]:
    """(permutation checks run by find_groups, groups) on a FeatureViT of ``depth`` blocks."""
    calls = []
    real = verify.Symmetry._run

    def counted(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(verify.Symmetry, "_run", counted)
    torch.manual_seed(0)
    groups, msgs = grouped(FeatureViT(depth), torch.randn(2, 5, 12))
    monkeypatch.undo()
    assert msgs == []
    return len(calls), groups


def test_stream_reaching_the_output_is_not_searched_per_block(monkeypatch):
    few, g2 = _checks(2, monkeypatch)
    many, g6 = _checks(6, monkeypatch)
    # per block: its attention group and its MLP group; the stream is the output (fixed)
    assert sorted(g.name for g in g6) == sorted(
        n for k in range(6) for n in (f"blocks.{k} (attention)", f"blocks.{k}.fc1")
    )
    assert len(g2) == 4
    # blocks are alike: the checks run in batches, so 3x the blocks costs a few more checks,
    # not 3x as many (it was one failing check per option per block: quadratic time)
    assert many <= few + 4, (few, many)
    torch.manual_seed(0)
    model = FeatureViT(3)
    x = torch.randn(2, 5, 12)
    assert_each_group_is_a_symmetry(model, x, find_groups(model, x))


class RawEmbedding(nn.Module):
    """An embedding that calls ``F.embedding`` on its own parameter (I-BERT's QuantEmbedding)."""

    def __init__(self, n: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, d))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class RawEmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.words, self.positions = RawEmbedding(11, 8), RawEmbedding(6, 8)
        self.fc1, self.fc2, self.head = nn.Linear(8, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, ids):
        x = self.words(ids) + self.positions(torch.arange(ids.shape[1]))
        x = x + self.fc2(F.relu(self.fc1(x)))
        return self.head(x.mean(1))


def test_raw_parameter_embedding_is_a_lookup_table():
    torch.manual_seed(0)
    model, ids = RawEmbeddingNet(), torch.randint(0, 11, (2, 5))
    groups, msgs = grouped(model, ids)
    assert msgs == []
    lin = [M("fc2.weight", 0, "producer"), M("fc2.bias", 0, "other")]
    # the tables are read along their columns, like nn.Embedding's (raw parameters: "other")
    stream = [M("words.weight", 1, "other"), M("positions.weight", 1, "other")]
    check(
        groups,
        {
            "fc2": (8, "linear", 1, [*stream, *consumer("fc1"), *lin, *consumer("head")]),
            "fc1": (12, "linear", 1, [*_conv("fc1"), *consumer("fc2")]),
        },
    )
    assert_each_group_is_a_symmetry(model, ids, groups)


class UngatedExperts(nn.Module):
    """Nemotron-H's experts: ``up_proj`` (E, I, H), ReLU², ``down_proj`` (E, H, I), raw."""

    def __init__(self, e: int, h: int, i: int):
        super().__init__()
        self.up_proj = nn.Parameter(torch.randn(e, i, h) / h**0.5)
        self.down_proj = nn.Parameter(torch.randn(e, h, i) / i**0.5)

    def forward(self, x, idx, weight):
        out = torch.zeros_like(x)
        for e in range(self.up_proj.shape[0]):
            sel = (idx == e).nonzero()[:, 0]
            y = F.linear(F.relu(F.linear(x[sel], self.up_proj[e])) ** 2, self.down_proj[e])
            out = out.index_add(0, sel, y * weight[sel, None])
        return out


class UngatedMoE(nn.Module):
    def __init__(self, d: int = 16, experts: int = 3, inner: int = 10):
        super().__init__()
        self.emb = nn.Embedding(20, d)
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = UngatedExperts(experts, d, inner)
        self.head = nn.Linear(d, 3)

    def forward(self, ids):
        x = self.emb(ids)
        flat = x.reshape(-1, x.shape[-1])
        weight, idx = self.router(flat).softmax(-1).max(-1)
        return self.head(x + self.experts(flat, idx, weight).view_as(x))


def test_ungated_expert_stacks():
    torch.manual_seed(0)
    model, ids = UngatedMoE(), torch.randint(0, 20, (2, 12))
    _, idx = model.router(model.emb(ids).reshape(-1, 16)).max(-1)
    assert len(set(idx.tolist())) > 1  # the input reaches several experts
    groups, msgs = grouped(model, ids)
    assert msgs == []
    inner = next(g for g in groups if g.name == "experts (experts)")
    assert inner.width == 10
    assert set(inner.members) == {
        M("experts.up_proj", 1, "producer"),
        M("experts.down_proj", 2, "consumer"),
    }
    stream = next(g for g in groups if g.width == 16)
    assert {
        M("emb.weight", 1, "producer"),
        M("experts.up_proj", 2, "consumer"),
        M("experts.down_proj", 1, "producer"),
        M("head.weight", 1, "consumer"),
    } <= set(stream.members)
    assert_each_group_is_a_symmetry(model, ids, groups)
