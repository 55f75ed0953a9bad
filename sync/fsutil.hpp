// Filesystem helpers that never leave a sync root: every open goes through openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so "..", absolute paths and symlinks (inside or out) are
// refused by the kernel even if a path slipped past check_rel_path.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::sync {

enum class Mode : std::uint8_t { File, Append, Sqlite };
std::string_view to_string(Mode m);

struct Root {
    std::string path;  // absolute directory, the same on both boxes
    Mode mode = Mode::File;
};

// A file's key in the engine's maps: its root's index as one byte, then its path in the root.
std::string path_key(std::uint8_t root, std::string_view path);
// `k` is the key of `path` in `root` or of something beneath it; an empty `path` is the whole
// root.
bool key_at_or_under(std::string_view k, std::uint8_t root, std::string_view path);
// st_mtim in nanoseconds.
std::int64_t mtime_ns_of(const struct stat& st);

// Opens (creating if asked) an absolute root directory.
Result<UniqueFd> open_root(const std::string& path, bool create);
Result<UniqueFd> open_beneath(const UniqueFd& root, std::string_view rel, int flags,
                              unsigned mode = 0);
// Opens the parent directory of `rel` (creating missing directories when `create`), and stores
// the last component in `leaf`.
Result<UniqueFd> open_parent(const UniqueFd& root, std::string_view rel, bool create,
                             std::string& leaf);
// Removes a file, or a directory tree, named `name` in `dir`. ENOENT is success.
Status remove_at(const UniqueFd& dir, const std::string& name);
// Moves `name` from one directory to another; across filesystems (EXDEV) it copies the tree
// (contents, modes, mtimes; each file fsynced) and removes the source only once the copy is whole.
Status move_tree(const UniqueFd& from_dir, const std::string& name, const UniqueFd& to_dir);
// Removes temp files left by a receiver that died mid-file (the "no partial file" guarantee).
std::size_t remove_stale_temps(const UniqueFd& root);
// Where `name` is a SQLite side file (-wal, -shm, -journal), the database it belongs to.
bool is_sqlite_side_file(std::string_view rel);
std::string sqlite_db_of(std::string_view rel);

}  // namespace ha::sync
