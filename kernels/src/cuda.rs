//! CUDA operators through cudarc (feature `cuda`): cuBLAS for GEMMs (f32, f16, bf16 with f32
//! accumulation), NVRTC-compiled kernels for the rest (f32).
//!
//! cudarc loads the driver, NVRTC and cuBLAS libraries at run time, and panics when one is absent;
//! every entry point therefore probes the libraries first and reports [`KernelError::NoDevice`].
//! `cuda_disabled.rs` is the twin with the same names for builds without the feature.

use std::sync::Arc;

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use half::{bf16, f16};
use ndarray::{Array2, ArrayView2};

use crate::cpu::AttentionShape;
use crate::error::{KernelError, Result};
use crate::Dtype;

/// Whether this build carries the CUDA backend.
pub const COMPILED: bool = true;

/// One GPU as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: u64,
    pub compute_capability: (i32, i32),
    /// Driver API version, e.g. `13.0`.
    pub driver_version: String,
}

fn cuda_err(context: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda {
        context,
        message: e.to_string(),
    }
}

fn blas_err(context: &'static str) -> impl Fn(cudarc::cublas::result::CublasError) -> KernelError {
    move |e| KernelError::Cuda {
        context,
        message: format!("{e:?}"),
    }
}

/// Checks that the driver library can be loaded; without this, cudarc would panic on first use.
fn probe_driver() -> Result<()> {
    // SAFETY: only tries to open the shared library; no symbol is called.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(KernelError::NoDevice(
            "the CUDA driver library (libcuda) is not installed".into(),
        ))
    }
}

fn driver_version() -> String {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: probe_driver succeeded before, and the call only writes one integer.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r == cudarc::driver::sys::cudaError_enum::CUDA_SUCCESS {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    } else {
        "unknown".into()
    }
}

/// The GPUs present, or why there are none.
pub fn devices() -> Result<Vec<GpuInfo>> {
    probe_driver()?;
    let n = CudaContext::device_count()
        .map_err(|e| KernelError::NoDevice(format!("the driver reports: {e}")))?;
    if n <= 0 {
        return Err(KernelError::NoDevice("the driver reports no GPU".into()));
    }
    (0..n as usize)
        .map(|i| {
            let ctx = CudaContext::new(i).map_err(cuda_err("opening a context"))?;
            info_of(&ctx, i)
        })
        .collect()
}

fn info_of(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<GpuInfo> {
    Ok(GpuInfo {
        ordinal,
        name: ctx.name().map_err(cuda_err("device name"))?,
        memory_bytes: ctx.total_mem().map_err(cuda_err("device memory"))? as u64,
        compute_capability: ctx
            .compute_capability()
            .map_err(cuda_err("compute capability"))?,
        driver_version: driver_version(),
    })
}

/// A row-major matrix in device memory.
#[derive(Debug)]
pub struct GpuMatrix {
    rows: usize,
    cols: usize,
    data: Storage,
}

#[derive(Debug)]
enum Storage {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    Bf16(CudaSlice<bf16>),
}

impl GpuMatrix {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> Dtype {
        match self.data {
            Storage::F32(_) => Dtype::F32,
            Storage::F16(_) => Dtype::F16,
            Storage::Bf16(_) => Dtype::Bf16,
        }
    }

    fn f32_mut(&mut self, op: &'static str) -> Result<&mut CudaSlice<f32>> {
        let dtype = self.dtype_name();
        match &mut self.data {
            Storage::F32(s) => Ok(s),
            _ => Err(KernelError::Unsupported { op, dtype }),
        }
    }

    fn f32_ref(&self, op: &'static str) -> Result<&CudaSlice<f32>> {
        match &self.data {
            Storage::F32(s) => Ok(s),
            _ => Err(KernelError::Unsupported {
                op,
                dtype: self.dtype_name(),
            }),
        }
    }

    fn dtype_name(&self) -> &'static str {
        self.dtype().name()
    }
}

/// NVRTC source of the non-GEMM operators. Row-wise operators use one block of 256 threads per
/// row with a shared-memory tree reduction; attention uses one warp per (sequence, head, query)
/// with an online softmax, so the score matrix is never materialised.
const KERNELS: &str = r#"
extern "C" __global__ void bias_gelu_f32(float* x, const float* bias, int rows, int cols) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * cols) return;
    float v = x[i] + bias[i % cols];
    float u = 0.7978845608f * (v + 0.044715f * v * v * v);
    x[i] = 0.5f * v * (1.0f + tanhf(u));
}

__device__ float block_sum(float v, float* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    float r = red[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + o]);
        __syncthreads();
    }
    float r = red[0];
    __syncthreads();
    return r;
}

extern "C" __global__ void layer_norm_f32(float* x, const float* gamma, const float* beta, int cols, float eps) {
    __shared__ float red[256];
    float* row = x + (long)blockIdx.x * cols;
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += row[j];
    float mean = block_sum(s, red) / cols;
    float q = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) { float d = row[j] - mean; q += d * d; }
    float inv = rsqrtf(block_sum(q, red) / cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) row[j] = (row[j] - mean) * inv * gamma[j] + beta[j];
}

extern "C" __global__ void softmax_rows_f32(float* x, int cols) {
    __shared__ float red[256];
    float* row = x + (long)blockIdx.x * cols;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, red);
    if (m == -INFINITY) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) row[j] = 0.0f;
        return;
    }
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) { float e = __expf(row[j] - m); row[j] = e; s += e; }
    float inv = 1.0f / block_sum(s, red);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
}

// grid (sq, heads, batch), block 32. Each lane owns head dimensions lane, lane+32, ... (at most 8).
extern "C" __global__ void attention_f32(const float* q, const float* k, const float* v, float* out,
                                         int sq, int skv, int heads, int kv_heads, int hd, int causal, float scale) {
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x;
    int g = h / (heads / kv_heads);
    int qw = heads * hd, kw = kv_heads * hd;
    const float* qrow = q + ((long)b * sq + i) * qw + h * hd;
    float qv[8], acc[8];
    for (int t = 0; t < 8; t++) {
        int d = lane + 32 * t;
        qv[t] = d < hd ? qrow[d] * scale : 0.0f;
        acc[t] = 0.0f;
    }
    int visible = causal ? skv - sq + i + 1 : skv;
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j < visible; j++) {
        const float* krow = k + ((long)b * skv + j) * kw + g * hd;
        const float* vrow = v + ((long)b * skv + j) * kw + g * hd;
        float dot = 0.0f;
        for (int t = 0; t < 8; t++) { int d = lane + 32 * t; if (d < hd) dot += qv[t] * krow[d]; }
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffff, dot, o);
        float m_new = fmaxf(m, dot);
        float c = __expf(m - m_new), p = __expf(dot - m_new);
        l = l * c + p;
        for (int t = 0; t < 8; t++) { int d = lane + 32 * t; if (d < hd) acc[t] = acc[t] * c + p * vrow[d]; }
        m = m_new;
    }
    float* orow = out + ((long)b * sq + i) * qw + h * hd;
    for (int t = 0; t < 8; t++) { int d = lane + 32 * t; if (d < hd) orow[d] = l > 0.0f ? acc[t] / l : 0.0f; }
}
"#;

/// Largest head dimension of the attention kernel (32 lanes × 8 registers).
pub const MAX_HEAD_DIM: usize = 256;

/// One GPU with its stream, cuBLAS handle and compiled kernels.
pub struct CudaDevice {
    info: GpuInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    bias_gelu: CudaFunction,
    layer_norm: CudaFunction,
    softmax: CudaFunction,
    attention: CudaFunction,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.info)
            .finish()
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal`: probes the libraries, creates a context and compiles the kernels.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        probe_driver()?;
        // SAFETY: each probe only tries to open a shared library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(KernelError::NoDevice(
                "the NVRTC library (libnvrtc) is not installed".into(),
            ));
        }
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(KernelError::NoDevice(
                "the cuBLAS library (libcublas) is not installed".into(),
            ));
        }
        let n = CudaContext::device_count()
            .map_err(|e| KernelError::NoDevice(format!("the driver reports: {e}")))?;
        if ordinal >= n.max(0) as usize {
            return Err(KernelError::NoDevice(format!(
                "cuda:{ordinal} does not exist; the driver reports {n} GPU(s)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("opening a context"))?;
        let info = info_of(&ctx, ordinal)?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(blas_err("creating a cuBLAS handle"))?;
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| KernelError::Cuda {
            context: "compiling kernels with NVRTC",
            message: format!("{e:?}"),
        })?;
        let module = ctx.load_module(ptx).map_err(cuda_err("loading kernels"))?;
        let f = |name| {
            module
                .load_function(name)
                .map_err(cuda_err("loading a kernel"))
        };
        Ok(CudaDevice {
            bias_gelu: f("bias_gelu_f32")?,
            layer_norm: f("layer_norm_f32")?,
            softmax: f("softmax_rows_f32")?,
            attention: f("attention_f32")?,
            info,
            ctx,
            stream,
            blas,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Copies a host matrix to the device, converting to `dtype`.
    pub fn upload(&self, host: ArrayView2<f32>, dtype: Dtype) -> Result<GpuMatrix> {
        let flat: Vec<f32> = host.iter().copied().collect();
        let err = cuda_err("copying to the device");
        let data = match dtype {
            Dtype::F32 => Storage::F32(self.stream.clone_htod(&flat).map_err(err)?),
            Dtype::F16 => {
                let v: Vec<f16> = flat.iter().map(|&x| f16::from_f32(x)).collect();
                Storage::F16(self.stream.clone_htod(&v).map_err(err)?)
            }
            Dtype::Bf16 => {
                let v: Vec<bf16> = flat.iter().map(|&x| bf16::from_f32(x)).collect();
                Storage::Bf16(self.stream.clone_htod(&v).map_err(err)?)
            }
        };
        Ok(GpuMatrix {
            rows: host.nrows(),
            cols: host.ncols(),
            data,
        })
    }

    /// A zero matrix on the device.
    pub fn zeros(&self, rows: usize, cols: usize, dtype: Dtype) -> Result<GpuMatrix> {
        let n = rows * cols;
        let err = cuda_err("allocating device memory");
        let data = match dtype {
            Dtype::F32 => Storage::F32(self.stream.alloc_zeros::<f32>(n).map_err(err)?),
            Dtype::F16 => Storage::F16(self.stream.alloc_zeros::<f16>(n).map_err(err)?),
            Dtype::Bf16 => Storage::Bf16(self.stream.alloc_zeros::<bf16>(n).map_err(err)?),
        };
        Ok(GpuMatrix { rows, cols, data })
    }

    /// Copies a device matrix back to the host as f32.
    pub fn download(&self, m: &GpuMatrix) -> Result<Array2<f32>> {
        let err = cuda_err("copying to the host");
        let flat: Vec<f32> = match &m.data {
            Storage::F32(s) => self.stream.clone_dtoh(s).map_err(err)?,
            Storage::F16(s) => self
                .stream
                .clone_dtoh(s)
                .map_err(err)?
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            Storage::Bf16(s) => self
                .stream
                .clone_dtoh(s)
                .map_err(err)?
                .iter()
                .map(|x| x.to_f32())
                .collect(),
        };
        Array2::from_shape_vec((m.rows, m.cols), flat)
            .map_err(|e| KernelError::shape("download", e.to_string()))
    }

    /// `c ← a · b` (row-major), all three of one element type.
    pub fn gemm(&self, a: &GpuMatrix, b: &GpuMatrix, c: &mut GpuMatrix) -> Result<()> {
        if a.cols != b.rows || c.rows != a.rows || c.cols != b.cols {
            return Err(KernelError::shape(
                "gemm",
                format!(
                    "cannot multiply [{}, {}] by [{}, {}] into [{}, {}]",
                    a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
                ),
            ));
        }
        let (m, k, n) = (
            to_i32("gemm", a.rows)?,
            to_i32("gemm", a.cols)?,
            to_i32("gemm", b.cols)?,
        );
        // cuBLAS is column-major: a row-major C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ, so pass B
        // first and swap m and n; no transposition or copy is needed.
        fn config<T>(m: i32, n: i32, k: i32, one: T, zero: T) -> GemmConfig<T> {
            GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_N,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: n,
                n: m,
                k,
                alpha: one,
                lda: n,
                ldb: k,
                beta: zero,
                ldc: n,
            }
        }
        let err = blas_err("cuBLAS gemm");
        // SAFETY: the shapes were checked above, so every access stays inside the three buffers.
        unsafe {
            match (&a.data, &b.data, &mut c.data) {
                (Storage::F32(a), Storage::F32(b), Storage::F32(c)) => {
                    self.blas.gemm(config(m, n, k, 1.0f32, 0.0), b, a, c)
                }
                (Storage::F16(a), Storage::F16(b), Storage::F16(c)) => {
                    self.blas
                        .gemm(config(m, n, k, f16::ONE, f16::ZERO), b, a, c)
                }
                (Storage::Bf16(a), Storage::Bf16(b), Storage::Bf16(c)) => {
                    self.blas
                        .gemm(config(m, n, k, bf16::ONE, bf16::ZERO), b, a, c)
                }
                _ => {
                    return Err(KernelError::shape(
                        "gemm",
                        "operands must share one element type",
                    ))
                }
            }
        }
        .map_err(err)
    }

    /// `x ← gelu(x + bias)`; `bias` is a `[1, cols]` matrix.
    pub fn bias_gelu(&self, x: &mut GpuMatrix, bias: &GpuMatrix) -> Result<()> {
        if bias.rows * bias.cols != x.cols {
            return Err(KernelError::shape(
                "bias_gelu",
                format!(
                    "bias has {} entries; expected {}",
                    bias.rows * bias.cols,
                    x.cols
                ),
            ));
        }
        let (rows, cols) = (to_i32("bias_gelu", x.rows)?, to_i32("bias_gelu", x.cols)?);
        let total = u32::try_from(x.rows * x.cols)
            .map_err(|_| KernelError::shape("bias_gelu", "too many elements"))?;
        let b = bias.f32_ref("bias_gelu")?;
        let xs = x.f32_mut("bias_gelu")?;
        let mut launch = self.stream.launch_builder(&self.bias_gelu);
        launch.arg(xs).arg(b).arg(&rows).arg(&cols);
        // SAFETY: the kernel bounds-checks against rows·cols, the length of `x`.
        unsafe { launch.launch(LaunchConfig::for_num_elems(total)) }
            .map_err(cuda_err("bias_gelu"))?;
        Ok(())
    }

    /// LayerNorm of every row; `gamma`, `beta` are `[1, cols]`.
    pub fn layer_norm(
        &self,
        x: &mut GpuMatrix,
        gamma: &GpuMatrix,
        beta: &GpuMatrix,
        eps: f32,
    ) -> Result<()> {
        for p in [gamma, beta] {
            if p.rows * p.cols != x.cols {
                return Err(KernelError::shape(
                    "layer_norm",
                    format!(
                        "parameter has {} entries; expected {}",
                        p.rows * p.cols,
                        x.cols
                    ),
                ));
            }
        }
        let (rows, cols) = (to_u32("layer_norm", x.rows)?, to_i32("layer_norm", x.cols)?);
        let (g, b) = (gamma.f32_ref("layer_norm")?, beta.f32_ref("layer_norm")?);
        let xs = x.f32_mut("layer_norm")?;
        let mut launch = self.stream.launch_builder(&self.layer_norm);
        launch.arg(xs).arg(g).arg(b).arg(&cols).arg(&eps);
        // SAFETY: one block per row; threads stride within the row.
        unsafe { launch.launch(row_config(rows)) }.map_err(cuda_err("layer_norm"))?;
        Ok(())
    }

    /// Softmax of every row.
    pub fn softmax_rows(&self, x: &mut GpuMatrix) -> Result<()> {
        let (rows, cols) = (to_u32("softmax", x.rows)?, to_i32("softmax", x.cols)?);
        let xs = x.f32_mut("softmax")?;
        let mut launch = self.stream.launch_builder(&self.softmax);
        launch.arg(xs).arg(&cols);
        // SAFETY: one block per row; threads stride within the row.
        unsafe { launch.launch(row_config(rows)) }.map_err(cuda_err("softmax"))?;
        Ok(())
    }

    /// Attention, same layout and semantics as [`crate::attention`]; `out: [batch·sq, heads·hd]`.
    pub fn attention(
        &self,
        q: &GpuMatrix,
        k: &GpuMatrix,
        v: &GpuMatrix,
        out: &mut GpuMatrix,
        batch: usize,
        shape: AttentionShape,
    ) -> Result<()> {
        shape.validate()?;
        if shape.head_dim > MAX_HEAD_DIM {
            return Err(KernelError::shape(
                "attention",
                format!("head_dim {} exceeds {MAX_HEAD_DIM}", shape.head_dim),
            ));
        }
        if batch == 0
            || q.rows % batch != 0
            || k.rows % batch != 0
            || q.cols != shape.q_width()
            || k.cols != shape.kv_width()
            || v.rows != k.rows
            || v.cols != k.cols
            || out.rows != q.rows
            || out.cols != q.cols
        {
            return Err(KernelError::shape(
                "attention",
                "operand shapes do not match the batch and head layout",
            ));
        }
        let (sq, skv) = (q.rows / batch, k.rows / batch);
        if shape.causal && sq > skv {
            return Err(KernelError::shape(
                "attention",
                "causal attention needs at least as many keys as queries",
            ));
        }
        let args = [sq, skv, shape.heads, shape.kv_heads, shape.head_dim]
            .map(|d| i32::try_from(d).unwrap_or(i32::MAX));
        let causal = i32::from(shape.causal);
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let grid = (
            to_u32("attention", sq)?,
            to_u32("attention", shape.heads)?,
            to_u32("attention", batch)?,
        );
        let (qs, ks, vs) = (
            q.f32_ref("attention")?,
            k.f32_ref("attention")?,
            v.f32_ref("attention")?,
        );
        let os = out.f32_mut("attention")?;
        let mut launch = self.stream.launch_builder(&self.attention);
        launch.arg(qs).arg(ks).arg(vs).arg(os);
        for a in &args {
            launch.arg(a);
        }
        launch.arg(&causal).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: shapes checked above; every index stays within its sequence and head.
        unsafe { launch.launch(cfg) }.map_err(cuda_err("attention"))?;
        Ok(())
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    /// Seconds that `work` takes on the GPU, from CUDA events recorded around it; the stream is
    /// drained before the start event and the end event is waited for, so the measured region
    /// holds exactly this work.
    pub fn time_s(&self, mut work: impl FnMut(&CudaDevice) -> Result<()>) -> Result<f64> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start: CudaEvent = self
            .ctx
            .new_event(flags)
            .map_err(cuda_err("creating an event"))?;
        let end: CudaEvent = self
            .ctx
            .new_event(flags)
            .map_err(cuda_err("creating an event"))?;
        self.synchronize()?;
        start
            .record(&self.stream)
            .map_err(cuda_err("recording an event"))?;
        work(self)?;
        end.record(&self.stream)
            .map_err(cuda_err("recording an event"))?;
        end.synchronize()
            .map_err(cuda_err("waiting for an event"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(cuda_err("reading an event"))?;
        Ok(f64::from(ms) / 1e3)
    }
}

fn row_config(rows: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn to_i32(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| KernelError::shape(op, format!("{v} exceeds the i32 range of the kernel")))
}

fn to_u32(op: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| KernelError::shape(op, format!("{v} exceeds the u32 range of the grid")))
}
