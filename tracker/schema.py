"""The schema revisions this package knows, so opening a store can check the database's revision
without loading alembic or the migration scripts (query commands stay fast).

A test keeps this list equal to the revisions in `migrations/versions`.
"""

KNOWN_REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005")
HEAD = KNOWN_REVISIONS[-1]
