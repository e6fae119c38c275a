//! The CUDA backend's twin for builds without the `cuda` feature: the same names, and every entry
//! point reports [`KernelError::NotCompiled`]. No value of [`CudaDevice`] or [`GpuMatrix`] can
//! exist here, so their methods are statically unreachable.

use std::convert::Infallible;

use ndarray::{Array2, ArrayView2};

use crate::cpu::AttentionShape;
use crate::error::{KernelError, Result};
use crate::Dtype;

/// Whether this build carries the CUDA backend.
pub const COMPILED: bool = false;

/// Largest head dimension of the attention kernel.
pub const MAX_HEAD_DIM: usize = 256;

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

    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }

    pub fn time_s(&self, _work: impl FnMut(&CudaDevice) -> Result<()>) -> Result<f64> {
        match self.never {}
    }
}
