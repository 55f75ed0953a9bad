// A consistent copy of a live SQLite database through the online backup API (never cp): the copy
// is taken inside one read transaction, converted to rollback-journal mode so it needs no -wal
// beside it, and handed back as an already-unlinked file ready for sendfile.
#pragma once

#include <string>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::sync {

// `db_path` absolute; the temp file lives in `tmp_dir` (created if missing) and is unlinked
// before return. Busy databases are retried until `busy_ms` has passed. A file that is not a
// database fails with std::errc::invalid_argument.
Result<UniqueFd> sqlite_snapshot(const std::string& db_path, const std::string& tmp_dir,
                                 int busy_ms = 2000);

}  // namespace ha::sync
