/* twin_step — one training step of a pipeline through the graph, with
 * everything an independent implementation (tools/torch_twin.py) needs to
 * redo the same step and compare: the resolved pipeline, the initial
 * weights, the gradients before the optimizer step, the updated weights and
 * the random draws of every loss element.
 *
 *   twin_step PIPE --input X.npy --out DIR [--seed S] [--load CKPT] [--set NAME.KEY=VALUE]...
 *
 * X.npy: little-endian float32, C order, shape [B, T] or [B, 1, T] (mono
 * audio: B lanes of T samples, each lane one whole sequence, so layers pad
 * both ends). The source's lanes/block are replaced by B and T.
 * DIR receives pipeline.txt (clapp_pipedesc_dump: every value explicit),
 * init.safetensors (checkpoint before the step; from --load if given),
 * grads.safetensors ("element.param" gradients of the step), after.safetensors
 * (checkpoint after the Adam step) and draws.json (per loss element: window,
 * lane ranges, pool and pair offsets, the negative indices in the loss's own
 * layout, "neg_layout" "per_step" (N per (context, k) pair, the default
 * neg_draw) or "shared" (N per context for every k), with "n_neg" entries
 * per half, and the loss value).
 *
 * The step is one clapp_graph_process(learn=1). To see the gradients, which
 * the optimizer zeroes as it steps, the optimizer slots read zero tensors
 * during that call (so it moves nothing: Adam with g = 0 from zero moments
 * gives exactly 0); then the real gradients are written out, the slots
 * pointed back at them, the step counter rewound and the optimizer stepped:
 * the same arithmetic as the plain call, in two halves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/checkpoint.h"
#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "learning/loss_clapp.h"

#define TS_ERR(...)                                                   \
    do {                                                              \
        snprintf(err, sizeof err, __VA_ARGS__);                       \
        goto fail;                                                    \
    } while (0)

/* A float32 C-order .npy of 2 or 3 dims: data and shape, or NULL with msg. */
static float *read_npy(const char *path, int64_t shape[3], int *ndim, char *msg, size_t cap)
{
    FILE *f = fopen(path, "rb");
    unsigned char pre[10];
    char *hdr = NULL;
    float *data = NULL;
    size_t hlen, n = 1;
    const char *p;

    *ndim = 0;
    if (!f) {
        snprintf(msg, cap, "tools/perf/twin_step.c: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) || pre[6] != 1) {
        snprintf(msg, cap, "tools/perf/twin_step.c: %s is not a version-1 .npy file", path);
        goto fail;
    }
    hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    hdr = calloc(hlen + 1, 1);
    if (!hdr || fread(hdr, 1, hlen, f) != hlen) {
        snprintf(msg, cap, "tools/perf/twin_step.c: %s: truncated header", path);
        goto fail;
    }
    if (!strstr(hdr, "'descr': '<f4'") || !strstr(hdr, "'fortran_order': False") ||
        !(p = strstr(hdr, "'shape': ("))) {
        snprintf(msg, cap, "tools/perf/twin_step.c: %s: need little-endian float32 in C order", path);
        goto fail;
    }
    p += strlen("'shape': (");
    while (*p && *p != ')' && *ndim < 3) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p)
            break;
        shape[(*ndim)++] = v;
        n *= (size_t)v;
        p = end;
        while (*p == ',' || *p == ' ')
            p++;
    }
    if (*p != ')' || *ndim < 2) {
        snprintf(msg, cap, "tools/perf/twin_step.c: %s: shape must be (B, T) or (B, 1, T)", path);
        goto fail;
    }
    data = malloc(n * sizeof(float) + 1);
    if (!data || fread(data, sizeof(float), n, f) != n) {
        snprintf(msg, cap, "tools/perf/twin_step.c: %s: truncated data", path);
        free(data);
        data = NULL;
    }
fail:
    free(hdr);
    fclose(f);
    return data;
}

/* safetensors with the given F32 tensors (header padded to 8 bytes). */
static int write_safetensors(const char *path, char **names, clapp_tensor **ts, int n)
{
    FILE *f = fopen(path, "wb");
    char *hdr = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&hdr, &len);
    uint64_t off = 0, hl;
    int rc = -1;

    if (!f || !m)
        goto done;
    fputc('{', m);
    for (int i = 0; i < n; i++) {
        uint64_t bytes = (uint64_t)clapp_tensor_numel(ts[i]) * sizeof(float);
        fprintf(m, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", names[i]);
        for (int d = 0; d < ts[i]->ndim; d++)
            fprintf(m, "%s%lld", d ? "," : "", (long long)ts[i]->shape[d]);
        fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                (unsigned long long)(off + bytes));
        off += bytes;
    }
    fputc('}', m);
    while ((ftell(m) % 8) != 0)
        fputc(' ', m);
    fclose(m);
    m = NULL;
    hl = len;
    for (int i = 0; i < 8; i++)
        fputc((int)((hl >> (8 * i)) & 0xff), f);
    if (fwrite(hdr, 1, len, f) != len)
        goto done;
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)clapp_tensor_numel(ts[i]);
        if (fwrite(ts[i]->data, sizeof(float), k, f) != k)
            goto done;
    }
    rc = 0;
done:
    if (m)
        fclose(m);
    free(hdr);
    if (f && fclose(f) != 0)
        rc = -1;
    return rc;
}

static void json_i32(FILE *f, const char *key, const int32_t *v, int64_t n)
{
    if (key)
        fprintf(f, "\"%s\":", key);
    fputc('[', f);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", (int)v[i]);
    fputs("]", f);
}

static void json_i64(FILE *f, const char *key, const int64_t *v, int64_t n)
{
    fprintf(f, "\"%s\":[", key);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, "%s%lld", i ? "," : "", (long long)v[i]);
    fputs("]", f);
}

/* Per loss element: its draws (clapp_loss_last_draws) and its loss. */
static int write_draws(const char *path, const clapp_graph *g)
{
    FILE *f = fopen(path, "w");
    int first = 1;
    if (!f)
        return -1;
    fputs("{\"losses\":[", f);
    for (int i = 1; i < g->n; i++) {
        const clapp_node *nd = &g->nodes[i];
        clapp_loss_draws d;
        clapp_loss *flat = clapp_loss_clapp_flat(nd->loss_form, nd->loss_self);
        if (nd->kind != CLAPP_KIND_LOSS || !flat || clapp_loss_last_draws(flat, &d) < 0)
            continue;
        fprintf(f, "%s\n{\"name\":\"%s\",\"loss\":%.17g,\"pairs\":%lld,\"lanes\":%d,\"steps\":%d,"
                "\"negatives\":%d,\"w0\":%d,\"contexts\":%lld,\"pos_active\":%.6f,\"neg_active\":%.6f,",
                first ? "" : ",", nd->pe->name, nd->last.loss, (long long)nd->last.pairs, d.lanes,
                d.steps, d.negatives, d.w0, (long long)d.contexts, nd->last.pos_active,
                nd->last.neg_active);
        first = 0;
        json_i32(f, "lo", d.lo, d.lanes);
        fputc(',', f);
        json_i32(f, "hi", d.hi, d.lanes);
        fputc(',', f);
        json_i64(f, "pool_off", d.pool_off, d.lanes + 1);
        fputc(',', f);
        json_i64(f, "pair_off", d.pair_off, d.steps + 1);
        fputc(',', f);
        json_i64(f, "ctx_off", d.ctx_off, d.lanes);
        /* the negatives exactly as the loss used them: per step, entry
         * (pair_off[k-1] + i) * N + n for pair i of step k; shared,
         * (context row) * N + n for every k (clapp_loss_draws in loss.h) */
        fprintf(f, ",\"neg_layout\":\"%s\",\"n_neg\":%lld,\"neg\":[",
                d.per_step ? "per_step" : "shared", (long long)d.n_neg);
        for (int h = 0; h < 2; h++) {
            if (!d.neg[h])
                break;
            fputs(h ? "," : "", f);
            json_i32(f, NULL, d.neg[h], d.n_neg);
        }
        fputs("]}", f);
    }
    fputs("\n]}\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *pipe = NULL, *input = NULL, *outdir = NULL, *load = NULL;
    uint64_t seed = 1;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, status = 1, ndim = 0;
    int64_t xshape[3] = {0, 0, 0}, B, T;
    float *x = NULL;
    clapp_host host = {sizeof(clapp_host), NULL, NULL};
    clapp_registry reg;
    clapp_pipeline_desc pd;
    clapp_graph g;
    clapp_graph_params gp;
    clapp_stream_info src;
    clapp_block blk;
    clapp_ckpt_options co = {0, 1};
    char err[4096] = "", path[2048];
    clapp_tensor *zeros = NULL, **real = NULL;
    char **names = NULL;
    int reg_ok = 0;
    FILE *f;

    memset(&pd, 0, sizeof pd);
    memset(&g, 0, sizeof g);
    memset(&blk, 0, sizeof blk);
    if (!sets)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--input") && i + 1 < argc)
            input = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            outdir = argv[++i];
        else if (!strcmp(argv[i], "--load") && i + 1 < argc)
            load = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc)
            sets[n_sets++] = argv[++i];
        else if (argv[i][0] != '-' && !pipe)
            pipe = argv[i];
        else
            pipe = NULL, i = argc;
    }
    if (!pipe || !input || !outdir) {
        fprintf(stderr, "usage: twin_step PIPE --input X.npy --out DIR [--seed S] [--load CKPT] "
                        "[--set NAME.KEY=VALUE]...\n");
        free(sets);
        return 2;
    }
    if (strlen(outdir) > 1900)
        TS_ERR("tools/perf/twin_step.c: output folder name too long");
    if (mkdir(outdir, 0755) < 0 && errno != EEXIST)
        TS_ERR("tools/perf/twin_step.c: cannot create %s: %s", outdir, strerror(errno));
    x = read_npy(input, xshape, &ndim, err, sizeof err);
    if (!x)
        goto fail;
    if (ndim == 3 && xshape[1] != 1)
        TS_ERR("tools/perf/twin_step.c: %s: shape (B, %lld, T) is not mono", input,
               (long long)xshape[1]);
    B = xshape[0];
    T = xshape[ndim - 1];

    if (clapp_registry_init_beside_exe(&reg, &host, "lib/clapp/plugins") < 0)
        TS_ERR("tools/perf/twin_step.c: cannot initialise the element registry");
    reg_ok = 1;
    if (clapp_pipedesc_parse_file(&pd, pipe, err, sizeof err) < 0)
        goto fail;
    for (int i = 0; i < n_sets; i++)
        if (clapp_pipedesc_set(&pd, sets[i], err, sizeof err) < 0)
            goto fail;
    if (clapp_pipedesc_resolve(&pd, &reg, err, sizeof err) < 0)
        goto fail;

    memset(&src, 0, sizeof src);
    src.ndim = 3;
    src.shape[0] = B;
    src.shape[1] = 1;
    src.shape[2] = T;
    src.rate = (double)clapp_param_find(pd.elems[0].values, pd.elems[0].desc->n_params, "rate")->i;
    clapp_graph_default_params(&gp);
    gp.seed = seed;
    if (clapp_graph_create(&g, &pd, &src, &gp, &host, err, sizeof err) < 0)
        goto fail;
    if (load && clapp_ckpt_load(&g, load, &co, err, sizeof err) < 0)
        goto fail;

    snprintf(path, sizeof path, "%s/pipeline.txt", outdir);
    if (!(f = fopen(path, "w")))
        TS_ERR("tools/perf/twin_step.c: cannot write %s", path);
    clapp_pipedesc_dump(&pd, f);
    if (fclose(f) != 0)
        TS_ERR("tools/perf/twin_step.c: cannot write %s", path);
    snprintf(path, sizeof path, "%s/init.safetensors", outdir);
    if (clapp_ckpt_save(&g, path, &co, err, sizeof err) < 0)
        goto fail;

    blk.x.ndim = 3;
    memcpy(blk.x.shape, src.shape, sizeof src.shape);
    if (clapp_tensor_alloc(&blk.x) < 0)
        TS_ERR("tools/perf/twin_step.c: out of memory for the block");
    memcpy(blk.x.data, x, sizeof(float) * (size_t)(B * T));
    blk.lanes = (int32_t)B;
    blk.lane = calloc((size_t)B, sizeof *blk.lane);
    blk.rate = src.rate;
    zeros = calloc((size_t)g.optim.n + 1, sizeof *zeros);
    real = calloc((size_t)g.optim.n + 1, sizeof *real);
    names = calloc((size_t)g.optim.n + 1, sizeof *names);
    if (!blk.lane || !zeros || !real || !names)
        TS_ERR("tools/perf/twin_step.c: out of memory");
    for (int32_t b = 0; b < B; b++) {
        blk.lane[b].seq_id = b;
        blk.lane[b].seq_name = "twin";
        blk.lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        blk.lane[b].len = (int32_t)T;
        blk.lane[b].class_label = -1;
    }

    /* The optimizer reads zeros during the graph step (see the top comment). */
    for (int32_t i = 0; i < g.optim.n; i++) {
        clapp_optim_slot *s = &g.optim.slots[i];
        real[i] = s->grad;
        names[i] = s->name;
        zeros[i].ndim = 1;
        zeros[i].shape[0] = clapp_tensor_numel(s->grad);
        if (clapp_tensor_alloc(&zeros[i]) < 0)
            TS_ERR("tools/perf/twin_step.c: out of memory");
        s->grad = &zeros[i];
    }
    if (clapp_graph_process(&g, &blk, err, sizeof err) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/grads.safetensors", outdir);
    if (write_safetensors(path, names, real, g.optim.n) < 0)
        TS_ERR("tools/perf/twin_step.c: cannot write %s", path);
    for (int32_t i = 0; i < g.optim.n; i++)
        g.optim.slots[i].grad = real[i];
    g.optim.t--;
    clapp_optim_step(&g.optim);

    snprintf(path, sizeof path, "%s/after.safetensors", outdir);
    if (clapp_ckpt_save(&g, path, &co, err, sizeof err) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/draws.json", outdir);
    if (write_draws(path, &g) < 0)
        TS_ERR("tools/perf/twin_step.c: cannot write %s", path);
    status = 0;
fail:
    if (status)
        fprintf(stderr, "twin_step: %s\n", err[0] ? err : "failed");
    if (real)
        for (int32_t i = 0; i < g.optim.n; i++)
            if (real[i])
                g.optim.slots[i].grad = real[i];
    for (int32_t i = 0; zeros && i < g.optim.n; i++)
        clapp_tensor_free(&zeros[i]);
    free(zeros);
    free(real);
    free(names);
    free(blk.lane);
    clapp_tensor_free(&blk.x);
    clapp_graph_destroy(&g);
    clapp_pipedesc_free(&pd);
    if (reg_ok)
        clapp_registry_free(&reg);
    free(x);
    free(sets);
    return status;
}
