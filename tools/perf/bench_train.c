/* bench_train — time training steps of a pipeline on synthetic blocks and
 * compare the achieved GFLOP/s with the machine's sgemm peak, measured in the
 * same run.
 *
 *   bench_train PIPE [--steps N] [--warmup N] [--set NAME.KEY=VALUE]... [--frozen] [--json]
 *
 * --frozen: inference only (learning off: layers forward, loss elements
 * skipped), the streaming feature-extraction cost; FLOPs count the forward.
 *
 * The blocks are B lanes of one window each (SEQ_START|SEQ_END), filled with a
 * deterministic speech-like signal (harmonics with a drifting pitch plus
 * noise; video sources: drifting gratings plus noise), so the decoder is not
 * part of the measurement. FLOPs are counted analytically for conv1d, conv3d
 * and gru_eprop layers and clapp loss elements (multiply-add = 2; the video
 * form of the loss reports the GEMMs of its last call). */
#define _GNU_SOURCE
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "learning/loss_clapp.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Best of several runs of a large square-ish sgemm: the physical limit. */
static double sgemm_peak_gflops(void)
{
    const int m = 1536, n = 1536, k = 1536;
    float *a = aligned_alloc(64, sizeof(float) * m * k);
    float *b = aligned_alloc(64, sizeof(float) * k * n);
    float *c = aligned_alloc(64, sizeof(float) * m * n);
    double best = 0;
    for (int i = 0; i < m * k; i++)
        a[i] = (float)(((int64_t)i * 7919) % 1000) * 1e-3f;
    for (int i = 0; i < k * n; i++)
        b[i] = (float)(((int64_t)i * 104729) % 1000) * 1e-3f;
    for (int r = 0; r < 8; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
        double dt = now() - t0;
        double g = 2.0 * m * n * k / dt * 1e-9;
        if (g > best)
            best = g;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

static const clapp_param_value *val(const clapp_pipe_elem *pe, const char *key)
{
    return clapp_param_find(pe->values, pe->desc->n_params, key);
}

/* Analytic FLOPs of one training step (forward only when frozen). */
static double step_flops(const clapp_graph *g)
{
    double flops = 0;
    const int learn = g->p.learn;
    for (int i = 1; i < g->n; i++) {
        const clapp_node *nd = &g->nodes[i];
        if (nd->kind == CLAPP_KIND_LAYER && !strcmp(nd->desc->id, "conv1d")) {
            const clapp_stream_info *in = i > 1 ? &g->nodes[nd->producer >= 0 ? nd->producer : 0].out_info
                                                : &g->source_info;
            double B = (double)nd->out_info.shape[0], cout = (double)nd->out_info.shape[1];
            double cin = (double)in->shape[1], k = (double)val(nd->pe, "kernel")->i;
            double t = 0;
            for (int32_t b = 0; b < nd->out.lanes; b++)
                t += nd->out.lane[b].len;
            double one = 2.0 * cout * cin * k * t;
            flops += one;                          /* forward */
            if (learn && nd->learn)
                flops += one;                      /* weight gradient */
            if (learn && nd->prev_in_module >= 0)
                flops += one;                      /* input gradient */
            (void)B;
        } else if (nd->kind == CLAPP_KIND_LAYER && !strcmp(nd->desc->id, "conv3d")) {
            const clapp_stream_info *in = &g->nodes[nd->producer >= 0 ? nd->producer : 0].out_info;
            double kvol = (double)(val(nd->pe, "kt")->i * val(nd->pe, "kh")->i * val(nd->pe, "kw")->i);
            /* conv output positions before the pool */
            double ho = (double)((in->shape[3] + 2 * val(nd->pe, "ph")->i - val(nd->pe, "kh")->i) /
                                 val(nd->pe, "sh")->i + 1);
            double wo = (double)((in->shape[4] + 2 * val(nd->pe, "pw")->i - val(nd->pe, "kw")->i) /
                                 val(nd->pe, "sw")->i + 1);
            double t = 0;
            for (int32_t b = 0; b < nd->out.lanes; b++)
                t += nd->out.lane[b].len;
            double one = 2.0 * (double)nd->out_info.shape[1] * (double)in->shape[1] * kvol * t * ho * wo;
            flops += one;
            if (learn && nd->learn)
                flops += one;
            if (learn && nd->prev_in_module >= 0)
                flops += one;
        } else if (nd->kind == CLAPP_KIND_LOSS && clapp_loss_clapp_video(nd->loss_form, nd->loss_self)) {
            flops += clapp_loss_video_last_flops(clapp_loss_clapp_video(nd->loss_form, nd->loss_self));
        } else if (nd->kind == CLAPP_KIND_LAYER && !strcmp(nd->desc->id, "gru_eprop")) {
            const clapp_stream_info *in = &g->nodes[nd->producer >= 0 ? nd->producer : 0].out_info;
            double h = (double)nd->out_info.shape[1], d = (double)in->shape[1], t = 0;
            for (int32_t b = 0; b < nd->out.lanes; b++)
                t += nd->out.lane[b].len;
            double one = 2.0 * 3.0 * h * (d + h) * t;   /* the gate GEMMs of the forward pass */
            flops += one;
            if (learn && nd->learn)
                flops += 2.0 * one;                    /* gradient GEMMs and the trace (or BPTT) GEMMs */
        } else if (nd->kind == CLAPP_KIND_LOSS && learn &&
                   clapp_loss_clapp_params(nd->loss_form, nd->loss_self)) {
            const clapp_loss_params *lp = clapp_loss_clapp_params(nd->loss_form, nd->loss_self);
            const clapp_node *cp = &g->nodes[nd->producer];
            const clapp_node *zp = nd->target >= 0 ? &g->nodes[nd->target] : cp;
            double K = lp->steps, N = lp->negatives;
            double dz = (double)zp->out_info.shape[1], dc = (double)cp->out_info.shape[1];
            double contexts = 0;
            for (int32_t b = 0; b < cp->out.lanes; b++) {
                double len = cp->out.lane[b].len;
                if (lp->window > 0 && len > lp->window)
                    len = lp->window;
                contexts += len;
            }
            /* predictions, dW, dC: three GEMMs of K*dz x dc x contexts */
            flops += 3.0 * 2.0 * K * dz * dc * contexts;
            /* scores and z gradients of positives and negatives */
            flops += 2.0 * 2.0 * K * contexts * (N + 1) * dz;
        }
    }
    return flops;
}

/* Video: per lane a grating drifting in its own direction, plus noise, 0..1. */
static void fill_video(clapp_block *blk, uint64_t seed)
{
    const int64_t C = blk->x.shape[1], T = blk->x.shape[2], H = blk->x.shape[3], W = blk->x.shape[4];
    uint64_t s = seed * 6364136223846793005ull + 1;
    for (int32_t b = 0; b < blk->lanes; b++) {
        double ang = 0.7 * (double)b + 0.1 * (double)seed, vx = cos(ang), vy = sin(ang);
        for (int64_t c = 0; c < C; c++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t y = 0; y < H; y++)
                    for (int64_t x = 0; x < W; x++) {
                        s = s * 6364136223846793005ull + 1442695040888963407ull;
                        double noise = ((double)(s >> 40) / (double)(1ull << 24) - 0.5) * 0.1;
                        double ph = 0.4 * ((double)x * vx + (double)y * vy) - 0.5 * (double)t;
                        blk->x.data[(((int64_t)b * C + c) * T + t) * H * W + y * W + x] =
                            (float)(0.5 + 0.35 * sin(ph) + noise);
                    }
        blk->lane[b].seq_id = b;
        blk->lane[b].seq_name = "synthetic";
        blk->lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        blk->lane[b].len = (int32_t)T;
        blk->lane[b].pts = 0;
        blk->lane[b].class_label = -1;
    }
}

static void fill_signal(clapp_block *blk, uint64_t seed)
{
    if (blk->x.ndim == 5) {
        fill_video(blk, seed);
        return;
    }
    const int64_t T = blk->x.shape[2];
    for (int32_t b = 0; b < blk->lanes; b++) {
        float *x = blk->x.data + (int64_t)b * T;
        double f0 = 90.0 + 15.0 * (double)((seed + (uint64_t)b) % 11), phase = 0;
        uint64_t s = seed * 6364136223846793005ull + (uint64_t)b;
        for (int64_t t = 0; t < T; t++) {
            double f = f0 * (1.0 + 0.2 * sin(2 * M_PI * (double)t / 16000.0 * 3.0));
            phase += 2 * M_PI * f / 16000.0;
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            double noise = ((double)(s >> 40) / (double)(1ull << 24) - 0.5) * 0.05;
            x[t] = (float)(0.3 * sin(phase) + 0.15 * sin(2 * phase) + 0.08 * sin(3 * phase) + noise);
        }
        blk->lane[b].seq_id = b;
        blk->lane[b].seq_name = "synthetic";
        blk->lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        blk->lane[b].len = (int32_t)T;
        blk->lane[b].pts = 0;
        blk->lane[b].class_label = -1;
    }
}

int main(int argc, char **argv)
{
    const char *pipe = NULL;
    int steps = 10, warmup = 2, json = 0, frozen = 0, status = 1;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0;
    clapp_host host = {sizeof(clapp_host), NULL, NULL};
    clapp_registry reg;
    clapp_pipeline_desc pd;
    clapp_graph g;
    clapp_graph_params gp;
    clapp_stream_info src;
    clapp_block blk;
    char err[2048] = "";
    double *times = NULL;

    memset(&pd, 0, sizeof pd);
    memset(&g, 0, sizeof g);
    memset(&blk, 0, sizeof blk);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc)
            sets[n_sets++] = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--frozen"))
            frozen = 1;
        else if (argv[i][0] != '-' && !pipe)
            pipe = argv[i];
        else {
            fprintf(stderr, "usage: bench_train PIPE [--steps N] [--warmup N] [--set K=V]... [--frozen] [--json]\n");
            return 2;
        }
    }
    if (!pipe || steps < 1) {
        fprintf(stderr, "usage: bench_train PIPE [--steps N] [--warmup N] [--set K=V]... [--frozen] [--json]\n");
        return 2;
    }
    if (clapp_registry_init_beside_exe(&reg, &host, "lib/clapp/plugins") < 0)
        return 1;
    if (clapp_pipedesc_parse_file(&pd, pipe, err, sizeof err) < 0)
        goto fail;
    for (int i = 0; i < n_sets; i++)
        if (clapp_pipedesc_set(&pd, sets[i], err, sizeof err) < 0)
            goto fail;
    if (clapp_pipedesc_resolve(&pd, &reg, err, sizeof err) < 0)
        goto fail;

    memset(&src, 0, sizeof src);
    src.ndim = 3;
    src.shape[0] = val(&pd.elems[0], "lanes")->i;
    src.shape[1] = 1;
    src.shape[2] = val(&pd.elems[0], "block")->i;
    src.rate = (double)val(&pd.elems[0], "rate")->i;
    if (val(&pd.elems[0], "kind")->i == 1) {   /* kind=video: [B, C, T, H, W] frames */
        src.ndim = 5;
        src.shape[1] = val(&pd.elems[0], "color")->i == 1 ? 3 : 1;
        src.shape[3] = val(&pd.elems[0], "height")->i;
        src.shape[4] = val(&pd.elems[0], "width")->i;
        src.rate = val(&pd.elems[0], "fps")->f;
    }
    clapp_graph_default_params(&gp);
    gp.learn = !frozen;
    if (clapp_graph_create(&g, &pd, &src, &gp, &host, err, sizeof err) < 0)
        goto fail;
    blk.x.ndim = src.ndim;
    memcpy(blk.x.shape, src.shape, sizeof src.shape);
    if (clapp_tensor_alloc(&blk.x) < 0)
        goto fail;
    blk.lanes = (int32_t)src.shape[0];
    blk.lane = calloc((size_t)blk.lanes, sizeof *blk.lane);
    blk.rate = src.rate;
    times = calloc((size_t)steps, sizeof *times);
    if (!blk.lane || !times)
        goto fail;

    /* The peak is taken as the best of measurements spread over the run, so
     * that a busy moment of the machine does not inflate the ratio. */
    double peak = sgemm_peak_gflops();
    for (int s = 0; s < warmup + steps; s++) {
        double p = sgemm_peak_gflops();
        if (p > peak)
            peak = p;
        fill_signal(&blk, (uint64_t)s);
        if (s == warmup)
            for (int i = 0; i < g.n; i++)
                g.nodes[i].seconds = 0;
        double t0 = now();
        if (clapp_graph_process(&g, &blk, err, sizeof err) < 0)
            goto fail;
        if (s >= warmup)
            times[s - warmup] = now() - t0;
    }
    double peak2 = sgemm_peak_gflops();
    if (peak2 > peak)
        peak = peak2;
    double flops = step_flops(&g);
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = times[steps / 2], lo = times[0], hi = times[steps - 1];
    double gflops = flops / med * 1e-9;
    double total = 0;
    for (int i = 1; i < g.n; i++)
        total += g.nodes[i].seconds;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0, audio_rate = blk.lanes * (double)src.shape[2] / src.rate / med;
    if (json) {
        printf("{\"pipeline\":\"%s\",\"mode\":\"%s\",\"lanes\":%d,\"block\":%lld,\"steps\":%d,\"step_seconds_median\":%.5f,"
               "\"step_seconds_min\":%.5f,\"step_seconds_max\":%.5f,\"windows_per_second\":%.3f,"
               "\"audio_seconds_per_second\":%.2f,\"peak_rss_mb\":%.1f,"
               "\"gflop_per_step\":%.3f,\"gflops\":%.2f,\"sgemm_peak_gflops\":%.2f,\"fraction_of_peak\":%.4f,"
               "\"time_share\":{", pipe, frozen ? "frozen" : "train", blk.lanes, (long long)src.shape[2], steps, med, lo, hi,
               blk.lanes / med, audio_rate, rss_mb, flops * 1e-9, gflops, peak, gflops / peak);
        for (int i = 1; i < g.n; i++)
            printf("%s\"%s\":%.4f", i > 1 ? "," : "", g.nodes[i].pe->name, g.nodes[i].seconds / total);
        printf("}}\n");
    } else {
        printf("pipeline            %s\n", pipe);
        printf("lanes x block       %d x %lld %s\n", blk.lanes, (long long)src.shape[2],
               src.ndim == 5 ? "frames" : "samples");
        printf("%s       median %.3f s (min %.3f, max %.3f, %d steps)\n",
               frozen ? "frozen step  " : "training step", med, lo, hi, steps);
        printf("windows/s           %.2f\n", blk.lanes / med);
        printf("%s s per s       %.1f\n", src.ndim == 5 ? "video" : "audio", blk.lanes * (double)src.shape[2] / src.rate / med);
        printf("work per step       %.2f GFLOP\n", flops * 1e-9);
        printf("achieved            %.1f GFLOP/s\n", gflops);
        printf("sgemm peak          %.1f GFLOP/s (same run)\n", peak);
        printf("fraction of peak    %.1f%%\n", 100.0 * gflops / peak);
        printf("time share per element:\n");
        for (int i = 1; i < g.n; i++)
            printf("  %-12s %5.1f%%\n", g.nodes[i].pe->name, 100.0 * g.nodes[i].seconds / total);
    }
    status = 0;
fail:
    if (status)
        fprintf(stderr, "bench_train: %s\n", err[0] ? err : "failed");
    free(times);
    free(blk.lane);
    clapp_tensor_free(&blk.x);
    clapp_graph_destroy(&g);
    clapp_pipedesc_free(&pd);
    clapp_registry_free(&reg);
    free(sets);
    return status;
}
