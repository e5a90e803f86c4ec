"""Config mistakes that used to pass silently or end a long traceback: a listed plugin without its
`lisa:` block, a typo inside it; under real `axolotl preprocess` and under `lisa-plugin check`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from lisa_plugin.tools.cli import main as lisa_plugin_main
from tests.conftest import axolotl_config


def _write(tmp_path, name, cfg) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _misspelled_block(tiny_root, tmp_path) -> dict:
    cfg = axolotl_config("lisa", tiny_root, tmp_path / "out")
    cfg["lsia"] = cfg.pop("lisa")
    return cfg


@pytest.mark.axolotl  # a real Axolotl command line: imports torch and Axolotl (~15 s a run)
@pytest.mark.parametrize("case, message", [
    ("lsia", r"config\.yml: `plugins:` lists lisa_plugin\.LISAPlugin but the config has no `lisa:` block, so "
             r"training would be a plain full fine-tune\. Did you mean 'lisa' \(found 'lsia'\)\?"),
    ("typo", r"config\.yml: lisa\.interval_step: unknown key\. Did you mean 'interval_steps'\?"),
])
def test_axolotl_preprocess_stops_with_one_short_message(tiny_root, tmp_path, case, message):
    from lisa_plugin.tools.axolotl_runner import axolotl_command, axolotl_env

    if case == "lsia":
        cfg = _misspelled_block(tiny_root, tmp_path)
    else:
        cfg = axolotl_config("lisa", tiny_root, tmp_path / "out", lisa={"interval_step": 5})
    config = _write(tmp_path, "config.yml", cfg)
    proc = subprocess.run([*axolotl_command(), "preprocess", config], env=axolotl_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Success" not in proc.stdout, proc.stderr[-3000:]
    import re

    assert re.search(message, proc.stderr), proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()  # stopped before anything was prepared or trained


def test_check_names_each_problem_and_passes_good_configs(tiny_root, tmp_path, capsys):
    good = _write(tmp_path, "good.yml", axolotl_config("lisa", tiny_root, tmp_path / "out"))
    lora = _write(tmp_path, "lora.yml", axolotl_config("lora", tiny_root, tmp_path / "out"))
    assert lisa_plugin_main(["check", good, lora]) == 0
    out = capsys.readouterr().out
    assert f"{good}: OK, lisa: n_layers=2, interval_steps=5, strategy=uniform" in out
    assert f"{lora}: OK, no LISA" in out

    no_plugin = axolotl_config("lisa", tiny_root, tmp_path / "out")
    no_plugin.pop("plugins")
    bad = {
        "lsia.yml": (_misspelled_block(tiny_root, tmp_path), r"Did you mean 'lisa' \(found 'lsia'\)\?"),
        "typo.yml": (axolotl_config("lisa", tiny_root, tmp_path / "out", lisa={"interval_step": 5}),
                     r"lisa\.interval_step: unknown key\. Did you mean 'interval_steps'\?"),
        "zero.yml": (axolotl_config("lisa", tiny_root, tmp_path / "out", lisa={"n_layers": 0}),
                     r"lisa\.n_layers: Input should be greater than or equal to 1 \(got 0\)"),
        "combo.yml": (axolotl_config("lisa", tiny_root, tmp_path / "out", adapter="lora", optimizer="adafactor"),
                      r"2 problems with the LISA settings:\n- `adapter: lora` cannot .*\n- `optimizer: adafactor` is not"),
        "noplugin.yml": (no_plugin, r"`lisa:` block but `plugins:` does not list lisa_plugin\.LISAPlugin"),
        "list.yml": ([1, 2], r"expected a mapping of Axolotl config keys, got list"),
    }
    import re

    for name, (cfg, message) in bad.items():
        path = _write(tmp_path, name, cfg)
        assert lisa_plugin_main(["check", good, path]) == 1, name
        err = capsys.readouterr().err
        assert re.search(f"{re.escape(path)}: .*{message}", err, re.S), err


def test_check_runs_without_axolotl_or_a_model(tiny_root, tmp_path):
    good = _write(tmp_path, "good.yml", axolotl_config("lisa", tiny_root, tmp_path / "out"))
    code = ("import sys; from lisa_plugin.tools.cli import main; code = main(['check', sys.argv[1]]); "
            "assert 'axolotl' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules); "
            "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, good], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
