/* gw_tls.c - TLS server context and first-start self-signed certificate (see gw_tls.h). */
#include "gw_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

void gw_tls_last_error(char *buf, size_t bufsz)
{
    unsigned long e = ERR_get_error();
    if (e == 0) snprintf(buf, bufsz, "no OpenSSL error");
    else ERR_error_string_n(e, buf, bufsz);
    ERR_clear_error();
}

static void fail(char *err, size_t errsz, const char *what)
{
    char ossl[256];
    gw_tls_last_error(ossl, sizeof ossl);
    snprintf(err, errsz, "%s: %s", what, ossl);
}

/* The server offers only http/1.1 over ALPN: clients asking for h2 fall back to it. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof http11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int configure_protocols(SSL_CTX *ctx, char *err, size_t errsz)
{
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
        fail(err, errsz, "setting TLS versions");
        return -1;
    }
    if (!SSL_CTX_set_cipher_list(ctx, GW_TLS12_CIPHERS) ||
        !SSL_CTX_set_ciphersuites(ctx, GW_TLS13_SUITES)) {
        fail(err, errsz, "setting ciphers");
        return -1;
    }
    if (!SSL_CTX_set1_groups_list(ctx, GW_TLS_GROUPS)) {
        fail(err, errsz, "setting key exchange groups");
        return -1;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_TICKET);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return 0;
}

SSL_CTX *gw_tls_server_context(const char *cert_path, const char *key_path,
                               char *err, size_t errsz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        fail(err, errsz, "SSL_CTX_new");
        return NULL;
    }
    if (configure_protocols(ctx, err, errsz) != 0) goto bad;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        char what[4200];
        snprintf(what, sizeof what, "loading certificate %s", cert_path);
        fail(err, errsz, what);
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char what[4200];
        snprintf(what, sizeof what, "loading private key %s", key_path);
        fail(err, errsz, what);
        goto bad;
    }
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* Builds the certificate for pkey, signed by itself. NULL on failure. */
static X509 *build_cert(EVP_PKEY *pkey)
{
    X509 *cert = X509_new();
    if (cert == NULL) return NULL;
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (RAND_bytes(serial, sizeof serial) != 1) goto bad;
    serial[0] &= 0x7f;  /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) == NULL) goto bad;
    X509_NAME *name = X509_get_subject_name(cert);
    if (!X509_set_version(cert, 2) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600) ||
        !X509_set_pubkey(cert, pkey) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Citadel", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0) ||
        !X509_set_issuer_name(cert, name))
        goto bad;
    if (add_ext(cert, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1") != 0 ||
        add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(cert, NID_key_usage, "critical,digitalSignature") != 0 ||
        add_ext(cert, NID_ext_key_usage, "serverAuth") != 0 ||
        add_ext(cert, NID_subject_key_identifier, "hash") != 0)
        goto bad;
    if (X509_sign(cert, pkey, EVP_sha256()) == 0) goto bad;
    BN_free(bn);
    return cert;
bad:
    BN_free(bn);
    X509_free(cert);
    return NULL;
}

/* Opens path for writing with the given mode, replacing any old file. */
static FILE *create_file(const char *path, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) close(fd);
    return f;
}

int gw_tls_make_self_signed(const char *cert_path, const char *key_path, char *err, size_t errsz)
{
    int rc = -1;
    X509 *cert = NULL;
    FILE *kf = NULL, *cf = NULL;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    if (pkey == NULL) {
        fail(err, errsz, "generating an EC P-256 key");
        return -1;
    }
    cert = build_cert(pkey);
    if (cert == NULL) {
        fail(err, errsz, "building the self-signed certificate");
        goto out;
    }
    kf = create_file(key_path, 0600);
    if (kf == NULL || !PEM_write_PrivateKey(kf, pkey, NULL, NULL, 0, NULL, NULL)) {
        snprintf(err, errsz, "cannot write %s: %s", key_path, strerror(errno));
        goto out;
    }
    cf = create_file(cert_path, 0644);
    if (cf == NULL || !PEM_write_X509(cf, cert)) {
        snprintf(err, errsz, "cannot write %s: %s", cert_path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (kf != NULL && fclose(kf) != 0) rc = -1;
    if (cf != NULL && fclose(cf) != 0) rc = -1;
    X509_free(cert);
    EVP_PKEY_free(pkey);
    return rc;
}

int gw_tls_ensure_self_signed(const char *dir, char *cert_out, char *key_out, size_t pathsz,
                              bool *created, char *err, size_t errsz)
{
    *created = false;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(cert_out, pathsz, "%s/server.crt", dir);
    snprintf(key_out, pathsz, "%s/server.key", dir);
    /* Replicas sharing one home start at once: without the lock two of them could each
     * write a key and a certificate, and one would load the other's key with its own
     * certificate, or a half-written one. The lock makes one create the pair and the
     * others wait for it and use it. */
    char lock_path[4096];
    snprintf(lock_path, sizeof lock_path, "%s/.create.lock", dir);
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) != 0) {
        snprintf(err, errsz, "cannot lock %s: %s", lock_path, strerror(errno));
        if (lock >= 0) close(lock);
        return -1;
    }
    int rc = 0;
    if (access(cert_out, R_OK) != 0 || access(key_out, R_OK) != 0) {
        rc = gw_tls_make_self_signed(cert_out, key_out, err, errsz);
        *created = rc == 0;
    }
    close(lock);
    return rc;
}
