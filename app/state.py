"""The view's state lives in the URL: every widget that shapes a view reads its start value from
``st.query_params`` and writes its value back, so a copied link reproduces the view.

    url = UrlState()                                   # once per run
    cls = url.selectbox("Class", [0, 1, 2], key="class", parse=int)
    ...
    url.commit()                                       # the URL now holds exactly this view's keys

Start value of a widget, first match wins: the URL (when the session starts or the URL was
edited), the value the widget had when this page was last shown in this session (widgets of
pages not shown are forgotten by Streamlit, so a shadow copy is kept), the default.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

import streamlit as st

from app.text import md_text

PAGES: dict[str, str] = {
    "overview": "Overview",
    "circuit": "Circuit of a class",
    "compare": "Compare classes",
    "console": "Cypher console",
}

_W = "w:"  # widget keys
_KEEP = "keep:"  # shadow copies that survive page switches


def parse_int(raw: str) -> int:
    return int(raw)


def parse_float(raw: str) -> float:
    return float(raw)


def parse_bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def parse_int_list(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def link(**params: Any) -> str:
    """A relative link (``?page=...&...``) to another view."""

    return "?" + urlencode({k: fmt_value(v) for k, v in params.items() if v is not None})


class UrlState:
    """Collects the URL keys of this run's view and writes them to the URL at the end."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        # the URL the run started with; keys read from it are consumed once per session per value
        self.incoming: dict[str, str] = {k: st.query_params.get(k) for k in st.query_params.keys()}
        seen = st.session_state.setdefault("_url_seen", {})
        self._fresh = {k: v for k, v in self.incoming.items() if seen.get(k) != v}
        st.session_state["_url_seen"] = dict(self.incoming)
        self.rejected: dict[str, str] = {}  # URL values this view could not use: reported, not silently replaced

    # ------------------------------------------------------------------ raw access
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.incoming.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if value is None or value == "" or value == []:
            self.values.pop(key, None)
        else:
            self.values[key] = fmt_value(value)

    def start_value(self, key: str, parse: Callable[[str], Any], default: Any, valid: Callable[[Any], bool]) -> Any:
        """The value a widget should show when it (re)appears."""
        wkey = _W + key
        candidates = []
        if key in self._fresh:  # the URL changed (new session, edited link): it wins
            try:
                fresh = parse(self._fresh[key])
            except (ValueError, TypeError):
                self.rejected[key] = self._fresh[key]
            else:
                if not valid(fresh):
                    self.rejected[key] = self._fresh[key]
                candidates.append(fresh)
        if wkey in st.session_state:
            candidates.append(st.session_state[wkey])
        if _KEEP + key in st.session_state:
            candidates.append(st.session_state[_KEEP + key])
        if key in self.incoming and key not in self._fresh:
            try:
                candidates.append(parse(self.incoming[key]))
            except (ValueError, TypeError):
                pass
        for value in candidates:
            if valid(value):
                return value
        return default

    def _prepare(self, key: str, parse, default, valid) -> str:
        wkey = _W + key
        value = self.start_value(key, parse, default, valid)
        if st.session_state.get(wkey, object()) != value:
            st.session_state[wkey] = value
        return wkey

    def _record(self, key: str, value: Any, default: Any = None, *, always: bool = True) -> Any:
        st.session_state[_KEEP + key] = value
        if always or value != default:
            self.set(key, value)
        return value

    # ------------------------------------------------------------------ widgets
    def selectbox(self, label: str, options: Sequence[Any], *, key: str, parse: Callable[[str], Any] = str,
                  default: Any = None, container: Any = st, **kw: Any) -> Any:
        options = list(options)
        if not options:
            return None
        default = default if default in options else options[0]
        wkey = self._prepare(key, parse, default, lambda v: v in options)
        value = container.selectbox(label, options, key=wkey, **kw)
        return self._record(key, value)

    def radio(self, label: str, options: Sequence[Any], *, key: str, parse: Callable[[str], Any] = str,
              default: Any = None, container: Any = st, **kw: Any) -> Any:
        options = list(options)
        default = default if default in options else options[0]
        wkey = self._prepare(key, parse, default, lambda v: v in options)
        value = container.radio(label, options, key=wkey, **kw)
        return self._record(key, value)

    def multiselect(self, label: str, options: Sequence[Any], *, key: str, parse: Callable[[str], Any] = parse_int_list,
                    default: Sequence[Any] = (), container: Any = st, **kw: Any) -> list[Any]:
        options = list(options)
        default = [d for d in default if d in options]
        wkey = self._prepare(key, parse, default, lambda v: isinstance(v, list) and all(x in options for x in v))
        value = container.multiselect(label, options, key=wkey, **kw)
        return self._record(key, list(value))

    def slider(self, label: str, *, key: str, min_value: float, max_value: float, default: float,
               parse: Callable[[str], Any] = parse_float, container: Any = st, **kw: Any) -> Any:
        kind = type(default)
        wkey = self._prepare(
            key, lambda s: kind(parse(s)), default,
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and min_value <= v <= max_value,
        )
        st.session_state[wkey] = kind(st.session_state[wkey])
        value = container.slider(label, min_value=kind(min_value), max_value=kind(max_value), key=wkey, **kw)
        return self._record(key, value)

    def number(self, label: str, *, key: str, min_value: int, max_value: int, default: int,
               container: Any = st, **kw: Any) -> int:
        wkey = self._prepare(key, parse_int, default, lambda v: isinstance(v, int) and min_value <= v <= max_value)
        value = container.number_input(label, min_value=min_value, max_value=max_value, step=1, key=wkey, **kw)
        return self._record(key, int(value))

    def toggle(self, label: str, *, key: str, default: bool = False, container: Any = st, **kw: Any) -> bool:
        wkey = self._prepare(key, parse_bool, default, lambda v: isinstance(v, bool))
        value = container.toggle(label, key=wkey, **kw)
        return self._record(key, bool(value), default, always=False)

    def text_area(self, label: str, *, key: str, default: str, container: Any = st, **kw: Any) -> str:
        wkey = self._prepare(key, str, default, lambda v: isinstance(v, str))
        value = container.text_area(label, key=wkey, **kw)
        return self._record(key, value, default, always=False)

    def text_input(self, label: str, *, key: str, default: str, container: Any = st, **kw: Any) -> str:
        wkey = self._prepare(key, str, default, lambda v: isinstance(v, str))
        value = container.text_input(label, key=wkey, **kw)
        return self._record(key, value, default, always=False)

    def report_rejected(self, container: Any = st) -> None:
        """One warning naming the link's values that this view could not use, and what it shows instead."""
        if not self.rejected:
            return

        parts = []
        for key, raw in self.rejected.items():  # a link's text: shown as text, never as Markdown
            now = self.values.get(key)
            parts.append(md_text(f"{key}={raw!r}" + (f" (showing {now!r} instead)" if now is not None else "")))
        container.warning("This link has values that do not exist here: " + "; ".join(parts) + ".", icon="⚠️")

    # ------------------------------------------------------------------ the end of a run
    def commit(self) -> None:
        """Make the URL hold exactly this view's keys (no write when nothing changed)."""
        current = {k: st.query_params.get(k) for k in st.query_params.keys()}
        if current != self.values:
            st.query_params.from_dict(self.values)
        st.session_state["_url_seen"] = dict(self.values)


def dumps_param(value: Any) -> str:
    """A Cypher parameter value as the console shows it (JSON-ish, `null` for None)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def loads_param(text: str) -> Any:
    """Parse a console parameter: null/true/false, numbers, JSON lists/maps/strings, else the text."""
    s = text.strip()
    if s == "" or s.lower() == "null":
        return None
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        pass
    if s[0] in "[{\"":
        try:
            return json.loads(s)
        except ValueError:
            pass
    return text
