"""Property tests: whatever a user types, the CLI answers with output or one clean error line,
and the database is unchanged by a failed command."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker import open_store
from tracker.cli.main import cli

from .helpers import seed_three

text = st.text(max_size=60).filter(lambda s: "\x00" not in s)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('prop')}/prop.db"
    with open_store(url) as s:
        seed_three(s)
    return url


def _invoke(url: str, *args: str):
    result = CliRunner().invoke(cli, ["--db", url, *args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an unexpected crash is the bug this test looks for
    assert "Traceback" not in result.stderr
    if result.exit_code == 1:
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    return result


def _unchanged(url: str) -> None:
    with open_store(url) as s:
        assert len(s.list_runs()) == 3 and s.best_runs("val_loss")[0].value == 0.3


@SETTINGS
@given(ref=text)
def test_any_run_reference(url, ref):
    result = _invoke(url, "runs", "show", "--", ref)
    assert result.exit_code in (0, 1)
    _invoke(url, "restore", "--", ref, "--to", "/nonexistent/dir/x.weights.h5")
    _unchanged(url)


@SETTINGS
@given(metric=text, mode=st.sampled_from(["auto", "min", "max"]), top=st.integers(-3, 5))
def test_any_metric_for_best(url, metric, mode, top):
    result = _invoke(
        url, "best", "--metric", metric, "--mode", mode, "--top", str(top), "--format", "json"
    )
    assert result.exit_code in (0, 1, 2)
    _unchanged(url)


@SETTINGS
@given(tag=text, param=text, since=text)
def test_any_filters_for_runs_list(url, tag, param, since):
    result = _invoke(url, "runs", "list", "--tag", tag, "--param", param, "--since", since)
    assert result.exit_code in (0, 1, 2)
    _unchanged(url)
