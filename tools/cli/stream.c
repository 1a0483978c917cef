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

int cli_pipeline_create(clapp_pipeline **p, const cli_options *o, int learn)
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
    int status = cli_pipeline_create(&r->p, o, learn);
    if (status != CLI_OK)
        return status;
    r->warmup = learn && o->warmup > 0;
    if (clapp_pipeline_element_count(r->p, &r->n) < 0 || !(r->names = calloc((size_t)r->n, sizeof *r->names)) ||
        !(r->kinds = calloc((size_t)r->n, sizeof *r->kinds)))
        return CLI_FAILED;
    for (int i = 0; i < r->n && status == CLI_OK; i++)
        if (clapp_pipeline_element(r->p, i, &r->names[i], NULL, &r->kinds[i]) < 0)
            status = CLI_FAILED;
    return status;
}

/* One JSON line per block: loss of every loss element, throughput, diagnostics. */
static void emit_block_metrics(const stream_run *r, double secs)
{
    const clapp_block *src = NULL;
    clapp_run_info ri;
    int64_t windows = 0;
    int first = 1;
    clapp_pipeline_run_info(r->p, &ri);
    if (clapp_pipeline_output(r->p, r->names[0], &src) == CLAPP_OK)
        for (int32_t b = 0; b < src->lanes; b++)
            windows += src->lane[b].len > 0;
    fprintf(r->metrics, "{\"event\":\"block\",\"block\":%lld,\"seconds\":%.3f,\"lanes_active\":%lld,"
            "\"media_seconds\":%.3f,\"loss\":{", (long long)ri.blocks, secs, (long long)windows,
            r->rate > 0 ? (double)ri.steps / r->rate : 0.0);
    for (int i = 1; i < r->n; i++) {
        clapp_loss_info li;
        if (r->kinds[i] != CLAPP_KIND_LOSS || clapp_pipeline_loss(r->p, r->names[i], &li) < 0)
            continue;
        if (li.last_pairs > 0)
            fprintf(r->metrics, "%s\"%s\":%.6g", first ? "" : ",", r->names[i], li.last);
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
    media = r->rate > 0 ? (double)ri.steps / r->rate : 0.0;
    for (int i = 1; i < r->n; i++)
        if (clapp_pipeline_element_stats(r->p, r->names[i], &es) == CLAPP_OK)
            total += es.seconds;
    fprintf(r->metrics, "{\"event\":\"summary\",\"blocks\":%lld,\"seconds\":%.3f,"
            "\"media_seconds\":%.3f,\"media_seconds_per_second\":%.3f,\"mean_loss\":{",
            (long long)ri.blocks, secs, media, secs > 0 ? media / secs : 0.0);
    for (int i = 1; i < r->n; i++) {
        clapp_loss_info li;
        if (r->kinds[i] != CLAPP_KIND_LOSS || clapp_pipeline_loss(r->p, r->names[i], &li) < 0)
            continue;
        if (li.count)
            fprintf(r->metrics, "%s\"%s\":%.6g", first ? "" : ",", r->names[i], li.mean);
        else
            fprintf(r->metrics, "%s\"%s\":null", first ? "" : ",", r->names[i]);
        first = 0;
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
            r->rate > 0 ? (double)ri.steps / r->rate : 0.0,
            secs > 0 && r->rate > 0 ? (double)ri.steps / r->rate / secs : 0.0);
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
    double secs;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!(sig = cli_interrupted()) && (rc = clapp_pipeline_step(r->p)) == 1) {
        clapp_pipeline_run_info(r->p, &ri);
        if (r->metrics) {
            emit_block_metrics(r, seconds_since(&t0));
            if (metrics_check(r) < 0)
                break;
        }
        /* A failed periodic save is reported and the run goes on: the final
         * save tries again, and the exit status says it failed. */
        if (learn && o->checkpoint && o->checkpoint_every > 0 && ri.blocks % o->checkpoint_every == 0 &&
            save_to(r, o->checkpoint) != CLI_OK)
            periodic_failed++;
        if (r->progress && ri.blocks % 4 == 0)
            show_progress(r, seconds_since(&t0));
        /* --budget-minutes: a wall-clock budget, snapshots at k/N of it */
        if (o->budget_s > 0) {
            double el = seconds_since(&t0);
            while (status == CLI_OK && next_snap <= o->snapshots && el >= o->budget_s * next_snap / o->snapshots)
                status = snapshot(r, o, next_snap++, el);
            if (el >= o->budget_s || status != CLI_OK)
                break;
        }
    }
    if (!sig)
        sig = cli_interrupted();
    if (r->progress)
        fprintf(stderr, "\n");
    if (rc < 0) {
        /* Printed now: the save below replaces the handle's message. */
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(r->p));
        status = CLI_FAILED;
    }
    if (periodic_failed)
        status = CLI_FAILED;
    if (learn && o->checkpoint) {
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
    if (o->verbosity > 0)
        fprintf(stderr, "clapp: %d file(s) processed, %d failed; %lld blocks, %.1f s of media "
                "in %.2f s (%.1fx real time)\n", ri.files_done, ri.files_failed, (long long)ri.blocks,
                r->rate > 0 ? (double)ri.steps / r->rate : 0.0, secs,
                secs > 0 && r->rate > 0 ? (double)ri.steps / r->rate / secs : 0.0);
    if (ri.files_failed > 0 && status == CLI_OK) {
        fprintf(stderr, "clapp: error: %d of %d file(s) could not be read (see above)\n", ri.files_failed,
                ri.files_done + ri.files_failed);
        status = CLI_FAILED;
    }
    if (sig) {
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
    int status, rc;

    memset(&r, 0, sizeof r);
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
    if (learn) {
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
    status = stream_loop(&r, o, learn);
done:
    if (r.metrics && r.metrics != stdout)
        fclose(r.metrics);
    free(r.names);
    free(r.kinds);
    clapp_pipeline_destroy(r.p);
    return status;
}
