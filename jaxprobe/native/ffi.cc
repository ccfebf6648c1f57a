// XLA FFI binding of cka_items.c: per-item linear CKA as a CPU custom call, so that
// jaxprobe's jitted programs call the kernel on their own device buffers (no copy, no
// host round trip). The items are split over `threads` worker threads by leading index.
#include <cstdint>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

extern "C" int cka_items_f32(const float *X, int64_t count, int n, int d, int nv, int trans, const float *ref,
                             int64_t nref, int E, const int *debiased, float *out, float *r);

namespace ffi = xla::ffi;

// x (..., U, a, b) float32 items; ref (E, U, n, n) the references' unit Grams; nvalid () int32,
// the real samples of every item. out (E, count), r (count). trans: 0 when an item's samples are
// its a rows, 1 when they are its b columns. debiased: E flags. threads: >= 1.
static ffi::Error CkaItemsImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> ref, ffi::Buffer<ffi::S32> nvalid,
                               ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> r, int64_t trans,
                               ffi::Span<const int64_t> debiased, int64_t threads) {
  if (x.element_type() != ffi::DataType::F32) return ffi::Error::InvalidArgument("cka_items: x must be float32");
  auto dims = x.dimensions();
  auto rdims = ref.dimensions();
  if (dims.size() < 3 || rdims.size() != 4) return ffi::Error::InvalidArgument("cka_items: bad ranks");
  const int64_t a = dims[dims.size() - 2], b = dims[dims.size() - 1], U = dims[dims.size() - 3];
  const int n = static_cast<int>(trans ? b : a), d = static_cast<int>(trans ? a : b);
  const int E = static_cast<int>(debiased.size());
  if (E < 1 || E > 2 || rdims[0] != E || rdims[1] != U || rdims[2] != n || rdims[3] != n)
    return ffi::Error::InvalidArgument("cka_items: ref must be (E, U, n, n)");
  const int64_t count = static_cast<int64_t>(x.element_count()) / (a * b);
  const int64_t P = count / U;
  int flags[2] = {0, 0};
  for (int e = 0; e < E; ++e) flags[e] = static_cast<int>(debiased[e]);
  const int nv = nvalid.typed_data()[0];
  if (nv < 1 || nv > n) return ffi::Error::InvalidArgument("cka_items: n_valid out of range");
  const float *X = static_cast<const float *>(x.untyped_data());
  float *o = out->typed_data(), *rr = r->typed_data();
  const int64_t T = std::max<int64_t>(1, std::min<int64_t>(threads, P));
  // thread t takes leading indices [P t / T, P (t + 1) / T): whole groups of U items, so every
  // item meets its own reference; each writes its (E, items) values to a private buffer first
  std::vector<std::vector<float>> part(T);
  auto work = [&](int64_t t) {
    const int64_t p0 = P * t / T, p1 = P * (t + 1) / T, k0 = p0 * U, m = (p1 - p0) * U;
    if (m == 0) return;
    part[t].resize(static_cast<size_t>(E * m));
    cka_items_f32(X + k0 * a * b, m, n, d, nv, static_cast<int>(trans), ref.typed_data(), U, E, flags,
                  part[t].data(), rr + k0);
    for (int e = 0; e < E; ++e)
      for (int64_t k = 0; k < m; ++k) o[e * count + k0 + k] = part[t][e * m + k];
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < T; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto &th : pool) th.join();
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxprobe_cka_items, CkaItemsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("trans")
                                  .Attr<ffi::Span<const int64_t>>("debiased")
                                  .Attr<int64_t>("threads"));
