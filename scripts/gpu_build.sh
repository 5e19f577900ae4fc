#!/usr/bin/env bash
# Builds the `cuda` feature on a machine without a GPU, for `scripts/gpu_check.sh` to run on one.
#
#   scripts/gpu_build.sh        # -> target/gpu-bin/{bench_model,gpu_agreement,shift_benchmark,cliptta}.xz
#
# The GPU machine has a driver, the CUDA libraries and Python, but no Rust toolchain and no
# network, so the binaries are built here and carried there. Without `nvcc` on the PATH (or
# CUDA_HOME), the CUDA 13.0 compiler, headers and libraries are installed from NVIDIA's PyPI
# wheels into target/cuda-13.0. 13.0 because PTX made by a newer nvcc does not load on the
# 580 driver (CUDA 13.0) of the machines lent here.
#
# Linking: candle asks cudarc to link the CUDA libraries dynamically, and the driver library
# (libcuda.so.1) exists only where a GPU is. A stub that defines the driver symbols cudarc
# declares, with the soname libcuda.so.1, satisfies the linker here; at run time the GPU
# machine's own driver is loaded in its place.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ -z "${CUDA_HOME:-}" ]] && ! command -v nvcc >/dev/null; then
    CUDA_HOME=$root/target/cuda-13.0/nvidia/cu13
    if [[ ! -x $CUDA_HOME/bin/nvcc ]]; then
        wheels=$root/target/cuda-13.0/wheels
        python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
            nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
            nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
        for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$root/target/cuda-13.0"; done
        chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/*
    fi
fi
if [[ -n "${CUDA_HOME:-}" ]]; then
    export CUDA_HOME PATH=$CUDA_HOME/bin:$PATH
    lib=$CUDA_HOME/lib
    [[ -e $CUDA_HOME/lib64 ]] || ln -s lib "$CUDA_HOME/lib64"
    # The wheels ship only versioned sonames; the linker looks for the unversioned names.
    for so in "$lib"/lib*.so.*; do
        base=${so%%.so.*}.so
        [[ -e $base ]] || ln -s "$(basename "$so")" "$base"
    done
    if [[ ! -e $lib/stubs/libcuda.so ]]; then
        mkdir -p "$lib/stubs"
        driver_sys=$(ls -d ~/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys | tail -1)
        grep -ohE '^\s*fn cu[A-Za-z0-9_]+\(' "$driver_sys/mod.rs" | sed -E 's/\s*fn //; s/\(//' | sort -u \
            | awk '{print "void " $1 "(void) {}"}' >"$lib/stubs/libcuda_stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 "$lib/stubs/libcuda_stub.c" -o "$lib/stubs/libcuda.so"
    fi
    export LIBRARY_PATH=$lib:$lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
fi
nvcc --version | tail -2
# Hopper (H100/H200): candle's PTX kernels target sm_90 (no GPU here to detect it from).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
cargo build --features cuda --bin cliptta && cargo build -p cliptta-bench --features cuda --example bench_model --example gpu_agreement --example shift_benchmark
# What travels to the GPU machine is limited to 64 MiB: stripped and compressed, the binaries are
# about 9 MB each and cliptta 33 MB (from 70 and 330 MB); carry the ones a run needs.
rm -rf target/gpu-bin && mkdir -p target/gpu-bin
for b in examples/bench_model examples/gpu_agreement examples/shift_benchmark cliptta; do
    strip --strip-all -o "target/gpu-bin/$(basename $b)" "target/debug/$b"
    xz -T0 -6 "target/gpu-bin/$(basename $b)"
done
ls -la target/gpu-bin
