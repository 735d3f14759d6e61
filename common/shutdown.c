/* shutdown.c - the stop request (signal flag and self-pipe) and the drain counter
 * (see shutdown.h). */
#include "shutdown.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* Process-wide: there is one set of signal handlers. The atomics are lock-free ints,
 * which makes them safe to touch from a signal handler. */
static atomic_int stop_asked;    /* 0, or 1 once a stop was asked for */
static atomic_int stop_signal;   /* the signal that asked, 0 for none or shutdown_request */
static int pipe_fds[2] = {-1, -1};
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

/* One byte makes the read end readable; a full pipe (already readable) is fine. */
static void poke_pipe(void)
{
    if (pipe_fds[1] >= 0) {
        int saved = errno;
        ssize_t rc = write(pipe_fds[1], "x", 1);
        (void)rc;
        errno = saved;
    }
}

static void on_signal(int sig)
{
    if (atomic_exchange(&stop_asked, 1)) {
        /* The second one: die as the signal says, without waiting for the drain. */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    atomic_store(&stop_signal, sig);
    poke_pipe();
}

int shutdown_install(void)
{
    pthread_mutex_lock(&install_lock);
    int rc = 0;
    if (pipe_fds[0] < 0 && pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0)
        rc = -1;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;   /* poll-type calls return EINTR anyway; others just resume */
    sigemptyset(&sa.sa_mask);
    if (rc == 0 && (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0))
        rc = -1;
    if (rc == 0 && atomic_load(&stop_asked))
        poke_pipe();
    pthread_mutex_unlock(&install_lock);
    return rc;
}

bool shutdown_requested(void) { return atomic_load(&stop_asked) != 0; }

int shutdown_signal(void) { return atomic_load(&stop_signal); }

int shutdown_fd(void) { return pipe_fds[0]; }

void shutdown_request(void)
{
    atomic_store(&stop_asked, 1);
    poke_pipe();
}

void shutdown_reset(void)
{
    char buf[64];
    atomic_store(&stop_asked, 0);
    atomic_store(&stop_signal, 0);
    while (pipe_fds[0] >= 0 && read(pipe_fds[0], buf, sizeof buf) > 0)
        ;
}

/* ---- the drain ---------------------------------------------------------------------- */

int shutdown_drain_init(shutdown_drain *d)
{
    pthread_condattr_t attr;
    d->in_flight = 0;
    d->accepting = true;
    if (pthread_mutex_init(&d->lock, NULL) != 0)
        return -1;
    /* The monotonic clock: a wall-clock jump must not stretch or cut the drain. */
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&d->idle, &attr) != 0) {
        pthread_mutex_destroy(&d->lock);
        return -1;
    }
    pthread_condattr_destroy(&attr);
    return 0;
}

void shutdown_drain_destroy(shutdown_drain *d)
{
    pthread_cond_destroy(&d->idle);
    pthread_mutex_destroy(&d->lock);
}

bool shutdown_drain_enter(shutdown_drain *d)
{
    pthread_mutex_lock(&d->lock);
    bool ok = d->accepting;
    if (ok)
        d->in_flight++;
    pthread_mutex_unlock(&d->lock);
    return ok;
}

void shutdown_drain_leave(shutdown_drain *d)
{
    pthread_mutex_lock(&d->lock);
    if (d->in_flight > 0 && --d->in_flight == 0)
        pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);
}

void shutdown_drain_stop_accepting(shutdown_drain *d)
{
    pthread_mutex_lock(&d->lock);
    d->accepting = false;
    pthread_mutex_unlock(&d->lock);
}

int shutdown_drain_in_flight(shutdown_drain *d)
{
    pthread_mutex_lock(&d->lock);
    int n = d->in_flight;
    pthread_mutex_unlock(&d->lock);
    return n;
}

int shutdown_drain_wait(shutdown_drain *d, double timeout_s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (!(timeout_s > 0))
        timeout_s = 0;
    if (timeout_s > 1e9)
        timeout_s = 1e9;
    double whole = floor(timeout_s);
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((timeout_s - whole) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->lock);
    d->accepting = false;
    while (d->in_flight > 0)
        if (pthread_cond_timedwait(&d->idle, &d->lock, &deadline) == ETIMEDOUT)
            break;
    int left = d->in_flight;
    pthread_mutex_unlock(&d->lock);
    return left;
}
