"""The instructor's designs for the exercises (not in the students' hand-out, `make handout`).

Students write these themselves in the exercise notebooks; the instructor notebooks in
`notebooks/` hold the same designs between nbgrader's solution markers. They live here, outside
`d2l_local`, so that no solution can be imported from what students get; the maintainers' tools
(`tools/exercise_full_runs.py`, `tools/exercise_seeds.py`) train them at the book's length.
"""

from __future__ import annotations

from torch import nn

from course_tools.models import alexnet


def alexnet_small(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Exercise 2a (07): the book's AlexNet with the same layers and 224x224 input, a quarter of
    the channels (24-64-96-96-64) and fully connected layers of 512 instead of 4096."""
    return alexnet(in_channels, num_classes, channels=(24, 64, 96, 96, 64), hidden=512)


def net_28x28_small(num_classes: int = 10) -> nn.Sequential:
    """Exercise 2b (07): a small design for 28x28 input, AlexNet's ideas (ReLU, max pooling,
    dropout, stacked 3x3 convolutions) at a tenth of `net_28x28`'s multiply-adds."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),                      # 28 -> 14
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),                      # 14 -> 7
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(p=0.3),
        nn.Linear(128, num_classes),
    )


def lenet_relu_dropout(p: float = 0.2) -> nn.Sequential:
    """Exercise 5 (10): LeNet with ReLU and dropout ([Exercise notes]' `net_try`), average pooling
    kept; the student's `lenet_relu`."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Dropout(p=p),
        nn.Linear(120, 84), nn.ReLU(), nn.Dropout(p=p),
        nn.Linear(84, 10),
    )
