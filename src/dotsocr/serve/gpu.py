"""Which NVIDIA GPUs this machine has, as vLLM will see them.

NVML first (nvidia-ml-py loads the driver's own libnvidia-ml.so.1, no process to start),
then ``nvidia-smi`` for machines where NVML cannot load but the tool works, e.g. a
container with the binary mounted but not the library path. CUDA_VISIBLE_DEVICES is
applied afterwards because vLLM only ever sees those devices.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from dotsocr.errors import NoGPU

GIB = 1024**3
MIB = 1024**2
SMI_TIMEOUT = 20.0  # nvidia-smi hangs for a long time when the driver is wedged
SMI_FIELDS = ("index", "name", "memory.total", "memory.free", "compute_cap", "uuid")
NEXT_STEPS = (
    "install the NVIDIA driver, or plan for a card with "
    "`dotsocr plan --gpu-memory 24GiB --compute-capability 8.9`, "
    "or use the CPU engine (`dotsocr ocr --engine cpu`)"
)
# Friendlier words for the NVML failures people actually meet.
NVML_REASONS = {
    "NVMLError_LibraryNotFound": "library not found",
    "NVMLError_DriverNotLoaded": "driver not loaded",
    "NVMLError_NoPermission": "no permission",
    "NVMLError_LibRmVersionMismatch": "driver and library versions differ (reboot?)",
}

T = TypeVar("T")


@dataclass(frozen=True)
class GPU:
    """One NVIDIA GPU: what the launcher needs to size vLLM for it."""

    index: int  # NVML's (and nvidia-smi's) index, not the renumbered CUDA ordinal
    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int] | None  # None: the driver would not say
    uuid: str | None
    source: str = "NVML"  # or "nvidia-smi": where these facts came from

    @property
    def memory_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def free_gib(self) -> float:
        return self.free_bytes / GIB

    @property
    def compute(self) -> str:
        """``9.0``, or ``?`` when unknown."""
        cc = self.compute_capability
        return f"{cc[0]}.{cc[1]}" if cc else "?"

    def describe(self) -> str:
        return (
            f"{self.index}  {self.name}  {self.memory_gib:.1f} GiB total, "
            f"{self.free_gib:.1f} GiB free  compute {self.compute}  ({self.source})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = self.compute if self.compute_capability else None
        return data


class _Unavailable(Exception):
    """One way of asking failed; the message says why, for the NoGPU line."""


def discover(
    *, nvml: Any = None, smi: str = "nvidia-smi", env: Mapping[str, str] | None = None
) -> list[GPU]:
    """The GPUs vLLM would see here, in CUDA_VISIBLE_DEVICES order.

    Args:
        nvml: the NVML bindings (default: the ``pynvml`` module of nvidia-ml-py); tests
            pass a fake with the same functions and error classes.
        smi: the nvidia-smi to fall back on, a name on PATH or a path.
        env: where to read CUDA_VISIBLE_DEVICES (default: the process environment).

    Raises:
        NoGPU: no GPU found by either way, or CUDA_VISIBLE_DEVICES hides them all; the
            message names what was tried and what to do.

    Example:
        >>> [gpu.describe() for gpu in discover()]
        ['0  NVIDIA H100 80GB HBM3  79.6 GiB total, 79.1 GiB free  compute 9.0  (NVML)']
    """
    tried: list[str] = []
    gpus: list[GPU] = []
    try:
        gpus = _from_nvml(nvml)
    except _Unavailable as exc:
        tried.append(f"NVML: {exc}")
        try:
            gpus = _from_smi(smi)
        except _Unavailable as smi_exc:
            tried.append(f"nvidia-smi: {smi_exc}")
    if not gpus:
        why = "; ".join(tried) or "NVML: no devices"
        raise NoGPU(f"no NVIDIA GPU found ({why}): {NEXT_STEPS}")
    spec = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    visible = filter_visible(gpus, spec)
    if not visible:
        found = ", ".join(f"{g.index} ({g.uuid or 'no UUID'})" for g in gpus)
        raise NoGPU(
            f"CUDA_VISIBLE_DEVICES={spec!r} hides every GPU found ({found}): unset it, or "
            "list GPUs by index or UUID, e.g. CUDA_VISIBLE_DEVICES=0"
        )
    return visible


def filter_visible(gpus: list[GPU], spec: str | None) -> list[GPU]:
    """Apply CUDA_VISIBLE_DEVICES as CUDA does: indices or UUID prefixes, in the order given.

    Unset means all; empty means none; CUDA stops at the first entry matching no device,
    ignoring it and everything after it.
    """
    if spec is None:
        return list(gpus)
    chosen: list[GPU] = []
    for token in (t.strip() for t in spec.split(",")):
        gpu = _match(token, gpus)
        if gpu is None:
            break
        if gpu not in chosen:
            chosen.append(gpu)
    return chosen


def _match(token: str, gpus: list[GPU]) -> GPU | None:
    if not token:
        return None
    if token.lstrip("-").isdigit():
        return next((g for g in gpus if g.index == int(token)), None)
    prefix = token.lower()  # CUDA takes a UUID's first characters, "GPU-" included
    if not prefix.startswith("gpu-"):
        return None  # MIG-... slices and garbage: nothing we list
    found = [g for g in gpus if g.uuid and g.uuid.lower().startswith(prefix)]
    return found[0] if len(found) == 1 else None  # ambiguous prefixes match nothing


def _from_nvml(nvml: Any) -> list[GPU]:
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            raise _Unavailable("nvidia-ml-py is not installed") from None
    error: type[Exception] = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
    except error as exc:
        raise _Unavailable(_nvml_reason(exc)) from None
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            cc = _optional(error, nvml.nvmlDeviceGetCudaComputeCapability, handle)
            uuid = _optional(error, nvml.nvmlDeviceGetUUID, handle)
            gpus.append(
                GPU(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    total_bytes=int(memory.total),
                    free_bytes=int(memory.free),
                    compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
                    uuid=_text(uuid) if uuid else None,
                )
            )
        return gpus
    except error as exc:
        raise _Unavailable(_nvml_reason(exc)) from None
    finally:
        with contextlib.suppress(error):  # the answers are in hand; nothing to undo
            nvml.nvmlShutdown()


def _optional(error: type[Exception], call: Callable[[Any], T], handle: Any) -> T | None:
    """Facts older drivers or some boards do not give (NotSupported, FunctionNotFound)."""
    try:
        return call(handle)
    except error:
        return None


def _text(value: str | bytes) -> str:
    """nvidia-ml-py before 11.515 returns bytes; later versions str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nvml_reason(exc: Exception) -> str:
    return NVML_REASONS.get(type(exc).__name__) or str(exc) or type(exc).__name__


def _from_smi(smi: str) -> list[GPU]:
    fields = SMI_FIELDS
    result = _run_smi(smi, fields)
    if "is not a valid field to query" in result.stdout + result.stderr:
        fields = tuple(f for f in SMI_FIELDS if f != "compute_cap")  # drivers before 510
        result = _run_smi(smi, fields)
    if result.returncode != 0:
        line = _first_line(result.stdout) or _first_line(result.stderr)
        raise _Unavailable(f"exit {result.returncode}: {line or 'no message'}")
    gpus = []
    for line in filter(None, (raw.strip() for raw in result.stdout.splitlines())):
        gpu = _parse_smi_line(line, fields)
        if gpu is None:
            raise _Unavailable(f"unreadable line {line!r}")
        gpus.append(gpu)
    if not gpus:
        raise _Unavailable("no devices listed")
    return gpus


def _run_smi(smi: str, fields: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(smi)
    if executable is None:
        raise _Unavailable("not installed" if os.sep not in smi else f"{smi} not found")
    command = [
        executable,
        f"--query-gpu={','.join(fields)}",
        "--format=csv,noheader,nounits",
    ]
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=SMI_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise _Unavailable(f"no answer within {SMI_TIMEOUT:g} s (driver hung?)") from None
    except OSError as exc:
        raise _Unavailable(f"cannot run {executable}: {exc.strerror or exc}") from None


def _parse_smi_line(line: str, fields: tuple[str, ...]) -> GPU | None:
    """``0, NVIDIA H100 80GB HBM3, 81559, 80994, 9.0, GPU-...``; a name may hold commas."""
    parts = [p.strip() for p in line.split(",")]
    after = len(fields) - 2  # fields after the name
    if len(parts) < len(fields):
        return None
    name = ", ".join(parts[1 : len(parts) - after])
    values = dict(zip(fields[2:], parts[len(parts) - after :], strict=True))
    try:
        index = int(parts[0])
        total = int(float(values["memory.total"]) * MIB)
        free = int(float(values["memory.free"]) * MIB)
    except ValueError:
        return None  # e.g. [N/A] memory: nothing to plan with
    uuid = values.get("uuid")
    return GPU(
        index=index,
        name=name,
        total_bytes=total,
        free_bytes=free,
        compute_capability=_capability(values.get("compute_cap")),
        uuid=uuid if uuid and uuid.startswith(("GPU-", "MIG-")) else None,
        source="nvidia-smi",
    )


def _capability(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (text or "").split(".")
        return int(major), int(minor)
    except ValueError:
        return None  # absent or [N/A]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
