/* The clapp command: shared pieces of the subcommands. The command uses the
 * host API (clapp/clapp.h) and the plugin ABI (clapp/plugin.h) alone: no
 * header of core/. */
#ifndef CLAPP_CLI_H
#define CLAPP_CLI_H

#include <stdint.h>

#include "clapp/plugin.h"

/* Exit statuses. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* A host that prints to standard error, "clapp: who: message". */
void cli_host_init(clapp_host *host, int verbosity);

int  cli_inspect(int argc, char **argv);
int  cli_run(int argc, char **argv);
int  cli_train(int argc, char **argv);
int  cli_eval(int argc, char **argv);
int  cli_extract(int argc, char **argv);
int  cli_validate(int argc, char **argv);

#endif
