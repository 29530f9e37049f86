"""Helpers in d2l_local/exercises.py that the exercise notebooks' smoke runs do not pin down."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from d2l_local import models  # noqa: E402
from d2l_local.exercises import measured_peak_memory, plot_history  # noqa: E402


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_measured_peak_memory_uses_the_momentum_asked_for(momentum):
    tensors = len(list(models.EXERCISE_MODELS["net_28x28_small"]().parameters()))  # weights and biases
    m = measured_peak_memory("net_28x28_small", 8, size=28, steps=2, momentum=momentum)
    assert m["momentum_buffers"] == (tensors if momentum else 0)  # plain SGD keeps no buffer
    assert m["peak"] >= m["before"] > 0


def test_measured_peak_memory_rejects_a_bad_momentum():
    with pytest.raises(ValueError, match="plain SGD"):
        measured_peak_memory("net_28x28_small", 8, size=28, momentum=1.5)


def test_plot_history_has_whole_epoch_ticks_and_names_the_mark():
    epochs = [dict(epoch=e, train_loss=1 / e, train_acc=0.5 + e / 10, test_acc=0.4 + e / 10)
              for e in (1, 2, 3)]
    fig, ax = plt.subplots()
    plot_history(ax, dict(epochs=epochs), "t", mark_epoch=2, mark_label="read as 10 epochs")
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert "read as 10 epochs" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
