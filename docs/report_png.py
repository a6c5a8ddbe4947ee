"""Regenerate docs/report.png, the README's picture of the HTML report:

    uv run --frozen python docs/report_png.py [--chromium PATH] [-o docs/report.png]

Runs examples/ml_pipeline.py in a fresh, temporary RUNYARD_HOME, writes that experiment's
report (``exp.report()``), and takes a screenshot of its top with headless Chromium (Debian's
``chromium``: ``./dev.sh services`` installs it; else give ``--chromium``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chromium", default=os.environ.get("RUNYARD_TEST_CHROMIUM") or shutil.which("chromium"))
    ap.add_argument("-o", "--output", default=os.path.join(HERE, "report.png"))
    ap.add_argument("--size", default="1280,1475", help="the browser window, WIDTH,HEIGHT (pixels)")
    args = ap.parse_args()
    if not args.chromium:
        sys.exit("report_png.py: no chromium found; install Debian's chromium or give --chromium PATH")
    with tempfile.TemporaryDirectory(prefix="report-png-") as tmp:
        env = {**os.environ, "RUNYARD_HOME": os.path.join(tmp, "home"), "RUNYARD_PLAIN": "1"}
        example = os.path.join(ROOT, "examples", "ml_pipeline.py")
        subprocess.run([sys.executable, example], env=env, check=True, stdout=subprocess.DEVNULL)
        page = os.path.join(tmp, "report.html")
        subprocess.run([sys.executable, "-m", "runyard", "report", "ml-pipeline", "-o", page], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        shot = subprocess.run(
            [args.chromium, *FLAGS, f"--user-data-dir={os.path.join(tmp, 'profile')}", f"--window-size={args.size}",
             f"--screenshot={os.path.abspath(args.output)}", f"file://{page}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if shot.returncode != 0 or not os.path.isfile(args.output):
            sys.exit(f"report_png.py: chromium failed (exit {shot.returncode}): {shot.stderr[-1000:]}")
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
