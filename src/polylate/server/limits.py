"""Request limits: body size (checked before the body is read), texts per request and
characters per text. Limits answer 413 with a message naming the limit."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import HTTPException


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, whether announced by
    Content-Length or streamed chunked (counted as it arrives, never buffered whole)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                return await _reply(send, 400, "invalid Content-Length header")
            if too_big:
                return await _reply(send, 413, self.message)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.message)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, self.message)

    @property
    def message(self) -> str:
        return f"request body exceeds the server's limit of {self.max_bytes} bytes (max_request_bytes)"


class _TooLarge(HTTPException):
    """Raised from receive(): FastAPI passes HTTPExceptions through its body parsing."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


#: ids one delete request may name however small max_batch is (ids cost no encoding)
MAX_DELETE_IDS = 10_000


def check_batch(count: int, max_batch: int, what: str = "input", setting: str = "max_batch") -> None:
    if count > max_batch:
        raise HTTPException(413, f"{what} has {count} items; this server accepts at most {max_batch} "
                                 f"per request ({setting})")


def check_texts(texts: Sequence[str], max_chars: int, what: str = "input", single: bool = False) -> None:
    """Length limit, and text that cannot become UTF-8 (lone surrogates from JSON escapes).
    ``single``: ``what`` names one text (rerank's query), not a list of them."""
    for i, text in enumerate(texts):
        name = what if single else f"{what}[{i}]"
        if len(text) > max_chars:
            raise HTTPException(413, f"{name} has {len(text)} characters; the limit is {max_chars} "
                                     "(max_text_chars)")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HTTPException(422, f"{name} is not valid Unicode text ({exc.reason} at "
                                     f"position {exc.start})") from None
