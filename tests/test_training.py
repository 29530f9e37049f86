"""`train_ch6` and friends against the real `d2l` package (the oracle)."""

import contextlib
import io
import math
import re

import pytest
import torch
from torch import nn
from torch.utils import data

import d2l_local


def _mini_loaders(fmnist, n_train, n_test, batch_size, seed=0):
    """A small slice of Fashion-MNIST as shuffled DataLoaders; both trainers get equal copies."""
    X = fmnist["train-images-idx3-ubyte"][:n_train].unsqueeze(1).float() / 255
    y = fmnist["train-labels-idx1-ubyte"][:n_train].long()
    Xt = fmnist["t10k-images-idx3-ubyte"][:n_test].unsqueeze(1).float() / 255
    yt = fmnist["t10k-labels-idx1-ubyte"][:n_test].long()
    return (data.DataLoader(data.TensorDataset(X, y), batch_size, shuffle=True),
            data.DataLoader(data.TensorDataset(Xt, yt), batch_size))


def _small_net():
    # LeNet-like with ReLU and dropout, so the RNG order of init, shuffling and dropout matters
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(400, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))


def _run(train_fn, fmnist, **kw):
    torch.manual_seed(7)
    net = _small_net()
    train_iter, test_iter = _mini_loaders(fmnist, 640, 200, 64)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = train_fn(net, train_iter, test_iter, 3, 0.1, torch.device("cpu"), **kw)
    # the book's Animator prints `<Figure ...>` outside Jupyter: not part of its output proper
    # and clears the terminal line (ESC[2K) for each point
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out.getvalue())
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("<Figure")]
    return net, lines, result


def test_train_ch6_matches_the_book(d2l, fmnist):
    book_net, book_lines, book_result = _run(d2l.train_ch6, fmnist)
    net, lines, history = _run(d2l_local.train_ch6, fmnist)
    assert book_result is None  # the book's returns nothing
    assert lines[:2] == book_lines[:2]  # 'training on cpu', 'loss ..., train acc ..., test acc ...'
    assert re.fullmatch(r"\d+\.\d examples/sec on cpu", lines[2])
    assert lines[3] == "precision: fp32, NCHW" and len(lines) == 4  # no setting chosen: the book's
    assert (history.precision, history.memory_format) == ("fp32", "NCHW")
    for p_book, p_ours in zip(book_net.state_dict().values(), net.state_dict().values()):
        torch.testing.assert_close(p_ours, p_book, rtol=1e-5, atol=1e-6)
    assert lines[1] == (f"loss {history.train_loss:.3f}, train acc {history.train_acc:.3f}, "
                        f"test acc {history.test_acc:.3f}")


def test_history_is_returned(fmnist):
    _, _, h = _run(d2l_local.train_ch6, fmnist, verbose=False)
    assert [e["epoch"] for e in h.epochs] == [1, 2, 3]
    assert h.num_examples == 3 * 640
    assert 0 < h.compute_seconds <= h.wall_seconds
    assert h.wall_examples_per_sec <= h.examples_per_sec
    assert all(0 <= e["test_acc"] <= 1 and e["train_loss"] > 0 for e in h.epochs)
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    d = h.to_dict()
    assert d["test_acc"] == h.test_acc and "figure" not in d


def test_fewer_than_five_batches(d2l, fmnist):
    train_iter, test_iter = _mini_loaders(fmnist, 96, 32, 32)  # 3 batches
    with pytest.raises(ZeroDivisionError):  # the book's fault
        with contextlib.redirect_stdout(io.StringIO()):
            d2l.train_ch6(_small_net(), train_iter, test_iter, 1, 0.1, "cpu")
    h = d2l_local.train_ch6(_small_net(), train_iter, test_iter, 2, 0.1, "cpu", verbose=False)
    assert len(h.epochs) == 2


def test_continue_training_without_reinitialising(fmnist):
    train_iter, test_iter = _mini_loaders(fmnist, 640, 200, 64)
    net = _small_net()
    first = d2l_local.train_ch6(net, train_iter, test_iter, 2, 0.3, "cpu", verbose=False)
    more = d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.3, "cpu", verbose=False,
                               init_weights=False)
    assert more.train_loss < first.epochs[0]["train_loss"]
    restarted = d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.3, "cpu", verbose=False)
    assert restarted.train_loss > more.train_loss


def test_options_are_keyword_only_and_precision_is_checked(fmnist):
    train_iter, test_iter = _mini_loaders(fmnist, 64, 64, 64)
    with pytest.raises(TypeError):
        d2l_local.train_ch6(_small_net(), train_iter, test_iter, 1, 0.1, "cpu", False)
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        d2l_local.train_ch6(_small_net(), train_iter, test_iter, 1, 0.1, "cpu", precision="fp16")


def test_channels_last_gives_the_same_training(fmnist):
    results = []
    for cl in (False, True):
        torch.manual_seed(1)
        train_iter, test_iter = _mini_loaders(fmnist, 256, 128, 64)
        results.append(d2l_local.train_ch6(_small_net(), train_iter, test_iter, 1, 0.1, "cpu",
                                           verbose=False, channels_last=cl))
    assert results[0].train_loss == pytest.approx(results[1].train_loss, rel=1e-4)


def test_fast_path_trains_like_the_torchvision_path():
    """Same images (within 1/255), same net and seed: metrics agree within tolerance."""
    out = []
    for loader in (d2l_local.load_data_fashion_mnist, d2l_local.load_data_fashion_mnist_fast):
        train_iter, test_iter = loader(64, resize=32, train_subset=2048, test_subset=1024)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 64), nn.ReLU(), nn.Linear(64, 10))
        out.append(d2l_local.train_ch6(net, train_iter, test_iter, 3, 0.1, "cpu", verbose=False))
    tv, fast = out  # the shuffling orders differ, so only close, not equal
    assert tv.test_acc > 0.6
    assert fast.train_loss == pytest.approx(tv.train_loss, abs=0.08)
    assert fast.test_acc == pytest.approx(tv.test_acc, abs=0.04)


def test_accuracy_and_evaluation_match_the_book(d2l, fmnist):
    y_hat = torch.randn(500, 10)
    y = torch.randint(0, 10, (500,))
    assert d2l_local.accuracy(y_hat, y) == d2l.accuracy(y_hat, y)
    torch.manual_seed(3)
    net = _small_net()
    _, test_iter = _mini_loaders(fmnist, 64, 300, 64)
    net.train()
    assert d2l_local.evaluate_accuracy_gpu(net, test_iter) == d2l.evaluate_accuracy_gpu(net, test_iter)
    net.train()
    d2l_local.evaluate_accuracy_gpu(net, test_iter)
    assert net.training  # put back into the mode it was in


def test_timer_and_accumulator_match_the_book(d2l):
    a, b = d2l_local.Accumulator(3), d2l.Accumulator(3)
    for args in ((1, 2.5, torch.tensor(3.0)), (4, 5, 6)):
        a.add(*args)
        b.add(*args)
    assert a.data == b.data and a[1] == b[1] == 7.5
    t = d2l_local.Timer()
    t.times = [1.0, 2.0, 3.0]
    assert (t.sum(), t.avg(), t.cumsum()) == (6.0, 2.0, [1.0, 3.0, 6.0])


def test_estimate_leaves_net_and_rng_untouched():
    net = _small_net()
    before = [p.clone() for p in net.parameters()]
    state = torch.get_rng_state()
    s = d2l_local.estimate_train_seconds(net, (16, 1, 28, 28), "cpu", num_train=1600,
                                         num_test=160, num_epochs=2)
    assert s > 0
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_devices():
    assert d2l_local.try_gpu(99) == torch.device("cpu") or torch.cuda.device_count() > 99
    if not torch.cuda.is_available():
        assert d2l_local.try_all_gpus() == [torch.device("cpu")]
        with pytest.raises(RuntimeError, match="try_gpu"):
            d2l_local.gpu(0)


def test_results_file_records_the_run(fmnist, tmp_path, monkeypatch):
    import json

    from course_tools import results, settings

    monkeypatch.setenv("D2L_RESULTS_DIR", str(tmp_path))
    _, _, h = _run(d2l_local.train_ch6, fmnist, verbose=False)
    table = {n: dict(batch_size=64) for n in settings.NAMES}
    cfg = settings.choose_setting(table, {"setting": "smoke"}, verbose=False)
    path = results.save_results("demo", cfg, h, seed=7, extra=dict(note="x"))
    r = json.loads(path.read_text())
    assert path.name == "demo.smoke.cpu.json"
    assert (r["setting"], r["device"], r["seed"], r["note"]) == ("smoke", "cpu", 7, "x")
    assert r["test_acc"] == h.test_acc and len(r["epochs"]) == 3 and r["versions"]["torch"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("options", [{}, dict(channels_last=True, bf16=True)])
def test_cuda_path(options):
    """The GPU path end to end: data on the device, no per-step sync, CUDA-event timing."""
    device = torch.device("cuda:0")
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(
        64, resize=64, device=device, train_subset=640, test_subset=256)
    X, _ = next(iter(train_iter))
    assert X.device.type == "cuda"
    net = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                        nn.Flatten(), nn.Linear(128, 10))
    h = d2l_local.train_ch6(net, train_iter, test_iter, 2, 0.1, device, verbose=False, **options)
    assert h.device == "cuda:0" and 0 < h.compute_seconds <= h.wall_seconds
    assert math.isfinite(h.train_loss) and 0 <= h.test_acc <= 1
    assert d2l_local.estimate_train_seconds(net, (64, 1, 64, 64), device, num_train=640,
                                            num_test=256, num_epochs=1) > 0
