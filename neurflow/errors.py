"""Errors a user can act on, and the command line's error contract, defined once here.

Kept free of heavy imports so that every package can raise them.  `neurflow.cli.main` applies
`classify` to whatever a command raises, for every command:

==================  ==================================================================  ======
what                raised as                                                           status
==================  ==================================================================  ======
bad input           `NeurflowInputError`, a bad option (argparse), a query the          2
                    read-only console refuses (`ingest.errors.ReadOnlyViolation`)
runtime failure     `NeurflowRuntimeError`, any other `ingest.errors.StoreError` (store  1
                    down, wrong password, query failed, start failed), `OSError`
                    (a folder that cannot be written, a full disk)
interrupted         `KeyboardInterrupt` (Ctrl-C)                                        130
==================  ==================================================================  ======

Each is one line on stderr (``error: ...``; ``interrupted``).  Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class NeurflowInputError(ValueError):
    """Bad input from a user: the CLI prints its message as one `error:` line and exits 2."""


class NeurflowRuntimeError(RuntimeError):
    """A failure at run time that the user can act on (the message names how): one line, exit 1."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or one_line(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    if where is None:
        return one_line(exc) or what
    return f"{what}: {where}" + (f" -> {exc.filename2}" if exc.filename2 else "")


def classify(exc: BaseException) -> tuple[int, str] | None:
    """`(exit status, one-line message)` of `exc` under the contract above; None for a bug."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, NeurflowInputError):
        return EXIT_BAD_INPUT, "error: " + one_line(exc)
    if isinstance(exc, NeurflowRuntimeError):
        return EXIT_FAILURE, "error: " + one_line(exc)
    try:  # the store package is optional (the method alone installs without it)
        from ingest.errors import ReadOnlyViolation, StoreError
    except ImportError:  # pragma: no cover
        ReadOnlyViolation = StoreError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, ReadOnlyViolation):
        return EXIT_BAD_INPUT, "error: " + one_line(exc)
    if isinstance(exc, StoreError):
        return EXIT_FAILURE, "error: " + one_line(exc)
    if isinstance(exc, OSError):
        return EXIT_FAILURE, "error: " + _os_error_line(exc)
    return None
