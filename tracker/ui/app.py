"""The ASGI application of `tracker ui`: routes, static files and one guard in front of them.

The guard is a plain ASGI middleware (no per-request task, unlike BaseHTTPMiddleware) that
answers every method but GET and HEAD with 405, asks for the token when one is set, and puts
the security headers on every response, pages, API, static files and errors alike: the UI shows
text written by whoever trained (run names, params, error messages), so the browser is told to
run no script but ours and to let no other site frame it. Without a token (the loopback
default) it accepts only loopback names in the Host header: a page of another site that gets
its own name resolved to 127.0.0.1 (DNS rebinding) would otherwise read the API as same-origin.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tracker.config import mask_url, sqlite_path
from tracker.errors import TrackerError
from tracker.store.db import make_engine
from tracker.store.revisions import current_revision
from tracker.store.run_store import Store
from tracker.ui import api, pages

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_COOKIE = "tracker_token"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def create_app(store: Store, *, token: str | None = None) -> Starlette:
    """The UI on `store` (which the caller opened, read-only for `tracker ui`, and closes).

    Args:
        store: the run store to show.
        token: when set, every request must carry it (`?token=` once, then the cookie).
    """
    routes = [
        Route("/", pages.runs_page, name="runs"),
        Route("/runs/{ref}", pages.run_page, name="run"),
        Route("/compare", pages.compare_page, name="compare"),
        Route("/api/runs", api.runs),
        Route("/api/runs/{ref}", api.run),
        Route("/api/runs/{ref}/series", api.series),
        Route("/api/runs/{ref}/series.csv", api.series_csv),
        Route("/api/best", api.best),
        Route("/api/compare", api.compare),
        Mount("/static", StaticFiles(packages=[("tracker.ui", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.store = store
    app.add_middleware(Guard, token=token)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Errors of routing itself (no such page): JSON under /api, one line of text elsewhere."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    if request.url.path.startswith("/api/"):
        return api.error_response(detail, status)
    return PlainTextResponse(detail, status)


class Guard:
    """GET/HEAD only, the token when one is set, security headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        refused = self._refusal(scope)
        await (refused or self.app)(scope, receive, send_secured)

    def _refusal(self, scope: Scope) -> Response | None:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse(
                "Method Not Allowed: the UI is read-only", 405, headers={"Allow": "GET, HEAD"}
            )
        if self.token is None:
            if _host_name(scope) in LOOPBACK_HOSTS:
                return None
            return PlainTextResponse("Bad Request: the UI answers to localhost only", 400)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        given = next((v for k, v in query if k == "token"), None)
        if given is not None:
            if not _same(given, self.token):
                return _unauthorized()
            return _enter(scope, [(k, v) for k, v in query if k != "token"], self.token)
        if _same(_cookie(scope), self.token):
            return None
        return _unauthorized()


def _host_name(scope: Scope) -> str:
    """The Host header's name, without the port (an IPv6 literal without its brackets)."""
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value.decode("latin-1"))
            if TOKEN_COOKIE in jar:
                return jar[TOKEN_COOKIE].value
    return None


def _enter(scope: Scope, rest: list[tuple[str, str]], token: str) -> Response:
    """A right `?token=`: keep it in a cookie and send the browser to the URL without it, so
    the token leaves the address bar and the history."""
    target = scope.get("root_path", "") + scope["path"] + (f"?{urlencode(rest)}" if rest else "")
    response = Response(status_code=303, headers={"Location": target})
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def _unauthorized() -> Response:
    return PlainTextResponse(
        "Unauthorized: open the URL with ?token=... that `tracker ui` printed", 401
    )


# -- opening the store read-only -----------------------------------------------------------------


def read_only_url(url: str) -> str:
    """`url` opened so that nothing can write: SQLite with `mode=ro`, PostgreSQL with every
    transaction read-only (`default_transaction_read_only`)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            return url
        if u.database.startswith("file:"):
            return url
        query = {**u.query, "mode": "ro", "uri": "true"}
        return u.set(database=f"file:{u.database}", query=query).render_as_string(False)
    if u.get_backend_name() == "postgresql":
        options = u.query.get("options", "")
        if isinstance(options, tuple):
            options = " ".join(options)
        options = f"{options} -c default_transaction_read_only=on".strip()
        return u.update_query_dict({"options": options}).render_as_string(False)
    return url


def open_read_only(url: str) -> Store:
    """A store on `url` that never writes, nor upgrades the schema.

    Raises:
        TrackerError: the database has no tracker schema yet (nothing recorded: a store opened
            for writing would create it, this one cannot).
    """
    _check_sqlite_file(url)
    ro_url = read_only_url(url)
    engine = make_engine(ro_url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    if revision is None:
        raise TrackerError(
            f"{mask_url(url)} holds no tracker runs yet (no schema): nothing to show"
        )
    return Store(ro_url, auto_upgrade=False)


def _check_sqlite_file(url: str) -> None:
    """Say plainly why a SQLite file cannot be shown read-only: the engine turns WAL on at
    connect, which a read-only connection may do only when the file is in WAL mode already
    (any store that wrote it made it so; header bytes 18-19 are 2 in WAL mode)."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return
    with path.open("rb") as f:
        header = f.read(20)
    if not header:
        raise TrackerError(f"{path} holds no tracker runs yet (an empty file): nothing to show")
    if header[18:20] != b"\x02\x02":
        raise TrackerError(
            f"{path} is not in WAL mode, so it cannot be read without writing: open it once "
            "with another tracker command (tracker --db FILE runs list) and retry"
        )
