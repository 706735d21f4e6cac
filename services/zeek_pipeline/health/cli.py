"""`zeek-pipeline health --config config/config.json`: the dashboard and JSON API under uvicorn."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="config.json or its directory (default: $ZEEK_PIPELINE_CONFIG or ./config)")
    parser.add_argument("--host", default=None, help="listen address (default: health.host)")
    parser.add_argument("--port", type=int, default=None, help="listen port (default: health.port)")


def run(args: argparse.Namespace) -> int:
    # Heavy imports stay here so other subcommands never pay for FastAPI and uvicorn.
    import logging
    import signal
    from types import FrameType

    import uvicorn

    from zeek_pipeline.health.app import create_app
    from zeek_pipeline.runtime.logging import setup_logging
    from zeek_pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        logging.getLogger("zeek_pipeline.health").error("%s", exc)
        return 2
    setup_logging(settings.log, "health")

    def as_health(record: logging.LogRecord) -> bool:
        record.component = "health"  # uvicorn's logger names ("uvicorn.error") are not components
        return True

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(as_health)
    host = args.host or settings.health.host
    port = settings.health.port if args.port is None else args.port
    log = logging.getLogger("zeek_pipeline.health")
    log.info("health service starting", extra={"context": {"url": f"http://{host}:{port}/"}})

    def stopped(signum: int, _frame: FrameType | None) -> None:
        log.info("health service stopped", extra={"context": {"signal": signal.Signals(signum).name}})

    # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown, lifespan exit) and then re-raises the signal to
    # the handler it found; with this one in place a clean shutdown exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    # log_config=None keeps our logging setup.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)
    return 0
