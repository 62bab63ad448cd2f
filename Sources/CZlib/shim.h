// zlib from Debian's zlib1g-dev: CRC-32 (what S3 clients send as x-amz-checksum-crc32).
#include <zlib.h>
