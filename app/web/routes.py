"""The operator's pages: ``GET /`` (status), ``GET /jobs/{uuid}`` (decision trail), "Reconcile now".

    GET  /                     the status page; ``?fragment=1`` only its refreshable part (refresh.js)
    GET  /jobs/{uuid}          the job's trail: JSON for ``Accept: application/json``, else HTML;
                               400 for a malformed UUID, 404 for a job this replica never saw
    POST /status/reconcile     the "Reconcile now" form: sweep now, then back to ``/`` (303)
    GET  /static/{name}        the page's script (refresh.js) and style sheet (status.css)

The form changes state, so it gets what the ops endpoints get (``app.ops``) plus a same-origin check:
a page on another site cannot make an operator's browser post it (a cross-site form post carries that
site's ``Origin``; a request with neither ``Origin`` nor ``Referer`` is refused too).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from app.jobs import is_uuid, normalise
from app.ops import require_ops_token
from app.state import running_controller
from app.web.views import DEFAULT_RECENT, MAX_RECENT, duration, job_view, status_view

# The form has one short field (the ops token); anything bigger is not our form.
MAX_FORM_BYTES = 4096
_ENV = Environment(
    loader=PackageLoader("app.web", "templates"),
    autoescape=True,  # every value on these pages may come from a job (names, branches, reasons)
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["duration"] = duration
_STATIC = {
    name: (resources.files("app.web").joinpath("static", name).read_text(), media_type)
    for name, media_type in (("refresh.js", "text/javascript"), ("status.css", "text/css"))
}
# No inline script or style may run, and nothing loads from elsewhere: escaping is the first defence
# against a hostile job name, this is the second.
_CSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:"


def router(*, clock: Callable[[], float] = time.time) -> APIRouter:
    """The routes; ``clock`` (unix time) dates ages and trail offsets, injected for tests."""
    routes = APIRouter()

    @routes.get("/", response_class=HTMLResponse)
    async def status_page(request: Request, fragment: str = "", recent: int = DEFAULT_RECENT) -> Response:
        controller = running_controller(request)
        view = status_view(controller, now=clock(), recent=max(1, min(recent, MAX_RECENT)))
        template = "_status.html" if fragment else "status.html"
        needs_token = controller.settings.server.ops_token is not None
        return _html(template, view=view, recent=recent, needs_token=needs_token)

    @routes.get("/jobs/{uuid}")
    async def job_trail(request: Request, uuid: str, fragment: str = "") -> Response:
        wants_json = _prefers_json(request.headers.get("accept", ""))
        if not is_uuid(uuid):
            return _problem(400, "not a job UUID", wants_json=wants_json)
        record = running_controller(request).jobs.get(normalise(uuid))
        if record is None:
            return _problem(404, "this replica has not seen this job (or forgot it)", wants_json=wants_json)
        job = job_view(record, now=clock())
        if wants_json:
            return JSONResponse(job)
        return _html("_job.html" if fragment else "job.html", job=job)

    @routes.post("/status/reconcile")
    async def reconcile_now(request: Request) -> Response:
        refusal = _refuse_cross_site(request)
        if refusal is not None:
            return _problem(403, refusal, wants_json=False)
        try:
            form = await request.form(max_files=0, max_fields=4, max_part_size=MAX_FORM_BYTES)
        except HTTPException as exc:  # a malformed or oversized form
            return _problem(exc.status_code, str(exc.detail), wants_json=False)
        try:
            _require_ops_token(request, form.get("ops_token"))
        except HTTPException as exc:
            return _problem(exc.status_code, str(exc.detail), wants_json=False)
        await running_controller(request).sweeper.sweep(trigger="status page")
        return RedirectResponse("/", status_code=303)

    @routes.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body, media_type = _STATIC[name]
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return routes


def _html(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    body = _ENV.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers={"Content-Security-Policy": _CSP})


def _problem(status: int, message: str, *, wants_json: bool) -> Response:
    if wants_json:
        return JSONResponse({"detail": message}, status_code=status)
    return _html("problem.html", status_code=status, status=status, message=message)


def _require_ops_token(request: Request, typed: object) -> None:
    """The ops endpoints' rule (``app.ops``): a browser cannot add an ``Authorization`` header to a form
    post, so the form may carry the token in its ``ops_token`` field instead; without one, the header
    or (with no token configured) a loopback client is required, exactly as for ``POST /reconcile``."""
    configured = running_controller(request).settings.server.ops_token
    if configured is not None and isinstance(typed, str) and typed:
        if hmac.compare_digest(typed.encode(), configured.get_secret_value().encode()):
            return
        raise HTTPException(401, "wrong ops token")
    require_ops_token(request)


def _prefers_json(accept: str) -> bool:
    """JSON when the client asks for it and not for HTML (a browser's Accept names text/html)."""
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in kinds and "text/html" not in kinds


def _refuse_cross_site(request: Request) -> str | None:
    """Why the request does not come from a page of this server, or None when it does."""
    own = (request.url.scheme, request.url.netloc.lower())
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        return None if (parts.scheme, parts.netloc.lower()) == own else "cross-site request refused"
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return None if (parts.scheme, parts.netloc.lower()) == own else "cross-site request refused"
    return "a form post needs an Origin or Referer header from this server's own pages"
