/* The loss element's random draws and the defaults that follow the reference
 * codes (core/learning/loss.c, core/graph/graph.c, core/storage/checkpoint.c):
 *
 * 1. per-step negatives differ across k and are uniform over the pool with
 *    replacement (chi-square over many draws); shared ones are one set per
 *    context;
 * 2. gradients (z, c, W) with per-step and shared draws against a double
 *    reference computed here from the recorded draws, itself checked by
 *    double-precision finite differences, for every mode;
 * 3. neg_exclude_self never draws the own lane and is uniform over the others;
 * 4. grad_target=auto per mode, explicit values, and the refusal of
 *    detach_context=true with target= (one error line);
 * 5. a checkpoint without loss_version (before the change) loads with the old
 *    defaults and is saved again as version 1; an unknown version is refused.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "learning/loss_clapp.h"
#include "learning/loss_supervised.h"
#include "graph/graph.h"
#include "learning/loss.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "testutil.h"

/* The `clapp` element's parts (learning/loss_clapp.h) and the classifier of
 * a `supervised` one, from a graph node. */
static inline const clapp_loss_params *node_loss_params(const clapp_node *nd)
{
    return clapp_loss_clapp_params(nd->loss_form, nd->loss_self);
}
static inline clapp_loss *node_loss_flat(const clapp_node *nd)
{
    return clapp_loss_clapp_flat(nd->loss_form, nd->loss_self);
}
static inline clapp_loss_video *node_loss_video(const clapp_node *nd)
{
    return clapp_loss_clapp_video(nd->loss_form, nd->loss_self);
}
static inline clapp_loss_supervised *node_loss_sup(const clapp_node *nd)
{
    return clapp_loss_supervised_of(nd->loss_form, nd->loss_self);
}

static uint64_t trng = 0x2545F4914F6CDD1Dull;
static double tnormal(void)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        trng ^= trng << 13;
        trng ^= trng >> 7;
        trng ^= trng << 17;
        u[i] = (double)(trng >> 11) * 0x1.0p-53;
    }
    return sqrt(-2.0 * log(u[0] + 1e-12)) * cos(6.283185307179586 * u[1]);
}

typedef struct tblock {
    clapp_block blk;
    clapp_lane  lane[8];
} tblock;

static void tb_init(tblock *tb, int32_t B, int64_t D, int64_t T, const int32_t *lens, double scale)
{
    int64_t sh[3] = {B, D, T};
    memset(tb, 0, sizeof *tb);
    assert_int_equal(clapp_tensor_alloc_shape(&tb->blk.x, 3, sh), 0);
    tb->blk.lanes = B;
    tb->blk.lane = tb->lane;
    for (int32_t b = 0; b < B; b++) {
        tb->lane[b].len = lens[b];
        for (int64_t j = 0; j < D; j++)
            for (int64_t t = 0; t < lens[b]; t++)
                tb->blk.x.data[(b * D + j) * T + t] = (float)(scale * tnormal());
    }
}

static clapp_tensor grad_like(const tblock *tb)
{
    clapp_tensor g = {0};
    g.ndim = 3;
    memcpy(g.shape, tb->blk.x.shape, sizeof g.shape);
    assert_int_equal(clapp_tensor_alloc(&g), 0);
    return g;
}

static const clapp_named_tensor *loss_W(clapp_loss *L)
{
    const clapp_named_tensor *nt;
    int32_t n;
    assert_int_equal(clapp_loss_tensors(L, &nt, &n), 0);
    return &nt[0];
}

/* ---- 1. the draws ------------------------------------------------------------- */

static void test_per_step_draws(void **state)
{
    enum { B = 2, T = 24, K = 4, N = 3, CALLS = 400 };
    const int32_t lens[B] = {24, 15};
    clapp_loss_params p;
    clapp_loss *L = NULL;
    tblock z;
    long counts[64] = {0}, total = 0;
    long same_k = 0, pairs_k = 0;
    (void)state;
    tb_init(&z, B, 3, T, lens, 1.0);
    clapp_loss_default_params(&p);
    assert_int_equal(p.neg_draw, CLAPP_LOSS_NEG_PER_STEP);   /* the reference is the default */
    p.steps = K;
    p.negatives = N;
    p.window = 0;
    assert_int_equal(clapp_loss_create(&L, &p, 3, 3, B, T, NULL, "draws"), 0);
    for (int call = 0; call < CALLS; call++) {
        clapp_loss_draws d;
        assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, NULL), 0);
        assert_int_equal(clapp_loss_last_draws(L, &d), 0);
        assert_true(d.per_step);
        assert_int_equal(d.n_neg, d.pair_off[K] * N);
        for (int64_t i = 0; i < d.n_neg; i++) {
            assert_true(d.neg[0][i] >= 0 && d.neg[0][i] < d.pool_off[B]);
            counts[d.neg[0][i]]++;
            total++;
        }
        /* the same context (lane 0, t = 0) at k = 1 and k = 2: pair 0 of each step */
        for (int n = 0; n < N; n++) {
            same_k += d.neg[0][d.pair_off[0] * N + n] == d.neg[0][d.pair_off[1] * N + n];
            pairs_k++;
        }
    }
    {
        const int64_t npool = lens[0] + lens[1];
        double chi2 = 0, expect = (double)total / (double)npool;
        for (int64_t q = 0; q < npool; q++)
            chi2 += (counts[q] - expect) * (counts[q] - expect) / expect;
        /* npool - 1 = 38 degrees of freedom: mean 38, sd 8.7; 38 + 6 sd */
        print_message("per-step negatives: %ld draws over %lld pool steps, chi2 = %.1f (38 dof)\n",
                      total, (long long)npool, chi2);
        assert_true(chi2 < 90.0);
        /* independent across k: equal with probability 1/npool (~2.6%) */
        print_message("same negative at k=1 and k=2: %ld of %ld\n", same_k, pairs_k);
        assert_true(same_k < pairs_k / 10);
    }
    clapp_loss_destroy(L);

    /* shared: one set per context, n_neg = contexts * N */
    p.neg_draw = CLAPP_LOSS_NEG_SHARED;
    assert_int_equal(clapp_loss_create(&L, &p, 3, 3, B, T, NULL, "shared"), 0);
    {
        clapp_loss_draws d;
        assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, NULL), 0);
        assert_int_equal(clapp_loss_last_draws(L, &d), 0);
        assert_false(d.per_step);
        assert_int_equal(d.n_neg, d.contexts * N);
    }
    clapp_loss_destroy(L);
    clapp_tensor_free(&z.blk.x);
}

/* ---- 2. gradients against a double reference ------------------------------------ */

/* Negative n of pair `pair` (context row s) of step kk. */
static int32_t neg_of(const clapp_loss_draws *d, int64_t pair, int64_t s, int n)
{
    return d->neg[0][(d->per_step ? pair : s) * d->negatives + n];
}

/* Loss and its gradients (dz, dc, dW: added) in double from the draws, after
 * docs/ALGORITHMS.md §1.2-§1.5 written pair by pair. z [B, dz, T], c [B, dc, T],
 * W [K, dz, dc]. *gates counts the active hinge terms (kink detection). */
static double ref_loss(clapp_loss_mode mode, const clapp_loss_draws *d, const int32_t *lens, int64_t T,
                       const double *z, int64_t dz, const double *c, int64_t dc, const double *W,
                       double *gz, double *gc, double *gW, long *gates)
{
    const int B = d->lanes, K = d->steps, N = d->negatives;
    int K_eff = 0;
    double loss = 0;
    double *pred = malloc(sizeof(double) * (size_t)dz);
    *gates = 0;
    for (int k = 1; k <= K; k++)
        K_eff += d->pair_off[k] > d->pair_off[k - 1];
#define Z(b_, j_, t_) z[((int64_t)(b_) * dz + (j_)) * T + (t_)]
#define C(b_, i_, t_) c[((int64_t)(b_) * dc + (i_)) * T + (t_)]
    for (int k = 1; k <= K; k++) {
        const double *Wk = W + (int64_t)(k - 1) * dz * dc;
        int64_t pair = d->pair_off[k - 1], P = d->pair_off[k] - pair, npos = 0, nneg = 0;
        double wpos, wneg;
        if (P == 0)
            continue;
        if (mode == CLAPP_LOSS_CLAPP) {
            for (int b = 0; b < B; b++)
                for (int t = d->lo[b]; t < d->hi[b] - k; t++) {
                    int r = d->lane_r[0][(k - 1) * B + b];
                    if (d->lane_pos[0][b])
                        npos++;
                    else
                        nneg += r >= 0 && t + k < lens[r];
                }
            wpos = npos ? 1.0 / (K_eff * (double)npos) : 0;
            wneg = nneg ? 1.0 / (K_eff * (double)nneg) : 0;
        } else {
            wpos = 1.0 / (K_eff * (double)P);
            wneg = wpos / N;
        }
        for (int b = 0; b < B; b++)
            for (int t = d->lo[b]; t < d->hi[b] - k; t++, pair++) {
                int64_t s = d->ctx_off[b] + t - d->lo[b];
                int qb[32], qt[32], nq = 0, pos0 = 1;
                double u[32], g[32];
                for (int64_t j = 0; j < dz; j++) {
                    pred[j] = 0;
                    for (int64_t i = 0; i < dc; i++)
                        pred[j] += Wk[j * dc + i] * C(b, i, t);
                }
                if (mode == CLAPP_LOSS_CLAPP) {
                    int r = d->lane_r[0][(k - 1) * B + b];
                    if (d->lane_pos[0][b]) {
                        qb[nq] = b, qt[nq++] = t + k;
                    } else {
                        pos0 = 0;
                        if (r >= 0 && t + k < lens[r])
                            qb[nq] = r, qt[nq++] = t + k;
                    }
                } else {
                    qb[nq] = b, qt[nq++] = t + k;
                    for (int n = 0; n < N; n++) {
                        int32_t q = neg_of(d, pair, s, n);
                        int lb = 0;
                        while (q >= d->pool_off[lb + 1])
                            lb++;
                        qb[nq] = lb, qt[nq++] = (int)(q - d->pool_off[lb]);
                    }
                }
                for (int m = 0; m < nq; m++) {
                    u[m] = 0;
                    for (int64_t j = 0; j < dz; j++)
                        u[m] += Z(qb[m], j, qt[m]) * pred[j];
                }
                if (mode == CLAPP_LOSS_INFONCE) {
                    double mx = u[0], se = 0;
                    for (int m = 1; m < nq; m++)
                        mx = fmax(mx, u[m]);
                    for (int m = 0; m < nq; m++)
                        se += exp(u[m] - mx);
                    loss += (mx + log(se) - u[0]) * wpos;
                    for (int m = 0; m < nq; m++)
                        g[m] = (exp(u[m] - mx) / se - (m == 0)) * wpos;
                } else {
                    for (int m = 0; m < nq; m++) {
                        int is_pos = m == 0 && pos0;
                        g[m] = 0;
                        if (is_pos && u[m] < 1) {
                            loss += (1 - u[m]) * wpos;
                            g[m] = -wpos;
                        } else if (!is_pos && u[m] > -1) {
                            loss += (1 + u[m]) * wneg;
                            g[m] = wneg;
                        }
                        *gates += g[m] != 0;
                    }
                }
                /* u = z_q . (W_k c): dz_q += g W_k c, dc += g W_k^T z_q, dW_k += g z_q c^T */
                for (int m = 0; m < nq; m++) {
                    if (g[m] == 0)
                        continue;
                    for (int64_t j = 0; j < dz; j++) {
                        gz[((int64_t)qb[m] * dz + j) * T + qt[m]] += g[m] * pred[j];
                        for (int64_t i = 0; i < dc; i++) {
                            gc[((int64_t)b * dc + i) * T + t] += g[m] * Wk[j * dc + i] * Z(qb[m], j, qt[m]);
                            gW[(int64_t)(k - 1) * dz * dc + j * dc + i] += g[m] * Z(qb[m], j, qt[m]) * C(b, i, t);
                        }
                    }
                }
            }
    }
#undef Z
#undef C
    free(pred);
    return loss;
}

static double rel_diff(const double *ref, const float *got, int64_t n, double *refmax)
{
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs(ref[i]));
        e = fmax(e, fabs(ref[i] - (double)got[i]));
    }
    *refmax = m;
    return m > 0 ? e / m : e;
}

static double *to_double(const float *x, int64_t n)
{
    double *y = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i];
    return y;
}

typedef struct grad_case {
    const char         *label;
    clapp_loss_mode     mode;
    clapp_loss_neg_draw draw;
    int                 exclude_self;
} grad_case;

static void check_grad_case(const grad_case *gc_)
{
    enum { B = 3, T = 14, DZ = 4, DC = 3, K = 3, N = 4 };
    const int32_t lens[B] = {14, 9, 11};
    const int64_t nz = B * DZ * T, nc = B * DC * T, nw = K * DZ * DC;
    clapp_loss_params p;
    clapp_loss *L = NULL;
    clapp_loss_draws d;
    clapp_loss_stats st;
    tblock z, c;
    clapp_tensor gz, gcx;
    double *zd, *cd, *Wd, *rz, *rc, *rW, e, mx, worst = 0, fd_worst = 0;
    long gates;

    clapp_loss_default_params(&p);
    p.mode = gc_->mode;
    p.neg_draw = gc_->draw;
    p.neg_exclude_self = gc_->exclude_self;
    p.steps = K;
    p.negatives = N;
    p.window = 0;
    p.grad_target = 1;
    tb_init(&z, B, DZ, T, lens, 0.8);
    tb_init(&c, B, DC, T, lens, 0.8);
    gz = grad_like(&z);
    gcx = grad_like(&c);
    assert_int_equal(clapp_loss_create(&L, &p, DZ, DC, B, T, NULL, gc_->label), 0);
    for (int64_t i = 0; i < nw; i++)   /* scores of order 1: hinges partly active */
        loss_W(L)->value->data[i] *= 2.5f;
    assert_int_equal(clapp_loss_compute(L, &z.blk, &c.blk, &gz, &gcx, &st), 0);
    assert_int_equal(clapp_loss_last_draws(L, &d), 0);
    assert_int_equal(d.per_step, gc_->draw == CLAPP_LOSS_NEG_PER_STEP);

    zd = to_double(z.blk.x.data, nz);
    cd = to_double(c.blk.x.data, nc);
    Wd = to_double(loss_W(L)->value->data, nw);
    rz = calloc((size_t)nz, sizeof(double));
    rc = calloc((size_t)nc, sizeof(double));
    rW = calloc((size_t)nw, sizeof(double));
    double lref = ref_loss(p.mode, &d, lens, T, zd, DZ, cd, DC, Wd, rz, rc, rW, &gates);
    assert_true(fabs(lref - st.loss) <= 1e-5 * fmax(1.0, fabs(lref)));
    e = rel_diff(rz, gz.data, nz, &mx);
    worst = fmax(worst, e);
    assert_true(mx > 0);
    e = rel_diff(rc, gcx.data, nc, &mx);
    worst = fmax(worst, e);
    e = rel_diff(rW, loss_W(L)->grad->data, nw, &mx);
    worst = fmax(worst, e);

    /* the reference itself: central differences in double over every
     * coordinate of W and a sample of z and c (kinks skipped) */
    {
        double *bufs[3] = {Wd, zd, cd}, *grads[3] = {rW, rz, rc};
        int64_t sizes[3] = {nw, nz, nc};
        double *sz = calloc((size_t)nz, sizeof(double)), *sc = calloc((size_t)nc, sizeof(double));
        double *sw = calloc((size_t)nw, sizeof(double));
        int checked = 0;
        for (int a = 0; a < 3; a++) {
            double gmax = 0;
            for (int64_t i = 0; i < sizes[a]; i++)
                gmax = fmax(gmax, fabs(grads[a][i]));
            for (int64_t i = 0; i < sizes[a]; i += a ? 7 : 1) {
                const double h = 1e-6, x0 = bufs[a][i];
                long gp, gm;
                double lp, lm;
                bufs[a][i] = x0 + h;
                lp = ref_loss(p.mode, &d, lens, T, zd, DZ, cd, DC, Wd, sz, sc, sw, &gp);
                bufs[a][i] = x0 - h;
                lm = ref_loss(p.mode, &d, lens, T, zd, DZ, cd, DC, Wd, sz, sc, sw, &gm);
                bufs[a][i] = x0;
                if (gp != gates || gm != gates)
                    continue;
                fd_worst = fmax(fd_worst, fabs((lp - lm) / (2 * h) - grads[a][i]) / gmax);
                checked++;
            }
        }
        assert_true(checked > 50);
        free(sz);
        free(sc);
        free(sw);
    }
    print_message("%-26s loss %.6f: engine vs double reference %.1e, reference vs finite "
                  "differences %.1e (relative to the largest gradient)\n",
                  gc_->label, lref, worst, fd_worst);
    assert_true(worst <= 1e-5);
    assert_true(fd_worst <= 1e-5);

    free(zd);
    free(cd);
    free(Wd);
    free(rz);
    free(rc);
    free(rW);
    clapp_loss_destroy(L);
    clapp_tensor_free(&gz);
    clapp_tensor_free(&gcx);
    clapp_tensor_free(&z.blk.x);
    clapp_tensor_free(&c.blk.x);
}

static void test_gradients_match_reference(void **state)
{
    static const grad_case cases[] = {
        {"clapp-s per_step", CLAPP_LOSS_CLAPP_S, CLAPP_LOSS_NEG_PER_STEP, 0},
        {"clapp-s shared", CLAPP_LOSS_CLAPP_S, CLAPP_LOSS_NEG_SHARED, 0},
        {"infonce per_step", CLAPP_LOSS_INFONCE, CLAPP_LOSS_NEG_PER_STEP, 0},
        {"infonce shared", CLAPP_LOSS_INFONCE, CLAPP_LOSS_NEG_SHARED, 0},
        {"hinge-cpc per_step", CLAPP_LOSS_HINGE_CPC, CLAPP_LOSS_NEG_PER_STEP, 0},
        {"clapp", CLAPP_LOSS_CLAPP, CLAPP_LOSS_NEG_PER_STEP, 0},
        {"clapp neg_exclude_self", CLAPP_LOSS_CLAPP, CLAPP_LOSS_NEG_PER_STEP, 1},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_grad_case(&cases[i]);
}

/* ---- 3. neg_exclude_self ------------------------------------------------------------ */

static void test_exclude_self(void **state)
{
    enum { B = 4, T = 10, K = 3, CALLS = 600 };
    const int32_t lens[B] = {10, 7, 0, 9};   /* lane 2 is empty: never drawn */
    tblock z;
    (void)state;
    tb_init(&z, B, 2, T, lens, 1.0);
    for (int ex = 0; ex < 2; ex++) {
        clapp_loss_params p;
        clapp_loss *L = NULL;
        long cnt[B][B];
        memset(cnt, 0, sizeof cnt);
        clapp_loss_default_params(&p);
        p.mode = CLAPP_LOSS_CLAPP;
        p.steps = K;
        p.window = 0;
        p.neg_exclude_self = ex;
        assert_int_equal(clapp_loss_create(&L, &p, 2, 2, B, T, NULL, "ex"), 0);
        for (int call = 0; call < CALLS; call++) {
            clapp_loss_draws d;
            assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, NULL), 0);
            assert_int_equal(clapp_loss_last_draws(L, &d), 0);
            for (int kk = 0; kk < K; kk++)
                for (int b = 0; b < B; b++) {
                    int r = d.lane_r[0][kk * B + b];
                    assert_true(r >= 0 && r < B && lens[r] > 0);
                    cnt[b][r]++;
                }
        }
        for (int b = 0; b < B; b++) {
            int choices = 0;
            double chi2 = 0, expect;
            if (lens[b] == 0)
                continue;
            if (ex)
                assert_int_equal(cnt[b][b], 0);
            for (int r = 0; r < B; r++)
                choices += lens[r] > 0 && (!ex || r != b);
            expect = (double)(CALLS * K) / choices;
            for (int r = 0; r < B; r++)
                if (lens[r] > 0 && (!ex || r != b))
                    chi2 += (cnt[b][r] - expect) * (cnt[b][r] - expect) / expect;
            /* at most 2 degrees of freedom: chi2 > 20 has p < 5e-5 */
            print_message("neg_exclude_self=%d lane %d: own lane %ld of %d, chi2 %.2f\n", ex, b,
                          cnt[b][b], CALLS * K, chi2);
            assert_true(chi2 < 20.0);
            if (!ex)
                assert_true(cnt[b][b] > 0);
        }
        clapp_loss_destroy(L);
    }
    /* one active lane: no other lane to draw, no negative term */
    {
        const int32_t one[B] = {10, 0, 0, 0};
        tblock y;
        clapp_loss_params p;
        clapp_loss *L = NULL;
        clapp_loss_draws d;
        tb_init(&y, B, 2, T, one, 1.0);
        clapp_loss_default_params(&p);
        p.mode = CLAPP_LOSS_CLAPP;
        p.steps = K;
        p.neg_exclude_self = 1;
        assert_int_equal(clapp_loss_create(&L, &p, 2, 2, B, T, NULL, "one"), 0);
        assert_int_equal(clapp_loss_compute(L, &y.blk, &y.blk, NULL, NULL, NULL), 0);
        assert_int_equal(clapp_loss_last_draws(L, &d), 0);
        for (int kk = 0; kk < K; kk++)
            assert_int_equal(d.lane_r[0][kk * B + 0], -1);
        clapp_loss_destroy(L);
        clapp_tensor_free(&y.blk.x);
    }
    clapp_tensor_free(&z.blk.x);
}

/* ---- 4. grad_target defaults and the refused combination ----------------------------- */

typedef struct gfix {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
    char                err[1024];
} gfix;

#define LAYERS "source ! conv1d name=a out=4 kernel=1 stride=1 pad=0 ! clapp name=la steps=2 " \
               "negatives=2 window=0 ! conv1d name=b out=3 kernel=1 stride=1 pad=0 "

static int gfix_open(gfix *f, const char *text)
{
    clapp_stream_info src = {3, {2, 1, 16, 0, 0, 0}, 100.0};
    clapp_graph_params gp;
    memset(f, 0, sizeof *f);
    tu_host_init(&f->host, &f->log);
    assert_int_equal(clapp_registry_init_default(&f->reg, &f->host), 0);
    if (clapp_pipedesc_parse(&f->pd, text, "<test>", f->err, sizeof f->err) < 0 ||
        clapp_pipedesc_resolve(&f->pd, &f->reg, f->err, sizeof f->err) < 0)
        fail_msg("%s", f->err);
    clapp_graph_default_params(&gp);
    return clapp_graph_create(&f->g, &f->pd, &src, &gp, &f->host, f->err, sizeof f->err);
}

static void gfix_close(gfix *f)
{
    clapp_graph_destroy(&f->g);
    clapp_pipedesc_free(&f->pd);
    clapp_registry_free(&f->reg);
    tu_log_free(&f->log);
}

static void test_grad_target_defaults(void **state)
{
    static const struct {
        const char *loss;
        int         expect;
    } cases[] = {
        {"mode=clapp-s target=a", 1},
        {"mode=clapp target=a", 1},
        {"mode=infonce target=a", 0},       /* GIM: the GRU input is detached */
        {"mode=hinge-cpc target=a", 0},
        {"mode=infonce target=a grad_target=true", 1},
        {"mode=clapp-s target=a grad_target=false", 0},
    };
    char text[512];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gfix f;
        snprintf(text, sizeof text, LAYERS "! clapp name=lb steps=2 negatives=2 window=0 %s",
                 cases[i].loss);
        assert_int_equal(gfix_open(&f, text), 0);
        assert_int_equal(node_loss_params(&f.g.nodes[4])->grad_target, cases[i].expect);
        gfix_close(&f);
    }
    /* InfoNCE with the target inside its own module (CPC end to end): true */
    {
        gfix f;
        assert_int_equal(gfix_open(&f, "source ! conv1d name=a out=4 kernel=1 stride=1 pad=0 "
                                       "! conv1d name=b out=3 kernel=1 stride=1 pad=0 "
                                       "! clapp name=l mode=infonce target=a window=0"), 0);
        assert_int_equal(node_loss_params(&f.g.nodes[3])->grad_target, 1);
        gfix_close(&f);
    }
}

static void test_detach_with_target_refused(void **state)
{
    gfix f;
    (void)state;
    assert_true(gfix_open(&f, LAYERS "! clapp name=lb detach_context=true target=a") < 0);
    print_message("error: %s\n", f.err);
    assert_null(strchr(f.err, '\n'));                   /* one line */
    assert_non_null(strstr(f.err, "'lb'"));
    assert_non_null(strstr(f.err, "detach_context=true"));
    assert_non_null(strstr(f.err, "target=a"));
    assert_int_equal(f.log.n_errors, 0);                /* and nothing else */
    gfix_close(&f);
}

/* ---- 5. checkpoints before loss version 2 ---------------------------------------------- */

/* Rename the metadata key in place (same length: the header stays valid). */
static void rename_meta_key(const char *path, const char *from, const char *to)
{
    FILE *fp = fopen(path, "r+b");
    uint64_t hl;
    char *hdr, *at;
    assert_non_null(fp);
    assert_int_equal(fread(&hl, 8, 1, fp), 1);
    hdr = malloc(hl + 1);
    assert_int_equal(fread(hdr, 1, hl, fp), hl);
    hdr[hl] = 0;
    at = strstr(hdr, from);
    assert_non_null(at);
    memcpy(at, to, strlen(to));
    fseek(fp, 8, SEEK_SET);
    assert_int_equal(fwrite(hdr, 1, hl, fp), hl);
    fclose(fp);
    free(hdr);
}

static void test_old_checkpoint(void **state)
{
    const char *text = LAYERS "! clapp name=lb mode=infonce target=a steps=2 negatives=2 window=0 "
                       "! clapp name=lc mode=clapp-s neg_draw=per_step target=a window=0";
    char *dir = tu_tmpdir("lossver"), *path = tu_path(dir, "c.safetensors"), *v;
    clapp_ckpt_options opt = {1, 1};
    gfix f;
    clapp_loss_draws d;
    (void)state;
    assert_int_equal(gfix_open(&f, text), 0);
    assert_int_equal(clapp_ckpt_save(&f.g, path, &opt, f.err, sizeof f.err), 0);
    gfix_close(&f);
    v = clapp_ckpt_read_meta(path, "loss_version", f.err, sizeof f.err);
    assert_string_equal(v, "2");
    free(v);

    /* as written before the change: no loss_version */
    rename_meta_key(path, "\"loss_version\"", "\"loss_versioX\"");
    assert_int_equal(gfix_open(&f, text), 0);
    assert_int_equal(node_loss_params(&f.g.nodes[4])->grad_target, 0);
    assert_int_equal(clapp_ckpt_load(&f.g, path, &opt, f.err, sizeof f.err), 0);
    assert_int_equal(f.g.loss_version, 1);
    assert_int_equal(node_loss_params(&f.g.nodes[2])->neg_draw, CLAPP_LOSS_NEG_SHARED);   /* la: unset */
    assert_int_equal(node_loss_params(&f.g.nodes[4])->neg_draw, CLAPP_LOSS_NEG_SHARED);
    assert_int_equal(node_loss_params(&f.g.nodes[4])->grad_target, 1);   /* the old default */
    assert_int_equal(node_loss_params(&f.g.nodes[5])->neg_draw, CLAPP_LOSS_NEG_PER_STEP); /* explicit */
    assert_int_equal(clapp_loss_last_draws(node_loss_flat(&f.g.nodes[2]), &d), 0);
    assert_false(d.per_step);
    /* saved again: still version 1, so the next resume behaves the same */
    assert_int_equal(clapp_ckpt_save(&f.g, path, &opt, f.err, sizeof f.err), 0);
    gfix_close(&f);
    v = clapp_ckpt_read_meta(path, "loss_version", f.err, sizeof f.err);
    assert_string_equal(v, "1");
    free(v);

    /* a version from the future is refused, naming it */
    rename_meta_key(path, "\"loss_version\":\"1\"", "\"loss_version\":\"9\"");
    assert_int_equal(gfix_open(&f, text), 0);
    assert_true(clapp_ckpt_load(&f.g, path, &opt, f.err, sizeof f.err) < 0);
    print_message("refused: %s\n", f.err);
    assert_non_null(strstr(f.err, "loss_version '9'"));
    gfix_close(&f);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_step_draws),
        cmocka_unit_test(test_gradients_match_reference),
        cmocka_unit_test(test_exclude_self),
        cmocka_unit_test(test_grad_target_defaults),
        cmocka_unit_test(test_detach_with_target_refused),
        cmocka_unit_test(test_old_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
