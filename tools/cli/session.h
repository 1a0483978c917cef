/* clapp eval's set-up over core/: registry, pipeline, manifest, source and
 * graph set up together, torn down together (run, train and extract are on
 * the host API, stream.c and extract.c). */
#ifndef CLAPP_CLI_SESSION_H
#define CLAPP_CLI_SESSION_H

#include "checkpoint.h"
#include "cli.h"
#include "cli_core.h"
#include "options.h"
#include "graph.h"
#include "manifest.h"
#include "source.h"

typedef struct cli_session {
    clapp_host          host;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_manifest      manifest;
    clapp_labelset      labels;       /* phones of .phn alignments: the CMU-41 set */
    clapp_labelset      classes;      /* class names of the label column, in order of first appearance,
                                         shared by every manifest of the session (eval: train and test) */
    clapp_source       *src;
    clapp_graph         graph;
    int                 have_graph;
} cli_session;

/* Set everything up (learn: 1 trains). Prints the error and returns the exit status on failure. */
int  cli_session_open(cli_session *s, const cli_options *o, int learn);
/* Replace the data (manifest and source) of an open session, keeping the
 * graph: epochs passes, force_stream reads whole files whatever the source's mode. */
int  cli_session_use_data(cli_session *s, const cli_options *o, const char *data, int epochs,
                          int force_stream);
/* Load a checkpoint into the graph; prints the error. */
int  cli_session_load(cli_session *s, const char *path, int with_optimizer);
void cli_session_close(cli_session *s);

#endif
