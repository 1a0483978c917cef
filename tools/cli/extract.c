/* clapp extract PIPE --checkpoint C --data MANIFEST --out DIR [--element NAME]...
 *
 * Streaming feature extraction with learning off: the pipeline is loaded,
 * a `features` writer is inserted right after each chosen element (default:
 * every layer), the checkpoint fills the weights, and every file of the
 * manifest streams through once, whole (stream mode, whatever the source's
 * mode= says). Output per (file, element): DIR/<key>.<element>.npy (float32,
 * time-major, as the features sink writes it) and DIR/<key>.<element>.json,
 * the sidecar: {"element", "type", "rate", "pts_first", "pts_first_seconds",
 * "frames", "dims", "checkpoint", "checkpoint_blocks", "pipeline", "key"}.
 * pts_first is the index, at the element's rate, of the first frame written.
 *
 * Memory: the source's queue of blocks plus each element's block buffers;
 * nothing grows with file length except one small record per (file, element).
 * On the host API alone (include/clapp/clapp.h).
 *
 * Under mpirun (dist.h) each rank takes the manifest's positions rank,
 * rank + ranks, ... and writes their files; a file's features do not depend
 * on the lane or the other files, so the outputs are those of one process.
 */
#define _GNU_SOURCE
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clapp/clapp.h"
#include "cli.h"
#include "dist.h"
#include "interrupt.h"
#include "stream.h"

#define X_MAX_ARGS 256

typedef struct x_record {
    int64_t seq_id;
    char   *key;
    int64_t pts_first;   /* -1 until the first valid frame */
    int64_t frames;
} x_record;

typedef struct x_element {
    const char *name;     /* the observed element */
    x_record   *recs;
    int64_t     n_recs, cap_recs;
    int64_t    *lane_rec; /* [lanes] current record of each lane, -1 none */
} x_element;

/* --out DIR as the writers take it: the features writer refuses a ".."
 * part (a pipeline file could aim one anywhere), so a command-line folder
 * with one becomes absolute, its "." and ".." parts resolved as the shell's
 * cd does. malloc'd; NULL when out of memory or the working folder is gone. */
static char *out_folder(const char *dir)
{
    char *cwd = NULL, *joined = NULL, *out = NULL;
    size_t n = 0;
    int dotdot = 0;
    for (const char *p = dir; *p && !dotdot;) {
        size_t k = strcspn(p, "/");
        dotdot = k == 2 && p[0] == '.' && p[1] == '.';
        p += k;
        p += *p == '/';
    }
    if (!dotdot)
        return strdup(dir);
    if (dir[0] != '/' && !(cwd = getcwd(NULL, 0)))
        return NULL;
    if (asprintf(&joined, "%s/%s", cwd ? cwd : "", dir) < 0)
        joined = NULL;
    free(cwd);
    if (!joined || !(out = malloc(strlen(joined) + 2))) {
        free(joined);
        return NULL;
    }
    for (char *save = NULL, *part = strtok_r(joined, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, "."))
            continue;
        if (!strcmp(part, "..")) {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;   /* the '/' before the part dropped */
            continue;
        }
        out[n++] = '/';
        memcpy(out + n, part, strlen(part));
        n += strlen(part);
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = 0;
    free(joined);
    return out;
}

static void extract_usage(void)
{
    printf("usage: clapp extract PIPE (--checkpoint C | --random-init) --data MANIFEST --out DIR\n"
           "                     [--element NAME]... [--set NAME.KEY=VALUE]... [--seed S] [--strict] [-q|-v]\n"
           "Runs every file of the manifest once, whole, through the pipeline with learning off and\n"
           "the weights of checkpoint C (or the seeded random initialisation: the baseline features\n"
           "of an untrained encoder), and writes the output of each chosen element (default:\n"
           "every layer; the source's name gives the decoded input) to DIR/<key>.<element>.npy (float32, one\n"
           "row per time step) with a JSON sidecar DIR/<key>.<element>.json (element, rate,\n"
           "pts_first, frames, dims, checkpoint, pipeline). Memory is bounded by the block size.\n"
           "Under mpirun -np N each rank extracts its share of the files.\n"
           "Damaged input and --strict as for 'clapp run'. Exit status as 'clapp run'.\n");
}

static int rec_for(x_element *xe, const clapp_lane *ln, int32_t b)
{
    int64_t r = xe->lane_rec[b];
    if (r >= 0 && xe->recs[r].seq_id == ln->seq_id && !(ln->flags & CLAPP_LANE_SEQ_START))
        return (int)CLAPP_OK;
    if (xe->n_recs == xe->cap_recs) {
        int64_t cap = xe->cap_recs ? xe->cap_recs * 2 : 64;
        x_record *recs = realloc(xe->recs, (size_t)cap * sizeof *recs);
        if (!recs)
            return CLAPP_E_NOMEM;
        xe->recs = recs;
        xe->cap_recs = cap;
    }
    r = xe->n_recs;
    xe->recs[r].seq_id = ln->seq_id;
    xe->recs[r].key = strdup(ln->seq_name && *ln->seq_name ? ln->seq_name : "stream");
    xe->recs[r].pts_first = -1;
    xe->recs[r].frames = 0;
    if (!xe->recs[r].key)
        return CLAPP_E_NOMEM;
    xe->n_recs++;
    xe->lane_rec[b] = r;
    return CLAPP_OK;
}

/* What the writer after element xe saw in this block. */
static int observe(x_element *xe, const clapp_block *blk)
{
    for (int32_t b = 0; b < blk->lanes; b++) {
        const clapp_lane *ln = &blk->lane[b];
        x_record *r;
        if (ln->seq_id < 0)
            continue;
        if (rec_for(xe, ln, b) < 0)
            return CLAPP_E_NOMEM;
        r = &xe->recs[xe->lane_rec[b]];
        if (ln->len > 0 && r->pts_first < 0)
            r->pts_first = ln->pts;
        r->frames += ln->len;
    }
    return CLAPP_OK;
}

static int write_sidecar(const char *out_dir, const x_element *xe, const x_record *r,
                         const clapp_stream_info *info, const char *type, const char *ckpt,
                         const char *ckpt_blocks, const char *pipe)
{
    cJSON *j = cJSON_CreateObject(), *dims = cJSON_AddArrayToObject(j, "dims");
    char *path = NULL, *text = NULL;
    FILE *f = NULL;
    int rc = CLI_FAILED;
    if (!j || !dims)
        goto done;
    cJSON_AddStringToObject(j, "element", xe->name);
    cJSON_AddStringToObject(j, "type", type);
    cJSON_AddStringToObject(j, "key", r->key);
    cJSON_AddNumberToObject(j, "rate", info->rate);
    cJSON_AddNumberToObject(j, "pts_first", (double)(r->pts_first < 0 ? 0 : r->pts_first));
    cJSON_AddNumberToObject(j, "pts_first_seconds",
                            info->rate > 0 ? (double)(r->pts_first < 0 ? 0 : r->pts_first) / info->rate : 0.0);
    cJSON_AddNumberToObject(j, "frames", (double)r->frames);
    /* One row of the .npy: C, or C, H, W for video. */
    cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)info->shape[1]));
    if (info->ndim == 5) {
        cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)info->shape[3]));
        cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)info->shape[4]));
    }
    if (ckpt)
        cJSON_AddStringToObject(j, "checkpoint", ckpt);
    else
        cJSON_AddNullToObject(j, "checkpoint");   /* --random-init */
    if (ckpt_blocks)
        cJSON_AddNumberToObject(j, "checkpoint_blocks", strtod(ckpt_blocks, NULL));
    cJSON_AddStringToObject(j, "pipeline", pipe);
    text = cJSON_Print(j);
    if (!text || asprintf(&path, "%s/%s.%s.json", out_dir, r->key, xe->name) < 0) {
        path = NULL;
        goto done;
    }
    if (!(f = fopen(path, "w")) || fprintf(f, "%s\n", text) < 0) {
        perror(path);
        goto done;
    }
    rc = CLI_OK;
done:
    if (f && fclose(f) != 0) {
        perror(path);
        rc = CLI_FAILED;
    }
    if (rc != CLI_OK && !path)
        fprintf(stderr, "clapp: error: %s: out of memory writing a sidecar\n", out_dir);
    free(path);
    cJSON_free(text);
    cJSON_Delete(j);
    return rc;
}

static void free_names(const char **list, int n)
{
    for (int k = 0; list && k < n; k++)
        free((char *)list[k]);
    free(list);
}

/* Choose the elements and insert a features writer after each. */
static int attach_writers(clapp_pipeline *p, const char *pipe, const char *out_dir, const char **want,
                          int n_want, const char ***names, int *n_names)
{
    const char **list = NULL;
    int n = 0, count = 0;
    if (clapp_pipeline_element_count(p, &count) < 0 || !(list = calloc((size_t)count + 1, sizeof *list)))
        return CLI_FAILED;
    if (n_want == 0) {
        for (int i = 1; i < count; i++) {
            const char *name;
            int kind;
            if (clapp_pipeline_element(p, i, &name, NULL, &kind) == CLAPP_OK && kind == CLAPP_KIND_LAYER &&
                !(list[n++] = strdup(name)))
                goto nomem;
        }
        if (!n) {
            fprintf(stderr, "clapp: error: %s has no layer; name the elements with --element\n", pipe);
            free_names(list, n);
            return CLI_USAGE;
        }
    }
    for (int w = 0; w < n_want; w++) {
        int i, kind = -1;
        const char *name = NULL;
        for (i = 0; i < count; i++)
            if (clapp_pipeline_element(p, i, &name, NULL, &kind) == CLAPP_OK && !strcmp(name, want[w]))
                break;
        if (i == count || (i > 0 && kind != CLAPP_KIND_LAYER)) {
            fprintf(stderr, "clapp: error: --element %s: %s; layers of %s:", want[w],
                    i == count ? "no element of that name" : "not a layer (its output is its input's)", pipe);
            for (int k = 0; k < count; k++)
                if (clapp_pipeline_element(p, k, &name, NULL, &kind) == CLAPP_OK &&
                    (k == 0 || kind == CLAPP_KIND_LAYER))
                    fprintf(stderr, " %s", name);
            fprintf(stderr, "\n");
            free_names(list, n);
            return CLI_USAGE;
        }
        if (!(list[n++] = strdup(want[w])))
            goto nomem;
    }
    for (int k = 0; k < n; k++) {
        char wname[256], suffix[256];
        const char *kv[4] = {"out", out_dir, "suffix", suffix};
        snprintf(wname, sizeof wname, "extract_%s", list[k]);
        snprintf(suffix, sizeof suffix, ".%s", list[k]);
        if (clapp_pipeline_add_element(p, list[k], "features", wname, kv, 2) < 0) {
            fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(p));
            free_names(list, n);
            return CLI_USAGE;
        }
    }
    *names = list;
    *n_names = n;
    return CLI_OK;
nomem:
    fprintf(stderr, "clapp: error: out of memory\n");
    free_names(list, n);
    return CLI_FAILED;
}

int cli_extract(int argc, char **argv)
{
    const char *pipe = NULL, *data = NULL, *ckpt = NULL, *want[X_MAX_ARGS], *out_arg = NULL, **names = NULL;
    const char *sets[X_MAX_ARGS];
    char *out_dir = NULL;
    char *ckpt_blocks = NULL, err[2048] = "";
    int n_want = 0, n_sets = 0, n_names = 0, status = CLI_OK, rc, random_init = 0, verbosity = 1, agreed = 0, strict = 0;
    x_element *xs = NULL;
    clapp_pipeline *p = NULL;
    clapp_options opt;
    clapp_stream_info info;
    clapp_run_info ri;
    cli_dist d;

    cli_dist_init(&d);
    clapp_options_init(&opt);
    opt.seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            extract_usage();
            return CLI_OK;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            verbosity = 0;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbosity = 2;
        } else if (!strcmp(a, "--random-init")) {
            random_init = 1;
        } else if (!strcmp(a, "--strict")) {
            strict = 1;
        } else if (!strcmp(a, "--checkpoint") || !strcmp(a, "--data") || !strcmp(a, "--out") ||
                   !strcmp(a, "--element") || !strcmp(a, "--set") || !strcmp(a, "--seed")) {
            if (!v) {
                fprintf(stderr, "clapp: error: %s needs a value\n", a);
                return CLI_USAGE;
            }
            i++;
            if (!strcmp(a, "--checkpoint")) {
                ckpt = v;
            } else if (!strcmp(a, "--data")) {
                data = v;
            } else if (!strcmp(a, "--out")) {
                out_arg = v;
            } else if (!strcmp(a, "--element") && n_want < X_MAX_ARGS) {
                want[n_want++] = v;
            } else if (!strcmp(a, "--set") && n_sets < X_MAX_ARGS) {
                sets[n_sets++] = v;
            } else if (!strcmp(a, "--seed")) {
                char *end;
                opt.seed = strtoull(v, &end, 10);
                if (*end || !*v) {
                    fprintf(stderr, "clapp: error: --seed %s: expected a non-negative integer\n", v);
                    return CLI_USAGE;
                }
            } else {
                fprintf(stderr, "clapp: error: too many %s options\n", a);
                return CLI_USAGE;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "clapp: error: unknown option '%s'\n", a);
            return CLI_USAGE;
        } else if (!pipe) {
            pipe = a;
        } else {
            fprintf(stderr, "clapp: error: unexpected argument '%s'\n", a);
            return CLI_USAGE;
        }
    }
    if (!pipe || !data || !out_arg || !ckpt == !random_init) {
        fprintf(stderr, "clapp: error: extract needs PIPE, one of --checkpoint C and --random-init, "
                        "--data MANIFEST and --out DIR\n");
        return CLI_USAGE;
    }
    opt.log_level = verbosity == 0 ? CLAPP_LOG_ERROR : verbosity == 1 ? CLAPP_LOG_WARNING : CLAPP_LOG_INFO;
    cli_dist_log_options(&d, &opt);
    cli_interrupt_install();
    if (!(out_dir = out_folder(out_arg))) {
        fprintf(stderr, "clapp: error: --out %s: cannot resolve the folder\n", out_arg);
        return CLI_FAILED;
    }

    /* The pipeline with its overrides, a writer after each chosen element,
     * every file once and whole, the checkpoint's weights. */
    if (clapp_pipeline_create_from_file(&p, pipe, sets, n_sets, &opt) < 0)
        goto usage_err;
    if (strict && (status = cli_apply_strict(p)) != CLI_OK)
        goto done;
    if (clapp_pipeline_set_interrupt(p, cli_interrupt_check, NULL) < 0)
        goto usage_err;
    if ((status = attach_writers(p, pipe, out_dir, want, n_want, &names, &n_names)) != CLI_OK)
        goto done;
    if (cli_dist_attach(&d, p, 0, NULL, NULL, 0) < 0)
        goto usage_err;
    if ((rc = clapp_pipeline_open_files(p, data)) < 0) {
        status = rc == CLAPP_E_NOMEM ? CLI_FAILED : CLI_USAGE;
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(p));
        goto done;
    }
    if (ckpt) {
        if (clapp_pipeline_load(p, ckpt) < 0)
            goto usage_err;
        clapp_checkpoint_metadata(ckpt, "blocks", &ckpt_blocks, err, sizeof err);
    }

    xs = calloc((size_t)n_names + 1, sizeof *xs);
    if (!xs)
        goto nomem;
    for (int k = 0; k < n_names; k++) {
        xs[k].name = names[k];
        if (clapp_pipeline_stream(p, names[k], &info) < 0)
            goto usage_err;
        xs[k].lane_rec = malloc((size_t)info.shape[0] * sizeof *xs[k].lane_rec);
        if (!xs[k].lane_rec)
            goto nomem;
        for (int64_t b = 0; b < info.shape[0]; b++)
            xs[k].lane_rec[b] = -1;
    }

    /* Several ranks: every one set up, or none goes on. */
    agreed = 1;
    if ((status = cli_dist_agree(&d, CLI_OK)) != CLI_OK) {
        fprintf(stderr, "clapp: error: another rank could not set up the extraction (see its message)\n");
        goto done;
    }
    cli_interrupt_install();
    while (!cli_interrupted() && (rc = clapp_pipeline_step(p)) == 1) {
        for (int k = 0; k < n_names; k++) {
            const clapp_block *blk;
            if (clapp_pipeline_output(p, names[k], &blk) < 0 || observe(&xs[k], blk) < 0)
                goto nomem;
        }
    }
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(p));
        status = CLI_FAILED;
    }
    if (clapp_pipeline_finish(p) < 0) {
        fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(p));
        status = CLI_FAILED;
    }
    for (int k = 0; k < n_names; k++) {
        const char *type = NULL;
        int count = 0;
        clapp_pipeline_stream(p, names[k], &info);
        clapp_pipeline_element_count(p, &count);
        for (int i = 0; i < count; i++) {
            const char *name;
            if (clapp_pipeline_element(p, i, &name, &type, NULL) == CLAPP_OK && !strcmp(name, names[k]))
                break;
        }
        for (int64_t r = 0; r < xs[k].n_recs; r++)
            if (write_sidecar(out_dir, &xs[k], &xs[k].recs[r], &info, type ? type : "", ckpt, ckpt_blocks,
                              pipe) != CLI_OK)
                status = CLI_FAILED;
    }
    if (clapp_pipeline_run_info(p, &ri) == CLAPP_OK) {
        double files[2] = {ri.files_done, ri.files_failed};
        cli_dist_sum(&d, files, 2);   /* every rank's */
        if (verbosity > 0 && d.rank == 0)
            fprintf(stderr, "clapp: extracted %d element(s) from %d file(s) into %s; %d failed\n",
                    n_names, (int)files[0], out_dir, (int)files[1]);
        if (files[1] > 0 && status == CLI_OK)
            status = CLI_FAILED;
    }
    if (cli_interrupted()) {
        /* The writers have finished: each .npy holds the rows of the blocks
         * processed, its header and sidecar say so. */
        fprintf(stderr, "clapp: interrupted by %s: the features written so far are in %s\n",
                cli_signal_name(cli_interrupted()), out_dir);
        status = cli_interrupt_status(cli_interrupted());
    }
    goto done;
nomem:
    if (agreed && d.ranks > 1)
        cli_dist_abort(&d, "out of memory");   /* the others would wait for this rank's counts */
    fprintf(stderr, "clapp: error: out of memory\n");
    status = CLI_FAILED;
    goto done;
usage_err:
    fprintf(stderr, "clapp: error: %s\n", clapp_pipeline_error(p));
    status = CLI_USAGE;
done:
    if (!agreed)
        cli_dist_agree(&d, status);
    cli_dist_free(&d);
    for (int k = 0; xs && k < n_names; k++) {
        for (int64_t r = 0; r < xs[k].n_recs; r++)
            free(xs[k].recs[r].key);
        free(xs[k].recs);
        free(xs[k].lane_rec);
    }
    free(xs);
    free(out_dir);
    free_names(names, n_names);
    clapp_free(ckpt_blocks);
    clapp_pipeline_destroy(p);
    return status;
}
