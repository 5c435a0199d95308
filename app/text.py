"""What the app shows of data: always as text, never as markup, and never a server path.

Class, model, layer, folder and file names, parameter-set descriptions, labels, store errors and
the values of a link come from model files, image folders, whoever wrote the store or whoever
wrote the link.  Streamlit renders Markdown (with HTML, LaTeX, colour directives, emoji and
Material-icon shortcodes and bare-URL links) in almost every text it draws: `st.markdown`,
captions, alerts, headers, widget labels and their help, radio options, metric values, image
captions and `st.table` cells (`st.text`, `st.dataframe` cells and select-box options are plain).
A name such as ``![t](http://host/track.png)`` shown as Markdown makes every visitor's browser
fetch that URL.  So every piece of data that reaches one of those goes through `md_text` (and
data drawn by plotly through `plot_text`, data in a CSV download through `csv_cell`); the page's
own wording around it stays Markdown.

`md_text` backslash-escapes every ASCII punctuation character (CommonMark lets any of them be
escaped, so the text reads the same) and breaks what the renderer matches in text after
parsing: GFM's bare-URL and e-mail links (``http://``, ``www.``, ``a@b.co``), emoji shortcodes,
``:material_x:`` icons and ``:streamlit:``.  Those work on the parsed text, where a backslash
escape has already gone, so an empty ``:small[]`` directive (Streamlit draws an empty span,
invisible, not in the page's text) splits them after each ``:``, before each ``@`` and inside
``www.``.  tests/test_app_hostile_names.py checks the result in a real browser.

`shown_path` and `no_server_paths` keep server folders out of what visitors see: a path is shown
relative to the store's, the artifact or the model folder it lies in, anything else by its name.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

from ingest.store.config import artifact_dir, store_dir, uses_embedded

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
_SPLIT = ":small[]"  # an empty Streamlit directive: renders nothing, ends the text node
_WWW = re.compile(r"(www)(\\\.)", re.IGNORECASE)


def md_text(value: Any) -> str:
    """`value` as Markdown that renders as exactly its text (control characters as spaces)."""
    s = _PUNCT.sub(r"\\\1", _CONTROL.sub(" ", str(value)))
    s = s.replace("\\:", "\\:" + _SPLIT).replace("\\@", _SPLIT + "\\@")
    return _WWW.sub(r"\1" + _SPLIT + r"\2", s)


def plot_text(value: Any) -> str:
    """`value` for a plotly label, hover text or category: plotly draws a subset of HTML (links,
    styles) and, with MathJax, ``$...$`` as LaTeX; escaped, it shows the text."""
    return html.escape(_CONTROL.sub(" ", str(value)), quote=False).replace("$", "&#36;")


def csv_cell(value: Any) -> Any:
    """A cell of a CSV download: text that a spreadsheet would read as a formula (``=``, ``+``,
    ``-``, ``@``, tab, carriage return first, e.g. ``=IMAGE("http://...")``) starts with ``'``."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# --------------------------------------------------------------------------- server paths
def server_roots() -> list[tuple[Path, str]]:
    """The folders paths are shown relative to: (folder, how it is named), deepest first."""
    # from the environment alone (what `app.data.config` reads too): no store is started for a message
    store = store_dir() if uses_embedded() else None
    artifacts = Path(os.environ["NEURFLOW_ARTIFACT_DIR"]) if os.environ.get("NEURFLOW_ARTIFACT_DIR") else (
        store / "artifacts" if store is not None else artifact_dir(None))
    roots: list[tuple[Path, str]] = [(artifacts, "artifact folder")] + ([(store, "store folder")] if store else [])
    cache = os.environ.get("NEURFLOW_CACHE")
    roots.append((Path(cache) if cache else Path.home() / ".cache" / "neurflow", "model folder"))
    out = []
    for path, name in roots:
        try:
            out.append((path.expanduser().resolve(), name))
        except (OSError, RuntimeError):
            continue
    return sorted(out, key=lambda r: -len(r[0].parts))


def shown_path(path: str | Path, roots: list[tuple[Path, str]] | None = None) -> str:
    """How a visitor sees `path`: relative to the store's, the artifact or the model folder it
    lies in (``thumbs/a.png``; the folder itself by what it is), else only its name."""
    p = Path(str(path)).expanduser()
    try:
        resolved = p.resolve()
    except (OSError, RuntimeError):
        resolved = p
    for root, name in server_roots() if roots is None else roots:
        for candidate in (resolved, p):
            if candidate == root:
                return f"the {name}"
            if candidate.is_relative_to(root):
                return str(candidate.relative_to(root))
    return p.name or str(p)


_ABS_PATH = re.compile(r"(?<![\w/.~-])(?!//)(~?/[^\s'\"`,;()\[\]<>|]*)")  # not a URL's //host/path


def no_server_paths(text: Any, roots: list[tuple[Path, str]] | None = None) -> str:
    """`text` (an error message, say) with every absolute path in it replaced by `shown_path`'s
    form; URLs (``bolt://host/db``) are left as they are."""
    roots = server_roots() if roots is None else roots

    def short(m: re.Match) -> str:
        raw = m.group(1)
        if raw in ("/", "~", "~/"):
            return raw  # "a / b" is text
        tail = ""
        while raw and raw[-1] in ".:!?":  # the sentence's punctuation, not the path's
            tail, raw = raw[-1] + tail, raw[:-1]
        return shown_path(raw, roots) + tail

    return _ABS_PATH.sub(short, str(text))


def data_source(source: Any) -> str:
    """A circuit's data source as a visitor sees it: ``folder:/abs/path`` as the folder's name."""
    s = str(source)
    if s.startswith("folder:"):
        return "folder " + (Path(s[len("folder:"):]).name or s[len("folder:"):])
    return no_server_paths(s)
