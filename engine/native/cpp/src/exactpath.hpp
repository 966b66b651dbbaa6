// The exact CPU path's elementwise passes (engine/exactcpu.py), each fused into one pass over
// memory: the upsampling blur with its epilogue, the epilogue alone, and Winograd F(2x2, 3x3)'s
// input and output transforms (the output one with the epilogue). Each computes the same
// float32 operations in the same order as its torch twin in exactcpu.py, so the bytes are the
// same whichever runs (tests/test_exactcpu.py compares them on random inputs). Work is split
// over `threads` by rows; a value never depends on the split.
#pragma once

#include <cstdint>

namespace igan::native {

// A float32 [n, h, w, c] tensor whose channels are contiguous; strides in elements.
struct Nhwc {
  float* p;
  std::int64_t n, h, w, c;
  std::int64_t sn, sh, sw;
  float* at(std::int64_t i, std::int64_t y, std::int64_t x) const { return p + i * sn + y * sh + x * sw; }
};

// The epilogue of a conv: v += strength * noise (when noise), v += bias[c] (when bias), then
// sqrt(2) * leaky_relu(v, 0.2). noise: [n, h, w] with strides (nsn, nsh, nsw).
struct Epilogue {
  const float* noise;
  std::int64_t nsn, nsh, nsw;
  float strength;
  const float* bias;
};

// dst = epilogue(blur3(src)), src given as its four polyphase parts (the upsampling conv's
// outputs before they are interleaved): src[Y][X] = phase[Y % 2][X % 2][Y / 2][X / 2], src is
// H x W; blur3 = ((r[x] + r[x + 2]) + 2 r[x + 1]) * 0.25 over rows r = (s[y] + s[y + 2]) + 2 s[y + 1].
void blur_epilogue_phases(const Nhwc phase[2][2], std::int64_t H, std::int64_t W, const Nhwc& dst, const Epilogue& e,
                          int threads);

// y = epilogue(y), in place.
void epilogue(const Nhwc& y, const Epilogue& e, int threads);

// V = B^T d B of the 4x4 input tiles of x (stride 2) for tile rows [r0, r0 + r) and tile columns
// [0, tw): v [16][n][r][tw][c] (contiguous; plane k = 4 i + j). Input rows/columns past x's
// end read as 0.
void winograd_input(const Nhwc& x, std::int64_t r0, std::int64_t r, std::int64_t tw, float* v, int threads);

// Y = A^T M A of the band's tiles (m [16][n][r][tw][o], contiguous; bias added to M[1][1] first),
// written to out rows [2 r0, 2 (r0 + r)) and columns [0, 2 tw) that exist, each through the
// epilogue (noise only; the bias is in M).
void winograd_output(float* m, std::int64_t r0, std::int64_t r, std::int64_t tw, const Nhwc& out, const Epilogue& e,
                     int threads);

}  // namespace igan::native
