"""Where the run store lives.

Order: an explicit URL, then `TRACKER_DB_URL`, then `sqlite:///tracker.db` in the working directory
(as MLflow's `mlflow.db`): zero set-up for one user, one variable for a shared PostgreSQL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_VAR = "TRACKER_DB_URL"
ARTIFACTS_ENV_VAR = "TRACKER_ARTIFACTS_DIR"
DEFAULT_URL = "sqlite:///tracker.db"

_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@]*:)(?P<pw>[^@]*)(?P<tail>@)")

_SECRET_PARAM = re.compile(
    r"(?i)([?&][^=&]*(?:key|token|secret|sig|signature|password)[^=&]*=)[^&]*"
)


def resolve_url(url: str | None = None) -> str:
    """The database URL to use, with a bare file path taken as a SQLite file."""
    url = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    if url == DEFAULT_URL:
        url = f"sqlite:///{Path('tracker.db').resolve()}"  # absolute: messages say which file
    elif "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the driver we ship in the `postgres` extra; SQLAlchemy's bare
        # `postgresql://` would look for psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`, for output and logs."""
    return _PASSWORD.sub(r"\g<head>***\g<tail>", url)


def shown(location: str) -> str:
    """A database URL, artifact root or URI as printed: passwords and key-like query values
    masked."""
    return _SECRET_PARAM.sub(r"\1***", mask_url(location))


def password_free(url: str) -> str:
    """The URL without its password, for storing: libpq completes it from its usual sources
    (`PGPASSWORD`, `~/.pgpass`, a service file) when it is used to connect."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return _PASSWORD.sub(r"\g<head>\g<tail>", url).replace(":@", "@")
    return parsed._replace(password=None).render_as_string(hide_password=False)


_LOOPBACK = {"", "localhost", "127.0.0.1", "::1", "[::1]"}


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database, whatever their spelling: driver, user and
    password aside, loopback host names as one, a default port as written, a SQLite path
    relative or absolute. (A database reached once is matched by its identity instead.)"""
    return _place(a) == _place(b)


def _place(url: str) -> tuple[object, ...]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(resolve_url(url))
    except ArgumentError:
        return (url,)
    backend = u.get_backend_name()
    if backend == "sqlite":
        file = sqlite_path(resolve_url(url))
        return (backend, str(file.expanduser().resolve()) if file else u.database)
    host = (u.host or "").lower()
    port = u.port or (5432 if backend == "postgresql" else None)
    query = tuple(sorted((k, str(v)) for k, v in u.query.items()))
    return (backend, "localhost" if host in _LOOPBACK else host, port, u.database, query)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def default_artifacts_dir(url: str) -> Path:
    """Artifacts sit beside the SQLite file; with a server database, in the working directory."""
    if env := os.environ.get(ARTIFACTS_ENV_VAR):
        return Path(env).expanduser().resolve()
    db_file = sqlite_path(url)
    base = db_file.resolve().parent if db_file else Path.cwd()
    stem = db_file.stem if db_file else "tracker"
    return base / f"{stem}-artifacts"
