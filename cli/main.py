"""The `neurflow` command line: the one place that wires the method, the store and the app together.

Dependencies point one way: `cli` -> `app` / `ingest` -> `neurflow`.  Every command runs under
one error contract (`cli.contract`): bad input is one `error: ...` line on stderr and exit
status 2, a runtime failure one line and status 1, Ctrl-C status 130.
"""

from __future__ import annotations

import argparse
import sys

from cli.contract import EXIT_BAD_INPUT, classify


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's default in `--help` is the value the parser holds (`%(default)s`), never
    text typed beside it: an option whose help does not place its default gets `(default X)`
    appended.  Options without a value default (None, flags, empty lists) are left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is None or isinstance(default, bool)
                or default == [] or default is argparse.SUPPRESS or text is argparse.SUPPRESS):
            return text
        return f"{text} (default %(default)s)" if text else "default %(default)s"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one `error:` line (naming the command and where its help
    is) and exit status 2, not the usage text, and `--help` shows the defaults the code uses
    (`DefaultsHelpFormatter`).  Subcommand parsers inherit the class."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        message = " ".join(message.split())
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from cli.app_commands import add_app_commands
    from cli.debug_commands import add_debug_commands
    from cli.evaluate_commands import add_evaluate_commands
    from cli.ingest_commands import add_ingest_commands
    from cli.label_commands import add_label_commands
    from cli.method_commands import add_method_commands
    from cli.store_commands import add_store_commands

    parser = ArgumentParser(prog="neurflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (add_method_commands, add_ingest_commands, add_store_commands, add_evaluate_commands,
                     add_debug_commands, add_label_commands, add_app_commands):
        register(sub)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command under the error contract of cli/contract.py."""
    from neurflow.errors import cli_spelling

    try:
        with cli_spelling():  # hints name the command's flags (--tau 64), not the library's arguments
            return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - classified; anything unknown is re-raised
        outcome = classify(exc)
        if outcome is None:  # a bug: keep the traceback
            raise
        code, line = outcome
        print(line, file=sys.stderr, flush=True)
        return code


def main(argv: list[str] | None = None) -> int:
    from ingest.store.logs import route_driver_logs

    route_driver_logs()  # the store driver's retry warnings go to the log file, not the terminal
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, one line printed): a status, for main(argv) callers
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_BAD_INPUT)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
