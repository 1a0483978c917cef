/* The frozen features a probe sees, captured once and replayed (probe_cache.h). */
#include "probe_cache.h"
#include "clapp/plugin_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

uint64_t cli_mix64(uint64_t z)
{
    return clapp_mix64(z + 0x9e3779b97f4a7c15ull);
}

int cli_probe_cache_init(cli_probe_cache *c, const clapp_stream_info *in, cli_cache_form form)
{
    int32_t lanes = (int32_t)in->shape[0];
    memset(c, 0, sizeof *c);
    c->info = *in;
    c->form = form;
    c->C = in->shape[1];
    c->HW = 1;
    for (int32_t d = 3; d < in->ndim; d++)
        c->HW *= in->shape[d];
    c->F = c->C * c->HW;
    c->lane_seq = malloc((size_t)lanes * sizeof *c->lane_seq);
    c->lane_id = malloc((size_t)lanes * sizeof *c->lane_id);
    if (!c->lane_seq || !c->lane_id)
        return CLAPP_E_NOMEM;
    for (int32_t b = 0; b < lanes; b++)
        c->lane_seq[b] = c->lane_id[b] = -1;
    return CLAPP_OK;
}

static void close_mean(cli_probe_cache *c, cli_cached_seq *s)
{
    if (c->form != CLI_CACHE_MEAN || !s->sum)
        return;
    if (s->summed > 0) {
        for (int64_t f = 0; f < c->F; f++)
            s->x[f] = (float)(s->sum[f] / (double)s->summed);
        s->steps = 1;
    }
    free(s->sum);
    s->sum = NULL;
}

/* The cache's sequence for lane b of this block, opening a new one when the
 * lane starts a sequence. Returns its index or -1 (out of memory). */
static int64_t seq_for_lane(cli_probe_cache *c, const clapp_lane *ln, int32_t b)
{
    cli_cached_seq *s;
    int64_t k = c->lane_seq[b];
    if (k >= 0 && c->lane_id[b] == ln->seq_id && !(ln->flags & CLAPP_LANE_SEQ_START))
        return k;
    if (k >= 0)
        close_mean(c, &c->seq[k]);
    if (c->n_seq == c->cap_seq) {
        int64_t cap = c->cap_seq ? 2 * c->cap_seq : 256;
        cli_cached_seq *ns = realloc(c->seq, (size_t)cap * sizeof *ns);
        if (!ns)
            return -1;
        c->seq = ns;
        c->cap_seq = cap;
    }
    s = &c->seq[c->n_seq];
    memset(s, 0, sizeof *s);
    s->class_label = ln->class_label;
    s->pts0 = ln->pts;
    s->name = strdup(ln->seq_name ? ln->seq_name : "?");
    if (!s->name)
        return -1;
    if (c->form == CLI_CACHE_MEAN) {
        s->sum = calloc((size_t)c->F, sizeof *s->sum);
        s->x = malloc((size_t)c->F * sizeof *s->x);
        s->cap = 1;
        if (!s->sum || !s->x)
            return -1;
    }
    c->lane_seq[b] = c->n_seq;
    c->lane_id[b] = ln->seq_id;
    return c->n_seq++;
}

static int grow_steps(cli_probe_cache *c, cli_cached_seq *s, int64_t steps)
{
    if (steps <= s->cap)
        return 0;
    int64_t cap = s->cap ? s->cap : 256;
    while (cap < steps)
        cap *= 2;
    float *nx = realloc(s->x, (size_t)(cap * c->F) * sizeof *nx);
    if (!nx)
        return -1;
    s->x = nx;
    s->cap = cap;
    return 0;
}

static int store_labels(cli_cached_seq *s, const clapp_lane *ln)
{
    int64_t end = ln->label_pts + ln->n_labels;
    if (!ln->labels || ln->n_labels <= 0 || ln->label_pts < 0)
        return 0;
    if (end > s->cap_labels) {
        int64_t cap = s->cap_labels ? s->cap_labels : 1024;
        while (cap < end)
            cap *= 2;
        int32_t *nl = realloc(s->labels, (size_t)cap * sizeof *nl);
        if (!nl)
            return -1;
        for (int64_t i = s->cap_labels; i < cap; i++)
            nl[i] = -1;
        s->labels = nl;
        s->cap_labels = cap;
    }
    memcpy(s->labels + ln->label_pts, ln->labels, (size_t)ln->n_labels * sizeof *ln->labels);
    if (end > s->n_labels)
        s->n_labels = end;
    return 0;
}

int cli_probe_cache_capture(cli_probe_cache *c, const clapp_block *blk)
{
    int64_t T, C = c->C, HW = c->HW, F = c->F;
    if (!blk)
        return CLAPP_OK;
    T = blk->x.shape[2];
    if (blk->label_rate > 0)
        c->label_rate = blk->label_rate;
    for (int32_t b = 0; b < blk->lanes; b++) {
        const clapp_lane *ln = &blk->lane[b];
        const float *xb = blk->x.data + (int64_t)b * C * T * HW;
        cli_cached_seq *s;
        int64_t k;
        if (ln->seq_id < 0 || ln->len <= 0)
            continue;
        k = seq_for_lane(c, ln, b);
        if (k < 0)
            return CLAPP_E_NOMEM;
        s = &c->seq[k];
        if (store_labels(s, ln) < 0)
            return CLAPP_E_NOMEM;
        if (c->form == CLI_CACHE_MEAN) {
            for (int64_t ch = 0; ch < C; ch++)
                for (int32_t t = 0; t < ln->len; t++)
                    for (int64_t p = 0; p < HW; p++)
                        s->sum[ch * HW + p] += xb[(ch * T + t) * HW + p];
            s->summed += ln->len;
            continue;
        }
        if (grow_steps(c, s, s->steps + ln->len) < 0)
            return CLAPP_E_NOMEM;
        for (int32_t t = 0; t < ln->len; t++) {
            float *row = s->x + (s->steps + t) * F;
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t p = 0; p < HW; p++)
                    row[ch * HW + p] = xb[(ch * T + t) * HW + p];
        }
        s->steps += ln->len;
    }
    return CLAPP_OK;
}

void cli_probe_cache_close(cli_probe_cache *c)
{
    for (int64_t k = 0; k < c->n_seq; k++)
        close_mean(c, &c->seq[k]);
}

/* Label of stored step j of s, as a frame probe reads it (the label of the
 * step's centre), or -1. */
static int32_t step_label(const cli_probe_cache *c, const cli_cached_seq *s, int64_t j)
{
    double pos;
    int64_t i;
    if (c->label_rate <= 0 || !s->labels)
        return -1;
    pos = ((double)s->pts0 + (double)j + 0.5) * c->label_rate / c->info.rate;
    i = (int64_t)floor(pos);
    return i >= 0 && i < s->n_labels ? s->labels[i] : -1;
}

int64_t cli_probe_cache_count(const cli_probe_cache *c, int32_t classes, int64_t *counts)
{
    int64_t n = 0;
    if (counts)
        memset(counts, 0, (size_t)classes * sizeof *counts);
    for (int64_t k = 0; k < c->n_seq; k++) {
        const cli_cached_seq *s = &c->seq[k];
        if (c->form == CLI_CACHE_MEAN) {
            if (s->steps > 0 && s->class_label >= 0 && s->class_label < classes) {
                n++;
                if (counts)
                    counts[s->class_label]++;
            }
            continue;
        }
        for (int64_t j = 0; j < s->steps; j++) {
            int32_t y = step_label(c, s, j);
            if (y >= 0 && y < classes) {
                n++;
                if (counts)
                    counts[y]++;
            }
        }
    }
    return n;
}

void cli_probe_cache_free(cli_probe_cache *c)
{
    for (int64_t k = 0; k < c->n_seq; k++) {
        free(c->seq[k].name);
        free(c->seq[k].x);
        free(c->seq[k].sum);
        free(c->seq[k].labels);
    }
    free(c->seq);
    free(c->lane_seq);
    free(c->lane_id);
    memset(c, 0, sizeof *c);
}

int64_t cli_probe_cache_blocks(const cli_probe_cache *c)
{
    const int64_t T = c->info.shape[2], lanes = c->info.shape[0];
    int64_t chunks = 0;
    for (int64_t k = 0; k < c->n_seq; k++)
        chunks += (c->seq[k].steps + T - 1) / T;
    return (chunks + lanes - 1) / lanes;
}

/* A replay unit: steps [start, start + len) of sequence seq. */
typedef struct cache_chunk {
    int64_t seq, start;
    int32_t len;
} cache_chunk;

int cli_probe_cache_replay(const cli_probe_cache *c, const clapp_plugin_desc *desc, void *inst,
                           uint64_t shuffle_seed)
{
    const int32_t lanes = (int32_t)c->info.shape[0];
    const int64_t T = c->info.shape[2], C = c->C, HW = c->HW, F = c->F;
    cache_chunk *chunks = NULL;
    clapp_block blk;
    int64_t n = 0, cap = 0;
    int rc = CLAPP_OK;

    memset(&blk, 0, sizeof blk);
    for (int64_t k = 0; k < c->n_seq; k++)
        for (int64_t start = 0; start < c->seq[k].steps; start += T) {
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                cache_chunk *nc = realloc(chunks, (size_t)cap * sizeof *nc);
                if (!nc) {
                    rc = CLAPP_E_NOMEM;
                    goto out;
                }
                chunks = nc;
            }
            int64_t left = c->seq[k].steps - start;
            chunks[n++] = (cache_chunk){k, start, (int32_t)(left < T ? left : T)};
        }
    if (shuffle_seed) {
        uint64_t st = shuffle_seed;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)((st = cli_mix64(st)) % (uint64_t)(i + 1));
            cache_chunk tmp = chunks[i];
            chunks[i] = chunks[j];
            chunks[j] = tmp;
        }
    }
    blk.x.ndim = c->info.ndim;
    memcpy(blk.x.shape, c->info.shape, sizeof blk.x.shape);
    blk.lanes = lanes;
    blk.rate = c->info.rate;
    blk.label_rate = c->label_rate;
    blk.lane = calloc((size_t)lanes, sizeof *blk.lane);
    if (!blk.lane || clapp_tensor_alloc(&blk.x) < 0) {
        rc = CLAPP_E_NOMEM;
        goto out;
    }
    for (int64_t i = 0; i < n; i += lanes) {
        clapp_tensor_zero(&blk.x);
        for (int32_t b = 0; b < lanes; b++) {
            clapp_lane *ln = &blk.lane[b];
            memset(ln, 0, sizeof *ln);
            ln->seq_id = -1;
            ln->class_label = -1;
            if (i + b >= n)
                continue;
            const cache_chunk *ch = &chunks[i + b];
            const cli_cached_seq *s = &c->seq[ch->seq];
            float *xb = blk.x.data + (int64_t)b * C * T * HW;
            for (int32_t t = 0; t < ch->len; t++) {
                const float *row = s->x + (ch->start + t) * F;
                for (int64_t cc = 0; cc < C; cc++)
                    for (int64_t p = 0; p < HW; p++)
                        xb[(cc * T + t) * HW + p] = row[cc * HW + p];
            }
            ln->seq_id = i + b;
            ln->seq_name = s->name;
            ln->flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
            ln->len = ch->len;
            ln->pts = s->pts0 + ch->start;
            ln->class_label = s->class_label;
            ln->labels = s->labels;
            ln->n_labels = (int32_t)s->n_labels;
            ln->label_pts = 0;
        }
        rc = desc->forward(inst, &blk, NULL);
        if (rc < 0)
            goto out;
    }
out:
    clapp_tensor_free(&blk.x);
    free(blk.lane);
    free(chunks);
    return rc;
}
