// Elementwise kernels: the fused bias + GeLU epilogue, SwiGLU's silu(gate) · up, and the
// conversion of f32 accumulators to the tensor's element type.

template <typename T>
__device__ void bias_gelu(T* x, const T* bias, long long total, int cols) {
    FOR_EACH_INDEX(i, total) {
        float v = load(x + i) + load(bias + i % cols);
        // tanh form, as the CPU kernels: 0.7978845608 = sqrt(2/pi)
        float u = 0.7978845608f * (v + 0.044715f * v * v * v);
        store(x + i, 0.5f * v * (1.0f + tanhf(u)));
    }
}

template <typename T>
__device__ void silu_mul(T* gate, const T* up, long long total) {
    FOR_EACH_INDEX(i, total) {
        float g = load(gate + i);
        store(gate + i, g / (1.0f + expf(-g)) * load(up + i));
    }
}

template <typename T>
__device__ void from_f32(T* out, const float* x, long long total) {
    FOR_EACH_INDEX(i, total) { store(out + i, x[i]); }
}

#define ELEMENTWISE(T, S)                                                                   \
    extern "C" __global__ void bias_gelu_##S(T* x, const T* bias, long long total, int cols) { \
        bias_gelu(x, bias, total, cols);                                                    \
    }                                                                                       \
    extern "C" __global__ void silu_mul_##S(T* gate, const T* up, long long total) {        \
        silu_mul(gate, up, total);                                                          \
    }                                                                                       \
    extern "C" __global__ void from_f32_##S(T* out, const float* x, long long total) {      \
        from_f32(out, x, total);                                                            \
    }
FOR_EACH_DTYPE(ELEMENTWISE)
