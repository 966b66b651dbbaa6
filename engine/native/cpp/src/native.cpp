// igan.engine.native._native: the pybind11 face of hotpaths.cpp. Only igan.engine.native calls it,
// with arguments it has already checked; the checks here keep a direct caller from reading
// out of bounds. Both functions release the GIL (the PNG filter runs in the sink's writer
// thread while the main thread renders).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "exactpath.hpp"
#include "hotpaths.hpp"

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using ByteArray = py::array_t<std::uint8_t, py::array::c_style>;

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

ByteArray to_uint8_nhwc(const FloatArray& rgb) {
  if (rgb.ndim() != 4) throw py::value_error("rgb must have shape (n, c, h, w), got " + shape_of(rgb));
  const auto n = rgb.shape(0), c = rgb.shape(1), h = rgb.shape(2), w = rgb.shape(3);
  ByteArray out({n, h, w, c});
  const float* src = rgb.data();
  std::uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    igan::native::to_uint8_nhwc(src, dst, n, c, h, w);
  }
  return out;
}

ByteArray filter_rows(const ByteArray& cur, const ByteArray& prev, int bpp) {
  if (cur.ndim() != 2) throw py::value_error("cur must have shape (h, bytes), got " + shape_of(cur));
  const auto h = cur.shape(0), bytes = cur.shape(1);
  if (prev.ndim() != 1 || prev.shape(0) != bytes)
    throw py::value_error("prev must have shape (" + std::to_string(bytes) + ",), got " + shape_of(prev));
  if (bpp < 1) throw py::value_error("bpp must be >= 1, got " + std::to_string(bpp));
  ByteArray out({h, bytes + 1});
  const std::uint8_t *c = cur.data(), *p = prev.data();
  std::uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    igan::native::filter_rows(c, p, dst, h, bytes, bpp);
  }
  return out;
}

// The exact path's passes take torch tensors as (address, shape, strides): igan.engine.exactcpu
// checks dtype (float32), device (CPU), contiguous channels and bounds before calling.
using Dims = std::vector<std::int64_t>;

igan::native::Nhwc nhwc(std::uintptr_t p, const Dims& shape, const Dims& strides) {
  if (shape.size() != 4 || strides.size() != 3) throw py::value_error("an NHWC view needs 4 sizes and 3 strides");
  return {reinterpret_cast<float*>(p), shape[0], shape[1], shape[2], shape[3], strides[0], strides[1], strides[2]};
}

igan::native::Epilogue epi(std::uintptr_t noise, const Dims& nstrides, float strength, std::uintptr_t bias) {
  if (noise && nstrides.size() != 3) throw py::value_error("noise needs 3 strides");
  return {reinterpret_cast<const float*>(noise), noise ? nstrides[0] : 0, noise ? nstrides[1] : 0,
          noise ? nstrides[2] : 0, strength, reinterpret_cast<const float*>(bias)};
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "igan's CPU hot paths in C++ (see igan.engine.native for the Python twins)";
  m.def("to_uint8_nhwc", &to_uint8_nhwc, py::arg("rgb"),
        "float32 [n, c, h, w] -> uint8 [n, h, w, c], floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5)");
  m.def("filter_rows", &filter_rows, py::arg("cur"), py::arg("prev"), py::arg("bpp") = 3,
        "PNG-filter scanlines cur [h, bytes] (prev: the scanline above) -> [h, 1 + bytes]");
  m.def(
      "blur_epilogue_phases",
      [](const std::vector<std::uintptr_t>& ptrs, const std::vector<Dims>& shapes, const std::vector<Dims>& strides,
         std::int64_t H, std::int64_t W, std::uintptr_t dst, const Dims& ds, const Dims& dst_st, std::uintptr_t noise,
         const Dims& nst, float strength, std::uintptr_t bias, int threads) {
        if (ptrs.size() != 4 || shapes.size() != 4 || strides.size() != 4) throw py::value_error("four phases");
        igan::native::Nhwc ph[2][2];
        for (int k = 0; k < 4; ++k) {
          ph[k / 2][k % 2] = nhwc(ptrs[k], shapes[k], strides[k]);
          const auto& p = ph[k / 2][k % 2];
          if (p.h < (H - k / 2 + 1) / 2 || p.w < (W - k % 2 + 1) / 2) throw py::value_error("blur: a phase is short");
        }
        auto d = nhwc(dst, ds, dst_st);
        if (d.h != H - 2 || d.w != W - 2 || d.c != ph[0][0].c) throw py::value_error("blur: shapes");
        py::gil_scoped_release nogil;
        igan::native::blur_epilogue_phases(ph, H, W, d, epi(noise, nst, strength, bias), threads);
      },
      "dst = epilogue(blur3(the four phases interleaved)) (exactcpu.upconv)");
  m.def(
      "epilogue",
      [](std::uintptr_t y, const Dims& ys, const Dims& yst, std::uintptr_t noise, const Dims& nst, float strength,
         std::uintptr_t bias, int threads) {
        auto v = nhwc(y, ys, yst);
        py::gil_scoped_release nogil;
        igan::native::epilogue(v, epi(noise, nst, strength, bias), threads);
      },
      "y = epilogue(y) in place (exactcpu.epilogue_)");
  m.def(
      "winograd_input",
      [](std::uintptr_t x, const Dims& xs, const Dims& xst, std::int64_t r0, std::int64_t r, std::int64_t tw,
         std::uintptr_t v, int threads) {
        auto xv = nhwc(x, xs, xst);
        py::gil_scoped_release nogil;
        igan::native::winograd_input(xv, r0, r, tw, reinterpret_cast<float*>(v), threads);
      },
      "Winograd F(2x2, 3x3) input transform of one band of tile rows (exactcpu.winograd_conv3x3)");
  m.def(
      "winograd_output",
      [](std::uintptr_t mm, std::int64_t r0, std::int64_t r, std::int64_t tw, std::uintptr_t out, const Dims& os,
         const Dims& ost, std::uintptr_t noise, const Dims& nst, float strength, std::uintptr_t bias, int threads) {
        auto o = nhwc(out, os, ost);
        if (!bias) throw py::value_error("winograd_output needs the bias");
        py::gil_scoped_release nogil;
        igan::native::winograd_output(reinterpret_cast<float*>(mm), r0, r, tw, o, epi(noise, nst, strength, bias),
                                      threads);
      },
      "Winograd F(2x2, 3x3) output transform of one band, with the epilogue (exactcpu.winograd_conv3x3)");
  m.attr("NAN_BYTE") = igan::native::kNanByte;
}
