"""create_app(): the FastAPI app, built on demand (never at import), with its readers started in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request, Response
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

    app = FastAPI(title="zeek-pipeline health", version=__version__, lifespan=lifespan,
                  description="State, lag and throughput of the zeek-pipeline services, read from the status "
                              "channel and Kafka. See docs/health-api.md.")
    app.state.settings = settings
    app.state.templates = _templates()
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(probes.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

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
