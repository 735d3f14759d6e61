/* fleet.c - starting, finding, probing and stopping the local fleet's processes (see
 * fleet.h). Plain POSIX: fork/exec, pid files, and a minimal HTTP/1.0 GET for the
 * admin endpoints (the admin listener speaks plain HTTP on loopback). */
#include "fleet.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double fleet_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *fleet_home(void)
{
    const char *h = getenv("CITADEL_HOME");
    return h && *h ? h : "./var";
}

int fleet_run_dir(char *out, size_t cap)
{
    const char *home = fleet_home();
    if ((size_t)snprintf(out, cap, "%s/run", home) >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (mkdir(home, 0755) && errno != EEXIST)
        return -1;
    if (mkdir(out, 0755) && errno != EEXIST)
        return -1;
    return 0;
}

int fleet_bin_dir(char *out, size_t cap)
{
    const char *env = getenv("CITADEL_BIN_DIR");
    if (env && *env)
        return (size_t)snprintf(out, cap, "%s", env) < cap ? 0 : -1;
    char exe[FLEET_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    return (size_t)snprintf(out, cap, "%s", dirname(exe)) < cap ? 0 : -1;
}

static int write_pid_file(const char *run_dir, const fleet_service *s)
{
    char path[FLEET_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.pid", run_dir, s->name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%d %d\n", (int)s->pid, s->admin_port);
    return fclose(f);
}

/* In the child: new session, log file as stdout/stderr, extra environment, exec.
 * Only async-signal-safe-ish calls matter little here (single-threaded parent). */
static void exec_child(const fleet_service *s, int log_fd)
{
    setsid();
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    close(log_fd);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        close(null_fd);
    }
    for (int i = 0; i < 8 && s->env[i]; i++)
        putenv((char *)s->env[i]);
    char *argv[18] = {(char *)s->binary};
    for (int i = 0; i < 16 && s->args[i]; i++)
        argv[i + 1] = (char *)s->args[i];
    execv(s->binary, argv);
    dprintf(STDERR_FILENO, "citadel up: cannot exec %s: %s\n", s->binary, strerror(errno));
    _exit(127);
}

int fleet_start(fleet_service *s, const char *run_dir, char *err, size_t errsz)
{
    if (access(s->binary, X_OK) != 0) {
        snprintf(err, errsz, "%s: %s not found or not executable (build it with make)",
                 s->name, s->binary);
        return -1;
    }
    char log_path[FLEET_PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s/%s.log", run_dir, s->name);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        snprintf(err, errsz, "%s: cannot open %s: %s", s->name, log_path, strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(log_fd);
        snprintf(err, errsz, "%s: fork: %s", s->name, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        fcntl(log_fd, F_SETFD, 0);
        exec_child(s, log_fd);
    }
    close(log_fd);
    s->pid = pid;
    if (write_pid_file(run_dir, s)) {
        snprintf(err, errsz, "%s: cannot write its pid file in %s", s->name, run_dir);
        return -1;
    }
    return 0;
}

int fleet_read_pid(const char *run_dir, const char *name, pid_t *pid, int *port)
{
    char path[FLEET_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.pid", run_dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int p = 0, q = 0;
    int got = fscanf(f, "%d %d", &p, &q);
    fclose(f);
    if (got != 2 || p <= 1)
        return -1;
    *pid = (pid_t)p;
    *port = q;
    return 0;
}

/* Whether pid exists and is not a zombie (our own children linger as zombies until
 * reaped: reap first so that they read dead). */
bool fleet_pid_running(pid_t pid)
{
    if (pid <= 1)
        return false;
    waitpid(pid, NULL, WNOHANG);
    return !(kill(pid, 0) != 0 && errno == ESRCH);
}

bool fleet_pid_alive(pid_t pid)
{
    if (!fleet_pid_running(pid))
        return false;
    char path[64], cmd[4096] = {0};
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)   /* arguments are NUL-separated: search them all */
        if (cmd[i] == '\0') cmd[i] = ' ';
    cmd[n] = '\0';
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    char state = '?';
    if (f) {
        int ignored_pid;
        char comm[64];
        if (fscanf(f, "%d %63s %c", &ignored_pid, comm, &state) != 3)
            state = '?';
        fclose(f);
    }
    /* The local Redis renames its process ("redis-server 127.0.0.1:6380"). */
    return (strstr(cmd, "citadel") != NULL || strstr(cmd, "redis-server") != NULL) && state != 'Z';
}

static int connect_loopback(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd p = {fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) || soerr) {
        close(fd);
        return -1;
    }
    return fd;
}

int fleet_redis_ping(int port, int timeout_ms)
{
    int fd = connect_loopback(port, timeout_ms);
    if (fd < 0)
        return -1;
    char buf[64] = {0};
    int status = -1;
    if (write(fd, "PING\r\n", 6) == 6) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) == 1 && read(fd, buf, sizeof buf - 1) > 0 && strncmp(buf, "+PONG", 5) == 0)
            status = 200;
    }
    close(fd);
    return status;
}

/* Reads until EOF or the deadline; returns the bytes read. */
static size_t read_all(int fd, char *buf, size_t cap, double deadline)
{
    size_t n = 0;
    while (n + 1 < cap) {
        int left = (int)((deadline - fleet_now()) * 1000);
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) != 1)
            break;
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    return n;
}

int fleet_http_get(int port, const char *path, int timeout_ms, char *body, size_t cap)
{
    double deadline = fleet_now() + timeout_ms / 1000.0;
    int fd = connect_loopback(port, timeout_ms);
    if (fd < 0)
        return -1;
    char req[512];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    if (write(fd, req, (size_t)len) != len) {
        close(fd);
        return -1;
    }
    char resp[4096];
    read_all(fd, resp, sizeof resp, deadline);
    close(fd);
    int status = -1;
    if (sscanf(resp, "HTTP/%*d.%*d %d", &status) != 1)
        return -1;
    if (body && cap) {
        const char *b = strstr(resp, "\r\n\r\n");
        snprintf(body, cap, "%s", b ? b + 4 : "");
        body[strcspn(body, "\r\n")] = '\0';
    }
    return status;
}

/* Start order: the data services (Kafka, Redis, then the audit writer that needs
 * Kafka), the router, workers by number, then everything else. */
static int rank(const char *name)
{
    if (!strcmp(name, "kafka-dev")) return -3;
    if (!strcmp(name, "redis")) return -2;
    if (!strcmp(name, "audit")) return -1;
    if (!strcmp(name, "router")) return 0;
    if (!strncmp(name, "worker-", 7)) return 1;
    return 2;
}

static int compare_names(const void *a, const void *b)
{
    const char *x = a, *y = b;
    int rx = rank(x), ry = rank(y);
    if (rx != ry) return rx - ry;
    if (rx == 1) return atoi(x + 7) - atoi(y + 7);
    return strcmp(x, y);
}

int fleet_list(const char *run_dir, char names[][FLEET_NAME_MAX], int cap)
{
    DIR *d = opendir(run_dir);
    if (d == NULL)
        return 0;
    int n = 0;
    for (struct dirent *e; n < cap && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || len - 4 >= FLEET_NAME_MAX || strcmp(e->d_name + len - 4, ".pid"))
            continue;
        memcpy(names[n], e->d_name, len - 4);
        names[n++][len - 4] = '\0';
    }
    closedir(d);
    qsort(names, (size_t)n, FLEET_NAME_MAX, compare_names);
    return n;
}

int fleet_stop_pids(const pid_t *pids, int n, double timeout_s, bool own_children)
{
    /* A pid from a pid file is checked to still be a citadel service; our own
     * children are ours whatever they exec'd. */
    bool (*alive_fn)(pid_t) = own_children ? fleet_pid_running : fleet_pid_alive;
    for (int i = 0; i < n; i++)
        if (alive_fn(pids[i]))
            kill(pids[i], SIGTERM);
    double deadline = fleet_now() + timeout_s;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++)
            alive += alive_fn(pids[i]);
        if (alive == 0)
            return 0;
        if (fleet_now() >= deadline)
            break;
        usleep(50 * 1000);
    }
    int killed = 0;
    for (int i = 0; i < n; i++) {
        if (alive_fn(pids[i])) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            killed++;
        }
    }
    return killed;
}

void fleet_print_log_tail(const char *run_dir, const char *name, int lines)
{
    char path[FLEET_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.log", run_dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    /* Keep a ring of the last `lines` lines; logs here are short. */
    char ring[16][512];
    int n = 0;
    if (lines > 16) lines = 16;
    while (fgets(ring[n % lines], sizeof ring[0], f))
        n++;
    fclose(f);
    int first = n > lines ? n - lines : 0;
    fprintf(stderr, "--- last lines of %s:\n", path);
    for (int i = first; i < n; i++)
        fputs(ring[i % lines], stderr);
}
