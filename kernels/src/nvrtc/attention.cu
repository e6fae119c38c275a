// Scaled dot-product attention with grouped KV heads, an optional causal mask and a KV cache.
//
// Grid (sq, heads, batch), one warp per (query, head, sequence), with an online softmax so the
// score matrix never exists in memory. Lane l owns head dimensions l, l + 32, ... (at most
// ATTN_DIMS_PER_LANE of them). Keys and values of sequence b start at row b * kv_rows and its
// first skv rows are valid: plain attention has kv_rows == skv, a KV cache has kv_rows equal to
// its capacity. Query i of sq is the newest position but sq - 1 - i, so the causal mask lets it
// see keys 0 ..= skv - sq + i.

#define ATTN_DIMS_PER_LANE 8

template <typename T>
__device__ void attention(const T* q, const T* k, const T* v, T* out, int sq, int skv,
                          int kv_rows, int heads, int kv_heads, int hd, int causal, float scale) {
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, lane = threadIdx.x;
    int g = h / (heads / kv_heads);
    long long qw = (long long)heads * hd, kw = (long long)kv_heads * hd;
    const T* qrow = q + ((long long)b * sq + i) * qw + (long long)h * hd;
    const T* kbase = k + (long long)b * kv_rows * kw + (long long)g * hd;
    const T* vbase = v + (long long)b * kv_rows * kw + (long long)g * hd;
    float qv[ATTN_DIMS_PER_LANE], acc[ATTN_DIMS_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATTN_DIMS_PER_LANE; t++) {
        int d = lane + 32 * t;
        qv[t] = d < hd ? load(qrow + d) * scale : 0.0f;
        acc[t] = 0.0f;
    }
    int visible = causal ? skv - sq + i + 1 : skv;
    // Running maximum and normaliser of the softmax; the butterfly sum below leaves every lane
    // with bit-identical scores, so all lanes agree on them.
    float m = NEG_INF, l = 0.0f;
    for (int j = 0; j < visible; j++) {
        const T* krow = kbase + j * kw;
        const T* vrow = vbase + j * kw;
        float dot = 0.0f;
#pragma unroll
        for (int t = 0; t < ATTN_DIMS_PER_LANE; t++) {
            int d = lane + 32 * t;
            if (d < hd) dot += qv[t] * load(krow + d);
        }
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffff, dot, o);
        float m_new = fmaxf(m, dot);
        float c = expf(m - m_new), p = expf(dot - m_new);
        l = l * c + p;
#pragma unroll
        for (int t = 0; t < ATTN_DIMS_PER_LANE; t++) {
            int d = lane + 32 * t;
            if (d < hd) acc[t] = acc[t] * c + p * load(vrow + d);
        }
        m = m_new;
    }
    T* orow = out + ((long long)b * sq + i) * qw + (long long)h * hd;
#pragma unroll
    for (int t = 0; t < ATTN_DIMS_PER_LANE; t++) {
        int d = lane + 32 * t;
        if (d < hd) store(orow + d, l > 0.0f ? acc[t] / l : 0.0f);
    }
}

// Appends s_new positions per sequence to a KV cache of `capacity` rows per sequence holding
// `len` positions: row s of sequence b in `fresh` goes to cache row b * capacity + len + s.
template <typename T>
__device__ void kv_append(T* cache, const T* fresh, int s_new, int capacity, int len, int width,
                          long long total) {
    FOR_EACH_INDEX(i, total) {
        long long r = i / width;
        long long b = r / s_new, s = r % s_new;
        cache[(b * capacity + len + s) * width + i % width] = fresh[i];
    }
}

#define ATTENTION(T, S)                                                                      \
    extern "C" __global__ void attention_##S(const T* q, const T* k, const T* v, T* out,     \
                                             int sq, int skv, int kv_rows, int heads,        \
                                             int kv_heads, int hd, int causal, float scale) { \
        attention(q, k, v, out, sq, skv, kv_rows, heads, kv_heads, hd, causal, scale);       \
    }                                                                                        \
    extern "C" __global__ void kv_append_##S(T* cache, const T* fresh, int s_new,            \
                                             int capacity, int len, int width,               \
                                             long long total) {                              \
        kv_append(cache, fresh, s_new, capacity, len, width, total);                         \
    }
FOR_EACH_DTYPE(ATTENTION)
