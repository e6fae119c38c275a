// Row-wise kernels: LayerNorm, RMSNorm and softmax. One block of ROW_THREADS threads per row;
// threads stride over the row and combine with a shared-memory tree reduction in f32.

#define ROW_THREADS 256

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

template <typename T>
__device__ void layer_norm(T* x, const T* gamma, const T* beta, int cols, float eps) {
    __shared__ float red[ROW_THREADS];
    T* row = x + (long long)blockIdx.x * cols;
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += load(row + j);
    float mean = block_sum(s, red) / cols;
    float q = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float d = load(row + j) - mean;
        q += d * d;
    }
    float inv = rsqrtf(block_sum(q, red) / cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        store(row + j, (load(row + j) - mean) * inv * load(gamma + j) + load(beta + j));
}

template <typename T>
__device__ void rms_norm(T* x, const T* gamma, int cols, float eps) {
    __shared__ float red[ROW_THREADS];
    T* row = x + (long long)blockIdx.x * cols;
    float q = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float v = load(row + j);
        q += v * v;
    }
    float inv = rsqrtf(block_sum(q, red) / cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        store(row + j, load(row + j) * inv * load(gamma + j));
}

// Shifted by the row maximum; -inf entries (masked) get 0, and an all -inf row becomes all 0,
// as on the CPU.
template <typename T>
__device__ void softmax_rows(T* x, int cols) {
    __shared__ float red[ROW_THREADS];
    T* row = x + (long long)blockIdx.x * cols;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, load(row + j));
    m = block_max(m, red);
    if (m == NEG_INF) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) store(row + j, 0.0f);
        return;
    }
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += expf(load(row + j) - m);
    float inv = 1.0f / block_sum(s, red);
    // Recompute the exponentials rather than storing them rounded to T and reading them back.
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        store(row + j, expf(load(row + j) - m) * inv);
}

#define ROWS(T, S)                                                                        \
    extern "C" __global__ void layer_norm_##S(T* x, const T* gamma, const T* beta, int cols, \
                                              float eps) {                                \
        layer_norm(x, gamma, beta, cols, eps);                                            \
    }                                                                                     \
    extern "C" __global__ void rms_norm_##S(T* x, const T* gamma, int cols, float eps) {  \
        rms_norm(x, gamma, cols, eps);                                                    \
    }                                                                                     \
    extern "C" __global__ void softmax_rows_##S(T* x, int cols) { softmax_rows(x, cols); }
FOR_EACH_DTYPE(ROWS)
