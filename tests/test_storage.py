"""The job store's bytes: a folder, and an S3 bucket on a real S3-compatible server (moto)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dotsocr.errors import ConfigError
from dotsocr.gateway.storage import FolderStorage, S3Storage, Storage, open_storage
from vllm_support.server import free_port


@pytest.fixture(params=["folder", "s3"])
def storage(request, tmp_path: Path) -> Storage:
    if request.param == "folder":
        return open_storage(tmp_path / "data", tmp_path / "cache")
    bucket = request.getfixturevalue("bucket")
    return open_storage(f"s3://{bucket}", tmp_path / "cache")


def test_put_get_round_trip(storage: Storage) -> None:
    storage.check()
    data = bytes(range(256)) * 17
    storage.put("jobs/a/inputs/0000", data)
    assert storage.get("jobs/a/inputs/0000") == data
    assert storage.get("jobs/a/inputs/0001") is None
    assert storage.get("jobs/zz/pages/0000-00000.json") is None


def test_overwrite(storage: Storage) -> None:
    storage.put("jobs/a/pages/0000-00000.json", b"old")
    assert storage.local("jobs/a/pages/0000-00000.json").read_bytes() == b"old"
    storage.put("jobs/a/pages/0000-00000.json", b"new")
    assert storage.get("jobs/a/pages/0000-00000.json") == b"new"
    assert storage.local("jobs/a/pages/0000-00000.json").read_bytes() == b"new"


def test_local_file(storage: Storage) -> None:
    storage.put("jobs/a/inputs/0000", b"%PDF-1.7 bytes")
    path = storage.local("jobs/a/inputs/0000")
    assert path.is_file()
    assert path.read_bytes() == b"%PDF-1.7 bytes"
    with pytest.raises(FileNotFoundError):
        storage.local("jobs/a/inputs/0001")


def test_remove_prefix(storage: Storage) -> None:
    names = ["jobs/a/inputs/0000", "jobs/a/pages/0000-00000.json", "jobs/ab/x", "jobs/b/y"]
    for name in names:
        storage.put(name, name.encode())
    cached = storage.local("jobs/a/inputs/0000")
    storage.remove("jobs/a/")
    assert storage.get("jobs/a/inputs/0000") is None
    assert storage.get("jobs/a/pages/0000-00000.json") is None
    assert not cached.exists()
    with pytest.raises(FileNotFoundError):
        storage.local("jobs/a/inputs/0000")
    assert storage.get("jobs/ab/x") == b"jobs/ab/x"
    assert storage.get("jobs/b/y") == b"jobs/b/y"
    storage.remove("jobs/a/")  # absent is fine
    storage.remove("jobs/nothing/")


def test_remove_without_slash_is_a_name_prefix(storage: Storage) -> None:
    for name in ["jobs/a/x", "jobs/ab/y", "jobs/b/z", "jobs/a0"]:
        storage.put(name, b"1")
    storage.remove("jobs/a")
    assert [storage.get(n) for n in ["jobs/a/x", "jobs/ab/y", "jobs/a0"]] == [None] * 3
    assert storage.get("jobs/b/z") == b"1"


@pytest.mark.parametrize("name", ["jobs/../../etc/x", "../x", "/etc/passwd", "jobs//x", ""])
def test_names_cannot_escape(storage: Storage, name: str) -> None:
    for call in (lambda: storage.put(name, b"x"), lambda: storage.get(name)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        storage.local(name)
    with pytest.raises(ValueError):
        storage.remove(name)


def test_folder_layout_and_check(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}/data", tmp_path / "cache")
    assert isinstance(storage, FolderStorage)
    storage.check()
    assert (tmp_path / "data").is_dir()
    storage.put("jobs/a/inputs/0000", b"x")
    assert (tmp_path / "data/jobs/a/inputs/0000").read_bytes() == b"x"
    assert storage.local("jobs/a/inputs/0000") == tmp_path / "data/jobs/a/inputs/0000"
    assert not (tmp_path / "cache").exists()  # a folder is used in place, never copied


def test_folder_check_not_writable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")  # fails even as root, unlike chmod
    storage = FolderStorage(tmp_path / "file" / "data")
    with pytest.raises(ConfigError, match="not writable") as caught:
        storage.check()
    assert str(tmp_path / "file" / "data") in str(caught.value)


def test_s3_local_downloads_once(s3, bucket: str, tmp_path: Path) -> None:
    storage = open_storage(f"s3://{bucket}", tmp_path / "cache")
    storage.put("jobs/a/inputs/0000", b"pdf")
    first = storage.local("jobs/a/inputs/0000")
    assert first.is_relative_to(tmp_path / "cache")
    stat = first.stat()
    s3.delete_object(Bucket=bucket, Key="jobs/a/inputs/0000")  # a second download would fail
    second = storage.local("jobs/a/inputs/0000")
    assert second == first
    assert second.read_bytes() == b"pdf"
    assert (second.stat().st_ino, second.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert [p.name for p in first.parent.iterdir()] == ["0000"]  # no temporary left behind
    storage.forget("jobs/a/")
    assert not first.exists()
    with pytest.raises(FileNotFoundError):
        storage.local("jobs/a/inputs/0000")


def test_s3_put_keep_needs_no_download(s3, bucket: str, tmp_path: Path) -> None:
    """An upload this machine reads next (a job's input) keeps its local copy."""
    storage = open_storage(f"s3://{bucket}", tmp_path / "cache")
    storage.put("jobs/a/inputs/0000", b"pdf", keep=True)
    assert s3.get_object(Bucket=bucket, Key="jobs/a/inputs/0000")["Body"].read() == b"pdf"
    s3.delete_object(Bucket=bucket, Key="jobs/a/inputs/0000")  # a download would fail
    assert storage.local("jobs/a/inputs/0000").read_bytes() == b"pdf"
    storage.put("jobs/a/inputs/0000", b"new")  # not kept: the stale copy goes
    assert storage.local("jobs/a/inputs/0000").read_bytes() == b"new"


def test_s3_prefix(s3, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="jobs/a/outside", Body=b"not ours")
    storage = open_storage(f"s3://{bucket}/team/dotsocr/", tmp_path / "cache")
    assert isinstance(storage, S3Storage)
    storage.check()
    storage.put("jobs/a/inputs/0000", b"x")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["jobs/a/outside", "team/dotsocr/jobs/a/inputs/0000"]
    assert storage.get("jobs/a/outside") is None
    storage.remove("jobs/a/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["jobs/a/outside"]


def test_s3_remove_in_batches(s3, bucket: str, tmp_path: Path) -> None:
    storage = open_storage(f"s3://{bucket}", tmp_path / "cache")
    assert isinstance(storage, S3Storage)
    storage.batch = 3  # so that 8 objects take several pages and deletes
    for i in range(8):
        storage.put(f"jobs/a/pages/{i:04d}", b"x")
    storage.put("jobs/b/keep", b"y")
    storage.remove("jobs/a/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["jobs/b/keep"]


def test_s3_missing_bucket(s3_endpoint: str, tmp_path: Path) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    storage = open_storage(f"s3://{missing}/pre", tmp_path / "cache")
    with pytest.raises(ConfigError) as caught:
        storage.check()
    message = str(caught.value)
    assert missing in message
    assert "does not exist" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=missing):
        storage.put("jobs/a/x", b"x")


def test_open_storage_forms(tmp_path: Path) -> None:
    assert isinstance(open_storage(str(tmp_path), tmp_path), FolderStorage)
    assert open_storage(tmp_path, tmp_path).url == str(tmp_path)
    for url in ["ftp://x", "file://host/x", "s3://", "s3:///prefix", ""]:
        with pytest.raises(ConfigError) as caught:
            open_storage(url, tmp_path)
        assert repr(url) in str(caught.value)


def test_s3_unreachable_or_no_credentials(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        open_storage("s3://somewhere", tmp_path).check()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    with pytest.raises(ConfigError, match="no AWS credentials") as caught:
        open_storage("s3://somewhere", tmp_path).check()
    assert "s3://somewhere" in str(caught.value)
