"""Commands, queries and events of the cloud proxy (connectors to cloud IoT platforms).

A connection says that the devices of one CA are kept in step with one connector (an
AWS IoT Core account and region the proxy is configured for), and how.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from pydantic import AwareDatetime, Field

from contracts.message import Message, Model
from contracts.pki import NAME_PATTERN as _NAME

__all__ = [
    "CloudStatus",
    "CloudSyncFailed",
    "ConnectCA",
    "ConnectionMode",
    "ConnectionView",
    "ConnectorStatus",
    "GetCloudStatus",
    "Reconcile",
    "SyncKind",
]

# AWS IoT policy and thing-group names: [a-zA-Z0-9:_-]+, at most 128 characters.
_AWS_NAME = r"^[A-Za-z0-9:_\-]{1,128}$"
_ROLE_ARN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_\-/]{1,512}$"


class ConnectionMode(enum.StrEnum):
    """How a CA's devices reach the cloud platform.

    ``register``: the CA is registered with its ownership-verification certificate and
    each device certificate, thing and policy is created ahead of the first connection.
    ``jitp``: the CA is registered with a provisioning template; AWS creates thing and
    certificate when a device first connects (just-in-time provisioning), and the proxy
    keeps their status in step. ``sni-only``: the CA is registered without verification
    (``SNI_ONLY``, several accounts may share it); device certificates are registered
    without a CA, as AWS requires in that mode.
    """

    REGISTER = "register"
    JITP = "jitp"
    SNI_ONLY = "sni-only"


class SyncKind(enum.StrEnum):
    CA = "ca"
    CERTIFICATE = "certificate"


# --- commands and queries (routed on lamassu.commands) -----------------------------


class ConnectCA(Message):
    """Keep the devices of ``ca`` in step with ``connector``; repeating it updates it."""

    TYPE: ClassVar[str] = "cloud.connect"
    ca: str = Field(pattern=_NAME)
    connector: str = Field(pattern=_NAME)
    mode: ConnectionMode = ConnectionMode.REGISTER
    policy: str | None = Field(default=None, pattern=_AWS_NAME)
    thing_group: str | None = Field(default=None, pattern=_AWS_NAME)
    # jitp only: the role AWS IoT assumes to run the provisioning template.
    provisioning_role_arn: str | None = Field(default=None, pattern=_ROLE_ARN)


class GetCloudStatus(Message):
    """Per connector: connections, items synced, pending and failed, the last error."""

    TYPE: ClassVar[str] = "cloud.status"
    connector: str | None = Field(default=None, pattern=_NAME)


class Reconcile(Message):
    """Compare what the connector's platform holds with what it should, now."""

    TYPE: ClassVar[str] = "cloud.reconcile"
    connector: str | None = Field(default=None, pattern=_NAME)


# --- results and events --------------------------------------------------------------


class ConnectionView(Model):
    ca: str
    connector: str
    mode: ConnectionMode
    policy: str | None = None
    thing_group: str | None = None
    provisioning_role_arn: str | None = None
    created_at: AwareDatetime


class ConnectorStatus(Model):
    connector: str
    configured: bool
    connections: list[ConnectionView]
    synced: int
    pending: int
    failed: int
    last_error: str | None = None
    last_error_at: AwareDatetime | None = None
    last_reconciled_at: AwareDatetime | None = None


class CloudStatus(Model):
    items: list[ConnectorStatus]


class CloudSyncFailed(Message):
    """``cloud.sync.failed`` data: an item could not be brought in step; it is retried."""

    TYPE: ClassVar[str] = "cloud.sync.failed"
    connector: str
    kind: SyncKind
    key: str = Field(description="The CA name or the certificate serial.")
    error: str
    attempts: int
    next_attempt_at: AwareDatetime
