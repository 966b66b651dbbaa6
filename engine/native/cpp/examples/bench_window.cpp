// igan_bench_window: the C++ API's cost per window. Opens the embedded model on the CPU,
// renders one small window (x0 0, centred on the horizon) COUNT times into the same buffer,
// rows padded to exercise row_stride, and prints one line of JSON:
//   {"windows": N, "seconds": S}
// THREADS: torch's CPU threads (0 = all). With DUMP it first writes the seed-0 window as raw RGB bytes (height * width * 3) there.
// benchmarks/test_native.py and tests/test_cpp.py run it.
//   igan_bench_window WIDTH HEIGHT COUNT [THREADS [DUMP]]
#include <igan/igan.hpp>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: igan_bench_window WIDTH HEIGHT COUNT [THREADS [DUMP]]\n";
    return 2;
  }
  const std::int64_t width = std::stoll(argv[1]), height = std::stoll(argv[2]);
  const int count = std::stoi(argv[3]);
  igan::ModelOptions options;
  options.device = "cpu";
  options.threads = argc > 4 ? std::stoi(argv[4]) : 0;
  try {
    const igan::Model model = igan::Model::open(options);
    const std::size_t row = static_cast<std::size_t>(width) * 3, stride = row + 5;
    std::vector<std::uint8_t> rgb(stride * static_cast<std::size_t>(height));
    const igan::Window window{0, -height / 2, width, height};
    model.render(window, 0, rgb.data(), stride);  // also the warm-up
    if (argc > 5) {
      std::ofstream dump(argv[5], std::ios::binary);
      for (std::int64_t y = 0; y < height; ++y)
        dump.write(reinterpret_cast<const char*>(rgb.data() + y * stride), static_cast<std::streamsize>(row));
      if (!dump) throw igan::Error("OSError", std::string("cannot write ") + argv[5]);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < count; ++i) model.render(window, i, rgb.data(), stride);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "{\"windows\": " << count << ", \"seconds\": " << seconds << "}\n";
  } catch (const igan::Error& e) {
    std::cerr << "igan_bench_window: error: " << e.what() << " (" << e.type() << ")\n";
    return 1;
  }
  return 0;
}
