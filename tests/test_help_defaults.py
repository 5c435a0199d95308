"""`--help` states the defaults the code uses: every option's shown default is the parser's own
(`cli.main.DefaultsHelpFormatter`, `%(default)s`), and those are the values the commands build
their parameters from (`neurflow.Params`, `DEMO_DEFAULTS`, `EvalSettings`).  `neurflow demo
--help` once called its 1,0.5 granularities "the paper's" and its 0.2 crop threshold "every
crop", and `neurflow ingest --help` said 5000 rows per write where the writer used 10000."""

from __future__ import annotations

import argparse
import re

import pytest

from cli.main import build_parser
from cli.options import DEFAULT_MODEL, params_from_args
from neurflow.circuit import Params


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _commands(sub, prefix + (name,))


COMMANDS = dict(_commands(build_parser()))


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help line of `action` as `--help` prints it, unwrapped."""
    return " ".join(parser._get_formatter()._expand_help(action).split()) if action.help else ""


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _claims(text: str) -> list[str]:
    """The values a help line says are the default (``default X``; ``default: words`` describes)."""
    return re.findall(r"\bdefault (\S+?)(?=[;:)]|,\s|,?$|\s)", text)


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_every_stated_default_is_the_parsers_default(command):
    parser = COMMANDS[command]
    for action in parser._actions:
        if not action.option_strings or action.help in (None, argparse.SUPPRESS) or action.dest == "help":
            continue
        text, default = _help(parser, action), action.default
        has_value = default is not None and not isinstance(default, bool) and default != []
        claims = [c for c in _claims(text) if not c.startswith("$")]  # `default $RAY_ADDRESS`: where it comes from
        if has_value:
            assert claims == [_shown(default)], (command, action.option_strings, text)
        else:
            assert claims == [], (command, action.option_strings, text)


@pytest.mark.parametrize("command, argv, expected", [
    ("circuit", ["--class", "0"], Params()),
    ("ingest", [], Params()),
    ("demo", [], None),  # DEMO_DEFAULTS over Params()
])
def test_the_method_defaults_shown_are_the_ones_the_command_builds(command, argv, expected):
    from cli.app_commands import DEMO_DEFAULTS

    params = params_from_args(build_parser().parse_args([command, *argv]))
    if expected is None:
        expected = Params(**{**{k: v for k, v in DEMO_DEFAULTS.items() if k != "granularities"},
                             "granularities": tuple(float(g) for g in DEMO_DEFAULTS["granularities"].split(","))})
    assert params == expected
    parser = COMMANDS[(command,)]
    helps = {a.dest: _help(parser, a) for a in parser._actions}
    for name in ("tau", "k", "ig_steps", "max_images", "granularities", "min_crop_std", "epsilon", "seed"):
        assert _claims(helps[name])[0] == _shown(getattr(params, name)), (command, name, helps[name])
    if command == "demo":  # the reported lines: no claim that belongs to the paper's values
        assert "the paper's: 1,0.5,0.25" in helps["granularities"] and "0 keeps every crop" in helps["min_crop_std"]


def test_evaluation_defaults_shown_are_the_settings_used():
    from cli.evaluate_commands import settings_from_args

    args = build_parser().parse_args(["evaluate"])
    settings = settings_from_args(args)
    parser = COMMANDS[("evaluate",)]
    helps = {a.dest: _help(parser, a) for a in parser._actions}
    for name in ("draws", "seed", "test_images", "crop_images", "opt_neurons", "opt_random", "edge_sizes", "edge_sets",
                 "batch_rows"):
        assert _claims(helps[name])[0] == _shown(getattr(settings, name)), (name, helps[name])


def test_every_command_defaults_to_the_shipped_model():
    """No command trains a model unasked: `fashion-cnn` trains on first use, `fashion-resnet` ships."""
    assert DEFAULT_MODEL == "fashion-resnet"
    for command in (("circuit",), ("ingest",), ("evaluate",), ("debug",), ("label",)):
        parser = COMMANDS[command]
        (model,) = [a for a in parser._actions if a.dest == "model"]
        assert model.default == DEFAULT_MODEL and f"default {DEFAULT_MODEL}" in _help(parser, model), command
