"""Finding and reading the JSON config files (config.json, normalization.json, schema.json).

All three loaders go through these two functions, so a missing file or bad JSON is reported in the same
words, naming the file, whichever file it is; each loader passes its own error class (SettingsError,
ConfigError, SchemaError) so its callers keep catching what they caught before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def config_file(path: Path | str, name: str) -> Path:
    """`path` is the file itself or the directory holding it as `name`."""
    file = Path(path)
    return file / name if file.is_dir() else file


def read_json(file: Path, error: type[ValueError]) -> Any:
    """The parsed content of `file`; a missing file or invalid JSON raises `error` naming the file."""
    try:
        return orjson.loads(file.read_bytes())
    except FileNotFoundError as exc:
        raise error(f"{file}: file not found") from exc
    except orjson.JSONDecodeError as exc:
        raise error(f"{file}: not valid JSON: {exc}") from exc
