# Sourced by the scripts that run on the GPU machine (gpu_check.sh, gpu_shift.sh): unpacks the
# binaries gpu_build.sh compressed (Python's lzma, since xz may be missing there), pointing `bin`
# at them, and puts the CUDA libraries they link on LD_LIBRARY_PATH.
if compgen -G "$bin/*.xz" >/dev/null; then
    unpacked=$(mktemp -d)
    for packed in "$bin"/*.xz; do
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$packed" "$unpacked/$(basename "$packed" .xz)"
    done
    chmod +x "$unpacked"/*
    bin=$unpacked
fi

# The toolkit's libraries, else those of PyTorch's wheels.
libs=/usr/local/cuda/lib64
libs+=:$(python3 -c 'import nvidia, pathlib; print(":".join(str(p) for d in nvidia.__path__ for p in pathlib.Path(d).glob("*/lib")))' 2>/dev/null)
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
