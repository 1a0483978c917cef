/* Setting up and streaming a pipeline over a manifest. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The optimizer and diagnostics options of train: name, value. Returns
 * CLI_OK, or CLI_USAGE after naming the option and the allowed range. */
static int parse_optim_option(cli_options *o, const char *a, const char *v)
{
    char *end = NULL;
    double x;
    if (!strcmp(a, "--warmup") || !strcmp(a, "--diag-every")) {
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || n < 0) {
            fprintf(stderr, "clapp: error: %s %s: expected a number of blocks >= 0 (0: off)\n", a, v);
            return CLI_USAGE;
        }
        *(!strcmp(a, "--warmup") ? &o->warmup : &o->diag_every) = n;
        return CLI_OK;
    }
    x = strtod(v, &end);
    if (!*v || *end) {
        fprintf(stderr, "clapp: error: %s %s: expected a number\n", a, v);
        return CLI_USAGE;
    }
    if (!strcmp(a, "--adam-eps")) {
        if (!(x > 0)) {
            fprintf(stderr, "clapp: error: --adam-eps %s: expected a number > 0\n", v);
            return CLI_USAGE;
        }
        o->adam_eps = x;
    } else if (!strcmp(a, "--adam-beta1") || !strcmp(a, "--adam-beta2")) {
        if (!(x >= 0 && x < 1)) {
            fprintf(stderr, "clapp: error: %s %s: expected a number in [0, 1)\n", a, v);
            return CLI_USAGE;
        }
        *(!strcmp(a, "--adam-beta1") ? &o->adam_beta1 : &o->adam_beta2) = x;
    } else {
        if (!(x >= 0)) {
            fprintf(stderr, "clapp: error: %s %s: expected a number >= 0 (0: off)\n", a, v);
            return CLI_USAGE;
        }
        *(!strcmp(a, "--clip") ? &o->clip : &o->weight_decay) = x;
    }
    return CLI_OK;
}

int cli_options_parse(cli_options *o, int argc, char **argv, int *help)
{
    memset(o, 0, sizeof *o);
    o->epochs = 1;
    o->seed = 1;
    o->verbosity = 1;
    o->lr = -1;
    o->adam_eps = 1e-8;    /* PyTorch's Adam defaults, the paper's setting */
    o->adam_beta1 = 0.9;
    o->adam_beta2 = 0.999;
    o->diag_every = 16;
    *help = 0;
    o->sets = calloc((size_t)argc + 1, sizeof *o->sets);
    o->probes = calloc((size_t)argc + 1, sizeof *o->probes);
    if (!o->sets || !o->probes)
        return CLI_FAILED;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *help = 1;
            return CLI_OK;
        } else if (!strcmp(a, "--dump-graph")) {
            o->dump_graph = 1;
        } else if (!strcmp(a, "--resume")) {
            o->resume = 1;
        } else if (!strcmp(a, "--random-init")) {
            o->random_init = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            o->verbosity = 0;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            o->verbosity = 2;
        } else if (!strcmp(a, "--warmup") || !strcmp(a, "--diag-every") || !strcmp(a, "--clip") ||
                   !strcmp(a, "--adam-eps") || !strcmp(a, "--adam-beta1") ||
                   !strcmp(a, "--adam-beta2") || !strcmp(a, "--weight-decay")) {
            if (!v) {
                fprintf(stderr, "clapp: error: %s needs a value\n", a);
                return CLI_USAGE;
            }
            if (parse_optim_option(o, a, argv[++i]) != CLI_OK)
                return CLI_USAGE;
        } else if (!strcmp(a, "--data") || !strcmp(a, "--set") || !strcmp(a, "--epochs") ||
                   !strcmp(a, "--seed") || !strcmp(a, "--lr") || !strcmp(a, "--metrics") ||
                   !strcmp(a, "--checkpoint") || !strcmp(a, "--checkpoint-every") ||
                   !strcmp(a, "--train") || !strcmp(a, "--test") || !strcmp(a, "--json") ||
                   !strcmp(a, "--probe") || !strcmp(a, "--val") || !strcmp(a, "--probe-seeds") ||
                   !strcmp(a, "--probe-lrs") || !strcmp(a, "--budget-minutes") ||
                   !strcmp(a, "--snapshots")) {
            char *end = NULL;
            if (!v) {
                fprintf(stderr, "clapp: error: %s needs a value\n", a);
                return CLI_USAGE;
            }
            i++;
            if (!strcmp(a, "--data")) {
                o->data = v;
            } else if (!strcmp(a, "--metrics")) {
                o->metrics = v;
            } else if (!strcmp(a, "--checkpoint")) {
                o->checkpoint = v;
            } else if (!strcmp(a, "--probe")) {
                o->probes[o->n_probes++] = (char *)v;
            } else if (!strcmp(a, "--train")) {
                o->train = v;
            } else if (!strcmp(a, "--test")) {
                o->test = v;
            } else if (!strcmp(a, "--val")) {
                o->val = v;
            } else if (!strcmp(a, "--probe-lrs")) {
                o->probe_lrs = v;
            } else if (!strcmp(a, "--budget-minutes")) {
                double m = strtod(v, &end);
                if (*end || !(m > 0) || m > 1e7) {
                    fprintf(stderr, "clapp: error: --budget-minutes %s: expected a number of minutes > 0\n", v);
                    return CLI_USAGE;
                }
                o->budget_s = 60 * m;
            } else if (!strcmp(a, "--snapshots")) {
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 1000) {
                    fprintf(stderr, "clapp: error: --snapshots %s: expected an integer in [1, 1000]\n", v);
                    return CLI_USAGE;
                }
                o->snapshots = (int)n;
            } else if (!strcmp(a, "--probe-seeds")) {
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 64) {
                    fprintf(stderr, "clapp: error: --probe-seeds %s: expected an integer in [1, 64]\n", v);
                    return CLI_USAGE;
                }
                o->probe_seeds = (int)n;
            } else if (!strcmp(a, "--json")) {
                o->json = v;
            } else if (!strcmp(a, "--checkpoint-every")) {
                long long e = strtoll(v, &end, 10);
                if (*end || e < 1) {
                    fprintf(stderr, "clapp: error: --checkpoint-every %s: expected a number of blocks >= 1\n", v);
                    return CLI_USAGE;
                }
                o->checkpoint_every = e;
            } else if (!strcmp(a, "--set")) {
                o->sets[o->n_sets++] = (char *)v;
            } else if (!strcmp(a, "--epochs")) {
                long e = strtol(v, &end, 10);
                if (*end || e < 1 || e > 1000000) {
                    fprintf(stderr, "clapp: error: --epochs %s: expected an integer in [1, 1000000]\n", v);
                    return CLI_USAGE;
                }
                o->epochs = (int)e;
                o->epochs_given = 1;
            } else if (!strcmp(a, "--seed")) {
                unsigned long long s = strtoull(v, &end, 10);
                if (*end || !*v) {
                    fprintf(stderr, "clapp: error: --seed %s: expected a non-negative integer\n", v);
                    return CLI_USAGE;
                }
                o->seed = s;
            } else {
                double lr = strtod(v, &end);
                if (*end || !(lr >= 0)) {
                    fprintf(stderr, "clapp: error: --lr %s: expected a number >= 0\n", v);
                    return CLI_USAGE;
                }
                o->lr = lr;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "clapp: error: unknown option '%s'\n", a);
            return CLI_USAGE;
        } else if (!o->pipe) {
            o->pipe = a;
        } else {
            fprintf(stderr, "clapp: error: unexpected argument '%s'\n", a);
            return CLI_USAGE;
        }
    }
    if (!o->pipe) {
        fprintf(stderr, "clapp: error: no pipeline file given\n");
        return CLI_USAGE;
    }
    return CLI_OK;
}

static void source_params_from(clapp_source_params *sp, const clapp_pipe_elem *pe,
                               const cli_options *o)
{
    clapp_source_params_from_values(sp, pe->values, pe->desc->n_params);
    sp->shuffle = o->shuffle || sp->shuffle;
    sp->seed = o->seed;
    sp->epochs = o->epochs;
}

/* (Re)open the data: manifest and source; the graph is kept. */
int cli_session_use_data(cli_session *s, const cli_options *o, const char *data, int epochs,
                         int force_stream)
{
    char err[2048] = "";
    clapp_source_params sp;
    int rc;

    clapp_source_destroy(s->src);
    s->src = NULL;
    clapp_manifest_free(&s->manifest);
    if (clapp_manifest_load(&s->manifest, data, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        return CLI_USAGE;
    }
    source_params_from(&sp, &s->pd.elems[0], o);
    sp.epochs = epochs;
    if (force_stream) {
        /* eval and extract read the media as they are: augmentation is for
         * self-supervised training only */
        sp.mode = CLAPP_SOURCE_STREAM;
        memset(&sp.aug, 0, sizeof sp.aug);
    }
    sp.classes = &s->classes;
    rc = clapp_source_create(&s->src, &sp, &s->manifest, &s->labels, &s->host);
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s: cannot set up the source (status %d)\n", data, rc);
        return CLI_FAILED;
    }
    return CLI_OK;
}

int cli_session_open(cli_session *s, const cli_options *o, int learn)
{
    char err[2048] = "";
    clapp_stream_info info;
    clapp_graph_params gp;
    int rc;

    memset(s, 0, sizeof *s);
    cli_host_init(&s->host, o->verbosity);
    clapp_labelset_init_cmu41(&s->labels);
    if (clapp_registry_init_default(&s->reg, &s->host) < 0) {
        fprintf(stderr, "clapp: error: cannot set up the element registry\n");
        return CLI_FAILED;
    }
    rc = cli_pipeline_load(&s->pd, o->pipe, o->sets, o->n_sets, o->probes, o->n_probes, &s->reg);
    if (rc != CLI_OK)
        return rc;
    if (s->pd.n < 1 || s->pd.elems[0].desc->kind != CLAPP_KIND_SOURCE) {
        fprintf(stderr, "clapp: error: %s:%d:%d: a pipeline starts with 'source'\n", s->pd.file,
                s->pd.n ? s->pd.elems[0].line : 1, s->pd.n ? s->pd.elems[0].col : 1);
        return CLI_USAGE;
    }
    if (o->dump_graph)
        return CLI_OK;
    if (!o->data) {
        fprintf(stderr, "clapp: error: no data: give --data MANIFEST\n");
        return CLI_USAGE;
    }
    rc = cli_session_use_data(s, o, o->data, o->epochs, 0);
    if (rc != CLI_OK)
        return rc;
    clapp_source_info(s->src, &info);
    clapp_graph_default_params(&gp);
    gp.learn = learn;
    gp.seed = o->seed;
    if (o->lr >= 0)
        gp.optim.lr = o->lr;
    if (learn) {
        gp.optim.eps = o->adam_eps;
        gp.optim.beta1 = o->adam_beta1;
        gp.optim.beta2 = o->adam_beta2;
        gp.optim.warmup = o->warmup;
        gp.optim.clip = o->clip;
        gp.optim.weight_decay = o->weight_decay;
        gp.optim.decoupled_wd = o->weight_decay > 0;   /* AdamW's; L2 only through the library */
        gp.diag_every = o->diag_every;
    }
    rc = clapp_graph_create(&s->graph, &s->pd, &info, &gp, &s->host, err, sizeof err);
    s->have_graph = 1;
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        return rc == CLAPP_E_NOMEM ? CLI_FAILED : CLI_USAGE;
    }
    return CLI_OK;
}

static int session_save_to(cli_session *s, const char *path)
{
    clapp_checkpoint_options co = {1, 1};
    char err[2048] = "";
    if (clapp_checkpoint_save(&s->graph, path, &co, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s (the previous checkpoint, if any, is intact)\n", err);
        return CLI_FAILED;
    }
    return CLI_OK;
}

int cli_session_save(cli_session *s, const cli_options *o)
{
    return session_save_to(s, o->checkpoint);
}

/* Snapshot k of a budgeted run: PATH.snapK.safetensors beside the checkpoint
 * (the .safetensors suffix of PATH, if any, moves to the end), and a
 * "snapshot" line in the metrics with the time and audio it took. */
static int session_snapshot(cli_session *s, const cli_options *o, int k, double secs, int64_t steps)
{
    const char *ext = ".safetensors";
    size_t n = strlen(o->checkpoint), e = strlen(ext);
    char *path = malloc(n + 32);
    int status;
    if (!path)
        return CLI_FAILED;
    if (n > e && !strcmp(o->checkpoint + n - e, ext))
        snprintf(path, n + 32, "%.*s.snap%d%s", (int)(n - e), o->checkpoint, k, ext);
    else
        snprintf(path, n + 32, "%s.snap%d", o->checkpoint, k);
    status = session_save_to(s, path);
    if (status == CLI_OK && s->metrics) {
        fprintf(s->metrics, "{\"event\":\"snapshot\",\"k\":%d,\"of\":%d,\"blocks\":%lld,\"seconds\":%.3f,"
                "\"media_seconds\":%.3f,\"path\":\"%s\"}\n", k, o->snapshots, (long long)s->graph.blocks, secs,
                s->graph.source_info.rate > 0 ? (double)steps / s->graph.source_info.rate : 0.0, path);
        fflush(s->metrics);
    }
    free(path);
    return status;
}

int cli_session_load(cli_session *s, const char *path, int with_optimizer)
{
    clapp_checkpoint_options co = {with_optimizer, 1};
    char err[2048] = "";
    if (clapp_checkpoint_load(&s->graph, path, &co, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        return CLI_USAGE;
    }
    return CLI_OK;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* One JSON line per block: loss of every loss element and throughput. */
static void emit_block_metrics(cli_session *s, const clapp_block *blk, double secs, int64_t steps)
{
    const clapp_graph *g = &s->graph;
    int64_t windows = 0;
    int first = 1;
    for (int32_t b = 0; b < blk->lanes; b++)
        windows += blk->lane[b].len > 0;
    fprintf(s->metrics, "{\"event\":\"block\",\"block\":%lld,\"seconds\":%.3f,\"lanes_active\":%lld,"
            "\"media_seconds\":%.3f,\"loss\":{", (long long)g->blocks, secs, (long long)windows,
            g->source_info.rate > 0 ? (double)steps / g->source_info.rate : 0.0);
    for (int i = 1; i < g->n; i++) {
        const clapp_node *nd = &g->nodes[i];
        if (nd->kind != CLAPP_KIND_LOSS)
            continue;
        if (nd->last.pairs > 0)
            fprintf(s->metrics, "%s\"%s\":%.6g", first ? "" : ",", nd->pe->name, nd->last.loss);
        else
            fprintf(s->metrics, "%s\"%s\":null", first ? "" : ",", nd->pe->name);
        first = 0;
    }
    fprintf(s->metrics, "}");
    /* On diagnostic blocks: per element, the feature statistics of layers
     * and the norms of learning elements' gradient, update and weights. */
    if (g->diag_block == g->blocks && g->blocks > 0) {
        fprintf(s->metrics, ",\"diag\":{\"seconds\":%.4f", g->diag_seconds);
        if (g->optim.p.warmup > 0)
            fprintf(s->metrics, ",\"lr_scale\":%.6g", clapp_optim_lr_scale(&g->optim.p, g->optim.t));
        for (int i = 1; i < g->n; i++) {
            const clapp_node *nd = &g->nodes[i];
            const char *sep = "";
            if (!nd->diag.has_out && !nd->diag.has_grad)
                continue;
            fprintf(s->metrics, ",\"%s\":{", nd->pe->name);
            if (nd->diag.has_out) {
                fprintf(s->metrics, "\"dead\":%.4f,\"pr\":%.4f", nd->diag.out.dead, nd->diag.out.pr);
                sep = ",";
            }
            if (nd->diag.has_grad)
                fprintf(s->metrics, "%s\"grad_norm\":%.6g,\"update_norm\":%.6g,\"weight_norm\":%.6g",
                        sep, nd->diag.grad_norm, nd->diag.update_norm, nd->diag.weight_norm);
            fprintf(s->metrics, "}");
        }
        fprintf(s->metrics, "}");
    }
    fprintf(s->metrics, "}\n");
    fflush(s->metrics);
}

/* The closing line: mean loss per element over the run, time share per element. */
static void emit_summary(cli_session *s, double secs, int64_t steps)
{
    const clapp_graph *g = &s->graph;
    const double media = g->source_info.rate > 0 ? (double)steps / g->source_info.rate : 0.0;
    double total = 0;
    int first = 1;
    for (int i = 1; i < g->n; i++)
        total += g->nodes[i].seconds;
    fprintf(s->metrics, "{\"event\":\"summary\",\"blocks\":%lld,\"seconds\":%.3f,"
            "\"media_seconds\":%.3f,\"media_seconds_per_second\":%.3f,\"mean_loss\":{",
            (long long)g->blocks, secs, media, secs > 0 ? media / secs : 0.0);
    for (int i = 1; i < g->n; i++) {
        const clapp_node *nd = &g->nodes[i];
        if (nd->kind != CLAPP_KIND_LOSS)
            continue;
        if (nd->loss_count)
            fprintf(s->metrics, "%s\"%s\":%.6g", first ? "" : ",", nd->pe->name,
                    nd->loss_sum / (double)nd->loss_count);
        else
            fprintf(s->metrics, "%s\"%s\":null", first ? "" : ",", nd->pe->name);
        first = 0;
    }
    fprintf(s->metrics, "},\"time_share\":{");
    for (int i = 1; i < g->n; i++)
        fprintf(s->metrics, "%s\"%s\":%.4f", i > 1 ? "," : "", g->nodes[i].pe->name,
                total > 0 ? g->nodes[i].seconds / total : 0.0);
    fprintf(s->metrics, "}}\n");
    fflush(s->metrics);
}

static void show_progress(cli_session *s, double secs, int64_t steps)
{
    const clapp_graph *g = &s->graph;
    fprintf(stderr, "\rblock %lld  %.1f s media  %.1fx real time", (long long)g->blocks,
            g->source_info.rate > 0 ? (double)steps / g->source_info.rate : 0.0,
            secs > 0 && g->source_info.rate > 0 ? (double)steps / g->source_info.rate / secs : 0.0);
    for (int i = 1; i < g->n; i++)
        if (g->nodes[i].kind == CLAPP_KIND_LOSS && g->nodes[i].loss_count)
            fprintf(stderr, "  %s %.4f", g->nodes[i].pe->name,
                    g->nodes[i].loss_sum / (double)g->nodes[i].loss_count);
    fprintf(stderr, "   ");
    fflush(stderr);
}

int cli_session_run(cli_session *s, const cli_options *o)
{
    char err[2048] = "";
    const clapp_block *blk;
    struct timespec t0, t1;
    int64_t steps = 0;
    int rc, status = CLI_OK, next_snap = 1;
    double secs;

    if (o->snapshots > 0 && (!(o->budget_s > 0) || !o->checkpoint || !s->graph.p.learn)) {
        fprintf(stderr, "clapp: error: --snapshots needs training with --budget-minutes and --checkpoint\n");
        return CLI_USAGE;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = clapp_source_start(s->src);
    if (rc < 0) {
        fprintf(stderr, "clapp: error: cannot start decoding (status %d)\n", rc);
        return CLI_FAILED;
    }
    /* Resume: the source is a pure function of (seed, epoch, manifest), so
     * decoding and dropping the blocks already learned from lands exactly
     * where the checkpoint was taken. Costs decoding time, no compute. In
     * window mode every block starts fresh sequences, so the result is
     * bit-identical; in stream mode the layers restart their context. */
    for (int64_t k = 0; k < s->skip_blocks && (rc = clapp_source_next(s->src, &blk)) > 0; k++)
        for (int32_t b = 0; b < blk->lanes; b++)
            steps += blk->lane[b].len;
    if (s->skip_blocks > 0 && rc <= 0) {
        fprintf(stderr, "clapp: error: cannot resume: the data ends before block %lld of the checkpoint "
                "(another manifest, --epochs or --seed?)\n", (long long)s->skip_blocks);
        return CLI_USAGE;
    }
    while ((rc = clapp_source_next(s->src, &blk)) > 0) {
        for (int32_t b = 0; b < blk->lanes; b++)
            steps += blk->lane[b].len;
        rc = clapp_graph_process(&s->graph, blk, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "clapp: error: %s\n", err);
            status = CLI_FAILED;
            break;
        }
        if (s->metrics)
            emit_block_metrics(s, blk, seconds_since(&t0), steps);
        if (s->graph.p.learn && o->checkpoint && o->checkpoint_every > 0 &&
            s->graph.blocks % o->checkpoint_every == 0 && cli_session_save(s, o) != CLI_OK)
            status = CLI_FAILED;
        if (s->progress && s->graph.blocks % 4 == 0)
            show_progress(s, seconds_since(&t0), steps);
        /* --budget-minutes: a wall-clock budget, snapshots at k/N of it */
        if (o->budget_s > 0) {
            double el = seconds_since(&t0);
            while (status == CLI_OK && next_snap <= o->snapshots &&
                   el >= o->budget_s * next_snap / o->snapshots)
                status = session_snapshot(s, o, next_snap++, el, steps);
            if (el >= o->budget_s || status != CLI_OK)
                break;
        }
    }
    if (s->progress)
        fprintf(stderr, "\n");
    if (rc < 0 && status == CLI_OK) {
        fprintf(stderr, "clapp: error: the source failed (status %d)\n", rc);
        status = CLI_FAILED;
    }
    if (s->graph.p.learn && o->checkpoint && status == CLI_OK && cli_session_save(s, o) != CLI_OK)
        status = CLI_FAILED;
    if (clapp_graph_finish(&s->graph, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        status = CLI_FAILED;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (s->metrics)
        emit_summary(s, secs, steps);
    {
        int32_t failed = clapp_source_failed_count(s->src);
        int32_t done = clapp_source_done_count(s->src);
        double rate = s->graph.source_info.rate;
        if (o->verbosity > 0)
            fprintf(stderr, "clapp: %d file(s) processed, %d failed; %lld blocks, %.1f s of media "
                    "in %.2f s (%.1fx real time)\n", done, failed, (long long)s->graph.blocks,
                    rate > 0 ? (double)steps / rate : 0.0, secs,
                    secs > 0 && rate > 0 ? (double)steps / rate / secs : 0.0);
        if (failed > 0 && status == CLI_OK) {
            fprintf(stderr, "clapp: error: %d of %d file(s) could not be read (see above)\n",
                    failed, done + failed);
            status = CLI_FAILED;
        }
    }
    return status;
}

void cli_session_close(cli_session *s)
{
    if (s->metrics && s->metrics != stdout)
        fclose(s->metrics);
    if (s->have_graph)
        clapp_graph_destroy(&s->graph);
    clapp_source_destroy(s->src);
    clapp_labelset_free(&s->labels);
    clapp_labelset_free(&s->classes);
    clapp_manifest_free(&s->manifest);
    clapp_pipeline_free(&s->pd);
    clapp_registry_free(&s->reg);
}
