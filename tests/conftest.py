from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tracker import Store, open_store

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run for one Keras backend (KERAS_BACKEND set, as scripts/test does for JAX and
    PyTorch) fails at once when Keras did not load that backend, instead of passing on skips."""
    wanted = os.environ.get("KERAS_BACKEND")
    if not wanted:
        return
    try:
        import keras

        got = keras.backend.backend()
    except Exception as e:  # noqa: BLE001 - reported as the reason
        got = f"nothing ({type(e).__name__}: {e})"
    if got != wanted:
        pytest.exit(f"KERAS_BACKEND={wanted} but Keras loaded {got}", returncode=3)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test may touch a real user database or artifacts folder."""
    monkeypatch.setenv("TRACKER_DB_URL", f"sqlite:///{tmp_path}/default.db")
    monkeypatch.delenv("TRACKER_ARTIFACTS_DIR", raising=False)
    monkeypatch.delenv("TRACKER_ARTIFACTS", raising=False)
    monkeypatch.setenv("TRACKER_SPOOL", str(tmp_path / "spool.db"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server: TRACKER_TEST_POSTGRES_URL, else a throwaway cluster.

    Under CI=true a server that cannot be had fails the run instead of skipping.
    """
    url = os.environ.get("TRACKER_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from tests.pgcluster import Cluster

    cluster = Cluster()
    try:
        url = cluster.start()
    except Exception as e:  # noqa: BLE001 - reported as the reason
        cluster.stop()
        detail = getattr(e, "stderr", "") or str(e)
        if IN_CI:
            pytest.fail(f"PostgreSQL could not start under CI=true: {detail}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {detail}")
    try:
        yield url
    finally:
        cluster.stop()


def _pg_schema_url(server_url: str) -> Iterator[str]:
    """A fresh schema per test: isolation that also holds across processes."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{server_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/tracker.db"
    else:
        yield from _pg_schema_url(request.getfixturevalue("pg_server"))


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    yield from _pg_schema_url(pg_server)


@pytest.fixture
def store(db_url) -> Iterator[Store]:
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


# -- an S3-compatible endpoint for the artifact-store tests -----------------------------------

S3_BUCKET = "tracker-artifacts"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from tests.s3server import MotoServer

    server = MotoServer()
    try:
        server.start()
    except Exception as e:  # noqa: BLE001
        server.stop()
        pytest.fail(f"moto server could not start: {e}")
    yield server.url
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of the endpoint, with credentials only where S3 clients look for them:
    the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-never-stored")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    client = boto3.client("s3")
    if S3_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=S3_BUCKET)
    return client
