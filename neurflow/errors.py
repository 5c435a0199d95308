"""Errors a user can fix. Kept free of heavy imports so that every package can raise them."""


class NeurflowInputError(ValueError):
    """Bad input from a user: the CLI prints its message as one line and exits non-zero."""
