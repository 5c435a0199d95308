"""Progress bars: one place decides whether they are drawn.

Bars are drawn on a terminal (and in a notebook); a pipe, a log file or a captured stream gets
none, so logs hold no carriage returns or escape codes.  Every bar of the project is made with
`neurflow.progress.tqdm`, which takes `tqdm.auto.tqdm`'s arguments.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.autonotebook import tqdm as _chosen_tqdm  # the notebook class inside Jupyter, else tqdm.std's
from tqdm.std import tqdm as _std_tqdm


def bars_wanted(file: TextIO | None = None) -> bool:
    """True when a bar written to `file` (default stderr) is shown live: a terminal or a notebook."""
    if _chosen_tqdm is not _std_tqdm:  # tqdm.auto draws notebook widgets: no escape codes there
        return True
    stream = file if file is not None else sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def tqdm(*args: Any, disable: bool | None = False, file: TextIO | None = None, **kwargs: Any):
    """`tqdm.auto.tqdm`, disabled unless `bars_wanted(file)` (and unless the caller disables it)."""
    return _auto_tqdm(*args, disable=bool(disable) or not bars_wanted(file), file=file, **kwargs)
