// OpenSSL's libcrypto from Debian's libssl-dev: SHA-256, HMAC and MD5 through the EVP API,
// which picks the CPU's SHA and AVX2 code paths at run time.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

// HMAC-SHA256 under a key set once: EVP_MAC_init keys a context (the inner and outer pads
// hashed once). The one-shot HMAC() fetches the algorithm and keys a fresh context on every
// call (1.17 us here); re-initialising a keyed context costs 0.35 us. The keyed context is
// only read after this, so threads may duplicate it at once.
static inline EVP_MAC_CTX *kalavara_hmac_sha256_keyed(const unsigned char *key, size_t length) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) return NULL;
    EVP_MAC_CTX *context = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (context == NULL) return NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end() };
    if (EVP_MAC_init(context, key, length, params) != 1) {
        EVP_MAC_CTX_free(context);
        return NULL;
    }
    return context;
}

// Each thread keeps one working context per keyed one (found by the keyed context's
// unique id, so a freed and reused address cannot pick up another key's state) and
// re-initialises it from the keyed state: no allocation per code, about half the cost of
// duplicating the keyed context every time.
static inline int kalavara_hmac_sha256(const EVP_MAC_CTX *keyed, unsigned long long id, const void *message,
                                       size_t length, unsigned char *out) {
    static __thread EVP_MAC_CTX *working = NULL;
    static __thread unsigned long long workingID = 0;
    if (working == NULL || workingID != id) {
        EVP_MAC_CTX_free(working);
        working = EVP_MAC_CTX_dup(keyed);
        workingID = id;
        if (working == NULL) return 0;
    } else if (EVP_MAC_init(working, NULL, 0, NULL) != 1) {
        return 0;
    }
    size_t written = 0;
    return EVP_MAC_update(working, message, length) == 1 && EVP_MAC_final(working, out, &written, 32) == 1 && written == 32;
}
