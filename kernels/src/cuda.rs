//! CUDA operators through cudarc (feature `cuda`): cuBLAS for GEMMs, NVRTC-compiled kernels for
//! everything else, each in f32, f16 and bf16 with f32 accumulation.
//!
//! cudarc loads the driver, NVRTC and cuBLAS libraries at run time and panics when one is absent;
//! every entry point therefore probes the libraries first and reports [`KernelError::NoDevice`].
//! `cuda_disabled.rs` is the twin with the same names for builds without the feature.
//!
//! The kernels are CUDA C++ under `src/nvrtc/`: one templated source per family (elementwise,
//! row-wise, attention, MoE) instantiated once per element type by a macro, so kernel
//! `bias_gelu_f16` is `bias_gelu<f16_t>`. [`compile_kernels`] turns them into a cubin for the GPU's
//! architecture; it needs only NVRTC, not a GPU, so tests compile them wherever NVRTC exists.
//!
//! Tensors are row-major [`GpuMatrix`] values of one element type; every operator takes operands
//! of one element type (the caller converts at upload) and reports [`KernelError::DtypeMismatch`]
//! otherwise. All work is queued on one stream; [`CudaDevice::time_s`] brackets work with events.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchArgs, LaunchConfig,
    PushKernelArg,
};
use half::{bf16, f16};
use ndarray::{Array2, ArrayView2};

use crate::cpu::{AttentionShape, MoeLayer};
use crate::error::{KernelError, Result};
use crate::Dtype;

/// Whether this build carries the CUDA backend.
pub const COMPILED: bool = true;

pub use crate::program::{kernel_source, KERNEL_FAMILIES, MAX_HEAD_DIM};

/// Threads per block of the row-wise kernels (`ROW_THREADS` in rows.cu).
const ROW_THREADS: u32 = 256;
/// Threads per block of the grid-stride elementwise kernels.
const ELEMENTWISE_THREADS: u32 = 256;
/// Most blocks of a grid-stride launch; larger tensors loop.
const MAX_GRID_BLOCKS: u64 = 1 << 16;
/// CUDA's limit on the second and third grid dimensions.
const MAX_GRID_YZ: usize = 65_535;

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

fn nvrtc_err(context: &'static str) -> impl Fn(cudarc::nvrtc::result::NvrtcError) -> KernelError {
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

fn probe_nvrtc() -> Result<()> {
    // SAFETY: only tries to open the shared library.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(KernelError::NoDevice(
            "the NVRTC library (libnvrtc) is not installed".into(),
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

/// Compiles [`kernel_source`] with NVRTC into a cubin for compute capability `major.minor`
/// (`sm_XY`). Needs libnvrtc but no GPU or driver. A cubin rather than PTX, so the driver never
/// has to JIT PTX from an NVRTC newer than itself.
pub fn compile_kernels(compute_capability: (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    probe_nvrtc()?;
    let (major, minor) = compute_capability;
    let src = CString::new(kernel_source()).map_err(|_| KernelError::Cuda {
        context: "compiling kernels with NVRTC",
        message: "the kernel source contains a NUL byte".into(),
    })?;
    let prog = result::create_program(&src, Some(c"plexserve_kernels.cu"))
        .map_err(nvrtc_err("creating the NVRTC program"))?;
    let options = [
        format!("--gpu-architecture=sm_{major}{minor}"),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` was created above and is destroyed once, below; `src` outlives it.
    let out = unsafe {
        match result::compile_program(prog, &options) {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|raw| {
                        let bytes: Vec<u8> = raw
                            .iter()
                            .map(|&c| c as u8)
                            .take_while(|&b| b != 0)
                            .collect();
                        String::from_utf8_lossy(&bytes).into_owned()
                    })
                    .unwrap_or_default();
                Err(KernelError::Cuda {
                    context: "compiling kernels with NVRTC",
                    message: format!("{e:?} for sm_{major}{minor}: {log}"),
                })
            }
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(nvrtc_err("reading the cubin size"))
                    .and_then(|()| {
                        let mut cubin = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                            .result()
                            .map_err(nvrtc_err("reading the cubin"))
                            .map(|()| cubin)
                    })
            }
        }
    };
    // SAFETY: created above, not destroyed before.
    unsafe { result::destroy_program(prog) }.map_err(nvrtc_err("destroying the program"))?;
    out
}

/// Cubins already compiled in this process, per compute capability: opening a device twice does
/// not compile twice.
fn cached_cubin(cc: (i32, i32)) -> Result<Arc<Vec<u8>>> {
    type Cubins = HashMap<(i32, i32), Arc<Vec<u8>>>;
    static CACHE: OnceLock<Mutex<Cubins>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().ok().and_then(|m| m.get(&cc).cloned()) {
        return Ok(c);
    }
    let cubin = Arc::new(compile_kernels(cc)?);
    if let Ok(mut m) = cache.lock() {
        m.insert(cc, cubin.clone());
    }
    Ok(cubin)
}

/// Device memory of one element type.
#[derive(Debug)]
enum Storage {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    Bf16(CudaSlice<bf16>),
}

impl Storage {
    fn dtype(&self) -> Dtype {
        match self {
            Storage::F32(_) => Dtype::F32,
            Storage::F16(_) => Dtype::F16,
            Storage::Bf16(_) => Dtype::Bf16,
        }
    }

    /// Pushes the buffer as a read-only kernel argument.
    fn arg<'a>(&'a self, launch: &mut LaunchArgs<'a>) {
        match self {
            Storage::F32(s) => launch.arg(s),
            Storage::F16(s) => launch.arg(s),
            Storage::Bf16(s) => launch.arg(s),
        };
    }

    /// Pushes the buffer as a written kernel argument.
    fn arg_mut<'a>(&'a mut self, launch: &mut LaunchArgs<'a>) {
        match self {
            Storage::F32(s) => launch.arg(s),
            Storage::F16(s) => launch.arg(s),
            Storage::Bf16(s) => launch.arg(s),
        };
    }
}

/// A row-major matrix in device memory.
#[derive(Debug)]
pub struct GpuMatrix {
    rows: usize,
    cols: usize,
    data: Storage,
}

impl GpuMatrix {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// Keys and values of the past positions of a batch of sequences, on the GPU: `capacity`
/// positions per sequence are allocated once, and appends write in place.
#[derive(Debug)]
pub struct GpuKvCache {
    shape: AttentionShape,
    batch: usize,
    capacity: usize,
    len: usize,
    /// `[batch · capacity, kv_heads · head_dim]`; sequence `b` owns rows `b·capacity ..`.
    k: GpuMatrix,
    v: GpuMatrix,
}

impl GpuKvCache {
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions cached per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn shape(&self) -> AttentionShape {
        self.shape
    }

    pub fn dtype(&self) -> Dtype {
        self.k.dtype()
    }

    /// Keeps the first `len` positions of every sequence (no effect if it holds fewer): how a
    /// server drops a finished request's continuation or a profiler rewinds between runs.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// One expert's FFN weights on the device.
#[derive(Debug)]
struct GpuExpert {
    w1: GpuMatrix,
    b1: GpuMatrix,
    w2: GpuMatrix,
    b2: GpuMatrix,
}

/// Buffers of a MoE forward pass, sized for `tokens` and grown when a larger batch comes, so
/// steady-state calls allocate nothing.
#[derive(Debug)]
struct MoeWorkspace {
    tokens: usize,
    logits: GpuMatrix,
    chosen: CudaSlice<i32>,
    weight: CudaSlice<f32>,
    /// Token rows of every expert, concatenated in expert order, and their gate weights.
    rows: CudaSlice<i32>,
    gates: CudaSlice<f32>,
    xe: GpuMatrix,
    hidden: GpuMatrix,
    ye: GpuMatrix,
    acc: CudaSlice<f32>,
    host_chosen: Vec<i32>,
    host_weight: Vec<f32>,
    host_rows: Vec<i32>,
    host_gates: Vec<f32>,
    counts: Vec<usize>,
    next: Vec<usize>,
}

/// A mixture-of-experts FFN on the device: router `[hidden, experts]` and per-expert GeLU FFNs,
/// with top-k routing (see [`crate::moe_ffn`]).
#[derive(Debug)]
pub struct GpuMoeLayer {
    router: GpuMatrix,
    experts: Vec<GpuExpert>,
    top_k: usize,
    hidden: usize,
    ffn: usize,
    work: Option<MoeWorkspace>,
}

impl GpuMoeLayer {
    pub fn experts(&self) -> usize {
        self.experts.len()
    }

    pub fn top_k(&self) -> usize {
        self.top_k
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn ffn(&self) -> usize {
        self.ffn
    }

    pub fn dtype(&self) -> Dtype {
        self.router.dtype()
    }
}

/// Every kernel family, one compiled function per element type.
struct Family([CudaFunction; 3]);

impl Family {
    fn get(&self, dtype: Dtype) -> &CudaFunction {
        &self.0[match dtype {
            Dtype::F32 => 0,
            Dtype::F16 => 1,
            Dtype::Bf16 => 2,
        }]
    }
}

struct Kernels {
    bias_gelu: Family,
    silu_mul: Family,
    from_f32: Family,
    layer_norm: Family,
    rms_norm: Family,
    softmax_rows: Family,
    attention: Family,
    kv_append: Family,
    moe_route: Family,
    moe_gather: Family,
    moe_scatter: Family,
}

/// One GPU with its stream, cuBLAS handle and compiled kernels.
pub struct CudaDevice {
    info: GpuInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.info)
            .finish()
    }
}

/// Checks that all operands share one element type and returns it.
fn one_dtype(op: &'static str, dtypes: &[Dtype]) -> Result<Dtype> {
    let first = dtypes[0];
    if dtypes.iter().all(|&d| d == first) {
        Ok(first)
    } else {
        Err(KernelError::DtypeMismatch {
            op,
            found: dtypes
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn check_vector(op: &'static str, what: &str, m: &GpuMatrix, len: usize) -> Result<()> {
    if m.len() == len {
        Ok(())
    } else {
        Err(KernelError::shape(
            op,
            format!("{what} has {} entries; expected {len}", m.len()),
        ))
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal`: probes the libraries, creates a context and compiles the kernels.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        probe_driver()?;
        probe_nvrtc()?;
        // SAFETY: only tries to open a shared library.
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
        let cubin = cached_cubin(info.compute_capability)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin.as_ref().clone()))
            .map_err(cuda_err("loading kernels"))?;
        let family = |name: &str| -> Result<Family> {
            let f = |suffix: &str| {
                module
                    .load_function(&format!("{name}_{suffix}"))
                    .map_err(cuda_err("loading a kernel"))
            };
            Ok(Family([f("f32")?, f("f16")?, f("bf16")?]))
        };
        let kernels = Kernels {
            bias_gelu: family("bias_gelu")?,
            silu_mul: family("silu_mul")?,
            from_f32: family("from_f32")?,
            layer_norm: family("layer_norm")?,
            rms_norm: family("rms_norm")?,
            softmax_rows: family("softmax_rows")?,
            attention: family("attention")?,
            kv_append: family("kv_append")?,
            moe_route: family("moe_route")?,
            moe_gather: family("moe_gather")?,
            moe_scatter: family("moe_scatter")?,
        };
        Ok(CudaDevice {
            info,
            ctx,
            stream,
            blas,
            kernels,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    fn alloc(&self, len: usize, dtype: Dtype) -> Result<Storage> {
        let err = cuda_err("allocating device memory");
        Ok(match dtype {
            Dtype::F32 => Storage::F32(self.stream.alloc_zeros::<f32>(len).map_err(err)?),
            Dtype::F16 => Storage::F16(self.stream.alloc_zeros::<f16>(len).map_err(err)?),
            Dtype::Bf16 => Storage::Bf16(self.stream.alloc_zeros::<bf16>(len).map_err(err)?),
        })
    }

    /// Copies a host matrix to the device, converting to `dtype`.
    pub fn upload(&self, host: ArrayView2<f32>, dtype: Dtype) -> Result<GpuMatrix> {
        let mut m = self.zeros(host.nrows(), host.ncols(), dtype)?;
        self.copy_from_host(host, &mut m)?;
        Ok(m)
    }

    /// Overwrites a device matrix with a host matrix of the same shape, converting to the
    /// device matrix's element type.
    pub fn copy_from_host(&self, host: ArrayView2<f32>, dst: &mut GpuMatrix) -> Result<()> {
        if host.dim() != (dst.rows, dst.cols) {
            return Err(KernelError::shape(
                "copy_from_host",
                format!(
                    "host matrix is {:?} but the device matrix is [{}, {}]",
                    host.dim(),
                    dst.rows,
                    dst.cols
                ),
            ));
        }
        let err = cuda_err("copying to the device");
        match &mut dst.data {
            Storage::F32(s) => {
                let flat: Vec<f32> = host.iter().copied().collect();
                self.stream.memcpy_htod(&flat, s).map_err(err)
            }
            Storage::F16(s) => {
                let flat: Vec<f16> = host.iter().map(|&x| f16::from_f32(x)).collect();
                self.stream.memcpy_htod(&flat, s).map_err(err)
            }
            Storage::Bf16(s) => {
                let flat: Vec<bf16> = host.iter().map(|&x| bf16::from_f32(x)).collect();
                self.stream.memcpy_htod(&flat, s).map_err(err)
            }
        }
    }

    /// A zero matrix on the device.
    pub fn zeros(&self, rows: usize, cols: usize, dtype: Dtype) -> Result<GpuMatrix> {
        Ok(GpuMatrix {
            rows,
            cols,
            data: self.alloc(rows * cols, dtype)?,
        })
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

    /// `c ← a · b` (row-major), all three of one element type; cuBLAS accumulates in f32 for
    /// every element type (`cublasGemmEx` with `CUBLAS_COMPUTE_32F` for f16 and bf16).
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
        one_dtype("gemm", &[a.dtype(), b.dtype(), c.dtype()])?;
        self.gemm_prefix(&a.data, &b.data, &mut c.data, a.rows, a.cols, b.cols)
    }

    /// `c[..m·n] ← a[..m·k] · b[..k·n]`: the first `m` rows of row-major buffers, so workspaces
    /// sized for the largest batch serve smaller ones. Callers check the lengths.
    fn gemm_prefix(
        &self,
        a: &Storage,
        b: &Storage,
        c: &mut Storage,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let dims = (to_i32("gemm", m)?, to_i32("gemm", k)?, to_i32("gemm", n)?);
        let err = blas_err("cuBLAS gemm");
        // SAFETY: callers checked that a, b, c hold at least m·k, k·n, m·n elements.
        unsafe {
            match (a, b, c) {
                (Storage::F32(a), Storage::F32(b), Storage::F32(c)) => {
                    gemm_typed(&self.blas, a, b, c, dims, 1.0f32, 0.0)
                }
                (Storage::F16(a), Storage::F16(b), Storage::F16(c)) => {
                    gemm_typed(&self.blas, a, b, c, dims, f16::ONE, f16::ZERO)
                }
                (Storage::Bf16(a), Storage::Bf16(b), Storage::Bf16(c)) => {
                    gemm_typed(&self.blas, a, b, c, dims, bf16::ONE, bf16::ZERO)
                }
                (a, b, c) => {
                    return Err(KernelError::DtypeMismatch {
                        op: "gemm",
                        found: format!(
                            "{}, {}, {}",
                            a.dtype().name(),
                            b.dtype().name(),
                            c.dtype().name()
                        ),
                    })
                }
            }
        }
        .map_err(err)
    }

    /// `x ← gelu(x + bias)`; `bias` holds `cols` entries (a `[1, cols]` matrix).
    pub fn bias_gelu(&self, x: &mut GpuMatrix, bias: &GpuMatrix) -> Result<()> {
        check_vector("bias_gelu", "bias", bias, x.cols)?;
        let dtype = one_dtype("bias_gelu", &[x.dtype(), bias.dtype()])?;
        let (rows, cols) = (x.rows, x.cols);
        self.bias_gelu_rows(&mut x.data, &bias.data, rows, cols, dtype)
    }

    /// `bias_gelu` of the first `rows` rows of a `[_, cols]` buffer.
    fn bias_gelu_rows(
        &self,
        x: &mut Storage,
        bias: &Storage,
        rows: usize,
        cols: usize,
        dtype: Dtype,
    ) -> Result<()> {
        let total = to_i64(rows * cols);
        let cols = to_i32("bias_gelu", cols)?;
        let mut launch = self
            .stream
            .launch_builder(self.kernels.bias_gelu.get(dtype));
        x.arg_mut(&mut launch);
        bias.arg(&mut launch);
        launch.arg(&total).arg(&cols);
        // SAFETY: grid-stride loop over rows·cols elements of x; bias has cols entries.
        unsafe { launch.launch(elementwise_config(total)) }.map_err(cuda_err("bias_gelu"))?;
        Ok(())
    }

    /// `gate ← silu(gate) · up` (SwiGLU), elementwise over equal shapes.
    pub fn silu_mul(&self, gate: &mut GpuMatrix, up: &GpuMatrix) -> Result<()> {
        if (gate.rows, gate.cols) != (up.rows, up.cols) {
            return Err(KernelError::shape(
                "silu_mul",
                format!(
                    "gate is [{}, {}] but up is [{}, {}]",
                    gate.rows, gate.cols, up.rows, up.cols
                ),
            ));
        }
        let dtype = one_dtype("silu_mul", &[gate.dtype(), up.dtype()])?;
        let total = to_i64(gate.len());
        let mut launch = self.stream.launch_builder(self.kernels.silu_mul.get(dtype));
        gate.data.arg_mut(&mut launch);
        up.data.arg(&mut launch);
        launch.arg(&total);
        // SAFETY: grid-stride loop over the common length of both buffers.
        unsafe { launch.launch(elementwise_config(total)) }.map_err(cuda_err("silu_mul"))?;
        Ok(())
    }

    /// LayerNorm of every row; `gamma`, `beta` hold `cols` entries.
    pub fn layer_norm(
        &self,
        x: &mut GpuMatrix,
        gamma: &GpuMatrix,
        beta: &GpuMatrix,
        eps: f32,
    ) -> Result<()> {
        check_vector("layer_norm", "gamma", gamma, x.cols)?;
        check_vector("layer_norm", "beta", beta, x.cols)?;
        let dtype = one_dtype("layer_norm", &[x.dtype(), gamma.dtype(), beta.dtype()])?;
        let (rows, cols) = (to_u32("layer_norm", x.rows)?, to_i32("layer_norm", x.cols)?);
        if rows == 0 {
            return Ok(());
        }
        let mut launch = self
            .stream
            .launch_builder(self.kernels.layer_norm.get(dtype));
        x.data.arg_mut(&mut launch);
        gamma.data.arg(&mut launch);
        beta.data.arg(&mut launch);
        launch.arg(&cols).arg(&eps);
        // SAFETY: one block per row; threads stride within the row.
        unsafe { launch.launch(row_config(rows)) }.map_err(cuda_err("layer_norm"))?;
        Ok(())
    }

    /// RMSNorm of every row (LLaMA); `gamma` holds `cols` entries.
    pub fn rms_norm(&self, x: &mut GpuMatrix, gamma: &GpuMatrix, eps: f32) -> Result<()> {
        check_vector("rms_norm", "gamma", gamma, x.cols)?;
        let dtype = one_dtype("rms_norm", &[x.dtype(), gamma.dtype()])?;
        let (rows, cols) = (to_u32("rms_norm", x.rows)?, to_i32("rms_norm", x.cols)?);
        if rows == 0 {
            return Ok(());
        }
        let mut launch = self.stream.launch_builder(self.kernels.rms_norm.get(dtype));
        x.data.arg_mut(&mut launch);
        gamma.data.arg(&mut launch);
        launch.arg(&cols).arg(&eps);
        // SAFETY: one block per row; threads stride within the row.
        unsafe { launch.launch(row_config(rows)) }.map_err(cuda_err("rms_norm"))?;
        Ok(())
    }

    /// Softmax of every row (`-inf` entries get 0, as on the CPU).
    pub fn softmax_rows(&self, x: &mut GpuMatrix) -> Result<()> {
        let (rows, cols) = (to_u32("softmax", x.rows)?, to_i32("softmax", x.cols)?);
        if rows == 0 {
            return Ok(());
        }
        let dtype = x.dtype();
        let mut launch = self
            .stream
            .launch_builder(self.kernels.softmax_rows.get(dtype));
        x.data.arg_mut(&mut launch);
        launch.arg(&cols);
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
        if batch == 0 || k.rows % batch != 0 || (k.rows, k.cols) != (v.rows, v.cols) {
            return Err(KernelError::shape(
                "attention",
                format!(
                    "batch {batch} must be positive and divide the key rows ({}); k [{}, {}] and v [{}, {}] must match",
                    k.rows, k.rows, k.cols, v.rows, v.cols
                ),
            ));
        }
        let skv = k.rows / batch;
        self.attention_launch(q, &k.data, &v.data, k.cols, out, batch, skv, skv, shape)
    }

    /// Launches the attention kernel over keys/values laid out `kv_rows` rows per sequence of
    /// which the first `skv` are valid.
    #[allow(clippy::too_many_arguments)]
    fn attention_launch(
        &self,
        q: &GpuMatrix,
        k: &Storage,
        v: &Storage,
        kv_cols: usize,
        out: &mut GpuMatrix,
        batch: usize,
        skv: usize,
        kv_rows: usize,
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
            || q.cols != shape.q_width()
            || kv_cols != shape.kv_width()
            || out.rows != q.rows
            || out.cols != q.cols
        {
            return Err(KernelError::shape(
                "attention",
                format!(
                    "expected q and out [batch·sq, {}] and k, v [batch·skv, {}] for batch {batch}; found q [{}, {}], k/v width {kv_cols}, out [{}, {}]",
                    shape.q_width(),
                    shape.kv_width(),
                    q.rows,
                    q.cols,
                    out.rows,
                    out.cols
                ),
            ));
        }
        let dtype = one_dtype("attention", &[q.dtype(), k.dtype(), v.dtype(), out.dtype()])?;
        let sq = q.rows / batch;
        if shape.causal && sq > skv {
            return Err(KernelError::shape(
                "attention",
                format!("causal attention needs at least as many keys ({skv}) as queries ({sq})"),
            ));
        }
        if shape.heads > MAX_GRID_YZ || batch > MAX_GRID_YZ {
            return Err(KernelError::shape(
                "attention",
                format!("heads ({}) and batch ({batch}) must be at most {MAX_GRID_YZ} (the CUDA grid limit)", shape.heads),
            ));
        }
        if sq == 0 {
            return Ok(());
        }
        let ints = [
            to_i32("attention", sq)?,
            to_i32("attention", skv)?,
            to_i32("attention", kv_rows)?,
            to_i32("attention", shape.heads)?,
            to_i32("attention", shape.kv_heads)?,
            to_i32("attention", shape.head_dim)?,
            i32::from(shape.causal),
        ];
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let grid = (to_u32("attention", sq)?, shape.heads as u32, batch as u32);
        let mut launch = self
            .stream
            .launch_builder(self.kernels.attention.get(dtype));
        q.data.arg(&mut launch);
        k.arg(&mut launch);
        v.arg(&mut launch);
        out.data.arg_mut(&mut launch);
        for a in &ints {
            launch.arg(a);
        }
        launch.arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: shapes checked above; every index stays within its sequence and head.
        unsafe { launch.launch(cfg) }.map_err(cuda_err("attention"))?;
        Ok(())
    }

    /// An empty KV cache for `batch` sequences of up to `capacity` positions each.
    pub fn kv_cache(
        &self,
        batch: usize,
        capacity: usize,
        shape: AttentionShape,
        dtype: Dtype,
    ) -> Result<GpuKvCache> {
        shape.validate()?;
        if batch == 0 || capacity == 0 {
            return Err(KernelError::shape(
                "kv_cache",
                format!("batch ({batch}) and capacity ({capacity}) must be positive"),
            ));
        }
        Ok(GpuKvCache {
            shape,
            batch,
            capacity,
            len: 0,
            k: self.zeros(batch * capacity, shape.kv_width(), dtype)?,
            v: self.zeros(batch * capacity, shape.kv_width(), dtype)?,
        })
    }

    /// Appends `s_new` positions per sequence: `k_new, v_new: [batch·s_new, kv_heads·head_dim]`.
    pub fn kv_append(
        &self,
        cache: &mut GpuKvCache,
        k_new: &GpuMatrix,
        v_new: &GpuMatrix,
    ) -> Result<()> {
        let width = cache.shape.kv_width();
        if (k_new.rows, k_new.cols) != (v_new.rows, v_new.cols)
            || k_new.cols != width
            || k_new.rows % cache.batch != 0
        {
            return Err(KernelError::shape(
                "kv_cache",
                format!(
                    "expected [batch·s, {width}] keys and values for a batch of {}; found [{}, {}] and [{}, {}]",
                    cache.batch, k_new.rows, k_new.cols, v_new.rows, v_new.cols
                ),
            ));
        }
        let dtype = one_dtype("kv_cache", &[cache.dtype(), k_new.dtype(), v_new.dtype()])?;
        let s_new = k_new.rows / cache.batch;
        if cache.len + s_new > cache.capacity {
            return Err(KernelError::shape(
                "kv_cache",
                format!(
                    "appending {s_new} positions to {} would exceed the capacity of {}",
                    cache.len, cache.capacity
                ),
            ));
        }
        if s_new == 0 {
            return Ok(());
        }
        let total = to_i64(k_new.len());
        let ints = [
            to_i32("kv_cache", s_new)?,
            to_i32("kv_cache", cache.capacity)?,
            to_i32("kv_cache", cache.len)?,
            to_i32("kv_cache", width)?,
        ];
        for (dst, src) in [(&mut cache.k, k_new), (&mut cache.v, v_new)] {
            let mut launch = self
                .stream
                .launch_builder(self.kernels.kv_append.get(dtype));
            dst.data.arg_mut(&mut launch);
            src.data.arg(&mut launch);
            for a in &ints {
                launch.arg(a);
            }
            launch.arg(&total);
            // SAFETY: len + s_new ≤ capacity, so every destination row is inside its sequence.
            unsafe { launch.launch(elementwise_config(total)) }.map_err(cuda_err("kv_append"))?;
        }
        cache.len += s_new;
        Ok(())
    }

    /// Decoder attention with a KV cache, as [`crate::attention_with_cache`]: appends this step's
    /// keys and values, then attends the queries (`[batch·sq, heads·hd]`, the newest `sq`
    /// positions) over every cached position into `out`.
    pub fn attention_with_cache(
        &self,
        q: &GpuMatrix,
        k_new: &GpuMatrix,
        v_new: &GpuMatrix,
        cache: &mut GpuKvCache,
        out: &mut GpuMatrix,
    ) -> Result<()> {
        self.kv_append(cache, k_new, v_new)?;
        self.attention_launch(
            q,
            &cache.k.data,
            &cache.v.data,
            cache.k.cols,
            out,
            cache.batch,
            cache.len,
            cache.capacity,
            cache.shape,
        )
    }

    /// Copies a host MoE layer to the device in `dtype`.
    pub fn upload_moe(&self, layer: &MoeLayer, dtype: Dtype) -> Result<GpuMoeLayer> {
        let (hidden, e) = layer.router.dim();
        let ffn = layer.experts.first().map_or(0, |x| x.w1.ncols());
        if e == 0 || e != layer.experts.len() || layer.top_k == 0 || layer.top_k > e {
            return Err(KernelError::shape(
                "moe",
                format!(
                    "router is [{hidden}, {e}] for {} experts with top_k {}; expected [hidden, experts] and 1 ≤ top_k ≤ experts",
                    layer.experts.len(),
                    layer.top_k
                ),
            ));
        }
        let row = |v: &ndarray::Array1<f32>| v.view().insert_axis(ndarray::Axis(0)).to_owned();
        let experts = layer
            .experts
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if x.w1.dim() != (hidden, ffn)
                    || x.b1.len() != ffn
                    || x.w2.dim() != (ffn, hidden)
                    || x.b2.len() != hidden
                {
                    return Err(KernelError::shape(
                        "moe",
                        format!("expert {i} does not have the shapes w1 [{hidden}, {ffn}], b1 [{ffn}], w2 [{ffn}, {hidden}], b2 [{hidden}]"),
                    ));
                }
                Ok(GpuExpert {
                    w1: self.upload(x.w1.view(), dtype)?,
                    b1: self.upload(row(&x.b1).view(), dtype)?,
                    w2: self.upload(x.w2.view(), dtype)?,
                    b2: self.upload(row(&x.b2).view(), dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuMoeLayer {
            router: self.upload(layer.router.view(), dtype)?,
            experts,
            top_k: layer.top_k,
            hidden,
            ffn,
            work: None,
        })
    }

    fn moe_workspace(&self, tokens: usize, layer: &GpuMoeLayer) -> Result<MoeWorkspace> {
        let dtype = layer.dtype();
        let (h, f, e, k) = (layer.hidden, layer.ffn, layer.experts.len(), layer.top_k);
        let err = cuda_err("allocating device memory");
        Ok(MoeWorkspace {
            tokens,
            logits: self.zeros(tokens, e, dtype)?,
            chosen: self.stream.alloc_zeros(tokens * k).map_err(&err)?,
            weight: self.stream.alloc_zeros(tokens * k).map_err(&err)?,
            rows: self.stream.alloc_zeros(tokens * k).map_err(&err)?,
            gates: self.stream.alloc_zeros(tokens * k).map_err(&err)?,
            xe: self.zeros(tokens, h, dtype)?,
            hidden: self.zeros(tokens, f, dtype)?,
            ye: self.zeros(tokens, h, dtype)?,
            acc: self.stream.alloc_zeros(tokens * h).map_err(&err)?,
            host_chosen: vec![0; tokens * k],
            host_weight: vec![0.0; tokens * k],
            host_rows: vec![0; tokens * k],
            host_gates: vec![0.0; tokens * k],
            counts: vec![0; e],
            next: vec![0; e],
        })
    }

    /// Mixture-of-experts FFN over tokens `x: [t, hidden]` into `out: [t, hidden]`, as
    /// [`crate::moe_ffn`]: router GEMM, top-k routing on the device, then per expert a gather of
    /// its tokens, two cuBLAS GEMMs around bias + GeLU, and a weighted scatter-add into an f32
    /// accumulator. The routes travel to the host once per call (the GEMM sizes depend on them),
    /// which synchronizes the stream.
    pub fn moe_ffn(
        &self,
        x: &GpuMatrix,
        layer: &mut GpuMoeLayer,
        out: &mut GpuMatrix,
    ) -> Result<()> {
        let (h, f, k) = (layer.hidden, layer.ffn, layer.top_k);
        let n_experts = layer.experts.len();
        if x.cols != h || (out.rows, out.cols) != (x.rows, h) {
            return Err(KernelError::shape(
                "moe",
                format!(
                    "expected x and out [tokens, {h}]; found x [{}, {}], out [{}, {}]",
                    x.rows, x.cols, out.rows, out.cols
                ),
            ));
        }
        let dtype = one_dtype("moe", &[x.dtype(), layer.dtype(), out.dtype()])?;
        let tokens = x.rows;
        if tokens == 0 {
            return Ok(());
        }
        if layer.work.as_ref().is_none_or(|w| w.tokens < tokens) {
            layer.work = Some(self.moe_workspace(tokens, layer)?);
        }
        let GpuMoeLayer {
            router,
            experts,
            work,
            ..
        } = layer;
        let w = work.as_mut().expect("workspace allocated above");

        // Router logits and top-k routes.
        self.gemm_prefix(
            &x.data,
            &router.data,
            &mut w.logits.data,
            tokens,
            h,
            n_experts,
        )?;
        let ints = [
            to_i32("moe", tokens)?,
            to_i32("moe", n_experts)?,
            to_i32("moe", k)?,
        ];
        {
            let mut launch = self
                .stream
                .launch_builder(self.kernels.moe_route.get(dtype));
            w.logits.data.arg(&mut launch);
            for a in &ints {
                launch.arg(a);
            }
            launch.arg(&mut w.chosen).arg(&mut w.weight);
            let blocks = to_u32("moe", tokens.div_ceil(128))?;
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: one thread per token; chosen and weight hold tokens·k entries.
            unsafe { launch.launch(cfg) }.map_err(cuda_err("moe_route"))?;
        }
        let pairs = tokens * k;
        let err = cuda_err("copying routes to the host");
        self.stream
            .memcpy_dtoh(&w.chosen.slice(..pairs), &mut w.host_chosen[..pairs])
            .map_err(&err)?;
        self.stream
            .memcpy_dtoh(&w.weight.slice(..pairs), &mut w.host_weight[..pairs])
            .map_err(&err)?;
        self.stream.synchronize().map_err(&err)?;

        // Group token rows by expert (a counting sort, stable in token order).
        w.counts.iter_mut().for_each(|c| *c = 0);
        for &e in &w.host_chosen[..pairs] {
            let e = usize::try_from(e)
                .ok()
                .filter(|&e| e < n_experts)
                .ok_or_else(|| {
                    KernelError::shape("moe", "the router produced non-finite logits")
                })?;
            w.counts[e] += 1;
        }
        let mut start = 0;
        for (slot, &c) in w.next.iter_mut().zip(&w.counts) {
            *slot = start;
            start += c;
        }
        for (p, (&e, &g)) in w.host_chosen[..pairs]
            .iter()
            .zip(&w.host_weight[..pairs])
            .enumerate()
        {
            let slot = &mut w.next[e as usize];
            w.host_rows[*slot] = (p / k) as i32;
            w.host_gates[*slot] = g;
            *slot += 1;
        }
        let err = cuda_err("copying routes to the device");
        self.stream
            .memcpy_htod(&w.host_rows[..pairs], &mut w.rows.slice_mut(..pairs))
            .map_err(&err)?;
        self.stream
            .memcpy_htod(&w.host_gates[..pairs], &mut w.gates.slice_mut(..pairs))
            .map_err(&err)?;
        self.stream
            .memset_zeros(&mut w.acc.slice_mut(..tokens * h))
            .map_err(cuda_err("clearing the accumulator"))?;

        let h_i = to_i32("moe", h)?;
        let mut offset = 0;
        for (expert, &n) in experts.iter().zip(&w.counts) {
            if n == 0 {
                continue;
            }
            let rows = w.rows.slice(offset..offset + n);
            let gates = w.gates.slice(offset..offset + n);
            offset += n;
            let total = to_i64(n * h);
            {
                let mut launch = self
                    .stream
                    .launch_builder(self.kernels.moe_gather.get(dtype));
                x.data.arg(&mut launch);
                launch.arg(&rows).arg(&h_i);
                w.xe.data.arg_mut(&mut launch);
                launch.arg(&total);
                // SAFETY: rows holds n token indices < tokens; xe holds ≥ n rows.
                unsafe { launch.launch(elementwise_config(total)) }
                    .map_err(cuda_err("moe_gather"))?;
            }
            self.gemm_prefix(&w.xe.data, &expert.w1.data, &mut w.hidden.data, n, h, f)?;
            self.bias_gelu_rows(&mut w.hidden.data, &expert.b1.data, n, f, dtype)?;
            self.gemm_prefix(&w.hidden.data, &expert.w2.data, &mut w.ye.data, n, f, h)?;
            {
                let mut launch = self
                    .stream
                    .launch_builder(self.kernels.moe_scatter.get(dtype));
                launch.arg(&mut w.acc);
                w.ye.data.arg(&mut launch);
                expert.b2.data.arg(&mut launch);
                launch.arg(&rows).arg(&gates).arg(&h_i).arg(&total);
                // SAFETY: rows index acc's first `tokens` rows; ye holds n rows of width h.
                unsafe { launch.launch(elementwise_config(total)) }
                    .map_err(cuda_err("moe_scatter"))?;
            }
        }
        let total = to_i64(tokens * h);
        let mut launch = self.stream.launch_builder(self.kernels.from_f32.get(dtype));
        out.data.arg_mut(&mut launch);
        launch.arg(&w.acc).arg(&total);
        // SAFETY: out and the accumulator's prefix both hold tokens·h elements.
        unsafe { launch.launch(elementwise_config(total)) }.map_err(cuda_err("from_f32"))?;
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

/// `c[..m·n] ← a[..m·k] · b[..k·n]` in one element type through cuBLAS, f32 accumulation.
///
/// cuBLAS is column-major: a row-major `C = A·B` is the column-major `Cᵀ = Bᵀ·Aᵀ`, so B goes
/// first and m, n swap; no transposition or copy is needed.
///
/// # Safety
/// The three buffers must hold at least `m·k`, `k·n` and `m·n` elements.
unsafe fn gemm_typed<T>(
    blas: &CudaBlas,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    c: &mut CudaSlice<T>,
    (m, k, n): (i32, i32, i32),
    one: T,
    zero: T,
) -> std::result::Result<(), cudarc::cublas::result::CublasError>
where
    CudaBlas: Gemm<T>,
{
    let (mu, ku, nu) = (m as usize, k as usize, n as usize);
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n,
        n: m,
        k,
        alpha: one,
        lda: n.max(1),
        ldb: k.max(1),
        beta: zero,
        ldc: n.max(1),
    };
    let a = a.slice(..mu * ku);
    let b = b.slice(..ku * nu);
    let mut c = c.slice_mut(..mu * nu);
    blas.gemm(cfg, &b, &a, &mut c)
}

fn row_config(rows: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (ROW_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride launch over `total` elements.
fn elementwise_config(total: i64) -> LaunchConfig {
    let blocks = (total.max(1) as u64)
        .div_ceil(u64::from(ELEMENTWISE_THREADS))
        .min(MAX_GRID_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn to_i64(v: usize) -> i64 {
    // Device buffers are far below 2⁶³ elements.
    v as i64
}

fn to_i32(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| KernelError::shape(op, format!("{v} exceeds the i32 range of the kernel")))
}

fn to_u32(op: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| KernelError::shape(op, format!("{v} exceeds the u32 range of the grid")))
}
