"""The prompts of concept labelling and the reading of their answers (ingest/jobs/labelling/prompts.py),
on plain values: no server, no store."""

from __future__ import annotations

import base64

import pytest

from ingest.jobs.labelling.client import LabelError
from ingest.jobs.labelling.prompts import SYSTEM, check_messages, data_url, label_messages, parse_label, parse_matching


def _parts(messages):
    assert messages[0] == {"role": "system", "content": SYSTEM}
    assert messages[1]["role"] == "user" and len(messages) == 2
    return messages[1]["content"]


def test_label_request_shows_group_one_then_its_lower_groups():
    parts = _parts(label_messages(["u1", "u2"], [["l1"], ["m1", "m2"]], "sandal"))
    kinds = [p["text"] if p["type"] == "text" else p["image_url"]["url"] for p in parts]
    assert kinds[0].startswith("The model's class is 'sandal'. Group 1 is a group of neurons")
    assert kinds[1:-1] == ["Group 1:", "u1", "u2", "Group 2:", "l1", "Group 3:", "m1", "m2"]
    assert '"label": "one or two sentences"' in kinds[-1]
    assert all(set(p) == {"type", "image_url"} for p in parts if p["type"] == "image_url")


def test_label_request_without_a_class_name_names_none():
    first = _parts(label_messages(["u1"], [], None))[0]["text"]
    assert first.startswith("Group 1 is a group of neurons") and "class is" not in first


def test_check_request_numbers_the_images_and_quotes_the_label():
    parts = _parts(check_messages("Vertical stripes.", ["a", "b", "c"]))
    assert parts[0]["text"].startswith('A group of neurons is labelled: "Vertical stripes.". Below are 3 numbered')
    assert [p.get("text") or p["image_url"]["url"] for p in parts[1:-1]] == ["Image 1:", "a", "Image 2:", "b", "Image 3:", "c"]
    assert parts[-1]["text"] == 'Answer as JSON: {"matching": [numbers of the matching images]}'


def test_parse_label_collapses_whitespace_and_keeps_only_text_evolution():
    got = parse_label({"label": "  Round\n  toes. ", "feature_evolution": 3, "common_features": {"group 1": "x"}})
    assert got == {"label": "Round toes.", "feature_evolution": None, "common_features": {"group 1": "x"}}
    assert parse_label({"label": "a", "feature_evolution": "no match"})["feature_evolution"] == "no match"


@pytest.mark.parametrize("doc, reason", [
    ({}, "no 'label' text"), ({"label": "   "}, "no 'label' text"), ({"label": 5}, "no 'label' text"),
    ({"label": "x" * 601}, "601 characters long"),
])  # fmt: skip
def test_parse_label_refuses_what_is_not_a_short_label(doc, reason):
    with pytest.raises(LabelError, match=reason):
        parse_label(doc)


def test_parse_matching_keeps_the_numbers_shown():
    assert parse_matching({"matching": [1, 3, 0, 7, 3]}, 4) == {1, 3}
    for bad in ({}, {"matching": "1, 2"}, {"matching": [1, True]}, {"matching": [1.0]}):
        with pytest.raises(LabelError, match="no 'matching' list"):
            parse_matching(bad, 4)


def test_data_url_is_the_file_base64(tmp_path):
    path = tmp_path / "t.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nrest")
    url = data_url(path)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == b"\x89PNG\r\n\x1a\nrest"
