// Host emulation of the CUDA features the plexserve kernels use: one block at a time, its threads
// as std::threads, __syncthreads as a barrier, warp shuffles through a shared buffer.
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
#include <cstdint>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<>* g_bar = nullptr;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
inline void __syncthreads() { g_bar->arrive_and_wait(); }
static float g_shfl[1024];
inline float __shfl_xor_sync(unsigned, float v, int o) {
    g_shfl[threadIdx.x] = v; __syncthreads();
    float r = g_shfl[threadIdx.x ^ o]; __syncthreads();
    return r;
}
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <class F> void launch(dim3 grid, dim3 block, F f) {
    gridDim = grid; blockDim = block;
    unsigned n = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; bz++) for (unsigned by = 0; by < grid.y; by++) for (unsigned bx = 0; bx < grid.x; bx++) {
        std::barrier<> bar(n); g_bar = &bar;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < n; t++) ts.emplace_back([=] { blockIdx = {bx, by, bz}; threadIdx = {t, 0, 0}; f(); });
        for (auto& t : ts) t.join();
    }
}
