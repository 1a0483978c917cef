/* Ctrl-C and SIGTERM: a flag, set by an async-signal-safe handler, that the
 * block loops of run, train and extract read between blocks. This flag is
 * the command's only global mutable state; the library has none (a host
 * that wants the same stops calling clapp_pipeline_step). */
#include "interrupt.h"

#include <signal.h>
#include <stddef.h>

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    if (stop_signal) {
        /* The second signal: no more waiting for the block to end. */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
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
    return (int)stop_signal;
}

int cli_interrupt_status(int sig)
{
    return 128 + sig;
}

const char *cli_signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}
