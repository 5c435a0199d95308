"""Work that runs the method or a model against the store: ingestion (local and Ray), evaluations,
concept labelling (`labelling/`: HTTP client, prompts, job) and image debugging."""
