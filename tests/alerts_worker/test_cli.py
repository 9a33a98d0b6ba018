"""``lamassu alert`` as an operator types it, against the in-process alerts worker."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alerts_worker import signing
from tests.alerts_worker.conftest import Alerts
from tests.alerts_worker.receivers import HttpReceiver
from tests.cli.test_cli import lamassu
from tests.conftest import Backends

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
async def receiver() -> Any:
    found = HttpReceiver()
    await found.start()
    yield found
    await found.stop()


async def test_subscribe_list_show_test_deliveries_delete(
    backends: Backends, alerts: Alerts, receiver: HttpReceiver, tmp_path: Path
) -> None:
    """The whole life of a subscription from the command line, with a secret file."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    (tmp_path / "secret").write_text(secret + "\n")
    made = await lamassu(
        backends,
        "--json",
        "alert",
        "subscribe",
        "--event",
        "certificate.status.update",
        "--where",
        'data.updated.status == "ABOUT_TO_EXPIRE"',
        "--webhook",
        receiver.url,
        "--secret-file",
        str(tmp_path / "secret"),
        "--digest",
        "daily at 08:00 UTC",
    )
    assert 0 == made.returncode, made.stderr
    sub = json.loads(made.stdout)
    assert sub["secret"] is None  # given, so not echoed
    listed = await lamassu(backends, "alert", "list")
    assert sub["id"] in listed.stdout
    assert "daily at 08:00 UTC" in listed.stdout
    shown = await lamassu(backends, "alert", "show", sub["id"])
    assert 'where      data.updated.status == "ABOUT_TO_EXPIRE"' in shown.stdout

    tested = await lamassu(backends, "alert", "test", sub["id"])
    assert "queued test notification" in tested.stdout
    [got] = await receiver.wait_for(1)
    now = int(datetime.now(UTC).timestamp())
    assert signing.verify(secret, got.headers, got.body, now)
    shown = await lamassu(backends, "alert", "deliveries", sub["id"])
    assert "test test-" in shown.stdout

    deleted = await lamassu(backends, "alert", "delete", sub["id"])
    assert f"deleted subscription {sub['id']}" == deleted.stdout.strip()


async def test_made_secret_is_shown_once(backends: Backends, alerts: Alerts) -> None:
    made = await lamassu(
        backends,
        "alert",
        "subscribe",
        "--event",
        "#",
        "--webhook",
        "https://hooks.example/x",
    )
    assert 0 == made.returncode, made.stderr
    assert "secret     whsec_" in made.stdout
    [line] = [x for x in made.stdout.splitlines() if x.startswith("id ")]
    shown = await lamassu(backends, "alert", "show", line.split()[1])
    assert "whsec_" not in shown.stdout
    await lamassu(backends, "alert", "delete", line.split()[1])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--event", "#", "--where", "data.x ==", "--email", "a@example.com"],
            1,
            "error: invalid: condition is not valid CEL at column",
        ),
        (["--event", "#"], 2, "one of the arguments --webhook --email --teams --slack"),
        (
            ["--event", "#", "--email", "a@example.com", "--secret-file", "/x"],
            2,
            "--secret-file goes with --webhook only",
        ),
        (
            ["--event", "#", "--webhook", "http://x", "--secret-file", "/nonexistent"],
            2,
            "cannot read secret file /nonexistent",
        ),
        (
            ["--event", "#", "--slack", "http://x", "--digest", "hourly"],
            1,
            "error: invalid: digest 'hourly' is not a period",
        ),
        (["--event", "a b", "--slack", "http://x"], 2, "error: invalid: event"),
    ],
    ids=[
        "bad-cel",
        "no-target",
        "secret-for-email",
        "missing-secret",
        "bad-digest",
        "bad-pattern",
    ],
)
async def test_subscribe_mistakes_are_one_line(
    backends: Backends, alerts: Alerts, args: list[str], code: int, message: str
) -> None:
    result = await lamassu(backends, "alert", "subscribe", *args)
    assert code == result.returncode
    # The reason is one line, the last (argparse prints the usage above its own).
    assert message in result.stderr.strip().splitlines()[-1]


async def test_unknown_subscription_is_not_found(
    backends: Backends, alerts: Alerts
) -> None:
    for action in ("show", "test", "delete", "deliveries"):
        result = await lamassu(backends, "alert", action, "nope")
        assert 1 == result.returncode
        assert "error: not_found: no subscription with id 'nope'" in result.stderr
