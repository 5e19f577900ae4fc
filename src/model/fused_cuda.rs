//! CUDA versions of the fused kernels in [`super::fused`]: LayerNorm, softmax over the last
//! dimension and QuickGELU, each with its backward pass, for f32 tensors on a CUDA device.
//!
//! candle-nn's CUDA LayerNorm and softmax have no backward, so with gradients the model used to
//! compose them from candle ops: ten launches for a LayerNorm (six passes over the activations),
//! five for a softmax, three for QuickGELU, each keeping its output for autograd. These kernels
//! make one pass each and keep only their input. The source is compiled once per process with
//! NVRTC (which candle already links), so the build needs no extra CUDA step.

use std::sync::OnceLock;

use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda::cudarc::nvrtc;
use candle_core::cuda::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Shape};

const MODULE: &str = "cliptta_fused";

const SOURCE: &str = r#"
// Sum of `v` over the block; every thread gets the result. Blocks are multiples of 32 threads.
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = lane < warps ? partial[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// Mean and reciprocal standard deviation of one row, two passes (as the CPU kernel).
__device__ void row_stats(const float* x, int d, float eps, float* mean, float* rstd) {
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) s += x[j];
    float m = block_sum(s) / d;
    float q = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) { float c = x[j] - m; q += c * c; }
    *mean = m;
    *rstd = rsqrtf(block_sum(q) / d + eps);
}

// One block per row.
extern "C" __global__ void ln_forward(const float* x, const float* w, const float* b, float* y, int rows, int d, float eps) {
    int row = blockIdx.x;
    if (row >= rows) return;
    const float* xr = x + (unsigned long long)row * d;
    float* yr = y + (unsigned long long)row * d;
    float m, r;
    row_stats(xr, d, eps, &m, &r);
    for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = (xr[j] - m) * r * w[j] + b[j];
}

// dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)); one block per row.
extern "C" __global__ void ln_grad_x(const float* x, const float* w, const float* g, float* dx, int rows, int d, float eps) {
    int row = blockIdx.x;
    if (row >= rows) return;
    const float* xr = x + (unsigned long long)row * d;
    const float* gr = g + (unsigned long long)row * d;
    float* dr = dx + (unsigned long long)row * d;
    float m, r;
    row_stats(xr, d, eps, &m, &r);
    float a = 0.0f, c = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float gw = gr[j] * w[j];
        a += gw;
        c += gw * (xr[j] - m) * r;
    }
    a = block_sum(a) / d;
    c = block_sum(c) / d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) dr[j] = r * (gr[j] * w[j] - a - (xr[j] - m) * r * c);
}

// Mean and rstd of every row into stats[2 * row + {0, 1}]; one block per row.
extern "C" __global__ void ln_row_stats(const float* x, float* stats, int rows, int d, float eps) {
    int row = blockIdx.x;
    if (row >= rows) return;
    float m, r;
    row_stats(x + (unsigned long long)row * d, d, eps, &m, &r);
    if (threadIdx.x == 0) { stats[2 * row] = m; stats[2 * row + 1] = r; }
}

// out[0][j] += sum over a chunk of rows of g xhat, out[1][j] += sum of g. Blocks of 32 x 8
// threads: 32 columns, 8 rows at a time; blockIdx.y picks the chunk of `chunk` rows.
extern "C" __global__ void ln_grad_wb(const float* x, const float* g, const float* stats, float* out, int rows, int d, int chunk) {
    __shared__ float sw[8][33], sb[8][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int begin = blockIdx.y * chunk, end = begin + chunk < rows ? begin + chunk : rows;
    float aw = 0.0f, ab = 0.0f;
    if (j < d) {
        for (int row = begin + threadIdx.y; row < end; row += 8) {
            unsigned long long k = (unsigned long long)row * d + j;
            aw += g[k] * (x[k] - stats[2 * row]) * stats[2 * row + 1];
            ab += g[k];
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        for (int t = 1; t < 8; ++t) { aw += sw[t][threadIdx.x]; ab += sb[t][threadIdx.x]; }
        atomicAdd(out + j, aw);
        atomicAdd(out + d + j, ab);
    }
}

// One warp per row.
extern "C" __global__ void softmax_forward(const float* x, float* y, int rows, int d) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + (unsigned long long)row * d;
    float* yr = y + (unsigned long long)row * d;
    float m = __int_as_float(0xff800000);  // -inf; NVRTC has no math.h macros
    for (int j = lane; j < d; j += 32) m = fmaxf(m, xr[j]);
    m = warp_max(m);
    float s = 0.0f;
    for (int j = lane; j < d; j += 32) { float e = expf(xr[j] - m); yr[j] = e; s += e; }
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < d; j += 32) yr[j] *= inv;
}

// dx = y (g - sum(g y)); one warp per row.
extern "C" __global__ void softmax_grad(const float* y, const float* g, float* dx, int rows, int d) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* yr = y + (unsigned long long)row * d;
    const float* gr = g + (unsigned long long)row * d;
    float* dr = dx + (unsigned long long)row * d;
    float dot = 0.0f;
    for (int j = lane; j < d; j += 32) dot += gr[j] * yr[j];
    dot = warp_sum(dot);
    for (int j = lane; j < d; j += 32) dr[j] = yr[j] * (gr[j] - dot);
}

extern "C" __global__ void quick_gelu_forward(const float* x, float* y, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v / (1.0f + expf(-1.702f * v));
    }
}

extern "C" __global__ void quick_gelu_grad(const float* x, const float* g, float* dx, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float s = 1.0f / (1.0f + expf(-1.702f * v));
        dx[i] = g[i] * (s + 1.702f * v * s * (1.0f - s));
    }
}
"#;

/// The kernels' PTX, compiled on first use.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let compiled = PTX.get_or_init(|| nvrtc::compile_ptx(SOURCE).map(|p| p.to_src()).map_err(|e| format!("{e:?}")));
    match compiled {
        Ok(ptx) => Ok(ptx.as_str()),
        Err(e) => bail!("compiling cliptta's CUDA kernels with NVRTC: {e}"),
    }
}

/// The contiguous f32 data of a storage, from its layout's offset.
fn view<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = l.contiguous_offsets() else { bail!("{op}: input is not contiguous") };
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

fn rows_and_width(l: &Layout) -> Result<(i32, i32)> {
    let d = last_dim(l);
    let rows = l.shape().elem_count() / d;
    match (i32::try_from(rows), i32::try_from(d)) {
        (Ok(r), Ok(d)) => Ok((r, d)),
        _ => bail!("tensor of shape {:?} is too large for the fused CUDA kernels", l.dims()),
    }
}

/// Launches kernel `$name` of the module with `$cfg` and the arguments in order.
macro_rules! launch {
    ($dev:expr, $name:literal, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let func = $dev.get_or_load_custom_func($name, MODULE, ptx()?)?;
        let mut args = func.builder();
        $(args.arg($arg);)+
        // Safety: every kernel reads and writes within the row/element counts passed with it,
        // which come from the same layouts as the buffers.
        unsafe { args.launch($cfg) }.w()?;
    }};
}

fn per_row(rows: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.max(1) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn warp_per_row(rows: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: ((rows.max(1) as u32).div_ceil(8), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn output(dev: &CudaDevice, n: usize) -> Result<CudaSlice<f32>> {
    // Safety: every kernel below writes each element of its output.
    unsafe { dev.alloc::<f32>(n) }
}

/// `(x - mean) * rstd * w + b` over the last dimension.
pub(crate) fn layer_norm(x: (&CudaStorage, &Layout), w: (&CudaStorage, &Layout), b: (&CudaStorage, &Layout), eps: f64) -> Result<(CudaStorage, Shape)> {
    let dev = &x.0.device;
    let (rows, d) = rows_and_width(x.1)?;
    let (xv, wv, bv) = (view(x.0, x.1, "fused-layer-norm")?, view(w.0, w.1, "fused-layer-norm")?, view(b.0, b.1, "fused-layer-norm")?);
    let mut y = output(dev, x.1.shape().elem_count())?;
    let eps = eps as f32;
    launch!(dev, "ln_forward", per_row(rows), &xv, &wv, &bv, &mut y, &rows, &d, &eps);
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), x.1.shape().clone()))
}

/// The LayerNorm's gradient with respect to its input.
pub(crate) fn layer_norm_grad_x(x: (&CudaStorage, &Layout), w: (&CudaStorage, &Layout), g: (&CudaStorage, &Layout), eps: f64) -> Result<(CudaStorage, Shape)> {
    let dev = &x.0.device;
    let (rows, d) = rows_and_width(x.1)?;
    let op = "fused-layer-norm-grad-x";
    let (xv, wv, gv) = (view(x.0, x.1, op)?, view(w.0, w.1, op)?, view(g.0, g.1, op)?);
    let mut dx = output(dev, x.1.shape().elem_count())?;
    let eps = eps as f32;
    launch!(dev, "ln_grad_x", per_row(rows), &xv, &wv, &gv, &mut dx, &rows, &d, &eps);
    Ok((CudaStorage::wrap_cuda_slice(dx, dev.clone()), x.1.shape().clone()))
}

/// The LayerNorm's weight and bias gradients, as a `[2, d]` tensor.
pub(crate) fn layer_norm_grad_wb(x: (&CudaStorage, &Layout), g: (&CudaStorage, &Layout), eps: f64) -> Result<(CudaStorage, Shape)> {
    let dev = &x.0.device;
    let (rows, d) = rows_and_width(x.1)?;
    let op = "fused-layer-norm-grad-weight-bias";
    let (xv, gv) = (view(x.0, x.1, op)?, view(g.0, g.1, op)?);
    let mut stats = output(dev, 2 * rows as usize)?;
    let eps = eps as f32;
    launch!(dev, "ln_row_stats", per_row(rows), &xv, &mut stats, &rows, &d, &eps);
    // Partial sums over chunks of rows, added atomically: enough blocks to fill the GPU
    // whatever the width.
    let chunk: i32 = 256;
    let cfg = LaunchConfig {
        grid_dim: ((d as u32).div_ceil(32), (rows.max(1) as u32).div_ceil(chunk as u32), 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    let mut out = dev.alloc_zeros::<f32>(2 * d as usize)?;
    launch!(dev, "ln_grad_wb", cfg, &xv, &gv, &stats, &mut out, &rows, &d, &chunk);
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((2, d as usize))))
}

/// Softmax over the last dimension.
pub(crate) fn softmax(x: (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
    let dev = &x.0.device;
    let (rows, d) = rows_and_width(x.1)?;
    let xv = view(x.0, x.1, "fused-softmax")?;
    let mut y = output(dev, x.1.shape().elem_count())?;
    launch!(dev, "softmax_forward", warp_per_row(rows), &xv, &mut y, &rows, &d);
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), x.1.shape().clone()))
}

/// The softmax's input gradient from its output `y` and the output gradient `g`.
pub(crate) fn softmax_grad(y: (&CudaStorage, &Layout), g: (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
    let dev = &y.0.device;
    let (rows, d) = rows_and_width(y.1)?;
    let (yv, gv) = (view(y.0, y.1, "fused-softmax-grad")?, view(g.0, g.1, "fused-softmax-grad")?);
    let mut dx = output(dev, y.1.shape().elem_count())?;
    launch!(dev, "softmax_grad", warp_per_row(rows), &yv, &gv, &mut dx, &rows, &d);
    Ok((CudaStorage::wrap_cuda_slice(dx, dev.clone()), y.1.shape().clone()))
}

/// `x * sigmoid(1.702 x)`.
pub(crate) fn quick_gelu(x: (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
    let dev = &x.0.device;
    let n = x.1.shape().elem_count();
    let xv = view(x.0, x.1, "fused-quick-gelu")?;
    let mut y = output(dev, n)?;
    let count = n as u64;
    launch!(dev, "quick_gelu_forward", elementwise(n), &xv, &mut y, &count);
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), x.1.shape().clone()))
}

/// QuickGELU's input gradient.
pub(crate) fn quick_gelu_grad(x: (&CudaStorage, &Layout), g: (&CudaStorage, &Layout)) -> Result<(CudaStorage, Shape)> {
    let dev = &x.0.device;
    let n = x.1.shape().elem_count();
    let (xv, gv) = (view(x.0, x.1, "fused-quick-gelu-grad")?, view(g.0, g.1, "fused-quick-gelu-grad")?);
    let mut dx = output(dev, n)?;
    let count = n as u64;
    launch!(dev, "quick_gelu_grad", elementwise(n), &xv, &gv, &mut dx, &count);
    Ok((CudaStorage::wrap_cuda_slice(dx, dev.clone()), x.1.shape().clone()))
}
