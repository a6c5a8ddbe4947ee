"""The names that the experiment guide uses without defining them, made real.

The guide (tests/e2e/experiment-guide.md) refers to task classes (``TrainModel``,
``PreprocessData``, ...), to ready-made values (``task_config``, ``executor``,
``model_config``, ...) and to helpers (``get_git_commit_hash``, ``get_available_gpus``,
...). tests/e2e/test_guide.py runs every code block of the guide in a namespace filled by
:func:`undefined_names`.

The task classes are small and real: they compute something, print lines such as
``loss: 0.5123`` / ``accuracy: 0.9100`` (what the guide's log analysis looks for), and
touch no file unless given a path to write. The paths the guide passes (``/data/raw``,
``/checkpoints/best``) are only printed, never read or written. This module imports only
the standard library at the top, so a task process imports it without runyard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

# y = 3x + 0.5 on eight points in [0, 1): what TrainModel fits
_XS = [i / 8 for i in range(8)]
_YS = [3 * x + 0.5 for x in _XS]


def fit_line(learning_rate: float, steps: int) -> list[tuple[float, float, float]]:
    """Gradient descent on the mean squared error of ``w*x + b``: (w, b, loss) per step."""
    w = b = 0.0
    out = []
    n = len(_XS)
    for _ in range(steps):
        errors = [w * x + b - y for x, y in zip(_XS, _YS, strict=True)]
        w -= learning_rate * 2 * sum(e * x for e, x in zip(errors, _XS, strict=True)) / n
        b -= learning_rate * 2 * sum(errors) / n
        loss = sum((w * x + b - y) ** 2 for x, y in zip(_XS, _YS, strict=True)) / n
        out.append((w, b, loss))
    return out


class TrainModel:
    """Fits a line by gradient descent; prints ``loss: ...`` each step.

    ``checkpoint_path``, when given, receives the fitted parameters as JSON. A learning
    rate above 0.01 prints a warning on stderr.
    """

    def __init__(
        self,
        model_size: str = "8b",
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        data_path: str | None = None,
        precision: str = "32-true",
        steps: int = 5,
        checkpoint_path: str | None = None,
    ) -> None:
        self.model_size = model_size
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.data_path = data_path
        self.precision = precision
        self.steps = steps
        self.checkpoint_path = checkpoint_path

    def __call__(self) -> None:
        print(
            f"training model_size={self.model_size} lr={self.learning_rate} "
            f"batch_size={self.batch_size} precision={self.precision} data={self.data_path}"
        )
        if self.learning_rate > 0.01:
            print(f"warning: learning rate {self.learning_rate} is high", file=sys.stderr)
        fitted = fit_line(self.learning_rate, self.steps)
        for step, (_, _, loss) in enumerate(fitted, 1):
            print(f"step {step} loss: {loss:.4f}")
        w, b, _ = fitted[-1] if fitted else (0.0, 0.0, 0.0)
        if self.checkpoint_path:
            os.makedirs(os.path.dirname(self.checkpoint_path), exist_ok=True)
            with open(self.checkpoint_path, "w") as f:
                json.dump({"w": w, "b": b, "model_size": self.model_size}, f)
            print(f"saved checkpoint {self.checkpoint_path}")


class PreprocessData:
    """Prints what it would preprocess (the guide's paths are not touched)."""

    def __init__(self, input_path: str, output_path: str) -> None:
        self.input_path = input_path
        self.output_path = output_path

    def __call__(self) -> None:
        rows = len(_XS)
        print(f"preprocessed {rows} rows: {self.input_path} -> {self.output_path}")


class PrepareData:
    """Prints a summary of the (built-in, tiny) dataset."""

    def __init__(self, dataset: str = "wikitext-103") -> None:
        self.dataset = dataset

    def __call__(self) -> None:
        print(f"prepared dataset {self.dataset}: {len(_XS)} rows")


class EvaluateModel:
    """Evaluates one model: prints ``accuracy: ...`` per evaluation batch."""

    ACCURACIES = (0.88, 0.9, 0.91)

    def __init__(self, model_path: str = "/checkpoints/best") -> None:
        self.model_path = model_path

    def __call__(self) -> None:
        print(f"evaluating {self.model_path}")
        for accuracy in self.ACCURACIES:
            print(f"accuracy: {accuracy:.4f}")


class EvaluateModels:
    """Evaluates every model matching a pattern (the pattern is only printed)."""

    def __init__(self, model_paths: str = "/checkpoints/*") -> None:
        self.model_paths = model_paths

    def __call__(self) -> None:
        print(f"evaluating models {self.model_paths}")
        print("accuracy: 0.9000")


class DeployModel:
    """Prints where it would deploy from."""

    def __init__(self, model_path: str = "/checkpoints/best") -> None:
        self.model_path = model_path

    def __call__(self) -> None:
        print(f"deployed {self.model_path}")


class LongTraining:
    """Prints a loss line every ``interval`` seconds for ``seconds`` seconds."""

    def __init__(self, seconds: float = 60.0, interval: float = 0.1) -> None:
        self.seconds = seconds
        self.interval = interval

    def __call__(self) -> None:
        end = time.monotonic() + self.seconds
        step = 0
        while time.monotonic() < end:
            step += 1
            print(f"step {step} loss: {1 / step:.4f}", flush=True)
            time.sleep(self.interval)


class BrokenTask:
    """Fails: prints a line, then raises (its traceback lands in stderr)."""

    def __init__(self, message: str = "out of memory") -> None:
        self.message = message

    def __call__(self) -> None:
        print("loading model")
        raise RuntimeError(self.message)


class FlakyTraining:
    """Fails its first ``failures`` runs (counted in ``marker_path``), then trains."""

    def __init__(self, marker_path: str, failures: int = 1) -> None:
        self.marker_path = marker_path
        self.failures = failures

    def __call__(self) -> None:
        with open(self.marker_path, "a") as f:
            f.write("run\n")
        with open(self.marker_path) as f:
            runs = len(f.readlines())
        if runs <= self.failures:
            raise RuntimeError(f"node failure on run {runs}")
        print(f"run {runs} loss: 0.1000")


def get_git_commit_hash() -> str:
    """HEAD of the git work tree at the current directory, or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def get_available_gpus() -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def get_available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo, else total)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def undefined_names() -> dict[str, Any]:
    """Fresh values for every name the guide uses without defining it.

    ``experiment`` is not here: each block that uses one gets an experiment prepared for
    what that block does (see tests/e2e/test_guide.py).
    """
    import runyard as run

    return {
        "os": os,
        "time": time,
        "TrainModel": TrainModel,
        "PreprocessData": PreprocessData,
        "PrepareData": PrepareData,
        "EvaluateModel": EvaluateModel,
        "EvaluateModels": EvaluateModels,
        "DeployModel": DeployModel,
        "get_git_commit_hash": get_git_commit_hash,
        "get_available_gpus": get_available_gpus,
        "get_available_memory": get_available_memory,
        "executor": run.LocalExecutor(),
        "task_config": run.Config(TrainModel, model_size="tiny", learning_rate=0.001),
        "task1": run.Config(PrepareData, dataset="tiny"),
        "task2": run.Config(TrainModel, model_size="tiny"),
        "task3": run.Config(EvaluateModel, model_path="/checkpoints/tiny"),
        "model_config": run.Config(TrainModel, model_size="8b", learning_rate=0.001, batch_size=32),
        "experiment_config": run.Config(TrainModel, model_size="tiny"),
        "resource_constraints": {"min_gpus": 1, "max_nodes": 2},
    }
