/* The clapp command: pieces over core/ for the one subcommand not yet on
 * the host API, eval (session.c, probe_cache.c). */
#ifndef CLAPP_CLI_CORE_H
#define CLAPP_CLI_CORE_H

#include "cli.h"
#include "pipeline.h"
#include "registry.h"

/* Load a pipeline file, attach probes (--probe NAME[:TYPE]), apply the
 * overrides (--set) and resolve; prints the error and returns CLI_USAGE on failure. */
int  cli_pipeline_load(clapp_pipeline_desc *pd, const char *path, char **sets, int n_sets,
                       char **probes, int n_probes, const clapp_registry *reg);

#endif
