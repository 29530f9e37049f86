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


def alexnet(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """The book's AlexNet as an `nn.Sequential` (input: (batch, in_channels, 224, 224))."""
    return nn.Sequential(
        # an 11x11 window with stride 4 to see large objects and shrink 224 -> 54 fast
        nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # a smaller window, padding 2 keeps height and width; more channels
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        # three 3x3 convolutions; no pooling between them
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        # fully connected layers many times LeNet's, with dropout against overfitting
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, num_classes),
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
    """An AlexNet-style net for 28x28 images (source `000`, exercise 2, `net_Better`)."""
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
