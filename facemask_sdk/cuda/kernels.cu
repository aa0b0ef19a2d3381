// CUDA kernels of the TensorRT path: letterbox pre-processing, decoding, top-K and class-aware NMS.
//
// The NumPy code is the specification: facemask_sdk/preprocess.py (letterbox), facemask_sdk/anchors.py
// (anchor order) and facemask_sdk/postprocess.py (decoding, top-K, NMS). Launch geometry and argument
// order live in facemask_sdk/cuda/plans.py (`plan_*` functions); keep the two in step.
//
// Build rules (checked by tests/facemask_sdk/cuda/test_kernels.py):
// - no include directives: pycuda's SourceModule then hashes the plain text for its disk cache (with
//   one it runs the preprocessor on every load), and the CPU emulator in the tests compiles this file
//   as C++ with a small shim for the CUDA built-ins;
// - compiled with `--fmad=false` (plans.NVCC_OPTIONS) so a*b+c rounds twice, as NumPy does;
// - no warp intrinsics or warp-synchronous tricks: every cross-thread exchange goes through shared
//   memory and __syncthreads(), which is what the emulator can check;
// - all kernels are extern "C" so pycuda finds them by name; the float/half variants are thin
//   wrappers over one template.
//
// Half precision tensors are passed as `unsigned short` bit patterns (IEEE binary16).
//
// Per frame, on one stream: fm_letterbox_* -> (TensorRT) -> fm_reset_counters -> fm_decode_candidates_*
// -> fm_topk_select -> fm_rank_decode_* -> fm_nms_mask -> fm_nms_reduce. Buffer sizes are fixed per
// model (plans.decode_buffer_specs), so nothing is allocated per frame.

// The sizes shared with the buffer plans come from facemask_sdk/cuda/plans.py (KERNEL_CONSTANTS), passed
// as -D definitions by the kernels' compile (and the CPU emulator's): one source, no drift.
#if !defined(FM_SELECT_THREADS) || !defined(FM_COARSE_BITS) || !defined(FM_NMS_BLOCK) || !defined(FM_MAX_TOPK) \
    || !defined(FM_RANK_THREADS)
#error "compile with the -D definitions of facemask_sdk.cuda.plans.KERNEL_DEFINES"
#endif
#define FM_COARSE_BINS (1 << FM_COARSE_BITS)
#define FM_MAX_WORDS (FM_MAX_TOPK / FM_NMS_BLOCK)

// ---------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ int fm_clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

__device__ __forceinline__ unsigned int fm_umin(unsigned int a, unsigned int b) { return a < b ? a : b; }

// float -> binary16, round to nearest even (what cvt.rn does, and what NumPy's astype(float16) does).
__device__ __forceinline__ unsigned short fm_f32_to_f16(float x) {
#ifdef __CUDA_ARCH__
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
#else
    unsigned int f = __float_as_uint(x);
    unsigned int sign = (f >> 16) & 0x8000u;
    unsigned int abs = f & 0x7fffffffu;
    if (abs >= 0x7f800000u) return (unsigned short)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to >= 65520: infinity
    if (abs < 0x38800000u) {                                          // subnormal half or zero
        if (abs < 0x33000000u) return (unsigned short)sign;           // below half the smallest subnormal
        unsigned int mant = (abs & 0x007fffffu) | 0x00800000u;
        unsigned int shift = 126u - (abs >> 23);                      // 14..24
        unsigned int half = mant >> shift;
        unsigned int rest = mant & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
        if (rest > mid || (rest == mid && (half & 1u))) ++half;
        return (unsigned short)(sign | half);
    }
    unsigned int half = ((abs - 0x38000000u) >> 13);
    unsigned int rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return (unsigned short)(sign | half);
#endif
}

__device__ __forceinline__ float fm_f16_to_f32(unsigned short h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    unsigned int exp = ((unsigned int)h >> 10) & 0x1fu, mant = (unsigned int)h & 0x3ffu;
    unsigned int bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0u) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0u) {
        bits = sign;
    } else {  // subnormal half: normalise
        exp = 113u;
        while (!(mant & 0x400u)) { mant <<= 1; --exp; }
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    return __uint_as_float(bits);
#endif
}

__device__ __forceinline__ float fm_load(const float* p) { return *p; }
__device__ __forceinline__ float fm_load(const unsigned short* p) { return fm_f16_to_f32(*p); }
__device__ __forceinline__ void fm_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void fm_store(unsigned short* p, float v) { *p = fm_f32_to_f16(v); }

// ---------------------------------------------------------------------------------------------------
// 1. Letterbox pre-processing
// ---------------------------------------------------------------------------------------------------
//
// Bilinear resize exactly as OpenCV's cv::resize(INTER_LINEAR) computes it for 8-bit images:
//   f = (float)((d + 0.5) * scale - 0.5)     scale = src_size / resized_size, in double (as OpenCV)
//   s = floor(f), f -= s; on the x axis a tap outside the image is pinned (f = 0, s = 0 or size-1);
//   on the y axis the row index is clamped instead;
//   weights are 11-bit fixed point: w0 = round((1 - f) * 2048), w1 = round(f * 2048);
//   horizontal pass: h = p0 * wx0 + p1 * wx1 (integer);
//   vertical pass: OpenCV's SIMD formula ((h0 >> 4) * wy0 >> 16) + ((h1 >> 4) * wy1 >> 16) + 2) >> 2.
// This reproduces cv2.resize bit for bit on the OpenCV builds we test against (x86 SSE/AVX and ARM NEON
// share the formula); OpenCV's scalar tail path rounds as (h0*wy0 + h1*wy1 + 2^21) >> 22 instead, so a
// different build may differ by 1 LSB on some pixels. The tests allow |diff| * std <= 1 + eps.
//
// Then BGR -> RGB, (v - mean) / std, HWC -> CHW, zero outside the resized region (= mean padding).

struct FmTap {
    int i0, i1;  // source indices of the two taps
    int w0, w1;  // 11-bit fixed-point weights
};

__device__ __forceinline__ FmTap fm_linear_tap(int d, double scale, int src_size, bool pin_borders) {
    float f = (float)((d + 0.5) * scale - 0.5);
    int s = (int)floorf(f);
    f -= (float)s;
    if (pin_borders) {
        if (s < 0) { f = 0.f; s = 0; }
        if (s >= src_size - 1) { f = 0.f; s = src_size - 1; }
    }
    FmTap t;
    t.w0 = (int)rintf((1.f - f) * 2048.f);
    t.w1 = (int)rintf(f * 2048.f);
    t.i0 = fm_clamp(s, 0, src_size - 1);
    t.i1 = fm_clamp(s + 1, 0, src_size - 1);
    return t;
}

template <typename OutT>
__device__ __forceinline__ void fm_letterbox(
    const unsigned char* __restrict__ src, OutT* __restrict__ dst,
    double scale_x, double scale_y,
    int src_h, int src_w, int src_pitch, int dst_h, int dst_w, int resized_h, int resized_w,
    float mean_r, float mean_g, float mean_b, float std_r, float std_g, float std_b)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    const long plane = (long)dst_h * dst_w;
    OutT* out = dst + (long)y * dst_w + x;
    if (x >= resized_w || y >= resized_h) {
        fm_store(out, 0.f);
        fm_store(out + plane, 0.f);
        fm_store(out + 2 * plane, 0.f);
        return;
    }
    const FmTap tx = fm_linear_tap(x, scale_x, src_w, true);
    const FmTap ty = fm_linear_tap(y, scale_y, src_h, false);
    const unsigned char* row0 = src + (long)ty.i0 * src_pitch;
    const unsigned char* row1 = src + (long)ty.i1 * src_pitch;
    const int c0 = 3 * tx.i0, c1 = 3 * tx.i1;
    const float mean[3] = {mean_r, mean_g, mean_b};
    const float stdv[3] = {std_r, std_g, std_b};
    for (int c = 0; c < 3; ++c) {
        const int bgr = 2 - c;  // RGB channel c comes from BGR channel 2 - c
        const int h0 = row0[c0 + bgr] * tx.w0 + row0[c1 + bgr] * tx.w1;
        const int h1 = row1[c0 + bgr] * tx.w0 + row1[c1 + bgr] * tx.w1;
        int v = ((((h0 >> 4) * ty.w0) >> 16) + (((h1 >> 4) * ty.w1) >> 16) + 2) >> 2;
        v = fm_clamp(v, 0, 255);
        fm_store(out + c * plane, ((float)v - mean[c]) / stdv[c]);
    }
}

extern "C" __global__ void fm_letterbox_f32(
    const unsigned char* __restrict__ src, float* __restrict__ dst,
    double scale_x, double scale_y,
    int src_h, int src_w, int src_pitch, int dst_h, int dst_w, int resized_h, int resized_w,
    float mean_r, float mean_g, float mean_b, float std_r, float std_g, float std_b)
{
    fm_letterbox<float>(src, dst, scale_x, scale_y, src_h, src_w, src_pitch, dst_h, dst_w, resized_h,
                        resized_w, mean_r, mean_g, mean_b, std_r, std_g, std_b);
}

extern "C" __global__ void fm_letterbox_f16(
    const unsigned char* __restrict__ src, unsigned short* __restrict__ dst,
    double scale_x, double scale_y,
    int src_h, int src_w, int src_pitch, int dst_h, int dst_w, int resized_h, int resized_w,
    float mean_r, float mean_g, float mean_b, float std_r, float std_g, float std_b)
{
    fm_letterbox<unsigned short>(src, dst, scale_x, scale_y, src_h, src_w, src_pitch, dst_h, dst_w,
                                 resized_h, resized_w, mean_r, mean_g, mean_b, std_r, std_g, std_b);
}

// ---------------------------------------------------------------------------------------------------
// 2. Decoding: one thread per (anchor, class) pair
// ---------------------------------------------------------------------------------------------------
//
// counters[0]: number of candidates (logit above the threshold), counters[1]: number kept by top-K.
// fm_reset_counters (counters and coarse_hist to zero) must run before each fm_decode_candidates_*.
//
// A candidate is one 64-bit key: (order-preserving bits of the float logit) << 32 | (0xffffffff - flat
// index), flat index = anchor * num_classes + class. Keys are unique, so "larger key first" is a total
// order: logit descending, then flat index ascending, which is the NumPy reference's order for top-K
// and, since the sigmoid never reverses two logits, for NMS too (equal float32 scores of different
// logits keep their logit order there). Candidates need `logit > logit_threshold` (the float32 logit
// of the score threshold, PostprocessConfig.logit_threshold); NaN logits never pass. Every later step
// depends only on the set of keys, never on the order the atomics wrote them in: results are
// deterministic.

__device__ __forceinline__ unsigned int fm_ordered_bits(float x) {
    const unsigned int u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float fm_from_ordered_bits(unsigned int o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

extern "C" __global__ void fm_reset_counters(unsigned int* counters, unsigned int* coarse_hist) {
    if (threadIdx.x < 4) counters[threadIdx.x] = 0u;
    for (unsigned int b = threadIdx.x; b < FM_COARSE_BINS; b += blockDim.x) coarse_hist[b] = 0u;
}

// Besides the keys, each block counts its candidates per value of the top FM_COARSE_BITS key bits
// (sign, exponent and 2 mantissa bits of the logit) and adds its counts to coarse_hist: the first
// radix-select digit comes for free, spread over the whole GPU instead of one block's atomics.
template <typename InT>
__device__ __forceinline__ void fm_decode_candidates(
    const InT* __restrict__ logits, unsigned long long* __restrict__ cand_keys, unsigned int* counters,
    unsigned int* coarse_hist, unsigned int total, float logit_threshold)
{
    __shared__ unsigned int s_count;
    __shared__ unsigned int s_base;
    __shared__ unsigned int s_hist[FM_COARSE_BINS];
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x == 0) s_count = 0u;
    for (unsigned int b = threadIdx.x; b < FM_COARSE_BINS; b += blockDim.x) s_hist[b] = 0u;
    __syncthreads();
    bool keep = false;
    unsigned long long key = 0ull;
    unsigned int local = 0u;
    if (i < total) {
        const float logit = fm_load(logits + i);
        if (logit > logit_threshold) {
            keep = true;
            key = ((unsigned long long)fm_ordered_bits(logit) << 32) | (unsigned long long)(0xffffffffu - i);
            local = atomicAdd(&s_count, 1u);
            atomicAdd(&s_hist[(unsigned int)(key >> (64 - FM_COARSE_BITS))], 1u);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) s_base = s_count ? atomicAdd(&counters[0], s_count) : 0u;  // one global atomic per block
    if (s_count)
        for (unsigned int b = threadIdx.x; b < FM_COARSE_BINS; b += blockDim.x)
            if (s_hist[b]) atomicAdd(&coarse_hist[b], s_hist[b]);
    __syncthreads();
    if (keep) cand_keys[s_base + local] = key;
}

extern "C" __global__ void fm_decode_candidates_f32(
    const float* __restrict__ logits, unsigned long long* __restrict__ cand_keys, unsigned int* counters,
    unsigned int* coarse_hist, unsigned int total, float logit_threshold)
{
    fm_decode_candidates<float>(logits, cand_keys, counters, coarse_hist, total, logit_threshold);
}

extern "C" __global__ void fm_decode_candidates_f16(
    const unsigned short* __restrict__ logits, unsigned long long* __restrict__ cand_keys,
    unsigned int* counters, unsigned int* coarse_hist, unsigned int total, float logit_threshold)
{
    fm_decode_candidates<unsigned short>(logits, cand_keys, counters, coarse_hist, total, logit_threshold);
}

// ---------------------------------------------------------------------------------------------------
// 3a. Top-K selection: one block, radix select on the 64-bit keys, then gather
// ---------------------------------------------------------------------------------------------------
//
// If there are more than top_k candidates, find the top_k-th largest key by radix select: the first
// 11-bit digit from coarse_hist, then 8-bit digits (a last one of 5 bits), each a histogram pass over
// the keys that still match the chosen prefix. It stops as soon as the bin holding the top_k-th key is
// taken whole (usually after 2-3 passes). Keys >= the threshold are then gathered in order of a block
// scan, with no atomics: exactly min(n, top_k) keys land in sel_keys; fm_rank_decode_* sorts them.

// Inclusive prefix sum of `value` over the block (Hillis-Steele in shared `scratch[blockDim.x]`).
// Every thread of the block must call it.
__device__ __forceinline__ unsigned int fm_block_inclusive_scan(unsigned int value, unsigned int* scratch) {
    const unsigned int tid = threadIdx.x;
    scratch[tid] = value;
    __syncthreads();
    for (unsigned int offset = 1u; offset < blockDim.x; offset <<= 1) {
        const unsigned int add = tid >= offset ? scratch[tid - offset] : 0u;
        __syncthreads();
        scratch[tid] += add;
        __syncthreads();
    }
    const unsigned int result = scratch[tid];
    __syncthreads();
    return result;
}

// The bin of `hist[nbins]` that holds the need-th largest key (bins ordered high to low), and the
// number of keys in higher bins: written to *s_bin, *s_above (shared). Every thread must call it.
__device__ __forceinline__ void fm_find_bin(const unsigned int* hist, unsigned int nbins, unsigned int need,
                                            unsigned int* scratch, unsigned int* s_bin, unsigned int* s_above) {
    const unsigned int per = (nbins + blockDim.x - 1) / blockDim.x;
    const unsigned int first = threadIdx.x * per;  // positions counted from the top bin
    unsigned int mine = 0u;
    for (unsigned int r = first; r < first + per && r < nbins; ++r) mine += hist[nbins - 1 - r];
    const unsigned int inclusive = fm_block_inclusive_scan(mine, scratch);
    const unsigned int before = inclusive - mine;
    if (before < need && inclusive >= need) {  // exactly one thread
        unsigned int above = before;
        for (unsigned int r = first;; ++r) {
            const unsigned int count = hist[nbins - 1 - r];
            if (above + count >= need) {
                *s_bin = nbins - 1 - r;
                *s_above = above;
                break;
            }
            above += count;
        }
    }
    __syncthreads();
}

extern "C" __global__ void fm_topk_select(
    const unsigned long long* __restrict__ cand_keys, unsigned int* counters,
    const unsigned int* __restrict__ coarse_hist, unsigned long long* __restrict__ sel_keys, unsigned int top_k)
{
    __shared__ unsigned int hist[FM_COARSE_BINS];
    __shared__ unsigned int scratch[FM_SELECT_THREADS];
    __shared__ unsigned int s_bin, s_above;
    const unsigned int n = counters[0];
    const unsigned int tid = threadIdx.x;
    unsigned long long threshold = 0ull;  // keys are > 0, so 0 takes all
    if (n > top_k) {
        for (unsigned int b = tid; b < FM_COARSE_BINS; b += blockDim.x) hist[b] = coarse_hist[b];
        __syncthreads();
        fm_find_bin(hist, FM_COARSE_BINS, top_k, scratch, &s_bin, &s_above);
        unsigned int need = top_k - s_above;
        unsigned long long prefix = (unsigned long long)s_bin << (64 - FM_COARSE_BITS);
        unsigned long long mask = (unsigned long long)(FM_COARSE_BINS - 1) << (64 - FM_COARSE_BITS);
        bool done = hist[s_bin] == need;
        for (int shift = 64 - FM_COARSE_BITS - 8; !done; shift -= 8) {
            const int low = shift > 0 ? shift : 0;                       // last digit: bits 0..(7 + shift)
            const unsigned int nbins = 1u << (shift > 0 ? 8 : 8 + shift);
            __syncthreads();  // everyone has read hist[s_bin]
            for (unsigned int b = tid; b < nbins; b += blockDim.x) hist[b] = 0u;
            __syncthreads();
            for (unsigned int i = tid; i < n; i += blockDim.x) {
                const unsigned long long key = cand_keys[i];
                if ((key & mask) == prefix) atomicAdd(&hist[(unsigned int)(key >> low) & (nbins - 1u)], 1u);
            }
            __syncthreads();
            fm_find_bin(hist, nbins, need, scratch, &s_bin, &s_above);
            need -= s_above;
            prefix |= (unsigned long long)s_bin << low;
            mask |= (unsigned long long)(nbins - 1u) << low;
            done = hist[s_bin] == need || low == 0;
        }
        threshold = prefix;  // lower bits zero: every key of the chosen bin and above
    }
    unsigned int count = 0u;
    for (unsigned int i = tid; i < n; i += blockDim.x) count += cand_keys[i] >= threshold ? 1u : 0u;
    const unsigned int inclusive = fm_block_inclusive_scan(count, scratch);
    unsigned int slot = inclusive - count;
    for (unsigned int i = tid; i < n && slot < top_k; i += blockDim.x) {  // slot < top_k: a guard, always true
        const unsigned long long key = cand_keys[i];
        if (key >= threshold) sel_keys[slot++] = key;
    }
    if (tid == blockDim.x - 1) counters[1] = fm_umin(inclusive, top_k);
}

// ---------------------------------------------------------------------------------------------------
// 3b. Rank sort + box decoding of the selected candidates
// ---------------------------------------------------------------------------------------------------
//
// One thread per selected key; its rank is the number of larger keys (keys are unique, so ranks are a
// permutation). O(m^2) compares through shared-memory tiles: nothing for the few hundred candidates of
// a trained model, ~25M compares (tens of microseconds) in the worst case m = top_k = 5000.
// The thread then computes the sigmoid score, decodes its box (effdet's decode_box_outputs), maps it
// to original-image pixels (divide by the letterbox scale, clip to the image) and writes slot `rank`
// of the sorted arrays.


template <typename InT>
__device__ __forceinline__ void fm_rank_decode(
    const unsigned long long* __restrict__ sel_keys, const unsigned int* counters,
    const InT* __restrict__ box_codes, const float* __restrict__ anchors,
    float* __restrict__ boxes, float* __restrict__ scores, int* __restrict__ classes,
    unsigned int* __restrict__ flat_index,
    unsigned int num_classes, float scale, float image_h, float image_w)
{
    __shared__ unsigned long long tile[FM_RANK_THREADS];
    const unsigned int m = counters[1];
    const unsigned int first = blockIdx.x * blockDim.x;
    if (first >= m) return;  // the whole block is idle: uniform exit, before any barrier
    const unsigned int i = first + threadIdx.x;
    const unsigned long long mine = i < m ? sel_keys[i] : 0ull;
    unsigned int rank = 0u;
    for (unsigned int base = 0u; base < m; base += blockDim.x) {
        const unsigned int j = base + threadIdx.x;
        tile[threadIdx.x] = j < m ? sel_keys[j] : 0ull;
        __syncthreads();
        const unsigned int count = fm_umin(blockDim.x, m - base);
        for (unsigned int k = 0u; k < count; ++k) rank += (tile[k] > mine) ? 1u : 0u;
        __syncthreads();
    }
    if (i >= m) return;

    const unsigned int idx = 0xffffffffu - (unsigned int)(mine & 0xffffffffull);
    const unsigned int anchor = idx / num_classes;
    const float score = 1.f / (1.f + expf(-fm_from_ordered_bits((unsigned int)(mine >> 32))));
    const float* a = anchors + 4ul * anchor;           // x1, y1, x2, y2 (network-input pixels)
    const InT* r = box_codes + 4ul * anchor;         // ty, tx, th, tw
    const float ty = fm_load(r), tx = fm_load(r + 1), th = fm_load(r + 2), tw = fm_load(r + 3);
    const float ycenter_a = (a[1] + a[3]) / 2.f;
    const float xcenter_a = (a[0] + a[2]) / 2.f;
    const float ha = a[3] - a[1];
    const float wa = a[2] - a[0];
    const float w = expf(tw) * wa;
    const float h = expf(th) * ha;
    const float ycenter = ty * ha + ycenter_a;
    const float xcenter = tx * wa + xcenter_a;
    float* out = boxes + 4ul * rank;
    const float x1 = (xcenter - w / 2.f) / scale, y1 = (ycenter - h / 2.f) / scale;
    const float x2 = (xcenter + w / 2.f) / scale, y2 = (ycenter + h / 2.f) / scale;
    // fmaxf/fminf would turn NaN and inf into plausible clipped boxes: mark them NaN for fm_nms_reduce
    const bool finite = isfinite(x1) && isfinite(y1) && isfinite(x2) && isfinite(y2);
    out[0] = finite ? fminf(fmaxf(x1, 0.f), image_w) : NAN;
    out[1] = finite ? fminf(fmaxf(y1, 0.f), image_h) : NAN;
    out[2] = finite ? fminf(fmaxf(x2, 0.f), image_w) : NAN;
    out[3] = finite ? fminf(fmaxf(y2, 0.f), image_h) : NAN;
    scores[rank] = score;
    classes[rank] = (int)(idx - anchor * num_classes);
    flat_index[rank] = idx;
}

extern "C" __global__ void fm_rank_decode_f32(
    const unsigned long long* __restrict__ sel_keys, const unsigned int* counters,
    const float* __restrict__ box_codes, const float* __restrict__ anchors,
    float* __restrict__ boxes, float* __restrict__ scores, int* __restrict__ classes,
    unsigned int* __restrict__ flat_index,
    unsigned int num_classes, float scale, float image_h, float image_w)
{
    fm_rank_decode<float>(sel_keys, counters, box_codes, anchors, boxes, scores, classes, flat_index,
                          num_classes, scale, image_h, image_w);
}

extern "C" __global__ void fm_rank_decode_f16(
    const unsigned long long* __restrict__ sel_keys, const unsigned int* counters,
    const unsigned short* __restrict__ box_codes, const float* __restrict__ anchors,
    float* __restrict__ boxes, float* __restrict__ scores, int* __restrict__ classes,
    unsigned int* __restrict__ flat_index,
    unsigned int num_classes, float scale, float image_h, float image_w)
{
    fm_rank_decode<unsigned short>(sel_keys, counters, box_codes, anchors, boxes, scores, classes,
                                   flat_index, num_classes, scale, image_h, image_w);
}

// ---------------------------------------------------------------------------------------------------
// 3c. Class-aware NMS: IoU bitmask (64 boxes per word), then a single-block greedy reduction
// ---------------------------------------------------------------------------------------------------
//
// mask[i * col_blocks + cb] bit k is set when box j = cb * 64 + k comes after box i (j > i: ranked
// lower), has the same class (any class when class_agnostic) and IoU(i, j) > iou_threshold
// (torchvision's rule: suppress on "greater than"). Only the upper triangle (cb >= i / 64) is written, and only that part is read.
// Grid: (max_col_blocks, max_col_blocks) blocks of 64 threads; blocks outside the live m x m triangle
// return at once.

__device__ __forceinline__ float fm_iou(float ax1, float ay1, float ax2, float ay2,
                                        float bx1, float by1, float bx2, float by2) {
    const float left = fmaxf(ax1, bx1), top = fmaxf(ay1, by1);
    const float right = fminf(ax2, bx2), bottom = fminf(ay2, by2);
    const float inter = fmaxf(right - left, 0.f) * fmaxf(bottom - top, 0.f);
    const float area_a = (ax2 - ax1) * (ay2 - ay1);
    const float area_b = (bx2 - bx1) * (by2 - by1);
    return inter / (area_a + area_b - inter);  // 0/0 = NaN for two empty boxes: never suppresses
}

// A detection the reference keeps at all (postprocess.valid_detections): finite score, finite
// non-empty box. NaN compares false, so `x2 > x1` also rejects NaN coordinates.
__device__ __forceinline__ bool fm_valid_detection(const float* b, float score) {
    return isfinite(score) && isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3])
        && b[2] > b[0] && b[3] > b[1];
}

extern "C" __global__ void fm_nms_mask(
    const float* __restrict__ boxes, const int* __restrict__ classes, const unsigned int* counters,
    unsigned long long* __restrict__ mask, float iou_threshold, int class_agnostic)
{
    __shared__ float col_box[FM_NMS_BLOCK * 4];
    __shared__ int col_class[FM_NMS_BLOCK];
    const unsigned int m = counters[1];
    const unsigned int col_blocks = (m + FM_NMS_BLOCK - 1) / FM_NMS_BLOCK;
    const unsigned int row_block = blockIdx.y, col_block = blockIdx.x;
    if (row_block >= col_blocks || col_block >= col_blocks || col_block < row_block) return;
    const unsigned int tid = threadIdx.x;
    const unsigned int col_start = col_block * FM_NMS_BLOCK, row_start = row_block * FM_NMS_BLOCK;
    const unsigned int cols = fm_umin(FM_NMS_BLOCK, m - col_start);
    const unsigned int rows = fm_umin(FM_NMS_BLOCK, m - row_start);
    if (tid < cols) {
        for (int k = 0; k < 4; ++k) col_box[tid * 4 + k] = boxes[4ul * (col_start + tid) + k];
        col_class[tid] = classes[col_start + tid];
    }
    __syncthreads();
    if (tid < rows) {
        const unsigned int i = row_start + tid;
        const float* b = boxes + 4ul * i;
        const float x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
        const int cls = classes[i];
        unsigned long long bits = 0ull;
        const unsigned int start = (row_block == col_block) ? tid + 1u : 0u;
        for (unsigned int k = start; k < cols; ++k) {
            if (!class_agnostic && col_class[k] != cls) continue;
            const float* c = col_box + 4 * k;
            if (fm_iou(x1, y1, x2, y2, c[0], c[1], c[2], c[3]) > iou_threshold) bits |= 1ull << k;
        }
        mask[(unsigned long)i * col_blocks + col_block] = bits;
    }
}

// Greedy pass in rank order: box i is kept unless an earlier kept box suppressed it. One block, one
// 64-box word at a time: thread 0 decides the word's boxes from the word's `removed` bits and their
// own mask words (staged in shared memory), then all threads write the kept detections and OR the
// kept boxes' rows into the later words in parallel (word w owned by thread w % blockDim.x, so no two
// threads write one word between barriers). Stops at max_detections. Writes the output arrays and
// out_count (mapped host memory or device memory).

extern "C" __global__ void fm_nms_reduce(
    const unsigned long long* __restrict__ mask, const float* __restrict__ boxes,
    const float* __restrict__ scores, const int* __restrict__ classes, const unsigned int* counters,
    float* __restrict__ out_boxes, float* __restrict__ out_scores, int* __restrict__ out_classes,
    unsigned int* __restrict__ out_count, unsigned int max_detections)
{
    __shared__ unsigned long long removed[FM_MAX_WORDS];
    __shared__ unsigned long long diag[FM_NMS_BLOCK];
    __shared__ unsigned int kept_list[FM_NMS_BLOCK];
    __shared__ unsigned int s_new;
    const unsigned int m = counters[1];
    const unsigned int col_blocks = (m + FM_NMS_BLOCK - 1) / FM_NMS_BLOCK;
    const unsigned int tid = threadIdx.x;
    for (unsigned int w = tid; w < col_blocks; w += blockDim.x) removed[w] = 0ull;
    unsigned int kept = 0u;
    for (unsigned int b = 0u; b < col_blocks && kept < max_detections; ++b) {
        const unsigned int start = b * FM_NMS_BLOCK;
        const unsigned int in_block = fm_umin(FM_NMS_BLOCK, m - start);
        if (tid < in_block) diag[tid] = mask[(unsigned long)(start + tid) * col_blocks + b];
        __syncthreads();
        if (tid == 0) {
            unsigned long long cur = removed[b];
            unsigned int fresh = 0u;
            for (unsigned int k = 0u; k < in_block && kept + fresh < max_detections; ++k) {
                if (cur & (1ull << k)) continue;
                if (!fm_valid_detection(boxes + 4ul * (start + k), scores[start + k])) continue;  // never kept, never suppresses
                kept_list[fresh++] = k;
                cur |= diag[k];
            }
            s_new = fresh;
        }
        __syncthreads();
        const unsigned int fresh = s_new;
        if (tid < fresh) {
            const unsigned int i = start + kept_list[tid], slot = kept + tid;
            for (int c = 0; c < 4; ++c) out_boxes[4 * slot + c] = boxes[4ul * i + c];
            out_scores[slot] = scores[i];
            out_classes[slot] = classes[i];
        }
        kept += fresh;
        if (kept < max_detections) {
            for (unsigned int w = tid; w < col_blocks; w += blockDim.x) {
                if (w <= b) continue;
                unsigned long long bits = removed[w];
                for (unsigned int j = 0u; j < fresh; ++j)
                    bits |= mask[(unsigned long)(start + kept_list[j]) * col_blocks + w];
                removed[w] = bits;
            }
        }
        __syncthreads();
    }
    if (tid == 0) *out_count = kept;
}
