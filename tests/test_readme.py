"""The README is tested against the code, so the docs cannot drift from the defaults and hooks."""

import inspect
import re
import types
from pathlib import Path

import pytest
import yaml

from lisa_plugin import LisaConfig, hookspecs

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_first_lines_are_the_two_setup_commands():
    first = blocks("bash")[0].strip().splitlines()
    assert len(first) == 2
    assert first[0].startswith("python3 -m venv .venv") and "pip install" in first[0]
    assert first[1].endswith("pytest -q")
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert first[0] in ci and first[1] in ci  # CI runs exactly what a newcomer runs


def test_yaml_block_shows_the_defaults():
    lisa_yaml = next(b for b in blocks("yaml") if "lisa:" in b)
    cfg = yaml.safe_load(lisa_yaml)
    assert cfg["plugins"] == ["lisa_plugin.LISAPlugin"]
    assert cfg["lisa"] == LisaConfig().model_dump()


def test_key_table_matches_the_config_model():
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", README, flags=re.M)
    table = {key: yaml.safe_load(default) for key, default in rows if key in LisaConfig.model_fields}
    assert table == LisaConfig().model_dump()


def test_strategy_option_table_matches_the_options_models():
    from lisa_plugin.manager import get_plugin_manager
    from lisa_plugin.strategies.options import options_model

    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (required|`[^`]*`) \|", README, flags=re.M)
    pm = get_plugin_manager()
    documented = {(strategy, key): default for key, strategy, default in rows}
    declared = {
        (name, key): "required" if field.is_required() else f"`{yaml.safe_dump(field.default).splitlines()[0]}`"
        for name in ("uniform", "weighted", "profile", "cyclic", "adaptive")
        for key, field in options_model(name, pm).model_fields.items()
    }
    assert documented == declared


def test_every_hook_is_documented_with_its_arguments():
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        if not name.startswith("lisa_"):
            continue
        args = ", ".join(inspect.signature(spec).parameters)
        assert f"`{name}({args})" in README, f"README does not document {name}({args})"


def test_example_strategy_runs_and_validates_its_option():
    from lisa_plugin.manager import get_plugin_manager, strategy_names
    from lisa_plugin.strategies import select_active_layers

    source = next(b for b in blocks("python") if "top_heavy" in b)
    module = types.ModuleType("my_lisa_ext")
    exec(compile(source, "README-example", "exec"), module.__dict__)
    pm = get_plugin_manager()  # the one config validation uses, as LISA_PLUGINS would fill it
    pm.register(module)
    try:
        assert "top_heavy" in strategy_names(pm)
        options = LisaConfig(strategy="top_heavy", top_heavy_power=3).model_dump()
        counts = [0] * 8
        for i in range(200):
            for layer in select_active_layers(strategy="top_heavy", num_layers=8, n_layers=2, seed=1,
                                              switch_index=i, options=options, resolved={}):
                counts[layer] += 1
        assert sum(counts[4:]) > 3 * sum(counts[:4])  # later layers more often, as its comment says
        message = "lisa.top_heavy_power: 0 for strategy 'top_heavy': Input should be greater than 0"
        assert message in README
        with pytest.raises(ValueError, match=re.escape(message)):
            LisaConfig(strategy="top_heavy", top_heavy_power=0)
    finally:
        pm.unregister(module)


def test_first_command_runs_the_full_demo():
    first = blocks("bash")[0].strip().splitlines()[0]
    assert first.endswith("lisa-demo-compare runs/demo")


def test_demo_options_in_the_readme_exist():
    import argparse

    from lisa_demo.cli import _add_compare_parser

    sub = argparse.ArgumentParser().add_subparsers()
    _add_compare_parser(sub)
    demo = sub.choices["compare"]
    known = {opt for action in demo._actions for opt in action.option_strings}
    intro = README.split("## Use LISA in your Axolotl config")[0]
    mentioned = set(re.findall(r"`(--[a-z-]+)", intro))
    assert mentioned and mentioned <= known, mentioned - known


def test_newcomer_sections_are_there():
    titles = re.findall(r"^## (.+)$", README, flags=re.M)
    for title in ("Use LISA in your Axolotl config", "Compare runs", "Scaling out", "Benchmarks",
                  "How LISA works", "Extending"):
        assert title in titles, title
    assert "arXiv:2403.17919" in README and "(docs/benchmarks.md)" in README
    assert (Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md").is_file()
    assert "[project.entry-points.lisa_plugin]" in README  # the example plugin is packaged


def test_demo_defaults_in_the_readme_are_the_code_defaults():
    from eval_harness.benchmarks.mt_bench import MT_BENCH_QUESTIONS
    from lisa_demo.end_to_end import DemoSettings
    from lisa_demo.models import DEFAULT_DEMO_MODEL

    d = DemoSettings(out=Path(".")).resolved()
    assert d.model == DEFAULT_DEMO_MODEL == "smollm2"
    intro = " ".join(README.split("## Use LISA in your Axolotl config")[0].split())
    assert f"writes {d.train_examples} arithmetic word problems as chat conversations" in intro
    import yaml

    from lisa_plugin.tools.axolotl_runner import example_config

    batch = yaml.safe_load(example_config("smollm2-lisa.yml").read_text())["micro_batch_size"]
    assert f"({d.train_steps} steps of {batch} conversations)" in intro
    assert f"{d.limit} held-out problems" in intro
    assert f"{len(MT_BENCH_QUESTIONS)} two-turn questions" in intro
    assert f"pre-trained here for {DemoSettings(out=Path('.')).pretrain_steps} steps" in intro
