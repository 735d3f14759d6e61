/* json_min.h - a tiny JSON reader for test data (the golden JSONL files), header-only so
 * each test binary can include it. It parses one document into a tree of json_value;
 * strings are decoded (escapes, \uXXXX with surrogate pairs) into UTF-8. It is for
 * trusted test files only: errors return NULL, nothing more.
 *
 *   json_value *v = json_parse(line);
 *   const json_value *ids = json_get(v, "prompt_ids");   // array
 *   int first = (int)ids->items[0]->number;
 *   json_free(v);
 */
#ifndef CITADEL_TEST_JSON_MIN_H
#define CITADEL_TEST_JSON_MIN_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum json_kind { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

typedef struct json_value {
    enum json_kind kind;
    double number;              /* JSON_NUMBER, JSON_BOOL (0/1) */
    char *string;               /* JSON_STRING: UTF-8, NUL-terminated */
    size_t string_len;
    size_t n;                   /* JSON_ARRAY / JSON_OBJECT: number of items */
    struct json_value **items;  /* the items (object values) */
    char **keys;                /* JSON_OBJECT: the keys */
} json_value;

static inline void json_free(json_value *v)
{
    if (v == NULL) return;
    for (size_t i = 0; i < v->n; i++) {
        json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

static inline void json_skip_ws(const char **p)
{
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r') (*p)++;
}

static inline void json_put_utf8(char *out, size_t *len, unsigned cp)
{
    if (cp < 0x80) out[(*len)++] = (char)cp;
    else if (cp < 0x800) {
        out[(*len)++] = (char)(0xC0 | (cp >> 6));
        out[(*len)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*len)++] = (char)(0xE0 | (cp >> 12));
        out[(*len)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*len)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*len)++] = (char)(0xF0 | (cp >> 18));
        out[(*len)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*len)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*len)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static inline bool json_hex4(const char *p, unsigned *out)
{
    *out = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 99u;
        if (d > 15) return false;
        *out = *out * 16 + d;
    }
    return true;
}

/* Parses the string starting after the opening quote; NULL on error. */
static inline char *json_parse_string(const char **p, size_t *len_out)
{
    const char *s = *p;
    size_t cap = strlen(s) + 1, len = 0;
    char *out = malloc(cap);
    if (out == NULL) return NULL;
    while (*s && *s != '"') {
        if (*s != '\\') { out[len++] = *s++; continue; }
        s++;
        char e = *s++;
        unsigned cp;
        switch (e) {
        case 'n': out[len++] = '\n'; break;
        case 't': out[len++] = '\t'; break;
        case 'r': out[len++] = '\r'; break;
        case 'b': out[len++] = '\b'; break;
        case 'f': out[len++] = '\f'; break;
        case 'u':
            if (!json_hex4(s, &cp)) { free(out); return NULL; }
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[0] == '\\' && s[1] == 'u') {
                unsigned lo;
                if (json_hex4(s + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
            }
            json_put_utf8(out, &len, cp);
            break;
        default: out[len++] = e; break;  /* \" \\ \/ */
        }
    }
    if (*s != '"') { free(out); return NULL; }
    *p = s + 1;
    out[len] = '\0';
    *len_out = len;
    return out;
}

static inline json_value *json_parse_value(const char **p);

static inline bool json_push(json_value *v, json_value *item, char *key)
{
    json_value **items = realloc(v->items, (v->n + 1) * sizeof *items);
    if (items == NULL) return false;
    v->items = items;
    if (v->kind == JSON_OBJECT) {
        char **keys = realloc(v->keys, (v->n + 1) * sizeof *keys);
        if (keys == NULL) return false;
        v->keys = keys;
        v->keys[v->n] = key;
    }
    v->items[v->n++] = item;
    return true;
}

static inline json_value *json_parse_container(const char **p, json_value *v, char close)
{
    json_skip_ws(p);
    if (**p == close) { (*p)++; return v; }
    for (;;) {
        char *key = NULL;
        json_skip_ws(p);
        if (v->kind == JSON_OBJECT) {
            size_t klen;
            if (**p != '"') break;
            (*p)++;
            key = json_parse_string(p, &klen);
            json_skip_ws(p);
            if (key == NULL || **p != ':') { free(key); break; }
            (*p)++;
        }
        json_value *item = json_parse_value(p);
        if (item == NULL || !json_push(v, item, key)) { json_free(item); free(key); break; }
        json_skip_ws(p);
        if (**p == ',') { (*p)++; continue; }
        if (**p == close) { (*p)++; return v; }
        break;
    }
    json_free(v);
    return NULL;
}

static inline json_value *json_parse_value(const char **p)
{
    json_skip_ws(p);
    json_value *v = calloc(1, sizeof *v);
    if (v == NULL) return NULL;
    char c = **p;
    if (c == '{' || c == '[') {
        v->kind = c == '{' ? JSON_OBJECT : JSON_ARRAY;
        (*p)++;
        return json_parse_container(p, v, c == '{' ? '}' : ']');
    }
    if (c == '"') {
        (*p)++;
        v->kind = JSON_STRING;
        v->string = json_parse_string(p, &v->string_len);
        if (v->string == NULL) { free(v); return NULL; }
        return v;
    }
    if (!strncmp(*p, "true", 4) || !strncmp(*p, "false", 5)) {
        v->kind = JSON_BOOL;
        v->number = c == 't';
        *p += c == 't' ? 4 : 5;
        return v;
    }
    if (!strncmp(*p, "null", 4)) { *p += 4; return v; }
    char *end;
    v->kind = JSON_NUMBER;
    v->number = strtod(*p, &end);
    if (end == *p) { free(v); return NULL; }
    *p = end;
    return v;
}

/* The document in text, or NULL when it is not valid JSON. */
static inline json_value *json_parse(const char *text)
{
    const char *p = text;
    json_value *v = json_parse_value(&p);
    json_skip_ws(&p);
    if (v && *p != '\0') { json_free(v); return NULL; }
    return v;
}

/* The value under key in an object, or NULL. */
static inline const json_value *json_get(const json_value *obj, const char *key)
{
    if (obj == NULL || obj->kind != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key)) return obj->items[i];
    return NULL;
}

#endif
