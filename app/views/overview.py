"""Overview: models, classes (with the crops their logit concepts respond to), circuits, the store."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import data
from app.state import UrlState
from app.text import md_text, no_server_paths, shown_path
from app.views.common import Context, image_row, nav_button

GALLERY_COLUMNS = 5
GALLERY_PAGE = 20


def render(url: UrlState, ctx: Context) -> None:
    st.header("Overview")
    with st.spinner("Reading the store…"):
        circuits = data.app_query("circuits", model=ctx.model, include_incomplete=True)
        models = data.models()
    complete = [c for c in circuits if c["status"] == "complete"]
    last = max((c["completed_at"] or "" for c in complete), default="")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Models", len(models))
    m2.metric("Classes with circuits", len({c["class_index"] for c in complete}), help=f"of {len(ctx.class_names)} classes of {md_text(ctx.model)}")
    m3.metric("Complete circuits", len(complete), help="running / failed ones are listed below when shown")
    m4.metric("Last ingestion", last[5:16].replace("T", " ") if last else "–", help=f"{last} (UTC)" if last else None)

    st.subheader(f"Classes of {md_text(ctx.model)}")
    st.caption("Top crops of each class-logit neuron's concepts: what the model looks at for the class. "
               "Open a class to see its circuit.")
    have = sorted(next((set(s["class_indices"]) for s in ctx.param_sets if s["params"] == ctx.params), set()))
    page_classes = have
    if len(have) > GALLERY_PAGE:  # ImageNet-sized models: one page of cards at a time, read one page at a time
        pages = (len(have) + GALLERY_PAGE - 1) // GALLERY_PAGE
        at = url.number(f"Gallery page (of {pages}, {GALLERY_PAGE} classes each)", key="gp", min_value=1,
                        max_value=pages, default=1)
        page_classes = have[(at - 1) * GALLERY_PAGE : at * GALLERY_PAGE]
    shown = data.app_query("class_gallery", model=ctx.model, params=ctx.params, classes=page_classes, n=6)
    for start in range(0, len(shown), GALLERY_COLUMNS):
        cols = st.columns(GALLERY_COLUMNS)
        for col, row in zip(cols, shown[start : start + GALLERY_COLUMNS]):
            with col.container(border=True):
                st.markdown(f"**{md_text(ctx.class_label(row['class_index']))}**")
                image_row(row["thumbnails"], width=44)
                nav_button("Circuit", "circuit", key=f"open_circuit_{row['class_index']}", **{"class": row["class_index"]})

    st.subheader("Circuits")
    show_all = url.toggle("show running and failed circuits too", key="all", default=False)
    rows = circuits if show_all else complete
    if rows:
        df = pd.DataFrame(rows)
        st.dataframe(df, hide_index=True, width="stretch", column_config={
            "build_seconds": st.column_config.NumberColumn("build s", format="%.1f"),
            "completed_at": st.column_config.TextColumn("completed (UTC)"),
        })  # fmt: skip
    else:
        st.caption("no circuits")

    st.subheader("Models")
    # a factory model's name and arch hold its file's server path: shown by the file's name
    st.dataframe(pd.DataFrame([{k: no_server_paths(v) if isinstance(v, str) else v for k, v in m.items()} for m in models]),
                 hide_index=True, width="stretch")

    st.subheader("Store in use")
    cfg = data.config()
    try:
        agent = data.store().server_agent
    except Exception:  # noqa: BLE001 - informational only
        agent = "?"
    rows = [
        ("kind", data.store_kind(cfg)), ("server", agent), ("address", no_server_paths(cfg.uri)),
        ("database", cfg.database or "(server default)"),
        ("reader account", cfg.readonly_user or f"{cfg.user} (READ sessions)"),
        ("crop thumbnails", shown_path(data.artifact_dir())),  # the folder by its role or name, not its server path
    ]
    # st.table draws its cells as Markdown: every value escaped
    st.table(pd.DataFrame([{"what": w, "value": md_text(v)} for w, v in rows]).set_index("what"))
