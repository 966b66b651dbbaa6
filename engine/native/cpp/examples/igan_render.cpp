// igan_render: igan-render's command line through the C++ API. Same arguments, same file,
// byte for byte (tests/test_cpp.py checks it):
//   build/cpp/igan_render --width 200 --height 96 --seed 3 --out x.png
// With --raw PATH first, the window is rendered in memory (Model::render with the same
// options) and its RGB bytes, row by row, are written to PATH instead:
//   build/cpp/igan_render --raw x.rgb --width 200 --height 96 --seed 3 --trunc 0.7
#include <igan/igan.hpp>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    std::string raw;
    if (args.size() >= 2 && args[0] == "--raw") {
      raw = args[1];
      args.erase(args.begin(), args.begin() + 2);
    }
    const igan::CommandLine cl = igan::parse_command_line(args);
    const igan::Model model = igan::Model::open(cl.model);
    if (raw.empty()) {
      model.render_to_file(cl.window, cl.seed, cl.file);
      return 0;
    }
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(cl.window.width) * cl.window.height * 3);
    model.render(cl.window, cl.seed, cl.file, rgb.data());
    std::ofstream(raw, std::ios::binary).write(reinterpret_cast<const char*>(rgb.data()),
                                                static_cast<std::streamsize>(rgb.size()));
    return 0;
  } catch (const igan::UsageExit& e) {  // --help, or a bad argument (argparse printed why)
    return e.code();
  } catch (const igan::Error& e) {
    std::cerr << "igan_render: error: " << e.what() << " (" << e.type() << ")\n";
    return 1;
  }
}
