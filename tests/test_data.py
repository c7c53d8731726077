"""Local data sets: shapes, determinism, untouched global RNG, file readers on fake files."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from widthwise.reproduction import data
from widthwise.reproduction.data import DataFileError


def rng_states():
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()


def assert_same_rng(before, after):
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1]):
        assert np.array_equal(a, b)
    assert torch.equal(before[2], after[2])


@pytest.fixture
def seeded_globals():
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)


GENERATORS = {
    "mnist1d": lambda seed: data.mnist1d(num_samples=200, seed=seed),
    "digits": lambda seed: data.digits(seed=seed),
    "teacher_student": lambda seed: data.teacher_student([6, 4], n_train=20, n_test=8, seed=seed),
    "sbm_graph": lambda seed: data.sbm_graph(40, 2, seed=seed),
}


def tensors_of(obj) -> list[torch.Tensor]:
    if isinstance(obj, data.TeacherStudent):
        obj = obj.data
    if isinstance(obj, data.TensorSplit):
        return [obj.x_train, obj.y_train, obj.x_test, obj.y_test]
    return [obj.x, obj.y, obj.edge_index, obj.train_mask]


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generators_leave_global_rng_alone_and_are_seeded(name, seeded_globals):
    make = GENERATORS[name]
    before = rng_states()
    a = make(0)
    assert_same_rng(before, rng_states())
    # what the caller draws next is what it would have drawn without us
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())

    b, c = make(0), make(1)
    assert all(torch.equal(x, y) for x, y in zip(tensors_of(a), tensors_of(b)))
    assert not all(
        x.shape == y.shape and torch.equal(x, y) for x, y in zip(tensors_of(a), tensors_of(c))
    )


# ---------------------------------------------------------------------------------------------
# MNIST-1D


def test_mnist1d_matches_the_package_and_caches_only_in_cache_dir(tmp_path, seeded_globals):
    from mnist1d.data import get_dataset_args, make_dataset

    d = data.mnist1d(num_samples=200, seed=3, cache_dir=tmp_path / "cache")
    assert d.x_train.shape == (160, 40) and d.x_test.shape == (40, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(d.y_train.tolist()) <= set(range(10))

    args = get_dataset_args()
    args.num_samples, args.seed = 200, 3
    ref = make_dataset(args)  # the reference run seeds the globals itself
    assert np.allclose(d.x_train.numpy(), ref["x"], atol=1e-6)
    assert np.array_equal(d.y_test.numpy(), ref["y_test"])

    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    again = data.mnist1d(num_samples=200, seed=3, cache_dir=tmp_path / "cache")
    assert torch.equal(again.x_test, d.x_test)
    assert len(list(tmp_path.rglob("*"))) == 2  # the directory and its one file


def test_mnist1d_hard_is_the_package_with_stronger_noise(seeded_globals):
    from mnist1d.data import get_dataset_args, make_dataset

    d = data.mnist1d_hard(num_samples=300, seed=5)
    assert d.name == "mnist1d-hard" and d.num_classes == 10
    args = get_dataset_args()
    args.num_samples, args.seed = 300, 5
    args.iid_noise_scale, args.corr_noise_scale = 0.05, 0.35
    ref = make_dataset(args)  # written out by hand, not read from HARD_NOISE
    assert np.allclose(d.x_train.numpy(), ref["x"], atol=1e-6)
    assert np.array_equal(d.y_train.numpy(), ref["y"])
    # noisier than the default set: the same templates, larger departures from them
    plain = data.mnist1d(num_samples=300, seed=5)
    assert np.array_equal(plain.y_train.numpy(), d.y_train.numpy())
    assert float((d.x_train - plain.x_train).abs().mean()) > 0.05
    # overrides still reach the generator
    quiet = data.mnist1d_hard(num_samples=300, seed=5, iid_noise_scale=0.02, corr_noise_scale=0.25)
    assert torch.allclose(quiet.x_train, plain.x_train, atol=1e-6)


def test_mnist1d_rejects_unknown_arguments():
    with pytest.raises(ValueError, match="unknown mnist1d arguments"):
        data.mnist1d(num_samples=100, colour="red")


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_a_stratified_partition():
    from sklearn.datasets import load_digits

    d = data.digits(test_fraction=0.25, seed=2)
    raw = load_digits()
    assert len(d.x_train) + len(d.x_test) == len(raw.target)
    assert d.x_train.shape[1] == 64 and d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    # every row is an original image with its original label, none used twice
    lookup = {
        tuple((row / 16.0).astype(np.float32)): int(t) for row, t in zip(raw.data, raw.target)
    }
    rows = [tuple(r) for r in torch.cat([d.x_train, d.x_test]).numpy()]
    labels = torch.cat([d.y_train, d.y_test]).tolist()
    assert all(lookup[r] == y for r, y in zip(rows, labels))
    assert len(set(rows)) == len(set(map(tuple, raw.data)))
    for k in range(10):
        share = (d.y_test == k).sum().item() / (raw.target == k).sum()
        assert abs(share - 0.25) < 0.02
    img = data.digits(seed=2, flatten=False)
    assert img.x_train.shape[1:] == (1, 8, 8)
    assert torch.equal(img.x_train.flatten(1), d.x_train)


def test_loaders_shuffle_by_seed_and_keep_test_order():
    d = data.digits(seed=0)
    order = []
    for seed in (0, 0, 1):
        train, _ = d.loaders(batch_size=100, seed=seed)
        order.append(torch.cat([y for _, y in train]))
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    assert sorted(order[0].tolist()) == sorted(d.y_train.tolist())
    _, test = d.loaders(batch_size=50)
    assert torch.equal(torch.cat([x for x, _ in test]), d.x_test)
    tr, te = d.datasets()
    assert len(tr) == len(d.x_train) and torch.equal(te[3][0], d.x_test[3])


# ---------------------------------------------------------------------------------------------
# teacher-student


def test_teacher_student_targets_are_teacher_outputs():
    ts = data.teacher_student([5, 3], in_features=4, out_features=2, n_train=6, n_test=2, seed=0)
    assert ts.teacher_widths == [5, 3] == ts.teacher.widths()
    t = ts.teacher
    for x, y in zip(ts.data.x_train, ts.data.y_train):
        h = x.tolist()
        for layer in t.hidden:
            w, b = layer.weight.tolist(), layer.bias.tolist()
            h = [max(0.0, sum(wi * hi for wi, hi in zip(row, h)) + bj) for row, bj in zip(w, b)]
        w, b = t.head.weight.tolist(), t.head.bias.tolist()
        out = [sum(wi * hi for wi, hi in zip(row, h)) + bj for row, bj in zip(w, b)]
        assert np.allclose(out, y.tolist(), atol=1e-5)
    # weights have variance 1/fan_in (checked on a wide teacher)
    wide = data.teacher_student([400], in_features=100, n_train=1, n_test=1, seed=1)
    assert abs(wide.teacher.hidden[0].weight.var().item() * 100 - 1.0) < 0.05
    cls = data.teacher_student(
        [8], in_features=3, out_features=4, task="classification", n_train=50, n_test=10
    )
    assert cls.data.num_classes == 4 and cls.data.y_train.dtype == torch.int64
    assert torch.equal(cls.data.y_train, cls.teacher(cls.data.x_train).argmax(1))
    with pytest.raises(ValueError, match="out_features >= 2"):
        data.teacher_student([4], task="classification")


# ---------------------------------------------------------------------------------------------
# stochastic block model


def test_sbm_graph_structure():
    g = data.sbm_graph(200, 4, p_in=0.2, p_out=0.01, num_features=8, feature_signal=3.0, seed=0)
    src, dst = g.edge_index.tolist()
    edges = set(zip(src, dst))
    assert all((d, s) in edges for s, d in edges)  # symmetric
    assert all(s != d for s, d in edges) and len(edges) == len(src)  # no loops, no duplicates
    y = g.y.tolist()
    same = sum(y[s] == y[d] for s, d in edges) / 2
    cross = sum(y[s] != y[d] for s, d in edges) / 2
    pairs_same = sum(50 * 49 / 2 for _ in range(4))
    pairs_cross = 200 * 199 / 2 - pairs_same
    assert abs(same / pairs_same - 0.2) < 0.03
    assert abs(cross / pairs_cross - 0.01) < 0.005
    assert not (g.train_mask & g.test_mask).any() and (g.train_mask | g.test_mask).all()
    assert g.train_mask.sum() == 100
    # features carry the block: nearest class mean classifies most nodes
    means = torch.stack([g.x[g.y == k].mean(0) for k in range(4)])
    assert (torch.cdist(g.x, means).argmin(1) == g.y).float().mean() > 0.9
    adj = g.adjacency()
    assert adj.shape == (200, 200) and adj.is_sparse


# ---------------------------------------------------------------------------------------------
# character corpus


def test_char_corpus_round_trip_and_batches():
    from pydoc_data.topics import topics

    c = data.char_corpus(max_chars=5000, test_fraction=0.2)
    full = "\n\n".join(topics[k] for k in sorted(topics))
    assert c.text == full[:5000]
    assert c.vocab == sorted(set(c.text)) and c.vocab_size == len(c.vocab)
    assert c.decode(torch.cat([c.train, c.test])) == c.text
    assert len(c.test) == 1000
    stream = c.train.tolist()
    n = c.num_batches("train", batch_size=8, seq_len=20)
    assert n == ((len(stream) - 1) // 20) // 8
    batches = list(c.batches("train", batch_size=8, seq_len=20, seed=1))
    assert len(batches) == n
    starts = set()
    for x, y in batches:
        assert x.shape == y.shape == (8, 20)
        for row_x, row_y in zip(x.tolist(), y.tolist()):
            s = next(i for i in range(0, len(stream), 20) if stream[i : i + 20] == row_x)
            assert row_y == stream[s + 1 : s + 21]
            starts.add(s)
    assert len(starts) == 8 * n  # windows do not repeat
    again = [x for x, _ in c.batches("train", batch_size=8, seq_len=20, seed=1)]
    assert all(torch.equal(a, b) for a, (b, _) in zip(again, batches))
    ordered = next(c.batches("test", batch_size=2, seq_len=10, shuffle=False))[0]
    assert ordered[0].tolist() == c.test[:10].tolist()
    with pytest.raises(ValueError, match="smaller batch_size"):
        next(c.batches("test", batch_size=1000, seq_len=10))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        c.encode("\x00")
    src = data.char_corpus("stdlib", modules=["textwrap"], max_chars=300)
    assert "textwrap" in src.text.lower() or "wrap" in src.text


# ---------------------------------------------------------------------------------------------
# CIFAR and Tiny-ImageNet readers on fake files


def write_batch(path, n, rng, label_keys):
    d = {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    for key, k in label_keys.items():
        d[key] = rng.integers(0, k, n).tolist()
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def test_cifar10_reads_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    written = [write_batch(root / f"data_batch_{i}", 3, rng, {b"labels": 10}) for i in range(1, 6)]
    test = write_batch(root / "test_batch", 4, rng, {b"labels": 10})
    for r in (tmp_path, root):  # parent or the batch directory itself
        d = data.cifar10(r, dtype=torch.uint8)
        assert d.x_train.shape == (15, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
        assert d.y_train.tolist() == [y for w in written for y in w[b"labels"]]
    # pixel (c, h, w) of image n is byte c*1024 + h*32 + w of its row
    for n, c, h, w in [(0, 0, 0, 0), (2, 1, 5, 7), (3, 2, 31, 31)]:
        assert d.x_test[n, c, h, w].item() == test[b"data"][n, c * 1024 + h * 32 + w]
    f = data.cifar10(tmp_path)
    assert f.x_test.dtype == torch.float32
    assert torch.allclose(f.x_test * 255, d.x_test.float())


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    keys = {b"fine_labels": 100, b"coarse_labels": 20}
    tr = write_batch(root / "train", 5, rng, keys)
    write_batch(root / "test", 2, rng, keys)
    fine = data.cifar100(tmp_path)
    coarse = data.cifar100(tmp_path, labels="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.y_train.tolist() == tr[b"fine_labels"]
    assert coarse.y_train.tolist() == tr[b"coarse_labels"]


def test_cifar_missing_or_hostile_files_give_clear_errors(tmp_path):
    with pytest.raises(DataFileError, match=r"data_batch_1.*test_batch"):
        data.cifar10(tmp_path)
    with pytest.raises(DataFileError, match="train, test"):
        data.cifar100(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name in ("train", "test"):
        (root / name).write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataFileError, match="refusing to load"):
        data.cifar100(tmp_path)


def test_tiny_imagenet_reads_directory_format(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # label order follows wnids.txt, not sorted order
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    colour = {"n02": (200, 30, 30), "n01": (20, 40, 220)}
    for w in wnids:
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), colour[w]).save(d / f"{w}_{i}.JPEG", quality=95)
    # a grayscale image, as in the real data set, becomes RGB
    Image.new("L", (64, 64), 128).save(root / "val" / "images" / "val_0.JPEG")
    Image.new("RGB", (64, 64), colour["n02"]).save(root / "val" / "images" / "val_1.JPEG")
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn01\t0\t0\t63\t63\nval_1.JPEG\tn02\t0\t0\t63\t63\n"
    )
    d = data.tiny_imagenet(tmp_path, dtype=torch.uint8)
    assert d.num_classes == 2
    assert d.x_train.shape == (6, 3, 64, 64) and d.x_test.shape == (2, 3, 64, 64)
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.y_test.tolist() == [1, 0]
    for x, y in zip(d.x_train, d.y_train):
        want = torch.tensor(colour[wnids[y]], dtype=torch.float32)
        assert (x.float().mean((1, 2)) - want).abs().max() < 4  # JPEG is lossy
    assert (d.x_test[0].float() - 128).abs().max() < 4
    small = data.tiny_imagenet(root, max_per_class=1)
    assert small.y_train.tolist() == [0, 1] and small.x_train.dtype == torch.float32

    (root / "train" / "n01" / "images" / "n01_0.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataFileError, match="cannot read image"):
        data.tiny_imagenet(root)
    with pytest.raises(DataFileError, match=r"wnids\.txt"):
        data.tiny_imagenet(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# the data sets carry signal a zoo model can learn


def test_small_models_learn_digits_and_sbm():
    from widthwise.reproduction.zoo import GCN, MLP

    torch.manual_seed(0)
    d = data.digits(seed=0)
    mlp = MLP(64, [32], 10)
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-2)
    for _ in range(40):  # full batch: the fewest optimizer calls
        opt.zero_grad()
        torch.nn.functional.cross_entropy(mlp(d.x_train), d.y_train).backward()
        opt.step()
    assert (mlp(d.x_test).argmax(1) == d.y_test).float().mean() > 0.9

    g = data.sbm_graph(200, 3, feature_signal=0.5, seed=0)
    adj = g.adjacency()
    gcn = GCN(g.x.shape[1], [16], g.num_classes)
    opt = torch.optim.Adam(gcn.parameters(), lr=3e-2)
    for _ in range(40):
        opt.zero_grad()
        out = gcn(g.x, adj)
        torch.nn.functional.cross_entropy(out[g.train_mask], g.y[g.train_mask]).backward()
        opt.step()
    acc = (gcn(g.x, adj).argmax(1) == g.y)[g.test_mask].float().mean()
    assert acc > 0.9
