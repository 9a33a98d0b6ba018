"""compose.yaml parses and only names variables the settings know (it cannot run here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from alerts_worker.settings import Settings as AlertsSettings
from ca_worker.settings import Settings as CaSettings
from cloud_proxy.settings import Settings as CloudSettings
from va_worker.settings import Settings as VaSettings

ROOT = Path(__file__).resolve().parents[1]
# Variables of services whose settings classes arrive with the enrollment issue.
GATEWAY_ONLY = {"EST_PORT"}


def test_compose_names_only_known_variables() -> None:
    """Every worker environment variable in compose.yaml is a field of the settings."""
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    known = {name.upper() for name in CaSettings.model_fields} | GATEWAY_ONLY
    known |= {name.upper() for name in CloudSettings.model_fields}
    known |= {name.upper() for name in AlertsSettings.model_fields}
    known |= {name.upper() for name in VaSettings.model_fields}
    workers = {
        n: s
        for n, s in document["services"].items()
        if n not in {"rabbitmq", "postgres"}
    }
    assert {"ca-worker"} <= set(workers)
    for name, service in workers.items():
        unknown = set(service.get("environment", {})) - known
        assert set() == unknown, f"{name} names unknown variables"


def test_compose_uses_an_identity_per_service_and_publishes_no_backend() -> None:
    """No guest, no shared broker or database credential, each service its own env
    file, the broker and the database reachable only on the compose network."""
    from contracts.senders import IDENTITIES

    text = (ROOT / "compose.yaml").read_text()
    document = yaml.safe_load(text)
    assert "guest" not in text
    services = document["services"]
    for backend in ("rabbitmq", "postgres"):
        assert "ports" not in services[backend]
    for name, service in services.items():
        if name in {"rabbitmq", "postgres"}:
            continue
        assert name in IDENTITIES
        assert [f"credentials/{name}.env"] == service["env_file"]
        environment = service.get("environment", {})
        assert not {"AMQP_URL", "POSTGRES_USERNAME", "POSTGRES_PASSWORD"} & set(
            environment
        )
