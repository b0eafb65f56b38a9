"""Running the CLI in-process against a test database, and checkpoint files with real hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from tracker import Store
from tracker.checkpoint_files import file_digest
from tracker.cli.main import cli
from tracker.records import CheckpointRecord


def run(db_url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", db_url, *args], input=input, catch_exceptions=False)


def _no_bare_constants(name: str) -> Any:
    raise AssertionError(f"output is not strict JSON: bare {name}")


def strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=_no_bare_constants)


def ok_json(db_url: str, *args: str) -> Any:
    result = run(db_url, *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return strict_json(result.stdout)


def fails(db_url: str, *args: str, code: int = 1, input: str | None = None) -> str:
    """Run a command that must fail; returns its stderr, checked to be a clean error."""
    result = run(db_url, *args, input=input)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    if code == 1:
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    return result.stderr


def checkpoint_file(
    store: Store, run_id: str, path: Path, content: bytes, **fields: Any
) -> CheckpointRecord:
    """Write `content` to `path` and record it as a checkpoint of the run with its real hash."""
    path.write_bytes(content)
    size, sha = file_digest(path)
    fields.setdefault("kind", "model" if path.name.endswith(".keras") else "weights")
    fields.setdefault("source", "ModelCheckpoint")
    return store.add_checkpoint(run_id, path=str(path), size=size, sha256=sha, **fields)
