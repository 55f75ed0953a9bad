// The persisted HA term (DESIGN.md "Roles and rules"): bumped on every promotion, compared when
// two actives meet. Stored with the last role in <state_dir>/term as one JSON object, replaced
// atomically (temp file, fsync, rename, directory fsync): a crash mid-write leaves the old value.
//
// A missing file means a new box (term 0). A file that exists but cannot be parsed is an error
// naming the file: silently restarting at term 0 could let a stale box win a split-brain tie.
//
// Threads: owned by the loop thread; save() blocks for one fsync, done once per promotion before
// the promotion's next action (AcPersistTerm).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.hpp"

namespace ha::store {

struct TermRecord {
    std::uint64_t term = 0;
    std::string role;  // the last role this box held ("Active", "Standby", ...), "" if none
    friend bool operator==(const TermRecord&, const TermRecord&) = default;
};

class TermStore {
  public:
    explicit TermStore(std::string state_dir);

    // {0, ""} when the file does not exist; an error naming the file when it is corrupt.
    [[nodiscard]] Result<TermRecord> load() const;
    // Refuses (invalid_argument) to store a term lower than the one on disk: terms only grow.
    Status save(const TermRecord& record);

    [[nodiscard]] const std::string& path() const { return path_; }

  private:
    std::string dir_;
    std::string path_;
};

}  // namespace ha::store
