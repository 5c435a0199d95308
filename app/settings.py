"""Settings the app is started with (`neurflow app` sets them in the Streamlit process's environment)."""

LABEL_EDITS_ENV = "NEURFLOW_APP_LABEL_EDITS"
"""``"1"`` when the app was started with ``--allow-label-edits``: only then does the labels page write."""
