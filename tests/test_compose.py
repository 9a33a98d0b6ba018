"""compose.yaml, the Dockerfile and the lock file, checked without a Docker engine:
the compose file parses, its services' variables exist, one non-root image built
from the lock file runs every service, with healthchecks on /readyz."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from alerts_worker.settings import Settings as AlertsSettings
from ca_worker.settings import Settings as CaSettings
from cloud_proxy.settings import Settings as CloudSettings
from device_worker.settings import Settings as DeviceSettings
from dms_worker.settings import Settings as DmsSettings
from est_gateway.settings import Settings as GatewaySettings
from lamassu_cli.client import CliSettings
from lamassu_cli.status import StatusSettings
from runtime.admin import DEFAULT_ADMIN_PORTS
from va_worker.settings import Settings as VaSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "ca-worker": (CaSettings,),
    "dms-worker": (DmsSettings,),
    "device-worker": (DeviceSettings,),
    "est-gateway": (GatewaySettings,),
    "va-worker": (VaSettings,),
    "alerts-worker": (AlertsSettings,),
    "cloud-proxy": (CloudSettings,),
    "cli": (CliSettings, StatusSettings),
}
MODULES = {
    "ca-worker": "ca_worker",
    "dms-worker": "dms_worker",
    "device-worker": "device_worker",
    "est-gateway": "est_gateway",
    "va-worker": "va_worker",
    "alerts-worker": "alerts_worker",
    "cloud-proxy": "cloud_proxy",
}
PACKAGES = [
    "contracts",
    "runtime",
    "engines",
    "ca_worker",
    "dms_worker",
    "device_worker",
    "est_gateway",
    "va_worker",
    "alerts_worker",
    "cloud_proxy",
    "lamassu_cli",
]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_compose_names_only_known_variables(compose: dict[str, Any]) -> None:
    """Every application service's variables are fields of its settings."""
    for name, classes in SETTINGS.items():
        service = compose["services"][name]
        known = {f.upper() for c in classes for f in c.model_fields}
        unknown = set(service.get("environment", {})) - known
        assert set() == unknown, f"{name} names unknown variables"


def test_one_image_runs_every_service(compose: dict[str, Any]) -> None:
    images = {compose["services"][n]["image"] for n in SETTINGS}
    assert len(images) == 1
    built = [n for n in SETTINGS if "build" in compose["services"][n]]
    assert set(built) == set(MODULES)  # same image and context: built once
    for name, module in MODULES.items():
        assert compose["services"][name]["command"] == ["python", "-m", module]


def test_healthchecks_ask_readyz_on_each_admin_port(compose: dict[str, Any]) -> None:
    for name, module in MODULES.items():
        service = compose["services"][name]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        port = int(service["environment"]["ADMIN_PORT"])
        # The VA, alerts and cloud proxy have no default admin port (9105-9107 here).
        assert port == DEFAULT_ADMIN_PORTS.get(module, port)
        assert service["environment"]["ADMIN_HOST"] == "0.0.0.0"  # noqa: S104
        # The port is for the compose network (Prometheus), never published.
        assert all(str(port) not in str(p) for p in service.get("ports", []))


def test_state_is_on_volumes_and_the_gateway_names_itself(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    keys = services["ca-worker"]["environment"]["GOPEM_DATA"]
    assert f"keys:{keys}" in services["ca-worker"]["volumes"]
    gateway = services["est-gateway"]["environment"]
    assert f"est-tls:{gateway['EST_TLS_DIR']}" in services["est-gateway"]["volumes"]
    assert "est-gateway" in gateway["EST_SERVER_NAMES"]
    assert {"keys", "est-tls"} <= set(compose["volumes"])
    cli = services["cli"]
    assert cli["profiles"] == ["cli"]
    assert any(v.startswith("est-tls:") and v.endswith(":ro") for v in cli["volumes"])
    urls = cli["environment"]["LAMASSU_ADMIN_URLS"]
    for name in MODULES:
        if "profiles" not in services[name]:  # optional ones (cloud) are not asked
            assert f"http://{name}:" in urls


def test_prometheus_scrapes_what_compose_runs(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {
        f"{name}:{compose['services'][name]['environment']['ADMIN_PORT']}"
        for name in MODULES
    }
    mounted = compose["services"]["prometheus"]["volumes"][0]
    assert mounted.startswith("./deploy/prometheus.yml:")


def test_dashboard_queries_only_exported_metrics() -> None:
    import json

    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "lamassu.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(lamassu_[a-z_]+)", e)}
    exported = set()
    for package in ("runtime", "est_gateway", "ca_worker"):
        for source in (ROOT / package).glob("*.py"):
            exported |= set(re.findall(r'"(lamassu_[a-z_]+)"', source.read_text()))
    suffixes = ("_bucket", "_count", "_sum")
    for metric in used:
        base = next((metric[: -len(s)] for s in suffixes if metric.endswith(s)), metric)
        assert base in exported, metric


def test_image_is_non_root_locked_and_has_no_tests() -> None:
    lines = _dockerfile()
    assert sum(1 for line in lines if line.startswith("FROM ")) == 1
    user = [line for line in lines if line.startswith("USER ")]
    assert user
    assert user[-1] not in {"USER root", "USER 0"}
    install = next(line for line in lines if "pip install" in line)
    assert "-c requirements.lock" in install
    copied = [line.split()[1] for line in lines if line.startswith("COPY ")]
    assert "." not in copied  # packages only
    assert set(copied) == {"requirements.lock", *PACKAGES}
    assert any(line.startswith("VOLUME ") and "est-tls" in line for line in lines)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests/", "bench/", ".run/", "*.key"} <= set(ignored)


def test_lock_pins_every_runtime_dependency() -> None:
    """requirements.lock pins a version of each dependency in pyproject.toml, and
    make (scripts/services.sh) installs with it."""
    project = (ROOT / "pyproject.toml").read_text()
    block = project[
        project.index("dependencies = [") : project.index(
            "]", project.index("dependencies = [")
        )
    ]
    wanted = {
        re.split(r"[<>=!~\[ ]", line.strip().strip('",'))[0].lower().replace("_", "-")
        for line in block.splitlines()[1:]
        if line.strip().startswith('"')
    }
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all(
        "==" in line
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert wanted <= pins, wanted - pins
    assert "-c requirements.lock" in (ROOT / "scripts" / "services.sh").read_text()


def test_readme_documents_the_cli_service() -> None:
    assert "docker compose run --rm cli lamassu" in (ROOT / "README.md").read_text()


def test_compose_uses_an_identity_per_service_and_publishes_no_backend(
    compose: dict[str, Any],
) -> None:
    """No guest, no shared broker or database credential: each service its own env
    file (the cli the admin's); the broker and the database reachable only on the
    compose network."""
    from contracts.senders import IDENTITIES

    assert "guest" not in (ROOT / "compose.yaml").read_text()
    services = compose["services"]
    for backend in ("rabbitmq", "postgres"):
        assert "ports" not in services[backend]
    for name in SETTINGS:
        service = services[name]
        identity = "admin" if name == "cli" else name
        assert identity in IDENTITIES
        assert [f"credentials/{identity}.env"] == service["env_file"]
        environment = service.get("environment", {})
        assert not {"AMQP_URL", "POSTGRES_USERNAME", "POSTGRES_PASSWORD"} & set(
            environment
        )
