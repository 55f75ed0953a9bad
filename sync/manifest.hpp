// Manifests (what a box holds under each root) and the diff that decides what the active sends
// when a standby (re)joins: only files that differ move, extras on the standby are deleted.
// scan_root reads the filesystem; diff_manifest is pure.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/keyfile.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sync/checksum.hpp"
#include "sync/fsutil.hpp"

namespace ha::sync {

struct ManifestEntry {
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::uint32_t mode = 0;
    std::optional<std::uint64_t> checksum;
    friend bool operator==(const ManifestEntry&, const ManifestEntry&) = default;
};
using Manifest = std::map<std::string, ManifestEntry>;  // root-relative path -> entry

// Regular files only; symlinks and our temp files are skipped. In sqlite mode the side files
// (-wal, -journal) are folded into their database: its mtime is the newest of the set, which is
// what the standby's copy carries after a snapshot; the -shm (readers write it) is ignored.
Result<Manifest> scan_root(const UniqueFd& root, Mode mode, bool with_checksums,
                           const ChecksumKey& key);

struct DiffItem {
    enum class Action : std::uint8_t { SendWhole, SendAppend, Delete };
    std::string path;
    Action action = Action::SendWhole;
    std::uint64_t offset = 0;  // SendAppend: the standby's size
    std::uint64_t bytes = 0;   // bytes this item will move (progress/ETA)
    friend bool operator==(const DiffItem&, const DiffItem&) = default;
};
// `standby` entries carry checksums only when the active asked for them (full backup); then
// equal size+mtime is not enough and the checksum decides.
std::vector<DiffItem> diff_manifest(const Manifest& active, const Manifest& standby, Mode mode);

}  // namespace ha::sync
