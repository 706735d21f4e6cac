"""create_app(): the FastAPI app, built on demand (never at import), with its readers started in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import jinja2
import swagger_ui_bundle
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from zeek_pipeline import __version__
from zeek_pipeline.health import formatting
from zeek_pipeline.health.metrics import HealthMetrics
from zeek_pipeline.health.routes import api, pages, probes
from zeek_pipeline.health.state import HealthState, Sources, kafka_sources
from zeek_pipeline.settings import Settings

HERE = Path(__file__).resolve().parent


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(duration=formatting.duration, number=formatting.number, size=formatting.size,
                       clock=formatting.clock)
    return Jinja2Templates(env=env)


def create_app(settings: Settings, *, sources: Sources | None = None) -> FastAPI:
    """Kafka sources by default; tests pass fakes (and a clock) through `sources`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = HealthState(settings, sources or kafka_sources(settings))
        app.state.health = state
        app.state.metrics = HealthMetrics(state)
        state.start()
        try:
            yield
        finally:
            state.stop()

    # docs_url=None: FastAPI's default /docs loads Swagger UI from a CDN; clusters are often offline, so the
    # same page is served below with the Swagger UI assets of the swagger-ui-bundle package.
    app = FastAPI(title="zeek-pipeline health", version=__version__, lifespan=lifespan, docs_url=None,
                  description="State, lag and throughput of the zeek-pipeline services, read from the status "
                              "channel and Kafka. See docs/health-api.md.")
    app.state.settings = settings
    app.state.templates = _templates()
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(probes.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="zeek-pipeline health API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics: HealthMetrics | None = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            path = getattr(route, "path", None) or ("/static" if request.url.path.startswith("/static/") else "other")
            metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    return app
