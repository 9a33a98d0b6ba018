"""A tiny webhook receiver for the demo: prints each alert it receives and whether its
Standard Webhooks signature verifies with the secret file.

    python scripts/webhook_receiver.py --port 8099 --secret-file .run/demo/alerts.secret
"""
# ruff: noqa: INP001, T201 - a script, printing is its job

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aiohttp import web

from alerts_worker.signing import verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--secret-file", type=Path, required=True)
    args = parser.parse_args()
    secret = args.secret_file.read_text("utf-8").strip()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(secret, request.headers, body, int(time.time()))
        event = json.loads(body)
        print(
            f"alert received: {event.get('type')} {event.get('subject') or ''} "
            f"webhook-id={request.headers.get('webhook-id')} "
            f"signature {'verified' if ok else 'INVALID'}",
            flush=True,
        )
        return web.Response(status=204 if ok else 401)

    app = web.Application()
    app.router.add_post("/", receive)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
