"""The app's pages; each module has `render(url, ctx)` (see app/router.py)."""
