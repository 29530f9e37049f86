"""d2l_local: the helpers of the AlexNet chapter (D2L 7.1 zh / 8.1 en), replicated from the
`d2l` package with the book's names and printed lines, without its faults: devices, timing and
counting, plotting and `Animator`, the data, `train_ch6` and what it needs.

The course's own tools (settings, results, models, analyses, exercises, the distributed launcher)
are the package `course_tools`; nothing here imports it.

Importing it does nothing else: no prints, no global matplotlib or cuDNN
settings, no downloads.
"""

from d2l_local.data import (
    DataError,
    data_dir,
    get_fashion_mnist_labels,
    load_data_fashion_mnist,
    load_data_fashion_mnist_fast,
)
from d2l_local.device import cpu, gpu, num_gpus, synchronize, try_all_gpus, try_gpu
from d2l_local.metrics import Accumulator, Timer, accuracy, evaluate_accuracy_gpu
from d2l_local.plotting import Animator, set_axes, show_images
from d2l_local.training import History, estimate_train_seconds, init_weights_xavier, train_ch6

__all__ = [
    "Accumulator", "Animator", "DataError", "History", "Timer", "accuracy",
    "cpu", "data_dir", "estimate_train_seconds", "evaluate_accuracy_gpu",
    "get_fashion_mnist_labels", "gpu", "init_weights_xavier", "load_data_fashion_mnist",
    "load_data_fashion_mnist_fast",
    "num_gpus", "set_axes", "show_images", "synchronize", "train_ch6", "try_all_gpus", "try_gpu",
]
