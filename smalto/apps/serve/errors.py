"""Every error a client can cause, in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from smalto.apps.serve import protocol as p
from smalto.errors import ContextLengthError, SmaltoError


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return p.ErrorResponse(error=p.ErrorDetail(message=message, type=type, param=param, code=code)).model_dump()


def error_response(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type, param, code), status_code=status)


def install_handlers(app: FastAPI) -> None:
    """Answer every failure, ours or the framework's, in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        errors = e.errors()
        # A union reports one error per member; the deepest one names the real problem.
        first = max(errors, key=lambda err: len(err["loc"]), default={"loc": (), "msg": "invalid request", "type": ""})
        loc = [str(x) for x in first["loc"] if x != "body" and not _is_union_member(x)]
        param = ".".join(loc) or None
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", first["msg"])
            param, message = None, f"the request body is not valid JSON ({reason})"
        elif first["type"] == "extra_forbidden":
            message = f"unsupported parameter: '{param}'"
        elif first["type"] == "value_error":  # a check of ours (smalto.options): "must be ..., got ..."
            message = f"{param} {first['ctx']['error']}"
        else:
            message = f"{param}: {first['msg']}" if param else first["msg"]
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        detail = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code in (404, 405):
            detail = f"no route {request.method} {request.url.path}"
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return error_response(e.status_code, detail, code=code)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):
        return error_response(500, f"internal error: {type(e).__name__}: {e}", type="server_error")


def context_code(e: SmaltoError) -> str | None:
    return "context_length_exceeded" if isinstance(e, ContextLengthError) else None


def _is_union_member(segment) -> bool:
    """pydantic's name for a member of a union in an error's location ('str', 'list[...]')."""
    return isinstance(segment, str) and ("[" in segment or segment in ("str", "int", "float", "bool", "none"))


def without_422(app: FastAPI) -> dict:
    """FastAPI documents a 422 on every route; this server answers invalid requests with a 400."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
