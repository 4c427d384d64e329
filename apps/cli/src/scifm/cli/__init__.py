"""The sci-fm command line."""
