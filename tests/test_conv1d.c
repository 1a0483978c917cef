/* conv1d plugin: forward against a direct double-precision convolution,
 * streaming equivalence under arbitrary block cuts, finite-difference and
 * explicit local-form checks of backward, seeded initialisation.
 *
 * The plugin is loaded with dlopen and driven through its descriptor, as a
 * host would, without the graph runtime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct cfg {
    int64_t cin, out, k, s, p;
    int     relu, bias;
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
    int64_t                  B, T, Tout;
    clapp_stream_info        oinfo;
    clapp_block              in, out;
    clapp_tensor            *w, *gw, *b, *gb;
} layer;

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

static int64_t ref_len(const cfg *c, int64_t n)
{
    return n + 2 * c->p >= c->k ? (n + 2 * c->p - c->k) / c->s + 1 : 0;
}

/* Direct convolution in double: pre[o * nout + j] = b[o] + sum_i,k W[o,i,k] x[i, j*s+k-p]
 * with x channel-major x[i * ld + t], t < n, zero outside. */
static void ref_pre(const cfg *c, const float *W, const float *bias, const float *x, int64_t ld, int64_t n,
                    double *pre)
{
    int64_t nout = ref_len(c, n);
    for (int64_t o = 0; o < c->out; o++)
        for (int64_t j = 0; j < nout; j++) {
            double a = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < c->cin; i++)
                for (int64_t k = 0; k < c->k; k++) {
                    int64_t t = j * c->s + k - c->p;
                    if (t >= 0 && t < n)
                        a += (double)W[(o * c->cin + i) * c->k + k] * (double)x[i * ld + t];
                }
            pre[o * nout + j] = a;
        }
}

static double act(const cfg *c, double a)
{
    return c->relu && a < 0 ? 0.0 : a;
}

static void fill_values(const clapp_plugin_desc *d, const cfg *c, clapp_param_value *v)
{
    for (int32_t i = 0; i < d->n_params; i++) {
        const clapp_param_desc *p = &d->params[i];
        memset(&v[i], 0, sizeof v[i]);
        v[i].name = p->name;
        v[i].s = p->def;
        if (p->type == CLAPP_PARAM_INT)
            v[i].i = strtoll(p->def, NULL, 10);
        if (p->type == CLAPP_PARAM_BOOL)
            v[i].i = strcmp(p->def, "true") == 0;
        v[i].f = (double)v[i].i;
        if (strcmp(p->name, "out") == 0)
            v[i].i = c->out;
        else if (strcmp(p->name, "kernel") == 0)
            v[i].i = c->k;
        else if (strcmp(p->name, "stride") == 0)
            v[i].i = c->s;
        else if (strcmp(p->name, "pad") == 0)
            v[i].i = c->p;
        else if (strcmp(p->name, "activation") == 0) {
            v[i].i = c->relu ? 0 : 1;
            v[i].s = c->relu ? "relu" : "none";
        } else if (strcmp(p->name, "bias") == 0)
            v[i].i = c->bias;
        v[i].f = (double)v[i].i;
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

static void layer_open(layer *L, fixture *f, cfg c, uint64_t seed, int64_t B, int64_t T)
{
    clapp_param_value v[16];
    clapp_create_info ci;
    clapp_stream_info si;
    const clapp_named_tensor *list = NULL;
    int32_t n = 0;
    memset(L, 0, sizeof *L);
    assert_true(f->desc->n_params <= 16);
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
    assert_int_equal(L->d->create(&ci, &L->self), CLAPP_OK);
    memset(&si, 0, sizeof si);
    si.ndim = 3;
    si.shape[0] = B;
    si.shape[1] = c.cin;
    si.shape[2] = T;
    si.rate = 16000.0;
    assert_int_equal(L->d->configure(L->self, &si, &L->oinfo), CLAPP_OK);
    assert_int_equal(L->oinfo.ndim, 3);
    assert_int_equal(L->oinfo.shape[0], B);
    assert_int_equal(L->oinfo.shape[1], c.out);
    L->Tout = L->oinfo.shape[2];
    assert_int_equal(clapp_tensor_alloc_shape(&L->in.x, 3, si.shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&L->out.x, 3, L->oinfo.shape), 0);
    L->in.lanes = L->out.lanes = (int32_t)B;
    L->in.lane = calloc((size_t)B, sizeof(clapp_lane));
    L->out.lane = calloc((size_t)B, sizeof(clapp_lane));
    assert_non_null(L->in.lane);
    assert_non_null(L->out.lane);
    L->in.rate = 16000.0;
    L->out.rate = L->oinfo.rate;
    assert_int_equal(L->d->tensors(L->self, &list, &n), CLAPP_OK);
    assert_int_equal(n, c.bias ? 2 : 1);
    assert_string_equal(list[0].name, "weight");
    L->w = list[0].value;
    L->gw = list[0].grad;
    assert_int_equal(L->w->ndim, 3);
    assert_int_equal(L->w->shape[0], c.out);
    assert_int_equal(L->w->shape[1], c.cin);
    assert_int_equal(L->w->shape[2], c.k);
    if (c.bias) {
        assert_string_equal(list[1].name, "bias");
        L->b = list[1].value;
        L->gb = list[1].grad;
        assert_int_equal(L->b->shape[0], c.out);
    }
}

/* Forward the current input block; the host copies lane metadata to out. */
static void layer_forward(layer *L)
{
    memcpy(L->out.lane, L->in.lane, (size_t)L->B * sizeof(clapp_lane));
    assert_int_equal(L->d->forward(L->self, &L->in, &L->out), CLAPP_OK);
}

static void zero_grads(layer *L)
{
    clapp_tensor_zero(L->gw);
    if (L->gb)
        clapp_tensor_zero(L->gb);
}

/* Put seq[i * ld + pos + t], t < len, into lane b of the input block. */
static void set_lane(layer *L, int32_t b, const float *seq, int64_t ld, int64_t pos, int64_t len,
                     uint32_t flags, int64_t seq_id)
{
    float *x = L->in.x.data + (int64_t)b * L->c.cin * L->T;
    memset(x, 0, (size_t)(L->c.cin * L->T) * sizeof(float));
    for (int64_t i = 0; i < L->c.cin; i++)
        for (int64_t t = 0; t < len; t++)
            x[i * L->T + t] = seq[i * ld + pos + t];
    memset(&L->in.lane[b], 0, sizeof(clapp_lane));
    L->in.lane[b].seq_id = seq_id;
    L->in.lane[b].flags = flags;
    L->in.lane[b].len = (int32_t)len;
    L->in.lane[b].class_label = -1;
}

static float *random_seq(uint64_t *st, int64_t cin, int64_t n)
{
    float *x = malloc((size_t)(cin * (n > 0 ? n : 1)) * sizeof(float));
    assert_non_null(x);
    for (int64_t i = 0; i < cin * n; i++)
        x[i] = rng_unif(st);
    return x;
}

/* Output steps past each lane's len are zero. */
static void check_tail_zero(const layer *L)
{
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t o = 0; o < L->c.out; o++)
            for (int64_t j = L->out.lane[b].len; j < L->Tout; j++)
                assert_true(L->out.x.data[(b * L->c.out + o) * L->Tout + j] == 0.0f);
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
    f->so = dlopen(CLAPP_TEST_PLUGIN_DIR "/conv1d.so", RTLD_NOW | RTLD_LOCAL);
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

static void test_conv1d_descriptor(void **state)
{
    fixture *f = *state;
    const clapp_plugin_desc *d = f->desc;
    static const char *names[] = {"out", "kernel", "stride", "pad", "activation", "bias"};
    static const char *defs[] = {"512", "10", "5", "2", "relu", "true"};
    assert_string_equal(d->id, "conv1d");
    assert_int_equal(d->kind, CLAPP_KIND_LAYER);
    assert_int_equal(d->n_params, 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(d->params[i].name, names[i]);
        assert_string_equal(d->params[i].def, defs[i]);
        assert_non_null(d->params[i].help);
    }
    assert_string_equal(d->params[4].choices, "relu|none");
    assert_non_null(d->backward);
    assert_non_null(d->reset);
    assert_non_null(d->set_mode);
}

/* ------------------------------------------------------------------------ */
/* 1. Whole sequence in one block == direct convolution                      */

static void check_whole(fixture *f, cfg c, int64_t N, int64_t expect_len, uint64_t seed)
{
    layer L;
    uint64_t st = seed * 7919u + 1;
    int64_t lens[3] = {N, N - N / 3, 0};   /* lane 2 idle */
    float *x[3];
    double worst = 0.0;
    assert_int_equal(ref_len(&c, N), expect_len);
    layer_open(&L, f, c, seed, 3, N);
    for (int b = 0; b < 3; b++) {
        x[b] = random_seq(&st, c.cin, lens[b]);
        set_lane(&L, b, x[b], lens[b], 0, lens[b],
                 lens[b] ? CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END : 0, lens[b] ? b : -1);
    }
    layer_forward(&L);
    check_tail_zero(&L);
    for (int b = 0; b < 3; b++) {
        int64_t nout = ref_len(&c, lens[b]);
        double *pre = malloc((size_t)(c.out * (nout ? nout : 1)) * sizeof(double));
        assert_non_null(pre);
        if (lens[b] == 0)
            nout = 0;
        assert_int_equal(L.out.lane[b].len, nout);
        assert_int_equal(L.out.lane[b].pts, 0);
        if (nout)
            ref_pre(&c, L.w->data, c.bias ? L.b->data : NULL, x[b], lens[b], lens[b], pre);
        for (int64_t o = 0; o < c.out; o++)
            for (int64_t j = 0; j < nout; j++) {
                double d = fabs(L.out.x.data[(b * c.out + o) * L.Tout + j] - act(&c, pre[o * nout + j]));
                if (d > worst)
                    worst = d;
            }
        free(pre);
        free(x[b]);
    }
    printf("  whole cin=%lld out=%lld k=%lld s=%lld p=%lld N=%lld -> %lld frames: max|diff| %.2e\n",
           (long long)c.cin, (long long)c.out, (long long)c.k, (long long)c.s, (long long)c.p,
           (long long)N, (long long)expect_len, worst);
    assert_true(worst < 1e-5);
    layer_close(&L);
}

static void test_conv1d_whole_sequence(void **state)
{
    fixture *f = *state;
    /* The 5 audio layers' geometry with their real sequence lengths. */
    check_whole(f, (cfg){1, 8, 10, 5, 2, 1, 1}, 20480, 4095, 1);
    check_whole(f, (cfg){3, 5, 8, 4, 2, 1, 1}, 4095, 1023, 2);
    check_whole(f, (cfg){4, 6, 4, 2, 2, 1, 1}, 1023, 512, 3);
    check_whole(f, (cfg){4, 6, 4, 2, 2, 1, 1}, 512, 257, 4);
    check_whole(f, (cfg){5, 3, 4, 2, 1, 1, 1}, 257, 128, 5);
    /* No activation, no bias, no pad, stride 1. */
    check_whole(f, (cfg){2, 3, 3, 1, 0, 0, 0}, 50, 48, 6);
    /* Stride larger than the kernel (inputs skipped), and pad larger than kernel-1. */
    check_whole(f, (cfg){2, 4, 2, 3, 1, 1, 1}, 31, 11, 7);
    check_whole(f, (cfg){3, 2, 5, 2, 4, 0, 1}, 7, 6, 8);
}

/* ------------------------------------------------------------------------ */
/* 2. Streaming: any block cut gives the whole-sequence output               */

#define MAX_SEQS 3

typedef struct lane_plan {
    int     idle;              /* blocks before the first sequence */
    int     stall_every;       /* every n-th block of a sequence brings no samples (0: never) */
    int     n_seqs;
    int64_t lens[MAX_SEQS];
} lane_plan;

static void check_streaming(fixture *f, cfg c, int64_t T, uint64_t seed)
{
    const lane_plan plans[3] = {
        {0, 0, 2, {2345, 411, 0}},
        {2, 3, 1, {1777, 0, 0}},
        {1, 0, 3, {5, 999, 3000}},
    };
    float *seqs[3][MAX_SEQS];
    float *got[3];
    int     si[3] = {0, 0, 0}, idle[3], blk[3] = {0, 0, 0}, done = 0, checked = 0;
    int64_t pos[3] = {0, 0, 0}, have[3] = {0, 0, 0}, cap = 0;
    uint64_t st = seed;
    double worst_ref = 0.0, worst_whole = 0.0;
    layer L;

    layer_open(&L, f, c, seed, 3, T);
    for (int b = 0; b < 3; b++) {
        idle[b] = plans[b].idle;
        for (int q = 0; q < plans[b].n_seqs; q++) {
            seqs[b][q] = random_seq(&st, c.cin, plans[b].lens[q]);
            if (ref_len(&c, plans[b].lens[q]) > cap)
                cap = ref_len(&c, plans[b].lens[q]);
        }
    }
    for (int b = 0; b < 3; b++) {
        got[b] = calloc((size_t)(c.out * cap + 1), sizeof(float));
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
                memcpy(got[b] + o * nout + have[b], L.out.x.data + (b * c.out + o) * L.Tout,
                       (size_t)n * sizeof(float));
            have[b] += n;
            if (!(flags[b] & CLAPP_LANE_SEQ_END))
                continue;
            /* Sequence complete: all frames, equal to the reference and to a one-block run. */
            assert_int_equal(have[b], nout);
            if (nout > 0) {
                double *pre = malloc((size_t)(c.out * nout) * sizeof(double));
                layer W;
                assert_non_null(pre);
                ref_pre(&c, L.w->data, c.bias ? L.b->data : NULL, seqs[b][si[b]], len, len, pre);
                layer_open(&W, f, c, seed, 1, len);
                set_lane(&W, 0, seqs[b][si[b]], len, 0, len, CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, 0);
                layer_forward(&W);
                assert_int_equal(W.out.lane[0].len, nout);
                for (int64_t o = 0; o < c.out; o++)
                    for (int64_t j = 0; j < nout; j++) {
                        double g = got[b][o * nout + j];
                        double d1 = fabs(g - act(&c, pre[o * nout + j]));
                        double d2 = fabs(g - W.out.x.data[o * W.Tout + j]);
                        worst_ref = d1 > worst_ref ? d1 : worst_ref;
                        worst_whole = d2 > worst_whole ? d2 : worst_whole;
                    }
                layer_close(&W);
                free(pre);
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
    printf("  stream k=%lld s=%lld p=%lld block=%lld: %d sequences, max|diff| vs reference %.2e, "
           "vs one block %.2e\n",
           (long long)c.k, (long long)c.s, (long long)c.p, (long long)T, checked, worst_ref, worst_whole);
    assert_int_equal(checked, 6);
    assert_true(worst_ref < 1e-5);
    assert_true(worst_whole < 1e-5);
    for (int b = 0; b < 3; b++) {
        for (int q = 0; q < plans[b].n_seqs; q++)
            free(seqs[b][q]);
        free(got[b]);
    }
    layer_close(&L);
}

static void test_conv1d_streaming(void **state)
{
    fixture *f = *state;
    const int64_t blocks[3] = {37, 160, 1000};
    const cfg cfgs[5] = {
        {1, 4, 10, 5, 2, 1, 1},  /* audio layer 1 */
        {3, 4, 8, 4, 2, 1, 1},   /* layer 2 */
        {2, 3, 4, 2, 1, 0, 1},   /* layer 5, no activation */
        {2, 3, 2, 3, 1, 1, 1},   /* stride > kernel */
        {2, 3, 5, 2, 4, 1, 0},   /* pad > kernel - 1, no bias */
    };
    for (int ci = 0; ci < 5; ci++)
        for (int bi = 0; bi < 3; bi++)
            check_streaming(f, cfgs[ci], blocks[bi], 100 + (uint64_t)ci);
}

/* ------------------------------------------------------------------------ */
/* 3. Finite differences                                                     */

/* L = sum g * out over valid steps, in double; mask (out > 0) compared to `base_mask`
 * when given, so a perturbation that crosses a ReLU kink is detected. */
static double loss_of(const layer *L, const float *g, const unsigned char *base_mask, int *kink)
{
    double sum = 0.0;
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t o = 0; o < L->c.out; o++)
            for (int64_t j = 0; j < L->out.lane[b].len; j++) {
                int64_t e = (b * L->c.out + o) * L->Tout + j;
                sum += (double)g[e] * (double)L->out.x.data[e];
                if (base_mask && (L->out.x.data[e] > 0.0f) != base_mask[e])
                    *kink = 1;
            }
    return sum;
}

typedef struct fd_stats {
    double worst;   /* max |fd - analytic| / max(|analytic|, 0.05) */
    int    n, skipped;
} fd_stats;

static void fd_compare(fd_stats *s, double fd, double an, int kink)
{
    double den = fabs(an) > 0.05 ? fabs(an) : 0.05;
    if (kink) {
        s->skipped++;
        return;
    }
    s->n++;
    if (fabs(fd - an) / den > s->worst)
        s->worst = fabs(fd - an) / den;
}

/* Runs the blocks that lead to the one under test; `run` does it for the
 * current parameter/input values and leaves the tested block's output in L. */
typedef void (*fd_run_fn)(layer *L, void *ctx);

static void fd_check_value(layer *L, fd_run_fn run, void *ctx, const float *g, const unsigned char *mask,
                           float *v, double an, double eps, fd_stats *s)
{
    float saved = *v;
    int kink = 0;
    double lp, lm;
    *v = (float)(saved + eps);
    run(L, ctx);
    lp = loss_of(L, g, mask, &kink);
    *v = (float)(saved - eps);
    run(L, ctx);
    lm = loss_of(L, g, mask, &kink);
    *v = saved;
    /* The perturbation actually applied, in float. */
    fd_compare(s, (lp - lm) / ((double)(float)(saved + eps) - (double)(float)(saved - eps)), an, kink);
}

typedef struct single_ctx {
    const float *x[2];
    int64_t      len[2];
} single_ctx;

static void run_single(layer *L, void *vctx)
{
    single_ctx *sc = vctx;
    for (int b = 0; b < 2; b++)
        set_lane(L, b, sc->x[b], sc->len[b], 0, sc->len[b], CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, b);
    layer_forward(L);
}

static void check_fd_single(fixture *f, int relu)
{
    const cfg c = {2, 3, 4, 2, 1, relu, 1};
    const double eps = 1e-2;   /* out is piecewise linear in W, b and x: no truncation error */
    uint64_t st = 77 + (uint64_t)relu;
    single_ctx sc;
    layer L;
    float *g, *gw1, *gb1, *gin1;
    unsigned char *mask;
    clapp_tensor gin;
    fd_stats sw = {0}, sb = {0}, sx = {0};
    int64_t n_out, n_in;
    float *xs[2];

    layer_open(&L, f, c, 5, 2, 21);
    sc.len[0] = 21;
    sc.len[1] = 15;
    xs[0] = random_seq(&st, c.cin, sc.len[0]);
    xs[1] = random_seq(&st, c.cin, sc.len[1]);
    sc.x[0] = xs[0];
    sc.x[1] = xs[1];
    n_out = L.B * c.out * L.Tout;
    n_in = L.B * c.cin * L.T;
    g = calloc((size_t)n_out, sizeof(float));
    mask = calloc((size_t)n_out, 1);
    gw1 = malloc((size_t)clapp_tensor_numel(L.gw) * sizeof(float));
    gb1 = malloc((size_t)c.out * sizeof(float));
    gin1 = malloc((size_t)n_in * sizeof(float));
    assert_int_equal(clapp_tensor_alloc_shape(&gin, 3, L.in.x.shape), 0);
    assert_non_null(g);
    assert_non_null(mask);
    assert_non_null(gw1);
    assert_non_null(gb1);
    assert_non_null(gin1);

    run_single(&L, &sc);
    assert_int_equal(L.out.lane[0].len, 10);   /* (21 + 2 - 4) / 2 + 1 */
    assert_int_equal(L.out.lane[1].len, 7);    /* (15 + 2 - 4) / 2 + 1 */
    for (int64_t b = 0; b < L.B; b++)
        for (int64_t o = 0; o < c.out; o++)
            for (int64_t j = 0; j < L.out.lane[b].len; j++) {
                int64_t e = (b * c.out + o) * L.Tout + j;
                g[e] = rng_unif(&st);
                mask[e] = L.out.x.data[e] > 0.0f;
            }
    {
        clapp_tensor gt = L.out.x;
        gt.data = g;
        zero_grads(&L);
        assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
        memcpy(gw1, L.gw->data, (size_t)clapp_tensor_numel(L.gw) * sizeof(float));
        memcpy(gb1, L.gb->data, (size_t)c.out * sizeof(float));
        memcpy(gin1, gin.data, (size_t)n_in * sizeof(float));
        /* Backward accumulates: a second call doubles the parameter gradients and
         * adds the input gradient again. */
        assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
        for (int64_t i = 0; i < clapp_tensor_numel(L.gw); i++)
            assert_float_equal(L.gw->data[i], 2.0f * gw1[i], 1e-6 * (1 + fabs(gw1[i])));
        for (int64_t i = 0; i < c.out; i++)
            assert_float_equal(L.gb->data[i], 2.0f * gb1[i], 1e-6 * (1 + fabs(gb1[i])));
        for (int64_t i = 0; i < n_in; i++)
            assert_float_equal(gin.data[i], 2.0f * gin1[i], 1e-6 * (1 + fabs(gin1[i])));
    }
    /* Input steps past a lane's len get no gradient. */
    for (int64_t i = 0; i < c.cin; i++)
        for (int64_t t = sc.len[1]; t < L.T; t++)
            assert_true(gin1[(1 * c.cin + i) * L.T + t] == 0.0f);

    for (int64_t i = 0; i < clapp_tensor_numel(L.w); i++)
        fd_check_value(&L, run_single, &sc, g, relu ? mask : NULL, &L.w->data[i], gw1[i], eps, &sw);
    for (int64_t i = 0; i < c.out; i++)
        fd_check_value(&L, run_single, &sc, g, relu ? mask : NULL, &L.b->data[i], gb1[i], eps, &sb);
    for (int b = 0; b < 2; b++)
        for (int64_t i = 0; i < c.cin; i++)
            for (int64_t t = 0; t < sc.len[b]; t++)
                fd_check_value(&L, run_single, &sc, g, relu ? mask : NULL, &xs[b][i * sc.len[b] + t],
                               gin1[(b * c.cin + i) * L.T + t], eps, &sx);
    printf("  fd single block %s: rel err W %.2e (%d, %d kinks skipped), b %.2e (%d), x %.2e (%d, %d)\n",
           relu ? "relu" : "none", sw.worst, sw.n, sw.skipped, sb.worst, sb.n, sx.worst, sx.n, sx.skipped);
    assert_true(sw.worst < 1e-3 && sb.worst < 1e-3 && sx.worst < 1e-3);
    assert_true(sw.n >= 20 && sb.n >= 3 && sx.n >= 60);

    clapp_tensor_free(&gin);
    free(g);
    free(mask);
    free(gw1);
    free(gb1);
    free(gin1);
    free(xs[0]);
    free(xs[1]);
    layer_close(&L);
}

/* A sequence of 30 steps in blocks of 11, 11, 8: the tested block is the
 * middle one, whose outputs also read context carried from block 1. */
typedef struct mid_ctx {
    float  *x;   /* [cin][30] */
} mid_ctx;

static void run_mid(layer *L, void *vctx)
{
    mid_ctx *mc = vctx;
    set_lane(L, 0, mc->x, 30, 0, 11, CLAPP_LANE_SEQ_START, 0);
    layer_forward(L);
    set_lane(L, 0, mc->x, 30, 11, 11, 0, 0);
    layer_forward(L);
}

static void check_fd_middle_block(fixture *f, int relu)
{
    const cfg c = {2, 3, 4, 2, 1, relu, 1};
    uint64_t st = 99 + (uint64_t)relu;
    mid_ctx mc;
    layer L;
    float *g, *gin1;
    unsigned char *mask;
    clapp_tensor gin, gt;
    fd_stats sw = {0}, sb = {0}, sx = {0};
    int64_t n_out;

    layer_open(&L, f, c, 6, 1, 11);
    mc.x = random_seq(&st, c.cin, 30);
    n_out = c.out * L.Tout;
    g = calloc((size_t)n_out, sizeof(float));
    mask = calloc((size_t)n_out, 1);
    assert_int_equal(clapp_tensor_alloc_shape(&gin, 3, L.in.x.shape), 0);
    assert_non_null(g);
    assert_non_null(mask);
    run_mid(&L, &mc);
    /* Padded steps 0..11 come with block 1 (outputs 0..4), 12..22 with block 2:
     * windows starting at 10..18 are complete, outputs 5..9. */
    assert_int_equal(L.out.lane[0].pts, 5);
    assert_int_equal(L.out.lane[0].len, 5);
    for (int64_t o = 0; o < c.out; o++)
        for (int64_t j = 0; j < L.out.lane[0].len; j++) {
            g[o * L.Tout + j] = rng_unif(&st);
            mask[o * L.Tout + j] = L.out.x.data[o * L.Tout + j] > 0.0f;
        }
    gt = L.out.x;
    gt.data = g;
    zero_grads(&L);
    assert_int_equal(L.d->backward(L.self, &gt, &gin), CLAPP_OK);
    gin1 = malloc((size_t)clapp_tensor_numel(&gin) * sizeof(float));
    assert_non_null(gin1);
    memcpy(gin1, gin.data, (size_t)clapp_tensor_numel(&gin) * sizeof(float));
    {
        float *gw1 = malloc((size_t)clapp_tensor_numel(L.gw) * sizeof(float));
        float gb1[3];
        assert_non_null(gw1);
        memcpy(gw1, L.gw->data, (size_t)clapp_tensor_numel(L.gw) * sizeof(float));
        memcpy(gb1, L.gb->data, sizeof gb1);
        for (int64_t i = 0; i < clapp_tensor_numel(L.w); i++)
            fd_check_value(&L, run_mid, &mc, g, relu ? mask : NULL, &L.w->data[i], gw1[i], 1e-2, &sw);
        for (int64_t i = 0; i < c.out; i++)
            fd_check_value(&L, run_mid, &mc, g, relu ? mask : NULL, &L.b->data[i], gb1[i], 1e-2, &sb);
        free(gw1);
    }
    /* Only this block's inputs (steps 11..21 of the sequence) get a gradient. */
    for (int64_t i = 0; i < c.cin; i++)
        for (int64_t t = 0; t < 11; t++)
            fd_check_value(&L, run_mid, &mc, g, relu ? mask : NULL, &mc.x[i * 30 + 11 + t], gin1[i * 11 + t],
                           1e-2, &sx);
    printf("  fd middle block %s: rel err W %.2e (%d), b %.2e (%d), x %.2e (%d, %d kinks skipped)\n",
           relu ? "relu" : "none", sw.worst, sw.n, sb.worst, sb.n, sx.worst, sx.n, sx.skipped);
    assert_true(sw.worst < 1e-3 && sb.worst < 1e-3 && sx.worst < 1e-3);
    assert_true(sw.n >= 20 && sx.n >= 18);
    clapp_tensor_free(&gin);
    free(gin1);
    free(g);
    free(mask);
    free(mc.x);
    layer_close(&L);
}

static void test_conv1d_finite_differences(void **state)
{
    fixture *f = *state;
    check_fd_single(f, 1);
    check_fd_single(f, 0);
    check_fd_middle_block(f, 1);
    check_fd_middle_block(f, 0);
}

/* ------------------------------------------------------------------------ */
/* 4. Parameter gradient == explicit local form, accumulated over blocks     */

static void test_conv1d_local_form(void **state)
{
    fixture *f = *state;
    const cfg c = {16, 8, 8, 4, 2, 1, 1};
    const int64_t T = 160, lens[2] = {300, 211};
    uint64_t st = 4242;
    layer L;
    float *x[2], *gseq[2];
    double *pre[2], *dw, *db, num = 0.0, den = 0.0, numb = 0.0, denb = 0.0;
    int64_t nout[2], pos[2] = {0, 0}, nw;
    int active_relu = 0, inactive_relu = 0;

    layer_open(&L, f, c, 9, 2, T);
    nw = clapp_tensor_numel(L.w);
    for (int b = 0; b < 2; b++) {
        x[b] = random_seq(&st, c.cin, lens[b]);
        nout[b] = ref_len(&c, lens[b]);
        gseq[b] = calloc((size_t)(c.out * nout[b]), sizeof(float));
        pre[b] = malloc((size_t)(c.out * nout[b]) * sizeof(double));
        assert_non_null(gseq[b]);
        assert_non_null(pre[b]);
    }
    zero_grads(&L);
    /* Two blocks per lane, a gradient per block, backward after each: accumulates. */
    for (int blk = 0; blk < 2; blk++) {
        clapp_tensor gt = L.out.x;
        float *g = calloc((size_t)clapp_tensor_numel(&L.out.x), sizeof(float));
        assert_non_null(g);
        for (int b = 0; b < 2; b++) {
            int64_t take = lens[b] - pos[b] < T ? lens[b] - pos[b] : T;
            uint32_t fl = (blk == 0 ? CLAPP_LANE_SEQ_START : 0) | (pos[b] + take == lens[b] ? CLAPP_LANE_SEQ_END : 0);
            set_lane(&L, b, x[b], lens[b], pos[b], take, fl, b);
            pos[b] += take;
        }
        layer_forward(&L);
        for (int b = 0; b < 2; b++)
            for (int64_t o = 0; o < c.out; o++)
                for (int64_t j = 0; j < L.out.lane[b].len; j++) {
                    float v = rng_unif(&st);
                    g[(b * c.out + o) * L.Tout + j] = v;
                    gseq[b][o * nout[b] + L.out.lane[b].pts + j] = v;
                }
        gt.data = g;
        assert_int_equal(L.d->backward(L.self, &gt, NULL), CLAPP_OK);
        free(g);
    }
    assert_int_equal(pos[0], lens[0]);
    assert_int_equal(pos[1], lens[1]);

    /* dW[o,i,k] = sum_t g[o,t] 1[a[o,t] > 0] x[i, t*s + k - p], db[o] = sum_t g[o,t] 1[a > 0],
     * with a from the direct convolution of the whole sequence. */
    dw = calloc((size_t)nw, sizeof(double));
    db = calloc((size_t)c.out, sizeof(double));
    assert_non_null(dw);
    assert_non_null(db);
    for (int b = 0; b < 2; b++) {
        ref_pre(&c, L.w->data, L.b->data, x[b], lens[b], lens[b], pre[b]);
        for (int64_t o = 0; o < c.out; o++)
            for (int64_t t = 0; t < nout[b]; t++) {
                double post = pre[b][o * nout[b] + t] > 0 ? 1.0 : 0.0;
                double gp = gseq[b][o * nout[b] + t] * post;
                if (post > 0)
                    active_relu++;
                else
                    inactive_relu++;
                db[o] += gp;
                for (int64_t i = 0; i < c.cin; i++)
                    for (int64_t k = 0; k < c.k; k++) {
                        int64_t tt = t * c.s + k - c.p;
                        if (tt >= 0 && tt < lens[b])
                            dw[(o * c.cin + i) * c.k + k] += gp * x[b][i * lens[b] + tt];
                    }
            }
    }
    for (int64_t i = 0; i < nw; i++) {
        num = fmax(num, fabs(L.gw->data[i] - dw[i]));
        den = fmax(den, fabs(dw[i]));
    }
    for (int64_t o = 0; o < c.out; o++) {
        numb = fmax(numb, fabs(L.gb->data[o] - db[o]));
        denb = fmax(denb, fabs(db[o]));
    }
    printf("  local form: %d active / %d inactive units, max|dW - ref| %.2e (max|ref| %.2f), "
           "max|db - ref| %.2e (max|ref| %.2f)\n",
           active_relu, inactive_relu, num, den, numb, denb);
    assert_true(active_relu > 100 && inactive_relu > 100);   /* the ReLU gate matters */
    assert_true(den > 1.0);
    assert_true(num < 1e-5 * den);
    assert_true(numb < 1e-5 * denb);
    for (int b = 0; b < 2; b++) {
        free(x[b]);
        free(gseq[b]);
        free(pre[b]);
    }
    free(dw);
    free(db);
    layer_close(&L);
}

/* ------------------------------------------------------------------------ */
/* 5. Seeded initialisation                                                  */

static void test_conv1d_seed(void **state)
{
    fixture *f = *state;
    const cfg c = {8, 64, 4, 2, 1, 1, 1};
    const double bound = 1.0 / sqrt(8.0 * 4.0);
    layer a, b, d;
    int64_t n;
    double sum = 0.0, sq = 0.0, mx = 0.0;
    int differ = 0;

    layer_open(&a, f, c, 1234, 1, 64);
    layer_open(&b, f, c, 1234, 2, 100);   /* shape of the stream does not matter */
    layer_open(&d, f, c, 1235, 1, 64);
    n = clapp_tensor_numel(a.w);
    assert_memory_equal(a.w->data, b.w->data, (size_t)n * sizeof(float));
    assert_memory_equal(a.b->data, b.b->data, (size_t)c.out * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        double v = a.w->data[i];
        differ += a.w->data[i] != d.w->data[i];
        assert_true(fabs(v) <= bound);
        sum += v;
        sq += v * v;
        mx = fmax(mx, fabs(v));
    }
    for (int64_t o = 0; o < c.out; o++)
        assert_true(fabs(a.b->data[o]) <= bound);
    printf("  seed: %lld weights, mean %.4f, var %.5f (uniform: %.5f), max|w| %.4f (bound %.4f), "
           "%d differ for another seed\n",
           (long long)n, sum / (double)n, sq / (double)n, bound * bound / 3.0, mx, bound, differ);
    assert_true(differ > n * 9 / 10);
    assert_true(fabs(sum / (double)n) < 0.02 * bound * 5);
    assert_true(fabs(sq / (double)n - bound * bound / 3.0) < 0.1 * bound * bound / 3.0);
    assert_true(mx > 0.99 * bound);
    /* Gradients start at zero. */
    for (int64_t i = 0; i < n; i++)
        assert_true(a.gw->data[i] == 0.0f);
    layer_close(&a);
    layer_close(&b);
    layer_close(&d);
}

/* ------------------------------------------------------------------------ */
/* 6. Stream negotiation, modes, reset, errors                               */

static void test_conv1d_lifecycle(void **state)
{
    fixture *f = *state;
    const cfg c = {1, 4, 10, 5, 2, 1, 1};
    uint64_t st = 5;
    layer L;
    float *x = random_seq(&st, 1, 400);
    float first[4 * 21];
    clapp_tensor g;
    clapp_stream_info bad, o;

    /* Audio layer 1 on 20480-sample blocks: rate 16000 -> 3200, capacity for
     * a full context plus a block plus the right pad. */
    layer_open(&L, f, c, 3, 2, 20480);
    assert_true(L.oinfo.rate == 3200.0);
    assert_int_equal(L.Tout, (9 + 20480 + 2 - 10) / 5 + 1);
    layer_close(&L);

    layer_open(&L, f, c, 3, 1, 100);
    assert_int_equal(L.Tout, 21);
    assert_int_equal(clapp_tensor_alloc_shape(&g, 3, L.out.x.shape), 0);
    /* Frozen: forward works, backward is refused. */
    assert_int_equal(L.d->set_mode(L.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    set_lane(&L, 0, x, 400, 0, 100, CLAPP_LANE_SEQ_START, 0);
    layer_forward(&L);
    assert_int_equal(L.out.lane[0].len, 19);   /* (2 + 100 - 10) / 5 + 1 */
    memcpy(first, L.out.x.data, sizeof first);
    tu_log_clear(&f->log);
    assert_int_equal(L.d->backward(L.self, &g, NULL), CLAPP_E_STATE);
    assert_int_equal(f->log.n_errors, 1);
    assert_int_equal(L.d->set_mode(L.self, CLAPP_MODE_LEARN), CLAPP_OK);
    assert_int_equal(L.d->backward(L.self, &g, NULL), CLAPP_E_STATE);   /* no learning forward yet */

    /* reset(lane) mid-sequence: the next block starts a new sequence (left pad, pts 0)
     * even without SEQ_START. */
    set_lane(&L, 0, x, 400, 100, 100, 0, 0);
    layer_forward(&L);
    assert_int_equal(L.out.lane[0].pts, 19);
    assert_int_equal(L.out.lane[0].len, 20);   /* 7 carried + 100 new steps */
    assert_int_equal(L.d->backward(L.self, &g, NULL), CLAPP_OK);
    assert_int_equal(L.d->reset(L.self, 0), CLAPP_OK);
    set_lane(&L, 0, x, 400, 0, 100, 0, 0);
    layer_forward(&L);
    assert_int_equal(L.out.lane[0].pts, 0);
    assert_int_equal(L.out.lane[0].len, 19);
    assert_memory_equal(first, L.out.x.data, sizeof first);
    assert_int_equal(L.d->reset(L.self, -1), CLAPP_OK);
    assert_int_equal(L.d->reset(L.self, 1), CLAPP_E_INVAL);

    /* Wrong input shapes. */
    tu_log_clear(&f->log);
    memset(&bad, 0, sizeof bad);
    bad.ndim = 5;
    bad.shape[0] = 1;
    bad.shape[1] = 1;
    bad.shape[2] = 8;
    bad.shape[3] = bad.shape[4] = 4;
    assert_int_equal(L.d->configure(L.self, &bad, &o), CLAPP_E_SHAPE);
    assert_int_equal(tu_log_count(&f->log, "[B, C, T]"), 1);
    /* Re-configure with another block size keeps the weights. */
    {
        float w0 = 0;
        clapp_stream_info si = {3, {1, 1, 50, 0, 0, 0}, 16000.0};
        const clapp_named_tensor *list;
        int32_t n;
        assert_int_equal(L.d->configure(L.self, &si, &o), CLAPP_OK);
        assert_int_equal(L.d->tensors(L.self, &list, &n), CLAPP_OK);
        L.w->data[0] += 0.5f;
        w0 = L.w->data[0];
        assert_int_equal(L.d->configure(L.self, &si, &o), CLAPP_OK);
        assert_true(list[0].value->data[0] == w0);
        assert_int_equal(o.shape[2], (9 + 50 + 2 - 10) / 5 + 1);
    }
    /* A block of the old shape is now refused. */
    tu_log_clear(&f->log);
    memcpy(L.out.lane, L.in.lane, sizeof(clapp_lane));
    assert_int_equal(L.d->forward(L.self, &L.in, &L.out), CLAPP_E_SHAPE);
    assert_int_equal(f->log.n_errors, 1);
    clapp_tensor_free(&g);
    layer_close(&L);

    /* pad >= kernel: a sequence yields outputs from padding alone (as PyTorch), an idle lane none. */
    {
        const cfg cp = {1, 2, 2, 1, 3, 0, 1};
        layer P;
        layer_open(&P, f, cp, 4, 2, 8);
        set_lane(&P, 0, x, 400, 0, 0, 0, -1);
        set_lane(&P, 1, x, 400, 0, 1, CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END, 7);
        layer_forward(&P);
        assert_int_equal(P.out.lane[0].len, 0);
        assert_int_equal(P.out.lane[1].len, ref_len(&cp, 1));   /* (1 + 6 - 2) / 1 + 1 = 6 */
        assert_int_equal(ref_len(&cp, 1), 6);
        /* Windows entirely in the padding give the bias. */
        assert_float_equal(P.out.x.data[(1 * 2 + 1) * P.Tout + 0], P.b->data[1], 0.0);
        assert_float_equal(P.out.x.data[(1 * 2 + 1) * P.Tout + 5], P.b->data[1], 0.0);
        layer_close(&P);
    }
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv1d_descriptor),
        cmocka_unit_test(test_conv1d_whole_sequence),
        cmocka_unit_test(test_conv1d_streaming),
        cmocka_unit_test(test_conv1d_finite_differences),
        cmocka_unit_test(test_conv1d_local_form),
        cmocka_unit_test(test_conv1d_seed),
        cmocka_unit_test(test_conv1d_lifecycle),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
