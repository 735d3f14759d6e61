/* apikeys.h - the API key store shared by the gateway (which verifies keys) and the CLI
 * (`citadel keys create|list|revoke`, which manages them): keys are kept only as SHA-256
 * hashes, with the attributes that decide what a key may do.
 *
 * The store is one text file, $CITADEL_HOME/keys/keys.db (mode 0600), one key a line:
 *     <key_id> <sha256 hex of the whole key> <roles> [name=value ...]
 * roles is a comma-separated list ("user" or "admin,auditor"). The optional attributes:
 *     models=a,b       the models the key may use (absent: every model)
 *     rpm=N tpm=N      requests and tokens per minute (absent or 0: the gateway default)
 *     expires=T        unix seconds after which the key is refused (absent: never)
 *     created=T        unix seconds it was made
 *     revoked=T        unix seconds it was revoked (absent: live)
 *     user=NAME        who the key belongs to (audit); absent: the key_id
 * Lines starting with '#' and blank lines are ignored; the old three-field lines
 * ("<id> <hash> <role>") are valid lines of this format.
 *
 * Writers (create, revoke, first start) hold an exclusive flock on keys.db.lock and
 * replace the file by rename, so the CLI and the gateway's /admin/keys may both write
 * and a reader never sees half a file. Readers take no lock and write nothing: a store
 * that already has a live admin key may sit in a read-only directory (create and
 * revoke then fail with a message). Readers reload when the file's identity (inode,
 * size, mtime) changes, so a key created or revoked elsewhere takes effect without a
 * restart.
 *
 * Keys look like "ck-" followed by 64 lowercase hex digits (32 random bytes). A key is
 * never logged; only its key_id is. The full key exists only in the answer to the one
 * who made it (and in keys/admin.key for the first admin key).
 */
#ifndef CITADEL_APIKEYS_H
#define CITADEL_APIKEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define APIKEY_PREFIX "ck-"
#define APIKEY_LEN (3 + 64)        /* prefix + 32 bytes as hex */
#define APIKEY_ID_MAX 64
#define APIKEY_ROLES_MAX 128       /* the comma-separated role list */
#define APIKEY_MODELS_MAX 512      /* the comma-separated model list */
#define APIKEY_USER_MAX 64

/* One key's record: everything but the key itself. Times are unix seconds, 0 = unset. */
typedef struct apikey {
    char key_id[APIKEY_ID_MAX];
    uint8_t hash[32];
    char roles[APIKEY_ROLES_MAX];
    char models[APIKEY_MODELS_MAX];   /* "" = every model */
    char user[APIKEY_USER_MAX];       /* "" = the key_id stands for the user */
    int64_t rpm, tpm;                 /* 0 = the gateway's default limit */
    int64_t created, expires, revoked;
} apikey;

/* Why a key was accepted or not. */
typedef enum apikey_status { APIKEY_OK, APIKEY_UNKNOWN, APIKEY_EXPIRED, APIKEY_REVOKED } apikey_status;

/* The loaded keys.db, an index on the key hashes, and the identity of the file it came
 * from. index is an open-addressing table of index_cap (a power of two, at least twice
 * n) slots holding 1 + the position in keys of a record, 0 for an empty slot; a
 * record's first slot is chosen by the first 8 bytes of its hash. */
typedef struct apikey_store {
    apikey *keys;
    size_t n;
    size_t *index;
    size_t index_cap;
    char path[4096];
    struct timespec loaded_mtime;
    ino_t loaded_ino;
    off_t loaded_size;
} apikey_store;

/* SHA-256 of key[0..len) into out. Returns 0, or -1 if OpenSSL fails (it should not). */
int apikeys_hash(const char *key, size_t len, uint8_t out[32]);

/* Writes a fresh random key ("ck-" + 64 hex digits, NUL-terminated) into out, which
 * must hold APIKEY_LEN + 1 bytes. Returns 0, or -1 when the RNG fails. */
int apikeys_generate(char out[APIKEY_LEN + 1]);

/* Parses keys.db at path into st (replacing what it held). A missing file gives an
 * empty store. Malformed lines are skipped (a message naming the first one goes to err
 * but the call succeeds). Returns 0, or -1 with a message when the file can't be read;
 * on failure st is unchanged. */
int apikeys_load(apikey_store *st, const char *path, char *err, size_t errsz);

/* Re-reads the file when it changed since it was loaded. Returns 1 when it reloaded,
 * 0 when nothing changed, -1 on error (st unchanged). */
int apikeys_reload_if_changed(apikey_store *st, char *err, size_t errsz);

/* The record whose hash matches key[0..len) and *status: APIKEY_OK, or why it is
 * refused (unknown, expired at `now`, revoked); NULL unless a record matched. The hash
 * is looked up in the index, so the cost does not grow with the number of keys; the
 * slots probed depend only on the hash of the presented key, which its sender knows
 * anyway, and every comparison is constant-time, so timing tells nothing about the
 * stored hashes. */
const apikey *apikeys_verify(const apikey_store *st, const char *key, size_t len, time_t now,
                             apikey_status *status);

/* The record named key_id, or NULL. */
const apikey *apikeys_find(const apikey_store *st, const char *key_id);

/* Makes a key with the attributes of tmpl (its key_id may be "" for a fresh
 * "key-<12 hex>" id; its hash and created are filled here), appends it to st's file and
 * reloads st. On success the key is in key_out (APIKEY_LEN + 1 bytes) and the stored
 * record in *made. Returns 0, or -1 with a message (duplicate id, bad attribute, I/O). */
int apikeys_create(apikey_store *st, const apikey *tmpl, char key_out[APIKEY_LEN + 1],
                   apikey *made, char *err, size_t errsz);

/* Marks key_id revoked at `now` (a revoked key stays listed) and reloads st. Returns 0,
 * 1 when it was already revoked, or -1 with a message (unknown id, I/O). */
int apikeys_revoke(apikey_store *st, const char *key_id, time_t now, char *err, size_t errsz);

/* First-start setup in keys_dir (created 0700 if missing): when keys.db holds no live
 * admin key, makes one with id "admin" (or "admin-<n>" when taken), writes the key to
 * keys_dir/admin.key (0600) and its record to keys.db. Then loads keys.db into st.
 * *created tells whether a key was made. Returns 0, or -1 with a message. */
int apikeys_bootstrap(apikey_store *st, const char *keys_dir, bool *created, char *err, size_t errsz);

/* Rebuilds the index after st->keys was changed by hand (apikeys_load does it).
 * Returns 0, or -1 when out of memory (verification then finds nothing). */
int apikeys_reindex(apikey_store *st);

void apikeys_free(apikey_store *st);

/* Whether the comma-separated list holds name exactly. */
bool apikeys_list_has(const char *list, const char *name);

/* Whether a role, key id, model or user name is acceptable in keys.db: 1..max-1
 * bytes of letters, digits and "-_.:/@" (no spaces, commas or '='). */
bool apikeys_valid_word(const char *s, size_t max);

/* Parses a duration "90", "90s", "15m", "12h", "30d" into seconds (> 0). Returns 0 or -1. */
int apikeys_parse_duration(const char *s, int64_t *seconds);

/* "live", "expired" or "revoked" for k at now. */
const char *apikeys_state(const apikey *k, time_t now);

#endif
