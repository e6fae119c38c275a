// Mixture-of-experts routing and the token movement around the experts' GEMMs (which cuBLAS
// runs). The host groups tokens by expert between `moe_route` and the per-expert kernels, so
// every expert sees its tokens in token order, as on the CPU.

// Top-k routing, one thread per token: the k largest router logits (the lower expert index
// first on ties, as the CPU kernels order them), and gate weights that are the softmax over the
// chosen logits, which equals the softmax over all experts renormalised over the chosen ones.
// An expert index of -1 marks a row without k finite logits (the host rejects it).
template <typename T>
__device__ void moe_route(const T* logits, int tokens, int experts, int top_k, int* chosen,
                          float* weight) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens) return;
    const T* row = logits + (long long)t * experts;
    int* out_e = chosen + (long long)t * top_k;
    float* out_w = weight + (long long)t * top_k;
    // Each pick is the best expert strictly after the previous pick in the order
    // (logit descending, index ascending), so no list of taken experts is needed.
    float prev = __int_as_float(0x7f800000);
    int prev_e = -1;
    for (int j = 0; j < top_k; j++) {
        float best = NEG_INF;
        int best_e = -1;
        for (int e = 0; e < experts; e++) {
            float x = load(row + e);
            bool after = x < prev || (x == prev && e > prev_e);
            if (after && (best_e < 0 || x > best)) {
                best = x;
                best_e = e;
            }
        }
        out_e[j] = best_e;
        out_w[j] = best;
        prev = best;
        prev_e = best_e;
    }
    float top = out_w[0], sum = 0.0f;
    for (int j = 0; j < top_k; j++) {
        out_w[j] = expf(out_w[j] - top);
        sum += out_w[j];
    }
    for (int j = 0; j < top_k; j++) out_w[j] /= sum;
}

// out[r] = x[rows[r]] for the n tokens of one expert.
template <typename T>
__device__ void moe_gather(const T* x, const int* rows, int cols, T* out, long long total) {
    FOR_EACH_INDEX(i, total) { out[i] = x[(long long)rows[i / cols] * cols + i % cols]; }
}

// acc[rows[r]] += w[r] * (y[r] + b2) for the n tokens of one expert. A token appears at most
// once per expert, so no two threads touch one element; experts run one after another on the
// stream, so every output sums its experts in expert order (deterministic).
template <typename T>
__device__ void moe_scatter(float* acc, const T* y, const T* b2, const int* rows, const float* w,
                            int cols, long long total) {
    FOR_EACH_INDEX(i, total) {
        long long r = i / cols;
        int c = i % cols;
        acc[(long long)rows[r] * cols + c] += w[r] * (load(y + i) + load(b2 + c));
    }
}

#define MOE(T, S)                                                                            \
    extern "C" __global__ void moe_route_##S(const T* logits, int tokens, int experts,       \
                                             int top_k, int* chosen, float* weight) {        \
        moe_route(logits, tokens, experts, top_k, chosen, weight);                           \
    }                                                                                        \
    extern "C" __global__ void moe_gather_##S(const T* x, const int* rows, int cols, T* out, \
                                              long long total) {                             \
        moe_gather(x, rows, cols, out, total);                                               \
    }                                                                                        \
    extern "C" __global__ void moe_scatter_##S(float* acc, const T* y, const T* b2,          \
                                               const int* rows, const float* w, int cols,    \
                                               long long total) {                            \
        moe_scatter(acc, y, b2, rows, w, cols, total);                                       \
    }
FOR_EACH_DTYPE(MOE)
