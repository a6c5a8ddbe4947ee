"""This machine's GPUs, which ``LocalExecutor(gpus=N)`` tasks lease (core keeps the leases, in
the store: machine-wide within one runyard home).

A GPU is named by its index as the machine lists it (``nvidia-smi -L``, NVML: PCI bus
order), which is what the task gets in ``CUDA_VISIBLE_DEVICES`` (with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so that CUDA counts them in that order too). Found, in this
order, from:

- ``RUNYARD_LOCAL_GPUS``, when set: comma-separated indices (``"0,1,3"``; empty: none), for
  machines where discovery fails, and for tests;
- NVML (``libnvidia-ml.so.1``, through ctypes: no Python package needed);
- ``nvidia-smi -L``;
- else none.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import subprocess

from runyard.errors import ConfigError

GPUS_ENV = "RUNYARD_LOCAL_GPUS"
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")  # an index, or a GPU-... UUID
_SMI_LINE = re.compile(r"GPU (\d+):")


def machine_gpus() -> list[str]:
    """The GPUs of this machine (see the module's docstring)."""
    listed = os.environ.get(GPUS_ENV)
    if listed is not None:
        return parse_gpus(listed)
    return list(_discovered())


def parse_gpus(text: str) -> list[str]:
    """The GPUs ``RUNYARD_LOCAL_GPUS`` lists, each once, in order; ConfigError when it is not a list."""
    units = [u.strip() for u in text.split(",")]
    if units == [""]:
        return []
    bad = [u for u in units if not _UNIT.fullmatch(u)]
    if bad:
        raise ConfigError(
            f"{GPUS_ENV} must list GPU indices separated by commas (like '0,1,3'; empty for none),"
            f" got {text!r}"
        )
    return list(dict.fromkeys(units))


@functools.cache
def _discovered() -> tuple[str, ...]:
    """What NVML, else ``nvidia-smi -L``, finds (once per process: GPUs do not come and go)."""
    found = nvml_gpus()
    return tuple(found if found is not None else nvidia_smi_gpus())


def nvml_gpus() -> list[str] | None:
    """The indices of the GPUs NVML counts; None when NVML cannot be used here."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if nvml.nvmlInit_v2() != 0:
            return None
        try:
            count = ctypes.c_uint(0)
            if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
                return None
            return [str(i) for i in range(count.value)]
        finally:
            nvml.nvmlShutdown()
    except AttributeError:  # a library without those functions
        return None


def nvidia_smi_gpus(program: str = "nvidia-smi") -> list[str]:
    """The indices ``nvidia-smi -L`` lists (``GPU 0: NVIDIA A100 (UUID: ...)``); none when it
    is missing or fails."""
    try:
        done = subprocess.run(
            [program, "-L"], capture_output=True, text=True, timeout=15, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [m.group(1) for line in done.stdout.splitlines() if (m := _SMI_LINE.match(line.strip()))]
