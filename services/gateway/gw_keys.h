/* gw_keys.h - the gateway's API key store: keys are kept only as SHA-256 hashes.
 *
 * The store is one text file, $CITADEL_HOME/keys/keys.db, one key a line:
 *     <key_id> <sha256 hex of the whole key> <role>
 * Lines starting with '#' and blank lines are ignored. The gateway loads it at start,
 * re-reads it when its modification time changes (so a key added by `citadel keys`
 * works without a restart), and verifies each request's bearer key against it. On first
 * start it makes the first admin key, writes the key itself to keys/admin.key (mode
 * 0600, the only place a full key is ever written) and its hash to keys.db (0600).
 *
 * Keys look like "ck-" followed by 64 lowercase hex digits (32 random bytes). A key
 * is never logged; only its key_id is.
 */
#ifndef CITADEL_GW_KEYS_H
#define CITADEL_GW_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define GW_KEY_PREFIX "ck-"
#define GW_KEY_LEN (3 + 64)        /* prefix + 32 bytes as hex */
#define GW_KEY_ID_MAX 64
#define GW_KEY_ROLE_MAX 32

/* One known key: its name, the SHA-256 of the key text, and its role ("admin",
 * "user"; roles are enforced by a later issue, here any valid key is allowed). */
typedef struct gw_key_entry {
    char key_id[GW_KEY_ID_MAX];
    uint8_t hash[32];
    char role[GW_KEY_ROLE_MAX];
} gw_key_entry;

/* The loaded keys.db: entries, the file's path, and the mtime it was loaded at, so
 * gw_keys_reload_if_changed can tell when to re-read it. */
typedef struct gw_keystore {
    gw_key_entry *entries;
    size_t n;
    char path[4096];
    struct timespec loaded_mtime;
} gw_keystore;

/* SHA-256 of key[0..len) into out. Returns 0, or -1 if OpenSSL fails (it should not). */
int gw_keys_hash(const char *key, size_t len, uint8_t out[32]);

/* Writes a fresh random key ("ck-" + 64 hex digits, NUL-terminated) into out, which
 * must hold GW_KEY_LEN + 1 bytes. Returns 0, or -1 when the RNG fails. */
int gw_keys_generate(char out[GW_KEY_LEN + 1]);

/* Parses keys.db at path into ks (replacing what it held). A missing file gives an
 * empty store. Malformed lines are skipped (a message naming the first one goes to err
 * but the call succeeds). Returns 0, or -1 with a message when the file can't be read.
 * On failure ks is unchanged. */
int gw_keys_load(gw_keystore *ks, const char *path, char *err, size_t errsz);

/* Re-reads the file when its mtime differs from the one loaded. Returns 1 when it
 * reloaded, 0 when nothing changed, -1 on error (ks unchanged). */
int gw_keys_reload_if_changed(gw_keystore *ks, char *err, size_t errsz);

/* First-start setup in keys_dir (created 0700 if missing): when keys.db holds no
 * admin key, makes one, writes it to keys_dir/admin.key (0600) and appends
 * "admin <hash> admin" to keys_dir/keys.db (0600). Then loads keys.db into ks.
 * *created tells whether a key was made. Returns 0, or -1 with a message. */
int gw_keys_bootstrap(gw_keystore *ks, const char *keys_dir, bool *created,
                      char *err, size_t errsz);

/* Appends a key to the store's file and reloads. Returns 0, or -1 with a message. */
int gw_keys_add(gw_keystore *ks, const char *key_id, const char *key, const char *role,
                char *err, size_t errsz);

/* The entry whose hash matches key[0..len), or NULL. Every entry is compared in
 * constant time, and all of them always, so timing reveals neither the hash nor which
 * entry matched. */
const gw_key_entry *gw_keys_verify(const gw_keystore *ks, const char *key, size_t len);

void gw_keys_free(gw_keystore *ks);

#endif
