#!/usr/bin/env bash
# Makes a trimmed copy of an unpacked llama-cpp-python sdist, small enough to carry to a GPU
# machine (25 MB instead of 217 MB for 0.3.36; 4.4 MB as a .tar.gz), that still builds llama.cpp
# for CPU and CUDA: both as llama.cpp on its own (llama-server, llama-quantize,
# llama-batched-bench, ... from tools/) and as the Python package (pip install / pip wheel of
# OUT_DIR, which adds vendor/llama.cpp and vendor/llama.cpp/tools/mtmd).
#
# Usage: scripts/device/trim_llama_cpp_python.sh SDIST_DIR OUT_DIR
#   SDIST_DIR  an unpacked llama_cpp_python-<version> sdist, e.g. /tmp/sdist/llama_cpp_python-0.3.36
#   OUT_DIR    where the copy goes; must not exist yet
# Environment: KEEP_BACKENDS  ggml backends kept under vendor/llama.cpp/ggml/src
#                             (default "cpu cuda blas rpc"; every other ggml-* directory goes)
#
# What goes: the git data (.git, and the submodule's .git link), CI and docker files, docs,
# Python examples; in vendor/llama.cpp the vocabulary GGUFs (models/), docs, benches, tests,
# media, examples and pocs (both built only with LLAMA_BUILD_EXAMPLES=ON, tests only with
# LLAMA_BUILD_TESTS=ON: build with both OFF), the Python conversion code (gguf-py, conversion,
# convert_*.py), the web UI's sources (tools/ui keeps only what its CMake reads: the UI is then
# downloaded at build time, or left out with a warning where there is no network; pass
# -DLLAMA_USE_PREBUILT_UI=OFF to skip the download), the test data of tools/server and
# tools/mtmd, and the ggml backends not in KEEP_BACKENDS. ggml/src/CMakeLists.txt adds every
# backend directory only when its GGML_<NAME> option is ON, and ggml-hip and ggml-musa only
# compile ggml-cuda's sources, so CPU and CUDA builds never look at the removed ones.
#
# Without .git, llama.cpp's build info (llama-server --version) says commit "unknown"; this
# script prints the commit it had, to pass back as -DLLAMA_BUILD_COMMIT=<commit>.
set -euo pipefail

usage() {
    sed -n '8,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "trim_llama_cpp_python: $*" >&2
    exit 1
}

[ $# -eq 2 ] || usage
src=${1%/}
out=${2%/}
llama=vendor/llama.cpp
keep_backends=${KEEP_BACKENDS:-cpu cuda blas rpc}

[ -f "$src/pyproject.toml" ] && [ -f "$src/CMakeLists.txt" ] \
    || die "$src is not an unpacked llama-cpp-python sdist (no pyproject.toml, CMakeLists.txt)"
[ -f "$src/$llama/CMakeLists.txt" ] && [ -f "$src/$llama/ggml/src/CMakeLists.txt" ] \
    || die "$src has no $llama sources"
[ ! -e "$out" ] || die "$out exists; give a new directory"

commit=$(git -C "$src/$llama" rev-parse --short HEAD 2>/dev/null || true)

mkdir -p "$(dirname "$out")"
cp -a "$src" "$out"

# Paths relative to OUT_DIR; each is removed if present.
remove=(
    .git .github docker docs examples
    "$llama/.git" "$llama/.github" "$llama/.devops" "$llama/ci"
    "$llama/models" "$llama/docs" "$llama/benches" "$llama/tests" "$llama/media"
    "$llama/examples" "$llama/pocs" "$llama/skills"
    "$llama/gguf-py" "$llama/conversion" "$llama/requirements" "$llama/requirements.txt"
    "$llama/tools/server/tests" "$llama/tools/server/bench"
    "$llama/tools/mtmd/tests" "$llama/tools/mtmd/tests.sh"
)
for path in "${remove[@]}"; do
    rm -rf -- "${out:?}/$path"
done
rm -f -- "$out/$llama"/convert_*.py "$out/$llama"/tools/mtmd/test-*.*

# tools/ui: only the files its CMakeLists.txt and scripts/ui-assets.cmake read without npm.
ui="$out/$llama/tools/ui"
if [ -d "$ui" ]; then
    find "$ui" -mindepth 1 -maxdepth 1 \
        ! -name CMakeLists.txt ! -name sources.cmake ! -name 'ui.*.in' ! -name README.md \
        -exec rm -rf -- {} +
fi

# ggml backends: every ggml-* directory not in KEEP_BACKENDS.
for dir in "$out/$llama"/ggml/src/ggml-*/; do
    name=$(basename "$dir")
    case " $keep_backends " in
        *" ${name#ggml-} "*) ;;
        *) rm -rf -- "${dir%/}" ;;
    esac
done

# The top-level CMakeLists.txt of the Python package must still find what it adds.
for needed in "$llama/CMakeLists.txt" "$llama/tools/mtmd/CMakeLists.txt" llama_cpp/__init__.py; do
    [ -e "$out/$needed" ] || die "trimmed too much: $out/$needed is missing"
done

echo "llama.cpp commit: ${commit:-unknown}${commit:+ (build with -DLLAMA_BUILD_COMMIT=$commit)}"
du -sh "$out"
