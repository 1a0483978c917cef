/* bench_allreduce — what `mpirun -np N clapp train` sends per step, and how
 * long this machine's MPI takes for it.
 *
 *   mpirun -np N bench_allreduce [PIPE] [--set NAME.KEY=VALUE]... [--floats N] [--reps R] [--warmup W] [--json]
 *
 * With PIPE (default pipelines/audio_clapp.pipe) the learning tensors of the
 * pipeline's graph are listed per element (what the clapp command's reducer
 * packs: every optimizer slot, then a small tail of counters and losses) and
 * their floats are the message; --floats N times a message of N floats
 * instead. Each repetition is one MPI_Allreduce (sum, in place, MPI_FLOAT)
 * of that buffer, timed between barriers; reported: the median and the
 * minimum time, the algorithm bandwidth (bytes / time) and the bus
 * bandwidth (x 2 (N-1) / N, what a ring moves per rank). Rank 0 prints.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"

#define MAX_ELEMS 256

static const clapp_param_value *val(const clapp_pipe_elem *pe, const char *key)
{
    return clapp_param_find(pe->values, pe->desc->n_params, key);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The learning floats of PIPE's graph, per element (names[k], floats[k]). */
static int count_pipeline(const char *pipe, char **sets, int n_sets, int64_t *total, char names[][64],
                          int64_t *floats, int *n_elems, char *err, size_t errlen)
{
    clapp_host host = {sizeof(clapp_host), NULL, NULL};
    clapp_registry reg;
    clapp_pipeline_desc pd;
    clapp_graph g;
    clapp_graph_params gp;
    clapp_stream_info src;
    int rc;

    memset(&pd, 0, sizeof pd);
    memset(&g, 0, sizeof g);
    if ((rc = clapp_registry_init_default(&reg, &host)) < 0)
        return rc;
    if ((rc = clapp_pipedesc_parse_file(&pd, pipe, err, errlen)) < 0)
        goto done;
    for (int i = 0; i < n_sets; i++)
        if ((rc = clapp_pipedesc_set(&pd, sets[i], err, errlen)) < 0)
            goto done;
    if ((rc = clapp_pipedesc_resolve(&pd, &reg, err, errlen)) < 0)
        goto done;
    memset(&src, 0, sizeof src);
    src.ndim = 3;
    src.shape[0] = val(&pd.elems[0], "lanes")->i;
    src.shape[1] = 1;
    src.shape[2] = val(&pd.elems[0], "block")->i;
    src.rate = (double)val(&pd.elems[0], "rate")->i;
    if (val(&pd.elems[0], "kind")->i == 1) {   /* kind=video */
        src.ndim = 5;
        src.shape[1] = val(&pd.elems[0], "color")->i == 1 ? 3 : 1;
        src.shape[3] = val(&pd.elems[0], "height")->i;
        src.shape[4] = val(&pd.elems[0], "width")->i;
        src.rate = val(&pd.elems[0], "fps")->f;
    }
    clapp_graph_default_params(&gp);
    if ((rc = clapp_graph_create(&g, &pd, &src, &gp, &host, err, errlen)) < 0)
        goto done;
    *total = 0;
    *n_elems = 0;
    for (int i = 1; i < g.n && *n_elems < MAX_ELEMS; i++) {
        const clapp_node *nd = &g.nodes[i];
        int64_t f = 0;
        for (int32_t k = nd->optim_first; k < nd->optim_first + nd->optim_count; k++)
            f += clapp_tensor_numel(g.optim.slots[k].value);
        if (!f)
            continue;
        snprintf(names[*n_elems], 64, "%s", nd->pe->name);
        floats[(*n_elems)++] = f;
        *total += f;
    }
done:
    clapp_graph_destroy(&g);
    clapp_pipedesc_free(&pd);
    clapp_registry_free(&reg);
    return rc;
}

int main(int argc, char **argv)
{
    const char *pipe = NULL;
    int64_t n = 0, floats[MAX_ELEMS];
    int reps = 10, warmup = 2, json = 0, rank = 0, ranks = 1, n_elems = 0, status = 0, n_sets = 0;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    static char names[MAX_ELEMS][64];
    char err[2048] = "";
    float *buf = NULL;
    double *times = NULL;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--floats") && i + 1 < argc)
            n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && sets)
            sets[n_sets++] = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] != '-' && !pipe)
            pipe = argv[i];
        else {
            if (rank == 0)
                fprintf(stderr, "usage: mpirun -np N bench_allreduce [PIPE] [--set NAME.KEY=VALUE]... [--floats N] "
                        "[--reps R] [--warmup W] [--json]\n");
            MPI_Finalize();
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    if (n <= 0) {
        if (!pipe)
            pipe = "pipelines/audio_clapp.pipe";
        if (count_pipeline(pipe, sets, n_sets, &n, names, floats, &n_elems, err, sizeof err) < 0) {
            if (rank == 0)
                fprintf(stderr, "bench_allreduce: %s\n", err[0] ? err : "cannot build the graph");
            MPI_Finalize();
            return 1;
        }
        n += 4;   /* the reducer's tail: count, stop, steps, lanes (and 2 per loss, left out) */
    }
    if (n > INT32_MAX) {
        if (rank == 0)
            fprintf(stderr, "bench_allreduce: %lld floats: one MPI count is an int\n", (long long)n);
        MPI_Finalize();
        return 1;
    }
    buf = malloc((size_t)n * sizeof *buf);
    times = calloc((size_t)reps, sizeof *times);
    if (!buf || !times) {
        fprintf(stderr, "bench_allreduce: out of memory for %lld floats\n", (long long)n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (int64_t i = 0; i < n; i++)
        buf[i] = (float)((i * 7 + rank) % 13) * 1e-3f;
    for (int r = 0; r < warmup + reps; r++) {
        double t0, dt, worst;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        dt = MPI_Wtime() - t0;
        MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (r >= warmup)
            times[r - warmup] = worst;
        for (int64_t i = 0; i < n; i++)   /* keep the values small */
            buf[i] *= 1.0f / (float)ranks;
    }
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    if (rank == 0) {
        const double bytes = (double)n * sizeof(float), med = times[reps / 2], best = times[0];
        const double algbw = bytes / med, busbw = algbw * 2.0 * (ranks - 1) / (ranks > 1 ? ranks : 1);
        char host[256] = "";
        int hlen = 0;
        MPI_Get_processor_name(host, &hlen);
        if (json) {
            printf("{\"ranks\":%d,\"floats\":%lld,\"bytes\":%.0f,\"reps\":%d,\"median_s\":%.6f,\"min_s\":%.6f,"
                   "\"algbw_GBps\":%.4f,\"busbw_GBps\":%.4f,\"pipeline\":%s%s%s,\"elements\":{",
                   ranks, (long long)n, bytes, reps, med, best, algbw * 1e-9, busbw * 1e-9,
                   pipe ? "\"" : "", pipe ? pipe : "null", pipe ? "\"" : "");
            for (int k = 0; k < n_elems; k++)
                printf("%s\"%s\":%lld", k ? "," : "", names[k], (long long)floats[k]);
            printf("}}\n");
        } else {
            if (n_elems) {
                printf("learning floats of %s per element (what each step reduces):\n", pipe);
                for (int k = 0; k < n_elems; k++)
                    printf("  %-12s %12lld\n", names[k], (long long)floats[k]);
            }
            printf("allreduce of %lld floats (%.1f MB), %d ranks on %s, %d reps: median %.4f s, min %.4f s; "
                   "algbw %.2f GB/s, busbw %.2f GB/s\n", (long long)n, bytes * 1e-6, ranks, host, reps, med, best,
                   algbw * 1e-9, busbw * 1e-9);
        }
    }
    free(buf);
    free(times);
    free(sets);
    MPI_Finalize();
    return status;
}
