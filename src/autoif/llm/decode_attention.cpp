// One decode step's attention on a CPU: one query token a row, grouped-query heads, keys and values
// read in place from the local backend's KV cache (a strided view of a wider buffer).
//
// Why not torch's SDPA: its CPU flash kernel is tiled for long queries; on a decode step of
// SmolLM2-135M (a [B, 9, 1, 64] query over [B, 3, ~300, 64] bf16 keys) it reads the cache at about a
// quarter of memory speed and takes half the step. Here each (row, key/value head) is one task: its
// keys are read once for all query heads of the group, scores and the softmax are in fp32, and the
// values are summed in fp32, rounded to the query's dtype at the end. Built by
// `autoif.llm.decode_attention` with torch's cpp_extension for the CPU at hand (-march=native).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

inline float widen(float x) { return x; }

inline float widen(at::BFloat16 x) {
  // bf16 is the top half of an fp32: a shift, which the compiler vectorises.
  const uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

struct Strides {
  int64_t qb, qh, kb, kh, kt, vb, vh, vt, mb;
};

// exp(w - max) over the columns `keep` marks (all when null), 0 elsewhere; returns their sum. Masked
// columns never enter the max, so whatever their scores hold (the cache's free room) is ignored.
inline float softmax_weights(float* w, const bool* keep, int64_t length) {
  float top = -FLT_MAX;
  for (int64_t t = 0; t < length; ++t)
    if (!keep || keep[t]) top = std::max(top, w[t]);
  float mass = 0.f;
  for (int64_t t = 0; t < length; ++t) {
    w[t] = (!keep || keep[t]) ? std::exp(w[t] - top) : 0.f;
    mass += w[t];
  }
  return mass;
}

template <typename T, int D>
void attend(const T* q, const T* k, const T* v, const bool* mask, T* out, int64_t rows, int64_t heads,
            int64_t kv_heads, int64_t length, const Strides& s, float scale) {
  const int64_t group = heads / kv_heads;
  at::parallel_for(0, rows * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> query(group * D), sum(group * D), weight(group * length), total(group);
    float row[D];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kv_heads, h = task % kv_heads;
      const bool* keep = mask ? mask + b * s.mb : nullptr;
      for (int64_t g = 0; g < group; ++g) {
        const T* from = q + b * s.qb + (h * group + g) * s.qh;
        for (int d = 0; d < D; ++d) query[g * D + d] = widen(from[d]) * scale;
      }
      // Scores; a masked column gets no score and, after the softmax, no weight (no infinities:
      // the build assumes finite math).
      const T* keys = k + b * s.kb + h * s.kh;
      for (int64_t t = 0; t < length; ++t) {
        if (keep && !keep[t]) continue;
        const T* key = keys + t * s.kt;
        for (int d = 0; d < D; ++d) row[d] = widen(key[d]);
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = &query[g * D];
          float dot = 0.f;
          for (int d = 0; d < D; ++d) dot += qg[d] * row[d];
          weight[g * length + t] = dot;
        }
      }
      for (int64_t g = 0; g < group; ++g) total[g] = softmax_weights(&weight[g * length], keep, length);
      std::fill(sum.begin(), sum.end(), 0.f);
      const T* values = v + b * s.vb + h * s.vh;
      for (int64_t t = 0; t < length; ++t) {
        if (keep && !keep[t]) continue;
        const T* value = values + t * s.vt;
        for (int d = 0; d < D; ++d) row[d] = widen(value[d]);
        for (int64_t g = 0; g < group; ++g) {
          const float w = weight[g * length + t];
          float* acc = &sum[g * D];
          for (int d = 0; d < D; ++d) acc[d] += w * row[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        T* to = out + (b * heads + h * group + g) * D;
        const float inverse = total[g] > 0.f ? 1.f / total[g] : 0.f;
        for (int d = 0; d < D; ++d) to[d] = static_cast<T>(sum[g * D + d] * inverse);
      }
    }
  });
}

#if defined(__AVX512BF16__)
// bf16 with AVX512_BF16 (the compiler's loops above spend most of their time in one horizontal sum
// per score): a query row's dot products with 16 key rows at a time, as pairs of bf16 products summed
// in fp32 (vdpbf16ps), the 16 partial-sum vectors added across in one transposing tree.
inline __m512 sum_each(__m512 v[16]) {
  __m512 s[8], u[4], w[2];
  for (int i = 0; i < 8; ++i)  // lanes of 128 bits: [v2i, v2i+1, v2i, v2i+1] partials
    s[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int j = 0; j < 4; ++j) {  // lanes: [v4j, v4j+1, v4j+2, v4j+3] partials
    const __m512d a = _mm512_castps_pd(s[2 * j]), b = _mm512_castps_pd(s[2 * j + 1]);
    u[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  for (int k = 0; k < 2; ++k)  // lanes: [u2k 0+1, u2k 2+3, u2k+1 0+1, u2k+1 2+3]
    w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0x88),
                         _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
}

// 16 partial sums of a 64-long bf16 dot product (pairs of products, summed in fp32).
inline __m512 dot64(__m512bh q0, __m512bh q1, const at::BFloat16* key) {
  const __m512 low = _mm512_dpbf16_ps(_mm512_setzero_ps(), q0, (__m512bh)_mm512_loadu_si512(key));
  return _mm512_dpbf16_ps(low, q1, (__m512bh)_mm512_loadu_si512(key + 32));
}

inline __m512 widen16(const at::BFloat16* p) {  // 16 bf16 -> 16 fp32
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

void attend_bf16_64(const at::BFloat16* q, const at::BFloat16* k, const at::BFloat16* v, const bool* mask,
                    at::BFloat16* out, int64_t rows, int64_t heads, int64_t kv_heads, int64_t length,
                    const Strides& s, float scale) {
  const int64_t group = heads / kv_heads;
  at::parallel_for(0, rows * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weight(length);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kv_heads, h = task % kv_heads;
      const bool* keep = mask ? mask + b * s.mb : nullptr;
      const at::BFloat16* keys = k + b * s.kb + h * s.kh;
      const at::BFloat16* values = v + b * s.vb + h * s.vh;
      for (int64_t g = 0; g < group; ++g) {
        const at::BFloat16* query = q + b * s.qb + (h * group + g) * s.qh;
        const __m512bh q0 = (__m512bh)_mm512_loadu_si512(query), q1 = (__m512bh)_mm512_loadu_si512(query + 32);
        int64_t t = 0;
        for (; t + 16 <= length; t += 16) {
          __m512 dots[16];
          for (int i = 0; i < 16; ++i) dots[i] = dot64(q0, q1, keys + (t + i) * s.kt);
          _mm512_storeu_ps(&weight[t], _mm512_mul_ps(sum_each(dots), _mm512_set1_ps(scale)));
        }
        for (; t < length; ++t) weight[t] = _mm512_reduce_add_ps(dot64(q0, q1, keys + t * s.kt)) * scale;
        const float mass = softmax_weights(weight.data(), keep, length);
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t i = 0; i < length; ++i) {
          if (keep && !keep[i]) continue;
          const at::BFloat16* value = values + i * s.vt;
          const __m512 w = _mm512_set1_ps(weight[i]);
          for (int c = 0; c < 4; ++c) acc[c] = _mm512_fmadd_ps(w, widen16(value + 16 * c), acc[c]);
        }
        const __m512 inverse = _mm512_set1_ps(mass > 0.f ? 1.f / mass : 0.f);
        at::BFloat16* to = out + (b * heads + h * group + g) * 64;
        for (int c = 0; c < 4; ++c) {
          // fp32 -> bf16, rounded to nearest even (vcvtneps2bf16)
          const __m256bh half = _mm512_cvtneps_pbh(_mm512_mul_ps(acc[c], inverse));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + 16 * c), (__m256i)half);
        }
      }
    }
  });
}
#endif

template <typename T>
void dispatch(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const bool* mask,
              torch::Tensor& out, const Strides& s, float scale) {
  const int64_t rows = q.size(0), heads = q.size(1), kv_heads = k.size(1), length = k.size(2);
  const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    if (q.size(2) == 64) return attend_bf16_64(qp, kp, vp, mask, op, rows, heads, kv_heads, length, s, scale);
  }
#endif
  switch (q.size(2)) {
    case 64: attend<T, 64>(qp, kp, vp, mask, op, rows, heads, kv_heads, length, s, scale); break;
    case 128: attend<T, 128>(qp, kp, vp, mask, op, rows, heads, kv_heads, length, s, scale); break;
    default: TORCH_CHECK(false, "decode_attention: head size ", q.size(2), " (64 or 128 only)");
  }
}

}  // namespace

// q [B, H, D]; k, v [B, Hkv, L, D] with H a multiple of Hkv and the last dimension contiguous (any
// other strides); mask: bool [B or 1, L] (true: attend; last dimension contiguous) or empty.
// Returns [B, H, D] in q's dtype (float32 or bfloat16).
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, double scale) {
  TORCH_CHECK(q.device().is_cpu() && q.dim() == 3 && k.dim() == 4 && v.dim() == 4, "decode_attention: shapes");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == q.size(0) && k.size(3) == q.size(2), "decode_attention: shapes");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "decode_attention: heads not a multiple of key/value heads");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), "decode_attention: dtypes");
  TORCH_CHECK(q.stride(2) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "decode_attention: last dim not contiguous");
  const bool* m = nullptr;
  int64_t mb = 0;
  if (mask.numel()) {
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 2 && mask.size(1) == k.size(2) &&
                    mask.stride(1) == 1 && (mask.size(0) == q.size(0) || mask.size(0) == 1),
                "decode_attention: mask");
    m = mask.data_ptr<bool>();
    mb = mask.size(0) == 1 ? 0 : mask.stride(0);
  }
  const Strides s{q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
                  v.stride(0), v.stride(1), v.stride(2), mb};
  auto out = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  if (q.scalar_type() == at::kBFloat16) {
    dispatch<at::BFloat16>(q, k, v, m, out, s, static_cast<float>(scale));
  } else {
    TORCH_CHECK(q.scalar_type() == at::kFloat, "decode_attention: float32 or bfloat16 only");
    dispatch<float>(q, k, v, m, out, s, static_cast<float>(scale));
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "one decode step's grouped-query attention (see the file's head)");
}
