"""Every option of our command lines explains itself, and each command's usage line names it as typed."""

from __future__ import annotations

import argparse
import sys

import pytest


def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
            continue
        yield path, action


def _parsers():
    from lisa_demo.cli import build_parser as demo_parser
    from lisa_plugin.tools.cli import build_parser as plugin_parser
    from lisa_plugin.tools.memory import build_parser as memory_parser

    return [("lisa-plugin", plugin_parser()), ("lisa-memory", memory_parser()), ("lisa-demo", demo_parser())]


def test_every_option_has_a_help_text_and_valued_ones_their_default():
    missing, no_default = [], []
    for name, parser in _parsers():
        for path, action in _actions(parser, name):
            label = f"{path} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
                missing.append(label)
            elif (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                  and "%(default)s" not in action.help and "default" not in action.help):
                no_default.append(label)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not show the default: {no_default}"


@pytest.mark.parametrize("argv0, entry, usage", [
    ("/venv/bin/lisa-demo", "compare_main", "usage: lisa-demo [-h] [--model {smollm2,tiny}]"),
    ("/venv/bin/lisa-demo-compare", "compare_main", "usage: lisa-demo-compare [-h]"),
    ("/venv/bin/lisa-demo-train", "train_main", "usage: lisa-demo-train [-h] [out]"),
])
def test_demo_scripts_show_their_own_name(monkeypatch, capsys, argv0, entry, usage):
    import lisa_demo.cli

    monkeypatch.setattr(sys, "argv", [argv0, "--help"])
    with pytest.raises(SystemExit) as done:
        getattr(lisa_demo.cli, entry)()
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


@pytest.mark.parametrize("forwarder, argv", [
    ("eval_harness", ["demo", "--help"]),
    ("lisa_plugin", ["demo", "--help"]),
])
def test_forwarded_demo_help_names_the_forwarding_command(monkeypatch, capsys, forwarder, argv):
    if forwarder == "eval_harness":
        from eval_harness.cli import main
        expected = "usage: python -m eval_harness demo [-h] [--model {smollm2,tiny}]"
    else:  # `lisa-plugin demo --help` is lisa-plugin's own parser; the forwarded run shows the same name
        from lisa_demo.cli import main
        monkeypatch.setattr(sys, "argv", ["lisa-plugin demo", "train", "--help"])
        argv = None
        expected = "usage: lisa-plugin demo [-h] [out]"
    try:
        assert main(argv) == 0  # eval_harness hands the demo's exit status back
    except SystemExit as done:
        assert done.code == 0
    assert capsys.readouterr().out.startswith(expected)


@pytest.mark.parametrize("family", ["tiny", "smollm2"])
def test_demo_templates_say_what_they_are(family):
    from lisa_plugin.tools.axolotl_runner import example_config

    for method in ("lisa", "lora", "full"):
        header = [line for line in example_config(f"{family}-{method}.yml").read_text().splitlines() if line.startswith("#")]
        text = " ".join(header[:6])
        assert "this file" not in text and "template" in text and "write_config" in text, method
        others = {"lisa", "lora", "full"} - {method}
        assert all(f"{family}-{o}.yml" in text for o in others) and f"{family}-{method}.yml" not in text, method
