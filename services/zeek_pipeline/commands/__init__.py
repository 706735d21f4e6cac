"""Offline `zeek-pipeline` subcommands (each module: `add_arguments(parser)` and `run(args) -> int`)."""
