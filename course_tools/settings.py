"""Run settings for the notebooks: `full` (the book's), `quick` (a CPU in minutes), `smoke` (tests).

Each notebook keeps its own table of values per setting in one visible cell
and calls `choose_setting(SETTINGS, globals())`. The setting's name comes from,
in order: the notebook's `setting` parameter (papermill), `$D2L_SETTING`, else
`full` on a CUDA GPU and `quick` on a CPU or Apple's GPU (mps). An unknown setting, or a parameter that
the notebook does not take (a typo in papermill's `-p`), stops with an error
instead of silently running something else.

Precision follows the hardware: a table's `precision` value (default "auto")
becomes "bf16" (autocast, channels_last) where the device computes bf16
natively (Intel AMX or AVX-512 BF16; CUDA GPUs with bf16) and "fp32"
elsewhere; "fp32" gives the book's numerics anywhere. `train_ch6` uses the
chosen setting's precision unless told otherwise. A setting may also carry
`on_native_bf16=dict(...)`: values that replace its own where the CPU computes
bf16 natively (a bf16 CPU trains several times faster, so `quick` can show
more in the same minutes); `describe()` says what this machine gets.
"""

from __future__ import annotations

import ast
import os

from d2l_local import training
from d2l_local.device import native_bf16, precision_text, resolve_precision, try_gpu

SETTING_ENV = "D2L_SETTING"
NAMES = ("full", "quick", "smoke")


class Setting(dict):
    """The chosen values, readable as `cfg.batch_size` or `cfg["batch_size"]`."""

    def __init__(self, name: str, source: str, device, values: dict, changed: dict,
                 set_by_parameter: dict | None = None, hardware: dict | None = None) -> None:
        super().__init__(values)
        self.name, self.source, self.device, self.changed = name, source, device, changed
        self.set_by_parameter = dict(set_by_parameter or {})  # values that differ from the table
        self.hardware = dict(hardware or {})  # values this machine's native bf16 replaced
        requested = values.get("precision", "auto")
        #: "fp32" or "bf16": what training uses here ("auto" resolved for this device)
        self.precision = resolve_precision(requested, device)
        self.channels_last = self.precision == "bf16"

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"setting {self.name!r} has no value {key!r}") from None

    def describe(self) -> str:
        lines = [f"setting {self.name!r} ({self.source}) on {self.device}, "
                 f"precision {precision_text(self.precision, self.channels_last)}"
                 + (" (native bf16 here)" if native_bf16(self.device) else "")]
        if self.hardware:
            lines.append("this machine computes bf16 natively, so: " + ", ".join(
                f"{k} {old} -> {new}" for k, (old, new) in self.hardware.items()))
        if self.changed:
            lines.append("changed from 'full' (the book's): " + ", ".join(
                f"{k} {old} -> {new}" for k, (old, new) in self.changed.items()))
        else:
            lines.append("the book's values: " + ", ".join(f"{k}={v}" for k, v in self.items()))
        return "\n".join(lines)


def last_chosen() -> Setting | None:
    """The setting chosen last in this process (a notebook's kernel), or None."""
    return training.current_setting


def setting_name(parameter: str | None = None) -> tuple[str, str]:
    """(name, where it came from): the parameter, else $D2L_SETTING, else the hardware's default."""
    if parameter is not None:
        name, source = parameter, "notebook parameter"
    elif os.environ.get(SETTING_ENV):
        name, source = os.environ[SETTING_ENV], f"${SETTING_ENV}"
    elif try_gpu().type == "cuda":
        name, source = "full", "default on a CUDA GPU"
    else:  # a CPU, or Apple's GPU (mps): the book's run would take hours
        name, source = "quick", f"default on {try_gpu().type}"
    if name not in NAMES:
        raise ValueError(f"unknown setting {name!r} ({source}); choose one of {', '.join(NAMES)}")
    return name, source


def _assigned(source: str) -> set[str]:
    return {t.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def _parameter_cells() -> list[set[str]] | None:
    """Names assigned by each executed parameters cell, oldest first (the notebook's own and
    papermill's injected one both start with '# Parameters'); None outside a notebook."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or "In" not in shell.user_ns:
        return None
    return [_assigned(src) for src in shell.user_ns["In"] if src.lstrip().startswith("# Parameters")]


def choose_setting(table: dict[str, dict], namespace: dict | None = None, *,
                   verbose: bool = True) -> Setting:
    """Pick this run's values from `table` (setting name -> values).

    `namespace` (the notebook's `globals()`) supplies `setting` and may
    override single values: a name of the table set to anything but None.
    """
    namespace = namespace or {}
    missing = [n for n in NAMES if n not in table]
    if missing:
        raise ValueError(f"the settings table lacks {missing}")
    keys = set(table["full"]) - {"on_native_bf16"}
    allowed = keys | {"setting"}
    cells = _parameter_cells()
    unknown = sorted(cells[-1] - allowed) if cells else []
    if unknown:
        raise NameError(f"unknown parameter(s) {unknown}: this notebook takes "
                        f"{sorted(allowed)}; check the spelling")
    # only names set in a parameters cell count, never a later variable of the same name
    # a kernel without a parameters cell in its history (nbval runs cells without storing them)
    # takes no overrides: a later variable of the same name (say, a module) is not a value
    declared = set().union(*cells) if cells is not None else allowed  # None: a script
    name, source = setting_name(namespace.get("setting") if "setting" in declared else None)
    values, set_by_parameter = dict(table[name]), {}
    device = try_gpu()
    faster = values.pop("on_native_bf16", None) or {}
    unknown = sorted(set(faster) - keys)
    if unknown:
        raise ValueError(f"on_native_bf16 of setting {name!r} names {unknown}, not values of the table")
    hardware = {}
    if faster and device.type == "cpu" and resolve_precision(values.get("precision", "auto"),
                                                              device) == "bf16":
        hardware = {k: (values[k], v) for k, v in faster.items() if values[k] != v}
        values.update(faster)
    for key in sorted(keys & declared):
        if namespace.get(key) is not None and namespace[key] != values[key]:
            values[key] = set_by_parameter[key] = namespace[key]
            source += f", {key} set by parameter"
    changed = {k: (table["full"][k], v) for k, v in values.items() if v != table["full"][k]}
    cfg = Setting(name, source, device, values, changed, set_by_parameter, hardware)
    training.current_setting = cfg  # train_ch6's precision and its check of a long `full` run
    if verbose:
        print(cfg.describe())
    return cfg
