/* The clapp command: shared pieces of the subcommands. */
#ifndef CLAPP_CLI_H
#define CLAPP_CLI_H

#include <stdint.h>

#include "clapp/plugin.h"
#include "pipeline.h"
#include "registry.h"

/* Exit statuses. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* A host that prints to standard error, "clapp: who: message". */
void cli_host_init(clapp_host *host, int verbosity);

/* Load a pipeline file, attach probes (--probe NAME[:TYPE]), apply the
 * overrides (--set) and resolve; prints the error and returns CLI_USAGE on failure. */
int  cli_pipeline_load(clapp_pipeline_desc *pd, const char *path, char **sets, int n_sets,
                       char **probes, int n_probes, const clapp_registry *reg);

int  cli_inspect(int argc, char **argv);
int  cli_run(int argc, char **argv);
int  cli_train(int argc, char **argv);
int  cli_eval(int argc, char **argv);
int  cli_extract(int argc, char **argv);
int  cli_validate(int argc, char **argv);

#endif
