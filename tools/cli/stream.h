/* clapp run and train on the host API (no header of core/ here). */
#ifndef CLAPP_CLI_STREAM_H
#define CLAPP_CLI_STREAM_H

#include "clapp/clapp.h"
#include "cli.h"
#include "dist.h"
#include "options.h"

/* The pipeline o->pipe with --probe elements and --set overrides, checked
 * (learn: gradients and the optimizer). d (may be NULL): on ranks > 0 of
 * several, the log of errors only, naming the rank. Prints the problem and
 * returns the exit status; *p is to be destroyed in any case. */
int cli_pipeline_create(clapp_pipeline **p, const cli_options *o, int learn, cli_dist *d);

/* --strict: the source's strict=true (damaged input fails the file instead
 * of a warning). Prints the problem; returns the exit status. */
int cli_apply_strict(clapp_pipeline *p);

/* Stream the manifest o->data through o->pipe (learn: train, with metrics,
 * checkpoints, snapshots and resume), or print the resolved pipeline with
 * --dump-graph. Prints what goes wrong; returns the exit status. */
int cli_stream(const cli_options *o, int learn);

#endif
