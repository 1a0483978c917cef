/* Data parallelism in the clapp command: `mpirun -np N clapp train|extract`.
 *
 * The library knows nothing of MPI: it shards the data and hands the
 * gradients of every step to a hook (clapp_pipeline_set_data_parallel).
 * This file is that hook and the few collective calls around it, on MPI
 * when the command is built with it (CLAPP_MPI) and started by an MPI
 * launcher; otherwise one process, rank 0 of 1, and every call is a no-op.
 *
 * One step of training: every rank computes the gradients of its own block
 * (or none, when its share of the data has ended), then ONE MPI_Allreduce
 * (sum) of one contiguous float buffer per step carries every learning
 * tensor's gradient followed by a tail: the number of ranks that had a
 * block, a stop request, and for the metrics the block's valid steps,
 * active lanes and each loss element's loss. Each rank divides the summed
 * gradients by the count of ranks with a block, so uneven shards neither
 * hang (a rank without data still takes part, with zeros) nor bias the
 * mean; when the count is 0 every rank's data has ended and all stop
 * together. Every rank applies the same mean to the same weights, so they
 * stay identical (checked at the end: cli_dist_check_weights).
 */
#ifndef CLAPP_CLI_DIST_H
#define CLAPP_CLI_DIST_H

#include <stdint.h>

#include "clapp/clapp.h"

#define CLI_DIST_MAX_LOSSES 64

typedef struct cli_dist {
    int      rank, ranks;       /* 0 of 1 without MPI */
    /* the reducer (cli_dist_attach) */
    clapp_pipeline *p;
    const char *source;         /* the source element's name (valid steps, active lanes) */
    const char *losses[CLI_DIST_MAX_LOSSES];
    int      n_losses;
    float   *buf;
    int64_t  cap;               /* floats */
    clapp_grad *grads;          /* the last step's list (values for the weight check) */
    int32_t  n_grads;
    int      stop_local;        /* set before a step: this rank asks every rank to stop after it */
    int      stop_all;          /* after a step: some rank asked */
    /* the last step, over every rank */
    int64_t  ranks_active;      /* ranks that had a block */
    double   steps, lanes;      /* valid source steps and active lanes of the step */
    double   loss[CLI_DIST_MAX_LOSSES];   /* mean over the ranks whose block had pairs; NaN: none */
    /* totals */
    double   steps_total;       /* valid source steps over every rank and step */
    double   loss_sum[CLI_DIST_MAX_LOSSES];   /* of loss[] over the steps that had one ... */
    int64_t  loss_n[CLI_DIST_MAX_LOSSES];     /* ... and their number */
    double   reduce_seconds;    /* inside MPI_Allreduce (waiting for the slowest rank included) */
    int64_t  reductions;
} cli_dist;

/* main: start MPI when an MPI launcher started this process (mpirun sets
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK); refuse such a start with
 * several processes when the command is built without MPI. Returns CLI_OK
 * or prints why not and returns CLI_FAILED. */
int  cli_dist_start(int *argc, char ***argv);
/* main: the end of MPI (once every command has returned). */
void cli_dist_stop(void);

/* This process's rank and the number of ranks (0 and 1 without MPI). */
void cli_dist_init(cli_dist *d);
void cli_dist_free(cli_dist *d);

/* The log of ranks > 0: errors only, each line "clapp[rank R]: ...". Set on
 * options before creating the pipeline. */
void cli_dist_log_options(cli_dist *d, clapp_options *o);

/* Give the pipeline (before open) its shard of the data and, when it learns
 * on several ranks, the gradient reducer; loss_names: its loss elements
 * (the metrics' means), source: the source element's name. */
int  cli_dist_attach(cli_dist *d, clapp_pipeline *p, int learn, const char *source,
                     const char *const *loss_names, int n_losses);

/* The worst exit status over every rank (collective; a rank that failed its
 * set-up lets the others stop instead of waiting for it in a step). */
int  cli_dist_agree(cli_dist *d, int status);
/* Sums over every rank, in place (collective). */
void cli_dist_sum(cli_dist *d, double *v, int n);
/* After training on several ranks: whether every rank holds the same
 * weights (a 64-bit hash of the values compared; collective). Returns 1 if
 * so, 0 if not (and says so), and *hash is this rank's hash. */
int  cli_dist_check_weights(cli_dist *d, uint64_t *hash);
/* A rank that cannot go on: print the message and end every rank. */
void cli_dist_abort(cli_dist *d, const char *message);

#endif
