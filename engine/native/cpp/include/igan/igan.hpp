// igan's C++ API: render windows of an InfinityGAN canvas from C++.
//
// The engine is Python (torch); this library embeds it through pybind11, so every pixel is
// the one igan-render computes. Link against igan_cpp (CMake target) and include this header.
//
//   igan::Model model = igan::Model::open();                // the embedded model, device auto
//   std::vector<std::uint8_t> rgb(256 * 128 * 3);
//   model.render({/*x0*/ 0, /*y0*/ -64, /*width*/ 256, /*height*/ 128}, /*seed*/ 7, rgb.data());
//   igan::FileOptions file;
//   file.out = "canvas.png";
//   model.render_to_file({0, -256, 2048, 512}, 7, file);
//
// Engine errors (bad window, missing checkpoint, unwritable output...) throw igan::Error with
// the engine's message. Calls may come from any thread; they run one at a time (Python's GIL).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#define IGAN_API __attribute__((visibility("default")))

namespace igan {

// An exception raised by the engine: type() is its Python type (ValueError, SinkError...),
// what() its message.
class IGAN_API Error : public std::runtime_error {
 public:
  Error(std::string type, const std::string& message);
  const std::string& type() const noexcept { return type_; }

 private:
  std::string type_;
};

// parse_command_line met --help or a bad argument: the usage or the reason has been printed
// (as igan-render prints it); the program should exit with code().
class IGAN_API UsageExit : public std::runtime_error {
 public:
  explicit UsageExit(int code);
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// Start the embedded Python engine (Model::open does it for you; later calls do nothing).
// The virtual environment it runs in: `venv` if given, else $IGAN_VENV, else $VIRTUAL_ENV,
// else the one baked in when the library was configured (IGAN_DEFAULT_VENV in CMake).
IGAN_API void start(const std::string& venv = "");
// The virtual environment the engine runs in ("" before start()).
IGAN_API std::string venv();

struct ModelOptions {
  std::string checkpoint;  // official .pth.tar or igan .safetensors; "" = the embedded model
  std::string config;      // preset of an official checkpoint; "" = inferred from its shapes
  std::string device = "auto";  // cpu, cuda, cuda:N, auto
  std::string precision = "fp32";  // fp32, fp16, bf16
  std::string backend = "torch";   // torch, triton, onnx
  int threads = 0;                 // CPU threads for torch; 0 = all
  std::string model;               // with backend "onnx": the ONNX export (igan-export --onnx DIR)
  bool bit_exact = false;  // CPU: the same as cpu_path "reference" (kept from igan 0.2-0.4)
  // CPU, torch backend: "exact" (the default: fast, the same bytes under any tiling, batch or
  // threads), "reference" (igan 0.2's path) or "fast-0.4" (igan 0.3-0.4's default); "" = default
  std::string cpu_path;
};

// A window of the canvas: pixel columns [x0, x0 + width), rows [y0, y0 + height).
struct Window {
  std::int64_t x0 = 0;
  std::int64_t y0 = 0;
  std::int64_t width = 0;
  std::int64_t height = 0;
};

// How render_to_file writes (igan-render's options of the same names; 0 / "" = its default).
struct FileOptions {
  std::string out;                 // .png, .tif/.tiff or .zarr
  std::int64_t tile = 0;           // tile size in pixels, a multiple of 16
  std::int64_t batch = 1;          // tiles per forward pass
  std::int64_t memory_budget = 0;  // bytes for one batch of tiles
  std::string compression;         // PNG: zlib level "0".."9"; TIFF: "zstd", "zlib:9", "jpeg:85", "none"...
  bool ome = false;                // .tif/.tiff: an OME-TIFF (igan-render's --ome)
  std::optional<std::string> preview;  // also write a preview PNG ("" = OUT stem + .preview.png)
  std::int64_t preview_size = 1024;
  bool resume = false, restart = false, keep_work = false;
  bool quiet = true;               // no progress bar
  std::string stats_json;          // also write the summary figures as JSON
  // style fusion and 360-degree panoramas (igan-render's --styles, --style-*, --wrap)
  std::vector<std::int64_t> styles;                      // one seed per style; empty = the plain canvas
  std::vector<std::pair<double, double>> style_centers;  // fractions of the window; empty = default
  std::string style_map;                                 // PNG whose colours place the styles
  std::int64_t style_blur = 0;                           // 0 = igan-render's default
  bool wrap = false;                                     // cyclic panorama, period = the width
  // reproducing other images (igan-render's --latent-rng, --quantize)
  std::string latent_rng;  // "" = the default ("philox"); "v1": the generator of igan before 0.2
  std::string quantize;    // "" = "round"; "official": the official code's PNG bytes (truncation)
  double trunc = 1.0;      // truncation psi of the styles (igan-render's --trunc; 1 = none)
  bool metadata = true;    // embed what made the file (igan-render's --no-metadata clears it)
};

// igan-render's command line, parsed by igan-render's own parser.
struct CommandLine {
  ModelOptions model;
  Window window;  // y0 resolved (igan-render's default centres the image on the horizon)
  std::int64_t seed = 0;
  FileOptions file;
};

// Parse igan-render's arguments (without the program name). Throws UsageExit on --help or a
// bad argument, Error for options the C++ API lacks (--gpus, --workers).
IGAN_API CommandLine parse_command_line(const std::vector<std::string>& args);

// A generator loaded on a device, ready to render any window of any seed's canvas.
class IGAN_API Model {
 public:
  static Model open(const ModelOptions& options = {});
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Render `window` of canvas `seed` into `rgb`: height rows of width * 3 bytes (R, G, B),
  // row r starting at rgb + r * row_stride (0 = width * 3, tightly packed).
  void render(const Window& window, std::int64_t seed, std::uint8_t* rgb, std::size_t row_stride = 0) const;
  // The same with igan-render's canvas and tiling options from `options` (styles, style
  // placement, wrap, trunc, latent_rng, quantize, tile, batch, memory_budget); its output
  // options are for files and are not used here.
  void render(const Window& window, std::int64_t seed, const FileOptions& options, std::uint8_t* rgb,
              std::size_t row_stride = 0) const;
  // The same into a new buffer of height * width * 3 bytes.
  std::vector<std::uint8_t> render(const Window& window, std::int64_t seed) const;
  // Stream `window` of canvas `seed` to a file as igan-render does: same tiles, same bytes;
  // written to a temporary name and renamed into place only when complete.
  void render_to_file(const Window& window, std::int64_t seed, const FileOptions& file) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace igan
