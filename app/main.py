"""Streamlit entry point: `streamlit run app/main.py` (or `neurflow app`)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `streamlit run` puts app/ on the path, not the project root
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

st.set_page_config(page_title="NeurFlow Store", page_icon="🧠", layout="wide")

from app.router import main  # noqa: E402

main()
