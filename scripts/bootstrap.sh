#!/usr/bin/env bash
# Set up (or update) ./.venv with effnet and what its demo needs; with --test, what the tests need too.
# Safe to re-run. Needs Python 3.10+ (3.11 recommended). On Debian/Ubuntu as root it also installs the
# system packages: python3-venv if missing, dataset-fashion-mnist, and (--test) chromium for the report test.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "bootstrap: $PYTHON is missing or older than 3.10; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

can_apt=0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then can_apt=1; fi
apt_updated=0
apt_install() {  # apt_install PACKAGE...: quietly, running apt-get update once
  if [ "$can_apt" = 0 ]; then
    echo "bootstrap: please install the system packages: $*" >&2
    return 0
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi

# Fashion-MNIST for the demo and the tests (effnet downloads it instead when it cannot install it).
[ -d /usr/share/datasets/fashion-mnist ] || apt_install dataset-fashion-mnist
# Headless Chromium renders the HTML report in its test.
if [ "$with_tests" = 1 ] && [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi

stamp=.venv/.effnet-installed
if [ ! -f "$stamp" ] || [ requirements-test.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # PyTorch's CUDA build and its libraries are most of the ~6.5 GB: install them on their own and keep no
  # copy of the wheels in pip's cache, so that the downloads are freed before the rest arrive.
  avail_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ "${avail_kb:-0}" -lt 8000000 ]; then
    echo "bootstrap: only $((avail_kb / 1024)) MB free here; the environment needs about 7 GB" >&2
  fi
  .venv/bin/python -m pip install --quiet --no-cache-dir $(grep -E '^torch(vision)?==' requirements-test.txt)
  .venv/bin/python -m pip install --quiet --no-cache-dir -r requirements-test.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi
