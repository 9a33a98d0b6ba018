"""A client's reset or failed handshake is logged as the client's business (INFO)."""

from __future__ import annotations

import logging
import ssl

import pytest

from est_gateway.server import quiet_client_disconnects


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), "Fatal read error"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]"), "SSL handshake failed"),
    ],
    ids=["reset", "tls-handshake"],
)
def test_client_disconnects_are_not_errors(
    exc: BaseException, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio's error record of a client's reset comes out at INFO, without traceback."""
    quiet_client_disconnects()
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        logging.getLogger("asyncio").error(message, exc_info=exc)
        logging.getLogger("asyncio").error("a real problem")
    assert [("INFO", False), ("ERROR", False)] == [
        (r.levelname, bool(r.exc_info)) for r in caplog.records
    ]
