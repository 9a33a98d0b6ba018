"""The CLI's words: durations, enums, contract refusals in plain language, one JSON
shape for lists and for errors, --version, completion, and a closed pipe."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.ca import CertificateStatus, CreateCA, UpdateCA
from contracts.sweeps import GetSweep
from lamassu_cli.commands import days, duration, enum_type, warning_days
from lamassu_cli.messages import explain
from tests.cli.test_cli import lamassu
from tests.conftest import Backends
from tests.pki import csr_pem, make_csr

# Phrases of pydantic, argparse internals or Python that an operator must never see.
LEAKS = (
    "Input should",
    "String should",
    "should match pattern",
    "Value error",
    "validation error",
    "Field required",
    "Traceback",
    "KeyType",
    "CertificateStatus",
    "pydantic",
    "^[",
)


# --- pure: parsing and wording ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("90d", timedelta(days=90)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365)),
        (" 10Y ", timedelta(days=3650)),
    ],
)
def test_durations_take_every_unit(text: str, expected: timedelta) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0d", "'0d': a duration must be positive"),
        ("forever", "'forever' is not a duration: a number and a unit: s, m, h"),
        ("5q", "'5q' has unit 'q': use s, m, h, d, w or y (e.g. 5d)"),
        ("5", "'5' has no unit: use s, m, h, d, w or y (e.g. 5d)"),
    ],
)
def test_duration_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        duration(text)
    assert str(caught.value).startswith(message)


def test_days_accept_whole_days_in_any_unit() -> None:
    assert days("48h") == 2
    assert days("1w") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="not a whole number of days"):
        days("36h")
    assert warning_days("0d") == 0
    assert warning_days("0h") == 0


def test_enums_take_any_case_and_list_the_values() -> None:
    status = enum_type(CertificateStatus, "certificate status")
    assert status("revoked") is CertificateStatus.REVOKED
    assert status("about-to-expire") is CertificateStatus.ABOUT_TO_EXPIRE
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        status("gone")
    assert str(caught.value) == (
        "'gone' is not a certificate status; one of: "
        "ACTIVE, ABOUT_TO_EXPIRE, EXPIRED, REVOKED"
    )


def _refusal(model: type, **values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        model(**values)
    return explain(caught.value)


def test_contract_refusals_in_plain_words() -> None:
    assert _refusal(UpdateCA, name="x", about_to_expire_days=4000) == (
        "--about-to-expire: must be at most 3650 days (10y)"
    )
    assert _refusal(CreateCA, name="bad name!") == (
        "name: 'bad name!' is not valid: a name is 1 to 64 letters, digits, '.', "
        "'_' or '-', and starts with a letter or a digit"
    )
    assert _refusal(GetSweep, id="nope") == (
        "id: 'nope' is not valid: a sweep id is a UUID, as `lamassu sweep run` "
        "prints it"
    )
    assert (
        _refusal(CreateCA, name="x", validity_days=0) == "--validity: must be positive"
    )


# --- the command as typed ------------------------------------------------------------


ERROR_PATHS = [
    (["ca", "create", "--name", "x", "--validity", "0d"], 2),
    (["ca", "create", "--name", "x", "--validity", "12q"], 2),
    (["ca", "create", "--name", "x", "--key-type", "dsa"], 2),
    (["ca", "create", "--name", "bad name!"], 2),
    (["ca", "create", "--name", "x", "--about-to-expire", "20y"], 2),
    (["ca", "update", "x", "--about-to-expire", "soon"], 2),
    (["ca", "revoke", "x", "--reason", "because"], 2),
    (["ca", "show", "no-such-ca"], 1),
    (["cert", "list", "--status", "gone"], 2),
    (["cert", "list", "--limit", "0"], 2),
    (["cert", "show", "not-hex"], 2),
    (["device", "list", "--status", "lost"], 2),
    (["dms", "create", "--name", "d", "--authorized-ca", "bad ca!"], 2),
    (["sweep", "show", "nope"], 2),
    (["sweep", "run", "--shards", "0"], 2),
    (["wait", "--timeout", "0s"], 2),
    (["frobnicate"], 2),
    (["ca"], 2),
]


@pytest.mark.parametrize(("args", "code"), ERROR_PATHS, ids=str)
async def test_error_paths_speak_plainly_in_text_and_json(
    backends: Backends, ca_service: object, args: list[str], code: int, tmp_path: Path
) -> None:
    text = await lamassu(backends, *args, cwd=tmp_path)
    assert text.returncode == code, text.stderr
    said = [line for line in text.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1, text.stderr
    assert text.stdout == ""
    as_json = await lamassu(backends, "--json", *args, cwd=tmp_path)
    assert as_json.returncode == code
    assert as_json.stderr == ""
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert set(document["error"]) == {"code", "message"}
    assert document["error"]["message"]
    for leak in LEAKS:
        assert leak not in text.stderr + as_json.stdout, leak
    assert list(tmp_path.iterdir()) == []  # a refused command leaves nothing behind


async def test_wait_without_workers_says_what_it_waited_for(
    backends: Backends,
) -> None:
    lonely = Backends(
        backends.database,
        f"test-lonely-{uuid.uuid4().hex[:8]}.",
        backends.pg_host,
        backends.pg_port,
        backends.pg_user,
    )
    result = await lamassu(lonely, "wait", "--timeout", "1s")
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "error: unavailable: the CA worker did not answer within 1 s "
        "(is it running, with the same AMQP_URL and AMQP_PREFIX?)"
    )
    from contracts.names import Topology
    from runtime.topology import remove_topology
    from tests.conftest import AMQP_URL

    await remove_topology(AMQP_URL, Topology(lonely.prefix), [])


async def test_lists_have_one_json_shape_and_say_when_cut(
    backends: Backends,
    ca_service: object,
    dms_service: None,
    device_service: None,
    tmp_path: Path,
) -> None:
    name = f"paging-{uuid.uuid4().hex[:8]}"
    assert (await lamassu(backends, "ca", "create", "--name", name)).returncode == 0
    serials = []
    for index in range(3):
        csr = tmp_path / f"{index}.csr"
        csr.write_text(csr_pem(make_csr(f"page-{index}")[1]))
        signed = await lamassu(
            backends, "--json", "cert", "sign", "--ca", name, "--csr", str(csr)
        )
        assert signed.returncode == 0, signed.stderr
        serials.append(json.loads(signed.stdout)["serial"])
    first = await lamassu(
        backends, "--json", "cert", "list", "--ca", name, "--limit", "2"
    )
    document = json.loads(first.stdout)
    assert len(document["items"]) == 2
    assert document["next"] == document["items"][-1]["serial"]
    assert first.stderr.strip() == (
        "(showing the first 2; --limit N shows more, --all shows every one)"
    )
    every = await lamassu(backends, "--json", "cert", "list", "--ca", name, "--all")
    document = json.loads(every.stdout)
    assert sorted(i["serial"] for i in document["items"]) == sorted(serials)
    assert document["next"] is None
    assert every.stderr == ""
    revoked = await lamassu(
        backends, "cert", "list", "--ca", name, "--status", "revoked"
    )
    assert revoked.returncode == 0, revoked.stderr
    for command in (["ca", "list"], ["dms", "list"], ["device", "list"]):
        listed = await lamassu(backends, "--json", *command)
        assert listed.returncode == 0, listed.stderr
        assert set(json.loads(listed.stdout)) == {"items", "next"}


def test_version_and_completion() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "lamassu_cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0
    assert version.stdout.startswith("lamassu 0.")
    for shell in ("bash", "zsh"):
        script = subprocess.run(
            [sys.executable, "-m", "lamassu_cli", "completion", shell],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert '"ca create") words="' in script
        assert "--about-to-expire" in script
        assert "complete -o default -F _lamassu lamassu" in script
    checked = subprocess.run(
        ["bash", "-n"], input=script, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_completion_offers_commands_and_options() -> None:
    script = subprocess.run(
        [sys.executable, "-m", "lamassu_cli", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    probe = (
        f"{script}\n"
        "COMP_WORDS=(lamassu cert list --s); COMP_CWORD=3; _lamassu; "
        'echo "${COMPREPLY[@]}"\n'
        'COMP_WORDS=(lamassu d); COMP_CWORD=1; _lamassu; echo "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["--status", "db device dlq dms"]


def test_a_closed_pipe_ends_quietly() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lamassu_cli", "--json", "contracts", "asyncapi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before the first write
    with process.stderr:
        err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0
    assert err == ""


def test_admin_urls_setting_is_checked() -> None:
    from lamassu_cli.client import CliError
    from lamassu_cli.status import admin_urls

    assert admin_urls("")["ca_worker"] == "http://127.0.0.1:9101"
    assert admin_urls("ca_worker=http://ca:9101/") == {"ca_worker": "http://ca:9101"}
    with pytest.raises(CliError, match="is not name=http://host:port") as caught:
        admin_urls("ca_worker=ftp://x")
    assert caught.value.exit_code == 2
