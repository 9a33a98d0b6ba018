"""Failures of the alerts worker, each a subclass of the shared tree in ``runtime.errors``.

Failure
 ├── NotFound ── SubscriptionNotFound
 └── Invalid ── InvalidSubscription
"""

from __future__ import annotations

from runtime.errors import Invalid, NotFound

__all__ = ["InvalidSubscription", "SubscriptionNotFound"]


class SubscriptionNotFound(NotFound):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"no subscription with id {subscription_id!r}")


class InvalidSubscription(Invalid):
    """A subscription refused at creation; the message is one line for its author."""
