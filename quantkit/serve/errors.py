"""Errors in OpenAI's shape: `{"error": {"message", "type", "code", "param"}}` for ours, for a route or method that
does not exist, for a body that does not validate, and for a bug (whose traceback goes to the log, never to the
client)."""
from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param
        self.headers, self.extra = headers, extra

    def body(self) -> dict:
        error = {"message": self.message, "type": self.type, "code": self.status, "param": self.param, **self.extra}
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unavailable(message: str) -> APIError:
    return APIError(503, message, "unavailable_error", headers={"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return e.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return APIError(e.status_code, message, kind).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return APIError(500, f"internal error: {type(e).__name__}", "server_error").response()


_UNION_TAG = re.compile(r".*\[.*\]$|^(str|int|float|bool|none)$")


def parse_body(model, body: bytes):
    """Validate a JSON body; 400 naming the field at fault."""
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as e:
        errors = e.errors(include_url=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise APIError(400, f"the body is not valid JSON: {errors[0]['ctx'].get('error', errors[0]['msg'])}")
        first = errors[0]
        param = ".".join(str(p) for p in first["loc"] if not _UNION_TAG.match(str(p))) or "body"
        message = first["msg"]
        if first["type"] == "value_error":
            message = message.removeprefix("Value error, ")
            if param == "body" and ": " in message:  # a check of the whole body names its field first
                param, _, message = message.partition(": ")
        raise APIError(400, f"{param}: {message}", param=param) from None
