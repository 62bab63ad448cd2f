// Pulls in RocksDB's C API (from Debian's librocksdb-dev) for Swift.
#include <rocksdb/c.h>
