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
    host = args.host or settings.health.host
    port = settings.health.port if args.port is None else args.port
    logging.getLogger("zeek_pipeline.health").info(
        "health service starting", extra={"context": {"url": f"http://{host}:{port}/"}})
    # log_config=None keeps our logging setup; uvicorn handles SIGTERM/SIGINT and runs the lifespan shutdown.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)
    return 0
