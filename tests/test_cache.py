"""The model-cache analyzer over a Hugging Face cache built on disk with the real layout.

Every cache here is what huggingface_hub leaves behind: ``models--org--name/blobs/<hash>``,
``snapshots/<40-hex revision>/<file>`` as relative symlinks into ``../../blobs``, and
``refs/main`` holding the revision; weights are real safetensors files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dotsocr.errors import ConfigError, ServeError
from dotsocr.serve import cache

REV = "a" * 40
OLD_REV = "b" * 40
DOTS = "rednote-hilab/dots.ocr"
# dots.ocr's own text-model settings: 28 layers, 2 KV heads, head dim 1536 / 12 = 128.
DOTS_CONFIG = {
    "architectures": ["DotsOCRForCausalLM"],
    "model_type": "dots_ocr",
    "auto_map": {"AutoModelForCausalLM": "modeling_dots_ocr_vllm.DotsOCRForCausalLM"},
    "hidden_size": 1536,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "num_hidden_layers": 28,
    "vision_config": {"embed_dim": 1536, "num_hidden_layers": 42},
}
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
SHARD_TENSORS = (
    {"model.embed_tokens.weight": np.zeros((64, 32), np.float16)},  # 4,096 bytes
    {"lm_head.weight": np.ones((16, 16), np.float32), "model.norm.weight": np.ones(8, np.float32)},
)
WEIGHT_BYTES = 64 * 32 * 2 + 16 * 16 * 4 + 8 * 4


def safetensors_bytes(tmp_path: Path, tensors: dict[str, np.ndarray]) -> bytes:
    path = tmp_path / "made.safetensors"
    save_file(tensors, str(path))
    return path.read_bytes()


def model_files(tmp_path: Path, config: dict | None = None) -> dict[str, bytes]:
    """config.json, the index and two real shards, as a download of dots.ocr would have them."""
    weight_map = {name: SHARDS[i] for i, part in enumerate(SHARD_TENSORS) for name in part}
    index = {"metadata": {"total_size": WEIGHT_BYTES}, "weight_map": weight_map}
    files = {
        "config.json": json.dumps(config or DOTS_CONFIG).encode(),
        cache.INDEX_FILE: json.dumps(index).encode(),
    }
    for shard, tensors in zip(SHARDS, SHARD_TENSORS, strict=True):
        files[shard] = safetensors_bytes(tmp_path, tensors)
    return files


def hf_repo(
    hub: Path, repo_id: str, files: dict[str, bytes], rev: str = REV, ref: str | None = "main"
) -> Path:
    """Lay out files the way huggingface_hub does; return the snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / rev
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(rev)
    return snapshot


def dotsocr(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **(env or {})},
    )


def only_entry(report: cache.CacheReport) -> cache.ModelEntry:
    assert len(report.models) == 1, report.models
    return report.models[0]


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path


def test_complete_two_shard_model(tmp_path, hub):
    files = model_files(tmp_path)
    snapshot = hf_repo(hub, DOTS, files)

    result = dotsocr("cache", "--cache-dir", hub, "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["complete"] is True
    (entry,) = report["models"]
    assert entry["model_id"] == DOTS and entry["source"] == "hf-cache"
    assert entry["revision"] == REV and entry["refs"] == ["main"]
    assert Path(entry["path"]) == snapshot.resolve()
    assert entry["size_bytes"] == sum(len(data) for data in files.values())
    assert entry["architectures"] == ["DotsOCRForCausalLM"] and entry["model_type"] == "dots_ocr"
    assert entry["vllm"] == "yes" and "trust-remote-code" in entry["vllm_hint"]
    assert entry["weight_bytes"] == WEIGHT_BYTES
    assert entry["kv_bytes_per_token"] == 28 * 1024  # 2 x 28 layers x 2 heads x 128 x 2 bytes
    assert entry["estimated_gpu_bytes"] == WEIGHT_BYTES + 28 * 1024 * 32_768 + int(1.5 * 1024**3)
    assert entry["problems"] == [] and entry["complete"] is True


def test_table_lists_the_model_and_its_numbers(tmp_path, hub):
    hf_repo(hub, DOTS, model_files(tmp_path))

    result = dotsocr("cache", "--cache-dir", hub)

    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if DOTS in line)
    for cell in (REV[:12] + " (main)", "DotsOCRForCausalLM", "yes", "2.4 GiB"):
        assert cell in row
    assert "problem" not in result.stdout


def test_missing_shard_is_named_and_fails(tmp_path, hub):
    files = model_files(tmp_path)
    del files[SHARDS[1]]  # the index names it; the download stopped before it
    hf_repo(hub, DOTS, files)

    result = dotsocr("cache", "--cache-dir", hub)

    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        f"problem: {DOTS}@{REV[:12]}: 1 of 2 weight shard(s) missing: {SHARDS[1]}: "
        f"run `hf download {DOTS}` again"
    ]
    assert "NO" in next(line for line in result.stdout.splitlines() if DOTS in line)


def test_truncated_shard_is_unreadable(tmp_path, hub):
    files = model_files(tmp_path)
    files[SHARDS[0]] = files[SHARDS[0]][:-100]  # a download cut short
    hf_repo(hub, DOTS, files)

    entry = only_entry(cache.scan(hub))

    assert not entry.complete and entry.estimated_gpu_bytes is None
    (problem,) = entry.problems
    assert problem.startswith(f"{SHARDS[0]} unreadable (") and "not fully covered" in problem


def test_sharded_files_without_index_must_all_be_there(tmp_path, hub):
    files = model_files(tmp_path)
    del files[cache.INDEX_FILE], files[SHARDS[0]]
    hf_repo(hub, DOTS, files)

    (problem,) = only_entry(cache.scan(hub)).problems

    assert problem == f"1 of 2 weight shard(s) missing: {SHARDS[0]}"


def test_interrupted_download_is_reported(tmp_path, hub):
    hf_repo(hub, DOTS, model_files(tmp_path))
    partial = hub / f"models--{DOTS.replace('/', '--')}" / "blobs" / f"{'c' * 64}.incomplete"
    with partial.open("wb") as handle:
        handle.truncate(2_500_000)
    never = hub / "models--org--never" / "blobs"
    never.mkdir(parents=True)
    (never / f"{'d' * 64}.incomplete").write_bytes(b"x" * 1000)

    result = dotsocr("cache", "--cache-dir", hub)

    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        "problem: org/never: no file finished downloading yet: run `hf download org/never` again",
        "problem: org/never: download interrupted: 1 partial file(s), 1.0 kB: "
        "run `hf download org/never` again to finish",
        f"problem: {DOTS}@{REV[:12]}: download interrupted: 1 partial file(s), 2.5 MB: "
        f"run `hf download {DOTS}` again to finish",
    ]
    assert cache.local_path(DOTS, hub).name == REV  # the snapshot itself is whole
    with pytest.raises(ServeError, match="no file finished downloading yet"):
        cache.local_path("org/never", hub)


def test_config_missing_or_broken_is_incomplete(tmp_path, hub):
    files = model_files(tmp_path)
    del files["config.json"]
    hf_repo(hub, "org/no-config", files)
    hf_repo(hub, "org/bad-config", {**files, "config.json": b'{"architectures": ['})

    broken, missing = cache.scan(hub).models

    assert missing.problems == ("config.json missing",)
    assert broken.problems[0].startswith("config.json unreadable (")
    assert broken.vllm == "unknown" and broken.vllm_hint == "no readable config.json"


def test_blob_deleted_under_a_snapshot_is_reported(tmp_path, hub):
    snapshot = hf_repo(hub, DOTS, model_files(tmp_path))
    (snapshot / SHARDS[1]).resolve().unlink()

    entry = only_entry(cache.scan(hub))

    assert entry.revision is None
    (problem,) = entry.problems
    assert problem.startswith("cache folder damaged (Blob missing (broken symlink)")


def test_unknown_architecture(tmp_path, hub):
    config = {**DOTS_CONFIG, "architectures": ["FancyOCRModel"]}
    del config["auto_map"]
    hf_repo(hub, "org/fancy", model_files(tmp_path, config))

    result = dotsocr("cache", "--cache-dir", hub, "--json")

    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["models"]
    assert entry["vllm"] == "unknown"
    assert entry["vllm_hint"].startswith("FancyOCRModel is not in dotsocr's list")
    assert cache.VLLM_DOCS in entry["vllm_hint"]


def local_model(folder: Path, tmp_path: Path) -> Path:
    folder.mkdir(parents=True)
    for name, data in model_files(tmp_path).items():
        (folder / name).write_bytes(data)
    return folder


def test_local_folders_from_path_and_env(tmp_path, hub):
    single = local_model(tmp_path / "single", tmp_path)
    shelf = tmp_path / "shelf"
    local_model(shelf / "one", tmp_path)
    local_model(shelf / "two", tmp_path)
    (shelf / "not-a-model").mkdir()

    result = dotsocr(
        "cache", "--cache-dir", hub, "--path", single, "--json", env={"DOTSOCR_MODEL_DIRS": shelf}
    )

    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)["models"]
    assert [m["model_id"] for m in models] == [str(single), str(shelf / "one"), str(shelf / "two")]
    for entry in models:
        assert entry["source"] == "folder" and entry["revision"] is None
        assert entry["weight_bytes"] == WEIGHT_BYTES and entry["complete"] is True
        assert entry["size_bytes"] == sum(f.stat().st_size for f in Path(entry["path"]).iterdir())


def test_local_folder_with_missing_shard(tmp_path, hub):
    folder = local_model(tmp_path / "m", tmp_path)
    (folder / SHARDS[0]).unlink()

    (entry,) = cache.scan(hub, [folder]).models

    assert entry.problems == (f"1 of 2 weight shard(s) missing: {SHARDS[0]}",)
    assert entry.remedy == "copy or download the model into this folder again"


def test_missing_path_is_a_usage_error(hub, tmp_path):
    result = dotsocr("cache", "--cache-dir", hub, "--path", tmp_path / "nope")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'nope'}: no such folder: check --path and DOTSOCR_MODEL_DIRS"
    )


def test_empty_or_absent_cache_is_not_an_error(tmp_path, hub):
    for place in (hub, tmp_path / "absent"):
        result = dotsocr("cache", "--cache-dir", place)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"no models in {place}"


def test_model_prints_only_the_snapshot_path(tmp_path, hub):
    snapshot = hf_repo(hub, DOTS, model_files(tmp_path))

    result = dotsocr("cache", "--cache-dir", hub, "--model", DOTS)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{snapshot.resolve()}\n" and result.stderr == ""


def test_model_incomplete_or_absent_fails_in_one_line(tmp_path, hub):
    files = model_files(tmp_path)
    del files[SHARDS[1]]
    hf_repo(hub, DOTS, files)

    for model, words in (
        (DOTS, [f"{DOTS}@{REV[:12]} is incomplete", SHARDS[1], f"hf download {DOTS}"]),
        ("org/absent", ["not in the Hugging Face cache at", "`hf download org/absent`"]),
    ):
        result = dotsocr("cache", "--cache-dir", hub, "--model", model)
        assert result.returncode == 1 and result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and all(word in line for word in words), line


def test_local_path_prefers_main_then_any_complete_revision(tmp_path, hub):
    files = model_files(tmp_path)
    old = hf_repo(hub, DOTS, files, rev=OLD_REV, ref=None)
    main = hf_repo(hub, DOTS, files, rev=REV)
    assert cache.local_path(DOTS, hub) == main.resolve()

    (main / SHARDS[0]).unlink()  # main now lacks a shard; the detached one is whole
    assert cache.local_path(DOTS, hub) == old.resolve()


def test_local_path_of_a_folder(tmp_path):
    folder = local_model(tmp_path / "m", tmp_path)
    assert cache.local_path(str(folder)) == folder

    (folder / "config.json").unlink()
    with pytest.raises(ServeError, match=r"has no config\.json"):
        cache.local_path(str(folder))
    with pytest.raises(ServeError, match="not a Hugging Face model id"):
        cache.local_path(str(tmp_path / "nowhere"))


def test_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        cache.scan(tmp_path / "file")


def test_kv_cache_reads_nested_text_configs():
    assert cache.kv_bytes_per_token(DOTS_CONFIG) == 28_672
    nested = {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "text_config": {
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "hidden_size": 4096,
            "head_dim": 128,
        },
    }
    assert cache.kv_bytes_per_token(nested) == 2 * 36 * 8 * 128 * 2
    assert cache.kv_bytes_per_token({"architectures": ["X"]}) is None
    assert cache.estimate_gpu_bytes(1000, None) is None


def test_dots_ocr_real_size_is_sane():
    # about 3.0B parameters in bf16 (~5.7 GiB) + 32k tokens of KV (0.875 GiB) + 1.5 GiB
    weights = 3_040_000_000 * 2
    estimate = cache.estimate_gpu_bytes(weights, cache.kv_bytes_per_token(DOTS_CONFIG))
    assert estimate is not None and 8.0 < estimate / 1024**3 < 8.2
