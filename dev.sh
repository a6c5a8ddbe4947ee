#!/usr/bin/env bash
# runyard's two set-up commands, for a fresh Debian machine that has only python3:
#   ./dev.sh demo    install everything, then run examples/ml_pipeline.py on the local executor
#   ./dev.sh test    install everything, then run ruff, mypy and the whole test suite
#   ./dev.sh setup   install only: uv into .tools/ (from PyPI) unless on PATH, then `uv sync --frozen` into .venv
# Extra arguments after `test` go to pytest (./dev.sh test -k detach -x; -n 0 runs it in one process).
# `test` first starts the services the tests use (sshd, Slurm, Docker; see docs/testing.md):
#   ./dev.sh services         start them only (idempotent); facts in /tmp/runyard-infra/env.sh
#   ./dev.sh services-stop    stop them (--purge also deletes their state dir)
set -euo pipefail
cd "$(dirname "$0")"
export UV_PYTHON_DOWNLOADS=never UV_PYTHON=${UV_PYTHON:-python3}
export PATH="$PWD/.tools/bin:$PATH"

log() { printf '[dev.sh] %s\n' "$*" >&2; }

bootstrap_uv() {
  command -v uv >/dev/null 2>&1 && return
  if ! python3 -m pip --version >/dev/null 2>&1; then
    log "python3 has no pip: installing Debian's python3-pip"
    [[ $(id -u) -eq 0 ]] || { log "run as root, or install python3-pip (or uv) first"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get -qq -o DPkg::Lock::Timeout=300 update || { log "apt-get update failed (see above)"; exit 1; }
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 python3-pip >/dev/null \
      || { log "apt-get install python3-pip failed (see above)"; exit 1; }
  fi
  log "installing uv into .tools/ (from PyPI)"
  local pip=(python3 -m pip install --quiet --disable-pip-version-check --upgrade --target .tools/uv)
  PIP_ROOT_USER_ACTION=ignore "${pip[@]}" uv || PIP_ROOT_USER_ACTION=ignore "${pip[@]}" --break-system-packages uv
  mkdir -p .tools/bin
  ln -sf "$PWD/.tools/uv/bin/uv" .tools/bin/uv
}

sync() {
  bootstrap_uv
  uv sync --frozen --quiet
}

case ${1:-} in
  setup)
    sync
    uv=$(command -v uv); log "ready: ${uv#"$PWD"/} run runyard --help (or .venv/bin/runyard --help)"
    ;;
  demo)
    shift; sync
    exec uv run --frozen python examples/ml_pipeline.py "$@"
    ;;
  services)
    exec bash infra/start-services.sh
    ;;
  services-stop)
    shift; exec bash infra/stop-services.sh "$@"
    ;;
  test)
    shift; sync
    log "services: sshd, Slurm, Docker (docs/testing.md)"
    bash infra/start-services.sh || { log "the test services did not start (see above)"; exit 1; }
    # shellcheck source=/dev/null
    source "${RUNYARD_INFRA_DIR:-/tmp/runyard-infra}/env.sh"
    log "ruff"; uv run --frozen ruff check . && uv run --frozen ruff format --check --quiet .
    log "mypy"; uv run --frozen mypy
    log "pytest"; exec uv run --frozen pytest -n 4 --dist loadgroup "$@"  # parallel: docs/testing.md
    ;;
  *)
    sed -n '2,9p' "$0"; exit 2
    ;;
esac
