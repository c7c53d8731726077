"""The permutation check (:class:`widthwise.groups.verify.Symmetry`) is strong enough to reject a
small coupling and loose enough to pass every right group of a deep float32 model.

The coupling is CoaT's (timm ``coat_tiny``, issue 13): the attention adds ``q * conv(v)``, where
the depthwise convs over ``v``'s channels have a kernel size per head split and are shared by
the blocks, so neither heads nor channels within a head can be permuted. In CoaT that term
reaches the logits only weakly at init (a permutation moves them by ~3e-4 of their largest
value); here a constant factor makes it as small.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archs
from test_groups import _outputs, _permute_copy
from widthwise import GroupingWarning, find_groups
from widthwise.groups import verify
from widthwise.groups.types import ChannelGroup, Member
from widthwise.groups.verify import RTOL, Symmetry

pytestmark = pytest.mark.usefixtures("one_thread")


class ConvRelPos(nn.Module):
    """CoaT's ConvRelPosEnc: ``q * conv(v)``, one depthwise conv per head split."""

    def __init__(self, head_dim: int, splits: dict[int, int]):  # kernel size -> heads
        super().__init__()
        self.widths = [h * head_dim for h in splits.values()]
        self.convs = nn.ModuleList(
            nn.Conv2d(w, w, k, padding=k // 2, groups=w) for k, w in zip(splits, self.widths)
        )

    def forward(self, q, v, hw):
        b, heads, n, hd = v.shape
        img = v.transpose(-1, -2).reshape(b, heads * hd, *hw)
        conv = torch.cat([c(x) for c, x in zip(self.convs, img.split(self.widths, 1))], 1)
        return q * conv.reshape(b, heads, hd, n).transpose(-1, -2)


class CoaTBlock(nn.Module):
    """Pre-norm block: CoaT's factorised attention plus ``scale * q * conv(v)``, then an MLP."""

    def __init__(self, dim: int, heads: int, crpe: ConvRelPos, scale: float):
        super().__init__()
        self.heads, self.crpe, self.scale = heads, crpe, scale
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x, hw):
        q, k, v = archs._split_fused(self.qkv(self.norm1(x)), 3, self.heads)
        att = q @ (k.softmax(2).transpose(-1, -2) @ v) / q.shape[-1] ** 0.5
        x = x + self.proj(archs._merge_heads(att + self.scale * self.crpe(q, v, hw)))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class CoaTLike(nn.Module):
    """patch Linear(12, 16) -> 2 blocks (4 heads of 4) sharing one ConvRelPos -> norm -> head."""

    def __init__(self, scale: float, dim: int = 16, heads: int = 4):
        super().__init__()
        self.patch = nn.Linear(12, dim)
        crpe = ConvRelPos(dim // heads, {3: 2, 5: 1, 7: 1})
        self.blocks = nn.ModuleList(CoaTBlock(dim, heads, crpe, scale) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x)
        for b in self.blocks:
            x = b(x, (3, 3))
        return self.head(self.norm(x).mean(1))


def coat_like(seed: int, scale: float):
    torch.manual_seed(seed)
    x = torch.randn(2, 9, 12, generator=torch.Generator().manual_seed(seed))
    return CoaTLike(scale), x


#: the coupling's size: a permutation of one block's heads moves the output by 1e-5 to 2e-4 of
#: its largest value, depending on the draw (test_the_coupling_is_small); find_groups with the
#: former tolerance (1e-4) returned a q/k/v group for each of 12 seeds, with 1e-5 for none
SCALE = 6e-5


def relative_change(model, x, groups, seed):
    """max|out - permuted out| / max|out| for ``groups`` permuted with naive loops."""
    ref = _outputs(model, x)
    out = _outputs(_permute_copy(model, groups, seed=seed).eval(), x)
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("seed", range(4))
def test_a_small_coupling_leaves_the_heads_out(seed):
    model, x = coat_like(seed, SCALE)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    names = {g.name for g in groups}
    # the residual stream and the MLPs stay; nothing of q/k/v is returned
    assert names == {"blocks (residual)", "blocks.0.fc1", "blocks.1.fc1"}
    for g in groups:
        assert not any(".qkv." in m.param and m.dim == 0 for m in g.members), g.name
    msgs = [str(r.message) for r in record if r.category is GroupingWarning]
    assert len(msgs) == 1
    # left out as q/k/v layers (their walk does not end; the candidates tried instead fail)
    assert "blocks.0.qkv" in msgs[0] and "blocks.1.qkv" in msgs[0]


def head_group(model: CoaTLike, block: int) -> ChannelGroup:
    """Whole heads of block ``block``'s qkv and proj (the wrong group): one channel is one head,
    4 rows in each of q, k, v and 4 columns of proj."""
    dim, heads = model.blocks[0].proj.in_features, model.blocks[0].heads
    hd, name = dim // heads, f"blocks.{block}"
    members = [
        Member(f"{name}.qkv.{p}", 0, "producer", gate * dim, hd)
        for gate in range(3)
        for p in ("weight", "bias")
    ]
    members.append(Member(f"{name}.proj.weight", 1, "consumer", 0, hd))
    return ChannelGroup(f"{name} (attention)", heads, tuple(members), (name,), "attention", 1)


def test_the_coupling_is_small():
    """The coupling is real (above float32 rounding, ~1e-6 of the largest output) and small
    enough that the former tolerance, 1e-4 of the largest output, passed some draws."""
    for seed in range(4):
        model, x = coat_like(seed, SCALE)
        sym = Symmetry(model, x)
        for block in range(2):
            changes = [sym.change([head_group(model, block)]) * RTOL for _ in range(6)]
            assert min(changes) > 3e-6, (seed, block, changes)
            assert min(changes) < 1e-4, (seed, block, changes)


@pytest.mark.parametrize("seed", range(4))
def test_symmetry_rejects_the_head_group_every_draw(seed):
    model, x = coat_like(seed, SCALE)
    sym = Symmetry(model, x)
    for block in range(2):
        assert not any(sym.passes([head_group(model, block)]) for _ in range(4))


class Block(nn.Module):
    """timm's pre-norm ViT block: fused qkv, scaled_dot_product_attention, GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        q, k, v = archs._split_fused(self.qkv(self.norm1(x)), 3, self.heads)
        x = x + self.proj(archs._merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DeepTransformer(nn.Module):
    """12 pre-norm blocks (4 heads) on a 64-wide residual stream."""

    def __init__(self, depth: int = 12, dim: int = 64, heads: int = 4):
        super().__init__()
        self.patch = nn.Linear(12, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.patch(x))).mean(1))


def test_a_deep_float32_model_keeps_every_group():
    """Float32 rounding of a deep model (sums in another order) stays inside the tolerance:
    every block's heads and MLP, and the residual stream, pass, with nothing left out."""
    torch.manual_seed(0)
    model = DeepTransformer()
    x = torch.randn(2, 17, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingWarning)
        groups = find_groups(model, x)
    expected = {"blocks (residual)"}
    expected |= {f"blocks.{i} (attention)" for i in range(12)}
    expected |= {f"blocks.{i}.fc1" for i in range(12)}
    assert {g.name for g in groups} == expected
    assert all(g.divisor == 4 for g in groups if g.kind == "attention")
    # with a margin: all 25 groups permuted at once stay below the narrow-pass band
    sym = Symmetry(model, x)
    assert max(sym.change(groups) for _ in range(3)) < 0.1  # measured: 0.02 to 0.04


# ---------------------------------------------------------------------------------------------
# a permutation that moves nothing proves nothing


def per_channel_groupnorm():
    """conv 3->8, GroupNorm with one group per channel (blocks of one), conv 8->4."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(8, 8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten()
    )
    return model, torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def test_blocks_of_one_channel_permute_freely():
    model, x = per_channel_groupnorm()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingWarning)
        groups = find_groups(model, x)
    assert [(g.name, g.width, g.divisor) for g in groups] == [("0", 8, 8)]
    # the same group without its consumer: an identity permutation within blocks of one would
    # pass it; a free permutation of the 8 channels does not
    g = groups[0]
    broken = ChannelGroup(
        g.name, g.width, tuple(m for m in g.members if m.role != "consumer"), g.layers, g.kind, 8
    )
    sym = Symmetry(model, x)
    assert sym.passes([g])
    assert not any(sym.passes([broken]) for _ in range(4))


def test_one_channel_passes_as_nothing_to_permute():
    """A layer of width 1 is a group (its verdict says "width 1"): no permutation can check it,
    and it does not make a batch it is checked in fail."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 3))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    one = ChannelGroup("0", 1, (Member("0.weight", 0, "producer"),), ("0",), "linear", 1)
    assert Symmetry(model, x).passes([one])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    assert [(g.name, g.width) for g in groups] == [("0", 1)]
    assert not [r for r in record if r.category is GroupingWarning]


class StarBlock(nn.Module):
    """timm's StarNet block: depthwise conv, two 1x1 expansions multiplied element-wise (the
    "star" operation), 1x1 back, depthwise conv, residual add."""

    def __init__(self, dim: int, ratio: int = 3):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.bn = nn.BatchNorm2d(dim)
        self.f1, self.f2 = nn.Conv2d(dim, ratio * dim, 1), nn.Conv2d(dim, ratio * dim, 1)
        self.g = nn.Conv2d(ratio * dim, dim, 1)
        self.dw2 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)

    def forward(self, x):
        y = self.bn(self.dw(x))
        return x + self.dw2(self.g(F.relu6(self.f1(y)) * self.f2(y)))


class StarNetLike(nn.Module):
    """15 star blocks over four stages: each product squares the activations' scale, so the
    output's float32 rounding grows far beyond the check's tolerance."""

    def __init__(self, dims=(16, 32, 64, 128), depths=(2, 2, 8, 3)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 3, 2, 1), nn.BatchNorm2d(dims[0]))
        layers, cin = [], dims[0]
        for d, n in zip(dims, depths):
            layers.append(nn.Sequential(nn.Conv2d(cin, d, 3, 2, 1), nn.BatchNorm2d(d)))
            layers += [StarBlock(d) for _ in range(n)]
            cin = d
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 10)

    def forward(self, x):
        return self.head(self.stages(F.relu6(self.stem(x))).mean((2, 3)))


def test_products_of_activations_are_checked_in_float64(monkeypatch):
    """In float32 the right groups of a deep star network move the output by hundreds of
    tolerances (rounding, amplified by the products), so a float32 check would leave them all
    out; the check runs in float64, where they move it by less than 1e-3 of one."""
    torch.manual_seed(0)
    model = StarNetLike().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingWarning)
        groups = find_groups(model, x)
    # every stage's stream, every block's expansion (f1 and f2 tied by the product)
    assert len(groups) == 4 + 15 + 1
    sym = Symmetry(model, x)
    assert sym.dtype == torch.float64
    assert max(sym.change([g]) for g in groups) < 1e-3
    monkeypatch.setattr(verify, "_FLOAT64_MAX", 0)  # what float32 alone would have measured
    sym32 = Symmetry(model, x)
    assert sym32.dtype == torch.float32
    assert max(sym32.change([g]) for g in groups) > 10


class SharedConv(nn.Module):
    """A positional conv shared by two blocks (timm CoaT's ``cpe1`` reached as each serial
    block's ``cpe``): one module, two names."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.cpe = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        for b in self.blocks:
            b.cpe = self.cpe
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        for b in self.blocks:
            x = x + b.cpe(x.transpose(1, 2)).transpose(1, 2)
            x = x + b(x)
        return self.head(x.mean(1))


@pytest.mark.parametrize("float64", [True, False])
def test_the_check_leaves_a_shared_module_as_it_was(monkeypatch, float64):
    """functional_call leaves its tensors in a module reached under two names; the check puts
    the model's own back (before, find_groups overwrote CoaT's shared convolutions with its
    jittered, permuted copies)."""
    if not float64:
        monkeypatch.setattr(verify, "_FLOAT64_MAX", 0)
    torch.manual_seed(0)
    model = SharedConv().eval()
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    assert [g.name for g in find_groups(model, x)] == ["blocks (residual)"]
    sym = Symmetry(model, x)
    assert sym.dtype == (torch.float64 if float64 else torch.float32)
    sym.change([ChannelGroup("cpe", 8, (Member("cpe.weight", 0, "producer"),), ("cpe",))])
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for n, (p, value) in before.items():
        assert after[n] is p and p.dtype == torch.float32 and torch.equal(p, value), n
    assert model.blocks[0].cpe is model.cpe and model.blocks[0].cpe.weight is model.cpe.weight


class PairedProducts(nn.Module):
    """fc1's 4 outputs multiplied in pairs (h0*h2, h1*h3): fc1's rows alone are no group; only
    the swap of both pairs at once ((0 2)(1 3)) leaves the output alone."""

    def __init__(self):
        super().__init__()
        self.fc1, self.head = nn.Linear(3, 4), nn.Linear(2, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.head(h[:, :2] * h[:, 2:])


def test_a_small_wrong_group_fails_for_every_draw():
    # one random draw of 4 channels lands on (0 2)(1 3), a symmetry of this wrong group, 1 time
    # in 23; a rotation and a swap generate every permutation, so the check fails every time
    torch.manual_seed(0)
    model, x = PairedProducts(), torch.randn(5, 3)
    wrong = ChannelGroup(
        "fc1", 4, (Member("fc1.weight", 0, "producer"), Member("fc1.bias", 0, "other")), ("fc1",)
    )
    sym = Symmetry(model, x)
    lucky = 0
    for seed in range(60):
        sym.gen.manual_seed(seed)
        lucky += sym.change([wrong]) <= 1  # one random draw, as before
        sym.gen.manual_seed(seed)
        assert not sym.passes([wrong]), seed
    assert lucky > 0  # the single draw alone did pass it for some seed


class DeadGate(nn.Module):
    """fc -> ReLU behind a bias of -100 (dead for every input under any draw: the draw keeps
    1-d parameters near the model's) -> gate; a live path beside it."""

    def __init__(self):
        super().__init__()
        self.live = nn.Linear(6, 5)
        self.squeeze = nn.Linear(6, 3)
        self.gate = nn.Linear(3, 5)
        with torch.no_grad():
            self.squeeze.bias.fill_(-100.0)

    def forward(self, x):
        return self.live(x) * torch.sigmoid(self.gate(torch.relu(self.squeeze(x))))


def test_blind_names_the_parameters_the_check_cannot_see():
    torch.manual_seed(0)
    model, x = DeadGate(), torch.randn(4, 6)
    names = [n for n, _ in model.named_parameters()]
    sym = Symmetry(model, x)
    # nothing reaches the output through the dead ReLU: the squeeze's weight and bias have no
    # gradient; the gate's bias still moves the sigmoid, and the live path is seen
    assert sym.blind(names) == {"squeeze.weight", "squeeze.bias", "gate.weight"}
    # independent reference: perturbing a blind parameter leaves the output unchanged exactly,
    # perturbing a seen one does not
    base = model(x)
    for n, p in model.named_parameters():
        saved = p.detach().clone()
        with torch.no_grad():
            p.add_(torch.randn_like(p))
        moved = not torch.equal(model(x), base)
        with torch.no_grad():
            p.copy_(saved)
        assert moved == (n not in sym.blind(names)), n
