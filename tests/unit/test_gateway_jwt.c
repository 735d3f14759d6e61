/* test_gateway_jwt.c - bearer JWTs (services/gateway/gw_jwt.c), tokens made here with
 * libjwt and an RSA key made with OpenSSL: HS256 and RS256 accepted; expiry, nbf,
 * issuer, audience (string and array) checked; "none", an unconfigured algorithm and
 * the RS256 public key used as an HS256 secret refused; a tampered payload refused;
 * the roles claim as an array, a string and a dotted path, with and without a map; the
 * principal through gw_auth_bearer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "gw_jwt.h"

#define SECRET "0123456789abcdef0123456789abcdef-secret"
static char pub_path[128];
static char *priv_pem;
static size_t priv_len;
static char *pub_pem;
static const time_t NOW = 1800000000;

static int make_rsa(void **state)
{
    (void)state;
    EVP_PKEY *k = EVP_RSA_gen(2048);
    if (k == NULL) return -1;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    priv_pem = strndup(p, (size_t)n);
    priv_len = (size_t)n;
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    n = BIO_get_mem_data(b, &p);
    pub_pem = strndup(p, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(k);
    snprintf(pub_path, sizeof pub_path, "/tmp/citadel-test-jwt-%d.pem", (int)getpid());
    FILE *f = fopen(pub_path, "w");
    if (f == NULL) return -1;
    fputs(pub_pem, f);
    fclose(f);
    return 0;
}

static int free_rsa(void **state)
{
    (void)state;
    unlink(pub_path);
    free(priv_pem);
    free(pub_pem);
    return 0;
}

/* A signed token: alg with key; claims as JSON. Returns malloc'd text. */
static char *token(jwt_alg_t alg, const void *key, size_t key_len, const char *claims)
{
    jwt_t *j = NULL;
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_add_grants_json(j, claims), 0);
    assert_int_equal(jwt_set_alg(j, alg, key, (int)key_len), 0);
    char *t = jwt_encode_str(j);
    jwt_free(j);
    assert_non_null(t);
    return t;
}

static char *hs(const char *claims)
{
    return token(JWT_ALG_HS256, SECRET, strlen(SECRET), claims);
}

static gw_jwt *verifier(bool with_hs, bool with_rs, const char *roles_claim, const char *map)
{
    gw_jwt_config cfg = {with_hs ? SECRET : "", with_rs ? pub_path : "", "https://idp.example", "citadel",
                         roles_claim, map, "sub", 30};
    char err[256];
    gw_jwt *j = gw_jwt_new(&cfg, err, sizeof err);
    if (j == NULL) fail_msg("gw_jwt_new: %s", err);
    return j;
}

/* Verifies t; returns 0/-1 with why and who. */
static int check(const gw_jwt *j, const char *t, gw_principal *who, char *why)
{
    return gw_jwt_verify(j, t, strlen(t), NOW, who, why, 200);
}

#define CLAIMS(extra) "{\"iss\":\"https://idp.example\",\"aud\":\"citadel\",\"sub\":\"alice\",\"exp\":1800000600" extra "}"

static void test_hs256_and_rs256(void **state)
{
    (void)state;
    gw_jwt *j = verifier(true, true, "roles", "");
    gw_principal who;
    char why[200];
    char *t = hs(CLAIMS(",\"roles\":[\"user\",\"auditor\"]"));
    assert_int_equal(check(j, t, &who, why), 0);
    assert_string_equal(who.user, "alice");
    assert_string_equal(who.key_id, "jwt:alice");
    assert_string_equal(who.roles, "user,auditor");
    assert_int_equal(who.via, GW_AUTH_JWT);
    free(t);
    t = token(JWT_ALG_RS256, priv_pem, priv_len, CLAIMS(",\"roles\":\"trainer service\""));
    assert_int_equal(check(j, t, &who, why), 0);
    assert_string_equal(who.roles, "trainer,service");
    free(t);
    gw_jwt_free(j);
}

static void test_claims_checked(void **state)
{
    (void)state;
    gw_jwt *j = verifier(true, false, "roles", "");
    gw_principal who;
    char why[200];
    struct { const char *claims; const char *why; } bad[] = {
        {"{\"iss\":\"https://idp.example\",\"aud\":\"citadel\",\"sub\":\"a\",\"roles\":\"user\",\"exp\":1799999000}", "expired"},
        {"{\"iss\":\"https://idp.example\",\"aud\":\"citadel\",\"sub\":\"a\",\"roles\":\"user\"}", "exp"},
        {"{\"iss\":\"https://idp.example\",\"aud\":\"citadel\",\"sub\":\"a\",\"roles\":\"user\",\"exp\":1800000600,\"nbf\":1800000500}", "nbf"},
        {"{\"iss\":\"https://evil.example\",\"aud\":\"citadel\",\"sub\":\"a\",\"roles\":\"user\",\"exp\":1800000600}", "issuer"},
        {"{\"iss\":\"https://idp.example\",\"aud\":\"other\",\"sub\":\"a\",\"roles\":\"user\",\"exp\":1800000600}", "audience"},
        {"{\"iss\":\"https://idp.example\",\"aud\":[\"x\",\"y\"],\"sub\":\"a\",\"roles\":\"user\",\"exp\":1800000600}", "audience"},
        {"{\"iss\":\"https://idp.example\",\"aud\":\"citadel\",\"roles\":\"user\",\"exp\":1800000600}", "sub"},
        {"{\"iss\":\"https://idp.example\",\"aud\":\"citadel\",\"sub\":\"a\",\"exp\":1800000600}", "no role"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = hs(bad[i].claims);
        if (check(j, t, &who, why) != -1 || strstr(why, bad[i].why) == NULL)
            fail_msg("case %zu: accepted or wrong reason '%s' (want '%s')", i, why, bad[i].why);
        free(t);
    }
    /* Within the leeway: exp 20 s ago is still fine; an aud array holding ours is fine. */
    char *t = hs("{\"iss\":\"https://idp.example\",\"aud\":[\"x\",\"citadel\"],\"sub\":\"a\",\"roles\":\"user\",\"exp\":1799999980}");
    assert_int_equal(check(j, t, &who, why), 0);
    free(t);
    gw_jwt_free(j);
}

/* base64url of s without padding, into out. */
static void b64url(const char *s, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)strlen(s));
    for (int i = 0; i < n; i++) out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    while (n > 0 && out[n - 1] == '=') n--;
    out[n] = '\0';
}

static void test_algorithms_refused(void **state)
{
    (void)state;
    gw_principal who;
    char why[200], h[128], p[512], t[1024];
    gw_jwt *rs_only = verifier(false, true, "roles", "");
    gw_jwt *both = verifier(true, true, "roles", "");
    /* alg none, unsigned. */
    b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", h);
    b64url(CLAIMS(",\"roles\":\"admin\""), p);
    snprintf(t, sizeof t, "%s.%s.", h, p);
    assert_int_equal(check(both, t, &who, why), -1);
    assert_non_null(strstr(why, "not accepted"));
    /* HS256 signed with the RS256 public key as the secret (the classic confusion). */
    char *conf = token(JWT_ALG_HS256, pub_pem, strlen(pub_pem), CLAIMS(",\"roles\":\"admin\""));
    assert_int_equal(check(rs_only, conf, &who, why), -1);
    assert_int_equal(check(both, conf, &who, why), -1);
    free(conf);
    /* HS512 is not configured. */
    char *hs512 = token(JWT_ALG_HS512, SECRET, strlen(SECRET), CLAIMS(",\"roles\":\"user\""));
    assert_int_equal(check(both, hs512, &who, why), -1);
    free(hs512);
    /* A good token with its payload swapped for one that says admin. */
    char *good = hs(CLAIMS(",\"roles\":\"user\""));
    char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');
    snprintf(t, sizeof t, "%.*s.%s%s", (int)(dot1 - good), good, p, dot2);
    assert_int_equal(check(both, t, &who, why), -1);
    assert_string_equal(why, "bad signature");
    free(good);
    assert_int_equal(check(both, "garbage", &who, why), -1);
    assert_int_equal(check(both, "a.b.c", &who, why), -1);
    gw_jwt_free(rs_only);
    gw_jwt_free(both);
}

static void test_role_map_and_path(void **state)
{
    (void)state;
    gw_jwt *j = verifier(true, false, "realm_access.roles", "ml-team=trainer,ops=admin");
    gw_principal who;
    char why[200];
    char *t = hs(CLAIMS(",\"realm_access\":{\"roles\":[\"ml-team\",\"visitors\",\"ops\",\"ml-team\"]}"));
    assert_int_equal(check(j, t, &who, why), 0);
    assert_string_equal(who.roles, "trainer,admin");
    free(t);
    t = hs(CLAIMS(",\"realm_access\":{\"roles\":[\"visitors\"]}"));
    assert_int_equal(check(j, t, &who, why), -1);
    free(t);
    /* Through gw_auth: a JWT gets the default limits; an API-key-shaped credential is
     * never sent to the JWT verifier. */
    apikey_store keys = {0};
    snprintf(keys.path, sizeof keys.path, "/nonexistent/keys.db");
    gw_auth auth = {.keys = &keys, .jwt = j, .default_rpm = 9, .default_tpm = 99};
    t = hs(CLAIMS(",\"realm_access\":{\"roles\":[\"ops\"]}"));
    char header[2048];
    snprintf(header, sizeof header, "Bearer %s", t);
    gw_error e;
    /* gw_auth_bearer checks expiry against the real clock: this token expires in January 2027. */
    assert_int_equal(gw_auth_bearer(&auth, header, &who, &e), time(NULL) < 1800000600 ? 0 : -1);
    if (time(NULL) < 1800000600) {
        assert_int_equal(who.rpm, 9);
        assert_int_equal(who.tpm, 99);
        assert_string_equal(who.roles, "admin");
    }
    free(t);
    assert_int_equal(gw_auth_bearer(&auth, "Bearer not-a-token", &who, &e), -1);
    assert_string_equal(e.code, "invalid_token");
    gw_jwt_free(j);
    apikeys_free(&keys);
}

static void test_config_refused(void **state)
{
    (void)state;
    char err[256];
    gw_jwt_config none = {"", "", "i", "a", "roles", "", "sub", 30};
    assert_null(gw_jwt_new(&none, err, sizeof err));
    gw_jwt_config short_secret = {"short", "", "i", "a", "roles", "", "sub", 30};
    assert_null(gw_jwt_new(&short_secret, err, sizeof err));
    assert_non_null(strstr(err, "32 bytes"));
    gw_jwt_config no_aud = {SECRET, "", "i", "", "roles", "", "sub", 30};
    assert_null(gw_jwt_new(&no_aud, err, sizeof err));
    gw_jwt_config bad_key = {"", "/nonexistent.pem", "i", "a", "roles", "", "sub", 30};
    assert_null(gw_jwt_new(&bad_key, err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_and_rs256),
        cmocka_unit_test(test_claims_checked),
        cmocka_unit_test(test_algorithms_refused),
        cmocka_unit_test(test_role_map_and_path),
        cmocka_unit_test(test_config_refused),
    };
    return cmocka_run_group_tests(tests, make_rsa, free_rsa);
}
