"""The helpers behind notebooks 01-05: filters files, the architecture picture, filter grids,
titled live plots and the two-recipe comparison."""

import json

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from course_tools import filters as flt  # noqa: E402
from course_tools.compare import loss_curves  # noqa: E402
from course_tools.diagram import draw_architecture, layer_boxes  # noqa: E402
from course_tools.models import alexnet, lenet  # noqa: E402
from d2l_local.plotting import Animator, plot_labels, show_filters  # noqa: E402

PROVENANCE = dict(epochs=1, test_acc=0.5, test_images=100, recipe=dict(lr=0.01, momentum=0.9))


def _save(net, tmp_path, setting="quick", images_seen=1000, **kw):
    return flt.save_conv1_filters(net, tmp_path, setting=setting, device="cpu",
                                  images_seen=images_seen, **{**PROVENANCE, **kw})


def test_filters_round_trip(tmp_path):
    net = alexnet()
    path = _save(net, tmp_path)
    assert path.name == "conv1_filters.quick.cpu.1000.npz"
    assert 40_000 < path.stat().st_size < 60_000  # 96 x 121 float32 and a little JSON
    weights, provenance = flt.load_conv1_filters(path)
    assert weights.shape == (96, 1, 11, 11)
    assert np.array_equal(weights, net[0].weight.detach().numpy())
    assert provenance["images_seen"] == 1000 and provenance["recipe"]["momentum"] == 0.9
    assert "momentum 0.9" in flt.describe(provenance) and "1,000 images seen" in flt.describe(provenance)
    assert flt.load_conv1_start(path) is None
    assert "setting 'quick' on cpu" in flt.describe(provenance)  # the setting's own values
    changed = dict(provenance, set_by_parameter={"num_epochs": 1, "train_subset": 60000})
    assert "setting 'quick' with num_epochs=1, train_subset=60000 on cpu" in flt.describe(changed)
    start = torch.randn(96, 1, 11, 11)
    with_start = _save(net, tmp_path, images_seen=5, start=start)
    assert np.array_equal(flt.load_conv1_start(with_start), start.numpy())
    with pytest.raises(ValueError, match="start has shape"):
        _save(net, tmp_path, start=torch.zeros(3))


def test_best_filters_prefers_the_longest_run_and_skips_smoke(tmp_path):
    net = alexnet()
    assert flt.best_conv1_filters(tmp_path) is None
    _save(net, tmp_path, images_seen=7_680)
    longest = _save(net, tmp_path, images_seen=60_000)
    _save(net, tmp_path, setting="smoke", images_seen=10**9)  # smoke never counts
    assert flt.best_conv1_filters(tmp_path) == longest


def test_filters_bad_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="05_training_alexnet"):
        flt.load_conv1_filters(tmp_path / "missing.npz")
    other = tmp_path / "conv1_filters.x.npz"
    with open(other, "wb") as f:
        np.savez(f, something=np.zeros(3))
    with pytest.raises(ValueError, match="save_conv1_filters"):
        flt.load_conv1_filters(other)
    partial = tmp_path / "partial.npz"
    with open(partial, "wb") as f:
        np.savez(f, weights=np.zeros((96, 1, 11, 11)), provenance=np.array(json.dumps({"setting": "quick"})))
    with pytest.raises(ValueError, match="lacks"):
        flt.load_conv1_filters(partial)
    with pytest.raises(ValueError, match="no Conv2d"):
        flt.first_conv(nn.Linear(2, 2))


def test_committed_filters_show_structure():
    """The course ships learned filters from a real run (not smoke), and they are not noise."""
    path = flt.best_conv1_filters(flt.course_results_dir())
    assert path is not None, "commit a conv1_filters file: python tools/run_notebooks.py 05 --in-place"
    weights, provenance = flt.load_conv1_filters(path)
    assert provenance["setting"] != "smoke" and provenance["images_seen"] >= 7_680
    start = flt.load_conv1_start(path)
    # the change in training shows the structure (the filters themselves keep their start's noise)
    learned = [flt.neighbour_correlation(weights)] + \
        ([] if start is None else [flt.neighbour_correlation(weights - start)])
    assert max(learned) > 0.3  # Xavier noise gives about 0


def test_training_moves_a_filter_only_within_the_windows_it_reads():
    """01's explanation of the noisy learned filters: a filter's gradient is a sum of the windows
    the layer reads, so on smooth (enlarged) images it lies in a few patterns, a random start does not."""
    torch.manual_seed(0)
    images = nn.functional.interpolate(torch.rand(16, 1, 7, 7), size=56, mode="bilinear")  # smooth
    conv = nn.Conv2d(1, 8, kernel_size=11, stride=4, padding=1)
    basis, share = flt.window_basis(flt.input_windows(images, conv), energy=0.999)
    assert 1 < len(basis) < 40 and share[len(basis) - 1] >= 0.999 and share[len(basis) - 2] < 0.999
    torch.testing.assert_close(basis @ basis.T, torch.eye(len(basis)), atol=1e-5, rtol=0)  # orthonormal
    conv(images).pow(2).sum().backward()
    grad, start = conv.weight.grad, conv.weight.detach()
    assert flt.project(grad, basis).norm() > 0.99 * grad.norm()   # training stays in the span
    assert flt.project(start, basis).norm() < 0.7 * start.norm()  # the random start mostly does not
    torch.testing.assert_close(flt.project(flt.project(start, basis), basis), flt.project(start, basis))
    with pytest.raises(ValueError, match="energy"):
        flt.window_basis(torch.rand(10, 4), energy=1.5)
    with pytest.raises(ValueError, match="expected"):
        flt.input_windows(torch.rand(2, 3, 28, 28), conv)


def test_committed_filters_learned_only_where_the_data_can_see():
    """01's reading of the committed filters: what training changed lies in the few patterns the
    windows hold, the rest of each filter is its untouched random start, and conv1 computes with the
    part in those patterns, which training made (the start's share of it is small)."""
    from d2l_local.data import fashion_mnist_tensors, resize_batch

    path = flt.best_conv1_filters(flt.course_results_dir())
    weights = torch.from_numpy(flt.load_conv1_filters(path)[0])
    start = torch.from_numpy(flt.load_conv1_start(path))
    conv1 = alexnet()[0]
    images = resize_batch(fashion_mnist_tensors()["train-images-idx3-ubyte"][:64], 224)
    basis, _ = flt.window_basis(flt.input_windows(images, conv1), energy=0.999)
    seen, change = flt.project(weights, basis), weights - start
    assert flt.project(change, basis).norm() ** 2 > 0.99 * change.norm() ** 2
    assert flt.project(start, basis).norm() ** 2 < 0.3 * seen.norm() ** 2
    unseen, unseen_start = weights - seen, start - flt.project(start, basis)
    assert (unseen - unseen_start).norm() < 0.05 * unseen_start.norm()
    out = nn.functional.conv2d(images[:8], weights, stride=4, padding=1)
    assert (nn.functional.conv2d(images[:8], seen, stride=4, padding=1) - out).norm() < 0.01 * out.norm()


def test_layer_boxes_follow_the_shape_walk():
    boxes = layer_boxes(alexnet(), (1, 1, 224, 224))
    assert [b["name"] for b in boxes] == ["input", "conv1", "pool1", "conv2", "pool2", "conv3", "conv4",
                                          "conv5", "pool3", "fc1", "fc2", "fc3"]
    assert boxes[1]["output"] == "96×54×54" and "11×11 conv, stride 4" in boxes[1]["text"]
    assert boxes[1]["text"].endswith("ReLU") and "dropout 0.5" in boxes[9]["text"]
    assert boxes[-1]["output"] == "10"
    lenet_boxes = layer_boxes(lenet(), (1, 1, 28, 28))
    assert len(lenet_boxes) == 8 and "sigmoid" in lenet_boxes[1]["text"]


def test_draw_architecture(tmp_path):
    fig = draw_architecture({"LeNet": (lenet(), (1, 1, 28, 28)), "AlexNet": (alexnet(), (1, 1, 224, 224))},
                            title="t")
    fig.savefig(tmp_path / "a.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("conv5" in t for t in texts) and any("8 layers with weights" in t for t in texts)
    with pytest.raises(ValueError, match="at least one net"):
        draw_architecture({})


def test_show_filters_is_centred_on_zero():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    image = show_filters(torch.randn(8, 1, 5, 5), 4, ax, "t")
    assert image.get_clim() == (-1, 1) and len(fig.axes) == 2  # the colour bar
    assert np.isnan(image.get_array().filled(np.nan)).any()  # the grey padding
    with pytest.raises(ValueError, match="one input channel"):
        show_filters(torch.randn(8, 3, 5, 5), 4, ax, "t")
    plt.close(fig)


def test_plot_labels_name_the_run():
    with plot_labels(title="setting 'quick' on cpu", ylabel="loss"):
        animator = Animator(xlabel="epoch", legend=["a"], display=False)
    animator.add(1, 0.5)
    assert animator.axes[0].get_title() == "setting 'quick' on cpu"
    assert animator.axes[0].get_ylabel() == "loss"
    assert Animator(display=False).axes[0].get_title() == ""  # outside the block: nothing


def test_loss_curves_use_the_same_batches():
    torch.manual_seed(0)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]

    def make_net():
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    curves = loss_curves(make_net, lambda: data, {"a": dict(lr=0.1), "b": dict(lr=0.1),
                                                  "m": dict(lr=0.1, momentum=0.9)}, 5, "cpu")
    assert curves["a"] == curves["b"] and len(curves["a"]) == 5  # same start, batches, recipe
    assert curves["m"][:2] == curves["a"][:2] and curves["m"][2:] != curves["a"][2:]
    with pytest.raises(ValueError, match="no batch"):
        loss_curves(make_net, lambda: [], {"a": dict(lr=0.1)}, 1, "cpu")
    with pytest.raises(ValueError, match="at least one step"):
        loss_curves(make_net, lambda: data, {"a": dict(lr=0.1)}, 0, "cpu")
