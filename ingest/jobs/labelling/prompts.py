"""The prompts of concept labelling (spec §10) and the reading of their answers: the labelling
request (a group's crops and those of its strongest lower groups, as data URLs) and the check (the
label against a shuffled mix of crops); plain values in, plain values out.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from ingest.jobs.labelling.client import LabelError


def data_url(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


SYSTEM = (
    "You label the features that groups of neurons of an image classifier detect. Each group is shown by "
    "image crops that activate it most. Answer with one JSON object only."
)


def label_messages(group_images: list[str], lower: list[list[str]], class_name: str | None) -> list[dict[str, Any]]:
    """The labelling request: group 1 (the upper group) and its lower groups, crops as data URLs."""
    parts: list[dict[str, Any]] = [_text(
        ("The model's class is '%s'. " % class_name if class_name else "")
        + "Group 1 is a group of neurons; groups 2.. are the lower-layer groups that feed it most. "
        "For each group, find the common visual feature of its crops. Then say which lower features "
        "build up the feature of group 1 ('feature evolution'), or 'no match' if none does. Finally "
        "give group 1 a label of one or two sentences."
    )]
    parts.append(_text("Group 1:"))
    parts += [_image(u) for u in group_images]
    for i, urls in enumerate(lower, start=2):
        parts.append(_text(f"Group {i}:"))
        parts += [_image(u) for u in urls]
    parts.append(_text(
        'Answer as JSON: {"common_features": {"group 1": "...", "group 2": "...", ...}, '
        '"feature_evolution": "...", "label": "one or two sentences"}'
    ))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}]


def check_messages(label: str, images: list[str]) -> list[dict[str, Any]]:
    """The check: which of the numbered crops show the labelled feature."""
    parts: list[dict[str, Any]] = [_text(
        f'A group of neurons is labelled: "{label}". Below are {len(images)} numbered image crops. '
        "Which of them show the feature the label describes?"
    )]
    for i, u in enumerate(images, start=1):
        parts.append(_text(f"Image {i}:"))
        parts.append(_image(u))
    parts.append(_text('Answer as JSON: {"matching": [numbers of the matching images]}'))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}]


def parse_label(doc: dict[str, Any]) -> dict[str, Any]:
    label = doc.get("label")
    if not isinstance(label, str) or not label.strip():
        raise LabelError("answer has no 'label' text")
    label = " ".join(label.split())
    if len(label) > 600:
        raise LabelError(f"label is {len(label)} characters long, not one or two sentences")
    evolution = doc.get("feature_evolution")
    return {"label": label, "feature_evolution": evolution if isinstance(evolution, str) else None,
            "common_features": doc.get("common_features")}  # fmt: skip


def parse_matching(doc: dict[str, Any], n: int) -> set[int]:
    picked = doc.get("matching")
    if not isinstance(picked, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in picked):
        raise LabelError("check answer has no 'matching' list of image numbers")
    return {x for x in picked if 1 <= x <= n}
