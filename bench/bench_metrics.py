"""Parsing metrics out of task output: ``MetricParser.parse`` (what ``exp.get_metrics`` runs on
each attempt's journal) over 100 MB of realistic training output.

    uv run --frozen python bench/bench_metrics.py [--mb N] [--repeat N] [--json]

The journal is made the way the runner writes it (``<unix time> <o|e> <text>`` lines): a
training loop's ``step 6/12 loss: 0.226 accuracy: 0.91`` lines, tqdm-style progress bars on
stderr (one journal line of ``\\r``-separated updates, each ``loss=...``), and noise around
them (framework INFO lines, warnings, tracebacks, long config dumps). The figure is MB of
journal per second (median of the runs; min..max beside it), with the default patterns (loss,
accuracy) and with four user patterns; every run's point count is checked against what the
journal holds. Target: >= 50 MB/s, a goal for this benchmark, never a timed assertion in tests.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from runyard.metrics import MetricParser

TARGET_MBS = 50.0
USER_PATTERNS = {
    "loss": r"(?<![\w.])loss[:=] ?([-+]?\d*\.?\d+(?:e[-+]?\d+)?)",
    "lr": r"\blr[:=] ?([-+]?\d*\.?\d+(?:e[-+]?\d+)?)",
    "grad_norm": r"grad_norm[:=] ?(\d*\.?\d+)",
    "tokens_per_s": r"(\d+(?:\.\d+)?) tokens/s",
}


def make_journal(size: int) -> tuple[bytes, int, int]:
    """``size`` bytes of journal; returns it and how many loss and accuracy values it holds."""
    rng = random.Random(11)
    noise = [
        "INFO:torch.distributed:Added key: store_based_barrier_key:1 to store for rank: 0",
        "WARNING: gradient overflow, skipping step; reducing loss scale to 32768.0",
        '  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1501, in _call_impl',
        "config: " + json.dumps({f"key_{i}": rng.random() for i in range(40)}),
        "[rank0]: saving checkpoint to /scratch/run-17/ckpt-000300.pt (1.3 GB)",
        "dataloader: 8 workers, prefetch 2, pin_memory=True, 1281167 samples",
        "grad_norm=1.732 lr=0.0003 throughput 1834.2 tokens/s",
    ]
    parts: list[str] = []
    total = losses = accuracies = 0
    now = 1_700_000_000.0
    step = 0
    while total < size:
        now += rng.random() * 0.01
        roll = rng.random()
        if roll < 0.15:
            step += 1
            text = f"step {step}/100000 loss: {rng.random():.4f} accuracy: {rng.random():.4f}"
            losses, accuracies = losses + 1, accuracies + 1
            code = "o"
        elif roll < 0.25:  # a tqdm bar: 20 updates in one journal line
            updates = [
                f"epoch {step // 1000}: {p * 5:3d}%|{'#' * p}{' ' * (20 - p)}| {p * 50}/1000 "
                f"[00:{p:02d}<00:{20 - p:02d}, 31.2it/s, loss={rng.random():.3f}]"
                for p in range(1, 21)
            ]
            text, code = "\r".join(updates), "e"
            losses += len(updates)
        else:
            text, code = rng.choice(noise), "o"
        line = f"{now:.6f} {code} {text}\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode(), losses, accuracies


def measure(
    parser: MetricParser, data: bytes, repeat: int, check: tuple[str, int]
) -> list[tuple[float, float]]:
    """MB/s of ``parser.parse`` over ``data`` by the wall clock and by this process's CPU time."""
    speeds = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        points = parser.parse(data, 1)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        name, expected = check
        found = sum(1 for p in points if p.name == name)
        if found != expected:
            raise SystemExit(f"bench_metrics: {found} {name} points parsed, the journal holds {expected}")
        speeds.append((len(data) / 1e6 / seconds, len(data) / 1e6 / cpu))
    return speeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="MB of journal (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    print(f"making {args.mb:g} MB of journal ...", file=sys.stderr)
    data, losses, accuracies = make_journal(int(args.mb * 1e6))
    figures = {
        "default patterns (loss, accuracy)": measure(MetricParser(), data, args.repeat, ("loss", losses)),
        "4 user patterns": measure(MetricParser(USER_PATTERNS), data, args.repeat, ("loss", losses)),
    }
    per_mb = (losses + accuracies) / (len(data) / 1e6)
    print(
        f"{len(data) / 1e6:.0f} MB of journal: {losses} loss and {accuracies} accuracy values ({per_mb:.0f}/MB)"
    )
    with open("/proc/loadavg") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}")
    print(f"{'figure':<36} {'MB/s':>7} {'min..max':>9} {'by CPU':>7} {'us/point':>8}  target")
    for name, speeds in figures.items():
        wall, cpu = [s[0] for s in speeds], [s[1] for s in speeds]
        median = statistics.median(wall)
        verdict = "ok" if median >= TARGET_MBS else "MISSED"
        span = f"{min(wall):.0f}..{max(wall):.0f}"
        per_point = 1e6 / (median * per_mb)  # (the user patterns find a few more values)
        columns = f"{median:>7.1f} {span:>9} {statistics.median(cpu):>7.1f} {per_point:>8.2f}"
        print(f"{name:<36} {columns}  >= {TARGET_MBS:g} MB/s {verdict}")
    if args.json:
        print(json.dumps({"mb": len(data) / 1e6, "figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
