#!/usr/bin/env python3
"""Side-by-side throughput of cliptta (candle) and PyTorch on the same CLIP vision weights.

For each batch size this runs, in separate processes so that peak memory is per measurement:
  * PyTorch: transformers' CLIPVisionModelWithProjection, same weights, same threads; zero-shot
    forward images/s under torch.no_grad, and one LayerNorm-only adaptation step (forward,
    backward of sum(z * r) on unit embeddings, Adam) in seconds;
  * cliptta: `bench/examples/bench_model.rs` with `--json`, the same two measurements;
then prints the ratio (cliptta / PyTorch throughput; above 1 means cliptta is faster).

Usage (installs torch and transformers into a venv on first use):
    scripts/bench_pytorch.py --shape vit-b-32 --batch 32 --batch 64
    scripts/bench_pytorch.py --model data/models/default --batch 128
    CLIPTTA_BENCH_PYTHON=python3 CLIPTTA_BENCH_BIN=gpu/bench_model \
        scripts/bench_pytorch.py --device cuda --shape vit-b-16 --batch 64    # on a GPU machine

On `--device cuda` both sides run on the first GPU, each timing ends with a device
synchronisation, and peak memory is the GPU's used memory (nvidia-smi, sampled every 20 ms while
the process runs, minus what was in use before it started), so both include their CUDA context.
CLIPTTA_BENCH_PYTHON names a Python that already has torch and transformers (no venv is made).

The weights come from a checkpoint directory: `--model DIR` or, for `--shape`, a random
checkpoint written once by `bench_model --keep` under target/bench-models/.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("CLIPTTA_BENCH_VENV", ROOT / "target" / "bench-venv"))
PACKAGES = ["torch", "transformers", "safetensors", "numpy"]


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with {', '.join(PACKAGES)} (first run only)", file=sys.stderr)
        venv.create(VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    return python


TORCH_WORKER = r"""
import json, resource, sys, time
import torch
from transformers import CLIPVisionModelWithProjection
model_dir, batch, reps, threads, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
torch.manual_seed(0)
model = CLIPVisionModelWithProjection.from_pretrained(model_dir, attn_implementation="eager").float().to(device)
size = model.config.image_size
pixels = torch.randn(batch, 3, size, size).to(device)
direction = torch.randn(batch, model.config.projection_dim).to(device)
def sync():
    if device != "cpu":
        torch.cuda.synchronize()
for p in model.parameters():
    p.requires_grad_(False)
norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
params = [p for m in norms for p in (m.weight, m.bias)]
for p in params:
    p.requires_grad_(True)
opt = torch.optim.Adam(params, lr=1e-4)
model.eval()
with torch.no_grad():
    model(pixel_values=pixels)
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        model(pixel_values=pixels)
    sync()
    fwd = (time.perf_counter() - t) / reps
def step():
    opt.zero_grad()
    z = model(pixel_values=pixels).image_embeds
    z = z / z.norm(dim=-1, keepdim=True)
    (z * direction).sum().backward()
    opt.step()
step()
sync()
t = time.perf_counter()
for _ in range(reps):
    step()
sync()
st = (time.perf_counter() - t) / reps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"batch": batch, "forward_s": fwd, "step_s": st, "peak_rss_mib": peak}))
"""


class GpuMemory:
    """The most GPU memory in use (MiB) while the block runs, over what was in use before it."""

    def __enter__(self):
        query = ["nvidia-smi", "--id=0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        self.before = int(subprocess.run(query, check=True, capture_output=True, text=True).stdout.split()[0])
        self.peak = self.before
        self.proc = subprocess.Popen([*query, "-lms", "20"], stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak, int(line))

    def __exit__(self, *exc):
        self.proc.terminate()
        self.reader.join(timeout=5)
        self.mib = self.peak - self.before


def checked(cmd: list, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return out


def measured(cmd: list, device: str, **kw) -> tuple:
    """Runs `cmd`; returns its output and, off the CPU, the GPU memory it used at most (MiB)."""
    if device == "cpu":
        return checked(cmd, **kw), None
    with GpuMemory() as mem:
        out = checked(cmd, **kw)
    return out, mem.mib


def run_torch(python: Path, model_dir: Path, batch: int, reps: int, threads: int, device: str) -> dict:
    cmd = [str(python), "-c", TORCH_WORKER, str(model_dir), str(batch), str(reps), str(threads), device]
    out, gpu_mib = measured(cmd, device)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {**row, "peak_mib": gpu_mib if gpu_mib is not None else row["peak_rss_mib"]}


def run_ours(model_args: list, batch: int, reps: int, device: str) -> dict:
    # CLIPTTA_BENCH_BIN skips cargo (e.g. while another build holds the target directory).
    binary = os.environ.get("CLIPTTA_BENCH_BIN")
    prefix = [binary] if binary else ["cargo", "run", "--quiet", "-p", "cliptta-bench", "--example", "bench_model", "--"]
    ours_device = "cpu" if device == "cpu" else "cuda:0"
    cmd = [*prefix, *model_args, "--batch", str(batch), "--reps", str(reps), "--no-tta", "--json", "--device", ours_device]
    out, gpu_mib = measured(cmd, device, cwd=ROOT)
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    return {**rows[-1], "peak_mib": gpu_mib if gpu_mib is not None else rows[-1]["peak_rss_mib"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="vit-b-32", help="random weights of this shape: vit-b-32 or vit-b-16")
    ap.add_argument("--model", type=Path, help="a checkpoint directory instead of random weights")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (repeatable)")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions after one warm-up")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both sides")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both sides run")
    args = ap.parse_args()
    batches = args.batch or [32, 64]
    if args.model:
        model_dir = args.model.resolve()
        ours_model = ["--model", str(model_dir)]
    else:
        model_dir = ROOT / "target" / "bench-models" / args.shape
        ours_model = ["--shape", args.shape, "--keep", str(model_dir)]
        if not (model_dir / "model.safetensors").exists():
            # bench_model writes the random checkpoint on its first run.
            run_ours(ours_model, batches[0], 1, "cpu")
    python = Path(os.environ["CLIPTTA_BENCH_PYTHON"]) if "CLIPTTA_BENCH_PYTHON" in os.environ else ensure_venv()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    label = str(args.model) if args.model else args.shape
    memory = "peak RSS" if args.device == "cpu" else "peak GPU"
    print(f"model={label} threads={args.threads} device={args.device}")
    print("| batch | PyTorch fwd img/s | cliptta fwd img/s | ratio | PyTorch step s | cliptta step s | ratio "
          f"| PyTorch step/fwd | cliptta step/fwd | PyTorch {memory} MiB | cliptta {memory} MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for b in batches:
        t = run_torch(python, model_dir, b, args.reps, args.threads, args.device)
        o = run_ours(ours_model, b, args.reps, args.device)
        print(
            f"| {b} | {b / t['forward_s']:.1f} | {b / o['forward_s']:.1f} | {t['forward_s'] / o['forward_s']:.2f} "
            f"| {t['step_s']:.2f} | {o['step_s']:.2f} | {t['step_s'] / o['step_s']:.2f} "
            f"| {t['step_s'] / t['forward_s']:.2f} | {o['step_s'] / o['forward_s']:.2f} "
            f"| {t['peak_mib']:.0f} | {o['peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
