"""Notebook 11's builders and helpers, checked against hand computations and trusted peers
(torchvision's AlexNet, the paper's LRN formula written out, two separate convolutions)."""

import matplotlib
import pytest
import torch
import torchvision
from torch import nn

from course_tools import models, recipes, variants
from course_tools.analysis import num_params


def conv(out, inp, k, groups=1):
    return out * (inp // groups) * k * k + out


def fc(inp, out):
    return inp * out + out


def test_parameter_counts_by_hand():
    original = (conv(96, 3, 11) + conv(256, 96, 5, 2) + conv(384, 256, 3) + conv(384, 384, 3, 2)
                + conv(256, 384, 3, 2) + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))
    class_post = (conv(48, 3, 11) + conv(128, 48, 5) + conv(192, 128, 3) + conv(192, 192, 3)
                  + conv(128, 192, 3) + fc(128 * 6 * 6, 2048) + fc(2048, 2048) + fc(2048, 1000))
    tv = (conv(64, 3, 11) + conv(192, 64, 5) + conv(384, 192, 3) + conv(256, 384, 3) + conv(256, 256, 3)
          + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))
    assert original == models.ALEXNET_2012_NUM_PARAMS == num_params(models.alexnet_2012()) == 60_965_224
    assert class_post == models.ALEXNET_CLASS_POST_NUM_PARAMS == num_params(models.AlexNet()) == 16_630_440
    assert tv == models.TORCHVISION_ALEXNET_NUM_PARAMS == num_params(torchvision.models.alexnet())
    assert tv == 61_100_840
    # without the towers (groups=1) conv2, conv4 and conv5 have twice the weights
    assert num_params(models.alexnet_2012(groups=1)) - original == (
        conv(256, 96, 5) - conv(256, 96, 5, 2) + conv(384, 384, 3) - conv(384, 384, 3, 2)
        + conv(256, 384, 3) - conv(256, 384, 3, 2))
    assert num_params(models.AlexNet(num_classes=5)) == class_post - fc(2048, 1000) + fc(2048, 5)


@pytest.mark.parametrize("net", [models.alexnet_2012(), models.AlexNet()], ids=["2012", "class post"])
def test_the_papers_sizes_55_27_13_6(net):
    rows = variants.layer_rows(net, (1, 3, 224, 224))
    sides = [r["output_shape"][-1] for r in rows if r["layer"] in ("Conv2d", "MaxPool2d")]
    assert sides == [55, 27, 27, 13, 13, 13, 13, 6]
    assert rows[-1]["output_shape"] == (1000,)


def test_multiply_adds_by_hand():
    rows = variants.weight_layers(models.alexnet_2012(), (1, 3, 224, 224))
    by = {r["name"]: r for r in rows}
    assert by["conv1"]["macs"] == 96 * 55 * 55 * 3 * 11 * 11 == 105_415_200
    assert by["conv2"]["macs"] == 256 * 27 * 27 * 48 * 5 * 5  # grouped: 48 input channels per filter
    assert by["conv3"]["macs"] == 384 * 13 * 13 * 256 * 3 * 3
    assert by["fc6"]["macs"] == 9216 * 4096
    book = variants.weight_layers(models.alexnet(), (1, 1, 224, 224))
    assert sum(r["macs"] for r in book) == pytest.approx(0.938e9, rel=1e-3)  # COURSE.md: 0.94 G
    table = variants.compare({"2012": (models.alexnet_2012(), (1, 3, 224, 224))})
    assert table.loc["total", ("2012", "params (k)")] * 1e3 == pytest.approx(60_965_224)
    assert table.loc["conv1", ("2012", "output")] == "96x55x55 > 27"
    assert table.loc["conv2", ("2012", "output")] == "256x27x27 > 13 (g2)"


def test_lrn_is_the_papers_formula():
    lrn = models.alexnet_2012()[3]
    assert isinstance(lrn, nn.LocalResponseNorm)
    a = torch.relu(torch.randn(2, 96, 4, 4)) * 40
    assert torch.allclose(lrn(a), variants.lrn_paper(a), rtol=1e-5)
    # one value by hand: channel 10 sees channels 8..12
    i, y, x = 10, 1, 2
    s = sum(float(a[0, j, y, x]) ** 2 for j in range(8, 13))
    assert float(lrn(a)[0, i, y, x]) == pytest.approx(float(a[0, i, y, x]) / (2 + 1e-4 * s) ** 0.75, rel=1e-5)
    # the edge: channel 0 sees channels 0..2 only
    s0 = sum(float(a[0, j, 0, 0]) ** 2 for j in range(0, 3))
    assert float(lrn(a)[0, 0, 0, 0]) == pytest.approx(float(a[0, 0, 0, 0]) / (2 + 1e-4 * s0) ** 0.75,
                                                      rel=1e-5)


def test_grouped_convolution_is_two_towers():
    conv2 = models.alexnet_2012()[5]
    x = torch.randn(1, 96, 27, 27)
    halves = [nn.functional.conv2d(x[:, 48 * g:48 * (g + 1)], conv2.weight[128 * g:128 * (g + 1)],
                                   conv2.bias[128 * g:128 * (g + 1)], padding=2) for g in range(2)]
    with torch.no_grad():
        torch.testing.assert_close(conv2(x), torch.cat(halves, dim=1), atol=1e-5, rtol=1e-4)


def test_padding_1_and_2_equals_227_input():
    net = models.alexnet_2012()
    x = torch.randn(1, 3, 224, 224)
    padded = nn.functional.pad(x, (1, 2, 1, 2))
    with torch.no_grad():
        torch.testing.assert_close(net[:2](x), net[1](padded))


def test_initialisations():
    net = models.init_2012(models.alexnet_2012())
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [float(m.bias.detach()[0]) for m in layers] == [0, 1, 0, 1, 1, 1, 1, 0]
    assert layers[5].weight.std().item() == pytest.approx(0.01, rel=0.02)
    post = models.AlexNet(num_classes=10, init_weights=True)
    linears = [m for m in post.modules() if isinstance(m, nn.Linear)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in linears)
    assert linears[0].weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert post(torch.randn(2, 3, 224, 224)).shape == (2, 10)


def test_alexnet_at():
    assert [p.shape for p in recipes.alexnet_at(224).parameters()] == \
        [p.shape for p in models.alexnet().parameters()]
    small = recipes.alexnet_at(112, width=0.25, lrn=True)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in small) == 2
    assert isinstance(small[2], nn.LocalResponseNorm) and isinstance(small[3], nn.MaxPool2d)
    assert small(torch.rand(3, 1, 112, 112)).shape == (3, 10)
    assert small[0].out_channels == 24


def test_augmentation_per_image():
    torch.manual_seed(0)
    X = torch.rand(16, 1, 32, 32)
    Y = recipes.augment_batch(recipes.augmentation(32), X)
    assert Y.shape == X.shape and 0 <= Y.min() and Y.max() <= 1
    changed = [not torch.equal(x, y) for x, y in zip(X, Y)]
    assert sum(changed) >= 14  # crops, flips and jitter: nearly every image differs
    # images are augmented independently: not the same transformation for all of them
    assert len({round(float((y - x).abs().mean()), 4) for x, y in zip(X, Y)}) > 8


@pytest.fixture(scope="module")
def tiny():
    return recipes.Subset(8, 112, train=24, val=8, test=8, device="cpu")


def test_plateau_rule_divides_the_lr(tiny, monkeypatch):
    monkeypatch.setattr(recipes, "evaluate_accuracy_gpu", lambda *a, **k: 0.5)  # never improves
    r = recipes.train_recipe(tiny, size=112, width=0.25, num_epochs=1, lr=0.01, device="cpu",
                             plateau=True, eval_every=1, patience=0, plateau_after=0)
    assert r["curve"]["lr"] == pytest.approx([0.01, 0.01, 0.001])  # lr before each decision
    assert r["final_lr"] == pytest.approx(1e-4)
    r = recipes.train_recipe(tiny, size=112, width=0.25, num_epochs=1, lr=0.01, device="cpu",
                             plateau=False, eval_every=1)
    assert r["final_lr"] == 0.01 and r["steps"] == 3


def test_summarize_calls_noise():
    rows = [dict(recipe=n, seed=s, train_loss=1.0, train_acc=0.5, test_acc=acc)
            for n, s, acc in [("book", 0, 0.50), ("book", 1, 0.52), ("a", 0, 0.70), ("a", 1, 0.71),
                              ("b", 0, 0.53), ("b", 1, 0.49)]]
    s = recipes.summarize(rows)
    assert s.loc["a", "beyond noise?"] == "yes"
    assert s.loc["b", "beyond noise?"].startswith("no")
    assert s.loc["a", "test_acc vs book"] == pytest.approx(0.195)
    one = recipes.summarize([r for r in rows if r["seed"] == 0])
    assert one.loc["a", "beyond noise?"].startswith("unknown")


def test_activation_race_and_diagram():
    from d2l_local.data import load_data_fashion_mnist_fast

    it, _ = load_data_fashion_mnist_fast(32, train_subset=320, test_subset=32)
    r = variants.activation_race(it, {"ReLU": nn.ReLU, "sigmoid": nn.Sigmoid}, num_epochs=1,
                                 lr=0.05, momentum=0.9, every=5)
    assert set(r) == {"ReLU", "sigmoid"} and r["ReLU"]["steps"] == [5, 10]
    assert all(0 <= e <= 1 for e in r["ReLU"]["errors"])
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1)
    variants.draw_parallelism(a, b)
    assert "Model parallelism" in a.get_title() and "Data parallelism" in b.get_title()
    plt.close(fig)
