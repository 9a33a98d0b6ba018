"""What the metrics cost per message and per EST request, against what every message
already costs: parsing its CloudEvents envelope (the anchor, run in the same process).

    .venv/bin/python bench/metrics.py [--count 200000]

Prints microseconds per call and the ratio to the anchor. The end-to-end view is
``bench/enroll.py``'s CPU per request by process; on a shared machine its run-to-run
noise is larger than what is measured here.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/metrics.py`` puts bench/ first on sys.path, where bench/engines.py
# would shadow the ``engines`` package: drop that entry before importing the project.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from contracts.ca import ListCAs
from contracts.envelope import CloudEvent, new_message
from est_gateway.metrics import GatewayMetrics
from runtime.metrics import WorkerMetrics


def per_call(count: int, call: Callable[[], object]) -> float:
    """Microseconds per call, best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    count = parser.parse_args().count
    body = new_message(
        source="bench", data=ListCAs(), now=datetime.now(UTC)
    ).model_dump_json()
    worker = WorkerMetrics(CollectorRegistry(), "ca")
    gateway = GatewayMetrics(CollectorRegistry())
    anchor = per_call(count, lambda: CloudEvent.model_validate_json(body))
    rows = [
        ("anchor: parse one envelope", anchor),
        (
            "a message settled (lamassu_messages_total)",
            per_call(count, lambda: worker.settled(ListCAs.TYPE, "ok")),
        ),
        (
            "an EST request (counter and histogram)",
            per_call(count, lambda: gateway.observe("simpleenroll", 200, 0.05)),
        ),
    ]
    print(f"{'what':45} {'us/call':>8} {'x anchor':>9}")
    for what, micros in rows:
        print(f"{what:45} {micros:8.2f} {micros / anchor:9.2f}")


if __name__ == "__main__":
    main()
