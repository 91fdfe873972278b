"""GPU discovery: NVML, then nvidia-smi, then CUDA_VISIBLE_DEVICES, then one clear error.

This machine has neither, so the NVML path runs against a fake with pynvml's functions
and its real error classes, and the nvidia-smi path against fake executables that print
what the real tool prints (CSV lines, its exit 9 without a driver, its exit 2 on fields
an old driver does not know).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from dotsocr.errors import NoGPU
from dotsocr.serve.gpu import GPU, MIB, discover, filter_visible

H100_UUID = "GPU-5f1ba7d6-0c3e-7d9c-27a8-1e5b1a6c4f11"
RTX4090_UUID = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
RTX3090_UUID = "GPU-a230e637-c9e1-1b61-3830-a437b874d88d"
FULL_QUERY = (
    "--query-gpu=index,name,memory.total,memory.free,compute_cap,uuid --format=csv,noheader,nounits"
)
SHORT_QUERY = "--query-gpu=index,name,memory.total,memory.free,uuid --format=csv,noheader,nounits"

H100_SMI = f"""
[ "$*" = "{FULL_QUERY}" ] || {{ echo "unexpected arguments: $*" >&2; exit 64; }}
echo "0, NVIDIA H100 80GB HBM3, 81559, 80994, 9.0, {H100_UUID}"
"""
TWO_RTX_SMI = f"""
[ "$*" = "{FULL_QUERY}" ] || {{ echo "unexpected arguments: $*" >&2; exit 64; }}
echo "0, NVIDIA GeForce RTX 4090, 24564, 23975, 8.9, {RTX4090_UUID}"
echo "1, NVIDIA GeForce RTX 3090, 24576, 24259, 8.6, {RTX3090_UUID}"
"""
NO_DRIVER_SMI = """
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. \
Make sure that the latest NVIDIA driver is installed and running."
echo
exit 9
"""
# Drivers before 510 (e.g. 470.x) know no compute_cap: message on stdout, exit 2.
OLD_DRIVER_SMI = f"""
case "$1" in *compute_cap*) printf 'Field "compute_cap" is not a valid field to query.\\n\\n'; \
exit 2;; esac
[ "$*" = "{SHORT_QUERY}" ] || {{ echo "unexpected arguments: $*" >&2; exit 64; }}
echo "0, NVIDIA GeForce RTX 3090, 24268, 24000, {RTX3090_UUID}"
"""
NO_GPU_LINE = (
    "no NVIDIA GPU found (NVML: library not found; nvidia-smi: not installed): install the "
    "NVIDIA driver, or plan for a card with `dotsocr plan --gpu-memory 24GiB "
    "--compute-capability 8.9`, or use the CPU engine (`dotsocr ocr --engine cpu`)"
)


def fake_smi(folder: Path, body: str) -> Path:
    """An executable named nvidia-smi in ``folder`` running the shell ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body.lstrip())
    path.chmod(0o755)
    return path


class FakeNVML:
    """pynvml's calls and error behaviour over a list of device descriptions."""

    NVMLError = pynvml.NVMLError

    def __init__(self, devices=(), *, init_error=None, fail=None) -> None:
        self.devices = list(devices)
        self.init_error = init_error
        self.fail = fail or {}  # function name -> error it raises
        self.initialised = 0
        self.shutdowns = 0

    def _check(self, call: str) -> None:
        if not self.initialised:
            raise pynvml.NVMLError_Uninitialized()
        if call in self.fail:
            raise self.fail[call]

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.initialised -= 1
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index  # real handles are opaque pointers

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        self._check("nvmlDeviceGetName")
        return self.devices[handle]["name"]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> pynvml.c_nvmlMemory_t:
        self._check("nvmlDeviceGetMemoryInfo")
        total, free = self.devices[handle]["memory"]
        return pynvml.c_nvmlMemory_t(total=total, free=free, used=total - free)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        self._check("nvmlDeviceGetCudaComputeCapability")
        return self.devices[handle]["cc"]

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        self._check("nvmlDeviceGetUUID")
        return self.devices[handle]["uuid"]


H100 = {"name": "NVIDIA H100 80GB HBM3", "memory": (85520809984, 84932558848), "cc": (9, 0),
        "uuid": H100_UUID}  # fmt: skip
OLD_BINDINGS_A10 = {"name": b"NVIDIA A10", "memory": (24146608128, 23835443200), "cc": (8, 6),
                    "uuid": b"GPU-0b8c1c4e-37a3-5c36-8d3e-4f4d2f3a2b10"}  # fmt: skip


def no_nvml() -> FakeNVML:
    return FakeNVML(init_error=pynvml.NVMLError_LibraryNotFound())


def test_this_machine_has_no_gpu_and_says_what_to_do():
    if shutil.which("nvidia-smi") or ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(NoGPU) as caught:
        discover(env={})  # the real pynvml and the real PATH
    assert str(caught.value) == NO_GPU_LINE


def test_nvml_gives_every_device_and_shuts_down():
    nvml = FakeNVML([H100, OLD_BINDINGS_A10])
    gpus = discover(nvml=nvml, smi="/nonexistent/nvidia-smi", env={})
    assert gpus == [
        GPU(0, "NVIDIA H100 80GB HBM3", 85520809984, 84932558848, (9, 0), H100_UUID, "NVML"),
        GPU(1, "NVIDIA A10", 24146608128, 23835443200, (8, 6),
            "GPU-0b8c1c4e-37a3-5c36-8d3e-4f4d2f3a2b10", "NVML"),
    ]  # fmt: skip
    assert nvml.shutdowns == 1 and nvml.initialised == 0
    assert round(gpus[0].memory_gib, 1) == 79.6
    assert gpus[0].describe() == (
        "0  NVIDIA H100 80GB HBM3  79.6 GiB total, 79.1 GiB free  compute 9.0  (NVML)"
    )


def test_nvml_facts_a_board_does_not_give_are_left_unknown():
    nvml = FakeNVML(
        [H100],
        fail={
            "nvmlDeviceGetCudaComputeCapability": pynvml.NVMLError_FunctionNotFound(),
            "nvmlDeviceGetUUID": pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED),
        },
    )
    (gpu,) = discover(nvml=nvml, env={})
    assert gpu.compute_capability is None and gpu.uuid is None and gpu.compute == "?"
    assert gpu.to_dict()["compute_capability"] is None


def test_nvml_failing_midway_falls_back_to_nvidia_smi_and_still_shuts_down(tmp_path):
    nvml = FakeNVML([H100], fail={"nvmlDeviceGetMemoryInfo": pynvml.NVMLError_GpuIsLost()})
    (gpu,) = discover(nvml=nvml, smi=str(fake_smi(tmp_path, H100_SMI)), env={})
    assert gpu.source == "nvidia-smi" and nvml.shutdowns == 1


def test_nvidia_smi_when_nvml_cannot_load(tmp_path):
    smi = fake_smi(tmp_path, H100_SMI)
    assert discover(nvml=no_nvml(), smi=str(smi), env={}) == [
        GPU(0, "NVIDIA H100 80GB HBM3", 81559 * MIB, 80994 * MIB, (9, 0), H100_UUID, "nvidia-smi")
    ]


def test_nvidia_smi_lists_two_cards(tmp_path):
    gpus = discover(nvml=no_nvml(), smi=str(fake_smi(tmp_path, TWO_RTX_SMI)), env={})
    assert [(g.index, g.name, g.compute_capability) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 4090", (8, 9)),
        (1, "NVIDIA GeForce RTX 3090", (8, 6)),
    ]
    assert gpus[1].total_bytes == 24576 * MIB and gpus[1].uuid == RTX3090_UUID


def test_old_driver_without_compute_cap_is_asked_again_without_it(tmp_path):
    (gpu,) = discover(nvml=no_nvml(), smi=str(fake_smi(tmp_path, OLD_DRIVER_SMI)), env={})
    assert gpu.name == "NVIDIA GeForce RTX 3090" and gpu.compute_capability is None
    assert gpu.uuid == RTX3090_UUID and gpu.free_bytes == 24000 * MIB


def test_no_driver_is_reported_with_nvidia_smis_first_line(tmp_path):
    nvml = FakeNVML(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(NoGPU) as caught:
        discover(nvml=nvml, smi=str(fake_smi(tmp_path, NO_DRIVER_SMI)), env={})
    message = str(caught.value)
    assert message.startswith(
        "no NVIDIA GPU found (NVML: driver not loaded; nvidia-smi: exit 9: NVIDIA-SMI has "
        "failed because it couldn't communicate with the NVIDIA driver."
    )
    assert "\n" not in message and "dotsocr ocr --engine cpu" in message


def test_zero_devices_is_no_gpu():
    with pytest.raises(NoGPU, match=r"^no NVIDIA GPU found \(NVML: no devices\)"):
        discover(nvml=FakeNVML([]), env={})


def test_a_path_to_a_missing_nvidia_smi_is_named():
    with pytest.raises(NoGPU, match="nvidia-smi: /opt/nvidia/bin/nvidia-smi not found"):
        discover(nvml=no_nvml(), smi="/opt/nvidia/bin/nvidia-smi", env={})


FOUR = [
    GPU(i, "NVIDIA H100 80GB HBM3", 80 * 1024 * MIB, 80 * 1024 * MIB, (9, 0), uuid)
    for i, uuid in enumerate(
        [H100_UUID, RTX4090_UUID, RTX3090_UUID, "GPU-8932aaaa-0000-0000-0000-000000000000"]
    )
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("2", [2]),
        ("3,0", [3, 0]),  # CUDA enumerates in the order given
        (" 1 , 2 ", [1, 2]),
        ("0,7,1", [0]),  # an entry matching nothing hides it and all after it
        ("-1", []),
        ("GPU-a230e637", [2]),  # a UUID prefix
        (f"{H100_UUID},1", [0, 1]),
        ("GPU-8932", []),  # ambiguous prefix: 1 and 3
        ("a230e637", []),  # CUDA wants the GPU- part of the UUID
        ("MIG-1f2e3d4c-0000-0000-0000-000000000000", []),
        ("1,1", [1]),
    ],
)
def test_cuda_visible_devices(spec, expected):
    assert [g.index for g in filter_visible(FOUR, spec)] == expected


def test_discover_applies_cuda_visible_devices(tmp_path):
    smi = str(fake_smi(tmp_path, TWO_RTX_SMI))
    visible = discover(nvml=no_nvml(), smi=smi, env={"CUDA_VISIBLE_DEVICES": "1"})
    assert [g.name for g in visible] == ["NVIDIA GeForce RTX 3090"]
    with pytest.raises(NoGPU) as caught:
        discover(nvml=no_nvml(), smi=smi, env={"CUDA_VISIBLE_DEVICES": ""})
    assert str(caught.value).startswith("CUDA_VISIBLE_DEVICES='' hides every GPU found (0 (GPU-")
    assert "unset it" in str(caught.value)


def dotsocr_gpus(*args: str, path: str = "/usr/bin:/bin", **env: str):
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", "gpus", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": path, "HOME": str(Path.home()), **env},
    )


def test_cli_without_a_gpu_prints_one_error_line():
    if shutil.which("nvidia-smi") or ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has an NVIDIA driver")
    result = dotsocr_gpus()
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: {NO_GPU_LINE}\n"


def test_cli_lists_gpus_from_nvidia_smi_on_path(tmp_path):
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("NVML would answer before the fake nvidia-smi")
    folder = tmp_path / "bin"
    fake_smi(folder, TWO_RTX_SMI)
    result = dotsocr_gpus(path=f"{folder}{os.pathsep}/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "0  NVIDIA GeForce RTX 4090  24.0 GiB total, 23.4 GiB free  compute 8.9  (nvidia-smi)",
        "1  NVIDIA GeForce RTX 3090  24.0 GiB total, 23.7 GiB free  compute 8.6  (nvidia-smi)",
    ]
    result = dotsocr_gpus("--json", path=f"{folder}{os.pathsep}/usr/bin:/bin",
                          CUDA_VISIBLE_DEVICES=RTX3090_UUID[:12])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "index": 1,
            "name": "NVIDIA GeForce RTX 3090",
            "total_bytes": 24576 * MIB,
            "free_bytes": 24259 * MIB,
            "compute_capability": "8.6",
            "uuid": RTX3090_UUID,
            "source": "nvidia-smi",
        }
    ]


def test_cli_old_driver_shows_unknown_compute_capability(tmp_path):
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("NVML would answer before the fake nvidia-smi")
    folder = tmp_path / "bin"
    fake_smi(folder, OLD_DRIVER_SMI)
    result = dotsocr_gpus(path=f"{folder}{os.pathsep}/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("compute ?  (nvidia-smi)")
