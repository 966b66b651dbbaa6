// igan_render: igan-render's command line through the C++ API. Same arguments, same file,
// byte for byte (tests/test_cpp.py checks it):
//   build/cpp/igan_render --width 200 --height 96 --seed 3 --out x.png
#include <igan/igan.hpp>

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  try {
    const igan::CommandLine cl = igan::parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
    const igan::Model model = igan::Model::open(cl.model);
    model.render_to_file(cl.window, cl.seed, cl.file);
    return 0;
  } catch (const igan::UsageExit& e) {  // --help, or a bad argument (argparse printed why)
    return e.code();
  } catch (const igan::Error& e) {
    std::cerr << "igan_render: error: " << e.what() << " (" << e.type() << ")\n";
    return 1;
  }
}
