// OpenSSL's libssl from Debian's libssl-dev: TLS for the HTTP server and client. The
// functions below wrap what OpenSSL defines as macros (Swift imports no function-like
// macros), and keep the few multi-step set-ups in C where they read as OpenSSL's own docs.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>

// TLS 1.2 at least; the peer may pick 1.3.
static inline int kalavara_ssl_ctx_min_tls12(SSL_CTX *context) {
    return (int)SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
}

// Options shared by servers and clients: no renegotiation (a TLS 1.2 peer could otherwise
// make a read want a write at any time), kernel TLS where the kernel offers it (sendfile then
// stays zero-copy), the server's cipher preference, and a peer's close without close_notify
// read as an end of stream (HTTP frames its bodies itself; curl and our own server's shutdown
// from another thread close that way).
static inline void kalavara_ssl_ctx_options(SSL_CTX *context) {
    SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_ENABLE_KTLS | SSL_OP_CIPHER_SERVER_PREFERENCE
                                 | SSL_OP_IGNORE_UNEXPECTED_EOF);
    // A write may be partial (non-blocking sends on the event loop) and retried from another
    // buffer holding the same bytes (what was not sent is copied out for a worker).
    SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read what the socket has in one recv, not a record's header and then its body in two
    // (SSL_has_pending then covers the bytes OpenSSL holds).
    SSL_CTX_set_read_ahead(context, 1);
}

// A server keeps no sessions and issues no tickets: the daemons' own clients keep their
// connections instead of resuming sessions, and a TLS 1.3 handshake that sends two tickets
// costs two more encryptions and a write each time.
static inline int kalavara_no_passphrase(char *buffer, int size, int writing, void *data) {
    (void)buffer; (void)size; (void)writing; (void)data;
    return 0;
}

static inline void kalavara_ssl_ctx_no_resumption(SSL_CTX *context) {
    // An encrypted key is refused, never prompted for on a terminal (a SIGHUP reload
    // would wait there for good).
    SSL_CTX_set_default_passwd_cb(context, kalavara_no_passphrase);
    SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(context, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(context, 0);
}

// Whether the kernel encrypts what is written to the socket (kTLS): then sendfile and splice
// into it carry TLS records, and need no copy through user space.
static inline int kalavara_ssl_ktls_send(SSL *ssl) {
    return (int)BIO_get_ktls_send(SSL_get_wbio(ssl));
}

// The client's checks of the server's certificate beyond the chain: the URL's host must be
// named in it, as an IP address (X509_VERIFY_PARAM_set1_ip_asc) or a DNS name (SSL_set1_host,
// which also sends it as SNI).
static inline int kalavara_ssl_expect_host(SSL *ssl, const char *host, int isAddress) {
    if (isAddress) {
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    }
    // Only the certificate's DNS names count, never its subject's common name.
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    return SSL_set1_host(ssl, host) == 1 && SSL_set_tlsext_host_name(ssl, host) == 1;
}

// The serial number of the certificate a context serves, in hex (for the reload log line);
// the caller frees it with OPENSSL_free.
static inline char *kalavara_ssl_ctx_serial(SSL_CTX *context) {
    X509 *certificate = SSL_CTX_get0_certificate(context);
    if (certificate == NULL) return NULL;
    BIGNUM *number = ASN1_INTEGER_to_BN(X509_get0_serialNumber(certificate), NULL);
    if (number == NULL) return NULL;
    char *hex = BN_bn2hex(number);
    BN_free(number);
    return hex;
}

static inline void kalavara_openssl_free(void *pointer) { OPENSSL_free(pointer); }
