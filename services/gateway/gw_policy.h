/* gw_policy.h - who may do what at the gateway: routes name a permission, roles grant
 * permissions. Read once at start from a small text file (or the built-in default),
 * checked on every request after authentication.
 *
 * The file, one rule a line ('#' comments, blank lines ignored):
 *     route METHOD PATH PERMISSION     METHOD: GET, POST, DELETE or * (any);
 *                                      PATH: exact, or a prefix ending in '*'
 *     role NAME PERMISSION ...         '*' grants every permission
 * The first route that matches a request decides its permission. A request whose path
 * matches no route is a 404; a path that matches only with another method is a 405.
 * Routes for endpoints this gateway does not serve yet (files, fine-tuning jobs, audit
 * queries, batches) are in the default policy so that the role matrix is complete;
 * they answer 403 to roles without the permission and 404 to the others.
 *
 * gRPC methods use the permissions of their REST twins (Generate: chat when it carries
 * messages, completions otherwise; ListModels: models).
 */
#ifndef CITADEL_GW_POLICY_H
#define CITADEL_GW_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#define GW_POLICY_NAME_MAX 48

/* One "route" line. */
typedef struct gw_policy_route {
    char method[8];                       /* "GET", "POST", "DELETE" or "*" */
    char path[128];                       /* exact, or prefix when prefix is true */
    bool prefix;
    char permission[GW_POLICY_NAME_MAX];
} gw_policy_route;

/* One "role" line: the permissions it grants, as a space-separated list. */
typedef struct gw_policy_role {
    char name[GW_POLICY_NAME_MAX];
    char grants[512];                     /* " chat completions " (padded for lookup) or " * " */
} gw_policy_role;

typedef struct gw_policy {
    gw_policy_route *routes;  size_t n_routes;
    gw_policy_role *roles;    size_t n_roles;
} gw_policy;

/* The policy the gateway uses when no file is configured (see README). */
extern const char gw_policy_default_text[];

/* Parses policy text into p (zeroed first). Returns 0, or -1 with a message naming the
 * line; p then holds nothing. */
int gw_policy_parse(gw_policy *p, const char *text, char *err, size_t errsz);

/* Reads and parses the file at path (an empty path: the default). 0 or -1 + message. */
int gw_policy_load(gw_policy *p, const char *path, char *err, size_t errsz);

void gw_policy_free(gw_policy *p);

/* The outcome of matching a request against the routes. */
typedef enum gw_route_match { GW_ROUTE_FOUND, GW_ROUTE_NO_PATH, GW_ROUTE_WRONG_METHOD } gw_route_match;

/* Finds the first route for method and path; on GW_ROUTE_FOUND *route is set. */
gw_route_match gw_policy_route_for(const gw_policy *p, const char *method, const char *path,
                                   const gw_policy_route **route);

/* Whether a role is defined. */
bool gw_policy_has_role(const gw_policy *p, const char *role);

/* Whether any role of the comma-separated list grants permission. */
bool gw_policy_allows(const gw_policy *p, const char *roles, const char *permission);

#endif
