"""docker-compose.yml, .env.example and the demo scripts, checked without running them.

No container engine runs in CI, so the compose file is checked as data: each rule is a function
that returns what is wrong, tested on the real file (nothing wrong) and on broken copies (the
rule notices). The demo trains for real and is run by hand; here it only has to parse.
"""

from __future__ import annotations

import ast
import copy
import os
import py_compile
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEMO_SH = ROOT / "scripts" / "demo"
DEMO_PY = ROOT / "scripts" / "demo.py"

# `${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$VAR`; `$$` is compose's escape for a literal `$`.
VAR_REF = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_]\w*)([^}]*)\}|([A-Za-z_]\w*))")
# A whole value that is one variable without a default: `${VAR}`, `${VAR:?msg}`, `${VAR?msg}`.
SECRET_REF = re.compile(r"^\$\{[A-Za-z_]\w*(?::?\?[^}]*)?\}$")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<pw>\$\{[^}]*\}|[^@\s]+)@")
MIGRATE_CMD = re.compile(r"\btracker\b[^\n;&|]*\bdb\s+upgrade\b")


# -- reading ------------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def env_file_vars(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def as_text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value or "")


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


# -- rules --------------------------------------------------------------------------------------


def db_problems(compose: dict[str, Any]) -> list[str]:
    db = compose.get("services", {}).get("db")
    if not isinstance(db, dict):
        return ["no service `db`"]
    problems = []
    image = str(db.get("image", ""))
    if not re.fullmatch(r"(docker\.io/)?(library/)?postgres(:[\w.-]+)?", image):
        problems.append(f"db image is not the official postgres image: {image!r}")
    test = as_text((db.get("healthcheck") or {}).get("test"))
    if "pg_isready" not in test:
        problems.append(f"db healthcheck does not use pg_isready: {test!r}")
    data = [v for v in volume_mounts(db) if v[1].startswith("/var/lib/postgresql")]
    if not any(named for _, _, named in data):
        problems.append("db keeps its data in no named volume")
    return problems


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, is a named volume) for each of a service's volumes."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            source, target = str(v.get("source", "")), str(v.get("target", ""))
            named = v.get("type", "volume") == "volume" and bool(source)
        else:
            source, target = (str(v).split(":") + [""])[:2]
            named = bool(source) and not source.startswith((".", "/", "~", "$"))
        out.append((source, target, named))
    return out


def volume_problems(compose: dict[str, Any]) -> list[str]:
    declared = compose.get("volumes") or {}
    return [
        f"service {name} mounts volume {source!r}, which top-level `volumes` does not declare"
        for name, service in compose.get("services", {}).items()
        for source, _, named in volume_mounts(service)
        if named and source not in declared
    ]


def port_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose.get("services", {}).items():
        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            if host_ip != "127.0.0.1":
                problems.append(f"service {name} publishes {port!r} beyond 127.0.0.1")
    return problems


def credential_problems(compose: dict[str, Any], example_password: str) -> list[str]:
    problems = []
    for name, service in compose.get("services", {}).items():
        for key, value in environment(service).items():
            if "PASSWORD" in key.upper() and not SECRET_REF.match(value):
                problems.append(f"service {name}: {key} is not one variable without default")
    for s in strings(compose):
        for m in URL_PASSWORD.finditer(s):
            if not SECRET_REF.match(m["pw"]):
                problems.append(f"a URL holds a literal password: {m.group(0)!r}")
        if example_password and example_password in s:
            problems.append(f"the example password appears in {s!r}")
    return problems


def migrate_problems(compose: dict[str, Any]) -> list[str]:
    migrate = compose.get("services", {}).get("migrate")
    if not isinstance(migrate, dict):
        return ["no service `migrate`"]
    problems = []
    depends = migrate.get("depends_on")
    condition = (depends or {}).get("db", {}) if isinstance(depends, dict) else {}
    if (condition or {}).get("condition") != "service_healthy":
        problems.append(f"migrate does not wait for db to be healthy: {depends!r}")
    command = as_text(migrate.get("command")) + " " + as_text(migrate.get("entrypoint"))
    if not MIGRATE_CMD.search(command):
        problems.append(f"migrate does not run `tracker db upgrade`: {command!r}")
    target = " ".join([command, *environment(migrate).values()])
    if not re.search(r"postgresql\+psycopg://(?:\$\{[^}]*\}|[^@\s])*@db:5432/", target):
        problems.append("migrate does not point tracker at postgresql+psycopg://...@db:5432/")
    if migrate.get("restart") != "no":
        problems.append(f"migrate is not one-shot: restart={migrate.get('restart')!r}")
    if ("./", "/src") not in [(s.rstrip("/") + "/", t) for s, t, _ in volume_mounts(migrate)]:
        problems.append("migrate does not mount the repository at /src")
    volumes = migrate.get("volumes") or []
    if not any(v.get("read_only") if isinstance(v, dict) else v.endswith(":ro") for v in volumes):
        problems.append("migrate mounts the repository writable")
    return problems


def compose_problems(compose: dict[str, Any], example_password: str = "") -> list[str]:
    return [
        *db_problems(compose),
        *volume_problems(compose),
        *port_problems(compose),
        *credential_problems(compose, example_password),
        *migrate_problems(compose),
    ]


def undefined_variables(compose_text: str, env_text: str) -> set[str]:
    used = {m[1] or m[3] for m in VAR_REF.finditer(compose_text)}
    return used - set(env_file_vars(env_text))


# -- the real files -----------------------------------------------------------------------------


def test_compose_file_follows_every_rule():
    example = env_file_vars(ENV_EXAMPLE.read_text())
    compose = load_compose()
    assert set(compose["services"]) >= {"db", "migrate"}
    assert compose_problems(compose, example["POSTGRES_PASSWORD"]) == []


def test_env_example_defines_every_variable_the_compose_file_uses():
    text = COMPOSE.read_text()
    used = {m[1] or m[3] for m in VAR_REF.finditer(text)}
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= used
    assert undefined_variables(text, ENV_EXAMPLE.read_text()) == set()


def test_env_example_url_matches_its_credentials():
    text = ENV_EXAMPLE.read_text()
    env = env_file_vars(text)
    m = re.search(
        r"TRACKER_DB_URL=postgresql\+psycopg://(\S+?):(\S+?)@127\.0\.0\.1:(\d+)/(\S+)", text
    )
    assert m, "the example TRACKER_DB_URL for the host is missing"
    assert m.groups() == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_PORT"],
        env["POSTGRES_DB"],
    )


def test_secrets_and_demo_output_stay_out_of_git():
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {".env", "demo-output/", ".venv-demo/"} <= ignored


# -- the rules notice broken files ----------------------------------------------------------------


def _set(path: str, value: Any):
    def change(compose: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = compose
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return change


BROKEN = {
    "port on every interface": (_set("services.db.ports", ["5432:5432"]), "beyond 127.0.0.1"),
    "port on 0.0.0.0": (_set("services.db.ports", ["0.0.0.0:5432:5432"]), "beyond 127.0.0.1"),
    "long port without host_ip": (
        _set("services.db.ports", [{"target": 5432, "published": 5432}]),
        "beyond 127.0.0.1",
    ),
    "literal password": (
        _set("services.db.environment.POSTGRES_PASSWORD", "hunter2"),
        "not one variable",
    ),
    "password with a default": (
        _set("services.db.environment.POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-hunter2}"),
        "not one variable",
    ),
    "literal password in a URL": (
        _set(
            "services.migrate.environment.TRACKER_DB_URL",
            "postgresql+psycopg://tracker:hunter2@db:5432/tracker",
        ),
        "literal password",
    ),
    "undeclared volume": (_set("volumes", KeyError), "does not declare"),
    "data in a bind mount": (
        _set("services.db.volumes", ["./pgdata:/var/lib/postgresql/data"]),
        "no named volume",
    ),
    "no healthcheck": (_set("services.db.healthcheck", KeyError), "pg_isready"),
    "healthcheck without pg_isready": (
        _set("services.db.healthcheck.test", ["CMD", "true"]),
        "pg_isready",
    ),
    "other image": (_set("services.db.image", "mysql:8"), "official postgres"),
    "no db": (_set("services.db", KeyError), "no service `db`"),
    "no migrate": (_set("services.migrate", KeyError), "no service `migrate`"),
    "depends only on start": (_set("services.migrate.depends_on", ["db"]), "healthy"),
    "no upgrade": (_set("services.migrate.command", ["tracker", "runs", "list"]), "db upgrade"),
    "migrates another database": (
        _set(
            "services.migrate.environment.TRACKER_DB_URL",
            "postgresql+psycopg://tracker:${POSTGRES_PASSWORD:?x}@127.0.0.1:5432/tracker",
        ),
        "@db:5432/",
    ),
    "restarts": (_set("services.migrate.restart", "on-failure"), "one-shot"),
    "writable repo": (_set("services.migrate.volumes", [".:/src"]), "writable"),
}


@pytest.mark.parametrize("change, expected", BROKEN.values(), ids=BROKEN.keys())
def test_rules_notice_a_broken_compose_file(change, expected):
    compose = copy.deepcopy(load_compose())
    change(compose)
    problems = compose_problems(compose, "change-me")
    assert any(expected in p for p in problems), problems


def test_rules_notice_the_example_password_in_the_compose_file():
    compose = copy.deepcopy(load_compose())
    compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"] = "${POSTGRES_PASSWORD:?x}"
    compose["services"]["db"]["command"] = "postgres -c password=change-me"
    assert credential_problems(compose, "change-me")


def test_undefined_variables_are_noticed():
    compose_text = "a: ${POSTGRES_USER:-tracker} $${LITERAL} ${NEW_VAR:?set it} $BARE\n"
    assert undefined_variables(compose_text, "POSTGRES_USER=tracker\n") == {"NEW_VAR", "BARE"}


# -- the demo -----------------------------------------------------------------------------------


def test_demo_shell_script_is_executable_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    assert DEMO_SH.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.access(DEMO_SH, os.X_OK), "scripts/demo is not executable"
    done = subprocess.run([bash, "-n", str(DEMO_SH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = DEMO_SH.read_text()
    assert '-e ".[demo]"' in text
    assert "scripts/demo.py" in text


def test_demo_python_compiles_and_uses_what_it_shows(tmp_path):
    py_compile.compile(str(DEMO_PY), cfile=str(tmp_path / "demo.pyc"), doraise=True)
    tree = ast.parse(DEMO_PY.read_text())
    names = {
        n.attr if isinstance(n, ast.Attribute) else n.id
        for n in ast.walk(tree)
        if isinstance(n, (ast.Attribute, ast.Name))
    }
    shown = {
        "load_digits",
        "EarlyStopping",
        "ModelCheckpoint",
        "LearningRateScheduler",
        "TensorBoard",
        "TrackingCallback",
        "restore_weights",
    }
    assert shown <= names, shown - names
