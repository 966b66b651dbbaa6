// The C++ API (include/igan/igan.hpp): an embedded interpreter running igan.engine.native.capi.
//
// The interpreter starts once, in the project's virtual environment (PyConfig.executable =
// <venv>/bin/python, so prefix detection reads pyvenv.cfg and the venv's packages import),
// and is never finalized: torch keeps threads and objects alive until the process exits.
// Between calls no thread holds the GIL; each call takes it for its duration.
#include "igan/igan.hpp"

#include <pybind11/embed.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <mutex>
#include <sys/stat.h>
#include <utility>

namespace py = pybind11;

namespace igan {

Error::Error(std::string type, const std::string& message)
    : std::runtime_error(message), type_(std::move(type)) {}

UsageExit::UsageExit(int code) : std::runtime_error("igan-render exited with code " + std::to_string(code)), code_(code) {}

namespace {

std::mutex g_start_mutex;
std::string g_venv;  // set once the interpreter runs

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The venv to embed and where its name came from (for the error message).
std::pair<std::string, std::string> choose_venv(const std::string& explicit_venv) {
  if (!explicit_venv.empty()) return {explicit_venv, "the venv argument"};
  if (auto v = env("IGAN_VENV"); !v.empty()) return {v, "$IGAN_VENV"};
  if (auto v = env("VIRTUAL_ENV"); !v.empty()) return {v, "$VIRTUAL_ENV"};
  return {IGAN_DEFAULT_VENV, "the path configured at build time (IGAN_DEFAULT_VENV)"};
}

void check_status(PyStatus status, const std::string& what) {
  if (PyStatus_Exception(status))
    throw Error("RuntimeError", what + ": " + (status.err_msg ? status.err_msg : "unknown error"));
}

// Translate the Python exception being handled into igan::Error / UsageExit (GIL held).
[[noreturn]] void rethrow(py::error_already_set& e) {
  if (e.matches(PyExc_SystemExit)) {
    py::object code = e.value().attr("code");
    int value = code.is_none() ? 0 : py::isinstance<py::int_>(code) ? code.cast<int>() : 1;
    throw UsageExit(value);
  }
  std::string type = e.type().attr("__name__").cast<std::string>();
  std::string message = py::str(e.value()).cast<std::string>();
  throw Error(std::move(type), message);
}

// Run f() with the GIL held, engine exceptions turned into C++ ones.
template <class F>
auto with_engine(F&& f) {
  start();
  py::gil_scoped_acquire gil;
  try {
    return f();
  } catch (py::error_already_set& e) {
    rethrow(e);
  }
}

py::module_ capi() { return py::module_::import("igan.engine.native.capi"); }
// igan-render's parser, for parse_command_line (a console script's module, above capi's layer)
py::module_ command_line() { return py::module_::import("igan.engine.cli.cpp"); }

}  // namespace

void start(const std::string& venv) {
  std::lock_guard<std::mutex> lock(g_start_mutex);
  if (!g_venv.empty()) return;
  auto [path, source] = choose_venv(venv);
  std::string python = path + "/bin/python";
  if (!is_file(python))
    throw Error("FileNotFoundError", "no Python at '" + python + "' (the venv from " + source +
                                         "); pass the venv to igan::start() or set IGAN_VENV");
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;  // the host program owns its signals
  PyStatus status = PyConfig_SetBytesString(&config, &config.executable, python.c_str());
  if (PyStatus_Exception(status)) PyConfig_Clear(&config);
  check_status(status, "cannot set the embedded Python's executable to '" + python + "'");
  try {
    const char* argv[] = {"igan"};
    py::initialize_interpreter(&config, 1, argv, false);
  } catch (const std::exception& e) {
    throw Error("RuntimeError", std::string("cannot start the embedded Python in '") + path + "': " + e.what());
  }
  g_venv = path;
  // Fail here, with the reason, when the venv lacks igan (rather than at the first render).
  std::string import_error;
  try {
    capi();
  } catch (py::error_already_set& e) {
    import_error = py::str(e.value()).cast<std::string>();
  }
  PyEval_SaveThread();  // release the GIL: each call takes it (gil_scoped_acquire)
  if (!import_error.empty())
    throw Error("ModuleNotFoundError",
                "the venv '" + path + "' (from " + source + ") cannot import igan.engine.native.capi: " + import_error);
}

std::string venv() {
  std::lock_guard<std::mutex> lock(g_start_mutex);
  return g_venv;
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  return with_engine([&] {
    py::dict a = command_line().attr("parse_command_line")(args);
    auto str = [&](const char* k) { return a[k].is_none() ? std::string() : a[k].cast<std::string>(); };
    auto num = [&](const char* k) { return a[k].is_none() ? std::int64_t{0} : a[k].cast<std::int64_t>(); };
    CommandLine cl;
    cl.model = {str("checkpoint"), str("config"), str("device"), str("precision"), str("backend"),
                static_cast<int>(num("threads")), str("model"), a["bit_exact"].cast<bool>(), str("cpu_path")};
    cl.window = {num("x0"), num("y0"), num("width"), num("height")};
    cl.seed = num("seed");
    FileOptions& f = cl.file;
    f.out = str("out");
    f.tile = num("tile");
    f.batch = num("batch");
    f.memory_budget = num("memory_budget");
    f.compression = str("compression");
    f.ome = a["ome"].cast<bool>();
    if (!a["preview"].is_none()) f.preview = str("preview");
    f.preview_size = num("preview_size");
    f.resume = a["resume"].cast<bool>();
    f.restart = a["restart"].cast<bool>();
    f.keep_work = a["keep_work"].cast<bool>();
    f.quiet = a["quiet"].cast<bool>();
    f.stats_json = str("stats_json");
    if (!a["styles"].is_none())
      for (auto seed : a["styles"]) f.styles.push_back(seed.cast<std::int64_t>());
    if (!a["style_centers"].is_none())
      for (auto c : a["style_centers"]) {
        auto xy = c.cast<py::tuple>();
        f.style_centers.emplace_back(xy[0].cast<double>(), xy[1].cast<double>());
      }
    f.style_map = str("style_map");
    f.style_blur = num("style_blur");
    f.wrap = a["wrap"].cast<bool>();
    f.latent_rng = str("latent_rng");
    f.quantize = str("quantize");
    f.trunc = a["trunc"].cast<double>();
    f.metadata = a["metadata"].cast<bool>();
    return cl;
  });
}

struct Model::Impl {
  py::object session;  // igan.engine.native.capi.Session
  ~Impl() {
    py::gil_scoped_acquire gil;
    session = py::object();
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::open(const ModelOptions& o) {
  auto impl = std::make_unique<Impl>();
  with_engine([&] {
    impl->session = capi().attr("Session")(o.checkpoint, o.config, o.device, o.precision, o.backend, o.threads,
                                           o.model, o.bit_exact, o.cpu_path);
    return 0;
  });
  return Model(std::move(impl));
}

namespace {

// igan-render's options of `f` and the window, by their RenderRequest names (capi reads them).
py::dict options_dict(const Window& w, std::int64_t seed, const FileOptions& f) {
  py::dict o;
  o["x0"] = w.x0;
  o["y0"] = w.y0;
  o["width"] = w.width;
  o["height"] = w.height;
  o["seed"] = seed;
  o["out"] = f.out;
  o["tile"] = f.tile ? py::object(py::int_(f.tile)) : py::none();
  o["batch"] = f.batch;
  o["memory_budget"] = f.memory_budget ? py::object(py::int_(f.memory_budget)) : py::none();
  o["compression"] = f.compression.empty() ? py::object(py::none()) : py::object(py::str(f.compression));
  o["ome"] = f.ome;
  o["preview"] = f.preview ? py::object(py::str(*f.preview)) : py::none();
  o["preview_size"] = f.preview_size;
  o["resume"] = f.resume;
  o["restart"] = f.restart;
  o["keep_work"] = f.keep_work;
  o["quiet"] = f.quiet;
  o["stats_json"] = f.stats_json.empty() ? py::object(py::none()) : py::object(py::str(f.stats_json));
  if (!f.styles.empty()) {
    py::list seeds;
    for (auto style : f.styles) seeds.append(style);
    o["styles"] = py::tuple(seeds);
  }
  if (!f.style_centers.empty()) {
    py::list centers;
    for (const auto& c : f.style_centers) centers.append(py::make_tuple(c.first, c.second));
    o["style_centers"] = py::tuple(centers);
  }
  if (!f.style_map.empty()) o["style_map"] = f.style_map;
  if (f.style_blur) o["style_blur"] = f.style_blur;
  o["wrap"] = f.wrap;
  if (!f.latent_rng.empty()) o["latent_rng"] = f.latent_rng;
  if (!f.quantize.empty()) o["quantize"] = f.quantize;
  o["trunc"] = f.trunc;
  o["metadata"] = f.metadata;
  return o;
}

}  // namespace

void Model::render(const Window& w, std::int64_t seed, std::uint8_t* rgb, std::size_t row_stride) const {
  render(w, seed, FileOptions{}, rgb, row_stride);
}

void Model::render(const Window& w, std::int64_t seed, const FileOptions& options, std::uint8_t* rgb,
                   std::size_t row_stride) const {
  if (w.width < 1 || w.height < 1)
    throw Error("ValueError", "window width and height must be >= 1, got " + std::to_string(w.width) + "x" +
                                  std::to_string(w.height));
  const auto packed = static_cast<std::size_t>(w.width) * 3;
  if (row_stride == 0) row_stride = packed;
  if (row_stride < packed)
    throw Error("ValueError", "row_stride " + std::to_string(row_stride) + " is shorter than a row of " +
                                  std::to_string(packed) + " bytes");
  if (rgb == nullptr) throw Error("ValueError", "rgb is a null pointer");
  with_engine([&] {
    // A numpy view of the caller's buffer (no copy); the capsule owns nothing.
    py::capsule owner(rgb, [](void*) {});
    py::array_t<std::uint8_t> view({w.height, w.width, std::int64_t{3}},
                                   {static_cast<std::int64_t>(row_stride), std::int64_t{3}, std::int64_t{1}}, rgb,
                                   owner);
    impl_->session.attr("render_into")(view, w.x0, w.y0, seed, options_dict(w, seed, options));
    return 0;
  });
}

std::vector<std::uint8_t> Model::render(const Window& w, std::int64_t seed) const {
  if (w.width < 1 || w.height < 1)
    throw Error("ValueError", "window width and height must be >= 1, got " + std::to_string(w.width) + "x" +
                                  std::to_string(w.height));
  std::vector<std::uint8_t> out(static_cast<std::size_t>(w.width) * w.height * 3);
  render(w, seed, out.data());
  return out;
}

void Model::render_to_file(const Window& w, std::int64_t seed, const FileOptions& f) const {
  with_engine([&] {
    impl_->session.attr("render_file")(options_dict(w, seed, f));
    return 0;
  });
}

}  // namespace igan
