// OpenSSL's libcrypto from Debian's libssl-dev: SHA-256, HMAC and MD5 through the EVP API,
// which picks the CPU's SHA and AVX2 code paths at run time.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>
