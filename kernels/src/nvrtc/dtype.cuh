// Element types of device tensors and the conversions every kernel goes through.
//
// NVRTC is given no headers, so f16 and bf16 are plain 16-bit words: f16 converts with the PTX
// `cvt` instructions, bf16 is the top half of an f32. Kernels load every element as f32, compute
// and accumulate in f32, and round once when they store.

struct f16_t { unsigned short bits; };
struct bf16_t { unsigned short bits; };

__device__ __forceinline__ float load(const float* p) { return *p; }

__device__ __forceinline__ float load(const f16_t* p) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits));
    return f;
}

__device__ __forceinline__ float load(const bf16_t* p) {
    return __uint_as_float(((unsigned int)p->bits) << 16);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }

__device__ __forceinline__ void store(f16_t* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;
}

__device__ __forceinline__ void store(bf16_t* p, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a quiet NaN
        p->bits = 0x7fc0;
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    p->bits = (unsigned short)(u >> 16);
}

#define NEG_INF __int_as_float(0xff800000)

// Instantiates `X(type, suffix)` once per element type; kernels are named `<family>_<suffix>`.
#define FOR_EACH_DTYPE(X) X(float, f32) X(f16_t, f16) X(bf16_t, bf16)

// Grid-stride loop over `total` elements, so any grid size covers any tensor.
#define FOR_EACH_INDEX(i, total)                                              \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;      \
         i < (total); i += (long long)gridDim.x * blockDim.x)
