"""Third-party plugins through the `lisa_plugin` entry point group and LISA_PLUGINS."""

import sys
from pathlib import Path

import pytest

from lisa_plugin.manager import new_plugin_manager, strategy_names

BUILTIN_STRATEGIES = ["adaptive", "cyclic", "profile", "uniform", "weighted"]
from lisa_plugin.strategies import select_active_layers

HERE = Path(__file__).parent


@pytest.fixture
def installed_strategy_package(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry point names the test strategy module."""
    dist = tmp_path / "lisa_countdown-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lisa-countdown\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lisa_plugin]\ncountdown = third_party_strategy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(HERE))
    yield
    sys.modules.pop("third_party_strategy", None)


def test_entry_point_strategy_is_loaded_and_selectable(installed_strategy_package):
    pm = new_plugin_manager()
    assert strategy_names(pm) == sorted(["countdown", *BUILTIN_STRATEGIES])
    picked = [
        select_active_layers(strategy="countdown", num_layers=4, n_layers=2, seed=0, switch_index=i, pm=pm)
        for i in range(3)
    ]
    assert picked == [[2, 3], [1, 2], [0, 1]]


def test_autoload_off_switch(installed_strategy_package, monkeypatch):
    monkeypatch.setenv("LISA_PLUGIN_DISABLE_AUTOLOAD", "1")
    assert strategy_names(new_plugin_manager()) == BUILTIN_STRATEGIES


def test_lisa_plugins_env_names_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("LISA_PLUGINS", "third_party_strategy")
    assert "countdown" in strategy_names(new_plugin_manager(autoload=False))
    monkeypatch.setenv("LISA_PLUGINS", "no_such_module_xyz")
    with pytest.raises(ImportError, match="LISA_PLUGINS names module 'no_such_module_xyz'"):
        new_plugin_manager(autoload=False)


def test_a_strategy_returning_garbage_is_caught():
    from lisa_plugin import hookimpl

    class Broken:
        @hookimpl
        def lisa_strategy_names(self):
            return ["broken"]

        @hookimpl
        def lisa_select_layers(self, strategy):
            return [0, 0] if strategy == "broken" else None

    pm = new_plugin_manager(autoload=False)
    pm.register(Broken())
    with pytest.raises(ValueError, match=r"lisa.strategy 'broken' returned \[0, 0\] at switch 0; expected 2 distinct"):
        select_active_layers(strategy="broken", num_layers=4, n_layers=2, seed=0, switch_index=0, pm=pm)
