"""Errors a user can act on.  Kept free of heavy imports so that every package can raise them.

`NeurflowInputError` is bad input (the command line prints one `error:` line and exits 2),
`NeurflowRuntimeError` a failure at run time whose message says what to do (one line, exit 1);
the command line's whole error contract is `cli.contract`.
"""

from __future__ import annotations


class NeurflowInputError(ValueError):
    """Bad input from a user: the CLI prints its message as one `error:` line and exits 2."""


class NeurflowRuntimeError(RuntimeError):
    """A failure at run time that the user can act on (the message names how): one line, exit 1."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())
