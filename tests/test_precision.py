"""Precision follows the hardware: bf16 autocast + channels_last where the processor computes bf16
natively (faked here both ways), fp32 elsewhere, and fp32 (the book's numerics) whenever asked."""

import math

import pytest
import torch
from torch import nn

import d2l_local
from course_tools import settings
from d2l_local import device as dev


def fake_cpu(monkeypatch, *, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, True, "bf16"),     # a Xeon with AMX (Sapphire Rapids and newer)
    (False, True, "bf16"),    # AVX-512 BF16 only (Cooper Lake, AMD Zen 4)
    (False, False, "fp32"),   # AVX2 only: bf16 would be emulated, slower than fp32
])
def test_auto_follows_what_pytorch_reports(monkeypatch, amx, avx512_bf16, expected):
    fake_cpu(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    assert dev.native_bf16("cpu") == (expected == "bf16")
    assert dev.resolve_precision("auto", "cpu") == expected
    assert dev.resolve_precision("fp32", "cpu") == "fp32"  # the book's numerics anywhere
    assert dev.resolve_precision("bf16", "cpu") == "bf16"  # asked for: given, even if emulated
    with pytest.raises(ValueError, match="choose one of"):
        dev.resolve_precision("float16", "cpu")


TABLE = {"full": dict(batch_size=128, num_epochs=10, train_subset=None, precision="auto"),
         "quick": dict(batch_size=128, num_epochs=2, train_subset=3840, precision="auto",
                       on_native_bf16=dict(num_epochs=1, train_subset=None)),
         "smoke": dict(batch_size=16, num_epochs=1, train_subset=64, precision="auto")}


@pytest.fixture
def script(monkeypatch):
    monkeypatch.setattr(settings, "_parameter_cells", lambda: None)
    monkeypatch.setattr(settings, "try_gpu", lambda: torch.device("cpu"))


def test_quick_gets_more_on_a_native_bf16_cpu(monkeypatch, script):
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    cfg = settings.choose_setting(TABLE, {"setting": "quick"}, verbose=False)
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    assert (cfg.num_epochs, cfg.train_subset) == (1, None)
    assert cfg.hardware == {"num_epochs": (2, 1), "train_subset": (3840, None)}
    text = cfg.describe()
    assert "bf16 autocast, channels_last" in text and "num_epochs 2 -> 1" in text

    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    cfg = settings.choose_setting(TABLE, {"setting": "quick"}, verbose=False)
    assert (cfg.precision, cfg.channels_last) == ("fp32", False)
    assert (cfg.num_epochs, cfg.train_subset, cfg.hardware) == (2, 3840, {})
    assert "fp32, NCHW" in cfg.describe()


def test_fp32_asked_for_keeps_quick_as_the_table_says(monkeypatch, script):
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    table = {k: dict(v, precision="fp32") for k, v in TABLE.items()}
    cfg = settings.choose_setting(table, {"setting": "quick"}, verbose=False)
    assert (cfg.precision, cfg.num_epochs, cfg.train_subset) == ("fp32", 2, 3840)


def test_a_misspelt_hardware_value_is_an_error(script):
    table = dict(TABLE, quick=dict(TABLE["quick"], on_native_bf16=dict(num_epoch=1)))
    with pytest.raises(ValueError, match="num_epoch"):
        settings.choose_setting(table, {"setting": "quick"}, verbose=False)


def _data(n=256):
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(X, y)
    return (torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=g),
            torch.utils.data.DataLoader(ds, batch_size=64))


def _net():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 14 * 14, 10))


def test_train_ch6_uses_the_chosen_settings_precision_and_records_it(monkeypatch, script, capsys):
    fake_cpu(monkeypatch, amx=False, avx512_bf16=True)
    settings.choose_setting(TABLE, {"setting": "smoke"}, verbose=False)
    torch.manual_seed(0)
    h = d2l_local.train_ch6(_net(), *_data(), 1, 0.1, "cpu", animate=False)
    assert (h.precision, h.memory_format) == ("bf16", "channels_last")
    assert "precision: bf16 autocast, channels_last" in capsys.readouterr().out
    assert math.isfinite(h.train_loss) and h.to_dict()["precision"] == "bf16"
    torch.manual_seed(0)  # fp32 asked for: the book's numerics, whatever the setting says
    h32 = d2l_local.train_ch6(_net(), *_data(), 1, 0.1, "cpu", animate=False, precision="fp32")
    assert (h32.precision, h32.memory_format) == ("fp32", "NCHW")
    # bf16 rounds the activations: close to fp32's loss, not equal to it
    assert h.train_loss != h32.train_loss and abs(h.train_loss - h32.train_loss) < 0.05


def test_a_checkpoint_is_not_resumed_in_another_precision(tmp_path):
    path = tmp_path / "run.pt"
    d2l_local.train_ch6(_net(), *_data(), 1, 0.1, "cpu", animate=False, verbose=False,
                        precision="fp32", checkpoint=path)
    with pytest.raises(RuntimeError, match="precision fp32 there, bf16 now"):
        d2l_local.train_ch6(_net(), *_data(), 2, 0.1, "cpu", animate=False, verbose=False,
                            precision="bf16", checkpoint=path)
