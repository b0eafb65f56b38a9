"""What the CLI and the web UI show, shaped from the store's records: one `View` per command
or page (`views`, `comparison`: its JSON contract, table sections and CSV), and the table, JSON
and CSV rendering (`output`).

Shaping only: nothing here reads the database or files. A caller that shows a fact found on
disk (a checkpoint's state) finds it first (`tracker.artifacts.checkpoint_places`) and passes it
in. Both `tracker.cli` and `tracker.ui` import this package; it imports only the store's
records and shared modules below it.
"""
