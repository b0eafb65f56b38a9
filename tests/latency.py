"""A database on another machine, for tests: PostgreSQL reached through bench/latency_proxy.py,
which delays every byte by a fixed time each way. SQLite has no network: its URL is kept."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def _proxy_class() -> Any:
    spec = importlib.util.spec_from_file_location(
        "latency_proxy", ROOT / "bench" / "latency_proxy.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LatencyProxy


@contextlib.contextmanager
def behind_proxy(url: str, delay_s: float) -> Iterator[tuple[str, Any]]:
    """(`url` through a proxy adding `delay_s` each way, the proxy); SQLite: (url, None)."""
    parts = urlsplit(url)
    if parts.port is None:
        yield url, None
        return
    proxy = _proxy_class()(parts.hostname, parts.port, delay_s)
    port = proxy.start()
    user = parts.netloc.rsplit("@", 1)[0]
    try:
        yield parts._replace(netloc=f"{user}@127.0.0.1:{port}").geturl(), proxy
    finally:
        proxy.stop()
