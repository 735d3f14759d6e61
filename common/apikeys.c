/* apikeys.c - the API key store (see apikeys.h): SHA-256 hashes and key attributes in a
 * text file, verification through a hash index with constant-time comparisons,
 * writers serialised by flock and replacing the file by rename, and the first admin
 * key made on first start. */
#include "apikeys.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

int apikeys_hash(const char *key, size_t len, uint8_t out[32])
{
    unsigned int outlen = 0;
    if (!EVP_Digest(key, len, out, &outlen, EVP_sha256(), NULL) || outlen != 32) return -1;
    return 0;
}

int apikeys_generate(char out[APIKEY_LEN + 1])
{
    uint8_t raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    memcpy(out, APIKEY_PREFIX, 3);
    hex_encode(raw, sizeof raw, out + 3);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

bool apikeys_valid_word(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && strchr("-_.:/@", s[i]) == NULL) return false;
    return true;
}

/* A comma-separated list of valid words (empty allowed when allow_empty). */
static bool valid_list(const char *s, size_t max, bool allow_empty)
{
    size_t n = strlen(s);
    if (n == 0) return allow_empty;
    if (n >= max) return false;
    char buf[APIKEY_MODELS_MAX];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    if (s[0] == ',' || s[n - 1] == ',' || strstr(s, ",,")) return false;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (!apikeys_valid_word(t, max)) return false;
    return true;
}

bool apikeys_list_has(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && memcmp(p, name, len) == 0) return true;
        if (end == NULL) break;
        p = end + 1;
    }
    return false;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0) return -1;
    *out = v;
    return 0;
}

/* One "name=value" attribute into k; returns 0 or -1 (unknown name, bad value). */
static int parse_attribute(const char *tok, apikey *k)
{
    const char *eq = strchr(tok, '=');
    if (eq == NULL) return -1;
    size_t nl = (size_t)(eq - tok);
    const char *v = eq + 1;
#define IS(name) (nl == strlen(name) && strncmp(tok, name, nl) == 0)
    if (IS("models")) {
        if (!valid_list(v, sizeof k->models, true)) return -1;
        snprintf(k->models, sizeof k->models, "%s", v);
        return 0;
    }
    if (IS("user")) {
        if (!apikeys_valid_word(v, sizeof k->user)) return -1;
        snprintf(k->user, sizeof k->user, "%s", v);
        return 0;
    }
    if (IS("rpm")) return parse_i64(v, &k->rpm);
    if (IS("tpm")) return parse_i64(v, &k->tpm);
    if (IS("expires")) return parse_i64(v, &k->expires);
    if (IS("created")) return parse_i64(v, &k->created);
    if (IS("revoked")) return parse_i64(v, &k->revoked);
#undef IS
    return -1;
}

/* Parses one keys.db line into k; returns 0, or -1 for a malformed line. */
static int parse_line(char *line, apikey *k)
{
    memset(k, 0, sizeof *k);
    char *save = NULL;
    char *id = strtok_r(line, " \t\r\n", &save);
    char *hex = strtok_r(NULL, " \t\r\n", &save);
    char *roles = strtok_r(NULL, " \t\r\n", &save);
    if (!id || !hex || !roles) return -1;
    if (!apikeys_valid_word(id, sizeof k->key_id) || !valid_list(roles, sizeof k->roles, false))
        return -1;
    if (hex_decode(hex, k->hash, sizeof k->hash) != 0) return -1;
    snprintf(k->key_id, sizeof k->key_id, "%s", id);
    snprintf(k->roles, sizeof k->roles, "%s", roles);
    for (char *t = strtok_r(NULL, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save))
        if (parse_attribute(t, k) != 0) return -1;
    return 0;
}

/* The keys.db line for k (with its newline) into buf; returns its length or -1. */
static int format_line(const apikey *k, char *buf, size_t cap)
{
    char hex[65];
    hex_encode(k->hash, 32, hex);
    int n = snprintf(buf, cap, "%s %s %s", k->key_id, hex, k->roles);
    if (k->models[0]) n += snprintf(buf + n, cap - (size_t)n, " models=%s", k->models);
    if (k->user[0]) n += snprintf(buf + n, cap - (size_t)n, " user=%s", k->user);
    if (k->rpm) n += snprintf(buf + n, cap - (size_t)n, " rpm=%" PRId64, k->rpm);
    if (k->tpm) n += snprintf(buf + n, cap - (size_t)n, " tpm=%" PRId64, k->tpm);
    if (k->created) n += snprintf(buf + n, cap - (size_t)n, " created=%" PRId64, k->created);
    if (k->expires) n += snprintf(buf + n, cap - (size_t)n, " expires=%" PRId64, k->expires);
    if (k->revoked) n += snprintf(buf + n, cap - (size_t)n, " revoked=%" PRId64, k->revoked);
    n += snprintf(buf + n, cap - (size_t)n, "\n");
    return (size_t)n < cap ? n : -1;
}

static int append_key(apikey **v, size_t *n, size_t *cap, const apikey *k)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        apikey *nv = realloc(*v, nc * sizeof *nv);
        if (nv == NULL) return -1;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = *k;
    return 0;
}

int apikeys_load(apikey_store *st, const char *path, char *err, size_t errsz)
{
    apikey *v = NULL;
    size_t n = 0, cap = 0;
    struct stat sb = {0};
    FILE *f = fopen(path, "r");
    if (f == NULL && errno != ENOENT) {
        snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (f != NULL) {
        if (fstat(fileno(f), &sb) != 0) memset(&sb, 0, sizeof sb);
        char line[2048];
        int lineno = 0, bad = 0;
        while (fgets(line, sizeof line, f) != NULL) {
            lineno++;
            const char *p = line + strspn(line, " \t");
            if (*p == '#' || *p == '\n' || *p == '\0') continue;
            apikey k;
            if (parse_line(line, &k) != 0) {
                if (!bad++) snprintf(err, errsz, "%s:%d: malformed key line skipped", path, lineno);
                continue;
            }
            if (append_key(&v, &n, &cap, &k) != 0) {
                fclose(f);
                free(v);
                snprintf(err, errsz, "out of memory loading %s", path);
                return -1;
            }
        }
        fclose(f);
    }
    free(st->keys);
    st->keys = v;
    st->n = n;
    if (apikeys_reindex(st) != 0) snprintf(err, errsz, "out of memory indexing %s", path);
    st->loaded_mtime = sb.st_mtim;
    st->loaded_ino = sb.st_ino;
    st->loaded_size = sb.st_size;
    if (st->path != path) snprintf(st->path, sizeof st->path, "%s", path);
    return 0;
}

int apikeys_reload_if_changed(apikey_store *st, char *err, size_t errsz)
{
    struct stat sb;
    if (stat(st->path, &sb) != 0) memset(&sb, 0, sizeof sb);
    if (sb.st_mtim.tv_sec == st->loaded_mtime.tv_sec && sb.st_mtim.tv_nsec == st->loaded_mtime.tv_nsec &&
        sb.st_ino == st->loaded_ino && sb.st_size == st->loaded_size)
        return 0;
    return apikeys_load(st, st->path, err, errsz) == 0 ? 1 : -1;
}

const char *apikeys_state(const apikey *k, time_t now)
{
    if (k->revoked) return "revoked";
    if (k->expires && (int64_t)now >= k->expires) return "expired";
    return "live";
}

/* The first index slot for a hash: its first 8 bytes (SHA-256 output is uniform). */
static size_t home_slot(const uint8_t hash[32], size_t cap)
{
    uint64_t h;
    memcpy(&h, hash, sizeof h);
    return (size_t)h & (cap - 1);
}

int apikeys_reindex(apikey_store *st)
{
    free(st->index);
    st->index = NULL;
    st->index_cap = 0;
    size_t cap = 16;
    while (cap < 2 * st->n) cap *= 2;
    st->index = calloc(cap, sizeof *st->index);
    if (st->index == NULL) return -1;
    st->index_cap = cap;
    for (size_t i = 0; i < st->n; i++) {
        size_t slot = home_slot(st->keys[i].hash, cap);
        while (st->index[slot]) slot = (slot + 1) & (cap - 1);
        st->index[slot] = i + 1;
    }
    return 0;
}

const apikey *apikeys_verify(const apikey_store *st, const char *key, size_t len, time_t now,
                             apikey_status *status)
{
    uint8_t h[32];
    *status = APIKEY_UNKNOWN;
    if (st->index_cap == 0 || apikeys_hash(key, len, h) != 0) return NULL;
    const apikey *found = NULL;
    for (size_t slot = home_slot(h, st->index_cap); st->index[slot] && !found; slot = (slot + 1) & (st->index_cap - 1)) {
        const apikey *k = &st->keys[st->index[slot] - 1];
        if (CRYPTO_memcmp(h, k->hash, sizeof h) == 0) found = k;
    }
    OPENSSL_cleanse(h, sizeof h);
    if (found == NULL) return NULL;
    if (found->revoked) *status = APIKEY_REVOKED;
    else if (found->expires && (int64_t)now >= found->expires) *status = APIKEY_EXPIRED;
    else *status = APIKEY_OK;
    return found;
}

const apikey *apikeys_find(const apikey_store *st, const char *key_id)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->keys[i].key_id, key_id) == 0) return &st->keys[i];
    return NULL;
}

/* ---- writers ---------------------------------------------------------------------------- */

/* Takes the writers' lock (path + ".lock"); returns its fd or -1 with a message. */
static int lock_store(const char *path, char *err, size_t errsz)
{
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        snprintf(err, errsz, "cannot lock %s: %s", lock, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static void unlock_store(int fd)
{
    flock(fd, LOCK_UN);
    close(fd);
}

/* Writes st's records to a temporary file next to path and renames it over path
 * (0600, fsync'd): a reader sees the old file or the new one, never a mix. */
static int rewrite_store(const apikey_store *st, char *err, size_t errsz)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", st->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    static const char head[] = "# citadel API keys: <key_id> <sha256 of the key> <roles> [attribute=value ...]\n";
    int rc = write(fd, head, sizeof head - 1) == (ssize_t)(sizeof head - 1) ? 0 : -1;
    for (size_t i = 0; i < st->n && rc == 0; i++) {
        char line[2048];
        int len = format_line(&st->keys[i], line, sizeof line);
        if (len < 0 || write(fd, line, (size_t)len) != len) rc = -1;
    }
    if (rc == 0 && fsync(fd) != 0) rc = -1;
    if (rc != 0) snprintf(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, st->path) != 0) {
        snprintf(err, errsz, "cannot replace %s: %s", st->path, strerror(errno));
        rc = -1;
    }
    if (rc != 0) unlink(tmp);
    return rc;
}

/* Checks tmpl's words and lists; returns 0 or -1 with a message. */
static int check_attributes(const apikey *k, char *err, size_t errsz)
{
    if (k->key_id[0] && !apikeys_valid_word(k->key_id, sizeof k->key_id)) {
        snprintf(err, errsz, "key id must be letters, digits and -_.:/@");
        return -1;
    }
    if (!valid_list(k->roles, sizeof k->roles, false)) {
        snprintf(err, errsz, "roles must be a comma-separated list of names");
        return -1;
    }
    if (!valid_list(k->models, sizeof k->models, true)) {
        snprintf(err, errsz, "models must be a comma-separated list of names");
        return -1;
    }
    if (k->user[0] && !apikeys_valid_word(k->user, sizeof k->user)) {
        snprintf(err, errsz, "user must be letters, digits and -_.:/@");
        return -1;
    }
    if (k->rpm < 0 || k->tpm < 0 || k->expires < 0) {
        snprintf(err, errsz, "rpm, tpm and expiry cannot be negative");
        return -1;
    }
    return 0;
}

/* apikeys_create's work, with the writers' lock already held. */
static int create_locked(apikey_store *st, const apikey *tmpl, char key_out[APIKEY_LEN + 1], apikey *made,
                         char *err, size_t errsz)
{
    char warn[256];
    if (apikeys_load(st, st->path, warn, sizeof warn) != 0) {
        snprintf(err, errsz, "%s", warn);
        return -1;
    }
    apikey k = *tmpl;
    if (k.key_id[0] == '\0') {
        uint8_t raw[6];
        char hex[13];
        if (RAND_bytes(raw, sizeof raw) != 1) {
            snprintf(err, errsz, "random number generator failed");
            return -1;
        }
        hex_encode(raw, sizeof raw, hex);
        snprintf(k.key_id, sizeof k.key_id, "key-%s", hex);
    }
    if (apikeys_find(st, k.key_id) != NULL) {
        snprintf(err, errsz, "a key with id '%s' exists", k.key_id);
        return -1;
    }
    if (apikeys_generate(key_out) != 0 || apikeys_hash(key_out, APIKEY_LEN, k.hash) != 0) {
        snprintf(err, errsz, "random number generator failed");
        return -1;
    }
    if (k.created == 0) k.created = (int64_t)time(NULL);
    apikey_store next = *st;
    next.keys = malloc((st->n + 1) * sizeof *next.keys);
    if (next.keys == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    if (st->n) memcpy(next.keys, st->keys, st->n * sizeof *st->keys);
    next.keys[next.n++] = k;
    int rc = rewrite_store(&next, err, errsz);
    free(next.keys);
    if (rc == 0) rc = apikeys_load(st, st->path, err, errsz);
    if (rc == 0 && made) *made = k;
    return rc;
}

int apikeys_create(apikey_store *st, const apikey *tmpl, char key_out[APIKEY_LEN + 1],
                   apikey *made, char *err, size_t errsz)
{
    if (check_attributes(tmpl, err, errsz) != 0) return -1;
    int lock = lock_store(st->path, err, errsz);
    if (lock < 0) return -1;
    int rc = create_locked(st, tmpl, key_out, made, err, errsz);
    unlock_store(lock);
    if (rc != 0) OPENSSL_cleanse(key_out, APIKEY_LEN + 1);
    return rc;
}

int apikeys_revoke(apikey_store *st, const char *key_id, time_t now, char *err, size_t errsz)
{
    int lock = lock_store(st->path, err, errsz);
    if (lock < 0) return -1;
    int rc = -1;
    char warn[256];
    if (apikeys_load(st, st->path, warn, sizeof warn) != 0) {
        snprintf(err, errsz, "%s", warn);
        goto out;
    }
    apikey *k = (apikey *)apikeys_find(st, key_id);
    if (k == NULL) {
        snprintf(err, errsz, "no key with id '%s'", key_id);
        goto out;
    }
    if (k->revoked) {
        rc = 1;
        goto out;
    }
    k->revoked = (int64_t)now;
    rc = rewrite_store(st, err, errsz);
    if (rc == 0) rc = apikeys_load(st, st->path, err, errsz);
out:
    unlock_store(lock);
    return rc;
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

static bool has_live_admin(const apikey_store *st, time_t now)
{
    for (size_t i = 0; i < st->n; i++)
        if (apikeys_list_has(st->keys[i].roles, "admin") && strcmp(apikeys_state(&st->keys[i], now), "live") == 0)
            return true;
    return false;
}

int apikeys_bootstrap(apikey_store *st, const char *keys_dir, bool *created, char *err, size_t errsz)
{
    char keyfile[4096];
    *created = false;
    if (mkdir(keys_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", keys_dir, strerror(errno));
        return -1;
    }
    snprintf(st->path, sizeof st->path, "%s/%s", keys_dir, KEYS_DB_NAME);
    snprintf(keyfile, sizeof keyfile, "%s/%s", keys_dir, ADMIN_KEY_NAME);
    /* A store that has an admin key is only read: nothing is written or locked, so a
     * read-only keys directory (a mounted secret) works. */
    char warn[256] = "";
    if (apikeys_load(st, st->path, warn, sizeof warn) != 0) {
        snprintf(err, errsz, "%s", warn);
        return -1;
    }
    if (has_live_admin(st, time(NULL))) return 0;
    /* Two gateways starting at once on one home must not both make a key: the check
     * and the creation are one step under the writers' lock. */
    int lock = lock_store(st->path, err, errsz);
    if (lock < 0) return -1;
    int rc = apikeys_load(st, st->path, warn, sizeof warn);
    if (rc != 0) snprintf(err, errsz, "%s", warn);
    if (rc != 0 || has_live_admin(st, time(NULL))) {
        unlock_store(lock);
        return rc;
    }
    apikey tmpl = {.roles = "admin"};
    snprintf(tmpl.key_id, sizeof tmpl.key_id, "admin");
    for (int n = 2; apikeys_find(st, tmpl.key_id) != NULL && n < 1000; n++)
        snprintf(tmpl.key_id, sizeof tmpl.key_id, "admin-%d", n);
    char key[APIKEY_LEN + 2];
    rc = create_locked(st, &tmpl, key, NULL, err, errsz);
    if (rc != 0) {
        unlock_store(lock);
        OPENSSL_cleanse(key, sizeof key);
        return -1;
    }
    /* A stale admin.key from a revoked or lost admin key is useless: replace it. */
    unlink(keyfile);
    key[APIKEY_LEN] = '\n';
    key[APIKEY_LEN + 1] = '\0';
    rc = write_new_private_file(keyfile, key, err, errsz);
    OPENSSL_cleanse(key, sizeof key);
    unlock_store(lock);
    if (rc == 0) *created = true;
    else apikeys_revoke(st, tmpl.key_id, time(NULL), warn, sizeof warn);  /* nobody holds it */
    return rc;
}

void apikeys_free(apikey_store *st)
{
    free(st->keys);
    free(st->index);
    st->keys = NULL;
    st->index = NULL;
    st->n = st->index_cap = 0;
}

int apikeys_parse_duration(const char *s, int64_t *seconds)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0) return -1;
    long long unit = 1;
    if (*end == '\0' || strcmp(end, "s") == 0) unit = 1;
    else if (strcmp(end, "m") == 0) unit = 60;
    else if (strcmp(end, "h") == 0) unit = 3600;
    else if (strcmp(end, "d") == 0) unit = 86400;
    else return -1;
    if (v > INT64_MAX / unit / 2) return -1;
    *seconds = v * unit;
    return 0;
}
