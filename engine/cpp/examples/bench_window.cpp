// igan_bench_window: the C++ API's cost per window. Opens the embedded model on the CPU,
// renders one small window `count` times into the same buffer and prints one line of JSON:
//   {"windows": N, "seconds": S, "checksum": C}
// (benchmarks/test_native.py runs it and compares with the Python API in the same run).
//   igan_bench_window WIDTH HEIGHT COUNT [THREADS]
#include <igan/igan.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: igan_bench_window WIDTH HEIGHT COUNT [THREADS]\n";
    return 2;
  }
  const std::int64_t width = std::stoll(argv[1]), height = std::stoll(argv[2]);
  const int count = std::stoi(argv[3]);
  igan::ModelOptions options;
  options.device = "cpu";
  options.threads = argc > 4 ? std::stoi(argv[4]) : 0;
  try {
    const igan::Model model = igan::Model::open(options);
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(width * height * 3));
    const igan::Window window{0, -height / 2, width, height};
    model.render(window, 0, rgb.data());  // warm-up
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t checksum = 0;
    for (int i = 0; i < count; ++i) {
      model.render(window, i, rgb.data());
      checksum += rgb[static_cast<std::size_t>(i) % rgb.size()];
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "{\"windows\": " << count << ", \"seconds\": " << seconds << ", \"checksum\": " << checksum
              << "}\n";
  } catch (const igan::Error& e) {
    std::cerr << "igan_bench_window: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
