"""The networks of the chapter, each a small builder next to the facts a test can check.

`alexnet()` is the book's AlexNet (D2L 7.1.2 zh / 8.1.2 en) for 1-channel
224x224 Fashion-MNIST: the 2012 network without its two-GPU split and LRN,
10 outputs instead of 1000, padding 1 on conv1 (so 224 -> 54, not the paper's
55). `lenet()` is the book's LeNet (6.6) for comparison.
"""

from __future__ import annotations

from torch import nn

ALEXNET_NUM_PARAMS = 46_764_746   # 1 input channel, 10 classes (about 187 MB in fp32)
LENET_NUM_PARAMS = 61_706


def alexnet(in_channels: int = 1, num_classes: int = 10, *,
            channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256),
            hidden: int = 4096) -> nn.Sequential:
    """The book's AlexNet as an `nn.Sequential` (input: (batch, in_channels, 224, 224)).

    `channels` (the five convolutions) and `hidden` (the two fully connected layers) default to the
    book's widths (exercise 2 of the chapter narrows them)."""
    c1, c2, c3, c4, c5 = channels
    return nn.Sequential(
        # an 11x11 window with stride 4 to see large objects and shrink 224 -> 54 fast
        nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # a smaller window, padding 2 keeps height and width; more channels
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # three 3x3 convolutions; no pooling between them
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        # fully connected layers many times LeNet's, with dropout against overfitting
        nn.Linear(c5 * 5 * 5, hidden), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(hidden, num_classes),
    )


def lenet() -> nn.Sequential:
    """The book's LeNet-5 (D2L 6.6): sigmoid activations, average pooling, 28x28 input."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10),
    )


def net_28x28(num_classes: int = 10) -> nn.Sequential:
    """An AlexNet-style net for 28x28 images ([Exercise notes], exercise 2, `net_Better`)."""
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=5, stride=2, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=1),
        nn.Conv2d(64, 128, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(128, 128, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(128, 64, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 1024), nn.ReLU(), nn.Dropout(p=0.3),
        nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(p=0.3),
        nn.Linear(512, num_classes),
    )


# The nets the exercise notebooks (06-10) train or measure by name. The exercises' own designs (a
# simpler AlexNet, a small 28x28 net, LeNet with ReLU and dropout) are the students' to write: no
# design that answers an exercise belongs in this package, which students get.
EXERCISE_MODELS = {"alexnet": alexnet, "net_28x28": net_28x28, "lenet": lenet}


# The 2012 network and its descendants (notebook 11): the paper's AlexNet, the [AlexNet class post]'s
# half-width class, and the parameter counts a test checks against a hand computation.

ALEXNET_2012_NUM_PARAMS = 60_965_224     # 3 input channels, 1000 classes, two-tower (grouped) convs
ALEXNET_CLASS_POST_NUM_PARAMS = 16_630_440  # `AlexNet(num_classes=1000)`: half width, 3 channels
TORCHVISION_ALEXNET_NUM_PARAMS = 61_100_840  # `torchvision.models.alexnet()`: one tower, 64-192-384-256-256


def alexnet_2012(num_classes: int = 1000, in_channels: int = 3, *, lrn: bool = True,
                 groups: int = 2) -> nn.Sequential:
    """AlexNet as published (Krizhevsky et al. 2012, section 3 and figure 2); input (batch, 3, 224, 224).

    - 224 -> 55 needs 227 pixels: `ZeroPad2d((1, 2, 1, 2))` pads 1 on the left/top and 2 on the
      right/bottom (the [AlexNet class post]'s padding [1, 2]), so (227 - 11) / 4 + 1 = 55 exactly.
    - Local response normalisation after the ReLUs of conv1 and conv2 with the paper's k=2, n=5,
      alpha=1e-4, beta=0.75. PyTorch divides alpha by n, the paper does not, so the module gets
      alpha = 5 * 1e-4 to compute the paper's formula.
    - The two GPUs as `groups=2`: conv2, conv4 and conv5 see only the channels of their own tower;
      conv3 and the fully connected layers see both (there the towers exchanged data).
      `groups=1` gives the same shapes as one tower, with more parameters.
    - Overlapping max pooling (3x3 windows, stride 2); dropout 0.5 on the outputs of fc6 and fc7.
    """
    def norm():
        return [nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)] if lrn else []

    return nn.Sequential(
        nn.ZeroPad2d((1, 2, 1, 2)),                                           # 3 x 227 x 227
        nn.Conv2d(in_channels, 96, kernel_size=11, stride=4), nn.ReLU(), *norm(),  # 96 x 55 x 55
        nn.MaxPool2d(kernel_size=3, stride=2),                                # 96 x 27 x 27
        nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=groups), nn.ReLU(), *norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),                                # 256 x 13 x 13
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),             # both towers
        nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=groups), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=groups), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),                                # 256 x 6 x 6
        nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, num_classes),
    )


def init_2012(net: nn.Module) -> nn.Module:
    """The paper's initialisation: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the
    hidden fully connected layers (to give the ReLUs positive inputs early), 0 elsewhere."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(layers):  # 0..4 conv1-conv5, 5..7 fc6-fc8
        nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.constant_(m.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)
    return net


class AlexNet(nn.Module):
    """The [AlexNet class post]'s class: one tower of the paper's network (half its channels,
    48-128-192-192-128, fully connected layers of 2048), 3-channel 224x224 input, conv1 with
    padding 2 (55 after flooring), dropout before fc1 and fc2, no LRN.

    `init_weights=True`: Kaiming-normal convolutions (fan_out, ReLU) and N(0, 0.01) linear layers,
    zero biases; otherwise PyTorch's defaults.
    """

    def __init__(self, num_classes: int = 1000, init_weights: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),  # 48x55x55
            nn.MaxPool2d(kernel_size=3, stride=2),                                        # 48x27x27
            nn.Conv2d(48, 128, kernel_size=5, padding=2), nn.ReLU(inplace=True),          # 128x27x27
            nn.MaxPool2d(kernel_size=3, stride=2),                                        # 128x13x13
            nn.Conv2d(128, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 128, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                                        # 128x6x6
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(128 * 6 * 6, 2048), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(2048, 2048), nn.ReLU(inplace=True),
            nn.Linear(2048, num_classes),
        )
        if init_weights:
            self._initialize_weights()

    def forward(self, x):
        x = self.features(x)
        x = x.flatten(start_dim=1)
        return self.classifier(x)

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)
