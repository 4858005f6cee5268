#!/usr/bin/env bash
# Set up .venv/ with liveavatar and everything it needs (system packages too).
#   scripts/setup.sh          what the server needs
#   scripts/setup.sh --test   plus what the tests need
# Re-running is fast: nothing is reinstalled unless the inputs below changed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run
[[ "${1:-}" == "--test" ]] && mode=test

apt_packages=(espeak-ng libespeak-ng1 antiword)
[[ $mode == test ]] && apt_packages+=(postgresql chromium iproute2 util-linux)

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
apt_install() {
    echo "==> installing system packages: $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null; then
        apt_install "${missing[@]}"
    else
        echo "warning: no apt-get; install these yourself: ${missing[*]}" >&2
    fi
fi

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: liveavatar needs Python 3.11 ($python is $("$python" -V 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv with $("$python" -V)"
    if ! "$python" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3.11-venv
        "$python" -m venv .venv
    fi
fi

stamp=".venv/.setup-$mode"
inputs=$(cat pyproject.toml scripts/requirements-nodeps.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
build_int8_voice() {
    # a no-op (~0.4 s) once the copy is in the cache; it goes on being checked, as the cache may be cleared
    .venv/bin/python -m liveavatar.speech.piper_int8 >/dev/null \
        || echo "warning: no int8 Piper voice; the server tries again on first load" >&2
}
if [[ -f $stamp && $(cat "$stamp") == "$inputs" ]]; then
    build_int8_voice
    exit 0
fi
echo "==> installing liveavatar and its dependencies into .venv (first time: ~15 minutes, llama.cpp compiles)"
# A portable llama.cpp build (pip caches the wheel, so this compiles once per machine).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
extra=""
[[ $mode == test ]] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r scripts/requirements-nodeps.txt
echo "==> building the int8 Piper voice into the user cache (once per machine, ~30 s)"
build_int8_voice
echo "$inputs" > "$stamp"
echo "==> .venv is ready"
