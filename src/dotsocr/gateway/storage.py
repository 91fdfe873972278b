"""Where a job's bytes live: a folder (local or shared, NFS etc.) or an S3-compatible bucket.

Names are relative POSIX paths that we make (``jobs/<id>/inputs/0000``); a name is written
whole or not at all, so a reader on another machine never sees half of it. S3 objects are
copied to a cache folder when a file on this machine is needed (a PDF renderer wants a
path); the copy is trusted afterwards, since we write each name once, or overwrite it only
from the machine whose copy we then drop.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from dotsocr.errors import ConfigError, DotsOCRError, OutputError
from dotsocr.output import write_atomic

try:  # the cluster extra; folders need none of it
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
except ImportError:  # pragma: no cover - exercised only without the extra
    boto3 = None

FORMS = "a folder path, file:///absolute/path or s3://bucket[/prefix]"


class Storage(Protocol):
    url: str  # where it keeps things, for messages

    def check(self) -> None:
        """Fail now, with a ConfigError saying what to do, if we cannot use the storage."""

    def put(self, name: str, data: bytes, *, keep: bool = False) -> None:
        """Store ``data``; readers see all of it or none of it. ``keep``: this machine
        reads it next, so keep the local copy ``local`` would fetch."""

    def get(self, name: str) -> bytes | None:
        """The bytes stored under ``name``; None when absent."""

    def local(self, name: str) -> Path:
        """A file on this machine holding the bytes; FileNotFoundError when absent."""

    def remove(self, prefix: str) -> None:
        """Delete every name starting with ``prefix``; none is fine."""

    def forget(self, prefix: str) -> None:
        """Drop this machine's cached copies of names starting with ``prefix``."""


def _checked(name: str, *, prefix: bool = False) -> str:
    """Names are ours, but a bug must not reach outside the root (defence in depth)."""
    parts = name.split("/")
    if prefix and len(parts) > 1 and parts[-1] == "":
        parts.pop()  # "jobs/abc/"
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"storage name {name!r} is not a relative path of plain segments")
    return name


def _remove_local(root: Path, prefix: str) -> None:
    """Delete what a name prefix covers in a folder: the tree for ``a/``; for ``a/b``, every
    entry of ``a`` whose name starts with ``b`` (as S3 would)."""
    if prefix.endswith("/"):
        shutil.rmtree(root / prefix, ignore_errors=True)
        return
    folder, _, start = prefix.rpartition("/")
    try:
        entries = list((root / folder).iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(start):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


class FolderStorage:
    """Files under ``root``, written atomically (temporary file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root, prefix=".check-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"storage folder {self.root} is not writable ({exc.strerror or exc}): "
                "create it with write permission, or set another storage URL"
            ) from None

    def put(self, name: str, data: bytes, *, keep: bool = False) -> None:
        write_atomic(self.root / _checked(name), data)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / _checked(name)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def local(self, name: str) -> Path:
        path = self.root / _checked(name)
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "not in storage", str(path))
        return path

    def remove(self, prefix: str) -> None:
        _remove_local(self.root, _checked(prefix, prefix=True))

    def forget(self, prefix: str) -> None:
        _checked(prefix, prefix=True)  # nothing cached: the files are the storage


# S3 error codes that mean the setting is wrong rather than the request unlucky.
_NO_BUCKET = {"NoSuchBucket", "404"}  # head_bucket answers with the bare status
_REFUSED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}


class S3Storage:
    """Objects in an S3-compatible bucket, under an optional key prefix.

    The endpoint, region and credentials come from the standard AWS settings
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``~/.aws/config``...).
    """

    batch = 1000  # keys per delete_objects, S3's limit

    def __init__(self, url: str, cache: Path) -> None:
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        bad = parts.scheme != "s3" or not self.bucket or parts.query or parts.fragment
        try:
            _checked(self.prefix or "x")
        except ValueError:
            bad = True
        if bad:
            raise ConfigError(f"storage URL {url!r} is not of the form s3://bucket[/prefix]")
        if boto3 is None:
            raise ConfigError(f"{url} needs boto3: pip install 'dotsocr[cluster]'")
        if self.prefix:
            self.prefix += "/"
        # Per bucket and prefix, so a changed setting never serves another bucket's copies.
        self.cache = cache / self.bucket / self.prefix
        # A session of its own: boto3's default one is not thread-safe; clients are.
        self.client: Any = boto3.session.Session().client(
            "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"})
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _error(self, exc: Exception, doing: str) -> DotsOCRError:
        """One line saying what to do, for a failure of boto3."""
        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"{self.url}: no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NO_BUCKET:
                return ConfigError(
                    f"{self.url}: bucket {self.bucket!r} does not exist: create it, "
                    "or fix the storage URL (DOTSOCR_STORAGE_URL)"
                )
            if code in _REFUSED:
                return ConfigError(
                    f"{self.url}: S3 refused access to bucket {self.bucket!r} ({code}): check "
                    "the AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the bucket's policy"
                )
        message = " ".join(str(exc).split())
        return OutputError(f"{self.url}: cannot {doing}: {message}")

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            error = self._error(exc, "reach the bucket")
            if not isinstance(error, ConfigError):  # unreachable endpoint, say
                error = ConfigError(f"{error}: check AWS_ENDPOINT_URL and the network")
            raise error from None
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{self.url}: cannot create the cache folder {self.cache}: {exc.strerror or exc}"
            ) from None

    def put(self, name: str, data: bytes, *, keep: bool = False) -> None:
        key = self._key(_checked(name))
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"write {key}") from None
        if keep:
            write_atomic(self.cache / name, data)
        else:
            (self.cache / name).unlink(missing_ok=True)  # our copy of the old bytes

    def _fetch(self, key: str) -> Any | None:
        """The open body of an object; None when absent."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return None
            raise self._error(exc, f"read {key}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"read {key}") from None

    def get(self, name: str) -> bytes | None:
        key = self._key(_checked(name))
        body = self._fetch(key)
        if body is None:
            return None
        try:
            with body:
                return body.read()
        except BotoCoreError as exc:
            raise self._error(exc, f"read {key}") from None

    def local(self, name: str) -> Path:
        """The cached copy, downloaded on first use. Concurrent callers may both download,
        but each renames a whole file into place, so none sees a partial one."""
        path = self.cache / _checked(name)
        if path.is_file():
            return path
        key = self._key(name)
        body = self._fetch(key)
        if body is None:
            raise FileNotFoundError(errno.ENOENT, "not in storage", f"s3://{self.bucket}/{key}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with body, os.fdopen(fd, "wb") as fh:
                for chunk in body.iter_chunks(1 << 20):
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())  # never a renamed but empty copy after a power cut
            os.replace(tmp, path)
        except BotoCoreError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise self._error(exc, f"read {key}") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def remove(self, prefix: str) -> None:
        start = self._key(_checked(prefix, prefix=True))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start, PaginationConfig={"PageSize": self.batch}
        )
        try:
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                for i in range(0, len(keys), self.batch):
                    answer = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys[i : i + self.batch]}
                    )
                    if answer.get("Errors"):
                        first = answer["Errors"][0]
                        raise OutputError(
                            f"{self.url}: cannot delete {first.get('Key')}: "
                            f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                        )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"delete {start}*") from None
        self.forget(prefix)

    def forget(self, prefix: str) -> None:
        _remove_local(self.cache, _checked(prefix, prefix=True))


def open_storage(url: str | Path, cache: Path) -> Storage:
    """A path or file:// URL: FolderStorage; s3://bucket[/prefix]: S3Storage (copies of
    objects under ``cache``). Anything else: ConfigError."""
    if isinstance(url, Path):
        return FolderStorage(url)
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3Storage(url, cache)
    if url and not parts.scheme:
        return FolderStorage(Path(url).expanduser())
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return FolderStorage(Path(unquote(parts.path)))
    raise ConfigError(f"storage URL {url!r} is not one we use: give {FORMS}")
