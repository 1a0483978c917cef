/* conv3d plugin: forward against a direct double-precision Conv3d -> ReLU ->
 * BN -> MaxPool, streaming equivalence under block cuts, finite differences
 * of every gradient, the explicit local form of dW, BatchNorm running
 * statistics, seeded initialisation, refusals, and a timing of the paper's
 * video layer 1.
 *
 * The plugin is loaded with dlopen and driven through its descriptor, as a
 * host would, without the graph runtime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

typedef struct cfg {
    int64_t cin, out, kt, kh, kw, st, sh, sw, pt, ph, pw;
    int     relu, bias, bn, pool;
    double  mom;  /* 0: the default 0.1 */
} cfg;

typedef struct fixture {
    void                    *so;
    const clapp_plugin_desc *desc;
    clapp_host               host;
    tu_log                   log;
} fixture;

/* One plugin instance plus host-owned blocks of the configured shape. */
typedef struct layer {
    const clapp_plugin_desc *d;
    void                    *self;
    cfg                      c;
    int64_t                  B, T, H, W, To, Ho, Wo, Q;
    clapp_stream_info        oinfo;
    clapp_block              in, out;
    clapp_tensor            *w, *gw, *b, *gb, *gm, *ggm, *bt, *gbt, *rm, *rv;
} layer;

#define BN_EPS 1e-5

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t rng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_unif(uint64_t *st) /* U(-1, 1) */
{
    return (float)((double)(rng_next(st) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t ref_len(const cfg *c, int64_t n)
{
    return n + 2 * c->pt >= c->kt ? (n + 2 * c->pt - c->kt) / c->st + 1 : 0;
}

static void fill_values(const clapp_plugin_desc *d, const cfg *c, clapp_param_value *v)
{
    for (int32_t i = 0; i < d->n_params; i++) {
        const clapp_param_desc *p = &d->params[i];
        const char *n = p->name;
        memset(&v[i], 0, sizeof v[i]);
        v[i].name = n;
        v[i].s = p->def;
        if (p->type == CLAPP_PARAM_INT)
            v[i].i = strtoll(p->def, NULL, 10);
        if (p->type == CLAPP_PARAM_BOOL)
            v[i].i = strcmp(p->def, "true") == 0;
        v[i].f = p->type == CLAPP_PARAM_FLOAT ? strtod(p->def, NULL) : (double)v[i].i;
#define SETI(key, val)                      \
    if (strcmp(n, key) == 0) {              \
        v[i].i = (val);                     \
        v[i].f = (double)(val);             \
    }
        SETI("out", c->out) SETI("kt", c->kt) SETI("kh", c->kh) SETI("kw", c->kw) SETI("st", c->st)
        SETI("sh", c->sh) SETI("sw", c->sw) SETI("pt", c->pt) SETI("ph", c->ph) SETI("pw", c->pw)
        SETI("bias", c->bias) SETI("bn", c->bn)
#undef SETI
        if (strcmp(n, "activation") == 0) {
            v[i].i = c->relu ? 0 : 1;
            v[i].s = c->relu ? "relu" : "none";
        } else if (strcmp(n, "pool") == 0) {
            v[i].i = c->pool ? 1 : 0;
            v[i].s = c->pool ? "1x3x3" : "none";
        } else if (strcmp(n, "bn_momentum") == 0 && c->mom > 0) {
            v[i].f = c->mom;
        }
    }
}

static void layer_close(layer *L)
{
    if (L->d)
        L->d->destroy(L->self);
    clapp_tensor_free(&L->in.x);
    clapp_tensor_free(&L->out.x);
    free(L->in.lane);
    free(L->out.lane);
    memset(L, 0, sizeof *L);
}

static clapp_tensor *find_tensor(const clapp_named_tensor *list, int32_t n, const char *name, clapp_tensor **grad)
{
    for (int32_t i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0) {
            if (grad)
                *grad = list[i].grad;
            return list[i].value;
        }
    return NULL;
}

static void layer_open(layer *L, fixture *f, cfg c, uint64_t seed, int64_t B, int64_t T, int64_t H, int64_t W)
{
    clapp_param_value v[32];
    clapp_create_info ci;
    clapp_stream_info si;
    const clapp_named_tensor *list = NULL;
    int32_t n = 0;
    memset(L, 0, sizeof *L);
    assert_true(f->desc->n_params <= 32);
    fill_values(f->desc, &c, v);
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = &f->host;
    ci.instance_name = "conv";
    ci.values = v;
    ci.n_values = f->desc->n_params;
    ci.seed = seed;
    L->d = f->desc;
    L->c = c;
    L->B = B;
    L->T = T;
    L->H = H;
    L->W = W;
    assert_int_equal(L->d->create(&ci, &L->self), CLAPP_OK);
    memset(&si, 0, sizeof si);
    si.ndim = 5;
    si.shape[0] = B;
    si.shape[1] = c.cin;
    si.shape[2] = T;
    si.shape[3] = H;
    si.shape[4] = W;
    si.rate = 10.0;
    assert_int_equal(L->d->configure(L->self, &si, &L->oinfo), CLAPP_OK);
    assert_int_equal(L->oinfo.ndim, 5);
    assert_int_equal(L->oinfo.shape[0], B);
    assert_int_equal(L->oinfo.shape[1], c.out);
    assert_true(fabs(L->oinfo.rate - 10.0 / (double)c.st) < 1e-12);
    L->To = L->oinfo.shape[2];
    L->Ho = L->oinfo.shape[3];
    L->Wo = L->oinfo.shape[4];
    L->Q = L->Ho * L->Wo;
    assert_int_equal(clapp_tensor_alloc_shape(&L->in.x, 5, si.shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&L->out.x, 5, L->oinfo.shape), 0);
    L->in.lanes = L->out.lanes = (int32_t)B;
    L->in.lane = calloc((size_t)B, sizeof(clapp_lane));
    L->out.lane = calloc((size_t)B, sizeof(clapp_lane));
    assert_non_null(L->in.lane);
    assert_non_null(L->out.lane);
    L->in.rate = 10.0;
    L->out.rate = L->oinfo.rate;
    assert_int_equal(L->d->tensors(L->self, &list, &n), CLAPP_OK);
    assert_int_equal(n, 1 + (c.bias ? 1 : 0) + (c.bn ? 4 : 0));
    assert_string_equal(list[0].name, "weight");
    L->w = find_tensor(list, n, "weight", &L->gw);
    assert_int_equal(L->w->ndim, 5);
    assert_int_equal(L->w->shape[0], c.out);
    assert_int_equal(L->w->shape[1], c.cin);
    assert_int_equal(L->w->shape[2], c.kt);
    assert_int_equal(L->w->shape[3], c.kh);
    assert_int_equal(L->w->shape[4], c.kw);
    if (c.bias) {
        L->b = find_tensor(list, n, "bias", &L->gb);
        assert_non_null(L->b);
        assert_non_null(L->gb);
        assert_int_equal(L->b->shape[0], c.out);
    }
    if (c.bn) {
        clapp_tensor *g1 = NULL, *g2 = NULL;
        L->gm = find_tensor(list, n, "bn_weight", &L->ggm);
        L->bt = find_tensor(list, n, "bn_bias", &L->gbt);
        L->rm = find_tensor(list, n, "running_mean", &g1);
        L->rv = find_tensor(list, n, "running_var", &g2);
        assert_non_null(L->gm);
        assert_non_null(L->bt);
        assert_non_null(L->rm);
        assert_non_null(L->rv);
        assert_non_null(L->ggm);
        assert_non_null(L->gbt);
        assert_null(g1);   /* state, not trained */
        assert_null(g2);
    }
}

/* Give the parameters that init sets to constants random values, so that the
 * tests see bias, gamma and beta at work (gamma > 0: see pattern_of). */
static void randomize_params(layer *L, uint64_t *st)
{
    if (L->b)
        for (int64_t o = 0; o < L->c.out; o++)
            L->b->data[o] = 0.3f * rng_unif(st);
    if (L->gm)
        for (int64_t o = 0; o < L->c.out; o++) {
            L->gm->data[o] = 1.0f + 0.5f * rng_unif(st);
            L->bt->data[o] = 0.5f * rng_unif(st);
        }
}

static void layer_forward(layer *L)
{
    memcpy(L->out.lane, L->in.lane, (size_t)L->B * sizeof(clapp_lane));
    assert_int_equal(L->d->forward(L->self, &L->in, &L->out), CLAPP_OK);
}

static void zero_grads(layer *L)
{
    clapp_tensor *g[] = {L->gw, L->gb, L->ggm, L->gbt};
    for (int i = 0; i < 4; i++)
        if (g[i])
            clapp_tensor_zero(g[i]);
}

/* A sequence is [cin][n][H][W]; put frames [pos, pos + len) into lane b. */
static void set_lane(layer *L, int32_t b, const float *seq, int64_t n, int64_t pos, int64_t len, uint32_t flags,
                     int64_t seq_id)
{
    const int64_t HW = L->H * L->W;
    float *x = L->in.x.data + (int64_t)b * L->c.cin * L->T * HW;
    memset(x, 0, (size_t)(L->c.cin * L->T * HW) * sizeof(float));
    for (int64_t c = 0; c < L->c.cin; c++)
        for (int64_t t = 0; t < len; t++)
            memcpy(x + (c * L->T + t) * HW, seq + (c * n + pos + t) * HW, (size_t)HW * sizeof(float));
    memset(&L->in.lane[b], 0, sizeof(clapp_lane));
    L->in.lane[b].seq_id = seq_id;
    L->in.lane[b].flags = flags;
    L->in.lane[b].len = (int32_t)len;
    L->in.lane[b].class_label = -1;
}

static float *random_seq(uint64_t *st, const layer *L, int64_t n)
{
    int64_t m = L->c.cin * n * L->H * L->W;
    float *x = malloc((size_t)(m > 0 ? m : 1) * sizeof(float));
    assert_non_null(x);
    for (int64_t i = 0; i < m; i++)
        x[i] = rng_unif(st);
    return x;
}

/* Output frames past each lane's len are zero. */
static void check_tail_zero(const layer *L)
{
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t o = 0; o < L->c.out; o++)
            for (int64_t e = L->out.lane[b].len * L->Q; e < L->To * L->Q; e++)
                assert_true(L->out.x.data[((b * L->c.out + o) * L->To) * L->Q + e] == 0.0f);
}

/* ------------------------------------------------------------------------ */
/* Double-precision reference: Conv3d -> act -> BN -> MaxPool 1x3x3/(1,2,2)  */

typedef struct ref {
    int64_t n, To, hc, wc, ho, wo;
    double *pre;  /* [out][To][hc][wc] conv + bias */
    double *v;    /* same shape: act(pre), then BN of it */
    double *y;    /* [out][To][ho][wo] the layer output */
    int    *arg;  /* [out][To][ho][wo] pool argmax in the plane (first max) */
} ref;

static void ref_free(ref *r)
{
    free(r->pre);
    free(r->v);
    free(r->y);
    free(r->arg);
    memset(r, 0, sizeof *r);
}

/* Conv + bias + act for a sequence x [cin][n][H][W], straight from the definition. */
static void ref_conv(const layer *L, const float *x, int64_t n, ref *r)
{
    const cfg *c = &L->c;
    const int64_t H = L->H, W = L->W;
    int64_t m;
    memset(r, 0, sizeof *r);
    r->n = n;
    r->To = ref_len(c, n);
    r->hc = (H + 2 * c->ph - c->kh) / c->sh + 1;
    r->wc = (W + 2 * c->pw - c->kw) / c->sw + 1;
    r->ho = c->pool ? (r->hc - 3) / 2 + 1 : r->hc;
    r->wo = c->pool ? (r->wc - 3) / 2 + 1 : r->wc;
    m = c->out * r->To * r->hc * r->wc;
    r->pre = calloc((size_t)(m + 1), sizeof(double));
    r->v = calloc((size_t)(m + 1), sizeof(double));
    r->y = calloc((size_t)(c->out * r->To * r->ho * r->wo + 1), sizeof(double));
    r->arg = calloc((size_t)(c->out * r->To * r->ho * r->wo + 1), sizeof(int));
    assert_non_null(r->pre);
    assert_non_null(r->v);
    assert_non_null(r->y);
    assert_non_null(r->arg);
    for (int64_t o = 0; o < c->out; o++)
        for (int64_t j = 0; j < r->To; j++)
            for (int64_t y = 0; y < r->hc; y++)
                for (int64_t xx = 0; xx < r->wc; xx++) {
                    double a = L->b ? L->b->data[o] : 0.0;
                    int64_t e = ((o * r->To + j) * r->hc + y) * r->wc + xx;
                    for (int64_t ci = 0; ci < c->cin; ci++)
                        for (int64_t dt = 0; dt < c->kt; dt++) {
                            int64_t t = j * c->st + dt - c->pt;
                            if (t < 0 || t >= n)
                                continue;
                            for (int64_t dy = 0; dy < c->kh; dy++) {
                                int64_t iy = y * c->sh + dy - c->ph;
                                if (iy < 0 || iy >= H)
                                    continue;
                                for (int64_t dx = 0; dx < c->kw; dx++) {
                                    int64_t ix = xx * c->sw + dx - c->pw;
                                    if (ix < 0 || ix >= W)
                                        continue;
                                    a += (double)L->w->data[(((o * c->cin + ci) * c->kt + dt) * c->kh + dy) * c->kw +
                                                            dx] *
                                         (double)x[((ci * n + t) * H + iy) * W + ix];
                                }
                            }
                        }
                    r->pre[e] = a;
                    r->v[e] = c->relu && a < 0.0 ? 0.0 : a;
                }
}

/* Batch statistics of act(pre) over every valid (lane, frame, y, x): mean and biased variance. */
static void ref_stats(const cfg *c, const ref *rs, int nr, double *mean, double *var, int64_t *count)
{
    for (int64_t o = 0; o < c->out; o++) {
        double s = 0.0, q = 0.0;
        int64_t cnt = 0;
        for (int i = 0; i < nr; i++) {
            int64_t P = rs[i].hc * rs[i].wc;
            for (int64_t e = 0; e < rs[i].To * P; e++) {
                s += rs[i].v[o * rs[i].To * P + e];
                cnt++;
            }
        }
        mean[o] = cnt ? s / (double)cnt : 0.0;
        for (int i = 0; i < nr; i++) {
            int64_t P = rs[i].hc * rs[i].wc;
            for (int64_t e = 0; e < rs[i].To * P; e++) {
                double d = rs[i].v[o * rs[i].To * P + e] - mean[o];
                q += d * d;
            }
        }
        var[o] = cnt ? q / (double)cnt : 0.0;
        if (count)
            *count = cnt;
    }
}

/* BN with the given statistics (if bn), then pool (if pool), into y. */
static void ref_finish(const layer *L, ref *r, int bn, const double *mean, const double *var)
{
    const cfg *c = &L->c;
    const int64_t P = r->hc * r->wc, Q = r->ho * r->wo;
    for (int64_t o = 0; o < c->out; o++)
        for (int64_t j = 0; j < r->To; j++) {
            double *v = r->v + (o * r->To + j) * P;
            if (bn)
                for (int64_t e = 0; e < P; e++)
                    v[e] = L->gm->data[o] * (v[e] - mean[o]) / sqrt(var[o] + BN_EPS) + L->bt->data[o];
            for (int64_t oy = 0; oy < r->ho; oy++)
                for (int64_t ox = 0; ox < r->wo; ox++) {
                    int64_t q = (o * r->To + j) * Q + oy * r->wo + ox;
                    if (!c->pool) {
                        r->y[q] = v[oy * r->wc + ox];
                        r->arg[q] = (int)(oy * r->wc + ox);
                        continue;
                    }
                    int best = (int)(2 * oy * r->wc + 2 * ox);
                    for (int64_t dy = 0; dy < 3; dy++)
                        for (int64_t dx = 0; dx < 3; dx++) {
                            int i = (int)((2 * oy + dy) * r->wc + 2 * ox + dx);
                            if (v[i] > v[best])
                                best = i;
                        }
                    r->y[q] = v[best];
                    r->arg[q] = best;
                }
        }
}

/* Reference outputs of whole sequences run side by side in one block:
 * batch statistics over all of them (LEARN) or the running ones (FROZEN). */
static void ref_block(const layer *L, const float *const *xs, const int64_t *ns, int nr, int frozen, ref *rs)
{
    double mean[64], var[64];
    assert_true(L->c.out <= 64);
    for (int i = 0; i < nr; i++)
        ref_conv(L, xs[i], ns[i], &rs[i]);
    if (L->c.bn && frozen)
        for (int64_t o = 0; o < L->c.out; o++) {
            mean[o] = L->rm->data[o];
            var[o] = L->rv->data[o];
        }
    else if (L->c.bn)
        ref_stats(&L->c, rs, nr, mean, var, NULL);
    for (int i = 0; i < nr; i++)
        ref_finish(L, &rs[i], L->c.bn, mean, var);
}

/* max |lane b of the output - r->y| over the lane's frames, which must number r->To. */
static double lane_diff(const layer *L, int64_t b, const ref *r)
{
    double worst = 0.0;
    assert_int_equal(L->out.lane[b].len, r->To);
    assert_int_equal(r->ho, L->Ho);
    assert_int_equal(r->wo, L->Wo);
    for (int64_t o = 0; o < L->c.out; o++)
        for (int64_t e = 0; e < r->To * L->Q; e++) {
            double d = fabs((double)L->out.x.data[(b * L->c.out + o) * L->To * L->Q + e] - r->y[o * r->To * L->Q + e]);
            worst = d > worst ? d : worst;
        }
    return worst;
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                     */

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const clapp_plugin_entry *entry;
    if (!f)
        return -1;
    tu_host_init(&f->host, &f->log);
    f->so = dlopen(CLAPP_TEST_PLUGIN_DIR "/conv3d.so", RTLD_NOW | RTLD_LOCAL);
    if (!f->so) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        free(f);
        return -1;
    }
    entry = dlsym(f->so, CLAPP_PLUGIN_ENTRY_SYMBOL);
    if (!entry || entry->abi_major != CLAPP_ABI_MAJOR || entry->n_plugins != 1) {
        dlclose(f->so);
        free(f);
        return -1;
    }
    f->desc = entry->plugins[0];
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    if (f) {
        dlclose(f->so);
        tu_log_free(&f->log);
        free(f);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 0. Descriptor                                                             */

static void test_conv3d_descriptor(void **state)
{
    fixture *f = *state;
    const clapp_plugin_desc *d = f->desc;
    static const char *names[] = {"out", "kt", "kh", "kw", "st", "sh", "sw", "pt",
                                  "ph", "pw", "activation", "bias", "bn", "bn_momentum", "bn_eps", "pool"};
    static const char *defs[] = {"64", "1", "3", "3", "1", "1", "1", "0",
                                 "1", "1", "relu", "true", "false", "0.1", "1e-5", "none"};
    assert_string_equal(d->id, "conv3d");
    assert_int_equal(d->kind, CLAPP_KIND_LAYER);
    assert_int_equal(d->n_params, 16);
    for (int i = 0; i < 16; i++) {
        assert_string_equal(d->params[i].name, names[i]);
        assert_string_equal(d->params[i].def, defs[i]);
        assert_non_null(d->params[i].help);
    }
    assert_string_equal(d->params[10].choices, "relu|none");
    assert_string_equal(d->params[15].choices, "none|1x3x3");
    assert_int_equal(d->params[13].type, CLAPP_PARAM_FLOAT);
    assert_non_null(d->backward);
    assert_non_null(d->reset);
    assert_non_null(d->set_mode);
    assert_non_null(d->tensors);
    /* Exactly one exported symbol. */
    assert_non_null(dlsym(f->so, CLAPP_PLUGIN_ENTRY_SYMBOL));
    assert_null(dlsym(f->so, "conv3d_forward"));
}

/* ------------------------------------------------------------------------ */
/* 1. Whole sequences in one block == direct reference                       */

/* Three lanes: lengths n, n - n/3 and an idle one; one block holds them whole. */
static void check_whole(fixture *f, cfg c, int64_t n, int64_t H, int64_t W, int frozen, int64_t expect_to,
                        int64_t expect_ho, int64_t expect_wo, uint64_t seed)
{
    layer L;
    uint64_t st = seed * 7919u + 1;
    int64_t lens[3] = {n, n - n / 3, 0};
    float *x[3];
    const float *xs[2];
    ref rs[2];
    double worst = 0.0, scale = 0.0;
    layer_open(&L, f, c, seed, 3, n, H, W);
    randomize_params(&L, &st);
    assert_int_equal(L.Ho, expect_ho);
    assert_int_equal(L.Wo, expect_wo);
    assert_int_equal(ref_len(&c, n), expect_to);
    if (frozen) {
        for (int64_t o = 0; o < c.out; o++) {
            L.rm->data[o] = 0.3f + 0.2f * rng_unif(&st);
            L.rv->data[o] = 0.7f + 0.4f * rng_unif(&st);
        }
        assert_int_equal(L.d->set_mode(L.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    }
    for (int b = 0; b < 3; b++) {
        x[b] = random_seq(&st, &L, lens[b]);
        set_lane(&L, b, x[b], lens[b], 0, lens[b], lens[b] ? CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END : 0,
                 lens[b] ? b : -1);
    }
    layer_forward(&L);
    check_tail_zero(&L);
    assert_int_equal(L.out.lane[2].len, 0);
    xs[0] = x[0];
    xs[1] = x[1];
    ref_block(&L, xs, lens, 2, frozen, rs);
    assert_int_equal(rs[0].To, expect_to);
    for (int b = 0; b < 2; b++) {
        double d = lane_diff(&L, b, &rs[b]);
        assert_int_equal(L.out.lane[b].pts, 0);
        worst = d > worst ? d : worst;
        for (int64_t e = 0; e < c.out * rs[b].To * L.Q; e++)
            scale = fabs(rs[b].y[e]) > scale ? fabs(rs[b].y[e]) : scale;
        ref_free(&rs[b]);
    }
    printf("  whole cin=%lld out=%lld k=%lldx%lldx%lld s=%lldx%lldx%lld p=%lldx%lldx%lld %s%s%s%s n=%lld %lldx%lld"
           " -> [%lld, %lld, %lld]: max|diff| %.2e (max|y| %.2f)\n",
           (long long)c.cin, (long long)c.out, (long long)c.kt, (long long)c.kh, (long long)c.kw, (long long)c.st,
           (long long)c.sh, (long long)c.sw, (long long)c.pt, (long long)c.ph, (long long)c.pw,
           c.relu ? "relu" : "none", c.bn ? (frozen ? " bn(frozen)" : " bn") : "", c.pool ? " pool" : "",
           c.bias ? "" : " nobias", (long long)n, (long long)H, (long long)W, (long long)expect_to,
           (long long)expect_ho, (long long)expect_wo, worst, scale);
    assert_true(scale > 0.1);
    assert_true(worst < 2e-5 * (1.0 + scale));
    for (int b = 0; b < 3; b++)
        free(x[b]);
    layer_close(&L);
}

static void test_conv3d_whole_sequence(void **state)
{
    fixture *f = *state;
    /* Defaults: 1x3x3, stride 1, pad (0,1,1). */
    check_whole(f, (cfg){2, 4, 1, 3, 3, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0}, 5, 9, 7, 0, 5, 9, 7, 1);
    /* Paper layer 1 scaled down: 1x7x7 stride (1,2,2), no pad, BN, pool: 32x32 -> 13x13 -> 6x6. */
    check_whole(f, (cfg){3, 6, 1, 7, 7, 1, 2, 2, 0, 0, 0, 1, 1, 1, 1, 0}, 4, 32, 32, 0, 4, 6, 6, 2);
    /* Paper layer 2: 1x5x5 stride (1,2,2) pad (0,1,1), pool: 15x15 -> 7x7 -> 3x3. */
    check_whole(f, (cfg){4, 5, 1, 5, 5, 1, 2, 2, 0, 1, 1, 1, 1, 1, 1, 0}, 3, 15, 15, 0, 3, 3, 3, 3);
    /* Paper layer 4: 3x3x3 stride (3,1,1) pad (0,1,1), BN: 12 frames -> 4. */
    check_whole(f, (cfg){3, 5, 3, 3, 3, 3, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0}, 12, 6, 6, 0, 4, 6, 6, 4);
    /* Paper layer 5: the same + pool: 6x6 -> 2x2, 9 frames -> 3. */
    check_whole(f, (cfg){3, 5, 3, 3, 3, 3, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0}, 9, 6, 6, 0, 3, 2, 2, 5);
    /* ... and with BN in FROZEN mode (running statistics). */
    check_whole(f, (cfg){3, 5, 3, 3, 3, 3, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0}, 9, 6, 6, 1, 3, 2, 2, 6);
    /* Temporal pad and stride, mixed spatial strides/pads, no activation, pool over 3x8. */
    check_whole(f, (cfg){2, 3, 3, 3, 3, 2, 2, 1, 1, 0, 1, 0, 1, 0, 1, 0}, 9, 7, 8, 0, 5, 1, 3, 7);
    /* Stride larger than the kernel in time (frames skipped), pad > kt - 1, no bias. */
    check_whole(f, (cfg){2, 3, 2, 1, 3, 3, 1, 2, 2, 0, 1, 1, 0, 0, 0, 0}, 10, 5, 6, 0, 5, 5, 3, 8);
}

/* ------------------------------------------------------------------------ */
/* 2. Streaming: any block cut gives the whole-sequence output               */

#define MAX_SEQS 3

typedef struct lane_plan {
    int     idle;         /* blocks before the first sequence */
    int     stall_every;  /* every n-th block of a sequence brings no frames (0: never) */
    int     n_seqs;
    int64_t lens[MAX_SEQS];
} lane_plan;

static void check_streaming(fixture *f, cfg c, int64_t T, int64_t H, int64_t W, int frozen, uint64_t seed)
{
    const lane_plan plans[3] = {
        {0, 0, 2, {17, 4, 0}},
        {2, 3, 1, {23, 0, 0}},
        {1, 0, 3, {1, 9, 14}},
    };
    float *seqs[3][MAX_SEQS];
    float *got[3];
    int si[3] = {0, 0, 0}, idle[3], blk[3] = {0, 0, 0}, done = 0, checked = 0;
    int64_t pos[3] = {0, 0, 0}, have[3] = {0, 0, 0}, cap = 0;
    uint64_t st = seed;
    double worst = 0.0;
    layer L;

    layer_open(&L, f, c, seed, 3, T, H, W);
    randomize_params(&L, &st);
    if (frozen) {
        for (int64_t o = 0; o < c.out; o++) {
            L.rm->data[o] = 0.3f + 0.2f * rng_unif(&st);
            L.rv->data[o] = 0.7f + 0.4f * rng_unif(&st);
        }
        assert_int_equal(L.d->set_mode(L.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    }
    for (int b = 0; b < 3; b++) {
        idle[b] = plans[b].idle;
        for (int q = 0; q < plans[b].n_seqs; q++) {
            seqs[b][q] = random_seq(&st, &L, plans[b].lens[q]);
            cap = ref_len(&c, plans[b].lens[q]) > cap ? ref_len(&c, plans[b].lens[q]) : cap;
        }
    }
    for (int b = 0; b < 3; b++) {
        got[b] = calloc((size_t)(c.out * cap * L.Q + 1), sizeof(float));
        assert_non_null(got[b]);
    }
    while (done < 3) {
        uint32_t flags[3];
        for (int b = 0; b < 3; b++) {
            const lane_plan *pl = &plans[b];
            int64_t take, len;
            if (idle[b] > 0 || si[b] >= pl->n_seqs) {
                idle[b] -= idle[b] > 0;
                set_lane(&L, b, NULL, 0, 0, 0, 0, -1);
                flags[b] = 0;
                continue;
            }
            len = pl->lens[si[b]];
            flags[b] = pos[b] == 0 ? CLAPP_LANE_SEQ_START : 0;
            take = len - pos[b] < T ? len - pos[b] : T;
            if (pl->stall_every && blk[b] % pl->stall_every == pl->stall_every - 1)
                take = 0;
            if (pos[b] + take == len)
                flags[b] |= CLAPP_LANE_SEQ_END;
            set_lane(&L, b, seqs[b][si[b]], len, pos[b], take, flags[b], 10 * b + si[b]);
            pos[b] += take;
            blk[b]++;
        }
        layer_forward(&L);
        check_tail_zero(&L);
        for (int b = 0; b < 3; b++) {
            int64_t n = L.out.lane[b].len, len, nout;
            if (L.in.lane[b].seq_id < 0) {
                assert_int_equal(n, 0);
                continue;
            }
            len = plans[b].lens[si[b]];
            nout = ref_len(&c, len);
            assert_int_equal(L.out.lane[b].pts, have[b]);
            assert_true(have[b] + n <= nout);
            for (int64_t o = 0; o < c.out; o++)
                memcpy(got[b] + (o * nout + have[b]) * L.Q, L.out.x.data + (b * c.out + o) * L.To * L.Q,
                       (size_t)(n * L.Q) * sizeof(float));
            have[b] += n;
            if (!(flags[b] & CLAPP_LANE_SEQ_END))
                continue;
            /* Sequence complete: all frames, equal to the reference of the whole sequence. */
            assert_int_equal(have[b], nout);
            {
                ref r;
                const float *xs[1] = {seqs[b][si[b]]};
                ref_block(&L, xs, &len, 1, frozen, &r);
                for (int64_t e = 0; e < c.out * nout * L.Q; e++) {
                    double d = fabs((double)got[b][e] - r.y[e]);
                    worst = d > worst ? d : worst;
                }
                ref_free(&r);
            }
            checked++;
            si[b]++;
            pos[b] = 0;
            have[b] = 0;
            blk[b] = 0;
            if (si[b] == plans[b].n_seqs)
                done++;
        }
    }
    printf("  stream k=%lldx%lldx%lld s=%lld p=%lld%s%s block=%lld: %d sequences, max|diff| vs reference %.2e\n",
           (long long)c.kt, (long long)c.kh, (long long)c.kw, (long long)c.st, (long long)c.pt,
           c.bn ? " bn(frozen)" : "", c.pool ? " pool" : "", (long long)T, checked, worst);
    assert_int_equal(checked, 6);
    assert_true(worst < 5e-5);
    for (int b = 0; b < 3; b++) {
        for (int q = 0; q < plans[b].n_seqs; q++)
            free(seqs[b][q]);
        free(got[b]);
    }
    layer_close(&L);
}

static void test_conv3d_streaming(void **state)
{
    fixture *f = *state;
    const int64_t blocks[3] = {2, 5, 11};
    for (int bi = 0; bi < 3; bi++) {
        /* Paper layers 4/5: 3x3x3 stride (3,1,1) + pool. */
        check_streaming(f, (cfg){2, 3, 3, 3, 3, 3, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0}, blocks[bi], 7, 7, 0, 50);
        /* Temporal pad 1, stride 1, BN with running statistics. */
        check_streaming(f, (cfg){2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, blocks[bi], 5, 6, 1, 51);
        /* Stride > kernel (skipped frames), pad > kt - 1, no activation, spatial stride. */
        check_streaming(f, (cfg){2, 3, 2, 3, 3, 3, 2, 2, 2, 1, 0, 0, 1, 0, 0, 0}, blocks[bi], 7, 6, 0, 52);
        /* Paper layer 1 (kt = 1: no temporal context) with BN (frozen) and pool. */
        check_streaming(f, (cfg){1, 4, 1, 7, 7, 1, 2, 2, 0, 0, 0, 1, 1, 1, 1, 0}, blocks[bi], 16, 16, 1, 53);
    }
}

/* ------------------------------------------------------------------------ */
/* 3. Finite differences                                                     */

/* L = sum g * out over valid frames, in double. */
static double loss_of(const layer *L, const float *g)
{
    double sum = 0.0;
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t o = 0; o < L->c.out; o++)
            for (int64_t e = 0; e < L->out.lane[b].len * L->Q; e++) {
                int64_t i = (b * L->c.out + o) * L->To * L->Q + e;
                sum += (double)g[i] * (double)L->out.x.data[i];
            }
    return sum;
}

typedef struct fd_case {
    const float   *x[2];     /* whole sequences of lanes 0 and 1 (lane 1 may be absent) */
    int64_t        n[2];
    int            lanes;    /* 1 or 2 */
    int64_t        cut;      /* 0: each sequence in one block; else lane 0 in blocks of `cut`, test the 2nd */
    unsigned char *live[2];  /* per lane [out][To][ho][wo]: pool windows the loss sees (NULL: all) */
} fd_case;

/* Piecewise structure of the layer at the current values: the ReLU signs and
 * the argmax of each live pool window (of the pre-BN values: with gamma > 0,
 * BN keeps the order). */
static int64_t pattern_of(const layer *L, const fd_case *fc, int *pat)
{
    int64_t m = 0;
    for (int i = 0; i < fc->lanes; i++) {
        ref r;
        int64_t P;
        ref_conv(L, fc->x[i], fc->n[i], &r);
        P = r.hc * r.wc;
        /* Without BN, a live window's max sits >= gap above zero (drop_near_ties), so
         * only the argmaxes can change; with BN every ReLU sign moves the statistics. */
        for (int64_t e = 0; L->c.relu && (L->c.bn || !L->c.pool) && e < L->c.out * r.To * P; e++)
            pat[m++] = r.pre[e] > 0.0;
        if (L->c.pool) {
            ref_finish(L, &r, 0, NULL, NULL);
            for (int64_t e = 0; e < L->c.out * r.To * r.ho * r.wo; e++)
                pat[m++] = !fc->live[i] || fc->live[i][e] ? r.arg[e] : -1;
        }
        ref_free(&r);
    }
    return m;
}

/* Pool windows whose two largest values are closer than `gap` would flip
 * their argmax under most steps, and (with ReLU) a max below `gap` can cross
 * the ReLU kink: the loss ignores those windows (g = 0 there). */
static void drop_near_ties(const layer *L, fd_case *fc, float *g, double gap)
{
    for (int i = 0; i < fc->lanes; i++) {
        ref r;
        int64_t Q, first = fc->cut ? L->out.lane[0].pts : 0, len = L->out.lane[i].len;
        ref_conv(L, fc->x[i], fc->n[i], &r);
        ref_finish(L, &r, 0, NULL, NULL);
        Q = r.ho * r.wo;
        fc->live[i] = calloc((size_t)(L->c.out * r.To * Q + 1), 1);
        assert_non_null(fc->live[i]);
        for (int64_t o = 0; o < L->c.out; o++)
            for (int64_t j = 0; j < r.To; j++)
                for (int64_t q = 0; q < Q; q++) {
                    int64_t e = (o * r.To + j) * Q + q, oy = q / r.wo, ox = q % r.wo;
                    const double *v = r.v + (o * r.To + j) * r.hc * r.wc;
                    double second = -1e300;
                    for (int64_t dy = 0; dy < 3; dy++)
                        for (int64_t dx = 0; dx < 3; dx++) {
                            int64_t k = (2 * oy + dy) * r.wc + 2 * ox + dx;
                            if (k != r.arg[e] && v[k] > second)
                                second = v[k];
                        }
                    fc->live[i][e] = v[r.arg[e]] - second >= gap && (!L->c.relu || v[r.arg[e]] >= gap);
                    if (!fc->live[i][e] && j >= first && j < first + len)
                        g[((i * L->c.out + o) * L->To + (j - first)) * Q + q] = 0.0f;
                }
        ref_free(&r);
    }
}

static void run_case(layer *L, const fd_case *fc)
{
    if (fc->cut == 0) {
        for (int b = 0; b < fc->lanes; b++)
            set_lane(L, b, fc->x[b], fc->n[b], 0, fc->n[b], CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, b);
        layer_forward(L);
        return;
    }
    /* Blocks 1 and 2 of lane 0's sequence; block 2 (with carried context) is tested. */
    set_lane(L, 0, fc->x[0], fc->n[0], 0, fc->cut, CLAPP_LANE_SEQ_START, 0);
    layer_forward(L);
    set_lane(L, 0, fc->x[0], fc->n[0], fc->cut, fc->cut, 0, 0);
    layer_forward(L);
}

typedef struct fd_stats {
    double worst;  /* max |fd - analytic| / max(|analytic|, floor) */
    int    n, skipped;
} fd_stats;

static void fd_check_value(layer *L, const fd_case *fc, const float *g, const int *pat0, int *pat, int64_t npat,
                           float *v, double an, double eps, double floor_, fd_stats *s)
{
    float saved = *v;
    int kink = 0;
    double lp, lm, fd, den;
    for (int sgn = -1; sgn <= 1; sgn += 2) {
        *v = (float)(saved + sgn * eps);
        if (pattern_of(L, fc, pat) != npat || memcmp(pat, pat0, (size_t)npat * sizeof(int)) != 0)
            kink = 1;
    }
    *v = (float)(saved + eps);
    run_case(L, fc);
    lp = loss_of(L, g);
    *v = (float)(saved - eps);
    run_case(L, fc);
    lm = loss_of(L, g);
    *v = saved;
    if (kink) {
        s->skipped++;
        return;
    }
    fd = (lp - lm) / ((double)(float)(saved + eps) - (double)(float)(saved - eps));
    den = fabs(an) > floor_ ? fabs(an) : floor_;
    s->n++;
    if (fabs(fd - an) / den > s->worst)
        s->worst = fabs(fd - an) / den;
}

static void check_fd(fixture *f, cfg c, int64_t H, int64_t W, fd_case fc, uint64_t seed)
{
    /* A step that flips a ReLU sign or a pool argmax anywhere is skipped; with
     * pool, each weight moves every window of its channel, so many are. */
    const double eps = 3e-3;
    /* Inputs take a larger step: with BN every output moves with every input
     * (through the statistics), so float rounding of the whole block is the
     * noise, and the input gradients are smaller than the weights'. */
    const double eps_x = 1e-2;
    uint64_t st = seed;
    layer L;
    float *xs[2] = {NULL, NULL}, *g, *gw1, *gb1 = NULL, *gg1 = NULL, *gbt1 = NULL, *gin1;
    int *pat0, *pat;
    int64_t npat, n_out, n_in, T = fc.cut ? fc.cut : (fc.n[0] > fc.n[1] ? fc.n[0] : fc.n[1]);
    clapp_tensor gin, gt;
    fd_stats sw = {0}, sb = {0}, sg = {0}, sbt = {0}, sx = {0};
    double floor_;

    layer_open(&L, f, c, seed, fc.lanes, T, H, W);
    randomize_params(&L, &st);
    for (int b = 0; b < fc.lanes; b++) {
        xs[b] = random_seq(&st, &L, fc.n[b]);
        fc.x[b] = xs[b];
    }
    n_out = L.B * c.out * L.To * L.Q;
    n_in = clapp_tensor_numel(&L.in.x);
    g = calloc((size_t)n_out, sizeof(float));
    gw1 = malloc((size_t)clapp_tensor_numel(L.gw) * sizeof(float));
    gin1 = malloc((size_t)n_in * sizeof(float));
    pat0 = malloc(sizeof(int) * 200000);
    pat = malloc(sizeof(int) * 200000);
    assert_int_equal(clapp_tensor_alloc_shape(&gin, 5, L.in.x.shape), 0);
    assert_non_null(g);
    assert_non_null(gw1);
    assert_non_null(gin1);
    assert_non_null(pat0);
    assert_non_null(pat);
    run_case(&L, &fc);
    for (int64_t b = 0; b < L.B; b++)
        for (int64_t o = 0; o < c.out; o++)
            for (int64_t e = 0; e < L.out.lane[b].len * L.Q; e++)
                g[(b * c.out + o) * L.To * L.Q + e] = rng_unif(&st);
    if (c.pool) {
        int64_t nz = 0;
        drop_near_ties(&L, &fc, g, 0.02);
        for (int64_t i = 0; i < n_out; i++)
            nz += g[i] != 0.0f;
        assert_true(nz > n_out / 4);   /* most windows stay in the loss */
    }
    npat = pattern_of(&L, &fc, pat0);
    assert_true(npat < 200000);
    gt = L.out.x;
    gt.data = g;
    zero_grads(&L);
    assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
    memcpy(gw1, L.gw->data, (size_t)clapp_tensor_numel(L.gw) * sizeof(float));
    memcpy(gin1, gin.data, (size_t)n_in * sizeof(float));
    if (c.bias) {
        gb1 = malloc((size_t)c.out * sizeof(float));
        assert_non_null(gb1);
        memcpy(gb1, L.gb->data, (size_t)c.out * sizeof(float));
    }
    if (c.bn) {
        gg1 = malloc((size_t)c.out * sizeof(float));
        gbt1 = malloc((size_t)c.out * sizeof(float));
        assert_non_null(gg1);
        assert_non_null(gbt1);
        memcpy(gg1, L.ggm->data, (size_t)c.out * sizeof(float));
        memcpy(gbt1, L.gbt->data, (size_t)c.out * sizeof(float));
    }
    /* Backward accumulates: a second call doubles every gradient. */
    assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
    for (int64_t i = 0; i < clapp_tensor_numel(L.gw); i++)
        assert_float_equal(L.gw->data[i], 2.0f * gw1[i], 1e-5 * (1 + fabs(gw1[i])));
    for (int64_t i = 0; i < n_in; i++)
        assert_float_equal(gin.data[i], 2.0f * gin1[i], 1e-5 * (1 + fabs(gin1[i])));
    if (c.bn)
        for (int64_t o = 0; o < c.out; o++)
            assert_float_equal(L.ggm->data[o], 2.0f * gg1[o], 1e-5 * (1 + fabs(gg1[o])));
    /* Input frames past a lane's len get no gradient. */
    for (int64_t b = 0; b < L.B; b++)
        for (int64_t ci = 0; ci < c.cin; ci++)
            for (int64_t e = L.in.lane[b].len * L.H * L.W; e < L.T * L.H * L.W; e++)
                assert_true(gin1[(b * c.cin + ci) * L.T * L.H * L.W + e] == 0.0f);

    /* Relative error, with a floor at 5% of the largest weight gradient. */
    floor_ = 0.0;
    for (int64_t i = 0; i < clapp_tensor_numel(L.gw); i++)
        floor_ = fabs(gw1[i]) > floor_ ? fabs(gw1[i]) : floor_;
    floor_ *= 0.05;
    for (int64_t i = 0; i < clapp_tensor_numel(L.w); i++)
        fd_check_value(&L, &fc, g, pat0, pat, npat, &L.w->data[i], gw1[i], eps, floor_, &sw);
    for (int64_t o = 0; c.bias && o < c.out; o++)
        fd_check_value(&L, &fc, g, pat0, pat, npat, &L.b->data[o], gb1[o], eps, floor_, &sb);
    for (int64_t o = 0; c.bn && o < c.out; o++) {
        fd_check_value(&L, &fc, g, pat0, pat, npat, &L.gm->data[o], gg1[o], eps, floor_, &sg);
        fd_check_value(&L, &fc, g, pat0, pat, npat, &L.bt->data[o], gbt1[o], eps, floor_, &sbt);
    }
    /* Input gradient: this block's frames only (in the cut case, frames cut..2cut-1 of the sequence). */
    for (int64_t b = 0; b < L.B; b++)
        for (int64_t ci = 0; ci < c.cin; ci++)
            for (int64_t t = 0; t < L.in.lane[b].len; t++)
                for (int64_t e = 0; e < L.H * L.W; e += 2) {
                    int64_t tseq = fc.cut ? fc.cut + t : t;
                    float *v = &xs[b][(ci * fc.n[b] + tseq) * L.H * L.W + e];
                    fd_check_value(&L, &fc, g, pat0, pat, npat, v,
                                   gin1[((b * c.cin + ci) * L.T + t) * L.H * L.W + e], eps_x, floor_, &sx);
                }
    printf("  fd %s%s%s%s: rel err W %.1e (%d, %d skipped) b %.1e (%d) gamma %.1e (%d) beta %.1e (%d) "
           "x %.1e (%d, %d skipped)\n",
           fc.cut ? "middle block " : "", c.relu ? "relu" : "none", c.bn ? " bn" : "", c.pool ? " pool" : "",
           sw.worst, sw.n, sw.skipped, sb.worst, sb.n, sg.worst, sg.n, sbt.worst, sbt.n, sx.worst, sx.n,
           sx.skipped);
    assert_true(sw.worst < 1e-3 && sb.worst < 1e-3 && sg.worst < 1e-3 && sbt.worst < 1e-3 && sx.worst < 1e-3);
    assert_true(sw.n >= clapp_tensor_numel(L.w) / 2);
    assert_true(sx.n >= 30);
    assert_true(!c.bn || (sg.n >= 1 && sbt.n >= 1));

    clapp_tensor_free(&gin);
    free(g);
    free(gw1);
    free(gb1);
    free(gg1);
    free(gbt1);
    free(gin1);
    free(pat0);
    free(pat);
    free(xs[0]);
    free(xs[1]);
    free(fc.live[0]);
    free(fc.live[1]);
    layer_close(&L);
}

static void test_conv3d_finite_differences(void **state)
{
    fixture *f = *state;
    const fd_case two = {{NULL, NULL}, {5, 3}, 2, 0, {NULL, NULL}};
    const fd_case mid = {{NULL, NULL}, {12, 0}, 1, 4, {NULL, NULL}};
    /* conv + relu; temporal kernel 2, pad 1, spatial stride 2. */
    check_fd(f, (cfg){2, 3, 2, 3, 3, 1, 2, 1, 1, 1, 0, 1, 1, 0, 0, 0}, 6, 5, two, 301);
    /* + BN (batch statistics over both lanes). */
    check_fd(f, (cfg){2, 3, 2, 3, 3, 1, 2, 1, 1, 1, 0, 1, 1, 1, 0, 0}, 6, 5, two, 302);
    /* + pool, no BN. */
    check_fd(f, (cfg){2, 3, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0}, 5, 6, two, 303);
    /* BN and pool, no activation. */
    check_fd(f, (cfg){2, 3, 2, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0}, 5, 6, two, 304);
    /* BN and pool with ReLU, 3x3x3 with temporal stride 2 and pad 1, blocks of 4 of a
     * 12-frame sequence: the tested block reads context carried from the first. */
    check_fd(f, (cfg){2, 3, 3, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}, 5, 6, mid, 305);
    check_fd(f, (cfg){2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}, 5, 5, mid, 306);
}

/* ------------------------------------------------------------------------ */
/* 4. dW == the explicit local form sum g * 1[a > 0] * x, over streamed blocks */

static void test_conv3d_local_form(void **state)
{
    fixture *f = *state;
    const cfg c = {3, 4, 3, 3, 3, 1, 2, 2, 1, 1, 0, 1, 1, 0, 0, 0};
    const int64_t T = 4, H = 9, W = 8, n = 11;
    uint64_t st = 4242;
    layer L;
    ref r;
    float *x, *gseq;
    double *dw, db[4] = {0, 0, 0, 0}, num = 0.0, den = 0.0, numb = 0.0, denb = 0.0;
    int64_t nw, nout, pos = 0, have = 0, P;

    layer_open(&L, f, c, 9, 1, T, H, W);
    randomize_params(&L, &st);
    x = random_seq(&st, &L, n);
    ref_conv(&L, x, n, &r);
    nout = r.To;
    P = r.hc * r.wc;
    assert_int_equal(nout, 11);   /* (11 + 2 - 3) / 1 + 1 */
    gseq = malloc((size_t)(c.out * nout * P) * sizeof(float));
    assert_non_null(gseq);
    for (int64_t i = 0; i < c.out * nout * P; i++)
        gseq[i] = rng_unif(&st);

    /* The test's own local form: for output (o, j, y, x), delta = g * 1[a > 0]
     * (post) times the input it saw (pre), summed over all positions. */
    nw = clapp_tensor_numel(L.w);
    dw = calloc((size_t)nw, sizeof(double));
    assert_non_null(dw);
    for (int64_t o = 0; o < c.out; o++)
        for (int64_t j = 0; j < nout; j++)
            for (int64_t y = 0; y < r.hc; y++)
                for (int64_t xx = 0; xx < r.wc; xx++) {
                    int64_t e = ((o * nout + j) * r.hc + y) * r.wc + xx;
                    double post = r.pre[e] > 0.0 ? gseq[e] : 0.0;
                    db[o] += post;
                    for (int64_t ci = 0; ci < c.cin; ci++)
                        for (int64_t dt = 0; dt < c.kt; dt++) {
                            int64_t t = j * c.st + dt - c.pt;
                            if (t < 0 || t >= n)
                                continue;
                            for (int64_t dy = 0; dy < c.kh; dy++)
                                for (int64_t dx = 0; dx < c.kw; dx++) {
                                    int64_t iy = y * c.sh + dy - c.ph, ix = xx * c.sw + dx - c.pw;
                                    if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                        continue;
                                    dw[(((o * c.cin + ci) * c.kt + dt) * c.kh + dy) * c.kw + dx] +=
                                        post * x[((ci * n + t) * H + iy) * W + ix];
                                }
                        }
                }

    /* The plugin: blocks of 4 frames, backward after each; gradients accumulate. */
    zero_grads(&L);
    while (pos < n) {
        int64_t take = n - pos < T ? n - pos : T;
        uint32_t flags = (pos == 0 ? CLAPP_LANE_SEQ_START : 0) | (pos + take == n ? CLAPP_LANE_SEQ_END : 0);
        clapp_tensor gt;
        float *g = calloc((size_t)clapp_tensor_numel(&L.out.x), sizeof(float));
        assert_non_null(g);
        set_lane(&L, 0, x, n, pos, take, flags, 0);
        layer_forward(&L);
        assert_int_equal(L.out.lane[0].pts, have);
        for (int64_t o = 0; o < c.out; o++)
            memcpy(g + o * L.To * P, gseq + (o * nout + have) * P, (size_t)(L.out.lane[0].len * P) * sizeof(float));
        gt = L.out.x;
        gt.data = g;
        assert_int_equal(L.d->backward(L.self, &gt, NULL), CLAPP_OK);
        have += L.out.lane[0].len;
        pos += take;
        free(g);
    }
    assert_int_equal(have, nout);
    for (int64_t i = 0; i < nw; i++) {
        num += (L.gw->data[i] - dw[i]) * (L.gw->data[i] - dw[i]);
        den += dw[i] * dw[i];
    }
    for (int64_t o = 0; o < c.out; o++) {
        numb += (L.gb->data[o] - db[o]) * (L.gb->data[o] - db[o]);
        denb += db[o] * db[o];
    }
    printf("  local form over 3 blocks: |dW - sum g 1[a>0] x| / |dW| = %.2e (|dW| %.2f), db %.2e\n",
           sqrt(num / den), sqrt(den), sqrt(numb / denb));
    assert_true(den > 1.0);
    assert_true(sqrt(num / den) < 1e-5);
    assert_true(sqrt(numb / denb) < 1e-5);
    free(dw);
    free(gseq);
    free(x);
    ref_free(&r);
    layer_close(&L);
}

/* ------------------------------------------------------------------------ */
/* 4b. Many im2col chunks per lane: K * P = 1728 * 2304 floats fill one chunk */

static double dot_f(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

static void test_conv3d_chunked(void **state)
{
    fixture *f = *state;
    /* No activation, BN or pool: the layer is linear in x and in W separately, so
     * <grad_in, x> = L(x) - L(0) and <dW, W> = L(W) - L(0) (adjoint identities). */
    const cfg c = {64, 4, 3, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0};
    const int64_t lens[2] = {5, 3};
    uint64_t st = 777;
    layer L;
    float *x[2], *g, *w0;
    clapp_tensor gin, gt;
    double l1, l0x, l0w, ex, ew;
    int64_t nw;

    /* Forward of the full layer (ReLU, BN, pool) against the reference. */
    check_whole(f, (cfg){64, 4, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}, 4, 48, 48, 0, 4, 23, 23, 21);

    layer_open(&L, f, c, 22, 2, 5, 48, 48);
    randomize_params(&L, &st);
    nw = clapp_tensor_numel(L.w);
    for (int b = 0; b < 2; b++) {
        x[b] = random_seq(&st, &L, lens[b]);
        set_lane(&L, b, x[b], lens[b], 0, lens[b], CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, b);
    }
    layer_forward(&L);
    assert_int_equal(L.out.lane[0].len, 5);
    assert_int_equal(L.out.lane[1].len, 3);
    g = calloc((size_t)clapp_tensor_numel(&L.out.x), sizeof(float));
    w0 = malloc((size_t)nw * sizeof(float));
    assert_non_null(g);
    assert_non_null(w0);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t o = 0; o < c.out; o++)
            for (int64_t e = 0; e < L.out.lane[b].len * L.Q; e++)
                g[(b * c.out + o) * L.To * L.Q + e] = rng_unif(&st);
    gt = L.out.x;
    gt.data = g;
    assert_int_equal(clapp_tensor_alloc_shape(&gin, 5, L.in.x.shape), 0);
    zero_grads(&L);
    assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
    l1 = loss_of(&L, g);
    ex = dot_f(gin.data, L.in.x.data, clapp_tensor_numel(&L.in.x));
    ew = dot_f(L.gw->data, L.w->data, nw);
    /* L(0): the same run with zero input, then with zero weights. */
    memset(L.in.x.data, 0, (size_t)clapp_tensor_numel(&L.in.x) * sizeof(float));
    layer_forward(&L);
    l0x = loss_of(&L, g);
    memcpy(w0, L.w->data, (size_t)nw * sizeof(float));
    memset(L.w->data, 0, (size_t)nw * sizeof(float));
    for (int b = 0; b < 2; b++)
        set_lane(&L, b, x[b], lens[b], 0, lens[b], CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, b);
    layer_forward(&L);
    l0w = loss_of(&L, g);
    memcpy(L.w->data, w0, (size_t)nw * sizeof(float));
    printf("  chunked (one frame a chunk): <grad_in, x> %.6f vs L(x) - L(0) %.6f; <dW, W> %.6f vs L(W) - L(0) %.6f\n",
           ex, l1 - l0x, ew, l1 - l0w);
    assert_true(fabs(l1 - l0x) > 1.0 && fabs(l1 - l0w) > 1.0);
    assert_true(fabs(ex - (l1 - l0x)) < 1e-4 * fabs(l1 - l0x));
    assert_true(fabs(ew - (l1 - l0w)) < 1e-4 * fabs(l1 - l0w));
    clapp_tensor_free(&gin);
    free(g);
    free(w0);
    free(x[0]);
    free(x[1]);
    layer_close(&L);
}

/* ------------------------------------------------------------------------ */
/* 5. BatchNorm running statistics, FROZEN mode, seeded initialisation       */

static void test_conv3d_batchnorm_state(void **state)
{
    fixture *f = *state;
    cfg c = {2, 3, 1, 3, 3, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0.25};
    uint64_t st = 555;
    layer L;
    double rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1}, worst = 0.0, worst_stats = 0.0;
    float *x[2][2];
    int64_t lens[2] = {4, 3};

    layer_open(&L, f, c, 11, 2, 4, 6, 5);
    randomize_params(&L, &st);
    for (int64_t o = 0; o < c.out; o++) {
        assert_true(L.rm->data[o] == 0.0f);   /* PyTorch's initial running statistics */
        assert_true(L.rv->data[o] == 1.0f);
    }
    /* Two LEARN blocks: running = (1 - m) running + m batch, unbiased variance. */
    for (int k = 0; k < 2; k++) {
        ref rs[2];
        const float *xs[2];
        double mean[3], var[3];
        int64_t cnt = 0;
        for (int b = 0; b < 2; b++) {
            x[k][b] = random_seq(&st, &L, lens[b]);
            xs[b] = x[k][b];
            for (int64_t i = 0; i < c.cin * lens[b] * 30; i++)
                x[k][b][i] += 0.5f * (float)(k + 1);   /* shift the statistics between blocks */
            set_lane(&L, b, x[k][b], lens[b], 0, lens[b], CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, b);
        }
        layer_forward(&L);
        ref_block(&L, xs, lens, 2, 0, rs);
        for (int b = 0; b < 2; b++) {
            double d = lane_diff(&L, b, &rs[b]);
            worst = d > worst ? d : worst;
        }
        ref_free(&rs[0]);
        ref_free(&rs[1]);
        ref_conv(&L, xs[0], lens[0], &rs[0]);   /* ref_block normalised v in place */
        ref_conv(&L, xs[1], lens[1], &rs[1]);
        ref_stats(&c, rs, 2, mean, var, &cnt);
        assert_int_equal(cnt, (4 + 3) * 6 * 5);
        for (int64_t o = 0; o < c.out; o++) {
            rm[o] = 0.75 * rm[o] + 0.25 * mean[o];
            rv[o] = 0.75 * rv[o] + 0.25 * var[o] * (double)cnt / (double)(cnt - 1);
            worst_stats = fmax(worst_stats, fabs(L.rm->data[o] - rm[o]));
            worst_stats = fmax(worst_stats, fabs(L.rv->data[o] - rv[o]));
        }
        ref_free(&rs[0]);
        ref_free(&rs[1]);
    }
    printf("  bn: LEARN outputs max|diff| %.2e, running stats after 2 blocks (momentum 0.25) max|diff| %.2e "
           "(mean[0] %.4f var[0] %.4f)\n",
           worst, worst_stats, rm[0], rv[0]);
    assert_true(worst < 5e-5);
    assert_true(worst_stats < 1e-5);
    assert_true(fabs(rv[0] - 1.0) > 0.01);   /* the check is not vacuous */

    /* FROZEN: normalise with the running statistics, and leave them alone. */
    assert_int_equal(L.d->set_mode(L.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    {
        ref rs[2];
        const float *xs[2] = {x[0][0], x[0][1]};
        float rm0 = L.rm->data[0], rv0 = L.rv->data[0];
        clapp_tensor gt = L.out.x;
        double d = 0.0;
        for (int b = 0; b < 2; b++)
            set_lane(&L, b, xs[b], lens[b], 0, lens[b], CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, b);
        layer_forward(&L);
        ref_block(&L, xs, lens, 2, 1, rs);
        for (int b = 0; b < 2; b++) {
            double e = lane_diff(&L, b, &rs[b]);
            d = e > d ? e : d;
            ref_free(&rs[b]);
        }
        printf("  bn: FROZEN outputs vs running-statistics reference max|diff| %.2e\n", d);
        assert_true(d < 5e-5);
        assert_true(L.rm->data[0] == rm0 && L.rv->data[0] == rv0);
        /* No backward after a frozen forward. */
        tu_log_clear(&f->log);
        assert_int_equal(L.d->backward(L.self, &gt, NULL), CLAPP_E_STATE);
        assert_int_equal(tu_log_count(&f->log, "conv3d: backward without a learning-mode forward"), 1);
    }
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < 2; b++)
            free(x[k][b]);
    layer_close(&L);
}

static void test_conv3d_seed(void **state)
{
    fixture *f = *state;
    const cfg c = {8, 64, 3, 3, 3, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0};
    layer A, B2, C;
    int64_t nw;
    double s2 = 0.0, s1 = 0.0, expect = sqrt(2.0 / (64.0 * 27.0));
    layer_open(&A, f, c, 1234, 1, 3, 4, 4);
    layer_open(&B2, f, c, 1234, 2, 9, 5, 5);   /* other shapes, same seed */
    layer_open(&C, f, c, 1235, 1, 3, 4, 4);
    nw = clapp_tensor_numel(A.w);
    assert_memory_equal(A.w->data, B2.w->data, (size_t)nw * sizeof(float));
    assert_memory_not_equal(A.w->data, C.w->data, (size_t)nw * sizeof(float));
    for (int64_t i = 0; i < nw; i++) {
        s1 += A.w->data[i];
        s2 += (double)A.w->data[i] * A.w->data[i];
    }
    s1 /= (double)nw;
    s2 = sqrt(s2 / (double)nw - s1 * s1);
    printf("  init: %lld weights, mean %.2e, std %.5f (Kaiming fan_out: %.5f)\n", (long long)nw, s1, s2, expect);
    assert_true(fabs(s2 / expect - 1.0) < 0.03);
    assert_true(fabs(s1) < 0.05 * expect);
    for (int64_t o = 0; o < c.out; o++) {
        assert_true(A.b->data[o] == 0.0f);
        assert_true(A.gm->data[o] == 1.0f);
        assert_true(A.bt->data[o] == 0.0f);
    }
    layer_close(&A);
    layer_close(&B2);
    layer_close(&C);
}

/* ------------------------------------------------------------------------ */
/* 6. Lifecycle and refusals                                                 */

static void test_conv3d_lifecycle(void **state)
{
    fixture *f = *state;
    const cfg c = {2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0};
    clapp_param_value v[32];
    clapp_create_info ci;
    clapp_stream_info si, so;
    layer L;
    void *self = NULL;
    float w0;

    /* Bad shapes at configure. */
    fill_values(f->desc, &c, v);
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = &f->host;
    ci.instance_name = "bad";
    ci.values = v;
    ci.n_values = f->desc->n_params;
    assert_int_equal(f->desc->create(&ci, &self), CLAPP_OK);
    memset(&si, 0, sizeof si);
    si.ndim = 3;
    si.shape[0] = 1;
    si.shape[1] = 2;
    si.shape[2] = 8;
    tu_log_clear(&f->log);
    assert_int_equal(f->desc->configure(self, &si, &so), CLAPP_E_SHAPE);
    assert_int_equal(tu_log_count(&f->log, "conv3d: input must be [B, C, T, H, W]"), 1);
    si.ndim = 5;
    si.shape[3] = 2;   /* 2x9 conv output: too small for the 3x3 pool */
    si.shape[4] = 9;
    assert_int_equal(f->desc->configure(self, &si, &so), CLAPP_E_SHAPE);
    assert_int_equal(tu_log_count(&f->log, "too small for the 1x3x3 pool"), 1);
    assert_int_equal(f->desc->reset(self, -1), CLAPP_E_STATE);
    f->desc->destroy(self);
    f->desc->destroy(NULL);

    /* Bad parameter values at create (the host checks ranges too). */
    for (int32_t i = 0; i < f->desc->n_params; i++)
        if (strcmp(v[i].name, "bn_eps") == 0)
            v[i].f = 0.0;
    self = NULL;
    tu_log_clear(&f->log);
    assert_int_equal(f->desc->create(&ci, &self), CLAPP_E_INVAL);
    assert_int_equal(tu_log_count(&f->log, "bn_eps > 0"), 1);
    f->desc->destroy(self);

    layer_open(&L, f, c, 3, 2, 4, 6, 6);
    /* Backward before any forward. */
    assert_int_equal(L.d->backward(L.self, &L.out.x, NULL), CLAPP_E_STATE);
    /* A block of another shape. */
    L.in.x.shape[3] = 5;
    tu_log_clear(&f->log);
    memcpy(L.out.lane, L.in.lane, (size_t)L.B * sizeof(clapp_lane));
    assert_int_equal(L.d->forward(L.self, &L.in, &L.out), CLAPP_E_SHAPE);
    assert_int_equal(tu_log_count(&f->log, "conv3d: block shape differs"), 1);
    L.in.x.shape[3] = 6;
    /* A lane longer than the block. */
    L.in.lane[0].len = 5;
    assert_int_equal(L.d->forward(L.self, &L.in, &L.out), CLAPP_E_SHAPE);
    L.in.lane[0].len = 0;
    assert_int_equal(L.d->reset(L.self, 2), CLAPP_E_INVAL);
    assert_int_equal(L.d->reset(L.self, 1), CLAPP_OK);
    assert_int_equal(L.d->reset(L.self, -1), CLAPP_OK);
    /* Re-configure with another block size keeps the (possibly trained) weights. */
    L.w->data[0] += 1.0f;
    w0 = L.w->data[0];
    memset(&si, 0, sizeof si);
    si.ndim = 5;
    si.shape[0] = 2;
    si.shape[1] = 2;
    si.shape[2] = 9;
    si.shape[3] = 6;
    si.shape[4] = 6;
    si.rate = 10.0;
    assert_int_equal(L.d->configure(L.self, &si, &so), CLAPP_OK);
    /* Capacity: 2 carried + 9 + 1 end pad frames, kernel 3, stride 1. */
    assert_int_equal(so.shape[2], 10);
    assert_int_equal(so.shape[3], 2);
    assert_int_equal(so.shape[4], 2);
    {
        const clapp_named_tensor *list;
        int32_t n;
        assert_int_equal(L.d->tensors(L.self, &list, &n), CLAPP_OK);
        assert_true(list[0].value->data[0] == w0);
    }
    layer_close(&L);
}

/* ------------------------------------------------------------------------ */
/* 6b. Pool ties and overlapping windows, by hand                            */

/* A 1x1x1 identity conv (no bias, no activation) + pool on a 5x5 frame: four
 * windows with corners (0,0), (0,2), (2,0), (2,2) that share row/column 2. */
static void test_conv3d_pool_ties(void **state)
{
    fixture *f = *state;
    const cfg c = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0};
    layer L;
    clapp_tensor gin, gt;
    float g[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    layer_open(&L, f, c, 1, 1, 1, 5, 5);
    assert_int_equal(L.Ho, 2);
    assert_int_equal(L.Wo, 2);
    L.w->data[0] = 1.0f;
    assert_int_equal(clapp_tensor_alloc_shape(&gin, 5, L.in.x.shape), 0);
    gt = L.out.x;
    gt.data = g;
    for (int k = 0; k < 2; k++) {
        /* k = 0: all equal, every window takes its first (top-left) element;
         * k = 1: a 2 at the shared centre (2,2) wins all four windows. */
        for (int i = 0; i < 25; i++)
            L.in.x.data[i] = 1.0f;
        if (k == 1)
            L.in.x.data[2 * 5 + 2] = 2.0f;
        memset(&L.in.lane[0], 0, sizeof(clapp_lane));
        L.in.lane[0].len = 1;
        L.in.lane[0].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        layer_forward(&L);
        for (int q = 0; q < 4; q++)
            assert_true(L.out.x.data[q] == (k == 0 ? 1.0f : 2.0f));
        clapp_tensor_zero(&gin);
        assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
        for (int i = 0; i < 25; i++) {
            float expect = 0.0f;
            if (k == 0)
                expect = i == 0 ? 1.0f : i == 2 ? 2.0f : i == 10 ? 3.0f : i == 12 ? 4.0f : 0.0f;
            else
                expect = i == 12 ? 10.0f : 0.0f;
            assert_true(gin.data[i] == expect);
        }
        /* dW = sum g * x at the argmaxes. */
        assert_true(L.gw->data[0] == (k == 0 ? 10.0f : 30.0f));
    }
    printf("  pool ties: first max takes the gradient; a shared maximum collects all four windows (10)\n");
    clapp_tensor_free(&gin);
    layer_close(&L);
}

/* ------------------------------------------------------------------------ */
/* 7. Timing: the paper's video layer 1 on 64x64 gray, B = 8, T = 54         */

static void test_conv3d_timing(void **state)
{
    fixture *f = *state;
    const cfg c = {1, 96, 1, 7, 7, 1, 2, 2, 0, 0, 0, 1, 1, 1, 1, 0};
    const int reps = 3;
    uint64_t st = 8;
    layer L;
    clapp_tensor gin, gt;
    double wall[3] = {0, 0, 0}, cpu[3] = {0, 0, 0}, flop;
    float *g;
    layer_open(&L, f, c, 1, 8, 54, 64, 64);
    assert_int_equal(L.To, 54);
    assert_int_equal(L.Ho, 14);   /* (64 - 7) / 2 + 1 = 29, pooled (29 - 3) / 2 + 1 = 14 */
    assert_int_equal(L.Wo, 14);
    for (int64_t i = 0; i < clapp_tensor_numel(&L.in.x); i++)
        L.in.x.data[i] = rng_unif(&st);
    for (int b = 0; b < 8; b++) {
        memset(&L.in.lane[b], 0, sizeof(clapp_lane));
        L.in.lane[b].seq_id = b;
        L.in.lane[b].len = 54;
        L.in.lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
    }
    g = malloc((size_t)clapp_tensor_numel(&L.out.x) * sizeof(float));
    assert_non_null(g);
    for (int64_t i = 0; i < clapp_tensor_numel(&L.out.x); i++)
        g[i] = 1e-3f * rng_unif(&st);
    gt = L.out.x;
    gt.data = g;
    assert_int_equal(clapp_tensor_alloc_shape(&gin, 5, L.in.x.shape), 0);
    /* Wall time and this process's CPU time (the machine is shared; OpenBLAS runs
     * one thread under ctest, so CPU time is what the layer costs). Steady state:
     * one untimed round first touches the scratch pages. */
    layer_forward(&L);
    assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < 3; k++) {
            double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
            if (k == 0)
                layer_forward(&L);
            else
                assert_int_equal(L.d->backward(L.self, &gt, k == 2 ? &gin : NULL), CLAPP_OK);
            wall[k] += now_s(CLOCK_MONOTONIC) - w0;
            cpu[k] += now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    for (int b = 0; b < 8; b++)
        assert_int_equal(L.out.lane[b].len, 54);
    flop = 2.0 * 96 * 49 * 8.0 * 54 * 29 * 29;   /* one GEMM of the forward */
    printf("  timing layer 1 (96 ch 1x7x7 s(1,2,2) + ReLU + BN + pool), [8, 1, 54, 64, 64] -> [8, 96, 54, 14, 14],"
           " mean of %d:\n"
           "    forward %.1f ms CPU / %.1f ms wall (conv GEMM %.2f GFLOP: %.1f GFLOP/s of CPU time)\n"
           "    backward %.1f ms CPU / %.1f ms wall; with grad_in %.1f ms CPU / %.1f ms wall\n",
           reps, 1e3 * cpu[0] / reps, 1e3 * wall[0] / reps, flop * 1e-9, flop * 1e-9 / (cpu[0] / reps),
           1e3 * cpu[1] / reps, 1e3 * wall[1] / reps, 1e3 * cpu[2] / reps, 1e3 * wall[2] / reps);
    clapp_tensor_free(&gin);
    free(g);
    layer_close(&L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv3d_descriptor),
        cmocka_unit_test(test_conv3d_whole_sequence),
        cmocka_unit_test(test_conv3d_streaming),
        cmocka_unit_test(test_conv3d_finite_differences),
        cmocka_unit_test(test_conv3d_local_form),
        cmocka_unit_test(test_conv3d_chunked),
        cmocka_unit_test(test_conv3d_batchnorm_state),
        cmocka_unit_test(test_conv3d_seed),
        cmocka_unit_test(test_conv3d_lifecycle),
        cmocka_unit_test(test_conv3d_pool_ties),
        cmocka_unit_test(test_conv3d_timing),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
