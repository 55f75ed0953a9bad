#include "agent/store/term_store.hpp"

#include <cerrno>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/atomic_file.hpp"

namespace ha::store {

TermStore::TermStore(std::string state_dir) : dir_(std::move(state_dir)), path_(dir_ + "/term") {}

Result<TermRecord> TermStore::load() const {
    auto text = read_file(path_, 4096);
    if (!text) {
        if (text.error().code == std::errc::no_such_file_or_directory) return TermRecord{};
        return unexpected(text.error().wrap("load term"));
    }
    auto doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object()) {
        return fail("corrupt term file " + path_ + ": not a JSON object", std::errc::bad_message);
    }
    auto it = doc.find("term");
    if (it == doc.end() || !it->is_number_unsigned()) {
        return fail("corrupt term file " + path_ + ": \"term\" missing or not an unsigned integer",
                    std::errc::bad_message);
    }
    TermRecord rec;
    rec.term = it->get<std::uint64_t>();
    auto role = doc.find("role");
    if (role != doc.end()) {
        if (!role->is_string()) {
            return fail("corrupt term file " + path_ + ": \"role\" is not a string",
                        std::errc::bad_message);
        }
        rec.role = role->get<std::string>();
    }
    return rec;
}

Status TermStore::save(const TermRecord& record) {
    auto current = load();
    // A corrupt file must not block a promotion forever, but going backwards must be refused.
    if (current && record.term < current->term) {
        return fail("term would go backwards in " + path_ + ": " + std::to_string(current->term) +
                    " -> " + std::to_string(record.term));
    }
    if (auto made = make_dirs(dir_); !made) return unexpected(made.error().wrap("save term"));
    nlohmann::json doc = {{"term", record.term}, {"role", record.role}};
    if (auto st = write_file_atomic(path_, doc.dump() + "\n", 0644); !st) {
        return unexpected(st.error().wrap("save term"));
    }
    return {};
}

}  // namespace ha::store
