"""Fashion-MNIST: checks with clear errors, parity with d2l's loader, the fast path's equivalence."""

import shutil

import pytest
import torch

import d2l_local
from d2l_local.data import FILES, DataError, fashion_mnist_tensors, raw_dir


def test_the_real_data_set(fmnist):
    labels = fmnist["train-labels-idx1-ubyte"]
    assert labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert labels.bincount().tolist() == [6000] * 10
    assert fmnist["t10k-labels-idx1-ubyte"].bincount().tolist() == [1000] * 10
    assert fmnist["train-images-idx3-ubyte"].shape == (60000, 28, 28)


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of the data under $D2L_DATA_DIR, to damage."""
    shutil.copytree(raw_dir(), raw_dir(tmp_path))
    monkeypatch.setenv("D2L_DATA_DIR", str(tmp_path))
    return raw_dir(tmp_path)


def _damage(path, how):
    raw = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "magic":
        raw[3] = 0x07
        path.write_bytes(raw)
    elif how == "label":
        raw[-1] = 42
        path.write_bytes(raw)
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("name,how,says", [
    ("train-images-idx3-ubyte", "truncate", "truncated or damaged"),
    ("t10k-images-idx3-ubyte", "magic", "magic number"),
    ("train-labels-idx1-ubyte", "label", "labels outside 0-9"),
    ("t10k-labels-idx1-ubyte", "missing", "missing"),
])
def test_damaged_data_is_reported_with_what_to_run(data_copy, name, how, says):
    _damage(data_copy / name, how)
    with pytest.raises(DataError, match=says) as err:
        d2l_local.load_data_fashion_mnist(32)
    assert "d2l_local.data" in str(err.value) or "make data" in str(err.value)


def test_make_data_repairs_a_damaged_copy(data_copy):
    from d2l_local.data import DEBIAN_DIR, prepare

    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data installs it as root)")

    _damage(data_copy / "train-images-idx3-ubyte", "truncate")
    assert prepare().startswith("Debian package")
    assert fashion_mnist_tensors()["train-images-idx3-ubyte"].shape == (60000, 28, 28)


def test_data_dir_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("D2L_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert (d2l_local.data_dir() / "FashionMNIST" / "raw" / next(iter(FILES))).is_file()


@pytest.mark.parametrize("resize", [None, 224, 64])
def test_same_tensors_as_d2l(d2l, book_cwd, resize):
    book_train, book_test = d2l.load_data_fashion_mnist(256, resize=resize)
    ours_train, ours_test = d2l_local.load_data_fashion_mnist(256, resize=resize)
    for book, ours in ((book_train.dataset, ours_train.dataset), (book_test.dataset, ours_test.dataset)):
        assert len(book) == len(ours)
        for i in (0, 1, 777, len(book) - 1):
            (xb, yb), (xo, yo) = book[i], ours[i]
            assert torch.equal(xb, xo) and yb == yo


@pytest.mark.parametrize("resize", [None, 224, 96])
def test_fast_path_yields_the_torchvision_images(resize):
    tv_train, _ = d2l_local.load_data_fashion_mnist(64, resize=resize, num_workers=0)
    fast_train, _ = d2l_local.load_data_fashion_mnist_fast(64, resize=resize)
    idx = torch.tensor([0, 5, 123, 4567, 59999])
    fast = d2l_local.data.resize_batch(fast_train.images[idx], resize)
    tv = torch.stack([tv_train.dataset[int(i)][0] for i in idx])
    assert fast.shape == tv.shape == (5, 1, resize or 28, resize or 28)
    assert (fast - tv).abs().max() <= 1 / 255 + 1e-6
    assert torch.equal(fast_train.labels[idx], torch.tensor([tv_train.dataset[int(i)][1] for i in idx]))


def test_fast_path_visits_every_example_once_per_epoch_in_a_new_order():
    train, test = d2l_local.load_data_fashion_mnist_fast(1000, train_subset=5000, seed=3)
    assert len(train) == 5 and len(test) == 10
    # tag each image by its index through its pixels: compare against the stored images
    images = train.images.reshape(len(train.images), -1).float()
    orders = []
    for _ in range(2):
        seen = []
        for X, y in train:
            assert X.dtype == torch.float32 and y.dtype == torch.int64
            flat = (X * 255).round().reshape(len(X), -1)
            seen += torch.cdist(flat, images).argmin(dim=1).tolist()
        assert sorted(seen) == list(range(5000))
        orders.append(seen)
    assert orders[0] != orders[1]
    again, _ = d2l_local.load_data_fashion_mnist_fast(1000, train_subset=5000, seed=3)
    first = torch.cat([y for _, y in again])
    assert torch.equal(first, train.labels[torch.tensor(orders[0])])


def test_fast_path_leaves_the_global_rng_alone():
    train, _ = d2l_local.load_data_fashion_mnist_fast(100, train_subset=300)
    state = torch.get_rng_state()
    list(train)
    assert torch.equal(state, torch.get_rng_state())


def test_labels():
    assert d2l_local.get_fashion_mnist_labels([0, 9, torch.tensor(5)]) == ["t-shirt", "ankle boot", "sandal"]


@pytest.mark.parametrize("subset", [0, -5, 60_001])
def test_bad_subset_sizes_are_refused(subset):
    with pytest.raises(ValueError, match="train_subset"):
        d2l_local.load_data_fashion_mnist_fast(64, train_subset=subset)
    with pytest.raises(ValueError, match="train_subset"):
        d2l_local.load_data_fashion_mnist(64, train_subset=subset)
