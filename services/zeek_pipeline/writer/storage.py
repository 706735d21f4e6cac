"""The writer's file system: local disk or S3, behind the few operations the commit protocol needs.

Paths are relative to the base (`output.parquet.base_path`), always with `/`. Every failure of the
underlying store (disk full, S3 unreachable, permission) surfaces as `StorageError`, which the writer
treats as "pause, keep the buffers, retry with backoff": nothing is ever dropped because of it.

Visibility. `publish(src, dst)` makes a file visible under its final name in one step:
- local disk: `rename(2)` inside one file system is atomic; the file was fsynced before, the directory
  is fsynced after, so a visible file is a complete, durable file;
- S3: a completed PUT is atomic (an object is there whole or not at all), so publishing is a server-side
  copy of the staged object to its final key, then a delete of the staged object.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from zeek_pipeline.settings import S3Settings
from zeek_pipeline.writer.s3_conditional import ConditionalPut, ConditionalPutError, conditional_put, endpoint_of


class StorageError(Exception):
    """The store refused an operation (ENOSPC, S3 down, ...); transient from the writer's point of view."""

    def __init__(self, message: str, *, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space


def as_storage_error(action: str, path: str, exc: BaseException) -> StorageError:
    """Wrap an OSError/ArrowException of the store; ENOSPC (errno or pyarrow's message) marks it `no_space`."""
    if isinstance(exc, StorageError):
        return exc
    no_space = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in str(exc)
    return StorageError(f"{action} {path}: {exc}", no_space=no_space)


_wrap = as_storage_error


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file found by `walk`: its path relative to the base, size in bytes, modification time (epoch s)."""

    rel: str
    size: int
    mtime: float


class Storage(Protocol):
    url: str

    def open_output(self, rel: str) -> pa.NativeFile:
        """A stream for a new file (replaces an existing one); close it, then `sync`."""

    def sync(self, rel: str) -> None:
        """Make a written file durable (fsync on disk; a no-op on S3, where close completes the upload)."""

    def put_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Write a small file durably and atomically; with `exclusive`, create it only if absent (atomically,
        against any other writer): False if it already exists."""

    def read_bytes(self, rel: str) -> bytes | None:
        """A whole small file, or None when it does not exist."""

    def list_names(self, rel_dir: str) -> list[str]:
        """File names directly under a directory (empty when the directory does not exist)."""

    def exists(self, rel: str) -> bool: ...

    def size(self, rel: str) -> int: ...

    def delete(self, rel: str) -> None:
        """Remove a file; a missing file is fine."""

    def prepare_dir(self, rel_dir: str) -> None:
        """Create a directory (and its parents) durably, before anything is published into it."""

    def publish(self, src: str, dst: str) -> None:
        """Atomically make `src` visible as `dst`; idempotent (done when `src` is gone and `dst` exists)."""

    def walk(self, rel_dir: str) -> list[FileEntry]:
        """Every file below a directory, recursively, with size and mtime (empty when it does not exist);
        one recursive listing on S3."""

    def arrow_path(self, rel: str) -> tuple[pafs.FileSystem, str]:
        """The pyarrow file system and path of a file, for readers (pyarrow.parquet, pyarrow.dataset)."""

    def delete_many(self, rels: Iterable[str]) -> None:
        """Remove several files as close together as the store allows (S3: one DeleteObjects per 1000
        keys); missing files are fine."""


class LocalStorage:
    """A directory on local disk (or any POSIX file system where rename is atomic)."""

    def __init__(self, base: Path | str) -> None:
        self.base = Path(base).absolute()
        self.url = str(self.base)
        self._known_dirs: set[Path] = set()
        # Temp names must differ between writers sharing the directory: a PID alone does not (PID 1 in
        # every container), so a random tag per instance is added.
        self.tag = f"{os.getpid()}-{secrets.token_hex(4)}"

    def path(self, rel: str) -> Path:
        return self.base / rel

    def _fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _makedirs(self, directory: Path) -> None:
        """mkdir -p, fsyncing each parent whose entry changed so the new folders survive a power loss."""
        if directory in self._known_dirs:
            return
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                pass
            self._fsync_dir(folder.parent)
        self._known_dirs.add(directory)

    def open_output(self, rel: str) -> pa.NativeFile:
        path = self.path(rel)
        try:
            self._makedirs(path.parent)
            return pa.OSFile(str(path), "wb")
        except OSError as exc:
            raise _wrap("open", str(path), exc) from exc

    def sync(self, rel: str) -> None:
        path = self.path(rel)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _wrap("fsync", str(path), exc) from exc

    def put_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> bool:
        path = self.path(rel)
        tmp = path.with_name(f".{path.name}.{self.tag}.tmp")
        try:
            self._makedirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, path)  # fails when the name exists: first writer wins
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
            self._fsync_dir(path.parent)
            return True
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _wrap("write", str(path), exc) from exc

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return self.path(rel).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _wrap("read", rel, exc) from exc

    def list_names(self, rel_dir: str) -> list[str]:
        try:
            return sorted(entry.name for entry in os.scandir(self.path(rel_dir)) if entry.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _wrap("list", rel_dir, exc) from exc

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def size(self, rel: str) -> int:
        try:
            return self.path(rel).stat().st_size
        except OSError as exc:
            raise _wrap("stat", rel, exc) from exc

    def delete(self, rel: str) -> None:
        try:
            self.path(rel).unlink(missing_ok=True)
        except OSError as exc:
            raise _wrap("delete", rel, exc) from exc

    def prepare_dir(self, rel_dir: str) -> None:
        try:
            self._makedirs(self.path(rel_dir))
        except OSError as exc:
            raise _wrap("mkdir", rel_dir, exc) from exc

    def publish(self, src: str, dst: str) -> None:
        source, target = self.path(src), self.path(dst)
        try:
            self._makedirs(target.parent)
            try:
                os.rename(source, target)
            except FileNotFoundError:
                if target.exists():
                    return  # published before a crash: roll-forward is idempotent
                raise
            self._fsync_dir(target.parent)
            if source.parent != target.parent:
                self._fsync_dir(source.parent)
        except OSError as exc:
            raise _wrap("publish", f"{src} -> {dst}", exc) from exc

    def walk(self, rel_dir: str) -> list[FileEntry]:
        root = self.path(rel_dir)
        found: list[FileEntry] = []
        try:
            for folder, _dirs, names in os.walk(root):
                for name in names:
                    path = Path(folder) / name
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue  # removed while listing
                    found.append(FileEntry(path.relative_to(self.base).as_posix(), st.st_size, st.st_mtime))
        except OSError as exc:
            raise _wrap("list", rel_dir, exc) from exc
        return sorted(found, key=lambda e: e.rel)

    def arrow_path(self, rel: str) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self.path(rel))

    def delete_many(self, rels: Iterable[str]) -> None:
        folders: set[Path] = set()
        for rel in rels:
            try:
                self.path(rel).unlink(missing_ok=True)
            except OSError as exc:
                raise _wrap("delete", rel, exc) from exc
            folders.add(self.path(rel).parent)
        for folder in folders:
            try:
                self._fsync_dir(folder)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _wrap("fsync", str(folder), exc) from exc


class S3Storage:
    """`s3://bucket/prefix` through pyarrow's S3 file system (AWS SDK: retries, multipart uploads); exclusive
    writes (commit records) through a conditional PUT (`s3_conditional`)."""

    def __init__(self, url: str, filesystem: pafs.FileSystem, conditional: ConditionalPut | None = None) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
        self.prefix = parts.path.strip("/")
        self.fs = filesystem
        self.conditional = conditional

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def open_output(self, rel: str) -> pa.NativeFile:
        try:
            return self.fs.open_output_stream(self.path(rel))
        except OSError as exc:
            raise _wrap("open", self.path(rel), exc) from exc

    def sync(self, rel: str) -> None:
        return None  # closing the stream completed the (multipart) upload

    def put_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> bool:
        if exclusive:
            if self.conditional is None:
                raise ValueError("exclusive S3 writes need a conditional PUT client (open_storage builds one)")
            key = f"{self.prefix}/{rel}" if self.prefix else rel
            try:
                return self.conditional.put_if_absent(key, data)
            except ConditionalPutError as exc:
                raise _wrap("write", self.path(rel), exc) from exc
        try:
            with self.fs.open_output_stream(self.path(rel)) as out:
                out.write(data)
            return True
        except OSError as exc:
            raise _wrap("write", self.path(rel), exc) from exc

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.path(rel)) as stream:
                data: bytes = stream.read()
                return data
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "NoSuchKey" in str(exc) or "not found" in str(exc).lower():
                return None
            raise _wrap("read", self.path(rel), exc) from exc

    def list_names(self, rel_dir: str) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel_dir), allow_not_found=True))
        except OSError as exc:
            raise _wrap("list", self.path(rel_dir), exc) from exc
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.File)

    def exists(self, rel: str) -> bool:
        try:
            return bool(self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File)
        except OSError as exc:
            raise _wrap("stat", self.path(rel), exc) from exc

    def size(self, rel: str) -> int:
        try:
            return int(self.fs.get_file_info(self.path(rel)).size or 0)
        except OSError as exc:
            raise _wrap("stat", self.path(rel), exc) from exc

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            return
        except OSError as exc:
            if "not found" in str(exc).lower() or "NoSuchKey" in str(exc):
                return
            raise _wrap("delete", self.path(rel), exc) from exc

    def prepare_dir(self, rel_dir: str) -> None:
        return None  # S3 has no directories

    def publish(self, src: str, dst: str) -> None:
        try:
            if not self.exists(src):
                if self.exists(dst):
                    return
                raise StorageError(f"publish {src} -> {dst}: neither the staged nor the final object exists")
            self.fs.copy_file(self.path(src), self.path(dst))  # server-side CopyObject: atomic
            self.fs.delete_file(self.path(src))
        except StorageError:
            raise
        except OSError as exc:
            raise _wrap("publish", f"{src} -> {dst}", exc) from exc

    def walk(self, rel_dir: str) -> list[FileEntry]:
        root = self.path(rel_dir).rstrip("/")
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
        except OSError as exc:
            raise _wrap("list", root, exc) from exc
        found = [FileEntry(info.path[len(self.root) + 1:], int(info.size or 0),
                           info.mtime.timestamp() if info.mtime is not None else 0.0)
                 for info in infos if info.type == pafs.FileType.File]
        return sorted(found, key=lambda e: e.rel)

    def arrow_path(self, rel: str) -> tuple[pafs.FileSystem, str]:
        return self.fs, self.path(rel)

    def delete_many(self, rels: Iterable[str]) -> None:
        names = list(rels)
        if self.conditional is None:
            for rel in names:
                self.delete(rel)
            return
        keys = [f"{self.prefix}/{rel}" if self.prefix else rel for rel in names]
        try:
            for start in range(0, len(keys), 1000):
                self.conditional.delete_objects(keys[start:start + 1000])
        except ConditionalPutError as exc:
            raise _wrap("delete", f"{len(keys)} objects under {self.url}", exc) from exc


def s3_filesystem(settings: S3Settings, environ: Mapping[str, str] | None = None) -> pafs.S3FileSystem:
    """Endpoint, region and credentials from `output.parquet.s3`, else the AWS environment/credential chain."""
    where = endpoint_of(settings, environ)
    kwargs: dict[str, object] = {
        "region": where.region,
        "connect_timeout": 5,
        "request_timeout": 30,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        "scheme": where.scheme,
    }
    if where.netloc:
        kwargs["endpoint_override"] = where.netloc
    if settings.access_key is not None and settings.secret_key is not None:
        kwargs["access_key"] = settings.access_key.get_secret_value()
        kwargs["secret_key"] = settings.secret_key.get_secret_value()
    return pafs.S3FileSystem(**kwargs)


def open_storage(base_path: str, s3: S3Settings, environ: Mapping[str, str] | None = None) -> Storage:
    """`s3://bucket/prefix` → S3Storage, anything else → a local directory."""
    if base_path.startswith("s3://"):
        parts = urlsplit(base_path)
        if not parts.netloc:
            raise ValueError(f"output.parquet.base_path {base_path!r}: no bucket")
        return S3Storage(base_path, s3_filesystem(s3, environ), conditional_put(parts.netloc, s3, environ))
    return LocalStorage(base_path)
