/* Ctrl-C and SIGTERM in the clapp command: the first one asks the running
 * loop to stop at the next block boundary (the loop then saves what it was
 * asked to save and exits 128 + the signal number: 130 for SIGINT, 143 for
 * SIGTERM); a second one ends the process at once with the signal's default
 * action. */
#ifndef CLAPP_CLI_INTERRUPT_H
#define CLAPP_CLI_INTERRUPT_H

/* Install the handlers for SIGINT and SIGTERM (SA_RESTART: reads in the
 * decode thread go on; a wait for input ends through cli_interrupt_check). */
void cli_interrupt_install(void);
/* The signal number that asked to stop, 0 if none has. */
int  cli_interrupted(void);
/* The same as clapp_pipeline_set_interrupt's callback (any thread): 1 once
 * a signal asked to stop. */
int  cli_interrupt_check(void *user);
/* The exit status for signal sig: 128 + sig. */
int  cli_interrupt_status(int sig);
/* "SIGINT", "SIGTERM" or "a signal" (static storage). */
const char *cli_signal_name(int sig);

#endif
