"""What accelerator this machine really has (shared by serving and the release preflight)."""

from __future__ import annotations

import ctypes


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver). onnxruntime-gpu lists its CUDA EP even without one,
    and asking it for a CUDA session there logs a library-loading error; ask the driver first."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


# CPU features that decide whether int8 pays off (ORT's MLAS picks its int8 GEMM kernel by them).
INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_tile", "asimddp", "i8mm")


def cpu_isa(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of INT8_ISA_FLAGS this CPU reports (Linux /proc/cpuinfo; all False where it is unreadable).

    Without a VNNI/AMX (x86) or dot-product (Arm) extension an int8 GEMM does about twice the work per
    instruction of fp32 at best (AVX2's pmaddubsw + pmaddwd), so int8 speed-ups are capped near 2x there."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    return {flag: flag in flags for flag in INT8_ISA_FLAGS}
