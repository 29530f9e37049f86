"""Per-layer facts of a sequential net: output shape, parameters, multiply-adds, activations."""

from __future__ import annotations

import torch
from torch import nn


def conv_output_size(w: int, f: int, p: int = 0, s: int = 1) -> int:
    """N = floor((W - F + 2P) / S) + 1, for a convolution or pooling window."""
    return (w - f + 2 * p) // s + 1


def num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def macs(layer: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one example through `layer` (convolutions, grouped or not, and linear layers)."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return out[0].numel() * (layer.in_channels // layer.groups) * kh * kw
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    return 0


def layer_table(net: nn.Sequential, input_shape=(1, 1, 224, 224)) -> list[dict]:
    """One row per layer for a single example: name, output shape, parameters, multiply-adds.

    `activations` is the number of output values (what backpropagation keeps in memory).
    """
    rows = []
    X = torch.zeros(input_shape)
    with torch.no_grad():
        for i, layer in enumerate(net):
            X = layer(X)
            rows.append(dict(index=i, layer=layer.__class__.__name__,
                             output_shape=tuple(X.shape[1:]),
                             params=sum(p.numel() for p in layer.parameters()),
                             macs=macs(layer, X), activations=X[0].numel()))
    return rows
