//! The CUDA backend's twin for builds without the `cuda` feature: the same names, and every entry
//! point reports [`KernelError::NotCompiled`]. No value of [`CudaDevice`] or [`GpuMatrix`] can
//! exist here, so their methods are statically unreachable.

use std::convert::Infallible;

use ndarray::{Array2, ArrayView2};

use crate::cpu::{AttentionShape, MoeLayer};
use crate::error::{KernelError, Result};
use crate::Dtype;

/// Whether this build carries the CUDA backend.
pub const COMPILED: bool = false;

pub use crate::program::{kernel_source, KERNEL_FAMILIES, MAX_HEAD_DIM};

/// Compiling the kernels needs the CUDA backend: always [`KernelError::NotCompiled`] here.
pub fn compile_kernels(_compute_capability: (i32, i32)) -> Result<Vec<u8>> {
    Err(KernelError::NotCompiled)
}

/// One GPU as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: u64,
    pub compute_capability: (i32, i32),
    pub driver_version: String,
}

/// The GPUs present: always [`KernelError::NotCompiled`] in this build.
pub fn devices() -> Result<Vec<GpuInfo>> {
    Err(KernelError::NotCompiled)
}

/// A row-major matrix in device memory (cannot exist in this build).
#[derive(Debug)]
pub struct GpuMatrix {
    never: Infallible,
}

impl GpuMatrix {
    pub fn rows(&self) -> usize {
        match self.never {}
    }

    pub fn cols(&self) -> usize {
        match self.never {}
    }

    pub fn dtype(&self) -> Dtype {
        match self.never {}
    }
}

/// A KV cache in device memory (cannot exist in this build).
#[derive(Debug)]
pub struct GpuKvCache {
    never: Infallible,
}

impl GpuKvCache {
    pub fn batch(&self) -> usize {
        match self.never {}
    }

    pub fn capacity(&self) -> usize {
        match self.never {}
    }

    pub fn len(&self) -> usize {
        match self.never {}
    }

    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    pub fn shape(&self) -> AttentionShape {
        match self.never {}
    }

    pub fn dtype(&self) -> Dtype {
        match self.never {}
    }

    pub fn truncate(&mut self, _len: usize) {
        match self.never {}
    }
}

/// A MoE layer in device memory (cannot exist in this build).
#[derive(Debug)]
pub struct GpuMoeLayer {
    never: Infallible,
}

impl GpuMoeLayer {
    pub fn experts(&self) -> usize {
        match self.never {}
    }

    pub fn top_k(&self) -> usize {
        match self.never {}
    }

    pub fn hidden(&self) -> usize {
        match self.never {}
    }

    pub fn ffn(&self) -> usize {
        match self.never {}
    }

    pub fn dtype(&self) -> Dtype {
        match self.never {}
    }
}

/// One GPU (cannot be opened in this build).
#[derive(Debug)]
pub struct CudaDevice {
    never: Infallible,
}

impl CudaDevice {
    pub fn open(_ordinal: usize) -> Result<CudaDevice> {
        Err(KernelError::NotCompiled)
    }

    pub fn info(&self) -> &GpuInfo {
        match self.never {}
    }

    pub fn upload(&self, _host: ArrayView2<f32>, _dtype: Dtype) -> Result<GpuMatrix> {
        match self.never {}
    }

    pub fn copy_from_host(&self, _host: ArrayView2<f32>, _dst: &mut GpuMatrix) -> Result<()> {
        match self.never {}
    }

    pub fn zeros(&self, _rows: usize, _cols: usize, _dtype: Dtype) -> Result<GpuMatrix> {
        match self.never {}
    }

    pub fn download(&self, _m: &GpuMatrix) -> Result<Array2<f32>> {
        match self.never {}
    }

    pub fn gemm(&self, _a: &GpuMatrix, _b: &GpuMatrix, _c: &mut GpuMatrix) -> Result<()> {
        match self.never {}
    }

    pub fn bias_gelu(&self, _x: &mut GpuMatrix, _bias: &GpuMatrix) -> Result<()> {
        match self.never {}
    }

    pub fn silu_mul(&self, _gate: &mut GpuMatrix, _up: &GpuMatrix) -> Result<()> {
        match self.never {}
    }

    pub fn rms_norm(&self, _x: &mut GpuMatrix, _gamma: &GpuMatrix, _eps: f32) -> Result<()> {
        match self.never {}
    }

    pub fn layer_norm(
        &self,
        _x: &mut GpuMatrix,
        _gamma: &GpuMatrix,
        _beta: &GpuMatrix,
        _eps: f32,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn softmax_rows(&self, _x: &mut GpuMatrix) -> Result<()> {
        match self.never {}
    }

    pub fn attention(
        &self,
        _q: &GpuMatrix,
        _k: &GpuMatrix,
        _v: &GpuMatrix,
        _out: &mut GpuMatrix,
        _batch: usize,
        _shape: AttentionShape,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn kv_cache(
        &self,
        _batch: usize,
        _capacity: usize,
        _shape: AttentionShape,
        _dtype: Dtype,
    ) -> Result<GpuKvCache> {
        match self.never {}
    }

    pub fn kv_append(
        &self,
        _cache: &mut GpuKvCache,
        _k_new: &GpuMatrix,
        _v_new: &GpuMatrix,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn attention_with_cache(
        &self,
        _q: &GpuMatrix,
        _k_new: &GpuMatrix,
        _v_new: &GpuMatrix,
        _cache: &mut GpuKvCache,
        _out: &mut GpuMatrix,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn upload_moe(&self, _layer: &MoeLayer, _dtype: Dtype) -> Result<GpuMoeLayer> {
        match self.never {}
    }

    pub fn moe_ffn(
        &self,
        _x: &GpuMatrix,
        _layer: &mut GpuMoeLayer,
        _out: &mut GpuMatrix,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }

    pub fn time_s(&self, _work: impl FnMut(&CudaDevice) -> Result<()>) -> Result<f64> {
        match self.never {}
    }
}
