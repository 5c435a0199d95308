"""Debug an image (spec §9): which groups of the predicted (and true) class's circuit fire on an
uploaded or data-set image, the crops that fire them next to the group's own representative
crops, and what zeroing a group's channels does to the logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import data
from app.state import UrlState
from app.text import md_text, no_server_paths
from app.views.common import Context, image_row
from ingest.jobs.image_debugging import debug_image, image_from_bytes, load_query_image
from ingest.store.uids import short_group

MISCLASSIFIED_SCAN = 2000  # test images scanned for misclassified examples


@st.cache_resource(show_spinner="Loading the model…")
def _model(name: str, weights: str | None, random_init: bool = False):
    """The model, once per session/process, on the GPU when there is one."""
    from neurflow.models.registry import load_model

    return load_model(name, weights or None, device="auto", train_if_missing=False, random_init=random_init)


@st.cache_data(show_spinner="Finding misclassified test images…")
def _misclassified(name: str, weights: str | None, random_init: bool, n: int) -> list[tuple[int, int, int]]:
    """(index, true, predicted) of the misclassified images among the first `n` Fashion-MNIST test images."""
    import torch

    from neurflow.datasets import load_images

    loaded = _model(name, weights, random_init)
    images = load_images(loaded.spec.default_data, loaded.spec, split="test", limit=n)
    preds = []
    with torch.no_grad():
        for s in range(0, len(images), 500):
            preds.append(loaded.module(images.pixels[s : s + 500].to(loaded.device)).argmax(1).cpu())
    pred = torch.cat(preds)
    return [(i, images.labels[i], int(pred[i])) for i in range(len(images)) if images.labels[i] != int(pred[i])]


WEIGHTS_OUTSIDE = ("Weights are read only from the model folder (NEURFLOW_CACHE) and the store's artifact folder: "
                   "give the name or path of a state-dict file inside one of them.")


def weights_folders() -> list[Path]:
    """Where a visitor may name a weights file: the model cache (trained weights live there) and
    the store's artifact folder."""
    from neurflow.cache import cache_dir

    return [cache_dir().resolve(), data.artifact_dir().resolve()]


def allowed_weights(raw: str) -> Path | None:
    """The weights file `raw` names inside `weights_folders()`, or None.

    A relative name is looked up in each folder; an absolute path must lie inside one (after
    symlinks and `..` are resolved).  Anything else is None whether or not it exists, so the
    field cannot tell a visitor which files exist on the server."""
    raw = raw.strip()
    if not raw or "\0" in raw:
        return None
    for root in weights_folders():
        given = Path(raw).expanduser()
        path = (given if given.is_absolute() else root / given).resolve()
        if path.is_relative_to(root) and path.is_file():
            return path
    return None


def _model_row(ctx: Context) -> dict[str, Any] | None:
    return next((m for m in data.models() if m["model"] == ctx.model), None)


def how_to_load(uid: str, name: str) -> tuple[bool, bool] | str:
    """How the model `uid`, stored with the model name `name`, is loaded here:
    ``(from_name, random_init)``, or one line saying why it cannot be.

    `from_name`: `name` alone may rebuild it (a registry model's default weights, the weights a
    ``file.py:factory`` model makes itself, a seeded ``--random-init`` model); the page loads it
    and compares the uids, and asks for the weights file only when they differ (a factory
    ingested with ``--weights``).  Otherwise the model was ingested from a weights file of its
    own and the page asks for that file first."""
    from neurflow.errors import NeurflowInputError
    from neurflow.models import sources
    from neurflow.models.registry import available_models

    try:
        source = sources.parse_source(name, available_models())
    except NeurflowInputError:
        return f"{uid} was built by {shown_model(name)}, a model this installation does not know: it cannot be loaded here."
    if uid.endswith("-random"):
        return True, True
    if source.kind == "file":
        if not source.path.is_file():
            return (f"{uid} was built by the factory {shown_model(name)}, whose file is not on this server: "
                    "the debug page runs the factory the model was ingested with.")
        return True, False
    return uid == name, False


def shown_model(name: str) -> str:
    """A model name as a visitor sees it: a factory by its file's name (``tiny_net.py:make``)."""
    return no_server_paths(name)


def render(url: UrlState, ctx: Context) -> None:
    from neurflow.errors import NeurflowInputError

    st.header("Debug an image")
    st.caption("Crops of the image at the circuit's sizes (its granularities; crops it left out as blank background "
               "score 0) are scored against every group of the circuit: "
               "s(x, G) = mean over the group's neurons of log(max(a(x), 0) / |reference activation| + eps); "
               "a group's score is exp(max over crops). Zeroing a group's channels shows whether it caused the prediction.")
    row = _model_row(ctx)
    if row is None:
        st.info("No model selected.")
        return
    name = row.get("name") or ctx.model
    how = how_to_load(ctx.model, name)
    if isinstance(how, str):
        st.info(md_text(how))
        return
    from_name, random_init = how
    weights = loaded = None
    if from_name:
        try:
            loaded = _model(name, None, random_init)
        except NeurflowInputError as exc:
            st.error(f"Cannot load the model: {md_text(no_server_paths(exc))}")
            return
        if loaded.uid != ctx.model:  # e.g. a factory model ingested with --weights: its file is asked for
            loaded = None
    if loaded is None:  # a model ingested with its own weights file
        raw = url.text_input(f"Weights file of {md_text(ctx.model)}", key="weights", default="")
        if not raw:
            st.info(f"{md_text(ctx.model)} was ingested with its own weights: give the state-dict file to load the "
                    "model. " + WEIGHTS_OUTSIDE)
            return
        found = allowed_weights(raw)
        if found is None:  # the same message for a missing file and any file outside the folders
            st.warning(WEIGHTS_OUTSIDE)
            return
        weights = str(found)
        try:
            loaded = _model(name, weights, random_init)
        except NeurflowInputError as exc:
            st.error(f"Cannot load the model: {md_text(no_server_paths(exc))}")
            return
        if loaded.uid != ctx.model:
            st.error(f"The loaded weights are {md_text(loaded.uid)}, not those of {md_text(ctx.model)}.")
            return

    sources = ["dataset", "upload"] if loaded.spec.default_data else ["upload"]
    source = url.radio("Image", sources, key="src", horizontal=True,
                       format_func={"dataset": "Test image of the data set", "upload": "Upload"}.get)  # fmt: skip
    image = label = None
    try:
        if source == "dataset":
            only_wrong = url.toggle("misclassified images only", key="wrong", default=True)
            if only_wrong:
                wrong = _misclassified(name, weights, random_init, MISCLASSIFIED_SCAN)
                if not wrong:
                    st.info("No misclassified image among the first test images.")
                    return
                fmt = {i: f"#{i} · true {ctx.class_label(t)} · predicted {ctx.class_label(p)}" for i, t, p in wrong}
                index = url.selectbox("Misclassified test image", list(fmt), key="img", parse=int, format_func=fmt.get)
            else:
                index = url.number("Test image index", key="img", min_value=0, max_value=9999, default=0)
            image, label, _ = load_query_image(f"{loaded.spec.default_data}:test:{index}", loaded.spec)
        else:
            from neurflow.datasets import IMAGE_EXTENSIONS

            # the file types ingestion reads; decoded by the same function (ingest.jobs.image_debugging.image_from_bytes)
            up = st.file_uploader("An image file", type=[e.lstrip(".") for e in IMAGE_EXTENSIONS], key="upload")
            if up is None:
                st.caption("Upload an image to debug.")
                return
            image = image_from_bytes(up.getvalue(), loaded.spec)
            classes = [None] + list(range(len(loaded.class_names)))
            label = st.selectbox("True class (optional)", classes, key="true_class",
                                 format_func=lambda c: "unknown" if c is None else ctx.class_label(c))  # fmt: skip
    except NeurflowInputError as exc:
        st.error(md_text(no_server_paths(exc)))
        return

    with st.spinner("Scoring the groups…"):
        report = debug_image(data.store(), loaded, image, true_class=label, params=ctx.params)
    _header(report, loaded, image, ctx)
    top = url.number("Groups to show per circuit", key="top", min_value=1, max_value=50, default=5)
    for c in report.circuits:
        st.subheader(f"{c.role.capitalize()} class {ctx.class_md(c.class_index)}")
        if c.circuit is None:
            st.info("This class has no complete circuit in the store.")
            continue
        st.caption(f"Circuit {md_text(c.circuit)} · {len(c.scores)} groups, best first")
        st.dataframe(pd.DataFrame([{
            "group": short_group(s.group.uid), "score": s.score,
            "evidence crops": len(s.evidence), "neurons": len(s.group.members), "label": s.group.label or "",
        } for s in c.scores]), hide_index=True, width="stretch")  # fmt: skip
        for s in c.scores[:top]:
            _group_card(c.boxes, loaded, image, s, ctx, key=f"{c.role}_{s.group.uid}")


def _header(report, loaded, image, ctx: Context) -> None:
    import torch

    from neurflow.images import crop_picture

    left, right = st.columns([1, 3])
    left.image(crop_picture(image, (0, 0, image.shape[-1], image.shape[-1]), loaded.spec.mean, loaded.spec.std, min_side=140),
               caption="query image")
    probs = torch.softmax(torch.tensor(report.logits), 0)
    order = torch.argsort(probs, descending=True)[:3].tolist()
    verdict = f"**Predicted {ctx.class_md(report.predicted)}** ({probs[report.predicted]:.1%})"
    if report.true_class is not None:
        verdict += (" — correct" if report.true_class == report.predicted
                    else f" — **misclassified**, true class {ctx.class_md(report.true_class)}")  # fmt: skip
    right.markdown(verdict)
    right.caption("Top classes: " + ", ".join(f"{ctx.class_md(i)} {probs[i]:.1%} (logit {report.logits[i]:.2f})" for i in order))


def _group_card(boxes, loaded, image, s, ctx: Context, key: str) -> None:
    from neurflow.debugging import ablate_group
    from neurflow.images import crop_picture

    g = s.group
    with st.container(border=True):
        st.markdown(f"**{md_text(g.layer)} · g{g.index}** · score {s.score:.3f} · {len(s.evidence)} evidence crops")
        if g.label:
            st.text(f"Label: {g.label}")  # plain text, never Markdown: labels come from an LLM or a person
        a, b = st.columns(2)
        with a:
            st.caption("crops of this image that fire the group")
            if s.evidence:
                pics, caps = [], []
                for i in s.evidence[:6]:
                    x0, y0, x1, y1, gran = boxes[i]
                    pics.append(crop_picture(image, (x0, y0, x1, y1), loaded.spec.mean, loaded.spec.std))
                    caps.append(f"{gran:g} · {s.crop_scores[i]:.2f}")
                st.image(pics, width=56, caption=caps)
            else:
                st.caption("none at the threshold")
        with b:
            st.caption("the group's representative crops")
            image_row(g.thumbnails, width=56)
        if g.layer == "logits":
            return
        from neurflow.images import pixel_hash

        state_key = f"ablation:{key}:{pixel_hash(image)[:16]}"
        if st.button("Zero this group's channels", key=f"ablate_{key}"):
            st.session_state[state_key] = ablate_group(loaded.module, image, g)
        abl = st.session_state.get(state_key)
        if abl is not None and abl.group == g.uid:
            rows = sorted(range(len(abl.before)), key=lambda i: -abs(abl.delta[i]))[:5]
            st.caption(f"Zeroed channels {abl.channels} of {md_text(abl.layer)}: prediction "
                       f"{ctx.class_md(abl.predicted_before)} → {ctx.class_md(abl.predicted_after)}")  # fmt: skip
            st.dataframe(pd.DataFrame([{"class": ctx.class_label(i), "logit before": abl.before[i], "after": abl.after[i],
                                        "change": abl.delta[i]} for i in rows]), hide_index=True)  # fmt: skip
