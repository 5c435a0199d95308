"""Errors a user can act on.  Kept free of heavy imports so that every package can raise them.

`NeurflowInputError` is bad input (the command line prints one `error:` line and exits 2),
`NeurflowRuntimeError` a failure at run time whose message says what to do (one line, exit 1);
the command line's whole error contract is `cli.contract`.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator


class NeurflowInputError(ValueError):
    """Bad input from a user: the CLI prints its message as one `error:` line and exits 2."""


class NeurflowRuntimeError(RuntimeError):
    """A failure at run time that the user can act on (the message names how): one line, exit 1."""


def one_line(text: object, limit: int | None = None) -> str:
    """`text` collapsed to one line (the project's one helper for it); cut to `limit` characters
    with "..." when given (a server's or an HTTP endpoint's message of unknown length)."""
    s = " ".join(str(text).split())
    return s if limit is None or len(s) <= limit else s[: limit - 3] + "..."


_CLI_SPELLING: contextvars.ContextVar[bool] = contextvars.ContextVar("neurflow_cli_spelling", default=False)

# Options whose command-line flag is not `--<name> VALUE`: (Python name, value) -> flag.
_FLAGS = {("predicted_only", False): "--all-images", ("random_init", True): "--random-init"}


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Within it, messages name options as command-line flags (`cli.main` runs every command in it)."""
    token = _CLI_SPELLING.set(True)
    try:
        yield
    finally:
        _CLI_SPELLING.reset(token)


def option(name: str, value: Any = None, *, placeholder: bool = False) -> str:
    """How a message names an option set to `value`: ``--tau 64`` / ``--all-images`` on the command
    line, ``tau=64`` / ``predicted_only=False`` from Python, so a hint names what the reader can
    type where they are.  `value` None gives the bare name (``--tau`` / ``tau``); a `placeholder`
    value (``FILE``) is written as it is, not as a Python literal."""
    if not _CLI_SPELLING.get():
        return name if value is None else f"{name}={value if placeholder else repr(value)}"
    flag = _FLAGS.get((name, value))
    if flag:
        return flag
    flag = "--" + name.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def class_label(index: int, name: str | None = None) -> str:
    """How a message names a class: ``1 (Trouser)`` when it has a name (the one the user gave or
    the model's), ``1`` when it has none (or its name is only its number)."""
    name = None if name is None else str(name)
    if not name or name == str(index) or name == f"class {index}":
        return str(index)
    return f"{index} ({name})"
