// Stride-1 2-D convolution (NHWC x HWIO -> NHWC) and its kernel gradient with bfloat16
// inputs and float32 accumulation on Intel AMX tiles, as XLA FFI custom calls for
// XLA:CPU; see practice_jax/kernels/__init__.py for why and for what it measured.
//
// Both are implicit GEMMs over "full-width rows": each image is padded and flattened to
// S = Hp * Wp pixels, and output pixel m = oh * Wp + ow reads input pixel m + i * Wp + j
// for kernel tap (i, j). A tile of 16 consecutive output pixels at one tap is then 16
// consecutive input pixels, loaded straight from the padded input (no patch matrix); the
// Wp - OW columns past each output row are computed and dropped (their inputs run into
// the next row) and, in the kernel gradient, multiplied by zeros (which cancels finite
// values only: an inf or NaN in x can reach dk through them, where XLA's would not).
//
// Built by practice_jax/kernels/__init__.py with -march=native on the machine it runs on.
// Where the compiler targets AMX (__AMX_TILE__ and __AMX_BF16__), the tile operations
// are AMX instructions; the same code also runs on an emulation of the eight tiles in
// plain C++ (attribute emulate=1, or a build without AMX): slow, for testing the indexing
// on any machine.

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using bf16 = uint16_t;      // bfloat16 as its bits (XLA FFI maps BF16 to uint16_t)

inline float from_bf16(bf16 b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// XLA's intra-op thread pool for the custom call running on this thread (set by `guarded`;
// null outside a call, where the work runs on the calling thread alone).
thread_local ffi::ThreadPool* current_pool = nullptr;

int64_t workers() {
  return current_pool ? std::max<int64_t>(1, current_pool->num_threads()) : 1;
}

// f(lo, hi) over [0, n) in workers() even shares: the calling thread takes shares until none
// is left, while tasks on XLA's thread pool take the others as soon as a pool thread is
// free; the call returns when every share taken has finished. A task that starts later
// finds none left (so two custom calls that run at once cannot wait on each other's tasks).
template <class F>
void parallel_for(int64_t n, F f) {
  const int64_t t = std::min(n, workers());
  if (t <= 1) {
    if (n > 0) f(0, n);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0}, active{0};
    std::mutex m;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  F* fp = &f;                     // called only for a share taken before the call returns
  auto work = [shared, fp, n, t] {
    for (;;) {
      shared->active.fetch_add(1);
      const int64_t i = shared->next.fetch_add(1);
      if (i < t) (*fp)(n * i / t, n * (i + 1) / t);
      if (shared->active.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(shared->m);
        shared->cv.notify_all();
      }
      if (i >= t) return;
    }
  };
  for (int64_t i = 1; i < t; ++i) current_pool->Schedule(decltype(work)(work));  // a copy each
  work();
  std::unique_lock<std::mutex> lock(shared->m);
  shared->cv.wait(lock, [&] { return shared->active.load() == 0; });
}

// Every tile is 16 rows of 64 bytes: C0..C3 (tmm0-3) float32 16x16 accumulators,
// A0, A1 (tmm4, 5) 16 rows of 32 bfloat16, B0, B1 (tmm6, 7) 16 rows of 16 bfloat16
// pairs. dp4: C0 += A0 B0, C1 += A0 B1, C2 += A1 B0, C3 += A1 B1.

// Plain C++ tiles, one set per thread.
struct Emulated {
  alignas(64) uint8_t tile[8][16 * 64];
  void start() {}
  void stop() {}
  void load(int t, const void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r)
      std::memcpy(tile[t] + r * 64, static_cast<const uint8_t*>(p) + r * stride, 64);
  }
  void store(int t, void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r)
      std::memcpy(static_cast<uint8_t*>(p) + r * stride, tile[t] + r * 64, 64);
  }
  void zero(int t) { std::memset(tile[t], 0, 16 * 64); }
  void dp(int c, int a, int b) {
    float cf[256];
    bf16 ab[512], bb[512];
    std::memcpy(cf, tile[c], sizeof cf);
    std::memcpy(ab, tile[a], sizeof ab);
    std::memcpy(bb, tile[b], sizeof bb);
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        float s = cf[m * 16 + n];
        for (int k = 0; k < 16; ++k)
          s += from_bf16(ab[m * 32 + 2 * k]) * from_bf16(bb[k * 32 + 2 * n]) +
               from_bf16(ab[m * 32 + 2 * k + 1]) * from_bf16(bb[k * 32 + 2 * n + 1]);
        cf[m * 16 + n] = s;
      }
    std::memcpy(tile[c], cf, sizeof cf);
  }
  void load_a(int i, const void* p, int64_t s) { load(4 + i, p, s); }
  void load_b(int i, const void* p, int64_t s) { load(6 + i, p, s); }
  void load_c(int i, const void* p, int64_t s) { load(i, p, s); }
  void store_c(int i, void* p, int64_t s) { store(i, p, s); }
  void zero_c() { for (int i = 0; i < 4; ++i) zero(i); }
  void dp4() { dp(0, 4, 6); dp(1, 4, 7); dp(2, 5, 6); dp(3, 5, 7); }
};

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
constexpr bool kHaveAmx = true;

struct TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

struct Amx {
  void start() {
    alignas(64) TileConfig cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; ++t) {
      cfg.rows[t] = 16;
      cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
  }
  void stop() { _tile_release(); }
  void load_a(int i, const void* p, int64_t s) {
    if (i == 0) _tile_loadd(4, p, s); else _tile_loadd(5, p, s);
  }
  void load_b(int i, const void* p, int64_t s) {
    if (i == 0) _tile_loadd(6, p, s); else _tile_loadd(7, p, s);
  }
  void load_c(int i, const void* p, int64_t s) {
    switch (i) {
      case 0: _tile_loadd(0, p, s); break;
      case 1: _tile_loadd(1, p, s); break;
      case 2: _tile_loadd(2, p, s); break;
      default: _tile_loadd(3, p, s);
    }
  }
  void store_c(int i, void* p, int64_t s) {
    switch (i) {
      case 0: _tile_stored(0, p, s); break;
      case 1: _tile_stored(1, p, s); break;
      case 2: _tile_stored(2, p, s); break;
      default: _tile_stored(3, p, s);
    }
  }
  void zero_c() { _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); }
  void dp4() {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
};

bool amx_permitted() {       // Linux hands out the tile state only on request
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                 18 /* XFEATURE_XTILEDATA */) == 0;
  return ok;
}
#else
constexpr bool kHaveAmx = false;
bool amx_permitted() { return false; }
#endif

// A reusable per-thread buffer (no fresh pages, hence no page faults, on every call).
template <class T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

struct Geometry {
  int64_t n, h, w, c, kh, kw, co, plh, phh, plw, phw;
  int64_t hp() const { return h + plh + phh; }
  int64_t wp() const { return w + plw + phw; }
  int64_t oh() const { return hp() - kh + 1; }
  int64_t ow() const { return wp() - kw + 1; }
  int64_t s() const { return hp() * wp(); }            // pixels per padded image
  // Output pixels per image, full-width, rounded up to `unit`.
  int64_t m(int64_t unit) const { return (oh() * wp() + unit - 1) / unit * unit; }
  // Padded input pixels past the last image that its last tiles read (one spare).
  int64_t tail(int64_t unit) const { return m(unit) + (kh - 1) * wp() + kw - s(); }
};

// x [n, h, w, c] -> [n * S + tail, c] zero-padded (channels last), or [c, n * S + tail]
// (transposed).
void pack_input(const bf16* x, const Geometry& g, int64_t unit, bool transposed, bf16* out) {
  const int64_t S = g.s(), wp = g.wp(), len = g.n * S + std::max<int64_t>(0, g.tail(unit));
  parallel_for(g.n, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t y = 0; y < g.hp(); ++y) {
        const int64_t sy = y - g.plh, row = b * S + y * wp;
        const bool inside = sy >= 0 && sy < g.h;
        const bf16* src = inside ? x + (b * g.h + sy) * g.w * g.c : nullptr;
        if (transposed) {
          for (int64_t xx = 0; xx < wp; ++xx) {
            const int64_t sx = xx - g.plw;
            const bf16* from = inside && sx >= 0 && sx < g.w ? src + sx * g.c : nullptr;
            for (int64_t c = 0; c < g.c; ++c) out[c * len + row + xx] = from ? from[c] : 0;
          }
        } else {
          bf16* dst = out + row * g.c;
          if (!inside) {
            std::memset(dst, 0, wp * g.c * sizeof(bf16));
            continue;
          }
          std::memset(dst, 0, g.plw * g.c * sizeof(bf16));
          std::memcpy(dst + g.plw * g.c, src, g.w * g.c * sizeof(bf16));
          std::memset(dst + (g.plw + g.w) * g.c, 0, g.phw * g.c * sizeof(bf16));
        }
      }
    }
  });
  const int64_t tail = len - g.n * S;
  for (int64_t c = 0; c < (transposed ? g.c : 1); ++c) {
    bf16* t = transposed ? out + c * len + g.n * S : out + g.n * S * g.c;
    std::memset(t, 0, tail * (transposed ? 1 : g.c) * sizeof(bf16));
  }
}

// y = conv(x, k): x [n, h, w, c], k [kh, kw, c, co] bfloat16 -> y [n, oh, ow, co] float32.
template <class Tiles>
void conv_forward(const bf16* x, const bf16* k, const Geometry& g, float* y) {
  static thread_local std::vector<bf16> xs, ks;
  const int64_t M = g.m(32), S = g.s(), wp = g.wp(), ow = g.ow(), oh = g.oh();
  bf16* xp = scratch(xs, (g.n * S + std::max<int64_t>(0, g.tail(32))) * g.c);
  pack_input(x, g, 32, false, xp);
  // k as [tap][c / 2][co][2]: B tiles of 16 channel pairs x 16 outputs.
  bf16* kv = scratch(ks, g.kh * g.kw * g.c * g.co);
  for (int64_t t = 0; t < g.kh * g.kw; ++t)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t o = 0; o < g.co; ++o)
        kv[((t * (g.c / 2) + c / 2) * g.co + o) * 2 + c % 2] = k[(t * g.c + c) * g.co + o];
  const int64_t blocks = M / 32;
  parallel_for(g.n * blocks, [&](int64_t lo, int64_t hi) {
    Tiles tiles;
    tiles.start();
    alignas(64) float out[4][16 * 16];
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t b = item / blocks, m0 = item % blocks * 32;
      for (int64_t o0 = 0; o0 < g.co; o0 += 32) {
        tiles.zero_c();
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j)
            for (int64_t c0 = 0; c0 < g.c; c0 += 32) {
              const bf16* a = xp + (b * S + m0 + i * wp + j) * g.c + c0;
              tiles.load_a(0, a, g.c * 2);
              tiles.load_a(1, a + 16 * g.c, g.c * 2);
              const bf16* kb = kv + (((i * g.kw + j) * (g.c / 2) + c0 / 2) * g.co + o0) * 2;
              tiles.load_b(0, kb, g.co * 4);
              tiles.load_b(1, kb + 32, g.co * 4);
              tiles.dp4();
            }
        for (int q = 0; q < 4; ++q) tiles.store_c(q, out[q], 64);
        for (int q = 0; q < 4; ++q)
          for (int r = 0; r < 16; ++r) {
            const int64_t m = m0 + (q / 2) * 16 + r, yy = m / wp, xx = m % wp;
            if (yy < oh && xx < ow)
              std::memcpy(y + ((b * oh + yy) * ow + xx) * g.co + o0 + (q % 2) * 16,
                          out[q] + r * 16, 64);
          }
      }
    }
    tiles.stop();
  });
}

// dk = sum over pixels of x (padded) times dy: x [n, h, w, c], dy [n, oh, ow, co]
// bfloat16 -> dk [kh, kw, c, co] float32.
template <class Tiles>
void conv_kernel_grad(const bf16* x, const bf16* dy, const Geometry& g, float* dk) {
  static thread_local std::vector<bf16> xs, ds;
  const int64_t M = g.m(32), S = g.s(), wp = g.wp(), ow = g.ow(), oh = g.oh();
  const int64_t len = g.n * S + std::max<int64_t>(0, g.tail(32));
  bf16* xt = scratch(xs, len * g.c);
  pack_input(x, g, 32, true, xt);
  // dy as [n][M / 2][co][2], zero in the columns past ow and the rows past oh * wp.
  bf16* dv = scratch(ds, g.n * M * g.co);
  parallel_for(g.n, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b)
      for (int64_t m = 0; m < M; m += 2) {           // pixels m and m + 1, interleaved
        bf16* dst = dv + (b * M + m) * g.co;
        const bf16* src[2];
        for (int64_t q = 0; q < 2; ++q) {
          const int64_t yy = (m + q) / wp, xx = (m + q) % wp;
          src[q] = yy < oh && xx < ow ? dy + ((b * oh + yy) * ow + xx) * g.co : nullptr;
        }
        for (int64_t o = 0; o < g.co; ++o) {
          dst[2 * o] = src[0] ? src[0][o] : 0;
          dst[2 * o + 1] = src[1] ? src[1][o] : 0;
        }
      }
  });
  const int64_t taps = g.kh * g.kw, size = taps * g.c * g.co;
  const int64_t t = std::min(g.n, workers());
  std::vector<float> partial(t * size, 0.0f);
  parallel_for(t, [&](int64_t lo, int64_t hi) {
    for (int64_t part = lo; part < hi; ++part) {
      Tiles tiles;
      tiles.start();
      float* acc = partial.data() + part * size;
      for (int64_t b = g.n * part / t; b < g.n * (part + 1) / t; ++b)
        for (int64_t tap = 0; tap < taps; ++tap) {
          const int64_t off = b * S + tap / g.kw * wp + tap % g.kw;
          for (int64_t c0 = 0; c0 < g.c; c0 += 32)
            for (int64_t o0 = 0; o0 < g.co; o0 += 32) {
              float* cb = acc + (tap * g.c + c0) * g.co + o0;
              for (int q = 0; q < 4; ++q)
                tiles.load_c(q, cb + (q / 2) * 16 * g.co + (q % 2) * 16, g.co * 4);
              for (int64_t m0 = 0; m0 < M; m0 += 32) {
                const bf16* a = xt + c0 * len + off + m0;
                tiles.load_a(0, a, len * 2);
                tiles.load_a(1, a + 16 * len, len * 2);
                const bf16* db = dv + (b * M + m0) * g.co + o0 * 2;
                tiles.load_b(0, db, g.co * 4);
                tiles.load_b(1, db + 32, g.co * 4);
                tiles.dp4();
              }
              for (int q = 0; q < 4; ++q)
                tiles.store_c(q, cb + (q / 2) * 16 * g.co + (q % 2) * 16, g.co * 4);
            }
        }
      tiles.stop();
    }
  });
  for (int64_t i = 0; i < size; ++i) {
    float s = 0;
    for (int64_t p = 0; p < t; ++p) s += partial[p * size + i];
    dk[i] = s;
  }
}

// g: the geometry of x [n, h, w, c] and a kernel [kh, kw, c, co]; an error if the shapes
// (`out`, the output's: y [n, oh, ow, co] or dk [kh, kw, c, co]) or the paddings do not
// fit the kernels.
ffi::Error geometry(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> kd,
                    ffi::Span<const int64_t> out, bool out_is_y, int64_t plh, int64_t phh,
                    int64_t plw, int64_t phw, bool emulate, Geometry& g) {
  if (xd.size() != 4 || kd.size() != 4 || out.size() != 4 || kd[2] != xd[3])
    return ffi::Error::InvalidArgument("amx conv: expected x [n, h, w, c], kernel [kh, kw, c, co]");
  g = {xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], plh, phh, plw, phw};
  if (g.c % 32 || g.co % 32)
    return ffi::Error::InvalidArgument("amx conv: channels must be multiples of 32");
  if (std::min({plh, phh, plw, phw}) < 0 || std::max(plh, phh) >= g.kh ||
      std::max(plw, phw) >= g.kw || g.oh() < 1 || g.ow() < 1)
    return ffi::Error::InvalidArgument("amx conv: paddings must lie in [0, kernel size)");
  const int64_t y[4] = {g.n, g.oh(), g.ow(), g.co}, k[4] = {g.kh, g.kw, g.c, g.co};
  if (!std::equal(out.begin(), out.end(), out_is_y ? y : k))
    return ffi::Error::InvalidArgument("amx conv: the output's shape does not fit x and kernel");
  if (!emulate && !(kHaveAmx && amx_permitted()))
    return ffi::Error::Internal("amx conv: this CPU or build has no usable AMX tiles");
  return ffi::Error::Success();
}

// Runs f, turning an exception (no thread, no memory) into an FFI error: none may cross
// into XLA.
template <class F>
ffi::Error guarded(ffi::ThreadPool& pool, F f) {
  current_pool = &pool;
  struct Reset {
    ~Reset() { current_pool = nullptr; }
  } reset;
  try {
    f();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("amx conv: ") + e.what());
  }
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> k,
                   ffi::ResultBuffer<ffi::F32> y, int64_t plh, int64_t phh, int64_t plw,
                   int64_t phw, int64_t emulate) {
  Geometry g;
  if (auto e = geometry(x.dimensions(), k.dimensions(), y->dimensions(), true, plh, phh, plw,
                        phw, emulate, g); e.failure())
    return e;
  return guarded(pool, [&] {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    if (!emulate) return conv_forward<Amx>(x.typed_data(), k.typed_data(), g, y->typed_data());
#endif
    conv_forward<Emulated>(x.typed_data(), k.typed_data(), g, y->typed_data());
  });
}

ffi::Error KernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x,
                      ffi::Buffer<ffi::BF16> dy, ffi::ResultBuffer<ffi::F32> dk, int64_t plh,
                      int64_t phh, int64_t plw, int64_t phw, int64_t emulate) {
  Geometry g;
  if (auto e = geometry(x.dimensions(), dk->dimensions(), dk->dimensions(), false, plh, phh,
                        plw, phw, emulate, g); e.failure())
    return e;
  const int64_t want[4] = {g.n, g.oh(), g.ow(), g.co};
  if (dy.dimensions().size() != 4 || !std::equal(want, want + 4, dy.dimensions().begin()))
    return ffi::Error::InvalidArgument("amx conv: the output gradient's shape is not the output's");
  return guarded(pool, [&] {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    if (!emulate)
      return conv_kernel_grad<Amx>(x.typed_data(), dy.typed_data(), g, dk->typed_data());
#endif
    conv_kernel_grad<Emulated>(x.typed_data(), dy.typed_data(), g, dk->typed_data());
  });
}

}  // namespace

extern "C" int pj_have_amx() { return kHaveAmx && amx_permitted(); }

// Both calls take XLA's thread pool, two bfloat16 arrays, the paddings; give one float32
// array.
#define PJ_CONV_BINDING                                                              \
  ffi::Ffi::Bind()                                                                   \
      .Ctx<ffi::ThreadPool>()                                                        \
      .Arg<ffi::Buffer<ffi::BF16>>()                                                 \
      .Arg<ffi::Buffer<ffi::BF16>>()                                                 \
      .Ret<ffi::Buffer<ffi::F32>>()                                                  \
      .Attr<int64_t>("plh")                                                          \
      .Attr<int64_t>("phh")                                                          \
      .Attr<int64_t>("plw")                                                          \
      .Attr<int64_t>("phw")                                                          \
      .Attr<int64_t>("emulate")

XLA_FFI_DEFINE_HANDLER_SYMBOL(pj_amx_conv, Forward, PJ_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(pj_amx_conv_kernel_grad, KernelGrad, PJ_CONV_BINDING);
