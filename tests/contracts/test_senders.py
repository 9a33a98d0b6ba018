"""The table of who may send what (contracts/senders.py) and what is derived from it."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from contracts.catalog import COMMANDS, EVENTS
from contracts.names import Topology
from contracts.senders import (
    FORWARDS,
    IDENTITIES,
    OWNERS,
    SENDERS,
    Kind,
    answerers,
    may_send,
    role_of,
)
from lamassu_cli.identities import (
    definitions,
    markdown_table,
    password_hash,
    permissions,
    topic_permissions,
)


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` one word, ``#`` zero or more."""
    words = [
        "[^.]+" if w == "*" else ".*" if w == "#" else re.escape(w)
        for w in pattern.split(".")
    ]
    return re.fullmatch(r"\.".join(words).replace(r"\..*", r"(\..*)?"), key) is not None


def test_every_catalogued_type_has_senders() -> None:
    """A message type added to contracts/catalog.py without an entry here fails: no
    type slips past the trust boundary unlisted (and nothing is listed for nothing)."""
    assert set(COMMANDS) == set(SENDERS["commands"])
    assert set(EVENTS) == set(SENDERS["events"])


def test_every_sender_is_a_known_role() -> None:
    """Only roles of IDENTITIES appear, and observers send nothing."""
    for table in SENDERS.values():
        for roles in table.values():
            assert roles <= set(IDENTITIES)
            assert "observer" not in roles


def test_each_command_is_bound_by_its_owner() -> None:
    """The worker that answers a command binds it (so its topic read allows it)."""
    for type_, operation in COMMANDS.items():
        owner = IDENTITIES[OWNERS[operation.worker]]
        assert any(
            kind == "commands" and _topic_matches(key, type_)
            for kind, key in owner.binds
        ), type_


@pytest.mark.parametrize(
    ("user", "prefix", "expected"),
    [
        ("ca-worker", "", "ca-worker"),
        ("run1.ca-worker", "run1.", "ca-worker"),
        ("ca-worker", "run1.", None),
        ("run2.ca-worker", "run1.", None),
        ("guest", "", None),
        (None, "", None),
        ("run1.", "run1.", None),
    ],
    ids=["production", "test-run", "no-prefix", "other-run", "guest", "none", "empty"],
)
def test_role_of(user: str | None, prefix: str, expected: str | None) -> None:
    """A user's role is its name without the deployment's prefix, if it is a role."""
    assert expected == role_of(user, prefix)


@pytest.mark.parametrize(
    ("role", "kind", "type_", "expected"),
    [
        ("dms-worker", "commands", "certificate.issue", True),
        ("admin", "commands", "certificate.issue", False),
        ("est-gateway", "commands", "enrollment.request", True),
        ("admin", "commands", "enrollment.request", False),
        ("admin", "commands", "ca.create", True),
        ("dms-worker", "commands", "ca.create", False),
        ("ca-worker", "events", "ca.create", True),
        ("admin", "events", "ca.create", False),
        ("observer", "events", "ca.status.update", False),
        ("ca-worker", "commands", "no.such.type", False),
        (None, "commands", "ca.list", False),
    ],
    ids=[
        "dms-issues",
        "admin-issue",
        "gateway-enrolls",
        "admin-enroll",
        "admin-ca-create",
        "dms-ca-create",
        "ca-event",
        "admin-ca-event",
        "observer-event",
        "unknown-type",
        "no-role",
    ],
)
def test_may_send(role: str | None, kind, type_: str, expected: bool) -> None:
    """Commands and events are separate tables: ``ca.create`` is both."""
    assert expected == may_send(role, kind, type_)


def test_a_forwarded_request_is_answered_by_where_it_went() -> None:
    """An enrollment goes DMS -> CA: both may answer it; a query only its owner."""
    assert FORWARDS["enrollment.request"] == ("certificate.issue",)
    assert frozenset({"dms-worker", "ca-worker"}) == answerers("enrollment.request")
    assert frozenset({"ca-worker"}) == answerers("ca.list")
    assert frozenset() == answerers("no.such.type")


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    """base64(salt + SHA-256(salt + password)), the salt four bytes."""
    salt = b"\x01\x02\x03\x04"
    raw = base64.b64decode(password_hash("secret", salt))
    assert salt == raw[:4]
    assert hashlib.sha256(salt + b"secret").digest() == raw[4:]
    assert password_hash("secret") != password_hash("secret")  # a fresh salt each


def test_an_observer_writes_to_no_exchange() -> None:
    """An observer may write only to its own private queues (to bind them)."""
    topology = Topology("p.")
    write = permissions("observer", topology)["write"]
    for exchange in (topology.commands, topology.events, "amq.default"):
        assert re.fullmatch(write, exchange) is None, exchange


def test_no_one_configures_an_exchange() -> None:
    """Exchanges are made by the set-up; services configure only queues."""
    topology = Topology("p.")
    for role in IDENTITIES:
        configure = permissions(role, topology)["configure"]
        for exchange in (topology.commands, topology.events, topology.dead):
            assert re.fullmatch(configure, exchange) is None, (role, exchange)


def test_every_role_has_topic_permissions_on_both_exchanges() -> None:
    """A user with no topic permission on an exchange may use every key there
    (RabbitMQ), so every role gets an entry for each topic exchange."""
    topology = Topology("p.")
    for role in IDENTITIES:
        exchanges = [entry["exchange"] for entry in topic_permissions(role, topology)]
        assert [topology.commands, topology.events] == exchanges


def test_topic_write_is_exactly_what_the_table_allows() -> None:
    """Each role's topic write regex matches the types it may send and no other."""
    topology = Topology()
    for role in IDENTITIES:
        for entry in topic_permissions(role, topology):
            kind: Kind = (
                "commands" if entry["exchange"] == topology.commands else "events"
            )
            for type_ in SENDERS[kind]:
                allowed = re.fullmatch(entry["write"], type_) is not None
                assert may_send(role, kind, type_) == allowed, (role, type_)


def test_definitions_name_users_with_the_prefix() -> None:
    """One user per role, ``<prefix><role>``, with permissions in the vhost."""
    passwords = dict.fromkeys(IDENTITIES, "pw")
    document = definitions(vhost="v", topology=Topology("run."), passwords=passwords)
    names = [user["name"] for user in document["users"]]
    assert [f"run.{role}" for role in IDENTITIES] == names
    assert {"v"} == {entry["vhost"] for entry in document["permissions"]}
    assert [{"name": "v"}] == document["vhosts"]


def test_the_readme_table_is_derived_from_the_table() -> None:
    """README's identity table is what ``markdown_table`` makes of contracts/senders.py."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<!-- generated from contracts/senders.py")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- end of generated table -->")
    assert markdown_table() == readme[start:end]
