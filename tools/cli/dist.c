/* Data parallelism of the clapp command over MPI (dist.h). Built without
 * CLAPP_HAVE_MPI, every process is rank 0 of 1. */
#include "dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#ifdef CLAPP_HAVE_MPI
#include <mpi.h>
#endif

/* The tail after the gradients in the reduced buffer. */
enum { TAIL_COUNT = 0, TAIL_STOP = 1, TAIL_STEPS = 2, TAIL_LANES = 3, TAIL_LOSSES = 4 };

/* Ranks announced by the launcher, 0 when none says. */
static int launcher_size(void)
{
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v)
        v = getenv("PMI_SIZE");
    return v ? atoi(v) : 0;
}

#ifdef CLAPP_HAVE_MPI
static int mpi_running(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}
#endif

int cli_dist_start(int *argc, char ***argv)
{
#ifdef CLAPP_HAVE_MPI
    /* Only under a launcher: a plain `clapp` never touches MPI. */
    if (launcher_size() > 0 || getenv("PMIX_RANK")) {
        int provided = 0;
        /* The decode threads never call MPI: the main thread alone does. */
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            fprintf(stderr, "clapp: error: MPI_Init failed\n");
            return CLI_FAILED;
        }
    }
    return CLI_OK;
#else
    (void)argc;
    (void)argv;
    if (launcher_size() > 1) {
        fprintf(stderr, "clapp: error: started by an MPI launcher as one of %d processes, but this clapp "
                "was built without MPI (CLAPP_MPI=OFF; Debian: libopenmpi-dev); each would train alone\n",
                launcher_size());
        return CLI_FAILED;
    }
    return CLI_OK;
#endif
}

void cli_dist_stop(void)
{
#ifdef CLAPP_HAVE_MPI
    if (mpi_running())
        MPI_Finalize();
#endif
}

void cli_dist_init(cli_dist *d)
{
    memset(d, 0, sizeof *d);
    d->ranks = 1;
#ifdef CLAPP_HAVE_MPI
    if (mpi_running()) {
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->ranks);
    }
#endif
}

void cli_dist_free(cli_dist *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
}

static void rank_log(void *user, int level, const char *who, const char *message)
{
    const cli_dist *d = user;
    fprintf(stderr, "clapp[rank %d]: %s%s%s%s\n", d->rank, level == CLAPP_LOG_ERROR ? "error: " : "",
            who ? who : "", who ? ": " : "", message);
}

void cli_dist_log_options(cli_dist *d, clapp_options *o)
{
    if (d->ranks <= 1 || d->rank == 0)
        return;
    o->log = rank_log;
    o->log_user = d;
    o->log_level = CLAPP_LOG_ERROR;
}

#ifdef CLAPP_HAVE_MPI
static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The gradient hook: one allreduce of the packed gradients and the tail. */
static int reduce_grads(void *user, clapp_grad *g, int32_t n, int64_t *count)
{
    cli_dist *d = user;
    const clapp_block *src = NULL;
    const int64_t tail = TAIL_LOSSES + 2 * (int64_t)d->n_losses;
    int64_t total = 0, at = 0, cnt;
    float *t;
    double t0;

    for (int32_t i = 0; i < n; i++)
        total += g[i].numel;
    if (total + tail > d->cap) {
        float *buf = realloc(d->buf, (size_t)(total + tail) * sizeof *buf);
        if (!buf)
            return CLAPP_E_NOMEM;
        d->buf = buf;
        d->cap = total + tail;
    }
    if (total + tail > (int64_t)INT32_MAX)
        return CLAPP_E_UNSUPPORTED;   /* one MPI count is an int */
    for (int32_t i = 0; i < n; i++) {
        memcpy(d->buf + at, g[i].grad, (size_t)g[i].numel * sizeof(float));
        at += g[i].numel;
    }
    t = d->buf + at;
    memset(t, 0, (size_t)tail * sizeof *t);
    t[TAIL_COUNT] = (float)*count;
    t[TAIL_STOP] = d->stop_local ? 1.0f : 0.0f;
    if (*count > 0 && clapp_pipeline_output(d->p, d->source, &src) == CLAPP_OK)
        for (int32_t b = 0; b < src->lanes; b++) {
            t[TAIL_STEPS] += (float)src->lane[b].len;
            t[TAIL_LANES] += src->lane[b].len > 0;
        }
    for (int k = 0; *count > 0 && k < d->n_losses; k++) {
        clapp_loss_info li;
        if (clapp_pipeline_loss(d->p, d->losses[k], &li) == CLAPP_OK && li.last_pairs > 0) {
            t[TAIL_LOSSES + 2 * k] = (float)li.last;
            t[TAIL_LOSSES + 2 * k + 1] = 1.0f;
        }
    }
    t0 = now_seconds();
    if (MPI_Allreduce(MPI_IN_PLACE, d->buf, (int)(total + tail), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) !=
        MPI_SUCCESS)
        return CLAPP_E_IO;
    d->reduce_seconds += now_seconds() - t0;
    d->reductions++;
    cnt = (int64_t)lrintf(t[TAIL_COUNT]);
    d->stop_all = t[TAIL_STOP] > 0.0f;
    d->ranks_active = cnt;
    d->steps = t[TAIL_STEPS];
    d->lanes = t[TAIL_LANES];
    d->steps_total += d->steps;
    for (int k = 0; k < d->n_losses; k++) {
        d->loss[k] = t[TAIL_LOSSES + 2 * k + 1] > 0.0f
                         ? (double)t[TAIL_LOSSES + 2 * k] / (double)t[TAIL_LOSSES + 2 * k + 1] : NAN;
        if (!isnan(d->loss[k])) {
            d->loss_sum[k] += d->loss[k];
            d->loss_n[k]++;
        }
    }
    /* The mean over the ranks that had a block; all zero: nothing to apply. */
    at = 0;
    for (int32_t i = 0; cnt > 0 && i < n; i++) {
        const float c = (float)cnt;
        for (int64_t j = 0; j < g[i].numel; j++)
            g[i].grad[j] = d->buf[at + j] / c;
        at += g[i].numel;
    }
    d->grads = g;
    d->n_grads = n;
    *count = cnt;
    return CLAPP_OK;
}
#endif

int cli_dist_attach(cli_dist *d, clapp_pipeline *p, int learn, const char *source,
                    const char *const *loss_names, int n_losses)
{
    if (d->ranks <= 1)
        return CLAPP_OK;   /* one process: the library's own path, untouched */
    if (n_losses > CLI_DIST_MAX_LOSSES)
        n_losses = CLI_DIST_MAX_LOSSES;
    d->p = p;
    d->source = source;
    d->n_losses = n_losses;
    for (int k = 0; k < n_losses; k++) {
        d->losses[k] = loss_names[k];
        d->loss[k] = NAN;
    }
#ifdef CLAPP_HAVE_MPI
    return clapp_pipeline_set_data_parallel(p, d->rank, d->ranks, learn ? reduce_grads : NULL, d);
#else
    (void)learn;
    return CLAPP_E_UNSUPPORTED;
#endif
}

int cli_dist_agree(cli_dist *d, int status)
{
#ifdef CLAPP_HAVE_MPI
    if (d->ranks > 1) {
        int worst = status;
        MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        return worst;
    }
#else
    (void)d;
#endif
    return status;
}

void cli_dist_sum(cli_dist *d, double *v, int n)
{
#ifdef CLAPP_HAVE_MPI
    if (d->ranks > 1)
        MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
    (void)d;
    (void)v;
    (void)n;
#endif
}

int cli_dist_check_weights(cli_dist *d, uint64_t *hash)
{
    uint64_t h = 0xCBF29CE484222325ull;   /* FNV-1a over the values' bytes */
    for (int32_t i = 0; d->grads && i < d->n_grads; i++) {
        const unsigned char *b = (const unsigned char *)d->grads[i].value;
        for (int64_t k = 0; k < d->grads[i].numel * (int64_t)sizeof(float); k++)
            h = (h ^ b[k]) * 0x100000001B3ull;
    }
    *hash = h;
#ifdef CLAPP_HAVE_MPI
    if (d->ranks > 1) {
        /* min of h and of ~h: equal everywhere iff min(h) == ~min(~h) = max(h) */
        uint64_t mine[2] = {h, ~h}, all[2];
        MPI_Allreduce(mine, all, 2, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
        if (all[0] != ~all[1]) {
            if (d->rank == 0)
                fprintf(stderr, "clapp: error: the ranks hold different weights after training "
                        "(hashes from %016llx to %016llx)\n", (unsigned long long)all[0],
                        (unsigned long long)~all[1]);
            return 0;
        }
    }
#endif
    return 1;
}

void cli_dist_abort(cli_dist *d, const char *message)
{
    fprintf(stderr, "clapp: error: rank %d of %d: %s; stopping every rank\n", d->rank, d->ranks, message);
#ifdef CLAPP_HAVE_MPI
    if (d->ranks > 1)
        MPI_Abort(MPI_COMM_WORLD, CLI_FAILED);
#endif
}
