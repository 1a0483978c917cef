/* Ctrl-C and SIGTERM: a flag, set by an async-signal-safe handler, that the
 * block loops of run, train and extract read between blocks, and that the
 * library's decode thread reads while it waits for input
 * (clapp_pipeline_set_interrupt), so the first signal also ends a wait on a
 * FIFO without a writer. A lock-free atomic: safe in the handler and across
 * threads. This flag is the command's only global mutable state; the
 * library has none. */
#include "interrupt.h"

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs a lock-free atomic int");

static atomic_int stop_signal;

static void on_signal(int sig)
{
    if (atomic_load(&stop_signal)) {
        /* The second signal: no more waiting for the block to end. */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    atomic_store(&stop_signal, sig);
}

void cli_interrupt_install(void)
{
    struct sigaction sa;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_interrupted(void)
{
    return atomic_load(&stop_signal);
}

int cli_interrupt_check(void *user)
{
    (void)user;
    return atomic_load(&stop_signal) != 0;
}

int cli_interrupt_status(int sig)
{
    return 128 + sig;
}

const char *cli_signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}
