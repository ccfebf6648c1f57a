// XLA FFI binding of cka_items.c: per-item linear CKA as a CPU custom call, so that
// jaxprobe's jitted programs call the kernel on their own device buffers (no copy, no
// host round trip). The items are split over `threads` worker threads by leading index.
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

extern "C" int cka_items_f32(const float *X, int64_t count, int n, int d, int nv, int trans, const float *ref,
                             int64_t nref, int E, const int *debiased, float *out, float *r);

namespace ffi = xla::ffi;

extern "C" int unit_grams_f32(const float *X, int64_t count, int n, int d, int nv, int trans, int E,
                              const int *debiased, float *G, float *r);

namespace {

struct Shape {
  int64_t a, b, count;
  int n, d;
};

ffi::Error item_shape(const ffi::AnyBuffer &x, int64_t trans, Shape *s) {
  if (x.element_type() != ffi::DataType::F32) return ffi::Error::InvalidArgument("x must be float32");
  auto dims = x.dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument("x must be (..., a, b)");
  s->a = dims[dims.size() - 2];
  s->b = dims[dims.size() - 1];
  s->count = (s->a > 0 && s->b > 0) ? static_cast<int64_t>(x.element_count()) / (s->a * s->b) : 0;
  s->n = static_cast<int>(trans ? s->b : s->a);
  s->d = static_cast<int>(trans ? s->a : s->b);
  return ffi::Error::Success();
}

ffi::Error flags_of(ffi::Span<const int64_t> debiased, int flags[2], int *E) {
  *E = static_cast<int>(debiased.size());
  if (*E < 1 || *E > 2) return ffi::Error::InvalidArgument("one or two estimators");
  for (int e = 0; e < *E; ++e) flags[e] = static_cast<int>(debiased[e]);
  return ffi::Error::Success();
}

// work(k0, m, slot): items [k0, k0 + m) on `threads` threads in chunks whose starts are multiples of
// `unit`; slot is the chunk's index (for private buffers). The calling thread takes chunk 0.
template <class F>
void split(int64_t count, int64_t unit, int64_t threads, F work) {
  const int64_t groups = count / unit, T = std::max<int64_t>(1, std::min<int64_t>(threads, groups));
  auto run = [&](int64_t t) {
    const int64_t g0 = groups * t / T, g1 = groups * (t + 1) / T;
    if (g1 > g0) work(g0 * unit, (g1 - g0) * unit, t);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < T; ++t) pool.emplace_back(run, t);
  run(0);
  for (auto &th : pool) th.join();
}

}  // namespace

// x (..., a, b) float32 items; ref (E, R, n, n) unit Grams, item k meeting block k % R (R the
// references, dividing the item count: one per utterance, or one per item); nvalid () int32, the
// real samples of every item. out (E, count), r (count). trans: 0 when an item's samples are its
// a rows, 1 when they are its b columns. debiased: E flags. threads: >= 1.
static ffi::Error CkaItemsImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> ref, ffi::Buffer<ffi::S32> nvalid,
                               ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> r, int64_t trans,
                               ffi::Span<const int64_t> debiased, int64_t threads) {
  Shape s;
  if (auto err = item_shape(x, trans, &s); err.failure()) return err;
  int flags[2] = {0, 0}, E = 0;
  if (auto err = flags_of(debiased, flags, &E); err.failure()) return err;
  auto rdims = ref.dimensions();
  if (rdims.size() != 4 || rdims[0] != E || rdims[2] != s.n || rdims[3] != s.n || rdims[1] < 1 ||
      s.count % rdims[1] != 0)
    return ffi::Error::InvalidArgument("cka_items: ref must be (E, R, n, n) with R dividing the item count");
  const int64_t R = rdims[1];
  const int nv = nvalid.typed_data()[0];
  if (nv < 1 || nv > s.n) return ffi::Error::InvalidArgument("cka_items: n_valid out of range");
  const float *X = static_cast<const float *>(x.untyped_data());
  float *o = out->typed_data(), *rr = r->typed_data();
  const int64_t count = s.count, ab = s.a * s.b, nn = static_cast<int64_t>(s.n) * s.n;
  // chunks start at multiples of R (each item meets block k % R), or anywhere with one reference
  // per item, the reference pointer then moved to the chunk's first block
  const int64_t unit = R == count ? 1 : R;
  std::vector<std::vector<float>> part(static_cast<size_t>(std::max<int64_t>(1, threads)));
  split(count, unit, threads, [&](int64_t k0, int64_t m, int64_t t) {
    part[t].resize(static_cast<size_t>(E * m));
    cka_items_f32(X + k0 * ab, m, s.n, s.d, nv, static_cast<int>(trans), ref.typed_data() + (k0 % R) * nn, R, E,
                  flags, part[t].data(), rr + k0);
    for (int e = 0; e < E; ++e)
      for (int64_t k = 0; k < m; ++k) o[e * count + k0 + k] = part[t][e * m + k];
  });
  return ffi::Error::Success();
}

// x (..., a, b) float32 items; nvalid () int32. grams (E, count, n, n): each item's unit Gram per
// estimator; r (count). trans, debiased, threads: as above.
static ffi::Error UnitGramsImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::S32> nvalid, ffi::ResultBuffer<ffi::F32> grams,
                                ffi::ResultBuffer<ffi::F32> r, int64_t trans, ffi::Span<const int64_t> debiased,
                                int64_t threads) {
  Shape s;
  if (auto err = item_shape(x, trans, &s); err.failure()) return err;
  int flags[2] = {0, 0}, E = 0;
  if (auto err = flags_of(debiased, flags, &E); err.failure()) return err;
  const int nv = nvalid.typed_data()[0];
  if (nv < 1 || nv > s.n) return ffi::Error::InvalidArgument("unit_grams: n_valid out of range");
  const float *X = static_cast<const float *>(x.untyped_data());
  float *G = grams->typed_data(), *rr = r->typed_data();
  const int64_t count = s.count, ab = s.a * s.b, nn = static_cast<int64_t>(s.n) * s.n;
  std::vector<std::vector<float>> part(static_cast<size_t>(std::max<int64_t>(1, threads)));
  split(count, 1, threads, [&](int64_t k0, int64_t m, int64_t t) {
    if (E == 1) {  // one estimator: the chunk's blocks are contiguous in the output
      unit_grams_f32(X + k0 * ab, m, s.n, s.d, nv, static_cast<int>(trans), E, flags, G + k0 * nn, rr + k0);
      return;
    }
    part[t].resize(static_cast<size_t>(E * m * nn));
    unit_grams_f32(X + k0 * ab, m, s.n, s.d, nv, static_cast<int>(trans), E, flags, part[t].data(), rr + k0);
    for (int e = 0; e < E; ++e)
      std::copy(part[t].begin() + e * m * nn, part[t].begin() + (e + 1) * m * nn, G + (e * count + k0) * nn);
  });
  return ffi::Error::Success();
}

// The two results (values, constant statistics) and the settings both handlers take.
template <class Binding>
auto results_and_settings(Binding binding) {
  return std::move(binding)
      .template Ret<ffi::Buffer<ffi::F32>>()
      .template Ret<ffi::Buffer<ffi::F32>>()
      .template Attr<int64_t>("trans")
      .template Attr<ffi::Span<const int64_t>>("debiased")
      .template Attr<int64_t>("threads");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxprobe_cka_items, CkaItemsImpl,
                              results_and_settings(ffi::Ffi::Bind()
                                                       .Arg<ffi::AnyBuffer>()
                                                       .Arg<ffi::Buffer<ffi::F32>>()
                                                       .Arg<ffi::Buffer<ffi::S32>>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxprobe_unit_grams, UnitGramsImpl,
                              results_and_settings(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::Buffer<ffi::S32>>()));

// ---- the median rule's order statistics ----
namespace {

// Sort key of one distance: the bit pattern of max(v, 0) as XLA computes it (negatives and -0.0 give
// +0.0, a NaN stays itself), in the order of those patterns read as signed int32 -- the order in
// which kernels.affinity.epsilon_median bisects -- turned into unsigned order by flipping the sign bit.
inline uint32_t median_key(float v) {
  if (v <= 0.0f) v = 0.0f;
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u ^ 0x80000000u;
}

inline float key_value(uint32_t u) {
  u ^= 0x80000000u;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// Calls visit(key) for every value D[i][j], i < j, of the n x n row-major matrix D.
template <class F>
void upper_pairs(const float *D, int64_t n, F visit) {
  for (int64_t i = 0; i + 1 < n; ++i) {
    const float *row = D + i * n;
    for (int64_t j = i + 1; j < n; ++j) visit(median_key(row[j]));
  }
}

// The median of the n (n - 1) / 2 values above the diagonal (the mean of the two middle values for
// an even count, as 0.5f * (lower + upper)): exact order statistics by one radix pass over the top
// 16 bits of the keys (65,536 counts), then a selection inside the bucket that holds the lower
// middle value (and, when the upper middle value is the next bucket's smallest, one more pass).
float upper_median(const float *D, int64_t n, std::vector<int64_t> &hist, std::vector<uint32_t> &bucket) {
  const int64_t m = n * (n - 1) / 2, rank = (m - 1) / 2;
  hist.assign(65536, 0);
  upper_pairs(D, n, [&](uint32_t u) { ++hist[u >> 16]; });
  int64_t before = 0;
  uint32_t b = 0;
  while (before + hist[b] <= rank) before += hist[b++];
  bucket.clear();
  bucket.reserve(static_cast<size_t>(hist[b]));
  upper_pairs(D, n, [&](uint32_t u) { if ((u >> 16) == b) bucket.push_back(u); });
  const int64_t r = rank - before;
  std::nth_element(bucket.begin(), bucket.begin() + r, bucket.end());
  const uint32_t lo = bucket[static_cast<size_t>(r)];
  if (m % 2) return key_value(lo);
  uint32_t hi;
  if (r + 1 < static_cast<int64_t>(bucket.size())) {
    hi = *std::min_element(bucket.begin() + r + 1, bucket.end());
  } else {  // the upper middle value is the smallest key of the next non-empty bucket
    uint32_t b2 = b + 1;
    while (hist[b2] == 0) ++b2;
    hi = 0xffffffffu;
    upper_pairs(D, n, [&](uint32_t u) { if ((u >> 16) == b2 && u < hi) hi = u; });
  }
  return 0.5f * (key_value(lo) + key_value(hi));
}

}  // namespace

// d2 (..., n, n) float32, n >= 2; out (...): each matrix's median over the pairs i < j.
static ffi::Error UpperMedianImpl(ffi::Buffer<ffi::F32> d2, ffi::ResultBuffer<ffi::F32> out) {
  auto dims = d2.dimensions();
  if (dims.size() < 2 || dims[dims.size() - 1] != dims[dims.size() - 2] || dims[dims.size() - 1] < 2)
    return ffi::Error::InvalidArgument("upper_median: d2 must be (..., n, n) with n >= 2");
  const int64_t n = dims[dims.size() - 1], count = static_cast<int64_t>(d2.element_count()) / (n * n);
  std::vector<int64_t> hist;
  std::vector<uint32_t> bucket;
  for (int64_t k = 0; k < count; ++k) out->typed_data()[k] = upper_median(d2.typed_data() + k * n * n, n, hist, bucket);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxprobe_upper_median, UpperMedianImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
