"""The command line's error contract, defined once and applied by `cli.main` to every command:

==================  ==================================================================  ======
what                raised as                                                           status
==================  ==================================================================  ======
bad input           `NeurflowInputError`, a bad option (argparse), a query the          2
                    read-only console refuses (`ingest.store.errors.ReadOnlyViolation`)
runtime failure     `NeurflowRuntimeError`, any other `ingest.store.errors.StoreError` (store  1
                    down, wrong password, query failed, start failed), `OSError`
                    (a folder that cannot be written, a full disk)
interrupted         `KeyboardInterrupt` (Ctrl-C)                                        130
==================  ==================================================================  ======

Each is one line on stderr (``error: ...``; ``interrupted``).  Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

from ingest.store.errors import ReadOnlyViolation, StoreError
from neurflow.errors import NeurflowInputError, NeurflowRuntimeError, one_line

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


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
    if isinstance(exc, (NeurflowInputError, ReadOnlyViolation)):
        return EXIT_BAD_INPUT, "error: " + one_line(exc)
    if isinstance(exc, (NeurflowRuntimeError, StoreError)):
        return EXIT_FAILURE, "error: " + one_line(exc)
    if isinstance(exc, OSError):
        return EXIT_FAILURE, "error: " + _os_error_line(exc)
    return None
