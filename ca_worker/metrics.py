"""The CA worker's own metrics: signing latency per engine, certificates by status
per CA, and the last expiry sweep. The runtime's (messages, outbox, queues) come
with ``serve_worker``; these are read from the database when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import asyncpg
from cryptography import x509
from prometheus_client import CollectorRegistry, Gauge, Histogram

from ca_worker.authorities import Authority, CASpec, CreatedCA, Parent
from ca_worker.inspection import count_certificates
from ca_worker.profiles import LeafUsage
from contracts.ca import CAView

__all__ = ["CAMetrics", "TimedAuthority"]

# Seconds: a key in a file signs in well under a millisecond, an HSM or Vault in
# milliseconds to tens of them.
_SIGN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CAMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.signing = Histogram(
            "lamassu_engine_sign_duration_seconds",
            "Time to build and sign one certificate, by engine.",
            ["engine"],
            buckets=_SIGN_BUCKETS,
            registry=registry,
        )
        self.certificates = Gauge(
            "lamassu_certificates",
            "Certificates by issuing CA and status.",
            ["ca", "status"],
            registry=registry,
        )
        self.cas = Gauge("lamassu_cas", "Certificate authorities.", registry=registry)
        self.sweep_duration = Gauge(
            "lamassu_sweep_last_duration_seconds",
            "From the last finished expiry sweep's trigger to its last shard.",
            registry=registry,
        )
        self.sweep_transitions = Gauge(
            "lamassu_sweep_last_transitions",
            "Status changes (CAs and certificates) of the last finished sweep.",
            registry=registry,
        )

    def timed(self, authorities: Mapping[str, Authority]) -> dict[str, Authority]:
        """The same authorities, each timing its ``sign_leaf``."""
        return {
            name: TimedAuthority(a, self.signing) for name, a in authorities.items()
        }

    async def read(self, pool: asyncpg.Pool) -> None:
        """Refresh the gauges from the CA schema (one scrape)."""
        async with pool.acquire() as conn:
            cas, counts = await count_certificates(conn)
            sweep = await conn.fetchrow(
                "SELECT extract(epoch FROM max(d.done_at) - s.created_at) AS seconds, "
                "s.ca_transitions + sum(d.transitions) AS transitions "
                "FROM ca.sweeps s JOIN ca.sweep_shards d ON d.sweep_id = s.id "
                "GROUP BY s.id HAVING count(*) = s.shards "
                "ORDER BY s.created_at DESC LIMIT 1"
            )
        # A CA whose certificates all moved on keeps no stale series.
        self.certificates.clear()
        for count in counts:
            self.certificates.labels(count.ca, count.status.value).set(count.count)
        self.cas.set(cas)
        if sweep is not None:
            self.sweep_duration.set(float(sweep["seconds"]))
            self.sweep_transitions.set(int(sweep["transitions"]))


class TimedAuthority:
    """An ``Authority`` that observes how long each ``sign_leaf`` takes."""

    def __init__(self, inner: Authority, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram.labels(inner.engine)

    @property
    def inner(self) -> Authority:
        return self._inner

    @property
    def engine(self) -> str:
        return self._inner.engine

    @property
    def in_process(self) -> bool:
        return self._inner.in_process

    def create_ca(self, spec: CASpec, parent: Parent | None) -> CreatedCA:
        # The engines check what kind of authority keeps the parent's key (a Vault
        # CA signs only under a Vault parent): they must see it, not this wrapper.
        if parent is not None and isinstance(parent.authority, TimedAuthority):
            parent = Parent(parent.ca, parent.authority.inner)
        return self._inner.create_ca(spec, parent)

    def has_key(self, ca: CAView) -> bool:
        return self._inner.has_key(ca)

    def discard_ca(self, name: str, key_id: str) -> None:
        self._inner.discard_ca(name, key_id)

    def sign_leaf(
        self,
        ca: CAView,
        csr: x509.CertificateSigningRequest,
        *,
        now: datetime,
        validity: timedelta,
        usage: LeafUsage | None = None,
    ) -> x509.Certificate:
        started = time.perf_counter()
        try:
            return self._inner.sign_leaf(
                ca, csr, now=now, validity=validity, usage=usage
            )
        finally:
            self._histogram.observe(time.perf_counter() - started)

    def revoke(self, ca: CAView, serials: Sequence[str]) -> None:
        self._inner.revoke(ca, serials)

    def close(self) -> None:
        self._inner.close()
