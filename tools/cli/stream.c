/* clapp run and clapp train: a pipeline streamed over a manifest, on the
 * host API alone (include/clapp/clapp.h): set-up, the block loop, JSONL
 * metrics, checkpoints, snapshots and resume. */
#include "stream.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clapp/clapp.h"
#include "dist.h"
#include "interrupt.h"

typedef struct stream_run {
    clapp_pipeline *p;
    int             n;          /* elements */
    const char    **names;      /* [n] */
    int            *kinds;      /* [n] */
    double          rate;       /* the source's */
    int             warmup;     /* the lr ramp is on (metrics show lr_scale) */
    FILE           *metrics;    /* JSONL per block, or NULL */
    const char     *metrics_name; /* its path, or "standard output" */
    int             metrics_failed; /* a write to it failed (reported once) */
    int             progress;   /* human progress line on standard error */
    cli_dist        dist;       /* ranks (mpirun): rank 0 alone writes metrics and checkpoints */
    int32_t         files_done, files_failed;   /* several ranks: every rank's, at the end */
    const char    **losses;     /* the loss elements' names, in order */
    int             n_losses;
} stream_run;

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* After each metrics line: flushed, or one error naming the file (the run
 * then stops at the block boundary and exits 1). */
static int metrics_check(stream_run *r)
{
    if (r->metrics_failed)
        return -1;
    if (fflush(r->metrics) != 0 || ferror(r->metrics)) {
        fprintf(stderr, "clapp: error: %s: cannot write the metrics (%s); stopping the run\n", r->metrics_name,
                strerror(errno));
        r->metrics_failed = 1;
        return -1;
    }
    return 0;
}

static int api_error(const stream_run *r, int rc)
{
    fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(r->p));
    return rc == CLAPP_E_NOMEM || rc == CLAPP_E_INTERNAL ? CLI_FAILED : CLI_USAGE;
}

/* --probe NAME[:TYPE] is inserted as probe_NAME: the --set options naming
 * such an element apply after the insertion, the others at creation. */
static int names_probe(const cli_options *o, const char *set)
{
    for (int i = 0; i < o->n_probes; i++) {
        size_t n = strcspn(o->probes[i], ":");
        if (!strncmp(set, "probe_", 6) && !strncmp(set + 6, o->probes[i], n) && set[6 + n] == '.')
            return 1;
    }
    return 0;
}

static int has_element(const clapp_pipeline *p, const char *name)
{
    int n = 0;
    const char *e;
    clapp_pipeline_element_count(p, &n);
    for (int i = 0; i < n; i++)
        if (clapp_pipeline_element(p, i, &e, NULL, NULL) == CLAPP_OK && !strcmp(e, name))
            return 1;
    return 0;
}

int cli_apply_strict(clapp_pipeline *p)
{
    const char *source = NULL;
    char set[300];
    if (clapp_pipeline_element(p, 0, &source, NULL, NULL) < 0 ||
        snprintf(set, sizeof set, "%s.strict=true", source) >= (int)sizeof set ||
        clapp_pipeline_override(p, set) < 0) {
        fprintf(stderr, "clapp: error: --strict: %s\n", clapp_pipeline_error(p));
        return CLI_USAGE;
    }
    return CLI_OK;
}

int cli_pipeline_create(clapp_pipeline **p, const cli_options *o, int learn, cli_dist *d)
{
    clapp_options opt;
    const char **early = calloc((size_t)o->n_sets + 1, sizeof *early);
    int n_early = 0, rc;

    *p = NULL;
    if (!early)
        return CLI_FAILED;
    clapp_options_init(&opt);
    opt.seed = o->seed;
    opt.learn = learn;
    opt.lr = o->lr;
    opt.log_level = o->verbosity < 0 ? 0 : o->verbosity > 3 ? 3 : o->verbosity;
    if (learn) {
        opt.adam_eps = o->adam_eps;
        opt.adam_beta1 = o->adam_beta1;
        opt.adam_beta2 = o->adam_beta2;
        opt.warmup = o->warmup;
        opt.clip = o->clip;
        opt.weight_decay = o->weight_decay;
        opt.diag_every = o->diag_every;
    }
    if (d)
        cli_dist_log_options(d, &opt);
    for (int i = 0; i < o->n_sets; i++)
        if (!names_probe(o, o->sets[i]))
            early[n_early++] = o->sets[i];
    rc = clapp_pipeline_create_from_file(p, o->pipe, early, n_early, &opt);
    for (int i = 0; rc == CLAPP_OK && i < o->n_probes; i++) {
        char *spec = strdup(o->probes[i]), *colon, name[256];
        const char *type = "probe_phoneme";
        if (!spec) {
            rc = CLAPP_E_NOMEM;
            break;
        }
        if ((colon = strchr(spec, ':'))) {
            *colon = 0;
            type = colon + 1;
        }
        snprintf(name, sizeof name, "probe_%s", spec);
        if (!has_element(*p, spec)) {
            fprintf(stderr, "clapp: error: --probe %s: no element named '%s' in %s\n", o->probes[i], spec, o->pipe);
            free(spec);
            free(early);
            return CLI_USAGE;
        }
        rc = clapp_pipeline_add_element(*p, spec, type, name, NULL, 0);
        free(spec);
    }
    for (int i = 0; rc == CLAPP_OK && i < o->n_sets; i++)
        if (names_probe(o, o->sets[i]))
            rc = clapp_pipeline_override(*p, o->sets[i]);
    free(early);
    if (rc == CLAPP_OK)
        rc = clapp_pipeline_set_interrupt(*p, cli_interrupt_check, NULL);
    if (rc == CLAPP_OK && o->strict)
        return cli_apply_strict(*p);
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(*p));
        return rc == CLAPP_E_NOMEM || rc == CLAPP_E_INTERNAL ? CLI_FAILED : CLI_USAGE;
    }
    return CLI_OK;
}

/* The pipeline and the names and kinds of its elements. */
static int stream_create(stream_run *r, const cli_options *o, int learn)
{
    int status = cli_pipeline_create(&r->p, o, learn, &r->dist);
    if (status != CLI_OK)
        return status;
    r->warmup = learn && o->warmup > 0;
    if (clapp_pipeline_element_count(r->p, &r->n) < 0 || !(r->names = calloc((size_t)r->n, sizeof *r->names)) ||
        !(r->kinds = calloc((size_t)r->n, sizeof *r->kinds)) ||
        !(r->losses = calloc((size_t)r->n, sizeof *r->losses)))
        return CLI_FAILED;
    for (int i = 0; i < r->n && status == CLI_OK; i++) {
        if (clapp_pipeline_element(r->p, i, &r->names[i], NULL, &r->kinds[i]) < 0)
            status = CLI_FAILED;
        else if (r->kinds[i] == CLAPP_KIND_LOSS)
            r->losses[r->n_losses++] = r->names[i];
    }
    if (status == CLI_OK && r->dist.ranks > 1) {
        if (r->n_losses > CLI_DIST_MAX_LOSSES) {
            fprintf(stderr, "clapp: error: %s has %d loss elements; a run on several ranks takes at most %d\n",
                    o->pipe, r->n_losses, CLI_DIST_MAX_LOSSES);
            return CLI_USAGE;
        }
        if (cli_dist_attach(&r->dist, r->p, learn, r->names[0], r->losses, r->n_losses) < 0) {
            fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(r->p));
            return CLI_FAILED;
        }
    }
    return status;
}

/* The loss of loss element `name` in the last block: this process's, or on
 * several ranks the mean over them. 0 if it had none. */
static int block_loss(const stream_run *r, const char *name, double *loss)
{
    clapp_loss_info li;
    if (r->dist.ranks > 1) {
        for (int k = 0; k < r->n_losses; k++)
            if (r->losses[k] == name) {
                *loss = r->dist.loss[k];
                return !isnan(*loss);
            }
        return 0;
    }
    if (clapp_pipeline_loss(r->p, name, &li) < 0 || li.last_pairs <= 0)
        return 0;
    *loss = li.last;
    return 1;
}

/* Media seconds seen so far: this process's, or every rank's. */
static double media_seconds(const stream_run *r, const clapp_run_info *ri)
{
    double steps = r->dist.ranks > 1 ? r->dist.steps_total : (double)ri->steps;
    return r->rate > 0 ? steps / r->rate : 0.0;
}

/* One JSON line per block: loss of every loss element, throughput, diagnostics. */
static void emit_block_metrics(const stream_run *r, double secs)
{
    const clapp_block *src = NULL;
    clapp_run_info ri;
    int64_t windows = 0;
    int first = 1;
    clapp_pipeline_run_info(r->p, &ri);
    if (r->dist.ranks > 1)
        windows = (int64_t)r->dist.lanes;   /* every rank's */
    else if (clapp_pipeline_output(r->p, r->names[0], &src) == CLAPP_OK)
        for (int32_t b = 0; b < src->lanes; b++)
            windows += src->lane[b].len > 0;
    fprintf(r->metrics, "{\"event\":\"block\",\"block\":%lld,\"seconds\":%.3f,\"lanes_active\":%lld,"
            "\"media_seconds\":%.3f,", (long long)ri.blocks, secs, (long long)windows, media_seconds(r, &ri));
    if (r->dist.ranks > 1)
        fprintf(r->metrics, "\"ranks_active\":%lld,", (long long)r->dist.ranks_active);
    fprintf(r->metrics, "\"loss\":{");
    for (int i = 1; i < r->n; i++) {
        double loss;
        if (r->kinds[i] != CLAPP_KIND_LOSS)
            continue;
        if (block_loss(r, r->names[i], &loss))
            fprintf(r->metrics, "%s\"%s\":%.6g", first ? "" : ",", r->names[i], loss);
        else
            fprintf(r->metrics, "%s\"%s\":null", first ? "" : ",", r->names[i]);
        first = 0;
    }
    fprintf(r->metrics, "}");
    /* On diagnostic blocks: per element, the feature statistics of layers
     * and the norms of learning elements' gradient, update and weights. */
    {
        clapp_element_stats es;
        int diag = 0;
        for (int i = 1; i < r->n && !diag; i++)
            diag = clapp_pipeline_element_stats(r->p, r->names[i], &es) == CLAPP_OK &&
                   es.diag_block == ri.blocks && ri.blocks > 0;
        if (diag) {
            fprintf(r->metrics, ",\"diag\":{\"seconds\":%.4f", ri.diag_seconds);
            if (r->warmup)
                fprintf(r->metrics, ",\"lr_scale\":%.6g", ri.lr_scale);
            for (int i = 1; i < r->n; i++) {
                const char *sep = "";
                if (clapp_pipeline_element_stats(r->p, r->names[i], &es) < 0 || (!es.has_out && !es.has_grad))
                    continue;
                fprintf(r->metrics, ",\"%s\":{", r->names[i]);
                if (es.has_out) {
                    fprintf(r->metrics, "\"dead\":%.4f,\"pr\":%.4f", es.dead, es.pr);
                    sep = ",";
                }
                if (es.has_grad)
                    fprintf(r->metrics, "%s\"grad_norm\":%.6g,\"update_norm\":%.6g,\"weight_norm\":%.6g",
                            sep, es.grad_norm, es.update_norm, es.weight_norm);
                fprintf(r->metrics, "}");
            }
            fprintf(r->metrics, "}");
        }
    }
    fprintf(r->metrics, "}\n");
}

/* The closing line: mean loss per element over the run, time share per element. */
static void emit_summary(const stream_run *r, double secs, int sig)
{
    clapp_run_info ri;
    clapp_element_stats es;
    double total = 0, media;
    int first = 1;
    clapp_pipeline_run_info(r->p, &ri);
    media = media_seconds(r, &ri);
    for (int i = 1; i < r->n; i++)
        if (clapp_pipeline_element_stats(r->p, r->names[i], &es) == CLAPP_OK)
            total += es.seconds;
    fprintf(r->metrics, "{\"event\":\"summary\",\"blocks\":%lld,\"seconds\":%.3f,"
            "\"media_seconds\":%.3f,\"media_seconds_per_second\":%.3f,",
            (long long)ri.blocks, secs, media, secs > 0 ? media / secs : 0.0);
    /* Several ranks: the time inside the gradient allreduce (waiting for the
     * slowest rank included) and its share of the run. */
    if (r->dist.ranks > 1)
        fprintf(r->metrics, "\"ranks\":%d,\"allreduce_seconds\":%.3f,\"allreduce_share\":%.4f,",
                r->dist.ranks, r->dist.reduce_seconds, secs > 0 ? r->dist.reduce_seconds / secs : 0.0);
    fprintf(r->metrics, "\"mean_loss\":{");
    for (int i = 1, k = 0; i < r->n; i++) {
        clapp_loss_info li;
        if (r->kinds[i] != CLAPP_KIND_LOSS)
            continue;
        if (r->dist.ranks > 1) {   /* the mean of the steps' means over the ranks */
            if (r->dist.loss_n[k])
                fprintf(r->metrics, "%s\"%s\":%.6g", first ? "" : ",", r->names[i],
                        r->dist.loss_sum[k] / (double)r->dist.loss_n[k]);
            else
                fprintf(r->metrics, "%s\"%s\":null", first ? "" : ",", r->names[i]);
        } else if (clapp_pipeline_loss(r->p, r->names[i], &li) == CLAPP_OK && li.count) {
            fprintf(r->metrics, "%s\"%s\":%.6g", first ? "" : ",", r->names[i], li.mean);
        } else {
            fprintf(r->metrics, "%s\"%s\":null", first ? "" : ",", r->names[i]);
        }
        first = 0;
        k++;
    }
    fprintf(r->metrics, "},\"time_share\":{");
    for (int i = 1; i < r->n; i++) {
        double sec = clapp_pipeline_element_stats(r->p, r->names[i], &es) == CLAPP_OK ? es.seconds : 0.0;
        fprintf(r->metrics, "%s\"%s\":%.4f", i > 1 ? "," : "", r->names[i], total > 0 ? sec / total : 0.0);
    }
    fprintf(r->metrics, "}");
    if (sig)
        fprintf(r->metrics, ",\"interrupted\":\"%s\"", cli_signal_name(sig));
    fprintf(r->metrics, "}\n");
}

static void show_progress(const stream_run *r, double secs)
{
    clapp_run_info ri;
    clapp_pipeline_run_info(r->p, &ri);
    fprintf(stderr, "\rblock %lld  %.1f s media  %.1fx real time", (long long)ri.blocks,
            media_seconds(r, &ri), secs > 0 ? media_seconds(r, &ri) / secs : 0.0);
    for (int i = 1; i < r->n; i++) {
        clapp_loss_info li;
        if (r->kinds[i] == CLAPP_KIND_LOSS && clapp_pipeline_loss(r->p, r->names[i], &li) == CLAPP_OK && li.count)
            fprintf(stderr, "  %s %.4f", r->names[i], li.mean);
    }
    fprintf(stderr, "   ");
    fflush(stderr);
}

static int save_to(stream_run *r, const char *path)
{
    if (clapp_pipeline_save(r->p, path) < 0) {
        fprintf(stderr, "clapp: error: %s (the previous checkpoint, if any, is intact)\n",
                clapp_pipeline_error(r->p));
        return CLI_FAILED;
    }
    return CLI_OK;
}

/* Snapshot k of a budgeted run: PATH.snapK.safetensors beside the checkpoint
 * (the .safetensors suffix of PATH, if any, moves to the end), and a
 * "snapshot" line in the metrics with the time and audio it took. */
static int snapshot(stream_run *r, const cli_options *o, int k, double secs)
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
    status = save_to(r, path);
    if (status == CLI_OK && r->metrics) {
        clapp_run_info ri;
        clapp_pipeline_run_info(r->p, &ri);
        fprintf(r->metrics, "{\"event\":\"snapshot\",\"k\":%d,\"of\":%d,\"blocks\":%lld,\"seconds\":%.3f,"
                "\"media_seconds\":%.3f,\"path\":\"%s\"}\n", k, o->snapshots, (long long)ri.blocks, secs,
                r->rate > 0 ? (double)ri.steps / r->rate : 0.0, path);
        if (metrics_check(r) < 0)
            status = CLI_FAILED;
    }
    free(path);
    return status;
}

/* Stream every block; metrics, checkpoints and snapshots when learning.
 * The loop stops early on SIGINT/SIGTERM (checked between blocks), a failed
 * step or an exhausted budget; in every case the final checkpoint of the
 * weights after the last completed block is written (an element that fails
 * stops its block before the optimizer step, so the weights are those of
 * the block before), the sinks finish (the features' .npy headers say what
 * was written) and the metrics get their summary line. */
static int stream_loop(stream_run *r, const cli_options *o, int learn)
{
    struct timespec t0;
    clapp_run_info ri;
    int rc = 0, status = CLI_OK, next_snap = 1, sig = 0, periodic_failed = 0, saved = 0;
    /* Several ranks stop together: a reason to stop (signal, budget, a failed
     * metrics write or snapshot) goes into the next step's reduction, and
     * every rank leaves after that step. Only rank 0 writes. */
    const int multi = r->dist.ranks > 1, writer = r->dist.rank == 0;
    int want_stop = 0;
    double secs;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (!multi && (sig = cli_interrupted()))
            break;
        r->dist.stop_local = want_stop || cli_interrupted() != 0;
        /* 1: a block; 2 (several ranks): a step from the other ranks' blocks */
        if ((rc = clapp_pipeline_step(r->p)) <= 0)
            break;
        clapp_pipeline_run_info(r->p, &ri);
        if (r->metrics) {
            emit_block_metrics(r, seconds_since(&t0));
            if (metrics_check(r) < 0) {
                if (!multi)
                    break;
                want_stop = 1;
            }
        }
        /* A failed periodic save is reported and the run goes on: the final
         * save tries again, and the exit status says it failed. */
        if (learn && writer && o->checkpoint && o->checkpoint_every > 0 && ri.blocks % o->checkpoint_every == 0 &&
            save_to(r, o->checkpoint) != CLI_OK)
            periodic_failed++;
        if (r->progress && ri.blocks % 4 == 0)
            show_progress(r, seconds_since(&t0));
        /* --budget-minutes: a wall-clock budget, snapshots at k/N of it (rank 0's clock) */
        if (o->budget_s > 0 && writer) {
            double el = seconds_since(&t0);
            while (status == CLI_OK && next_snap <= o->snapshots && el >= o->budget_s * next_snap / o->snapshots)
                status = snapshot(r, o, next_snap++, el);
            if (el >= o->budget_s || status != CLI_OK) {
                if (!multi)
                    break;
                want_stop = 1;
            }
        }
        if (multi && r->dist.stop_all)
            break;
    }
    if (!sig)
        sig = cli_interrupted();
    if (r->progress)
        fprintf(stderr, "\n");
    if (rc < 0) {
        /* Printed now: the save below replaces the handle's message. */
        if (multi) {
            /* The others would wait for this rank in the next step: rank 0
             * keeps the weights of the last step all ranks completed, then
             * every rank ends. */
            if (writer && learn && o->checkpoint)
                save_to(r, o->checkpoint);
            cli_dist_abort(&r->dist, clapp_pipeline_error(r->p));
        }
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(r->p));
        status = CLI_FAILED;
    }
    if (periodic_failed)
        status = CLI_FAILED;
    if (multi) {
        /* Every rank is here after the same step. */
        uint64_t hash;
        double files[2];
        clapp_pipeline_run_info(r->p, &ri);
        if (learn && !cli_dist_check_weights(&r->dist, &hash))
            status = CLI_FAILED;
        else if (learn && writer && o->verbosity > 1)
            fprintf(stderr, "clapp: the %d ranks hold identical weights (fnv1a64 %016llx) after %lld "
                    "steps; %.3f s in the gradient allreduce\n", r->dist.ranks, (unsigned long long)hash,
                    (long long)ri.blocks, r->dist.reduce_seconds);
        files[0] = ri.files_done;
        files[1] = ri.files_failed;
        cli_dist_sum(&r->dist, files, 2);
        r->files_done = (int32_t)files[0];
        r->files_failed = (int32_t)files[1];
    }
    if (learn && writer && o->checkpoint) {
        if (save_to(r, o->checkpoint) != CLI_OK)
            status = CLI_FAILED;
        else
            saved = 1;
    }
    if (clapp_pipeline_finish(r->p) < 0) {
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(r->p));
        status = CLI_FAILED;
    }
    secs = seconds_since(&t0);
    if (r->metrics && !r->metrics_failed) {
        emit_summary(r, secs, sig);
        metrics_check(r);
    }
    if (r->metrics && r->metrics != stdout) {
        int closed = fclose(r->metrics);
        r->metrics = NULL;
        if (closed != 0 && !r->metrics_failed) {
            fprintf(stderr, "clapp: error: %s: cannot write the metrics (%s)\n", r->metrics_name, strerror(errno));
            r->metrics_failed = 1;
        }
    }
    if (r->metrics_failed)
        status = CLI_FAILED;
    clapp_pipeline_run_info(r->p, &ri);
    if (multi) {   /* every rank's files */
        ri.files_done = r->files_done;
        ri.files_failed = r->files_failed;
    }
    if (o->verbosity > 0 && writer)
        fprintf(stderr, "clapp: %d file(s) processed, %d failed; %lld blocks, %.1f s of media "
                "in %.2f s (%.1fx real time)%s\n", ri.files_done, ri.files_failed, (long long)ri.blocks,
                media_seconds(r, &ri), secs, secs > 0 ? media_seconds(r, &ri) / secs : 0.0,
                multi ? " on every rank" : "");
    if (ri.files_failed > 0 && status == CLI_OK) {
        if (writer)
            fprintf(stderr, "clapp: error: %d of %d file(s) could not be read (see above)\n", ri.files_failed,
                    ri.files_done + ri.files_failed);
        status = CLI_FAILED;
    }
    if (sig) {
        if (writer)
            fprintf(stderr, "clapp: interrupted by %s: stopped after block %lld%s%s%s%s\n", cli_signal_name(sig),
                    (long long)ri.blocks, saved ? "; checkpoint saved to " : "", saved ? o->checkpoint : "",
                    r->metrics_name && !r->metrics_failed ? "; metrics summary written to " : "",
                    r->metrics_name && !r->metrics_failed ? r->metrics_name : "");
        status = cli_interrupt_status(sig);
    }
    return status;
}

int cli_stream(const cli_options *o, int learn)
{
    stream_run r;
    clapp_stream_info si;
    int status, rc, agreed = 0;

    memset(&r, 0, sizeof r);
    cli_dist_init(&r.dist);
    if (r.dist.ranks > 1 && (!learn || o->dump_graph)) {
        /* the same on every rank: nobody waits for another */
        fprintf(stderr, "clapp: error: %s runs in one process; of the commands, train and extract run on "
                "several ranks (mpirun)\n", learn ? "train --dump-graph" : "run");
        cli_dist_free(&r.dist);
        return CLI_USAGE;
    }
    /* From the start: a signal while the pipeline is set up or a resume
     * skips its blocks (or waits for input) still ends in the loop below,
     * which saves the checkpoint. */
    cli_interrupt_install();
    status = stream_create(&r, o, learn);
    if (status == CLI_OK && o->dump_graph) {
        char *text = NULL;
        if (clapp_pipeline_text(r.p, &text) != CLAPP_OK) {
            status = CLI_FAILED;
        } else if (fputs(text, stdout) < 0 || fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "clapp: error: standard output: cannot write the pipeline (%s)\n", strerror(errno));
            status = CLI_FAILED;
        }
        clapp_free(text);
        goto done;
    }
    if (status != CLI_OK)
        goto done;
    if (!o->data) {
        fprintf(stderr, "clapp: error: no data: give --data MANIFEST\n");
        status = CLI_USAGE;
        goto done;
    }
    if ((rc = clapp_pipeline_open_manifest(r.p, o->data, o->epochs)) < 0) {
        status = api_error(&r, rc);
        goto done;
    }
    clapp_pipeline_stream(r.p, r.names[0], &si);
    r.rate = si.rate;
    if (learn && r.dist.rank > 0) {
        r.metrics = NULL;   /* rank 0 writes the metrics */
    } else if (learn) {
        if (!o->metrics || !strcmp(o->metrics, "-")) {
            r.metrics = stdout;
            r.metrics_name = "standard output";
        } else if (!(r.metrics = fopen(o->metrics, o->resume ? "a" : "w"))) {
            /* --resume continues the metrics of the run it resumes. */
            perror(o->metrics);
            status = CLI_USAGE;
            goto done;
        } else {
            r.metrics_name = o->metrics;
        }
        r.progress = isatty(STDERR_FILENO) && o->verbosity > 0;
    }
    if (learn && o->resume) {
        char err[1024] = "", *seed = NULL;
        if (!o->checkpoint) {
            fprintf(stderr, "clapp: error: --resume needs --checkpoint PATH\n");
            status = CLI_USAGE;
            goto done;
        }
        /* The data order and window starts follow the seed: another one cannot resume. */
        if (clapp_checkpoint_metadata(o->checkpoint, "seed", &seed, err, sizeof err) == CLAPP_OK &&
            strtoull(seed, NULL, 10) != o->seed) {
            fprintf(stderr, "clapp: error: %s was trained with --seed %s; resume with the same seed\n",
                    o->checkpoint, seed);
            clapp_free(seed);
            status = CLI_USAGE;
            goto done;
        }
        clapp_free(seed);
        if ((rc = clapp_pipeline_resume(r.p, o->checkpoint)) < 0) {
            fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(r.p));
            status = rc == CLAPP_E_NOMEM ? CLI_FAILED : CLI_USAGE;
            if (cli_interrupted()) {
                /* Nothing was learned yet: the checkpoint stays as it was. */
                fprintf(stderr, "clapp: interrupted by %s while resuming; %s is unchanged\n",
                        cli_signal_name(cli_interrupted()), o->checkpoint);
                status = cli_interrupt_status(cli_interrupted());
            }
            goto done;
        }
        /* Block lines continue the checkpoint's numbering; media_seconds
         * counts this run's blocks only. */
        if (r.metrics) {
            clapp_run_info ri;
            clapp_pipeline_run_info(r.p, &ri);
            fprintf(r.metrics, "{\"event\":\"resume\",\"blocks\":%lld}\n", (long long)ri.blocks);
            if (metrics_check(&r) < 0) {
                status = CLI_FAILED;
                goto done;
            }
        }
    }
    if (o->snapshots > 0 && (!(o->budget_s > 0) || !o->checkpoint || !learn)) {
        fprintf(stderr, "clapp: error: --snapshots needs training with --budget-minutes and --checkpoint\n");
        status = CLI_USAGE;
        goto done;
    }
    /* Several ranks: every one set up, or none goes on. */
    agreed = 1;
    if ((status = cli_dist_agree(&r.dist, CLI_OK)) != CLI_OK) {
        fprintf(stderr, "clapp: error: another rank could not set up the run (see its message)\n");
        goto done;
    }
    status = stream_loop(&r, o, learn);
done:
    if (!agreed)
        cli_dist_agree(&r.dist, status);
    if (r.metrics && r.metrics != stdout)
        fclose(r.metrics);
    free(r.names);
    free(r.kinds);
    free(r.losses);
    cli_dist_free(&r.dist);
    clapp_pipeline_destroy(r.p);
    return status;
}
