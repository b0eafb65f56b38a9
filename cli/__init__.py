"""The `tracker` command line (installed as `tracker.cli`; the entry point is `main.cli`)."""
