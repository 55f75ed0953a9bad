// A consistent copy of a live SQLite database through the online backup API (never cp): the copy
// is taken inside one read transaction into memory and handed back in a memfd, ready for sendfile.
// It never touches the disk. A database in WAL mode gives a WAL-mode copy with an empty WAL (the
// file alone is the whole database), so the standby can apply the next one through SQLite
// (committer.hpp); others keep their rollback-journal mode.
#pragma once

#include <string>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ha::sync {

// `db_path` absolute. Busy databases are retried until `busy_ms` has passed. A file that is not
// a database fails with std::errc::invalid_argument.
Result<UniqueFd> sqlite_snapshot(const std::string& db_path, int busy_ms = 2000);

// The 100-byte header of a database file says WAL mode (file format bytes 18 and 19 are 2).
bool sqlite_header_is_wal(const unsigned char* header, std::size_t len);

}  // namespace ha::sync
