"""Pieces every page uses: the page context, in-app navigation, image grids, messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app import data
from app.state import PAGES
from app.text import md_text, no_server_paths
from ingest.store.errors import StoreUnavailable


@dataclass
class Context:
    """What the sidebar decided for this run."""

    model: str | None
    params: str | None  # the parameter set every page reads (None only when the store is empty)
    class_names: dict[int, str] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)  # name, depth, channels; by depth
    param_sets: list[dict[str, Any]] = field(default_factory=list)  # data.param_sets(model)

    def classes_without_set(self, classes: list[int]) -> list[int]:
        """The classes among `classes` that have no complete circuit under this parameter set."""
        have = next((set(s["class_indices"]) for s in self.param_sets if s["params"] == self.params), set())
        return [c for c in classes if c not in have]

    def missing_set_message(self, classes: list[int], container: Any = st) -> None:
        """Say which classes lack the parameter set, which sets they do have, and why they are left out."""
        if not classes:
            return
        others = {}
        for s in self.param_sets:
            for c in classes:
                if s["params"] != self.params and c in s["class_indices"]:
                    others.setdefault(s["params"], []).append(c)
        where = "; ".join(f"{', '.join(self.class_md(c) for c in cs)} under {md_text(p)}" for p, cs in others.items())
        container.warning(
            f"No complete circuit under parameter set {md_text(self.params)} for "
            f"{', '.join(self.class_md(c) for c in classes)}: left out, because comparisons only read "
            "circuits of one parameter set (same tau, k, IG steps, layers and data)."
            + (f" Circuits exist for {where}: pick that set in the sidebar." if where else
               " Ingest the class with these parameters to include it."),
            icon="⚠️",
        )

    @property
    def layer_names(self) -> dict[int, str]:
        return {row["depth"]: row["name"] for row in self.layers}

    @property
    def depth_of(self) -> dict[str, int]:
        return {row["name"]: row["depth"] for row in self.layers}

    def class_label(self, index: int) -> str:
        """``3 · Dress``: plain text (select boxes, tables); `class_md` where Markdown is drawn."""
        name = self.class_names.get(index)
        return f"{index} · {name}" if name is not None else str(index)

    def class_md(self, index: int) -> str:
        """`class_label` for a Markdown text (captions, alerts, labels, help)."""
        return md_text(self.class_label(index))


def _go(page: str, state: dict[str, Any]) -> None:
    st.session_state["w:page"] = page
    st.session_state["keep:page"] = page
    for key, value in state.items():
        st.session_state["w:" + key] = value
        st.session_state["keep:" + key] = value


def nav_button(label: str, page: str, *, key: str, container: Any = st, **state: Any) -> None:
    """A button that opens another page with some of its widgets set (e.g. a class); `label` is
    plain text (it may hold a class name)."""
    container.button(md_text(label), key=key, on_click=_go, args=(page, state), help=f"open {PAGES[page]}")


def image_row(rel_paths: list[str | None], *, width: int = 56, container: Any = st, captions: list[str] | None = None) -> int:
    """Show the existing thumbnails of `rel_paths` in one row; returns how many were shown.
    `captions` are plain text (Streamlit draws image captions as Markdown: escaped here)."""
    paths = data.thumbnail_paths(rel_paths)
    if paths:
        container.image(paths, width=width, caption=[md_text(c) for c in captions[: len(paths)]] if captions else None)
    elif rel_paths:  # the folder by its role, not its server path (the app may be open to anyone)
        container.caption("thumbnails not found in the artifact folder (NEURFLOW_ARTIFACT_DIR)")
    else:
        container.caption("no exemplar crops")
    return len(paths)


def empty_store_message() -> None:
    cfg = data.config()
    st.info(
        f"The store at {md_text(no_server_paths(cfg.uri))} (database {md_text(cfg.database or 'default')}) holds no "
        "complete circuits yet.\n\n"
        "Build the Fashion-MNIST demo with `neurflow demo`, or your own with "
        "`neurflow ingest --model fashion-resnet --data fashion-mnist --classes all`; then reload this page.",
        icon="ℹ️",
    )


def store_error_message(exc: Exception) -> None:

    st.error(f"The store cannot be read: {md_text(no_server_paths(exc))}", icon="⚠️")
    if isinstance(exc, StoreUnavailable):
        st.caption(
            "The embedded store starts with `neurflow store start` (or `neurflow app`); an external Neo4j is "
            "set with NEURFLOW_STORE_URI, NEURFLOW_STORE_USER, NEURFLOW_STORE_PASSWORD, NEURFLOW_STORE_DATABASE."
        )
    st.button("Retry", key="retry_store", on_click=data.reconnect)
