#include "exactpath.hpp"

#include <algorithm>
#include <thread>
#include <vector>

namespace igan::native {

namespace {

constexpr float kSlope = 0.2f;  // ops.LRELU_SLOPE as float32, as torch's leaky_relu takes it
constexpr float kGain = static_cast<float>(1.4142135623730951);  // ops.SQRT2 as torch's mul takes it

// fn(begin, end) over [0, items), split in `threads` contiguous parts.
template <class F>
void parallel(std::int64_t items, int threads, F fn) {
  std::int64_t parts = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, items));
  if (parts == 1) {
    fn(std::int64_t{0}, items);
    return;
  }
  std::int64_t per = (items + parts - 1) / parts;
  std::vector<std::thread> pool;
  for (std::int64_t t = 1; t < parts; ++t) {
    std::int64_t b = t * per, e = std::min(items, b + per);
    if (b < e) pool.emplace_back(fn, b, e);
  }
  fn(std::int64_t{0}, std::min(items, per));
  for (auto& th : pool) th.join();
}

inline float activate(float v) {
  v = v > 0.0f ? v : v * kSlope;
  return v * kGain;
}

// One row of outputs out[0..w) x c (its first at column x0) through the epilogue, at (i, y).
inline void finish_row(float* __restrict out, std::int64_t w, std::int64_t c, std::int64_t sw, const Epilogue& e,
                       std::int64_t i, std::int64_t y, std::int64_t x0 = 0) {
  for (std::int64_t x = 0; x < w; ++x) {
    float* o = out + x * sw;
    if (e.noise) {
      const float nz = e.strength * e.noise[i * e.nsn + y * e.nsh + (x0 + x) * e.nsw];
      for (std::int64_t k = 0; k < c; ++k) o[k] = o[k] + nz;
    }
    if (e.bias) {
      for (std::int64_t k = 0; k < c; ++k) o[k] = o[k] + e.bias[k];
    }
    for (std::int64_t k = 0; k < c; ++k) o[k] = activate(o[k]);
  }
}

// The four outputs of a whole Winograd tile from its 16 planes g (bias into M[1][1]), through the
// epilogue (the noise values nz; the bias is in M), as winograd_output's general loop computes them.
template <bool kNoise>
void full_tile(const float* const* g, const float* __restrict bias, const float* nz, float* const* d, std::int64_t o) {
  const float *__restrict g0 = g[0], *__restrict g1 = g[1], *__restrict g2 = g[2], *__restrict g3 = g[3];
  const float *__restrict g4 = g[4], *__restrict g5 = g[5], *__restrict g6 = g[6], *__restrict g7 = g[7];
  const float *__restrict g8 = g[8], *__restrict g9 = g[9], *__restrict g10 = g[10], *__restrict g11 = g[11];
  const float *__restrict g12 = g[12], *__restrict g13 = g[13], *__restrict g14 = g[14], *__restrict g15 = g[15];
  float *__restrict d00 = d[0], *__restrict d01 = d[1], *__restrict d10 = d[2], *__restrict d11 = d[3];
  const float n00 = nz[0], n01 = nz[1], n10 = nz[2], n11 = nz[3];
#pragma GCC ivdep  // M's planes, the bias and the outputs never overlap
  for (std::int64_t k = 0; k < o; ++k) {
    const float m11 = g5[k] + bias[k];
    // A^T along the rows: s0 = (m0 + m1) + m2, s1 = ((-m3) + m1) - m2, per column q
    const float a0 = (g0[k] + g4[k]) + g8[k], b0 = ((-g12[k]) + g4[k]) - g8[k];
    const float a1 = (g1[k] + m11) + g9[k], b1 = ((-g13[k]) + m11) - g9[k];
    const float a2 = (g2[k] + g6[k]) + g10[k], b2 = ((-g14[k]) + g6[k]) - g10[k];
    const float a3 = (g3[k] + g7[k]) + g11[k], b3 = ((-g15[k]) + g7[k]) - g11[k];
    float v00 = (a0 + a1) + a2, v01 = (a1 - a2) - a3;
    float v10 = (b0 + b1) + b2, v11 = (b1 - b2) - b3;
    if (kNoise) {
      v00 = v00 + n00;
      v01 = v01 + n01;
      v10 = v10 + n10;
      v11 = v11 + n11;
    }
    d00[k] = activate(v00);
    d01[k] = activate(v01);
    d10[k] = activate(v10);
    d11[k] = activate(v11);
  }
}

}  // namespace

void blur_epilogue_phases(const Nhwc phase[2][2], std::int64_t H, std::int64_t W, const Nhwc& dst, const Epilogue& e,
                          int threads) {
  const std::int64_t c = dst.c;
  parallel(dst.n * dst.h, threads, [&](std::int64_t b, std::int64_t end) {
    std::vector<float> rows(static_cast<std::size_t>(W * c));
    for (std::int64_t t = b; t < end; ++t) {
      const std::int64_t i = t / dst.h, y = t % dst.h;
      float* __restrict r = rows.data();
      for (std::int64_t x = 0; x < W; ++x) {
        const float* s[3];
        for (int a = 0; a < 3; ++a) {
          const std::int64_t yy = y + a;
          s[a] = phase[yy & 1][x & 1].at(i, yy >> 1, x >> 1);
        }
        float* rr = r + x * c;
        for (std::int64_t k = 0; k < c; ++k) {
          float v = s[0][k] + s[2][k];
          rr[k] = v + 2.0f * s[1][k];
        }
      }
      float* out = dst.at(i, y, 0);
      for (std::int64_t x = 0; x < dst.w; ++x) {
        const float *a = r + x * c, *m = r + (x + 1) * c, *z = r + (x + 2) * c;
        float* o = out + x * dst.sw;
        for (std::int64_t k = 0; k < c; ++k) {
          float v = a[k] + z[k];
          v = v + 2.0f * m[k];
          o[k] = v * 0.25f;
        }
      }
      finish_row(out, dst.w, c, dst.sw, e, i, y);
    }
  });
  (void)H;
}

void epilogue(const Nhwc& y, const Epilogue& e, int threads) {
  parallel(y.n * y.h, threads, [&](std::int64_t b, std::int64_t end) {
    for (std::int64_t t = b; t < end; ++t) {
      const std::int64_t i = t / y.h, r = t % y.h;
      finish_row(y.at(i, r, 0), y.w, y.c, y.sw, e, i, r);
    }
  });
}

void winograd_input(const Nhwc& x, std::int64_t r0, std::int64_t r, std::int64_t tw, float* v, int threads) {
  const std::int64_t c = x.c, n = x.n;
  const std::int64_t plane = n * r * tw * c;
  parallel(n * r, threads, [&](std::int64_t b, std::int64_t end) {
    std::vector<float> zero(static_cast<std::size_t>(c), 0.0f);
    for (std::int64_t t = b; t < end; ++t) {
      const std::int64_t i = t / r, tr = t % r;
      for (std::int64_t tc = 0; tc < tw; ++tc) {
        const float* d[4][4];
        for (int a = 0; a < 4; ++a) {
          const std::int64_t yy = 2 * (r0 + tr) + a;
          for (int q = 0; q < 4; ++q) {
            const std::int64_t xx = 2 * tc + q;
            d[a][q] = (yy < x.h && xx < x.w) ? x.at(i, yy, xx) : zero.data();
          }
        }
        float* out = v + ((i * r + tr) * tw + tc) * c;
        #pragma GCC ivdep  // the planes and the outputs never overlap
        for (std::int64_t k = 0; k < c; ++k) {
          float tt[4][4];  // B^T d along the rows, then B along the columns
          for (int q = 0; q < 4; ++q) {
            tt[0][q] = d[0][q][k] - d[2][q][k];
            tt[1][q] = d[1][q][k] + d[2][q][k];
            tt[2][q] = d[2][q][k] - d[1][q][k];
            tt[3][q] = d[1][q][k] - d[3][q][k];
          }
          for (int a = 0; a < 4; ++a) {
            out[(4 * a + 0) * plane + k] = tt[a][0] - tt[a][2];
            out[(4 * a + 1) * plane + k] = tt[a][1] + tt[a][2];
            out[(4 * a + 2) * plane + k] = tt[a][2] - tt[a][1];
            out[(4 * a + 3) * plane + k] = tt[a][1] - tt[a][3];
          }
        }
      }
    }
  });
}

void winograd_output(float* m, std::int64_t r0, std::int64_t r, std::int64_t tw, const Nhwc& out, const Epilogue& e,
                     int threads) {
  const std::int64_t o = out.c, n = out.n;
  const std::int64_t plane = n * r * tw * o;
  parallel(n * r, threads, [&](std::int64_t b, std::int64_t end) {
    for (std::int64_t t = b; t < end; ++t) {
      const std::int64_t i = t / r, tr = t % r;
      const std::int64_t y0 = 2 * (r0 + tr);
      const int rows = y0 + 1 < out.h ? 2 : 1;
      for (std::int64_t tc = 0; tc < tw; ++tc) {
        const std::int64_t x0 = 2 * tc;
        const int cols = x0 + 1 < out.w ? 2 : 1;
        const float* g0 = m + ((i * r + tr) * tw + tc) * o;
        const float* g[16];
        for (int q = 0; q < 16; ++q) g[q] = g0 + q * plane;
        const float* bias = e.bias;  // never null (checked by the binding)
        if (rows == 2 && cols == 2) {  // the common tile: four outputs, the epilogue inline
          float nz[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          if (e.noise)
            for (int a = 0; a < 4; ++a)
              nz[a] = e.strength * e.noise[i * e.nsn + (y0 + a / 2) * e.nsh + (x0 + a % 2) * e.nsw];
          float* d[4] = {out.at(i, y0, x0), out.at(i, y0, x0 + 1), out.at(i, y0 + 1, x0), out.at(i, y0 + 1, x0 + 1)};
          if (e.noise)
            full_tile<true>(g, bias, nz, d, o);
          else
            full_tile<false>(g, bias, nz, d, o);
          continue;
        }
        float* dst[2][2];
        for (int a = 0; a < 2; ++a)
          for (int q = 0; q < 2; ++q) dst[a][q] = (a < rows && q < cols) ? out.at(i, y0 + a, x0 + q) : nullptr;
        for (std::int64_t k = 0; k < o; ++k) {
          float gg[4][4];
          for (int a = 0; a < 4; ++a)
            for (int q = 0; q < 4; ++q) gg[a][q] = g[4 * a + q][k];
          gg[1][1] = gg[1][1] + bias[k];
          float s[2][4];
          for (int q = 0; q < 4; ++q) {
            float v = gg[0][q] + gg[1][q];
            s[0][q] = v + gg[2][q];
            float u = -gg[3][q];
            u = u + gg[1][q];
            s[1][q] = u - gg[2][q];
          }
          for (int a = 0; a < 2; ++a) {
            if (dst[a][0]) {
              float v = s[a][0] + s[a][1];
              dst[a][0][k] = v + s[a][2];
            }
            if (dst[a][1]) {
              float v = s[a][1] - s[a][2];
              dst[a][1][k] = v - s[a][3];
            }
          }
        }
        Epilogue noise_only = e;
        noise_only.bias = nullptr;
        for (int a = 0; a < rows; ++a) finish_row(out.at(i, y0 + a, x0), cols, o, out.sw, noise_only, i, y0 + a, x0);
      }
    }
  });
}

}  // namespace igan::native
