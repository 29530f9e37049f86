"""Settings: the name's precedence, unknown names and misspelt parameters stop with an error."""

import pytest

from course_tools import settings

TABLE = {"full": dict(batch_size=128, num_epochs=10),
         "quick": dict(batch_size=128, num_epochs=2),
         "smoke": dict(batch_size=16, num_epochs=1)}


def test_precedence(monkeypatch):
    monkeypatch.delenv("D2L_SETTING", raising=False)
    assert settings.setting_name()[0] in ("full", "quick")
    monkeypatch.setenv("D2L_SETTING", "smoke")
    assert settings.setting_name() == ("smoke", "$D2L_SETTING")
    assert settings.setting_name("full")[0] == "full"


@pytest.fixture
def script(monkeypatch):
    """choose_setting as a script sees it: no IPython shell (another test in the same pytest worker
    may have left one, whose history would then decide which names count as parameters)."""
    monkeypatch.setattr(settings, "_parameter_cells", lambda: None)


def test_values_and_overrides(monkeypatch, script):
    monkeypatch.setenv("D2L_SETTING", "quick")
    cfg = settings.choose_setting(TABLE, {"setting": None, "batch_size": 64}, verbose=False)
    assert (cfg.name, cfg.batch_size, cfg.num_epochs) == ("quick", 64, 2)
    assert cfg.changed == {"batch_size": (128, 64), "num_epochs": (10, 2)}
    assert cfg.set_by_parameter == {"batch_size": 64}  # not num_epochs: quick's own value
    assert "num_epochs 10 -> 2" in cfg.describe()
    with pytest.raises(AttributeError):
        _ = cfg.learning_rate


def test_unknown_setting_is_an_error(script):
    with pytest.raises(ValueError, match="choose one of full, quick, smoke"):
        settings.choose_setting(TABLE, {"setting": "fast"}, verbose=False)


def test_misspelt_injected_parameter_is_an_error(monkeypatch):
    class Shell:
        user_ns = {"In": ["", "# Parameters\nsetting = \"smoke\"\nbach_size = 64\n"]}

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    with pytest.raises(NameError, match="bach_size"):
        settings.choose_setting(TABLE, {"setting": "smoke"}, verbose=False)


def test_only_parameters_cells_override(monkeypatch):
    class Shell:
        user_ns = {"In": ["", "# Parameters\nsetting = None\nbatch_size = None\n", "x = 1"]}

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    # num_epochs is a key of the table but not a parameter here: a later variable, not an override
    cfg = settings.choose_setting(TABLE, {"setting": "smoke", "batch_size": 8, "num_epochs": 99},
                                  verbose=False)
    assert (cfg.batch_size, cfg.num_epochs) == (8, 1)


def test_no_parameters_cell_in_history_takes_no_overrides(monkeypatch):
    """nbval runs cells without storing them in `In`: a later variable of a table's name (here a
    module, as `from d2l_local import ddp` in notebook 11) must not become the setting's value."""
    import json

    from course_tools import settings

    monkeypatch.setattr(settings, "_parameter_cells", lambda: [])
    monkeypatch.setenv(settings.SETTING_ENV, "smoke")  # how nbval's kernels get their setting
    table = {name: dict(json=1, batch_size=8) for name in settings.NAMES}
    cfg = settings.choose_setting(table, {"json": json}, verbose=False)
    assert cfg.json == 1 and cfg.name == "smoke"
