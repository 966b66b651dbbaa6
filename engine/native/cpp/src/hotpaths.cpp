#include "hotpaths.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace igan::native {

namespace {

// Branch-free so the loops vectorize. The first select maps NaN to -1 (a comparison with NaN
// is false), which quantizes to 0 = kNanByte, the byte torch's cast gives; +-inf clamp to +-1.
// y lies in [0.5, 255.5], where truncation toward zero is floor.
inline std::uint8_t quantize(float x) {
  x = x > -1.0f ? x : -1.0f;
  x = x < 1.0f ? x : 1.0f;
  float y = x + 1.0f;  // each step rounded to float32, as torch's separate ops do
  y = y * 127.5f;
  y = y + 0.5f;
  return static_cast<std::uint8_t>(static_cast<int>(y));
}

// The Paeth predictor of one byte (a: left, b: up, c: upper left), branch-free so the loop
// over a row vectorizes: ties go to a, then b, then c, as the PNG spec says.
// In 16-bit lanes (a + b - 2c fits in [-510, 510]), twice as many per vector as int.
using i16 = std::int16_t;
inline std::uint8_t paeth(i16 a, i16 b, i16 c) {
  i16 pa = static_cast<i16>(b > c ? b - c : c - b);
  i16 pb = static_cast<i16>(a > c ? a - c : c - a);
  i16 s = static_cast<i16>(a + b - 2 * c);
  i16 pc = static_cast<i16>(s < 0 ? -s : s);
  i16 not_a = pb <= pc ? b : c;
  return static_cast<std::uint8_t>(pa <= pb && pa <= pc ? a : not_a);
}

// Sum over a filtered row of |byte as int8|, as the Python path sums it: min(v, 256 - v).
inline std::uint32_t cost(const std::uint8_t* __restrict v, std::int64_t n) {
  std::uint32_t sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint8_t neg = static_cast<std::uint8_t>(-v[i]);
    sum += v[i] < neg ? v[i] : neg;
  }
  return sum;
}

// The four predicted filters of one row into f[0..3] (Sub, Up, Average, Paeth), [bytes] each.
// The left neighbours of the first pixel are 0.
void predict(const std::uint8_t* __restrict row, const std::uint8_t* __restrict up, std::int64_t bytes, int bpp,
             std::uint8_t* __restrict sub, std::uint8_t* __restrict upf, std::uint8_t* __restrict avg,
             std::uint8_t* __restrict pae) {
  const std::int64_t head = bytes < bpp ? bytes : bpp;
  for (std::int64_t i = 0; i < head; ++i) {
    sub[i] = row[i];
    upf[i] = static_cast<std::uint8_t>(row[i] - up[i]);
    avg[i] = static_cast<std::uint8_t>(row[i] - (up[i] >> 1));
    pae[i] = static_cast<std::uint8_t>(row[i] - up[i]);  // Paeth(0, b, 0) = b
  }
  for (std::int64_t i = head; i < bytes; ++i) {
    i16 x = row[i], a = row[i - bpp], b = up[i], c = up[i - bpp];
    sub[i] = static_cast<std::uint8_t>(x - a);
    upf[i] = static_cast<std::uint8_t>(x - b);
    avg[i] = static_cast<std::uint8_t>(x - ((a + b) >> 1));
    pae[i] = static_cast<std::uint8_t>(x - paeth(a, b, c));
  }
}

}  // namespace

void to_uint8_nhwc(const float* rgb, std::uint8_t* out, std::int64_t n, std::int64_t c, std::int64_t h,
                   std::int64_t w) {
  static_assert(kNanByte == 0, "quantize() maps NaN through -1 to 0");
  const std::int64_t plane = h * w;
  constexpr std::int64_t kBlock = 256;  // pixels per block: quantize planes, then interleave
  alignas(64) std::uint8_t q[4][kBlock];
  for (std::int64_t k = 0; k < n; ++k) {
    const float* src = rgb + k * c * plane;
    std::uint8_t* dst = out + k * c * plane;
    if (c == 3) {  // the common case: three planes -> interleaved RGB, a block at a time
      for (std::int64_t p0 = 0; p0 < plane; p0 += kBlock) {
        const std::int64_t m = plane - p0 < kBlock ? plane - p0 : kBlock;
        for (int ch = 0; ch < 3; ++ch) {
          const float* __restrict s = src + ch * plane + p0;
          std::uint8_t* __restrict d = q[ch];
          for (std::int64_t i = 0; i < m; ++i) d[i] = quantize(s[i]);
        }
        std::uint8_t* __restrict d = dst + 3 * p0;
        for (std::int64_t i = 0; i < m; ++i) {
          d[3 * i] = q[0][i];
          d[3 * i + 1] = q[1][i];
          d[3 * i + 2] = q[2][i];
        }
      }
      continue;
    }
    for (std::int64_t p = 0; p < plane; ++p)
      for (std::int64_t ch = 0; ch < c; ++ch) dst[p * c + ch] = quantize(src[ch * plane + p]);
  }
}

void filter_rows(const std::uint8_t* cur, const std::uint8_t* prev, std::uint8_t* out, std::int64_t h,
                 std::int64_t bytes, int bpp) {
  std::vector<std::uint8_t> scratch(static_cast<std::size_t>(4 * bytes));
  std::uint8_t* f[5] = {nullptr, scratch.data(), scratch.data() + bytes, scratch.data() + 2 * bytes,
                        scratch.data() + 3 * bytes};
  for (std::int64_t r = 0; r < h; ++r) {
    const std::uint8_t* row = cur + r * bytes;
    const std::uint8_t* up = r == 0 ? prev : row - bytes;
    f[0] = const_cast<std::uint8_t*>(row);
    predict(row, up, bytes, bpp, f[1], f[2], f[3], f[4]);
    int best = 0;
    std::uint32_t best_cost = cost(f[0], bytes);
    for (int k = 1; k < 5; ++k) {
      const std::uint32_t c = cost(f[k], bytes);
      if (c < best_cost) best = k, best_cost = c;  // ties keep the lower filter type
    }
    std::uint8_t* dst = out + r * (bytes + 1);
    dst[0] = static_cast<std::uint8_t>(best);
    std::memcpy(dst + 1, f[best], static_cast<std::size_t>(bytes));
  }
}

}  // namespace igan::native
