# Sourced by scripts/setup.sh and scripts/build_llama_server.sh, so olla's llama.cpp and the
# llama-server it is measured against are built alike: -march=native (ggml's default) minus the
# two instruction sets below where the compiler would use them. Sets:
#   native_flags   extra C/C++ flags ("" where none are needed)
#   native_suffix  a tag for the build's cache directory, one per set of flags
#
# - AMX: ggml's AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on the AMX-capable
#   Xeons this project runs on.
# - AVX512-FP16: with it, ggml's f16 vector helpers step 128 values at a time and do a shorter
#   row one value at a time; flash attention's decode kernel adds each V row (64 values for
#   SmolLM2's heads) that way, which made it 1.6x slower than without flash attention at 700
#   tokens of context (docs/benchmarks.md). Without it they step 64 values in f32 registers.
# The compiler's macros are captured first: with pipefail, `cc | grep -q` can fail when grep
# exits at the first match and cc dies of SIGPIPE, which would silently drop these flags.
native_flags=""
native_suffix=""
_native_macros=$(${CC:-cc} -march=native -dM -E - </dev/null 2>/dev/null || true)
if [[ $_native_macros == *__AMX_INT8__* ]]; then
    native_flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    native_suffix="-noamx"
fi
if [[ $_native_macros == *__AVX512FP16__* ]]; then
    native_flags="${native_flags:+$native_flags }-mno-avx512fp16"
    native_suffix="$native_suffix-nofp16"
fi
unset _native_macros
