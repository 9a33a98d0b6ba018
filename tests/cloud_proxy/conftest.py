"""Fixtures of the cloud proxy's tests: the local AWS IoT endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cloud_proxy.local_iot import LocalIot, local_iot


@pytest.fixture(scope="module")
def iot() -> Iterator[LocalIot]:
    """A moto server for the module, on its own loopback port."""
    with local_iot() as found:
        yield found
