"""SQLAlchemy's psycopg dialect, with its first look at a new server in one round trip.

When an engine first connects, SQLAlchemy asks the server four things, one statement each: its
version, the current schema, the default isolation level and whether strings are standard. Through
a distant link each is a round trip that a process's first write (or a CLI command) waits for. The
server already told the driver two of them while connecting (libpq's `server_version` and the
`standard_conforming_strings` parameter it reports); the other two are one statement.

Loaded through SQLAlchemy's dialect registry under a name of our own (`db.engine_url`), so that
other engines in the user's process keep SQLAlchemy's own dialect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg


class OneLookPsycopg(PGDialect_psycopg):
    """What SQLAlchemy learns is the same; only how many times it asks differs."""

    supports_statement_cache = True  # compiles as its parent does: the cache stays on

    _settings: tuple[str, str] | None = None  # current schema, isolation level: while initialising

    def initialize(self, connection: Any) -> None:
        row = connection.exec_driver_sql(
            "select current_schema(), current_setting('transaction_isolation')"
        ).one()
        self._settings = (row[0], row[1].upper())
        try:
            super().initialize(connection)
        finally:
            self._settings = None

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        number = connection.connection.dbapi_connection.info.server_version
        if number >= 100000:  # since PostgreSQL 10: major * 10000 + minor
            return (number // 10000, number % 10000)
        return (number // 10000, number // 100 % 100, number % 100)

    def _get_default_schema_name(self, connection: Any) -> Any:
        if self._settings is None:
            return super()._get_default_schema_name(connection)
        return self._settings[0]

    def get_default_isolation_level(self, dbapi_conn: Any) -> Any:
        if self._settings is None:
            return super().get_default_isolation_level(dbapi_conn)
        return self._settings[1]

    def _set_backslash_escapes(self, connection: Any) -> None:
        info = connection.connection.dbapi_connection.info
        reported = info.parameter_status("standard_conforming_strings")
        if reported is None:
            super()._set_backslash_escapes(connection)
        else:
            self._backslash_escapes = reported == "off"
