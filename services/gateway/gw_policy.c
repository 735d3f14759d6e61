/* gw_policy.c - the gateway's role and route policy (see gw_policy.h): a line parser,
 * first-match route lookup and role grants. */
#include "gw_policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char gw_policy_default_text[] =
    "# Citadel gateway policy: routes name a permission, roles grant permissions.\n"
    "route POST   /v1/chat/completions  chat\n"
    "route POST   /v1/completions       completions\n"
    "route GET    /v1/models            models\n"
    "route GET    /admin/keys           keys\n"
    "route POST   /admin/keys           keys\n"
    "route DELETE /admin/keys/*         keys\n"
    "route *      /v1/files*            files\n"
    "route *      /v1/fine_tuning/jobs* fine_tuning\n"
    "route *      /v1/audit/*           audit\n"
    "route *      /v1/batches*          batch\n"
    "role admin   *\n"
    "role user    chat completions models\n"
    "role trainer files fine_tuning models\n"
    "role auditor audit\n"
    "role service batch models\n";

void gw_policy_free(gw_policy *p)
{
    free(p->routes);
    free(p->roles);
    memset(p, 0, sizeof *p);
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= GW_POLICY_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
            !(s[i] >= '0' && s[i] <= '9') && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

/* Grows an array by one element; returns the new slot or NULL. */
static void *grow(void **v, size_t *n, size_t size)
{
    void *nv = realloc(*v, (*n + 1) * size);
    if (nv == NULL) return NULL;
    *v = nv;
    char *slot = (char *)nv + (*n)++ * size;
    memset(slot, 0, size);
    return slot;
}

static int parse_route(gw_policy *p, char **save, char *err, size_t errsz, int lineno)
{
    char *method = strtok_r(NULL, " \t", save), *path = strtok_r(NULL, " \t", save);
    char *perm = strtok_r(NULL, " \t", save), *extra = strtok_r(NULL, " \t", save);
    if (!method || !path || !perm || extra) {
        snprintf(err, errsz, "policy line %d: want 'route METHOD PATH PERMISSION'", lineno);
        return -1;
    }
    if (strcmp(method, "GET") && strcmp(method, "POST") && strcmp(method, "DELETE") && strcmp(method, "*")) {
        snprintf(err, errsz, "policy line %d: method must be GET, POST, DELETE or *", lineno);
        return -1;
    }
    size_t len = strlen(path);
    if (path[0] != '/' || len >= sizeof p->routes->path || !valid_name(perm) || strcmp(perm, "*") == 0) {
        snprintf(err, errsz, "policy line %d: path must start with '/', permission must be a name", lineno);
        return -1;
    }
    gw_policy_route *r = grow((void **)&p->routes, &p->n_routes, sizeof *r);
    if (r == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    snprintf(r->method, sizeof r->method, "%s", method);
    r->prefix = path[len - 1] == '*';
    snprintf(r->path, sizeof r->path, "%.*s", (int)(len - r->prefix), path);
    snprintf(r->permission, sizeof r->permission, "%s", perm);
    return 0;
}

static int parse_role(gw_policy *p, char **save, char *err, size_t errsz, int lineno)
{
    char *name = strtok_r(NULL, " \t", save);
    if (!name || !valid_name(name)) {
        snprintf(err, errsz, "policy line %d: want 'role NAME PERMISSION ...'", lineno);
        return -1;
    }
    if (gw_policy_has_role(p, name)) {
        snprintf(err, errsz, "policy line %d: role '%s' defined twice", lineno, name);
        return -1;
    }
    gw_policy_role *r = grow((void **)&p->roles, &p->n_roles, sizeof *r);
    if (r == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    size_t used = (size_t)snprintf(r->grants, sizeof r->grants, " ");
    for (char *g = strtok_r(NULL, " \t", save); g; g = strtok_r(NULL, " \t", save)) {
        if ((strcmp(g, "*") != 0 && !valid_name(g)) || used + strlen(g) + 2 >= sizeof r->grants) {
            snprintf(err, errsz, "policy line %d: bad or too many permissions", lineno);
            return -1;
        }
        used += (size_t)snprintf(r->grants + used, sizeof r->grants - used, "%s ", g);
    }
    return 0;
}

int gw_policy_parse(gw_policy *p, const char *text, char *err, size_t errsz)
{
    memset(p, 0, sizeof *p);
    char *copy = strdup(text);
    if (copy == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    int lineno = 0, rc = 0;
    char *lsave = NULL;
    /* strtok_r would merge blank lines and lose the count: walk lines by hand. */
    for (char *line = copy; line && rc == 0; line = lsave) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        lsave = nl ? nl + 1 : NULL;
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *save = NULL;
        char *kw = strtok_r(line, " \t\r", &save);
        if (kw == NULL) continue;
        if (strcmp(kw, "route") == 0) rc = parse_route(p, &save, err, errsz, lineno);
        else if (strcmp(kw, "role") == 0) rc = parse_role(p, &save, err, errsz, lineno);
        else {
            snprintf(err, errsz, "policy line %d: unknown rule '%.40s' (route or role)", lineno, kw);
            rc = -1;
        }
    }
    free(copy);
    if (rc == 0 && p->n_roles == 0) {
        snprintf(err, errsz, "policy defines no role");
        rc = -1;
    }
    if (rc != 0) gw_policy_free(p);
    return rc;
}

int gw_policy_load(gw_policy *p, const char *path, char *err, size_t errsz)
{
    if (path == NULL || path[0] == '\0') return gw_policy_parse(p, gw_policy_default_text, err, errsz);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errsz, "cannot read policy %s: %s", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[4096];
    for (size_t n; mem && (n = fread(buf, 1, sizeof buf, f)) > 0;) fwrite(buf, 1, n, mem);
    fclose(f);
    if (mem == NULL || fclose(mem) != 0) {
        free(text);
        snprintf(err, errsz, "out of memory reading %s", path);
        return -1;
    }
    char inner[400];
    int rc = gw_policy_parse(p, text, inner, sizeof inner);
    if (rc != 0) snprintf(err, errsz, "%s: %s", path, inner);
    free(text);
    return rc;
}

static bool path_matches(const gw_policy_route *r, const char *path)
{
    size_t n = strlen(r->path);
    return r->prefix ? strncmp(path, r->path, n) == 0 : strcmp(path, r->path) == 0;
}

gw_route_match gw_policy_route_for(const gw_policy *p, const char *method, const char *path,
                                   const gw_policy_route **route)
{
    bool path_seen = false;
    for (size_t i = 0; i < p->n_routes; i++) {
        const gw_policy_route *r = &p->routes[i];
        if (!path_matches(r, path)) continue;
        path_seen = true;
        if (strcmp(r->method, "*") == 0 || strcmp(r->method, method) == 0) {
            *route = r;
            return GW_ROUTE_FOUND;
        }
    }
    return path_seen ? GW_ROUTE_WRONG_METHOD : GW_ROUTE_NO_PATH;
}

static const gw_policy_role *find_role(const gw_policy *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->n_roles; i++)
        if (strlen(p->roles[i].name) == len && strncmp(p->roles[i].name, name, len) == 0) return &p->roles[i];
    return NULL;
}

bool gw_policy_has_role(const gw_policy *p, const char *role)
{
    return find_role(p, role, strlen(role)) != NULL;
}

bool gw_policy_allows(const gw_policy *p, const char *roles, const char *permission)
{
    char needle[GW_POLICY_NAME_MAX + 2];
    snprintf(needle, sizeof needle, " %s ", permission);
    for (const char *r = roles; *r;) {
        const char *end = strchr(r, ',');
        size_t n = end ? (size_t)(end - r) : strlen(r);
        const gw_policy_role *role = find_role(p, r, n);
        if (role && (strstr(role->grants, " * ") || strstr(role->grants, needle))) return true;
        if (end == NULL) break;
        r = end + 1;
    }
    return false;
}
