"""``lamassu bus setup`` and ``lamassu up``'s identities: credentials files, kept
passwords, the printed definitions, and one line when rabbitmqctl is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from contracts.senders import IDENTITIES
from lamassu_cli.credentials import read_env
from lamassu_cli.up import IDENTITY_OF, SERVICES, child_environment


def lamassu(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamassu_cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def test_print_writes_private_credentials_and_keeps_passwords(tmp_path: Path) -> None:
    """--print: the definitions on stdout, a 0600 file per role; a second run keeps
    every password, and a password from the environment is used for a new role."""
    credentials = tmp_path / "credentials"
    args = (
        "bus",
        "setup",
        "--print",
        "--prefix",
        "p.",
        "--vhost",
        "v",
        "--credentials",
        str(credentials),
    )
    first = lamassu(*args)
    assert 0 == first.returncode, first.stderr
    document = json.loads(first.stdout)
    assert {f"p.{role}" for role in IDENTITIES} == {
        u["name"] for u in document["users"]
    }
    files = {path.stem: path for path in credentials.iterdir()}
    assert set(IDENTITIES) == set(files)
    assert all(0o600 == path.stat().st_mode & 0o777 for path in files.values())
    url = urlsplit(read_env(files["ca-worker"])["AMQP_URL"])
    assert ("p.ca-worker", "/v") == (url.username, url.path)
    assert "p." == read_env(files["ca-worker"])["AMQP_PREFIX"]
    before = {role: read_env(path)["AMQP_URL"] for role, path in files.items()}
    files["observer"].unlink()
    again = lamassu(*args, env={**_environ(), "AMQP_PASSWORD_OBSERVER": "chosen-pw"})
    assert 0 == again.returncode, again.stderr
    after = {path.stem: read_env(path)["AMQP_URL"] for path in credentials.iterdir()}
    assert {r: u for r, u in before.items() if r != "observer"} == {
        r: u for r, u in after.items() if r != "observer"
    }
    assert "chosen-pw" == urlsplit(after["observer"]).password


def test_a_missing_rabbitmqctl_is_one_line(tmp_path: Path) -> None:
    """Exit 3 and one line saying what failed."""
    result = lamassu(
        "bus",
        "setup",
        "--rabbitmqctl",
        str(tmp_path / "nope"),
        "--credentials",
        str(tmp_path),
    )
    assert 3 == result.returncode
    assert result.stderr.startswith(
        "error: unavailable: rabbitmqctl import_definitions"
    )
    assert 1 == len(result.stderr.strip().splitlines())


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    """An unknown scheme or a non-number port: argparse's exit 2."""
    assert 2 == lamassu("bus", "setup", "--scheme", "http").returncode
    assert 2 == lamassu("bus", "setup", "--port", "many").returncode
    bad = lamassu(
        "db",
        "setup",
        "--role-prefix",
        "Robert'); DROP",
        "--dsn",
        "postgresql://127.0.0.1:1/x",
        "--credentials",
        str(tmp_path),
    )
    assert 2 == bad.returncode
    assert bad.stderr.startswith("error: invalid: --role-prefix")


def test_up_gives_each_service_its_identity(tmp_path: Path) -> None:
    """Each service's child gets its role's file over the environment; without a
    credentials directory, the environment alone (None)."""
    (tmp_path / "ca-worker.env").write_text(
        "AMQP_URL=amqp://ca-worker:x@h/v\nPOSTGRES_USERNAME=lamassu_ca\n"
    )
    environ = {
        "LAMASSU_CREDENTIALS": str(tmp_path),
        "AMQP_URL": "amqp://guest:guest@h/",
    }
    child = child_environment("ca_worker", environ)
    assert child is not None
    assert "amqp://ca-worker:x@h/v" == child["AMQP_URL"]
    assert "lamassu_ca" == child["POSTGRES_USERNAME"]
    assert (
        child_environment("ca_worker", {"LAMASSU_CREDENTIALS": str(tmp_path / "none")})
        is None
    )
    assert set(SERVICES) <= set(IDENTITY_OF)
    assert set(IDENTITY_OF.values()) <= set(IDENTITIES)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
