// CPU hot paths of the render, in plain C++ (no Python): the float -> uint8 conversion of
// rendered tiles and the PNG scanline filter. Each one reproduces its Python twin bit for bit
// (igan.engine.runner.to_uint8, igan.engine.native.filter_rows_reference).
#pragma once

#include <cstddef>
#include <cstdint>

namespace igan::native {

// The byte a NaN input becomes: what torch's path gives (clamp keeps NaN, the float -> uint8
// cast turns it into 0 on x86-64); tests/test_cpp.py checks it against torch.
constexpr std::uint8_t kNanByte = 0;

// rgb [n, c, h, w] float32 (contiguous) -> out [n, h, w, c] uint8:
// floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5) computed in float32, one op at a time.
void to_uint8_nhwc(const float* rgb, std::uint8_t* out, std::int64_t n, std::int64_t c, std::int64_t h,
                   std::int64_t w);

// PNG-filter scanlines cur [h, bytes] (prev [bytes]: the scanline above) -> out [h, 1 + bytes].
// bpp = bytes per pixel (3 for RGB). Each row takes the filter with the smallest sum of
// |filtered byte as int8|, ties to the lower filter type (libpng's heuristic).
void filter_rows(const std::uint8_t* cur, const std::uint8_t* prev, std::uint8_t* out, std::int64_t h,
                 std::int64_t bytes, int bpp);

}  // namespace igan::native
