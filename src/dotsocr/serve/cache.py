"""Which models are on this disk, whether they are whole, whether vLLM can serve them, and
roughly how much GPU memory that takes.

The Hugging Face cache is read with huggingface_hub's own scanner (``scan_cache_dir``), so
its layout rules stay theirs; folders the user names are read directly. Weight files are
checked with the safetensors reader, which compares each header with the file's size.
Nothing here prints: ``dotsocr cache`` draws the report.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from dotsocr.errors import ConfigError, ServeError

GIB = 1024**3
KV_CONTEXT_TOKENS = 32_768  # one long context (`dotsocr plan` gives dots.ocr at most 31,744)
KV_BYTES_PER_VALUE = 2  # bf16 / fp16 KV cache
RUNTIME_OVERHEAD_BYTES = int(1.5 * GIB)  # activations, CUDA context, cuda graphs: a round guess
INDEX_FILE = "model.safetensors.index.json"
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".gguf")
LOCAL_DIR_PARTIALS = ".cache/huggingface/download/"  # where `hf download --local-dir` resumes
TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d+)-of-(?P<total>\d+)\.safetensors$")
VLLM_DOCS = "https://docs.vllm.ai/en/latest/models/supported_models.html"

# Architecture names (config.json "architectures") that vLLM serves natively, taken from
# vLLM's supported-models documentation (VLLM_DOCS): the OCR and vision-language models
# people use for documents, then the common text-only families. A name missing here may
# still work (newer vLLM, or the Transformers fallback); the verdict is then "unknown".
# Checked against the registry of vLLM 0.32.0 (vllm/model_executor/models/registry.py).
VLLM_ARCHITECTURES = frozenset(
    {
        # document OCR and vision-language
        "DotsOCRForCausalLM",
        "DeepseekOCRForCausalLM",
        "DeepseekOCR2ForCausalLM",
        "PaddleOCRVLForConditionalGeneration",
        "LightOnOCRForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen3VLForConditionalGeneration",
        "Qwen3VLMoeForConditionalGeneration",
        "Phi3VForCausalLM",
        "Phi4MMForCausalLM",
        "LlavaForConditionalGeneration",
        "LlavaNextForConditionalGeneration",
        "LlavaOnevisionForConditionalGeneration",
        "Idefics3ForConditionalGeneration",
        "SmolVLMForConditionalGeneration",
        "InternVLChatModel",
        "InternVLForConditionalGeneration",
        "MiniCPMV",
        "Gemma3ForConditionalGeneration",
        "Mistral3ForConditionalGeneration",
        "PixtralForConditionalGeneration",
        "Glm4vForConditionalGeneration",
        "KimiVLForConditionalGeneration",
        # text only
        "Qwen2ForCausalLM",
        "Qwen2MoeForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen3MoeForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Phi3ForCausalLM",
        "DeepseekV2ForCausalLM",
        "DeepseekV3ForCausalLM",
        "GPT2LMHeadModel",
    }
)


class PartialDownload(BaseModel):
    """Files an interrupted download left behind (``blobs/*.incomplete``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: int
    bytes: int


class ModelEntry(BaseModel):
    """One model revision (Hugging Face cache) or one model folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["hf-cache", "folder"]
    model_id: str  # org/name, or the folder's absolute path
    path: Path  # the snapshot folder, or the model folder
    revision: str | None = None
    refs: tuple[str, ...] = ()
    size_bytes: int = 0
    last_modified: datetime | None = None
    architectures: tuple[str, ...] = ()
    model_type: str | None = None
    vllm: Literal["yes", "unknown"] = "unknown"
    vllm_hint: str = ""
    weight_bytes: int = 0
    kv_bytes_per_token: int | None = None
    estimated_gpu_bytes: int | None = None
    problems: tuple[str, ...] = ()  # about the files in `path`; they block serving
    partial: PartialDownload | None = None  # about the repo; reported, does not block serving
    remedy: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        return not self.problems and self.partial is None

    @property
    def label(self) -> str:
        return f"{self.model_id}@{self.revision[:12]}" if self.revision else self.model_id

    def problem_lines(self) -> list[str]:
        """Each problem as one line that names the model and says what to do."""
        lines = [f"{self.label}: {problem}: {self.remedy}" for problem in self.problems]
        if self.partial:
            size = self.partial.bytes
            shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
            lines.append(
                f"{self.label}: download interrupted: {self.partial.files} partial file(s), "
                f"{shown}: {self.remedy} to finish"
            )
        return lines


class CacheReport(BaseModel):
    """Everything ``dotsocr cache`` shows: where it looked and what it found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cache_dir: Path
    folders: tuple[Path, ...] = ()
    models: tuple[ModelEntry, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        return all(model.complete for model in self.models)


def default_cache_dir() -> Path:
    """The Hugging Face cache huggingface_hub uses here (HF_HUB_CACHE, HF_HOME, ~/.cache)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def folders_from_env(value: str | None) -> list[Path]:
    """The folders in a ``DOTSOCR_MODEL_DIRS`` value (separated like PATH)."""
    return [Path(part).expanduser() for part in (value or "").split(os.pathsep) if part]


def scan(cache_dir: str | Path | None = None, folders: Iterable[str | Path] = ()) -> CacheReport:
    """Report every model in the Hugging Face cache and in ``folders``.

    Args:
        cache_dir: the Hugging Face hub cache; default: huggingface_hub's own.
        folders: a model folder (with config.json) or a folder of model folders, each.

    Returns:
        A report; an absent or empty cache gives no models, not an error.

    Raises:
        ConfigError: ``cache_dir`` is a file, or one of ``folders`` does not exist.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    extra = list(dict.fromkeys(Path(folder).expanduser() for folder in folders))
    for folder in extra:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such folder: check --path and DOTSOCR_MODEL_DIRS")
    cached = sorted(_hf_entries(root), key=lambda entry: entry.model_id)  # stable: main first
    models = [*cached, *(entry for folder in extra for entry in _folder_entries(folder))]
    return CacheReport(cache_dir=root, folders=tuple(extra), models=tuple(models))


def local_path(model_id: str, cache_dir: str | Path | None = None) -> Path:
    """The folder to serve ``model_id`` from without the network.

    Args:
        model_id: ``org/name`` as on the Hugging Face Hub, or a model folder.
        cache_dir: the Hugging Face hub cache; default: huggingface_hub's own.

    Returns:
        A folder given as is (once it has config.json), else the snapshot folder of a
        complete cached revision, preferring the one ``refs/main`` points at.

    Raises:
        ServeError: the model is not cached, or no cached revision is complete.

    Example:
        ``vllm serve "$(dotsocr cache --model rednote-hilab/dots.ocr)"``
    """
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ServeError(
                f"{folder} has no config.json: pass the folder that holds the model's "
                "config.json and weights"
            )
        return folder
    if model_id.count("/") != 1 or model_id.startswith(("/", ".", "~")):
        raise ServeError(f"{model_id}: no such folder, and not a Hugging Face model id (org/name)")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entries = list(_hf_entries(root, only=model_id))
    if not entries:
        raise ServeError(
            f"{model_id} is not in the Hugging Face cache at {root}: download it with "
            f"`hf download {model_id}`, or pass a local folder"
        )
    for entry in entries:  # main first, then newest
        if not entry.problems:
            return entry.path
    first = entries[0]
    raise ServeError(
        f"{first.label} is incomplete in the Hugging Face cache at {root} "
        f"({'; '.join(first.problems)}): {first.remedy}"
    )


def kv_bytes_per_token(config: dict[str, Any]) -> int | None:
    """KV-cache bytes one token takes: K and V for every layer and KV head, 2 bytes each.

    Reads the text model's settings, nested under text_config/llm_config in many
    vision-language configs; None when config.json lacks them.
    """
    text = config
    for key in TEXT_CONFIG_KEYS:
        nested = config.get(key)
        if isinstance(nested, dict) and "num_hidden_layers" in nested:
            text = nested
            break
    try:
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * KV_BYTES_PER_VALUE


def estimate_gpu_bytes(weight_bytes: int, kv_per_token: int | None) -> int | None:
    """An estimate, not a measurement, of the GPU memory vLLM needs to serve a model.

    Weights as stored + the KV cache of one KV_CONTEXT_TOKENS-token context +
    RUNTIME_OVERHEAD_BYTES for activations and the CUDA context. vLLM itself takes a
    fraction of the card (--gpu-memory-utilization) and fills the rest with KV cache, so
    this is the least that works, not what vLLM will allocate.
    """
    if not weight_bytes or kv_per_token is None:
        return None
    return weight_bytes + kv_per_token * KV_CONTEXT_TOKENS + RUNTIME_OVERHEAD_BYTES


def vllm_support(config: dict[str, Any] | None) -> tuple[Literal["yes", "unknown"], str]:
    """Whether vLLM serves this architecture, by name, with a hint for the user."""
    if config is None:
        return "unknown", "no readable config.json"
    architectures = _architectures(config)
    if not architectures:
        return "unknown", "config.json names no architecture"
    if any(name in VLLM_ARCHITECTURES for name in architectures):
        remote = "auto_map" in config
        return "yes", "the model card may ask for --trust-remote-code" if remote else ""
    return "unknown", (
        f"{', '.join(architectures)} is not in dotsocr's list of vLLM architectures: "
        f"check {VLLM_DOCS}"
    )


@dataclass
class _Findings:
    """What the files of one model folder say."""

    config: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    weight_bytes: int = 0


def _entry(
    findings: _Findings, partial: PartialDownload | None = None, **fields: Any
) -> ModelEntry:
    config = findings.config or {}
    verdict, hint = vllm_support(findings.config)
    kv = kv_bytes_per_token(config)
    whole = not findings.problems
    model_type = config.get("model_type")
    return ModelEntry(
        architectures=_architectures(config),
        model_type=model_type if isinstance(model_type, str) else None,
        vllm=verdict,
        vllm_hint=hint,
        weight_bytes=findings.weight_bytes,
        kv_bytes_per_token=kv,
        estimated_gpu_bytes=estimate_gpu_bytes(findings.weight_bytes, kv) if whole else None,
        problems=tuple(findings.problems),
        partial=partial,
        **fields,
    )


def _inspect(folder: Path, names: Iterable[str]) -> _Findings:
    """Check config.json, the shard index and every safetensors file under ``folder``."""
    names = set(names)
    found = _Findings()
    if "config.json" not in names:
        found.problems.append("config.json missing")
    else:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            found.problems.append(f"config.json unreadable ({exc})")
        else:
            if isinstance(config, dict):
                found.config = config
            else:
                found.problems.append("config.json is not a JSON object")

    from safetensors import SafetensorError

    sizes: dict[str, int] = {}
    for name in sorted(n for n in names if n.endswith(".safetensors")):
        try:
            sizes[name] = _tensor_bytes(folder / name)
        except (OSError, SafetensorError) as exc:
            found.problems.append(f"{name} unreadable ({_first_line(exc)})")

    shards = _expected_shards(folder, names, found.problems)
    if shards is None:  # no index: the top-level files are the weights
        shards = {n for n in sizes if "/" not in n}
    missing = sorted(shards - names)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        shown = ", ".join(missing[:3]) + more
        found.problems.append(f"{len(missing)} of {len(shards)} weight shard(s) missing: {shown}")
    found.weight_bytes = sum(sizes.get(name, 0) for name in shards)

    if not sizes and not missing:
        others = [n for n in names if n.endswith(OTHER_WEIGHTS)]
        if others:  # pickled weights: no header to check, the file size is near the data
            found.weight_bytes = sum((folder / n).stat().st_size for n in others)
        else:
            found.problems.append("no weight files (*.safetensors)")
    return found


def _expected_shards(folder: Path, names: set[str], problems: list[str]) -> set[str] | None:
    """The shard files the index names; without an index, the set ``-0000k-of-0000N`` implies."""
    if INDEX_FILE in names:
        try:
            index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
            return {str(shard) for shard in index["weight_map"].values()}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            problems.append(f"{INDEX_FILE} unreadable ({_first_line(e)})")
            return set()
    implied: set[str] = set()
    for name in names:
        match = SHARD_NAME.match(name)
        if match:
            total, width = match["total"], len(match["index"])
            implied |= {
                f"{match['stem']}-{i:0{width}d}-of-{total}.safetensors"
                for i in range(1, int(total) + 1)
            }
    return implied or None


def _tensor_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file, once safetensors accepts it.

    safe_open parses the header and refuses a file whose data does not end exactly
    where the header says ("incomplete metadata, file not fully covered"), so a cut
    download fails here; then everything after the header is tensor data.
    """
    from safetensors import safe_open

    with safe_open(path, framework="numpy"):
        pass
    with path.open("rb") as handle:
        header = int.from_bytes(handle.read(8), "little")
    return path.stat().st_size - 8 - header


def _hf_entries(root: Path, only: str | None = None) -> Iterator[ModelEntry]:
    """Entries for the model repos in the Hugging Face cache at ``root``, sorted by id."""
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return
    except ValueError as exc:  # a file where the folder should be
        raise ConfigError(f"{root} is not a folder: pass the Hugging Face cache folder") from exc
    cache_root = getattr(info, "cache_dir", None) or root.resolve()
    partials: dict[Path, list[int]] = {}
    for blob, size in _incomplete_blobs(info, cache_root):
        partials.setdefault(blob.parent.parent, []).append(size)

    def partial_of(repo_path: Path) -> PartialDownload | None:
        sizes = partials.get(repo_path)
        return PartialDownload(files=len(sizes), bytes=sum(sizes)) if sizes else None

    scanned = {repo.repo_path for repo in info.repos}
    repos = sorted(
        (r for r in info.repos if r.repo_type == "model" and only in (None, r.repo_id)),
        key=lambda r: r.repo_id,
    )
    for repo in repos:
        remedy = f"run `hf download {repo.repo_id}` again"
        revisions = sorted(repo.revisions, key=lambda r: ("main" not in r.refs, -r.last_modified))
        for position, revision in enumerate(revisions):
            folder = revision.snapshot_path
            names = [f.file_path.relative_to(folder).as_posix() for f in revision.files]
            yield _entry(
                _inspect(folder, names),
                partial=partial_of(repo.repo_path) if position == 0 else None,
                source="hf-cache",
                model_id=repo.repo_id,
                path=folder,
                revision=revision.commit_hash,
                refs=tuple(sorted(revision.refs)),
                size_bytes=revision.size_on_disk,
                last_modified=datetime.fromtimestamp(revision.last_modified, UTC),
                remedy=remedy,
            )
        if not revisions:
            yield _unusable(repo.repo_id, repo.repo_path, "no snapshot", partial_of(repo.repo_path))

    # Repos the scanner skipped as damaged, or whose first file never finished downloading.
    for path in sorted(cache_root.glob("models--*")):
        repo_id = path.name.removeprefix("models--").replace("--", "/")
        if path in scanned or only not in (None, repo_id):
            continue
        partial = partial_of(path)
        if not (path / "snapshots").is_dir():
            problem = "no file finished downloading yet" if partial else "no snapshots folder"
        else:
            reason = next((str(w) for w in info.warnings if str(path) in str(w)), "unknown")
            problem = f"cache folder damaged ({reason})"
        yield _unusable(repo_id, path, problem, partial)


def _incomplete_blobs(info: Any, cache_root: Path) -> list[tuple[Path, int]]:
    """Partial downloads as (blob path, bytes): the scanner's list where it has one."""
    found = getattr(info, "incomplete_files", None)  # recent huggingface_hub versions
    if found is not None:
        return [(f.file_path, f.size_on_disk) for f in found]
    return [(p, p.stat().st_size) for p in cache_root.glob("*/blobs/*.incomplete")]


def _unusable(
    repo_id: str, path: Path, problem: str, partial: PartialDownload | None
) -> ModelEntry:
    return _entry(
        _Findings(problems=[problem]),
        partial=partial,
        source="hf-cache",
        model_id=repo_id,
        path=path,
        remedy=f"run `hf download {repo_id}` again",
    )


def _folder_entries(folder: Path) -> Iterator[ModelEntry]:
    """The model in ``folder`` (it has config.json), else one per subfolder that has one."""
    if (folder / "config.json").is_file():
        yield _folder_entry(folder)
        return
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (child / "config.json").is_file():
            yield _folder_entry(child)


def _folder_entry(folder: Path) -> ModelEntry:
    folder = folder.absolute()
    names: list[str] = []
    size, newest, partial_files, partial_bytes = 0, 0.0, 0, 0
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        name, stat = path.relative_to(folder).as_posix(), path.stat()
        if name.startswith(LOCAL_DIR_PARTIALS) and name.endswith(".incomplete"):
            partial_files, partial_bytes = partial_files + 1, partial_bytes + stat.st_size
        if name.startswith(".cache/"):
            continue
        names.append(name)
        size, newest = size + stat.st_size, max(newest, stat.st_mtime)
    partial = PartialDownload(files=partial_files, bytes=partial_bytes) if partial_files else None
    return _entry(
        _inspect(folder, names),
        partial=partial,
        source="folder",
        model_id=str(folder),
        path=folder,
        size_bytes=size,
        last_modified=datetime.fromtimestamp(newest, UTC) if newest else None,
        remedy="copy or download the model into this folder again",
    )


def _architectures(config: dict[str, Any]) -> tuple[str, ...]:
    names = config.get("architectures")
    return tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
