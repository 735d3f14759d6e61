/* shutdown.h - graceful stop on SIGTERM/SIGINT: notice the signal safely, stop taking
 * new work, let the work in flight finish within a time limit, then return from main.
 *
 * Two independent parts:
 *
 * 1. The request to stop. shutdown_install() makes SIGTERM and SIGINT set an atomic
 *    flag and write a byte to a self-pipe, the only things a signal handler can do
 *    safely. Loops check shutdown_requested() each turn, or put shutdown_fd() in their
 *    poll set (zmq_poll takes a plain fd; libevent takes it as an event) so that a
 *    signal wakes them at once. A second signal while stopping kills the process the
 *    default way: an operator who presses Ctrl-C twice means it.
 *
 * 2. The drain. A shutdown_drain counts work in flight: each request does
 *    shutdown_drain_enter() (refused once draining) and shutdown_drain_leave() when
 *    done; on shutdown the service calls shutdown_drain_wait(d, timeout), which stops
 *    accepting and returns when the count reaches zero or the time is up. Threads
 *    block on a condition variable; a single-threaded poll loop instead calls
 *    shutdown_drain_stop_accepting() once and checks shutdown_drain_in_flight().
 *
 *   shutdown_install();
 *   while (!shutdown_requested()) serve_one();        // with enter/leave per request
 *   if (shutdown_drain_wait(&drain, 30.0) > 0) log_msg(LOG_WARN, NULL, "gave up");
 */
#ifndef CITADEL_SHUTDOWN_H
#define CITADEL_SHUTDOWN_H

#include <pthread.h>
#include <stdbool.h>

/* Installs the SIGTERM and SIGINT handlers and makes the self-pipe. Idempotent.
 * Returns 0, or -1 (errno set) when the pipe or the handlers cannot be made. */
int shutdown_install(void);
/* Whether a stop was asked for (by a signal or shutdown_request). */
bool shutdown_requested(void);
/* The signal that asked (SIGTERM, SIGINT), 0 for shutdown_request or none yet. */
int shutdown_signal(void);
/* The read end of the self-pipe: readable from the moment a stop is asked for (never
 * read it; it stays readable). -1 before shutdown_install. */
int shutdown_fd(void);
/* Asks for a stop from code, as a signal would; async-signal-safe. */
void shutdown_request(void);
/* Forgets a request (tests, or a service that restarts its loop). */
void shutdown_reset(void);

/* Work in flight. `accepting` turns false once, for good, when draining starts;
 * `idle` is signalled whenever in_flight drops to zero. */
typedef struct shutdown_drain {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int in_flight;
    bool accepting;
} shutdown_drain;

/* Initialises d, accepting, with nothing in flight. Returns 0 or -1. */
int shutdown_drain_init(shutdown_drain *d);
void shutdown_drain_destroy(shutdown_drain *d);
/* Counts one more piece of work; false (nothing counted) once draining started. */
bool shutdown_drain_enter(shutdown_drain *d);
/* The piece of work entered earlier is done. */
void shutdown_drain_leave(shutdown_drain *d);
void shutdown_drain_stop_accepting(shutdown_drain *d);
int shutdown_drain_in_flight(shutdown_drain *d);
/* Stops accepting, then waits up to timeout_s seconds (0: just look) for the work in
 * flight to finish. Returns 0 when none is left, else how many are still running. */
int shutdown_drain_wait(shutdown_drain *d, double timeout_s);

#endif
