"""RFC 9457 problem details: every error the API returns, mapped in one place.

Details name fields and rules, never the values the partner sent.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from exchange_core.logging import correlation_id_var

PROBLEM_BASE = "https://exchange.example/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error with an HTTP status, a stable type slug and a value-free detail."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "correlation_id": correlation_id_var.get() or "",
            **self.extra,
        }


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.body(), status_code=problem.status, headers=problem.headers,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def unauthorized(detail: str = "missing or invalid bearer credentials") -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail,
                   headers={"WWW-Authenticate": 'Bearer realm="exchange"'})


def service_unavailable(detail: str, retry_after_s: int = 5) -> Problem:
    return Problem(503, "service-unavailable", "Service unavailable", detail,
                   headers={"Retry-After": str(retry_after_s)})


def install_problem_handlers(app: FastAPI) -> None:
    """Map domain Problems and framework errors to problem+json."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        return problem_response(
            Problem(exc.status_code, "http-error", titles.get(exc.status_code, "HTTP error"),
                    str(exc.detail) if exc.status_code in (404, 405) else "request refused",
                    headers=getattr(exc, "headers", None) or {})
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Path/header parameter errors: name the location, not the input.
        errors = [{"path": ".".join(str(p) for p in err.get("loc", ())), "rule": err.get("type", "")}
                  for err in exc.errors()]
        return problem_response(
            Problem(400, "bad-request", "Bad request", "request parameters are invalid",
                    extra={"errors": errors})
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("ingest_api").error(
            "unhandled error", extra={"error_type": type(exc).__name__}
        )
        return problem_response(
            Problem(500, "internal-error", "Internal error",
                    "an unexpected error occurred; quote the correlation id to support")
        )
