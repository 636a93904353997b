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
