#!/usr/bin/env bash
# Idempotent setup for a fresh Debian/Ubuntu machine: system libraries, a venv at .venv, PyTorch, rewis.
# Re-running is cheap: the pip step is skipped while pyproject.toml and this script are unchanged.
# REWIS_TORCH overrides the torch requirement (default: the CPU build pinned for this kind of machine).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
ldconfig -p | grep -q 'libusb-1.0.so.0' || apt_packages+=(libusb-1.0-0)     # open3d needs it at import
command -v chromium >/dev/null || apt_packages+=(chromium)                   # demo tests drive a real browser
command -v chromedriver >/dev/null || apt_packages+=(chromium-driver)
if ((${#apt_packages[@]})); then
    echo "setup: installing system packages: ${apt_packages[*]}"
    sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "setup: error: rewis needs Python >= 3.11 ($python is $("$python" --version)); set PYTHON=python3.11" >&2; exit 2; }
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=".venv/.rewis-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv (a few minutes the first time)"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q "${REWIS_TORCH:-torch==2.13.0}"
    .venv/bin/pip install -q -e ".[demo,dev]"
    rm -f .venv/.rewis-setup-*
    touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
