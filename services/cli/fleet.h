/* fleet.h - the process plumbing behind `citadel up/down/status` (cmd_fleet.c): where
 * a local fleet keeps its state, starting one service as its own process, finding it
 * again from its pid file, and asking its admin listener how it is.
 *
 * State lives under $CITADEL_HOME/run (CITADEL_HOME defaults to ./var):
 *   <name>.pid   "<pid> <admin port>\n", written when the service is started
 *   <name>.log   the service's stdout and stderr (its JSON log lines)
 * A pid file whose process is gone, or is no longer a citadel service (the pid was
 * reused), counts as dead.
 */
#ifndef CITADEL_CLI_FLEET_H
#define CITADEL_CLI_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define FLEET_PATH_MAX 1024
#define FLEET_NAME_MAX 32

/* One service of the fleet. env holds "NAME=value" strings added to the child's
 * environment (NULL-terminated; the strings are not copied). */
typedef struct fleet_service {
    char name[FLEET_NAME_MAX];     /* "router", "worker-0", "gateway" */
    char binary[FLEET_PATH_MAX];   /* absolute or relative path of the executable */
    int admin_port;                /* its /healthz and /readyz */
    const char *env[8];
    const char *args[16];          /* arguments after the binary's name, NULL-terminated */
    pid_t pid;                     /* 0 until started */
} fleet_service;

/* $CITADEL_HOME or "./var" (a static string). Can't fail. */
const char *fleet_home(void);

/* Writes "<home>/run" into out and creates it (and home) if missing. Returns 0, or -1
 * with errno set. */
int fleet_run_dir(char *out, size_t cap);

/* The directory holding citadel-* binaries: $CITADEL_BIN_DIR, else the directory of
 * the running `citadel` executable. Returns 0, or -1 when neither can be found. */
int fleet_bin_dir(char *out, size_t cap);

/* Starts the service in its own session (so a Ctrl-C in the terminal reaches only
 * `citadel up`, which then stops the fleet in order) with stdout and stderr appended
 * to <run>/<name>.log, then writes <run>/<name>.pid. Returns 0, or -1 with a message
 * in err (binary missing or not executable, fork failure, unwritable run dir). */
int fleet_start(fleet_service *s, const char *run_dir, char *err, size_t errsz);

/* Reads <run>/<name>.pid. Returns 0 with *pid and *port, or -1 when absent or bad. */
int fleet_read_pid(const char *run_dir, const char *name, pid_t *pid, int *port);

/* Whether pid exists and is not a zombie (a child of ours is reaped if it exited). */
bool fleet_pid_running(pid_t pid);

/* Whether pid is a live citadel service (not a zombie, not a reused pid). */
bool fleet_pid_alive(pid_t pid);

/* GETs http://127.0.0.1:<port><path>. Returns the HTTP status, or -1 when nothing
 * answered within timeout_ms. The body (or its start) goes to body when not NULL. */
int fleet_http_get(int port, const char *path, int timeout_ms, char *body, size_t cap);

/* Sends PING to a Redis server on 127.0.0.1:port: 200 when it answers +PONG within
 * timeout_ms (the same meaning as fleet_http_get's status), else -1. */
int fleet_redis_ping(int port, int timeout_ms);

/* Names of the services that have a pid file in run_dir, in start order (router,
 * workers, then the rest). Returns how many (at most cap). */
int fleet_list(const char *run_dir, char names[][FLEET_NAME_MAX], int cap);

/* Sends SIGTERM to every pid, waits up to timeout_s for all to exit, then SIGKILLs the
 * rest. own_children: the pids are this process's children (reaped here); otherwise
 * they come from pid files of an earlier `citadel up --detach` and only those still
 * running a citadel binary are signalled. Returns how many had to be killed. */
int fleet_stop_pids(const pid_t *pids, int n, double timeout_s, bool own_children);

/* Prints the last lines of <run>/<name>.log to stderr, to explain a failed start. */
void fleet_print_log_tail(const char *run_dir, const char *name, int lines);

/* Seconds on a monotonic clock. */
double fleet_now(void);

#endif
