"""ASGI middleware that runs before any route: body size limit and API key."""

from __future__ import annotations

import hmac

from smalto.apps.serve.errors import error_response


class LimitBody:
    """ASGI middleware: a request body over `max_bytes` gets 413 before any handler reads it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"the request body is larger than the limit of {self.max_bytes} bytes",
                                 code="payload_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_big(scope, receive, send)
        body, more = b"", True
        while more:  # chunked bodies have no length up front: count as they come
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message], receive), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await too_big(scope, receive, send)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


class RequireKey:
    """ASGI middleware: with a key set, every /v1 request needs 'Authorization: Bearer <key>'.

    Checked before the body is read or the route looked up, so a client without the key learns
    nothing (no 404 vs 405 vs 307 for paths it guesses) and cannot make the server buffer a body."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, None if key is None else key.encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or self.key is None or not (path == "/v1" or path.startswith("/v1/")):
            return await self.app(scope, receive, send)
        scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            refusal = "missing API key: send 'Authorization: Bearer <key>'"
        elif not hmac.compare_digest(token.strip(), self.key):
            refusal = "incorrect API key"
        else:
            return await self.app(scope, receive, send)
        response = error_response(401, refusal, code="invalid_api_key")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def _replay(messages: list[dict], receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()
    return replayed
