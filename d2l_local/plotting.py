"""Showing: `Animator`, `show_images`, `set_axes` (book names), without global state.

The book's `Animator` draws on pyplot's global figure, calls `display` then
`clear_output` on every point: a script prints `<Figure size ...>` lines and a
notebook executed headlessly keeps a pile of frames. This one draws on its own
`Figure` and updates a single display in place (IPython display ids), so:

- in JupyterLab the plot updates live;
- in a notebook executed by papermill/nbclient the saved notebook holds one
  output, the final figure;
- in a plain script nothing is displayed; `savefig` writes the figure.
"""

from __future__ import annotations

import contextlib
import io

from matplotlib.figure import Figure

_LABELS: dict = {}  # title and ylabel for the Animators made inside `plot_labels`


@contextlib.contextmanager
def plot_labels(*, title: str | None = None, ylabel: str | None = None,
                figsize: tuple | None = None):
    """Give the live plots made inside this block (e.g. by `train_ch6`) a title and a y label:

        with plot_labels(title="setting 'quick' on cpu, SGD lr 0.01, momentum 0.9"):
            history = train_ch6(...)

    The book's `train_ch6` draws its plot without either; this names the run on the figure.
    `figsize` (inches) replaces the book's small default (3.5 x 2.5).
    """
    old = dict(_LABELS)
    _LABELS.update({k: v for k, v in dict(title=title, ylabel=ylabel, figsize=figsize).items()
                    if v is not None})
    try:
        yield
    finally:
        _LABELS.clear()
        _LABELS.update(old)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval), False in a script or a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend) -> None:
    """Set the axes for matplotlib (`d2l.set_axes`)."""
    axes.set_xlabel(xlabel), axes.set_ylabel(ylabel)
    axes.set_xscale(xscale), axes.set_yscale(yscale)
    axes.set_xlim(xlim), axes.set_ylim(ylim)
    if legend:
        axes.legend(legend)
    axes.grid()


class Animator:
    """Plot data points as they arrive (`d2l.Animator`, same arguments).

    `display`: None (default) shows the plot only inside a notebook; False never does.
    """

    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None,
                 xscale="linear", yscale="linear", fmts=("-", "m--", "g-.", "r:"),
                 nrows=1, ncols=1, figsize=(3.5, 2.5), *, display: bool | None = None) -> None:
        legend = legend or []
        ylabel = ylabel or _LABELS.get("ylabel")
        self.fig = Figure(figsize=_LABELS.get("figsize", figsize))
        axes = self.fig.subplots(nrows, ncols)
        self.axes = [axes] if nrows * ncols == 1 else list(axes.flat)
        title = _LABELS.get("title")

        def config_axes():
            set_axes(self.axes[0], xlabel, ylabel, xlim, ylim, xscale, yscale, legend)
            if title:
                self.axes[0].set_title(title, fontsize=8)

        self.config_axes = config_axes
        self.X, self.Y, self.fmts = None, None, fmts
        self.display = in_notebook() if display is None else display
        self._handle = None

    def add(self, x, y) -> None:
        """Add one point per line (None skips a line) and redraw."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        self.axes[0].cla()
        for xs, ys, fmt in zip(self.X, self.Y, self.fmts):
            # a line of one point (a test accuracy after the first epoch) shows as a marker
            self.axes[0].plot(xs, ys, fmt, marker="o" if len(xs) == 1 else None)
        self.config_axes()
        if self.display:
            self._show()

    def _show(self) -> None:
        from IPython.display import SVG, display

        buf = io.StringIO()
        self.fig.savefig(buf, format="svg", bbox_inches="tight")
        image = SVG(buf.getvalue())
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def savefig(self, path, **kwargs) -> None:
        """Write the current figure to `path` (any format matplotlib knows)."""
        self.fig.savefig(path, bbox_inches="tight", **kwargs)


def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5, *, cmap=None):
    """Plot a grid of images (`d2l.show_images`); returns the axes."""
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(num_rows, num_cols, figsize=(num_cols * scale, num_rows * scale))
    axes = axes.flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        if hasattr(img, "detach"):
            img = img.detach().cpu().numpy()
        ax.imshow(img, cmap=cmap)
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    return axes


def show_filters(w, nrow: int, ax, title: str, *, colorbar: bool = True):
    """A grid of convolution filters (n, 1, k, k) on `ax`, each scaled to [-1, 1] on its own.

    A diverging colour map centred on zero (blue negative, white 0, red positive) and grey
    padding between the filters, so that a filter's zero is never confused with the border.
    Returns the image (for a colour bar of your own when `colorbar=False`).
    """
    import matplotlib
    import torch
    from torchvision.utils import make_grid

    w = torch.as_tensor(w).detach().float().cpu()
    if w.dim() != 4 or w.shape[1] != 1:
        raise ValueError(f"filters of shape {tuple(w.shape)}: expected (n, 1, k, k), one input channel")
    w = w / w.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)  # each filter in [-1, 1]
    grid = make_grid(w, nrow=nrow, padding=1, pad_value=float("nan"))[0].numpy()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.55")  # NaN padding: grey
    image = ax.imshow(grid, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8, label="weight / the filter's largest |weight|")
    return image
