"""Sending one notification over its channel: webhook, e-mail, Teams or Slack.

Every failure is a ``SendFailed`` with one line (the status, or what went wrong); the
delivery loop decides whether to try again. TLS certificates are always verified.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import aiohttp
import aiosmtplib

from alerts_worker import digests, notices, signing
from alerts_worker.settings import Settings
from alerts_worker.store import Claimed
from contracts.alerts import Channel

__all__ = ["SendFailed", "Sender"]

# Any status from 300 on is retried, 4xx included: a misconfigured receiver fixed
# within the retry period still gets every notification.
_USER_AGENT = "lamassu-alerts/1"


class SendFailed(Exception):  # noqa: N818 - the outcome of an attempt, not a bug
    """One attempt failed; ``str()`` is the one line stored with the attempt."""


def _notice(claimed: Claimed) -> notices.Notice:
    if claimed.kind == "digest":
        return notices.digest_notice(claimed.payload.get("data", {}))
    return notices.event_notice(claimed.payload)


class Sender:
    """Holds one HTTP session and the SMTP settings; ``send`` makes one attempt."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ssl = ssl.create_default_context(
            cafile=str(settings.alerts_ca_file) if settings.alerts_ca_file else None
        )
        self._smtp_ssl = ssl.create_default_context(
            cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        )
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=100),
                timeout=aiohttp.ClientTimeout(total=self._settings.alerts_http_timeout),
                headers={"User-Agent": _USER_AGENT},
            )
        return self._session

    async def send(self, claimed: Claimed, now: datetime) -> None:
        """One attempt; raises SendFailed."""
        if claimed.channel is Channel.WEBHOOK:
            body = json.dumps(claimed.payload, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/cloudevents+json"}
            if claimed.secret:
                headers |= signing.headers(
                    claimed.secret, claimed.message_id, int(now.timestamp()), body
                )
            else:
                headers["webhook-id"] = claimed.message_id
            await self._post(claimed.target, body, headers)
        elif claimed.channel is Channel.EMAIL:
            await self._mail(claimed, now)
        else:
            notice = _notice(claimed)
            payload = (
                notices.teams(notice)
                if claimed.channel is Channel.TEAMS
                else notices.slack(notice)
            )
            await self._post(
                claimed.target,
                json.dumps(payload).encode(),
                {"Content-Type": "application/json"},
            )

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            async with self._http().post(url, data=body, headers=headers) as response:
                if response.status >= 300:
                    raise SendFailed(
                        f"HTTP {response.status} {response.reason or ''}".strip()
                    )
        except aiohttp.ClientError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise SendFailed(
                f"no answer within {self._settings.alerts_http_timeout:g} s"
            ) from None

    def _message(self, claimed: Claimed, now: datetime) -> EmailMessage:
        notice = _notice(claimed)
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = claimed.target
        message["Subject"] = f"[Lamassu] {notice.title}"
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain="lamassu.alerts")
        # The idempotency key, so that a mail filter can drop a repeat.
        message["X-Lamassu-Alert-Id"] = claimed.message_id
        message.set_content(notices.text_body(notice))
        message.add_alternative(notices.html_body(notice), subtype="html")
        if notice.items:
            message.add_attachment(
                digests.to_csv(notice.items).encode(),
                maintype="text",
                subtype="csv",
                filename="alerts.csv",
            )
        return message

    async def _mail(self, claimed: Claimed, now: datetime) -> None:
        s = self._settings
        options: dict[str, Any] = {
            "hostname": s.smtp_host,
            "port": s.smtp_port,
            "timeout": s.alerts_http_timeout,
            "use_tls": s.smtp_tls == "implicit",
            "start_tls": s.smtp_tls == "starttls",
            "tls_context": self._smtp_ssl,
        }
        if s.smtp_username:
            options["username"] = s.smtp_username
            options["password"] = (
                s.smtp_password.get_secret_value() if s.smtp_password else ""
            )
        try:
            await aiosmtplib.send(self._message(claimed, now), **options)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendFailed(f"SMTP: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise SendFailed("SMTP: timed out") from None
