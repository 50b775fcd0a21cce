"""Serve stage: a request-body cap enforced while the body streams in, before any parsing.

``Content-Length`` over the cap is refused at once; a chunked body is counted as it arrives
and cut off at the cap. Either way the client gets 413 JSON and the server never holds more
than the cap (plus a little multipart framing) of any upload.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_SLACK = 64 * 1024
"""Bytes allowed on top of the file for multipart boundaries and part headers."""


class _TooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "code": "too_large",
            "message": f"the request body is over this server's limit of {limit} bytes",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: 413 for any request body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                await _send_413(send, self.limit)
                return
        seen = 0
        over = False  # the body passed the cap: whatever the app answers becomes 413
        replied = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal replied
            if over:
                # The parser may turn our exception into its own 400; answer 413 instead.
                if message["type"] == "http.response.start" and not replied:
                    replied = True
                    await _send_413(send, self.limit)
                return
            if message["type"] == "http.response.start":
                replied = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _TooLarge:
            if not replied:
                replied = True
                await _send_413(send, self.limit)
