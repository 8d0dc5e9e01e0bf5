# Sourced by the scripts beside it, on the GPU machine, with OUT set: installs the carried wheels,
# builds the vendored llama.cpp with CUDA for sm_90 (shared libraries, llama-quantize and
# llama-server; about 5 minutes on 16 cores, reused within a lease), points llama-cpp-python at it,
# and makes the synthetic 1B-shape Q4_K_M model (unless PREPARE_MODEL=0); leaves its path in $M.
SRC=$PWD/.llama/llama-cpp-python
BUILD=/tmp/llama-cuda  # outside any carried path: a carried path is replaced on every call
MODELS=/tmp/models
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$SRC:$PWD

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/gpu.txt"
started=$(date +%s)
# a build brought back from an earlier lease (pack_build.sh) and carried in .llama/cuda-bin
if [ ! -e "$BUILD/bin/llama-server" ] && ls .llama/cuda-bin/bin.tar.* >/dev/null 2>&1; then
    mkdir -p "$BUILD"
    case $(ls .llama/cuda-bin/bin.tar.* | head -1) in
        *.zst.*) cat .llama/cuda-bin/bin.tar.zst.* | zstd -dq | tar -C "$BUILD" -xf - ;;
        *) cat .llama/cuda-bin/bin.tar.xz.* | xz -d | tar -C "$BUILD" -xf - ;;
    esac
fi
if [ ! -e "$BUILD/bin/llama-server" ]; then
    cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_USE_PREBUILT_UI=OFF >/tmp/build.log 2>&1
    ninja -C "$BUILD" -j16 llama llama-quantize llama-server >>/tmp/build.log 2>&1 || {
        tail -40 /tmp/build.log; exit 1; }
fi
echo "build: $(( $(date +%s) - started )) s" | tee -a "$OUT/gpu.txt"
LIB=$(dirname "$(find "$BUILD" -name 'libllama.so*' | head -1)")
export LLAMA_CPP_LIB_PATH=$LIB MTMD_CPP_LIB=$LIB LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
python3 -c "import llama_cpp; print('gpu offload:', llama_cpp.llama_supports_gpu_offload())"

mkdir -p "$MODELS"
if [ "${PREPARE_MODEL:-1}" = 1 ] && [ ! -e "$MODELS/1b-q4_k_m.gguf" ]; then
    python3 scripts/synthetic_gguf --shape 1b --pad-vocab --type f16 \
        --tokenizer .llama/tokenizer.gguf --out "$MODELS/1b-f16.gguf"
    "$BUILD/bin/llama-quantize" "$MODELS/1b-f16.gguf" "$MODELS/1b-q4_k_m.gguf" Q4_K_M 16 \
        >/tmp/quantize.log 2>&1 || { tail -20 /tmp/quantize.log; exit 1; }
    rm -f "$MODELS/1b-f16.gguf"
fi
M=$MODELS/1b-q4_k_m.gguf
ls -l "$M"
