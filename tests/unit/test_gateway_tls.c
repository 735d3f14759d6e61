/* test_gateway_tls.c - the gateway's TLS setup (services/gateway/gw_tls.c): the
 * self-signed certificate's names and key mode, and real handshakes over a socketpair
 * against the server context: TLS 1.2 and 1.3 succeed, TLS 1.1 and ciphers outside
 * Mozilla's intermediate list are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "gw_tls.h"

static char tmpdir[256], cert_path[400], key_path[400];
static SSL_CTX *server_ctx;

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/citadel-test-tls-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    char dir[300], err[256];
    bool created;
    snprintf(dir, sizeof dir, "%s/tls", tmpdir);
    if (gw_tls_ensure_self_signed(dir, cert_path, key_path, sizeof cert_path, &created, err,
                                  sizeof err) != 0 || !created) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    server_ctx = gw_tls_server_context(cert_path, key_path, err, sizeof err);
    if (server_ctx == NULL) fprintf(stderr, "%s\n", err);
    return server_ctx ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(server_ctx);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_self_signed_names_and_modes(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(key_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *f = fopen(cert_path, "r");
    assert_non_null(f);
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(cert);
    assert_int_equal(X509_check_host(cert, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_host(cert, "example.com", 0, 0, NULL), 0);
    EVP_PKEY *pk = X509_get0_pubkey(cert);
    assert_true(EVP_PKEY_is_a(pk, "EC"));
    X509_free(cert);

    /* A second start reuses the files. */
    char dir[300], c2[400], k2[400], err[256];
    bool created = true;
    snprintf(dir, sizeof dir, "%s/tls", tmpdir);
    assert_int_equal(gw_tls_ensure_self_signed(dir, c2, k2, sizeof c2, &created, err, sizeof err), 0);
    assert_false(created);
    assert_string_equal(c2, cert_path);
}

static void test_bad_paths_fail_with_message(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(gw_tls_server_context("/nonexistent/c.pem", key_path, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/c.pem"));
}

/* Runs both ends of a handshake over a non-blocking socketpair in this thread. Returns
 * true when both sides completed. */
static bool handshake(SSL_CTX *client_ctx, char *version, size_t vsz)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    SSL *s = SSL_new(server_ctx), *c = SSL_new(client_ctx);
    SSL_set_fd(s, sv[0]);
    SSL_set_fd(c, sv[1]);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, "localhost");
    bool sdone = false, cdone = false, failed = false;
    for (int i = 0; i < 200 && !(sdone && cdone) && !failed; i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1) cdone = true;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ) failed = true;
        }
        if (!sdone) {
            int r = SSL_do_handshake(s);
            if (r == 1) sdone = true;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) failed = true;
        }
    }
    if (version) snprintf(version, vsz, "%s", SSL_get_version(c));
    ERR_clear_error();
    SSL_free(s);
    SSL_free(c);
    close(sv[0]);
    close(sv[1]);
    return sdone && cdone && !failed;
}

static SSL_CTX *client(int min_version, int max_version, const char *ciphers)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_min_proto_version(ctx, min_version);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    /* Security level 0 so that this client can offer what the server must refuse. */
    assert_int_equal(SSL_CTX_set_cipher_list(ctx, ciphers), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

static void test_tls13_and_tls12_succeed(void **state)
{
    (void)state;
    char v[32];
    SSL_CTX *c13 = client(TLS1_3_VERSION, TLS1_3_VERSION, "DEFAULT");
    assert_true(handshake(c13, v, sizeof v));
    assert_string_equal(v, "TLSv1.3");
    SSL_CTX_free(c13);
    SSL_CTX *c12 = client(TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_true(handshake(c12, v, sizeof v));
    assert_string_equal(v, "TLSv1.2");
    SSL_CTX_free(c12);
}

static void test_tls11_refused(void **state)
{
    (void)state;
    SSL_CTX *c11 = client(TLS1_VERSION, TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0");
    assert_false(handshake(c11, NULL, 0));
    SSL_CTX_free(c11);
    /* Control: the same client allowed up to 1.2 gets through, so the version is why. */
    char v[32];
    SSL_CTX *c12 = client(TLS1_VERSION, TLS1_2_VERSION, "DEFAULT:@SECLEVEL=0");
    assert_true(handshake(c12, v, sizeof v));
    assert_string_equal(v, "TLSv1.2");
    SSL_CTX_free(c12);
}

static void test_weak_tls12_ciphers_refused(void **state)
{
    (void)state;
    /* CBC-mode suites are outside the intermediate profile. */
    SSL_CTX *c = client(TLS1_2_VERSION, TLS1_2_VERSION,
                        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0");
    assert_false(handshake(c, NULL, 0));
    SSL_CTX_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_signed_names_and_modes),
        cmocka_unit_test(test_bad_paths_fail_with_message),
        cmocka_unit_test(test_tls13_and_tls12_succeed),
        cmocka_unit_test(test_tls11_refused),
        cmocka_unit_test(test_weak_tls12_ciphers_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
