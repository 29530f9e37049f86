"""The architecture picture: nets side by side, one box per layer, drawn from a real forward pass.

`layer_boxes(net, input_shape)` walks the net with `layer_table` (the shape walk) and merges each
convolution, pooling or fully connected layer with the activation and dropout that follow it, so
that one box says: kind, window and stride, channels or width, activation, and the output shape.
`draw_architecture({...})` draws the nets as columns of such boxes with matplotlib patches, the
input at the bottom, every box the same height: a deeper net is a taller column (depth to scale).
"""

from __future__ import annotations

from torch import nn

from course_tools.analysis import layer_table

COLOURS = {"input": "white", "conv": "#9ecae1", "pool": "#d9d9d9", "fc": "#a1d99b"}
ACTIVATIONS = {nn.ReLU: "ReLU", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}


def _pair(v) -> int:
    return v[0] if isinstance(v, tuple) else v


def _shape(shape: tuple) -> str:
    return "×".join(map(str, shape))


def layer_boxes(net: nn.Sequential, input_shape: tuple) -> list[dict]:
    """One dict per box, input first: kind ('input', 'conv', 'pool', 'fc'), name, text, output."""
    rows = layer_table(net, input_shape)
    boxes = [dict(kind="input", name="input", text="image", output=_shape(tuple(input_shape[1:])))]
    count = {}
    for layer, row in zip(net, rows):
        kind = ("conv" if isinstance(layer, nn.Conv2d) else
                "pool" if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)) else
                "fc" if isinstance(layer, nn.Linear) else None)
        if kind is not None:
            count[kind] = count.get(kind, 0) + 1
            name = f"{kind}{count[kind]}"
            k, s, p = (_pair(getattr(layer, a, 0)) for a in ("kernel_size", "stride", "padding"))
            if kind == "conv":
                text = f"{k}×{k} conv, stride {s}, pad {p}, {layer.out_channels} channels"
            elif kind == "pool":
                text = f"{k}×{k} {'max' if isinstance(layer, nn.MaxPool2d) else 'avg'} pool, stride {s}"
            else:
                text = f"fully connected, {layer.in_features} → {layer.out_features}"
            boxes.append(dict(kind=kind, name=name, text=text, output=_shape(row["output_shape"])))
        elif type(layer) in ACTIVATIONS and len(boxes) > 1:
            boxes[-1]["text"] += f", {ACTIVATIONS[type(layer)]}"
        elif isinstance(layer, nn.Dropout) and len(boxes) > 1:
            boxes[-1]["text"] += f", dropout {layer.p:g}"
        # Flatten only reshapes: the next fc box's input width shows it
    return boxes


def draw_architecture(columns: dict, *, title: str | None = None, box_height: float = 0.62,
                      gap: float = 0.28):
    """Draw `{name: (net, input_shape)}` side by side; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    if not columns:
        raise ValueError("give at least one net: {'AlexNet': (net, (1, 1, 224, 224))}")
    walks = {name: layer_boxes(net, shape) for name, (net, shape) in columns.items()}
    depth = max(len(b) for b in walks.values())
    width, spacing = 6.4, 7.2  # data units; 7.2 units = 3.9 inches
    fig, ax = plt.subplots(figsize=(3.9 * len(walks) + 0.4, 0.55 * depth + 1.3))
    step = box_height + gap
    for c, (name, boxes) in enumerate(walks.items()):
        x = c * spacing
        for i, box in enumerate(boxes):
            y = i * step
            ax.add_patch(FancyBboxPatch((x, y), width, box_height, boxstyle="round,pad=0.02",
                                        fc=COLOURS[box["kind"]], ec="0.3", lw=0.8))
            ax.text(x + 0.08, y + box_height * 0.68, f"{box['name']}: {box['text']}",
                    va="center", fontsize=7.2)
            ax.text(x + 0.08, y + box_height * 0.27, f"output {box['output']}", va="center",
                    fontsize=7.2, color="0.25")
            if i:
                ax.add_patch(FancyArrowPatch((x + width / 2, y - gap), (x + width / 2, y),
                                             arrowstyle="-|>", mutation_scale=7, lw=0.8, color="0.3"))
        n_weighted = sum(b["kind"] in ("conv", "fc") for b in boxes)
        ax.text(x + width / 2, len(boxes) * step + 0.05, f"{name}\n{n_weighted} layers with weights",
                ha="center", va="bottom", fontsize=9, weight="bold")
    ax.set_xlim(-0.2, (len(walks) - 1) * spacing + width + 0.2)
    ax.set_ylim(-0.3, depth * step + 0.9)
    ax.axis("off")
    ax.legend(handles=[Patch(fc=COLOURS[k], ec="0.3", label=label) for k, label in
                       (("conv", "convolution"), ("pool", "pooling"), ("fc", "fully connected"))],
              loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
