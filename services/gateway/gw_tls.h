/* gw_tls.h - the gateway's TLS setup with OpenSSL: the server context (TLS 1.2 and 1.3
 * only, Mozilla's "intermediate" profile) and the self-signed certificate made on first
 * start when the configuration names none.
 *
 * main.c calls gw_tls_ensure_self_signed (when no certificate is configured) and then
 * gw_tls_server_context; the HTTP server wraps each accepted socket in an SSL from that
 * context (bufferevent_openssl). Nothing here touches sockets.
 */
#ifndef CITADEL_GW_TLS_H
#define CITADEL_GW_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* Mozilla intermediate (v5.7): ECDHE/DHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2;
 * TLS 1.3's own suites are all acceptable and left at OpenSSL's defaults. */
#define GW_TLS12_CIPHERS                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                       \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                       \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define GW_TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define GW_TLS_GROUPS "X25519:P-256:P-384"

/* A server context with the certificate chain and private key from these PEM files:
 * TLS 1.2 minimum, 1.3 maximum, the ciphers above, no renegotiation, no compression,
 * no session tickets, ALPN "http/1.1". Returns the context, or NULL with a message
 * naming the file or setting that failed. */
SSL_CTX *gw_tls_server_context(const char *cert_path, const char *key_path,
                               char *err, size_t errsz);

/* Writes a self-signed certificate (EC P-256, CN=localhost, subjectAltName DNS:localhost
 * and IP:127.0.0.1, valid for about ten years) and its key to these paths; the key file
 * is created with mode 0600. Returns 0, or -1 with a message. */
int gw_tls_make_self_signed(const char *cert_path, const char *key_path, char *err, size_t errsz);

/* First start: in dir (created 0700 if needed) makes server.crt and server.key unless
 * both already exist. Writes their paths to cert_out and key_out (pathsz bytes each) and
 * sets *created when it made them. Returns 0, or -1 with a message. */
int gw_tls_ensure_self_signed(const char *dir, char *cert_out, char *key_out, size_t pathsz,
                              bool *created, char *err, size_t errsz);

/* OpenSSL's error queue as one line (and cleared), for messages. */
void gw_tls_last_error(char *buf, size_t bufsz);

#endif
