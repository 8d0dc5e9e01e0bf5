#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU, Release) from the llama.cpp vendored in the
# llama-cpp-python sdist, i.e. the same llama.cpp that olla runs, for scripts/bench to compare
# against. Reuses an earlier build. Prints the binary's path on stdout (progress goes to stderr).
#
# Usage: scripts/build_llama_server.sh
# Environment: LLAMA_CPP_SDIST  an extracted llama_cpp_python-<version> directory
#                               (default /tmp/sdist/llama_cpp_python-<version>; downloaded if absent)
#              CC, CXX          the compilers; JOBS (default 2) the parallel build jobs
# Neither the sources nor the binary belong in git: both live outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_VERSION=0.3.36
JOBS=${JOBS:-2}
py=.venv/bin/python
[ -x "$py" ] || py=${PYTHON:-python3}

# built with the same flags as olla's llama.cpp (scripts/setup.sh)
source scripts/native_flags.sh
out="${XDG_CACHE_HOME:-$HOME/.cache}/olla/llama-server-$LLAMA_CPP_VERSION$native_suffix"
bin="$out/llama-server"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi

sdist=${LLAMA_CPP_SDIST:-/tmp/sdist/llama_cpp_python-$LLAMA_CPP_VERSION}
if [ ! -f "$sdist/vendor/llama.cpp/CMakeLists.txt" ]; then
    sdist_parent=$(dirname "$sdist")
    echo "downloading the llama-cpp-python $LLAMA_CPP_VERSION sdist into $sdist_parent..." >&2
    mkdir -p "$sdist_parent"
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$sdist_parent"
    tar -xzf "$sdist_parent/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz" -C "$sdist_parent"
    sdist="$sdist_parent/llama_cpp_python-$LLAMA_CPP_VERSION"
fi
src="$sdist/vendor/llama.cpp"

echo "building llama-server from $src (${native_flags:-no extra flags}; about 5 minutes on 2 cores)..." >&2
mkdir -p "$out"
# Static libraries so the binary stands alone; no curl/OpenSSL (local files only), no web UI
# download, no tests or examples: only the llama-server target is built.
cmake -S "$src" -B "$out/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    ${native_flags:+"-DCMAKE_C_FLAGS=$native_flags" "-DCMAKE_CXX_FLAGS=$native_flags"} >&2
cmake --build "$out/build" --config Release --target llama-server -j"$JOBS" >&2
cp "$out/build/bin/llama-server" "$bin.tmp"
mv "$bin.tmp" "$bin"
"$bin" --version >&2
echo "$bin"
