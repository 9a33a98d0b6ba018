"""A local AWS IoT Core endpoint for tests: moto in server mode on a free loopback port.

moto keeps its state in the process, so stopping the server and starting it again on
the same port is an outage, not a reset: what was registered before is still there.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalIot:
    port: int = field(default_factory=_free_port)
    server: ThreadedMotoServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> Any:
        """boto3, to check what AWS would see."""
        return boto3.client("iot", region_name=REGION, endpoint_url=self.url)

    # --- what AWS sees -------------------------------------------------------------

    def certificate_status(self, certificate_id: str) -> str | None:
        try:
            found = self.client().describe_certificate(certificateId=certificate_id)
        except self.client().exceptions.ResourceNotFoundException:
            return None
        return str(found["certificateDescription"]["status"])

    def ca_status(self, ca_id: str) -> str | None:
        try:
            found = self.client().describe_ca_certificate(certificateId=ca_id)
        except self.client().exceptions.ResourceNotFoundException:
            return None
        return str(found["certificateDescription"]["status"])

    def thing_principals(self, thing: str) -> list[str] | None:
        """The certificate ARNs attached to a thing; None when there is no thing."""
        try:
            return list(
                self.client().list_thing_principals(thingName=thing)["principals"]
            )
        except self.client().exceptions.ResourceNotFoundException:
            return None

    def thing_groups(self, thing: str) -> list[str]:
        groups = self.client().list_thing_groups_for_thing(thingName=thing)
        return [g["groupName"] for g in groups["thingGroups"]]

    def policies(self, arn: str) -> list[str]:
        found = self.client().list_attached_policies(target=arn)["policies"]
        return [p["policyName"] for p in found]

    def certificates_by_ca(self, ca_id: str) -> list[str]:
        found = self.client().list_certificates_by_ca(caCertificateId=ca_id)
        return [c["certificateId"] for c in found["certificates"]]

    def things(self) -> list[str]:
        return [t["thingName"] for t in self.client().list_things()["things"]]


@contextlib.contextmanager
def local_iot() -> Iterator[LocalIot]:
    """The endpoint, the AWS variables that reach it, moto's certificate ids as AWS's."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    saved_config = default_user_config.get("iot")
    os.environ.update(CREDENTIALS)
    # AWS names a certificate by the SHA-256 of its DER; moto does so only when asked.
    default_user_config["iot"] = {"use_valid_cert": True}
    iot = LocalIot()
    iot.start()
    try:
        yield iot
    finally:
        iot.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_config is None:
            default_user_config.pop("iot", None)
        else:
            default_user_config["iot"] = saved_config
