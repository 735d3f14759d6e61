/* gw_keys.c - the API key store (see gw_keys.h): SHA-256 hashes in a text file,
 * constant-time verification, and the first admin key made on first start. */
#include "gw_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define KEYS_DB_NAME "keys.db"
#define ADMIN_KEY_NAME "admin.key"

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes exactly 2*n hex digits; returns 0 or -1. */
static int hex_decode(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int gw_keys_hash(const char *key, size_t len, uint8_t out[32])
{
    unsigned int outlen = 0;
    if (!EVP_Digest(key, len, out, &outlen, EVP_sha256(), NULL) || outlen != 32) return -1;
    return 0;
}

int gw_keys_generate(char out[GW_KEY_LEN + 1])
{
    uint8_t raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    memcpy(out, GW_KEY_PREFIX, 3);
    hex_encode(raw, sizeof raw, out + 3);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/* Parses "<key_id> <hex> <role>" into e; returns 0, or -1 for a malformed line. */
static int parse_line(const char *line, gw_key_entry *e)
{
    char id[GW_KEY_ID_MAX], hex[80], role[GW_KEY_ROLE_MAX];
    char extra[2];
    int n = sscanf(line, "%63s %79s %31s %1s", id, hex, role, extra);
    if (n != 3) return -1;
    if (hex_decode(hex, e->hash, sizeof e->hash) != 0) return -1;
    snprintf(e->key_id, sizeof e->key_id, "%s", id);
    snprintf(e->role, sizeof e->role, "%s", role);
    return 0;
}

static int append_entry(gw_key_entry **v, size_t *n, size_t *cap, const gw_key_entry *e)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        gw_key_entry *nv = realloc(*v, nc * sizeof *nv);
        if (nv == NULL) return -1;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = *e;
    return 0;
}

int gw_keys_load(gw_keystore *ks, const char *path, char *err, size_t errsz)
{
    gw_key_entry *v = NULL;
    size_t n = 0, cap = 0;
    struct timespec mtime = {0, 0};
    FILE *f = fopen(path, "r");
    if (f == NULL && errno != ENOENT) {
        snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (f != NULL) {
        struct stat st;
        if (fstat(fileno(f), &st) == 0) mtime = st.st_mtim;
        char line[512];
        int lineno = 0, bad = 0;
        while (fgets(line, sizeof line, f) != NULL) {
            lineno++;
            const char *p = line + strspn(line, " \t");
            if (*p == '#' || *p == '\n' || *p == '\0') continue;
            gw_key_entry e;
            if (parse_line(p, &e) != 0) {
                if (!bad++) snprintf(err, errsz, "%s:%d: malformed key line skipped", path, lineno);
                continue;
            }
            if (append_entry(&v, &n, &cap, &e) != 0) {
                fclose(f);
                free(v);
                snprintf(err, errsz, "out of memory loading %s", path);
                return -1;
            }
        }
        fclose(f);
    }
    free(ks->entries);
    ks->entries = v;
    ks->n = n;
    ks->loaded_mtime = mtime;
    if (ks->path != path) snprintf(ks->path, sizeof ks->path, "%s", path);
    return 0;
}

int gw_keys_reload_if_changed(gw_keystore *ks, char *err, size_t errsz)
{
    struct stat st;
    struct timespec now = {0, 0};
    if (stat(ks->path, &st) == 0) now = st.st_mtim;
    if (now.tv_sec == ks->loaded_mtime.tv_sec && now.tv_nsec == ks->loaded_mtime.tv_nsec)
        return 0;
    return gw_keys_load(ks, ks->path, err, errsz) == 0 ? 1 : -1;
}

const gw_key_entry *gw_keys_verify(const gw_keystore *ks, const char *key, size_t len)
{
    uint8_t h[32];
    if (gw_keys_hash(key, len, h) != 0) return NULL;
    const gw_key_entry *found = NULL;
    for (size_t i = 0; i < ks->n; i++) {
        /* No early exit: every entry costs the same whatever matches. */
        int same = CRYPTO_memcmp(h, ks->entries[i].hash, sizeof h) == 0;
        if (same && found == NULL) found = &ks->entries[i];
    }
    OPENSSL_cleanse(h, sizeof h);
    return found;
}

/* Writes data to path created exclusively with mode 0600; returns 0 or -1 + message. */
static int write_new_private_file(const char *path, const char *data, char *err, size_t errsz)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(data);
    ssize_t w = write(fd, data, len);
    int rc = (w == (ssize_t)len && fsync(fd) == 0) ? 0 : -1;
    if (rc != 0) snprintf(err, errsz, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* Appends one line to keys.db, creating it 0600 if needed. */
static int append_db_line(const char *path, const char *key_id, const uint8_t hash[32],
                          const char *role, char *err, size_t errsz)
{
    char hex[65], line[256];
    hex_encode(hash, 32, hex);
    int len = snprintf(line, sizeof line, "%s %s %s\n", key_id, hex, role);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = (write(fd, line, (size_t)len) == len && fsync(fd) == 0) ? 0 : -1;
    if (rc != 0) snprintf(err, errsz, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}

static bool valid_token(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] == 0x7f) return false;
    return true;
}

int gw_keys_add(gw_keystore *ks, const char *key_id, const char *key, const char *role,
                char *err, size_t errsz)
{
    if (!valid_token(key_id, GW_KEY_ID_MAX) || !valid_token(role, GW_KEY_ROLE_MAX)) {
        snprintf(err, errsz, "key id and role must be non-empty words without spaces");
        return -1;
    }
    uint8_t h[32];
    if (gw_keys_hash(key, strlen(key), h) != 0) {
        snprintf(err, errsz, "SHA-256 failed");
        return -1;
    }
    if (append_db_line(ks->path, key_id, h, role, err, errsz) != 0) return -1;
    return gw_keys_load(ks, ks->path, err, errsz);
}

static bool has_admin(const gw_keystore *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->entries[i].role, "admin") == 0) return true;
    return false;
}

int gw_keys_bootstrap(gw_keystore *ks, const char *keys_dir, bool *created,
                      char *err, size_t errsz)
{
    char db[4096], keyfile[4096];
    *created = false;
    if (mkdir(keys_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", keys_dir, strerror(errno));
        return -1;
    }
    snprintf(db, sizeof db, "%s/%s", keys_dir, KEYS_DB_NAME);
    snprintf(keyfile, sizeof keyfile, "%s/%s", keys_dir, ADMIN_KEY_NAME);
    char warn[256] = "";
    if (gw_keys_load(ks, db, warn, sizeof warn) != 0) {
        snprintf(err, errsz, "%s", warn);
        return -1;
    }
    if (has_admin(ks)) return 0;

    char key[GW_KEY_LEN + 2];
    if (gw_keys_generate(key) != 0) {
        snprintf(err, errsz, "random number generator failed");
        return -1;
    }
    /* A stale admin.key without a matching hash is useless: replace it. */
    unlink(keyfile);
    key[GW_KEY_LEN] = '\n';
    key[GW_KEY_LEN + 1] = '\0';
    int rc = write_new_private_file(keyfile, key, err, errsz);
    key[GW_KEY_LEN] = '\0';
    if (rc == 0) rc = gw_keys_add(ks, "admin", key, "admin", err, errsz);
    OPENSSL_cleanse(key, sizeof key);
    if (rc == 0) *created = true;
    return rc;
}

void gw_keys_free(gw_keystore *ks)
{
    free(ks->entries);
    ks->entries = NULL;
    ks->n = 0;
}
