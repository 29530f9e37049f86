"""The chapter's facts, checked against torchvision and hand computations."""

import pytest
import torch
import torchvision

from course_tools import models
from course_tools.analysis import conv_output_size, layer_table, num_params

BOOK_SHAPES = [(96, 54, 54), (96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 26, 26),
               (256, 12, 12), (384, 12, 12), (384, 12, 12), (384, 12, 12), (384, 12, 12),
               (256, 12, 12), (256, 12, 12), (256, 5, 5), (6400,), (4096,), (4096,), (4096,),
               (4096,), (4096,), (4096,), (10,)]


def test_alexnet_shape_walk_is_the_books():
    rows = layer_table(models.alexnet(), (1, 1, 224, 224))
    assert [r["output_shape"] for r in rows] == BOOK_SHAPES


def test_parameter_counts():
    assert num_params(models.alexnet()) == models.ALEXNET_NUM_PARAMS == 46_764_746
    assert num_params(models.lenet()) == models.LENET_NUM_PARAMS
    # the first FC layer alone: 6400 * 4096 + 4096
    assert num_params(models.alexnet()[13 + 1]) == 6400 * 4096 + 4096
    # torchvision's AlexNet (3 channels, 1000 classes, adaptive pooling) for comparison
    assert num_params(torchvision.models.alexnet()) == 61_100_840


def test_multiply_adds_by_hand():
    rows = layer_table(models.alexnet())
    conv2 = rows[3]
    assert conv2["macs"] == 256 * 26 * 26 * (96 * 5 * 5) == 415_334_400
    total = sum(r["macs"] for r in rows)
    assert total == pytest.approx(0.94e9, rel=0.01)
    assert max(rows, key=lambda r: r["macs"])["index"] == 3  # conv2, not "the second-to-last conv"


@pytest.mark.parametrize("w,f,p,s,n", [(224, 11, 1, 4, 54), (54, 3, 0, 2, 26), (26, 5, 2, 1, 26),
                                       (12, 3, 0, 2, 5), (227, 11, 0, 4, 55), (55, 3, 0, 2, 27)])
def test_output_size_formula(w, f, p, s, n):
    assert conv_output_size(w, f, p, s) == n
    conv = torch.nn.Conv2d(1, 1, f, stride=s, padding=p)
    assert conv(torch.zeros(1, 1, w, w)).shape[-1] == n


def test_net_28x28_shapes():
    rows = layer_table(models.net_28x28(), (1, 1, 28, 28))
    assert rows[-1]["output_shape"] == (10,)
    assert rows[9]["output_shape"] == (64, 5, 5)


def test_matmul_rate_is_measured():
    from d2l_local.device import matmul_gflops

    assert matmul_gflops("cpu", n=256, repeats=2) > 0.1
