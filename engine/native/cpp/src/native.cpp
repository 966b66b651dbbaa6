// igan.engine.native._native: the pybind11 face of hotpaths.cpp. Only igan.engine.native calls it,
// with arguments it has already checked; the checks here keep a direct caller from reading
// out of bounds. Both functions release the GIL (the PNG filter runs in the sink's writer
// thread while the main thread renders).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

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

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "igan's CPU hot paths in C++ (see igan.engine.native for the Python twins)";
  m.def("to_uint8_nhwc", &to_uint8_nhwc, py::arg("rgb"),
        "float32 [n, c, h, w] -> uint8 [n, h, w, c], floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5)");
  m.def("filter_rows", &filter_rows, py::arg("cur"), py::arg("prev"), py::arg("bpp") = 3,
        "PNG-filter scanlines cur [h, bytes] (prev: the scanline above) -> [h, 1 + bytes]");
  m.attr("NAN_BYTE") = igan::native::kNanByte;
}
