"""Surgery: exact widths, function preservation (Net2Wider), highest-norm channels kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from test_norms import naive_norms
from widthwise.groups import ChannelGroup, Member
from widthwise.resize import ResizeError, resize

# The models below are shared with test_resize_rules.py and test_resize_hf.py (imported there).


def randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, in eval mode: a resize that moved
    them wrongly would show in the outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _hf(config: str, bare: str, with_head: str, head: bool, **kw: object):
    """A tiny Hugging Face model built from a config (no download), in eval mode, and its
    inputs. ``head``: the task model (its residual stream is then a group: it no longer
    reaches the output) rather than the bare one."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cls = getattr(transformers, with_head if head else bare)
    model = cls(getattr(transformers, config)(vocab_size=50, **kw)).eval()
    return model, {"input_ids": torch.randint(0, 50, (2, 6))}


def bert(layers: int = 1, head: bool = False):
    """BERT: hidden 32, 4 heads of 8, FFN 37; the head is a 3-class sequence classifier."""
    kw = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_labels": 3}
    return _hf(
        "BertConfig",
        "BertModel",
        "BertForSequenceClassification",
        head,
        num_hidden_layers=layers,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=16,
        **kw,
    )


def gpt2(layers: int = 1, head: bool = False):
    """GPT-2: Conv1D layers (output channels on dim 1), fused q/k/v, 4 heads of 8, MLP 128;
    the head is the language-model head, tied to the input embedding."""
    return _hf(
        "GPT2Config",
        "GPT2Model",
        "GPT2LMHeadModel",
        head,
        n_layer=layers,
        n_embd=32,
        n_head=4,
        n_positions=16,
    )


def llama_gqa(layers: int = 1, head: bool = False):
    """Llama with grouped-query attention: 4 query heads of 8 on 2 key/value heads, MLP 40."""
    return _hf(
        "LlamaConfig",
        "LlamaModel",
        "LlamaForCausalLM",
        head,
        num_hidden_layers=layers,
        hidden_size=32,
        intermediate_size=40,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )


# hand-written groups: these tests are about the surgery, independent of find_groups


def mlp():
    """Two hidden layers (8 and 6 wide) and its inputs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    return net, torch.randn(10, 5)


def mlp_and_groups():
    # test_norms' mlp_groups leaves the biases out (norms do not read them); resize needs them
    net, x = mlp()
    groups = [
        ChannelGroup(
            str(k),
            width,
            (
                Member(f"{k}.weight", 0, "producer"),
                Member(f"{k}.bias", 0, "other"),
                Member(f"{k + 2}.weight", 1, "consumer"),
            ),
        )
        for k, width in ((0, 8), (2, 6))
    ]
    return net, groups, x


def conv_bn_and_groups():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )
    group = ChannelGroup(
        "0",
        6,
        (
            Member("0.weight", 0, "producer"),
            Member("0.bias", 0, "other"),
            Member("1.weight", 0, "norm"),
            Member("1.bias", 0, "norm"),
            Member("4.weight", 1, "consumer", repeat=16),
        ),
    )
    return randomise_bn(net), [group], torch.randn(4, 3, 4, 4)


def gru_and_groups():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 6, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    h = 6
    members = []
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        for g, gate in enumerate("rzn"):
            role = "producer" if name.startswith("weight") else "other"
            members.append(Member(f"rnn.{name}", 0, role, offset=g * h, gate=gate))
    members += [Member("rnn.weight_hh_l0", 1, "consumer"), Member("head.weight", 1, "consumer")]
    return Net(), [ChannelGroup("rnn", h, tuple(members), kind="recurrent")], torch.randn(2, 7, 4)


@pytest.mark.parametrize("build", [mlp_and_groups, conv_bn_and_groups, gru_and_groups])
@pytest.mark.parametrize("init", ["net2net", "prune"])
def test_widening_preserves_the_function(build, init):
    net, groups, x = build()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    widths = {g.name: g.width * 2 + 1 for g in groups}
    wide = resize(net, groups, widths, init=init)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), net(x), atol=1e-5, rtol=1e-5)
    for k, v in net.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])
    params = dict(wide.named_parameters())
    for g in groups:
        for m in g.members:
            size = params[m.param].shape[m.dim]
            old = before[m.param].shape[m.dim]
            blocks = sum(1 for o in g.members if (o.param, o.dim) == (m.param, m.dim))
            assert size == old + blocks * (widths[g.name] - g.width) * m.repeat


def test_widened_copies_are_not_identical_after_training():
    # Net2Wider with equal halves would keep copies identical forever; random splits do not.
    net, groups, x = mlp_and_groups()
    wide = resize(net, groups, {"0": 12})
    opt = torch.optim.SGD(wide.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        wide(x).pow(2).mean().backward()
        opt.step()
    rows = wide[0].weight.detach()
    for j in range(8, 12):
        assert min(float((rows[j] - rows[i]).norm()) for i in range(8)) > 1e-6


@pytest.mark.parametrize("build", [mlp_and_groups, conv_bn_and_groups, gru_and_groups])
def test_shrinking_keeps_the_highest_norm_channels(build):
    net, groups, _ = build()
    g = groups[0]
    norms = naive_norms(net, g)
    keep = sorted(sorted(range(g.width), key=lambda i: -norms[i])[: g.width // 2])
    small = resize(net, groups, {g.name: g.width // 2})
    old, new = dict(net.named_parameters()), dict(small.named_parameters())
    # Expected tensors, built index by index: every block of the group keeps channels `keep`.
    for param in {m.param for m in g.members}:
        expected = old[param].detach()
        for dim in sorted({m.dim for m in g.members if m.param == param}):
            blocks = sorted(
                (m for m in g.members if (m.param, m.dim) == (param, dim)), key=lambda m: m.offset
            )
            index = [
                m.offset + i * m.repeat + r for m in blocks for i in keep for r in range(m.repeat)
            ]
            expected = expected.index_select(dim, torch.tensor(index))
        torch.testing.assert_close(new[param].detach(), expected, rtol=0, atol=0)


def test_module_attributes_follow_the_weights():
    net, groups, x = conv_bn_and_groups()
    small = resize(net, groups, {"0": 4})
    assert small[0].out_channels == 4 and small[1].num_features == 4
    assert small[1].running_mean.shape == (4,) and small[4].in_features == 64
    assert small(x).shape == (4, 5)
    net, groups, x = gru_and_groups()
    wide = resize(net, groups, {"rnn": 9})
    assert wide.rnn.hidden_size == 9 and wide.head.in_features == 9
    assert wide(x).shape == (2, 7, 3)


def test_reinit_gives_a_fresh_model_of_the_new_shape():
    net, groups, _ = mlp_and_groups()
    fresh = resize(net, groups, {"0": 8, "2": 3}, init="reinit")
    assert fresh[2].weight.shape == (3, 8)
    assert not torch.equal(fresh[0].weight, net[0].weight)


def test_bad_plans_are_refused_clearly():
    net, groups, _ = mlp_and_groups()
    with pytest.raises(ResizeError, match="no channel group named 'nope'"):
        resize(net, groups, {"nope": 3})
    with pytest.raises(ResizeError, match="cannot be resized to 0"):
        resize(net, groups, {"0": 0})
    divisible = [ChannelGroup("0", 8, groups[0].members, divisor=4)]
    with pytest.raises(ResizeError, match="multiple of 4"):
        resize(net, divisible, {"0": 6})
    with pytest.raises(ValueError, match="init must be"):
        resize(net, groups, {"0": 6}, init="magic")


def test_widening_an_attention_group_copies_whole_heads():
    # Hugging Face attention keeps its head size: a widened group gains whole heads, each a copy
    # of an existing head (rows of q, k and v together), the highest-norm heads first
    from widthwise.groups import find_groups

    model, x = bert()
    g = next(g for g in find_groups(model, x) if g.kind == "attention")
    norms = naive_norms(model, g)
    head_norm = [sum(norms[h * 8 : (h + 1) * 8]) for h in range(4)]
    best = sorted(range(4), key=lambda h: -head_norm[h])[:2]
    wide = resize(model, [g], {g.name: 48})
    old, new = model.encoder.layer[0].attention.self, wide.encoder.layer[0].attention.self
    for proj in ("query", "key", "value"):
        w_old, w_new = getattr(old, proj).weight, getattr(new, proj).weight
        torch.testing.assert_close(w_new[:32], w_old, rtol=0, atol=0)
        for k, h in enumerate(best):  # new heads 4 and 5 copy the two highest-norm heads
            torch.testing.assert_close(
                w_new[32 + 8 * k : 40 + 8 * k], w_old[8 * h : 8 * h + 8], rtol=0, atol=0
            )


def test_torch_pruning_path_refuses_an_illegal_plan_before_cutting():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    from widthwise.groups import find_groups
    from widthwise.resize import shrink_with_torch_pruning

    x = torch.randn(1, 3, 5, 5)
    groups = find_groups(net, x)
    with pytest.raises(ResizeError, match="group '0' needs a multiple of 4"):
        shrink_with_torch_pruning(net, groups, {"0": 6}, x)


def test_torch_pruning_path_leaves_what_it_cannot_trace_to_resize():
    # Torch-Pruning cannot trace a Hugging Face model that returns a cache: nothing is cut and
    # nothing raises; resize() then narrows the group
    from widthwise.groups import find_groups
    from widthwise.resize import shrink_with_torch_pruning

    model, x = llama_gqa(head=True)
    groups = find_groups(model, x)
    mlp_group = next(g for g in groups if g.name.endswith("mlp.gate_proj"))
    new, done = shrink_with_torch_pruning(model, groups, {mlp_group.name: 20}, x)
    assert done == set()
    assert new.model.layers[0].mlp.up_proj.out_features == 40
    small = resize(model, groups, {mlp_group.name: 20}, example_inputs=x)
    assert small.model.layers[0].mlp.up_proj.out_features == small.config.intermediate_size == 20
