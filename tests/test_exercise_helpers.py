"""Helpers in d2l_local/exercises.py that the exercise notebooks' smoke runs do not pin down."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_tools import models  # noqa: E402
from course_tools.exercises import measured_peak_memory, plot_history  # noqa: E402


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_measured_peak_memory_uses_the_momentum_asked_for(momentum):
    tensors = len(list(models.EXERCISE_MODELS["lenet"]().parameters()))  # weights and biases
    m = measured_peak_memory("lenet", 8, size=28, steps=2, momentum=momentum)
    assert m["momentum_buffers"] == (tensors if momentum else 0)  # plain SGD keeps no buffer
    assert m["peak"] >= m["before"] > 0


def test_measured_peak_memory_rejects_a_bad_momentum():
    with pytest.raises(ValueError, match="plain SGD"):
        measured_peak_memory("lenet", 8, size=28, momentum=1.5)


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


def test_count_macs_counts_nested_layers_like_layer_table_counts_flat_ones():
    from torch import nn

    from course_tools.analysis import layer_table
    from course_tools.exercises import count_macs

    flat = models.alexnet()
    assert count_macs(flat, (1, 1, 224, 224)) == sum(r["macs"] for r in layer_table(flat, (1, 1, 224, 224)))
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3)), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    assert count_macs(nested, (2, 1, 28, 28)) == 4 * 26 * 26 * 9 + 4 * 26 * 26 * 10  # per image
    assert sum(r["macs"] for r in layer_table(nested, (1, 1, 28, 28))) < count_macs(nested, (1, 1, 28, 28))


def test_course_code_used_finds_a_builder_under_any_name():
    from torch import nn

    from course_tools.exercises import course_code_used
    from course_tools.models import lenet as base

    def own():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def direct():
        return models.lenet()

    def renamed():
        return base()

    def through_a_helper():
        return renamed()

    assert course_code_used(own) == []
    assert course_code_used(direct) == ["models"]
    assert course_code_used(renamed) == ["base"]
    assert course_code_used(through_a_helper) == ["base"]


def test_dead_relus_counts_units_that_never_fire():
    import torch
    from torch import nn

    from course_tools.exercises import dead_relus

    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([-1.0, 1.0, -2.0]))  # two units below 0 for every input
    assert dead_relus(net, torch.rand(5, 1, 2, 2)) == {"relu@2": pytest.approx(2 / 3)}
    assert net.training  # the mode is restored


def test_short_run_accuracy_learns_and_restores_the_threads():
    import torch
    from torch import nn

    from course_tools.exercises import short_run_accuracy

    threads = torch.get_num_threads()
    r = short_run_accuracy(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), train_images=2000,
                           test_images=500)
    assert r["test_acc"] > 0.6 and r["seconds"] > 0  # a linear model learns something in one pass
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="do not fit"):
        short_run_accuracy(lambda: nn.Linear(784, 10), train_start=59000, train_images=6000)
