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
 */
#define _GNU_SOURCE
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

#define X_MAX_ARGS 256

typedef struct x_record {
    int64_t seq_id;
    char   *key;
    int64_t pts_first;   /* -1 until the first valid frame */
    int64_t frames;
} x_record;

typedef struct x_element {
    const char *name;     /* the observed element */
    int         node;     /* its graph node (0: the source) */
    x_record   *recs;
    int64_t     n_recs, cap_recs;
    int64_t    *lane_rec; /* [lanes] current record of each lane, -1 none */
} x_element;

static void extract_usage(void)
{
    printf("usage: clapp extract PIPE (--checkpoint C | --random-init) --data MANIFEST --out DIR\n"
           "                     [--element NAME]... [--set NAME.KEY=VALUE]... [--seed S] [-q|-v]\n"
           "Runs every file of the manifest once, whole, through the pipeline with learning off and\n"
           "the weights of checkpoint C (or the seeded random initialisation: the baseline features\n"
           "of an untrained encoder), and writes the output of each chosen element (default:\n"
           "every layer; the source's name gives the decoded input) to DIR/<key>.<element>.npy (float32, one\n"
           "row per time step) with a JSON sidecar DIR/<key>.<element>.json (element, rate,\n"
           "pts_first, frames, dims, checkpoint, pipeline). Memory is bounded by the block size.\n"
           "Exit status as 'clapp run'.\n");
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

/* Choose the elements and insert a features writer after each. */
static int attach_writers(cli_session *s, const char *out_dir, const char **want, int n_want,
                          const char ***names, int *n_names)
{
    char err[2048] = "";
    const char **list = calloc((size_t)s->pd.n + 1, sizeof *list);
    int n = 0;
    if (!list)
        return CLI_FAILED;
    if (n_want == 0) {
        for (int i = 1; i < s->pd.n; i++)
            if (s->pd.elems[i].desc->kind == CLAPP_KIND_LAYER)
                list[n++] = s->pd.elems[i].name;
        if (!n) {
            fprintf(stderr, "clapp: error: %s has no layer; name the elements with --element\n", s->pd.file);
            free(list);
            return CLI_USAGE;
        }
    }
    for (int w = 0; w < n_want; w++) {
        int i = clapp_pipeline_find(&s->pd, want[w]);
        if (i < 0 || (i > 0 && s->pd.elems[i].desc->kind != CLAPP_KIND_LAYER)) {
            fprintf(stderr, "clapp: error: --element %s: %s; layers of %s:", want[w],
                    i < 0 ? "no element of that name" : "not a layer (its output is its input's)",
                    s->pd.file);
            for (int k = 0; k < s->pd.n; k++)
                if (k == 0 || s->pd.elems[k].desc->kind == CLAPP_KIND_LAYER)
                    fprintf(stderr, " %s", s->pd.elems[k].name);
            fprintf(stderr, "\n");
            free(list);
            return CLI_USAGE;
        }
        list[n++] = s->pd.elems[i].name;
    }
    for (int k = 0; k < n; k++) {
        char wname[256], suffix[256];
        const char *kv[4] = {"out", out_dir, "suffix", suffix};
        int at = clapp_pipeline_find(&s->pd, list[k]);
        snprintf(wname, sizeof wname, "extract_%s", list[k]);
        snprintf(suffix, sizeof suffix, ".%s", list[k]);
        if (clapp_pipeline_insert(&s->pd, at, "features", wname, kv, 2, err, sizeof err) < 0) {
            fprintf(stderr, "clapp: error: %s\n", err);
            free(list);
            return CLI_USAGE;
        }
    }
    if (clapp_pipeline_resolve(&s->pd, &s->reg, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        free(list);
        return CLI_USAGE;
    }
    *names = list;
    *n_names = n;
    return CLI_OK;
}

int cli_extract(int argc, char **argv)
{
    cli_options o;
    cli_session s;
    char err[2048] = "";
    const char *want[X_MAX_ARGS], *out_dir = NULL, **names = NULL;
    char *sets[X_MAX_ARGS], *ckpt_blocks = NULL;
    int n_want = 0, n_sets = 0, n_names = 0, status = CLI_OK, rc;
    x_element *xs = NULL;
    clapp_stream_info info;
    clapp_graph_params gp;
    const clapp_block *blk;

    memset(&o, 0, sizeof o);
    memset(&s, 0, sizeof s);
    o.epochs = 1;
    o.seed = 1;
    o.verbosity = 1;
    o.lr = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            extract_usage();
            return CLI_OK;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o.verbosity = 0;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o.verbosity = 2;
        } else if (!strcmp(a, "--random-init")) {
            o.random_init = 1;
        } else if (!strcmp(a, "--checkpoint") || !strcmp(a, "--data") || !strcmp(a, "--out") ||
                   !strcmp(a, "--element") || !strcmp(a, "--set") || !strcmp(a, "--seed")) {
            if (!v) {
                fprintf(stderr, "clapp: error: %s needs a value\n", a);
                return CLI_USAGE;
            }
            i++;
            if (!strcmp(a, "--checkpoint")) {
                o.checkpoint = v;
            } else if (!strcmp(a, "--data")) {
                o.data = v;
            } else if (!strcmp(a, "--out")) {
                out_dir = v;
            } else if (!strcmp(a, "--element") && n_want < X_MAX_ARGS) {
                want[n_want++] = v;
            } else if (!strcmp(a, "--set") && n_sets < X_MAX_ARGS) {
                sets[n_sets++] = (char *)v;
            } else if (!strcmp(a, "--seed")) {
                char *end;
                o.seed = strtoull(v, &end, 10);
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
        } else if (!o.pipe) {
            o.pipe = a;
        } else {
            fprintf(stderr, "clapp: error: unexpected argument '%s'\n", a);
            return CLI_USAGE;
        }
    }
    if (!o.pipe || !o.data || !out_dir || !o.checkpoint == !o.random_init) {
        fprintf(stderr, "clapp: error: extract needs PIPE, one of --checkpoint C and --random-init, "
                        "--data MANIFEST and --out DIR\n");
        return CLI_USAGE;
    }

    /* The set-up of cli_session_open, with the writers inserted before resolving the graph. */
    cli_host_init(&s.host, o.verbosity);
    clapp_labelset_init_cmu41(&s.labels);
    if (clapp_registry_init_default(&s.reg, &s.host) < 0) {
        fprintf(stderr, "clapp: error: cannot set up the element registry\n");
        status = CLI_FAILED;
        goto done;
    }
    if (clapp_pipeline_parse_file(&s.pd, o.pipe, err, sizeof err) < 0)
        goto usage_err;
    for (int i = 0; i < n_sets; i++)
        if (clapp_pipeline_set(&s.pd, sets[i], err, sizeof err) < 0)
            goto usage_err;
    if (clapp_pipeline_resolve(&s.pd, &s.reg, err, sizeof err) < 0)
        goto usage_err;
    if (s.pd.n < 1 || s.pd.elems[0].desc->kind != CLAPP_KIND_SOURCE) {
        fprintf(stderr, "clapp: error: %s: a pipeline starts with 'source'\n", s.pd.file);
        status = CLI_USAGE;
        goto done;
    }
    if ((status = attach_writers(&s, out_dir, want, n_want, &names, &n_names)) != CLI_OK)
        goto done;
    if ((status = cli_session_use_data(&s, &o, o.data, 1, 1)) != CLI_OK)
        goto done;
    clapp_source_info(s.src, &info);
    clapp_graph_default_params(&gp);
    gp.learn = 0;
    gp.seed = o.seed;
    rc = clapp_graph_create(&s.graph, &s.pd, &info, &gp, &s.host, err, sizeof err);
    s.have_graph = 1;
    if (rc < 0)
        goto usage_err;
    if (o.checkpoint) {
        if ((status = cli_session_load(&s, o.checkpoint, 0)) != CLI_OK)
            goto done;
        ckpt_blocks = clapp_checkpoint_read_meta(o.checkpoint, "blocks", err, sizeof err);
    }

    xs = calloc((size_t)n_names + 1, sizeof *xs);
    if (!xs)
        goto nomem;
    for (int k = 0; k < n_names; k++) {
        xs[k].name = names[k];
        xs[k].node = clapp_pipeline_find(&s.pd, names[k]);
        xs[k].lane_rec = malloc((size_t)info.shape[0] * sizeof *xs[k].lane_rec);
        if (!xs[k].lane_rec)
            goto nomem;
        for (int64_t b = 0; b < info.shape[0]; b++)
            xs[k].lane_rec[b] = -1;
    }

    if ((rc = clapp_source_start(s.src)) < 0) {
        fprintf(stderr, "clapp: error: cannot start decoding (status %d)\n", rc);
        status = CLI_FAILED;
        goto done;
    }
    while ((rc = clapp_source_next(s.src, &blk)) > 0) {
        if (clapp_graph_process(&s.graph, blk, err, sizeof err) < 0) {
            fprintf(stderr, "clapp: error: %s\n", err);
            status = CLI_FAILED;
            break;
        }
        for (int k = 0; k < n_names; k++)
            if (observe(&xs[k], clapp_graph_output(&s.graph, xs[k].node)) < 0)
                goto nomem;
    }
    if (rc < 0 && status == CLI_OK) {
        fprintf(stderr, "clapp: error: the source failed (status %d)\n", rc);
        status = CLI_FAILED;
    }
    if (clapp_graph_finish(&s.graph, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        status = CLI_FAILED;
    }
    for (int k = 0; k < n_names; k++) {
        const clapp_stream_info *si = xs[k].node ? &s.graph.nodes[xs[k].node].out_info : &info;
        for (int64_t r = 0; r < xs[k].n_recs; r++)
            if (write_sidecar(out_dir, &xs[k], &xs[k].recs[r], si, s.pd.elems[xs[k].node].type,
                              o.checkpoint, ckpt_blocks, o.pipe) != CLI_OK)
                status = CLI_FAILED;
    }
    {
        int32_t failed = clapp_source_failed_count(s.src), done_n = clapp_source_done_count(s.src);
        if (o.verbosity > 0)
            fprintf(stderr, "clapp: extracted %d element(s) from %d file(s) into %s; %d failed\n",
                    n_names, done_n, out_dir, failed);
        if (failed > 0 && status == CLI_OK)
            status = CLI_FAILED;
    }
    goto done;
nomem:
    fprintf(stderr, "clapp: error: out of memory\n");
    status = CLI_FAILED;
    goto done;
usage_err:
    fprintf(stderr, "clapp: error: %s\n", err);
    status = CLI_USAGE;
done:
    for (int k = 0; xs && k < n_names; k++) {
        for (int64_t r = 0; r < xs[k].n_recs; r++)
            free(xs[k].recs[r].key);
        free(xs[k].recs);
        free(xs[k].lane_rec);
    }
    free(xs);
    free(names);
    free(ckpt_blocks);
    cli_session_close(&s);
    return status;
}
