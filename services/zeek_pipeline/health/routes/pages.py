"""The dashboard: rendered on the server (it works without JavaScript), then refreshed by static/dashboard.js."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from zeek_pipeline.health.routes.deps import StateDep

router = APIRouter(tags=["pages"])

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@router.get("/", response_class=HTMLResponse, summary="The dashboard")
def dashboard(request: Request, state: StateDep) -> HTMLResponse:
    pipeline = state.pipeline()
    flows = state.flows()
    context = {
        "pipeline": pipeline,
        "lag": state.lag(),
        "rejects": state.rejects(20),
        "files": state.files(20),
        "flows": flows,
        "lake": state.lake(6),
        "config": state.config(),
        # The script starts from the same data the server rendered; tojson escapes <, >, & and quotes.
        "initial": {"pipeline": pipeline.model_dump(mode="json"), "flows": flows.model_dump(mode="json")},
    }
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, "index.html", context)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
