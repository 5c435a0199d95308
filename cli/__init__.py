"""The `neurflow` command line (`cli.main.main`), above `neurflow/`, `ingest/` and `app/`; nothing imports it."""
