// Whole-file replacement that never leaves a torn file: write a temp file beside the target,
// fsync it, rename over the target, fsync the directory.
#pragma once

#include <string>
#include <string_view>

#include "result.hpp"

namespace ha {

Status write_file_atomic(const std::string& path, std::string_view content, unsigned mode = 0644);
Result<std::string> read_file(const std::string& path, std::size_t limit = 16u << 20);
// Creates the directory and its parents (mode 0755) if missing.
Status make_dirs(const std::string& path, unsigned mode = 0755);

}  // namespace ha
