"""`app.text`: data as text (Markdown, plotly, CSV) and no server paths, without a browser.
tests/test_app_hostile_names.py checks the same in Chromium on every page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.text import csv_cell, data_source, md_text, no_server_paths, plot_text, shown_path
from tests.test_app_pages import shown

HOSTILE = [
    "![t](http://127.0.0.1:9/track.png)", "**bold**", "[x](http://127.0.0.1:9/x)", "<img src=http://127.0.0.1:9/i.png>",
    ":red[x]", "$x^2$", ":material/home:", ":material_home:", ":smile:", ":streamlit:", "www.example.com",
    "a@b.co", "http://e.x/y", "# h", "1. one", "- item", "> quote", "`code`", "~~s~~", "a|b", "a\\b", "&lt;b&gt;",
    "_i_", "x:small[]y", "\\:red[x]", "tab\there", "line\nbreak",
]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_md_text_reads_as_the_text_and_holds_no_markup(name):
    out = md_text(name)
    assert shown(out) == re.sub(r"[\t\n]", " ", name)  # only the escapes and splitters were added
    unescaped = re.sub(r"\\[!-/:-@\[-`{-~]", "", out.replace(":small[]", ""))
    assert not re.search(r"[!-/:-@\[-`{-~]", unescaped), out  # every punctuation character is escaped
    # what the renderer matches after parsing (escapes gone): split by an empty directive
    parsed = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", out)
    assert not re.search(r"https?://|www\.|\w@\w|:[\w+-][\w_+-]*:|:material/", parsed.replace(":small[]", "|")), out
    assert ":material/" not in out  # Streamlit rewrites this before parsing
    assert "\n" not in out and "\t" not in out


def test_plot_text_escapes_plotly_markup_and_tex():
    assert plot_text('<a href="http://x/">$x$</a> &amp;') == '&lt;a href="http://x/"&gt;&#36;x&#36;&lt;/a&gt; &amp;amp;'
    assert plot_text(3) == "3"


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    assert csv_cell('=IMAGE("http://127.0.0.1:9/t.png")') == '\'=IMAGE("http://127.0.0.1:9/t.png")'
    assert [csv_cell(v) for v in ("+1", "-x", "@a", "\tx", "ok", -1.5, None)] == ["'+1", "'-x", "'@a", "'\tx", "ok", -1.5, None]


def test_paths_are_shown_relative_to_the_known_folders_or_by_name(tmp_path):
    store, cache = tmp_path / "store", tmp_path / "cache"
    roots = sorted([(store, "store folder"), (store / "artifacts", "artifact folder"), (cache, "model folder")],
                   key=lambda r: -len(r[0].parts))  # fmt: skip
    assert shown_path(store / "artifacts" / "thumbs" / "a.png", roots) == "thumbs/a.png"
    assert shown_path(store / "server.log", roots) == "server.log"
    assert shown_path(store / "artifacts", roots) == "the artifact folder"
    assert shown_path("/srv/secret/weights.pt", roots) == "weights.pt"
    text = (f"weights file {cache}/mine.pt is not a state dict; see {store}/logs/server.log. Also '/etc/hostname', "
            "bolt://127.0.0.1:7687/db, http://host/a/b and 1/2 or a / b")  # fmt: skip
    assert no_server_paths(text, roots) == ("weights file mine.pt is not a state dict; see logs/server.log. Also 'hostname', "
                                            "bolt://127.0.0.1:7687/db, http://host/a/b and 1/2 or a / b")  # fmt: skip
    assert str(tmp_path) not in no_server_paths(f"{store}", roots)


def test_a_data_folder_is_shown_by_its_name():
    assert data_source("folder:/srv/data/pets") == "folder pets"
    assert data_source("fashion-mnist:train") == "fashion-mnist:train"
    assert "/home/u" not in data_source("weird:/home/u/x/y")


def test_no_server_paths_uses_the_environment_s_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURFLOW_ARTIFACT_DIR", str(tmp_path / "art"))
    monkeypatch.setenv("NEURFLOW_CACHE", str(tmp_path / "models"))
    assert no_server_paths(f"missing {tmp_path / 'art' / 'thumbs' / 'x.png'}") == "missing thumbs/x.png"
    assert no_server_paths(f"bad {tmp_path / 'models' / 'sub' / 'w.pt'}") == f"bad {Path('sub') / 'w.pt'}"
