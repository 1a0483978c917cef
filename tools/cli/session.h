/* A run of a pipeline over a manifest: registry, pipeline, manifest, source
 * and graph set up together, torn down together. Shared by run and train. */
#ifndef CLAPP_CLI_SESSION_H
#define CLAPP_CLI_SESSION_H

#include "cli.h"
#include "graph.h"
#include "manifest.h"
#include "source.h"

typedef struct cli_options {
    const char *pipe;
    const char *data;
    char      **sets;
    int         n_sets;
    int         dump_graph;
    int         epochs;
    uint64_t    seed;
    int         verbosity;   /* 0 errors, 1 warnings, 2 info */
    double      lr;
    const char *metrics;     /* train: JSONL file ("-" or NULL: standard output) */
} cli_options;

typedef struct cli_session {
    clapp_host          host;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_manifest      manifest;
    clapp_labelset      labels;
    clapp_source       *src;
    clapp_graph         graph;
    int                 have_graph;
    FILE               *metrics;      /* JSONL per block when learning, or NULL */
    int                 progress;     /* human progress line on standard error */
} cli_session;

/* Parse the options shared by run and train. Returns CLI_OK, or CLI_USAGE
 * after printing the problem; *help is set for --help. */
int  cli_options_parse(cli_options *o, int argc, char **argv, int *help);
/* Set everything up (learn: 1 trains). Prints the error and returns the exit status on failure. */
int  cli_session_open(cli_session *s, const cli_options *o, int learn);
/* Stream every block through the graph. Returns the exit status. */
int  cli_session_run(cli_session *s, const cli_options *o);
void cli_session_close(cli_session *s);

#endif
