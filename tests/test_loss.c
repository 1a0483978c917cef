/* The contrastive loss element (core/learning/loss.c).
 *
 * 1. finite differences of the loss value against the engine's gradients
 *    (z, c, W, W_retro) for every mode, separate and shared streams;
 * 2. the explicit local update of docs/ALGORITHMS.md §2.1 (Eq. 6/7/8 form), written as
 *    loops over pairs in double precision from the replayed draws, for a
 *    one-layer module z = relu(V x + b), against the engine's gradient
 *    chained through the layer in the test;
 * 3. positive-window subsampling; 4. determinism and empty lanes;
 * 5. a small learning run; a [B, C, T, H, W] block equals its [B, C*H*W, T]
 * form; 6. refusals.
 * CLAPP_LOSS_BENCH=1 also times one call at B=8, T=128, D=512, K=12, N=10.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "learning/loss.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t trng_state = 88172645463325252ull;
static double trand(void) /* uniform [0, 1) */
{
    trng_state ^= trng_state << 13;
    trng_state ^= trng_state >> 7;
    trng_state ^= trng_state << 17;
    return (double)(trng_state >> 11) * 0x1.0p-53;
}
static double tnormal(void)
{
    double u1 = trand() + 1e-12, u2 = trand();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct tblock {
    clapp_block blk;
    clapp_lane  lane[8];
} tblock;

static void tb_init(tblock *tb, int32_t B, int64_t D, int64_t T, const int32_t *lens)
{
    int64_t sh[3] = {B, D, T};
    memset(tb, 0, sizeof *tb);
    assert_int_equal(clapp_tensor_alloc_shape(&tb->blk.x, 3, sh), 0);
    tb->blk.lanes = B;
    tb->blk.lane = tb->lane;
    for (int32_t b = 0; b < B; b++) {
        tb->lane[b].len = lens[b];
        tb->lane[b].seq_id = lens[b] ? b : -1;
    }
}

/* Random values at valid steps, zeros past len. */
static void tb_fill(tblock *tb, double scale)
{
    int64_t D = tb->blk.x.shape[1], T = tb->blk.x.shape[2];
    clapp_tensor_zero(&tb->blk.x);
    for (int32_t b = 0; b < tb->blk.lanes; b++)
        for (int64_t j = 0; j < D; j++)
            for (int64_t t = 0; t < tb->lane[b].len; t++)
                tb->blk.x.data[(b * D + j) * T + t] = (float)(scale * tnormal());
}

static float *fdup(const float *x, int64_t n)
{
    float *y = malloc(sizeof(float) * (size_t)n);
    memcpy(y, x, sizeof(float) * (size_t)n);
    return y;
}

/* Find a named tensor of the loss. */
static const clapp_named_tensor *loss_tensor(clapp_loss *L, const char *name)
{
    const clapp_named_tensor *nt;
    int32_t n;
    assert_int_equal(clapp_loss_tensors(L, &nt, &n), 0);
    for (int32_t i = 0; i < n; i++)
        if (!strcmp(nt[i].name, name))
            return &nt[i];
    return NULL;
}

/* One evaluation with a fresh loss of the given seed and W values (so the
 * draws are the same for every call with the same lens). */
typedef struct evalr {
    clapp_loss_stats st;
    int              rc;
} evalr;

static evalr eval_loss(const clapp_loss_params *p, const float *W, const float *Wr, tblock *z,
                       tblock *c, clapp_tensor *gz, clapp_tensor *gc, float *Wg, float *Wrg)
{
    clapp_loss *L = NULL;
    evalr r;
    int64_t dz = z->blk.x.shape[1], dc = c->blk.x.shape[1], K = p->steps;
    memset(&r, 0, sizeof r);
    assert_int_equal(clapp_loss_create(&L, p, dz, dc, z->blk.lanes, z->blk.x.shape[2], NULL, "t"), 0);
    if (W)
        memcpy(loss_tensor(L, "W")->value->data, W, sizeof(float) * (size_t)(K * dz * dc));
    if (Wr)
        memcpy(loss_tensor(L, "W_retro")->value->data, Wr, sizeof(float) * (size_t)(K * dz * dc));
    r.rc = clapp_loss_compute(L, &z->blk, z == c ? &z->blk : &c->blk, gz, gc, &r.st);
    if (Wg)
        memcpy(Wg, loss_tensor(L, "W")->grad->data, sizeof(float) * (size_t)(K * dz * dc));
    if (Wrg)
        memcpy(Wrg, loss_tensor(L, "W_retro")->grad->data, sizeof(float) * (size_t)(K * dz * dc));
    clapp_loss_destroy(L);
    return r;
}

/* ---- 1. finite differences ------------------------------------------------------ */

typedef struct fd_case {
    const char     *label;
    clapp_loss_mode mode;
    int             separate, retro, detach, window;
    int64_t         dz, dc;
} fd_case;

/* Number of active hinge terms, to detect a kink crossed by a perturbation. */
static int same_gates(const clapp_loss_stats *a, const clapp_loss_stats *b)
{
    return a->pos_active == b->pos_active && a->neg_active == b->neg_active;
}

/* Central difference of (which = 0: loss - loss_retro, 1: loss_retro) w.r.t.
 * *x against the analytic value an; returns 1 when the coordinate was checked. */
typedef struct fd_acc {
    double max_err, gmax;
    int    checked, skipped, nonzero;
} fd_acc;

static void fd_check_array(const fd_case *fc, const clapp_loss_params *p, float *W, float *Wr,
                           tblock *z, tblock *c, float *x, int64_t n, const float *an, int which,
                           const clapp_loss_stats *base, fd_acc *acc)
{
    const double h = 2e-3;
    (void)fc;
    for (int64_t i = 0; i < n; i++) {
        float keep = x[i];
        evalr ep, em;
        double fp, fm, fd;
        x[i] = keep + (float)h;
        ep = eval_loss(p, W, Wr, z, c, NULL, NULL, NULL, NULL);
        x[i] = keep - (float)h;
        em = eval_loss(p, W, Wr, z, c, NULL, NULL, NULL, NULL);
        x[i] = keep;
        if (!same_gates(&ep.st, base) || !same_gates(&em.st, base)) {
            acc->skipped++;
            continue;
        }
        fp = which ? ep.st.loss_retro : ep.st.loss - ep.st.loss_retro;
        fm = which ? em.st.loss_retro : em.st.loss - em.st.loss_retro;
        /* the actual step after float rounding */
        fd = (fp - fm) / (double)(((float)(keep + (float)h)) - ((float)(keep - (float)h)));
        {
            double e = fabs(fd - (double)an[i]);
            if (e > acc->max_err)
                acc->max_err = e;
        }
        if (fabs(an[i]) > acc->gmax)
            acc->gmax = fabs(an[i]);
        acc->nonzero += an[i] != 0.0f;
        acc->checked++;
    }
}

static void run_fd_case(const fd_case *fc)
{
    clapp_loss_params p;
    tblock z, cs, *c;
    int32_t lens[2] = {9, 7};
    const int32_t B = 2, T = 9;
    clapp_tensor gz = {0}, gc = {0};
    float *W, *Wr = NULL, *Wg, *Wrg = NULL;
    evalr base;
    int64_t nW;
    fd_acc az = {0}, ac = {0}, aw = {0}, awr = {0};
    clapp_loss *L0;

    clapp_loss_default_params(&p);
    p.mode = fc->mode;
    p.steps = 3;
    p.negatives = 3;
    p.window = fc->window;
    p.retro = fc->retro;
    p.detach_context = fc->detach;
    p.grad_target = 1;
    p.seed = 7;
    nW = p.steps * fc->dz * fc->dc;

    tb_init(&z, B, fc->dz, T, lens);
    tb_fill(&z, 0.7);
    c = &z;
    if (fc->separate) {
        tb_init(&cs, B, fc->dc, T, lens);
        tb_fill(&cs, 0.7);
        c = &cs;
    }
    /* W of the seed, scaled so that scores spread over both sides of the margins */
    assert_int_equal(clapp_loss_create(&L0, &p, fc->dz, fc->dc, B, T, NULL, "t"), 0);
    W = fdup(loss_tensor(L0, "W")->value->data, nW);
    if (fc->retro)
        Wr = fdup(loss_tensor(L0, "W_retro")->value->data, nW);
    clapp_loss_destroy(L0);
    for (int64_t i = 0; i < nW; i++) {
        W[i] *= 2.0f;
        if (Wr)
            Wr[i] *= 2.0f;
    }
    Wg = calloc((size_t)nW, sizeof(float));
    if (fc->retro)
        Wrg = calloc((size_t)nW, sizeof(float));
    gz.ndim = gc.ndim = 3;
    memcpy(gz.shape, z.blk.x.shape, sizeof gz.shape);
    memcpy(gc.shape, c->blk.x.shape, sizeof gc.shape);
    assert_int_equal(clapp_tensor_alloc(&gz), 0);
    assert_int_equal(clapp_tensor_alloc(&gc), 0);

    base = eval_loss(&p, W, Wr, &z, c, &gz, fc->separate ? &gc : &gz, Wg, Wrg);
    assert_int_equal(base.rc, 0);
    assert_true(base.st.pairs > 0);
    if (fc->mode != CLAPP_LOSS_INFONCE) /* some terms on each side of the margin */
        assert_true(base.st.pos_active > 0.0 && base.st.pos_active < 1.0 + 1e-12);

    if (!fc->separate) {
        /* one stream: the gradient holds z and c paths; with retro or detach
         * a path is blocked, so the FD of the shared tensor is not the
         * engine's gradient (those are covered by the separate cases and by
         * the explicit-update test) */
        if (!fc->retro && !fc->detach)
            fd_check_array(fc, &p, W, Wr, &z, c, z.blk.x.data, clapp_tensor_numel(&z.blk.x), gz.data,
                           0, &base.st, &az);
    } else {
        fd_check_array(fc, &p, W, Wr, &z, c, z.blk.x.data, clapp_tensor_numel(&z.blk.x), gz.data, 0,
                       &base.st, &az);
        if (fc->detach) {
            for (int64_t i = 0; i < clapp_tensor_numel(&gc); i++)
                assert_true(gc.data[i] == 0.0f);
        } else {
            fd_check_array(fc, &p, W, Wr, &z, c, c->blk.x.data, clapp_tensor_numel(&c->blk.x),
                           gc.data, fc->retro ? 1 : 0, &base.st, &ac);
        }
    }
    fd_check_array(fc, &p, W, Wr, &z, c, W, nW, Wg, 0, &base.st, &aw);
    if (fc->retro)
        fd_check_array(fc, &p, W, Wr, &z, c, Wr, nW, Wrg, 1, &base.st, &awr);

    print_message("  %-22s loss %.5f pairs %lld  z: %d/%d max err %.2e (|g|max %.3e)  c: %d/%d %.2e  "
                  "W: %d/%d %.2e  Wr: %d %.2e\n",
                  fc->label, base.st.loss, (long long)base.st.pairs, az.checked,
                  az.checked + az.skipped, az.max_err, az.gmax, ac.checked, ac.checked + ac.skipped,
                  ac.max_err, aw.checked, aw.checked + aw.skipped, aw.max_err, awr.checked,
                  awr.max_err);
    {
        fd_acc *all[4] = {&az, &ac, &aw, &awr};
        for (int i = 0; i < 4; i++) {
            if (all[i]->checked == 0)
                continue;
            /* most coordinates are away from kinks, and the gradient is not trivially zero */
            assert_true(all[i]->checked >= all[i]->skipped);
            assert_true(all[i]->nonzero > 0);
            assert_true(all[i]->max_err <= 1e-3 * all[i]->gmax + 2e-6);
        }
    }
    assert_true(aw.checked > 0);
    if (fc->separate && !fc->detach)
        assert_true(ac.checked > 0);

    free(W);
    free(Wr);
    free(Wg);
    free(Wrg);
    clapp_tensor_free(&gz);
    clapp_tensor_free(&gc);
    clapp_tensor_free(&z.blk.x);
    if (fc->separate)
        clapp_tensor_free(&cs.blk.x);
}

static void test_loss_finite_differences(void **state)
{
    (void)state;
    static const fd_case cases[] = {
        {"clapp-s shared", CLAPP_LOSS_CLAPP_S, 0, 0, 0, 6, 4, 4},
        {"clapp-s separate", CLAPP_LOSS_CLAPP_S, 1, 0, 0, 0, 5, 3},
        {"infonce shared", CLAPP_LOSS_INFONCE, 0, 0, 0, 6, 4, 4},
        {"infonce separate", CLAPP_LOSS_INFONCE, 1, 0, 0, 0, 5, 3},
        {"clapp shared", CLAPP_LOSS_CLAPP, 0, 0, 0, 6, 4, 4},
        {"clapp separate", CLAPP_LOSS_CLAPP, 1, 0, 0, 0, 5, 3},
        {"hinge-cpc separate", CLAPP_LOSS_HINGE_CPC, 1, 0, 0, 6, 5, 3},
        {"clapp-s retro sep", CLAPP_LOSS_CLAPP_S, 1, 1, 0, 6, 5, 3},
        {"clapp retro sep", CLAPP_LOSS_CLAPP, 1, 1, 0, 0, 5, 3},
        {"clapp-s detach sep", CLAPP_LOSS_CLAPP_S, 1, 0, 1, 6, 5, 3},
        {"clapp-s detach shared", CLAPP_LOSS_CLAPP_S, 0, 0, 1, 0, 4, 4},
    };
    trng_state = 12345;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_fd_case(&cases[i]);
}

/* ---- 2. explicit local update (Eq. 6/7/8 form) ---------------------------------- */

typedef struct term {
    int    b, t, k;      /* context lane, time, step (1..K) */
    int    qb, qt;       /* target/negative lane and time */
    double g;            /* dL/du (= -y H times the docs/ALGORITHMS.md §1.4 mean weight) */
} term;

/* Independent reference of one half: enumerates the pairs from the window and
 * lens, reads only the random choices from the draws, and computes scores in
 * double. u = z[qb,qt]^T M_k c[b,t] with M_k = W_k (retro_half = 0) or
 * W_retro_k^T (retro_half = 1). */
static double ref_half(const clapp_loss_params *p, const clapp_loss_draws *d, int h, const int32_t *lens,
                       int32_t B, int64_t T, const double *zd, int64_t dz, const double *cd,
                       int64_t dc, const float *M, int retro_half, term *terms, int *nterm)
{
    const int K = p->steps, N = d->negatives;
    int lo[8], hi[8], K_eff = 0;
    int64_t pool_off[9];
    double loss = 0.0;
    int64_t ctx_off[8], nctx = 0;
    *nterm = 0;

    pool_off[0] = 0;
    for (int b = 0; b < B; b++) {
        pool_off[b + 1] = pool_off[b] + lens[b];
        if (p->window > 0 && lens[b] > p->window) {
            lo[b] = d->w0;
            hi[b] = d->w0 + p->window;
        } else {
            lo[b] = 0;
            hi[b] = lens[b];
        }
        assert_int_equal(lo[b], d->lo[b]);
        assert_int_equal(hi[b], d->hi[b]);
        assert_int_equal(pool_off[b + 1], d->pool_off[b + 1]);
        ctx_off[b] = nctx;
        nctx += hi[b] - lo[b] >= 2 ? hi[b] - lo[b] - 1 : 0;
        assert_int_equal(ctx_off[b], d->ctx_off[b]);
    }
    assert_int_equal(nctx, d->contexts);
    for (int k = 1; k <= K; k++) {
        int P = 0;
        for (int b = 0; b < B; b++)
            P += hi[b] - lo[b] - k > 0 ? hi[b] - lo[b] - k : 0;
        K_eff += P > 0;
    }
#define ZV(b_, t_, j_) zd[((int64_t)(b_) * dz + (j_)) * T + (t_)]
#define CV(b_, t_, i_) cd[((int64_t)(b_) * dc + (i_)) * T + (t_)]
    for (int k = 1; k <= K; k++) {
        const float *Mk = M + (int64_t)(k - 1) * dz * dc;
        int P = 0, npos = 0, nneg = 0;
        double wpos, wneg;
        for (int b = 0; b < B; b++)
            for (int t = lo[b]; t < hi[b] - k; t++) {
                P++;
                if (p->mode == CLAPP_LOSS_CLAPP) {
                    if (d->lane_pos[h][b])
                        npos++;
                    else
                        nneg += t + k < lens[d->lane_r[h][(k - 1) * B + b]];
                }
            }
        if (P == 0)
            continue;
        if (p->mode == CLAPP_LOSS_CLAPP) {
            wpos = npos ? 1.0 / (K_eff * (double)npos) : 0;
            wneg = nneg ? 1.0 / (K_eff * (double)nneg) : 0;
        } else {
            wpos = 1.0 / (K_eff * (double)P);
            wneg = wpos / N;
        }
        int64_t pair = d->pair_off[k - 1];   /* per-step negatives: pairs in (k, b, t) order */
        for (int b = 0; b < B; b++)
            for (int t = lo[b]; t < hi[b] - k; t++, pair++) {
                /* candidates: [0] positive, then negatives */
                int qb[64], qt[64], nq = 0, first_neg = 1;
                double u[64];
                if (p->mode == CLAPP_LOSS_CLAPP) {
                    if (d->lane_pos[h][b]) {
                        qb[0] = b;
                        qt[0] = t + k;
                        nq = 1;
                    } else {
                        int r = d->lane_r[h][(k - 1) * B + b];
                        first_neg = 0;
                        if (t + k < lens[r]) {
                            qb[0] = r;
                            qt[0] = t + k;
                            nq = 1;
                        }
                    }
                } else {
                    qb[0] = b;
                    qt[0] = t + k;
                    nq = 1;
                    for (int n = 0; n < N; n++) {
                        int64_t q = d->neg[h][(d->per_step ? pair : ctx_off[b] + t - lo[b]) * N + n];
                        int qbb = 0;
                        while (q >= pool_off[qbb + 1])
                            qbb++;
                        qb[nq] = qbb;
                        qt[nq] = (int)(q - pool_off[qbb]);
                        nq++;
                    }
                }
                for (int m = 0; m < nq; m++) {
                    double s = 0;
                    for (int64_t j = 0; j < dz; j++)
                        for (int64_t i = 0; i < dc; i++) {
                            double mji = retro_half ? Mk[i * dz + j] : Mk[j * dc + i];
                            s += ZV(qb[m], qt[m], j) * mji * CV(b, t, i);
                        }
                    u[m] = s;
                }
                for (int m = 0; m < nq; m++) {
                    double g = 0;
                    int is_pos = (m == 0 && first_neg);
                    if (p->mode == CLAPP_LOSS_INFONCE) {
                        double mx = u[0], se = 0;
                        for (int q = 1; q < nq; q++)
                            mx = u[q] > mx ? u[q] : mx;
                        for (int q = 0; q < nq; q++)
                            se += exp(u[q] - mx);
                        if (m == 0)
                            loss += (mx + log(se) - u[0]) * wpos;
                        g = (exp(u[m] - mx) / se - (m == 0)) * wpos;
                    } else if (is_pos) {
                        if (u[m] < 1) {
                            loss += (1 - u[m]) * wpos;
                            g = -wpos;
                        }
                    } else if (u[m] > -1) {
                        loss += (1 + u[m]) * wneg;
                        g = wneg;
                    }
                    terms[*nterm] = (term){b, t, k, qb[m], qt[m], g};
                    (*nterm)++;
                }
            }
    }
#undef ZV
#undef CV
    return loss;
}

typedef struct local_case {
    const char     *label;
    clapp_loss_mode mode;
    int             retro, detach;
} local_case;

static double rel_err(const double *ref, const float *got, int64_t n)
{
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs(ref[i]));
        e = fmax(e, fabs(ref[i] - (double)got[i]));
    }
    return m > 0 ? e / m : e;
}

static void run_local_case(const local_case *lc)
{
    enum { B = 3, DIN = 3, D = 5, T = 11, K = 3 };
    const int32_t lens[B] = {11, 8, 10};
    clapp_loss_params p;
    clapp_loss *L;
    tblock z;
    double x[B][DIN][T], a[B][D][T], V[D][DIN], bias[D];
    double *zd = calloc(B * D * T, sizeof(double));
    double dV_ref[D][DIN] = {{0}}, db_ref[D] = {0}, dV_eng[D][DIN] = {{0}}, db_eng[D] = {0};
    double *dW_ref = calloc(K * D * D, sizeof(double)), *dWr_ref = calloc(K * D * D, sizeof(double));
    clapp_tensor gz = {0};
    clapp_loss_stats st;
    clapp_loss_draws dr;
    term *terms = calloc(20000, sizeof(term));
    int nterm;
    double loss_ref = 0, loss_ref_retro = 0;
    const float *W, *Wr = NULL;

    clapp_loss_default_params(&p);
    p.mode = lc->mode;
    p.steps = K;
    p.negatives = 4;
    p.window = 8;
    p.retro = lc->retro;
    p.detach_context = lc->detach;
    p.seed = 99;

    /* the layer, computed here: a = V x + b, z = relu(a) */
    for (int j = 0; j < D; j++) {
        bias[j] = 0.3 * tnormal();
        for (int i = 0; i < DIN; i++)
            V[j][i] = tnormal();
    }
    tb_init(&z, B, D, T, lens);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lens[b]; t++) {
            for (int i = 0; i < DIN; i++)
                x[b][i][t] = tnormal();
            for (int j = 0; j < D; j++) {
                double s = bias[j];
                for (int i = 0; i < DIN; i++)
                    s += V[j][i] * x[b][i][t];
                a[b][j][t] = s;
                z.blk.x.data[(b * D + j) * T + t] = (float)(s > 0 ? s : 0);
            }
        }
    for (int64_t i = 0; i < B * D * T; i++)
        zd[i] = z.blk.x.data[i]; /* the reference sees the same float inputs */

    assert_int_equal(clapp_loss_create(&L, &p, D, D, B, T, NULL, "t"), 0);
    /* larger W so both margins are crossed */
    {
        const clapp_named_tensor *tw = loss_tensor(L, "W"), *tr = loss_tensor(L, "W_retro");
        for (int64_t i = 0; i < K * D * D; i++) {
            tw->value->data[i] *= 3.0f;
            if (tr)
                tr->value->data[i] *= 3.0f;
        }
        W = tw->value->data;
        if (tr)
            Wr = tr->value->data;
    }
    gz.ndim = 3;
    memcpy(gz.shape, z.blk.x.shape, sizeof gz.shape);
    assert_int_equal(clapp_tensor_alloc(&gz), 0);
    assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, &gz, &gz, &st), 0);
    assert_int_equal(clapp_loss_last_draws(L, &dr), 0);

    /* pred half: z path (Eq. 6 form), c path with W^T (Eq. 7 form) unless retro/detach, ΔW (Eq. 8) */
    loss_ref = ref_half(&p, &dr, 0, lens, B, T, zd, D, zd, D, W, 0, terms, &nterm);
    for (int m = 0; m < nterm; m++) {
        const term *e = &terms[m];
        const float *Wk = W + (int64_t)(e->k - 1) * D * D;
        if (e->g == 0)
            continue;
        for (int j = 0; j < D; j++) {
            double wc = 0, wtz = 0;
            for (int i = 0; i < D; i++) {
                wc += Wk[j * D + i] * zd[(e->b * D + i) * T + e->t];      /* (W c^t)_j */
                wtz += Wk[i * D + j] * zd[(e->qb * D + i) * T + e->qt];  /* (W^T z^tau)_j */
            }
            if (a[e->qb][j][e->qt] > 0) { /* z path at the target time */
                for (int i = 0; i < DIN; i++)
                    dV_ref[j][i] += e->g * wc * x[e->qb][i][e->qt];
                db_ref[j] += e->g * wc;
            }
            if (!lc->retro && !lc->detach && a[e->b][j][e->t] > 0) { /* c path at the context time */
                for (int i = 0; i < DIN; i++)
                    dV_ref[j][i] += e->g * wtz * x[e->b][i][e->t];
                db_ref[j] += e->g * wtz;
            }
            for (int i = 0; i < D; i++)
                dW_ref[(e->k - 1) * D * D + j * D + i] +=
                    e->g * zd[(e->qb * D + j) * T + e->qt] * zd[(e->b * D + i) * T + e->t];
        }
    }
    /* retro half: u^c = c^T W_retro z with its own draws; c path uses W_retro z */
    if (lc->retro) {
        loss_ref_retro = ref_half(&p, &dr, 1, lens, B, T, zd, D, zd, D, Wr, 1, terms, &nterm);
        for (int m = 0; m < nterm; m++) {
            const term *e = &terms[m];
            const float *Rk = Wr + (int64_t)(e->k - 1) * D * D; /* [Dc, Dz] */
            if (e->g == 0)
                continue;
            for (int j = 0; j < D; j++) {
                double rz = 0;
                for (int i = 0; i < D; i++)
                    rz += Rk[j * D + i] * zd[(e->qb * D + i) * T + e->qt]; /* (W_retro z^tau)_j */
                if (!lc->detach && a[e->b][j][e->t] > 0) {
                    for (int i = 0; i < DIN; i++)
                        dV_ref[j][i] += e->g * rz * x[e->b][i][e->t];
                    db_ref[j] += e->g * rz;
                }
                for (int i = 0; i < D; i++)
                    dWr_ref[(e->k - 1) * D * D + j * D + i] +=
                        e->g * zd[(e->b * D + j) * T + e->t] * zd[(e->qb * D + i) * T + e->qt];
            }
        }
    }
    /* engine: chain grad_z through relu and V */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int j = 0; j < D; j++) {
                double g = gz.data[(b * D + j) * T + t];
                if (t >= lens[b]) {
                    assert_true(g == 0.0); /* nothing past len */
                    continue;
                }
                if (a[b][j][t] <= 0)
                    continue;
                for (int i = 0; i < DIN; i++)
                    dV_eng[j][i] += g * x[b][i][t];
                db_eng[j] += g;
            }
    {
        float dVf[D * DIN], dbf[D];
        double e_v, e_b, e_w, e_wr = 0, e_l;
        double vmax = 0;
        for (int j = 0; j < D; j++) {
            dbf[j] = (float)db_eng[j];
            for (int i = 0; i < DIN; i++) {
                dVf[j * DIN + i] = (float)dV_eng[j][i];
                vmax = fmax(vmax, fabs(dV_ref[j][i]));
            }
        }
        e_v = rel_err(&dV_ref[0][0], dVf, D * DIN);
        e_b = rel_err(db_ref, dbf, D);
        e_w = rel_err(dW_ref, loss_tensor(L, "W")->grad->data, K * D * D);
        if (lc->retro)
            e_wr = rel_err(dWr_ref, loss_tensor(L, "W_retro")->grad->data, K * D * D);
        e_l = fabs(st.loss - (loss_ref + loss_ref_retro)) / fmax(1e-12, fabs(loss_ref + loss_ref_retro));
        print_message("  %-16s loss %.6f (ref %.6f) |dV|max %.4f  rel err dV %.1e db %.1e dW %.1e "
                      "dWr %.1e pos_act %.2f neg_act %.2f\n",
                      lc->label, st.loss, loss_ref + loss_ref_retro, vmax, e_v, e_b, e_w, e_wr,
                      st.pos_active, st.neg_active);
        assert_true(vmax > 1e-3);
        assert_true(e_v < 1e-5);
        assert_true(e_b < 1e-5);
        assert_true(e_w < 1e-5);
        assert_true(e_wr < 1e-5);
        assert_true(e_l < 1e-5);
        if (lc->retro)
            assert_true(fabs(st.loss_retro - loss_ref_retro) < 1e-5 * fmax(1.0, loss_ref_retro));
    }
    clapp_loss_destroy(L);
    clapp_tensor_free(&gz);
    clapp_tensor_free(&z.blk.x);
    free(zd);
    free(dW_ref);
    free(dWr_ref);
    free(terms);
}

static void test_loss_local_update(void **state)
{
    (void)state;
    static const local_case cases[] = {
        {"clapp-s", CLAPP_LOSS_CLAPP_S, 0, 0},  {"clapp", CLAPP_LOSS_CLAPP, 0, 0},
        {"hinge-cpc", CLAPP_LOSS_HINGE_CPC, 0, 0}, {"infonce", CLAPP_LOSS_INFONCE, 0, 0},
        {"clapp-s retro", CLAPP_LOSS_CLAPP_S, 1, 0}, {"clapp retro", CLAPP_LOSS_CLAPP, 1, 0},
        {"clapp-s detach", CLAPP_LOSS_CLAPP_S, 0, 1}, {"clapp detach", CLAPP_LOSS_CLAPP, 0, 1},
    };
    trng_state = 777;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_local_case(&cases[i]);
}

/* ---- 3. window subsampling ------------------------------------------------------ */

static void test_loss_window(void **state)
{
    enum { B = 2, D = 4, T = 40, K = 3, N = 2, WIN = 8, CALLS = 30 };
    const int32_t lens_a[B] = {40, 30}, lens_b[B] = {40, 5};
    clapp_loss_params p;
    (void)state;
    trng_state = 4242;
    clapp_loss_default_params(&p);
    p.steps = K;
    p.negatives = N;
    p.window = WIN;
    p.seed = 5;
    for (int variant = 0; variant < 2; variant++) {
        const int32_t *lens = variant ? lens_b : lens_a;
        clapp_loss *L;
        tblock z;
        clapp_tensor gz = {0};
        int w0_seen[T] = {0}, distinct = 0, outside_neg_hits = 0;
        int64_t expect_pairs = 0;
        int maxstart = (variant ? 40 : 30) - WIN;
        tb_init(&z, B, D, T, lens);
        tb_fill(&z, 1.0);
        gz.ndim = 3;
        memcpy(gz.shape, z.blk.x.shape, sizeof gz.shape);
        assert_int_equal(clapp_tensor_alloc(&gz), 0);
        assert_int_equal(clapp_loss_create(&L, &p, D, D, B, T, NULL, "t"), 0);
        for (int k = 1; k <= K; k++)
            for (int b = 0; b < B; b++) {
                int n = lens[b] > WIN ? WIN : lens[b];
                expect_pairs += n - k > 0 ? n - k : 0;
            }
        for (int call = 0; call < CALLS; call++) {
            clapp_loss_stats st;
            clapp_loss_draws dr;
            uint8_t used[B][T];
            memset(used, 0, sizeof used);
            clapp_tensor_zero(&gz);
            assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, &gz, NULL, &st), 0);
            assert_int_equal(clapp_loss_last_draws(L, &dr), 0);
            assert_int_equal(st.pairs, expect_pairs);
            assert_true(dr.w0 >= 0 && dr.w0 <= maxstart);
            distinct += !w0_seen[dr.w0];
            w0_seen[dr.w0] = 1;
            for (int b = 0; b < B; b++) {
                int lo = lens[b] > WIN ? dr.w0 : 0, hi = lens[b] > WIN ? dr.w0 + WIN : lens[b];
                assert_int_equal(dr.lo[b], lo);
                assert_int_equal(dr.hi[b], hi);
                for (int t = lo; t < hi; t++)
                    used[b][t] = 1;
            }
            /* negatives come from every valid step of every lane */
            for (int64_t i = 0; i < dr.n_neg; i++) {
                int64_t q = dr.neg[0][i];
                int b = q >= dr.pool_off[1];
                int t = (int)(q - dr.pool_off[b]);
                assert_true(q >= 0 && q < dr.pool_off[B]);
                assert_true(t < lens[b]);
                if (!used[b][t])
                    outside_neg_hits++;
                used[b][t] = 2 | used[b][t];
            }
            /* gradient only where a step was a context, target or negative */
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    int nz = 0;
                    for (int j = 0; j < D; j++)
                        nz |= gz.data[(b * D + j) * T + t] != 0.0f;
                    if (!used[b][t])
                        assert_false(nz);
                }
        }
        print_message("  lens {%d,%d}: pairs %lld, %d distinct w0 in [0,%d], %d negatives outside "
                      "the window\n",
                      lens[0], lens[1], (long long)expect_pairs, distinct, maxstart,
                      outside_neg_hits);
        assert_true(distinct >= 5);
        assert_true(outside_neg_hits > 100);
        clapp_loss_destroy(L);
        clapp_tensor_free(&gz);
        clapp_tensor_free(&z.blk.x);
    }
}

/* ---- 4. determinism, empty lanes --------------------------------------------------- */

static void test_loss_determinism(void **state)
{
    enum { D = 6, T = 16 };
    const int32_t lens3[3] = {16, 0, 12}, lens2[2] = {16, 12}, lens0[3] = {0, 0, 0};
    clapp_loss_params p;
    tblock z3, z2, z0;
    clapp_tensor g[4] = {{0}};
    clapp_loss *L[4];
    clapp_loss_stats st[4];
    (void)state;

    trng_state = 31337;
    clapp_loss_default_params(&p);
    p.steps = 4;
    p.negatives = 3;
    p.window = 10;
    p.seed = 11;
    tb_init(&z3, 3, D, T, lens3);
    tb_fill(&z3, 1.0);
    tb_init(&z2, 2, D, T, lens2);
    /* z2 = lanes 0 and 2 of z3 */
    memcpy(z2.blk.x.data, z3.blk.x.data, sizeof(float) * D * T);
    memcpy(z2.blk.x.data + D * T, z3.blk.x.data + 2 * D * T, sizeof(float) * D * T);
    for (int i = 0; i < 4; i++) {
        g[i].ndim = 3;
        memcpy(g[i].shape, (i == 2 ? &z2 : &z3)->blk.x.shape, sizeof g[i].shape);
        assert_int_equal(clapp_tensor_alloc(&g[i]), 0);
        assert_int_equal(clapp_loss_create(&L[i], &p, D, D, 3, T, NULL, "t"), 0);
    }
    /* same seed, same input, three calls each: bit-identical */
    for (int call = 0; call < 3; call++) {
        for (int i = 0; i < 2; i++) {
            clapp_tensor_zero(&g[i]);
            assert_int_equal(clapp_loss_compute(L[i], &z3.blk, &z3.blk, &g[i], &g[i], &st[i]), 0);
        }
        clapp_tensor_zero(&g[2]);
        assert_int_equal(clapp_loss_compute(L[2], &z2.blk, &z2.blk, &g[2], &g[2], &st[2]), 0);
        assert_true(st[0].pairs > 0);
        assert_memory_equal(&st[0].loss, &st[1].loss, sizeof(double));
        assert_memory_equal(g[0].data, g[1].data, sizeof(float) * 3 * D * T);
        /* the empty lane gets nothing and changes nothing: same as the 2-lane block */
        for (int64_t i = D * T; i < 2 * D * T; i++)
            assert_true(g[0].data[i] == 0.0f);
        assert_memory_equal(&st[0].loss, &st[2].loss, sizeof(double));
        assert_int_equal(st[0].pairs, st[2].pairs);
        assert_memory_equal(g[0].data, g[2].data, sizeof(float) * D * T);
        assert_memory_equal(g[0].data + 2 * D * T, g[2].data + D * T, sizeof(float) * D * T);
    }
    assert_memory_equal(loss_tensor(L[0], "W")->grad->data, loss_tensor(L[1], "W")->grad->data,
                        sizeof(float) * 4 * D * D);
    assert_memory_equal(loss_tensor(L[0], "W")->grad->data, loss_tensor(L[2], "W")->grad->data,
                        sizeof(float) * 4 * D * D);
    /* another seed draws differently */
    {
        clapp_loss *L5;
        clapp_loss_stats s5;
        clapp_loss_params p5 = p;
        p5.seed = 12;
        assert_int_equal(clapp_loss_create(&L5, &p5, D, D, 3, T, NULL, "t"), 0);
        memcpy(loss_tensor(L5, "W")->value->data, loss_tensor(L[0], "W")->value->data,
               sizeof(float) * 4 * D * D);
        assert_int_equal(clapp_loss_compute(L5, &z3.blk, &z3.blk, NULL, NULL, &s5), 0);
        assert_true(s5.loss != st[0].loss);
        clapp_loss_destroy(L5);
    }
    /* all lanes empty: no pairs, zero loss, nothing touched */
    tb_init(&z0, 3, D, T, lens0);
    clapp_tensor_zero(&g[3]);
    assert_int_equal(clapp_loss_compute(L[3], &z0.blk, &z0.blk, &g[3], &g[3], &st[3]), 0);
    assert_int_equal(st[3].pairs, 0);
    assert_true(st[3].loss == 0.0);
    for (int64_t i = 0; i < 3 * D * T; i++)
        assert_true(g[3].data[i] == 0.0f);
    for (int64_t i = 0; i < 4 * D * D; i++)
        assert_true(loss_tensor(L[3], "W")->grad->data[i] == 0.0f);
    print_message("  loss %.6f bit-identical over 3 calls and with the empty lane removed\n",
                  st[0].loss);

    for (int i = 0; i < 4; i++) {
        clapp_loss_destroy(L[i]);
        clapp_tensor_free(&g[i]);
    }
    clapp_tensor_free(&z3.blk.x);
    clapp_tensor_free(&z2.blk.x);
    clapp_tensor_free(&z0.blk.x);
}

/* ---- 5. learning ------------------------------------------------------------------ */

static void test_loss_learns(void **state)
{
    enum { B = 4, D = 8, T = 32, K = 3, STEPS = 300 };
    const int32_t lens[B] = {32, 32, 32, 32};
    const double ang = 0.4, lr = 0.5;
    clapp_loss_params p;
    clapp_loss *L;
    tblock z;
    const clapp_named_tensor *tw;
    double first = 0, last = 0, margin[2] = {0, 0};
    (void)state;

    trng_state = 2024;
    clapp_loss_default_params(&p);
    p.steps = K;
    p.negatives = 4;
    p.window = 0;
    p.seed = 3;
    tb_init(&z, B, D, T, lens);
    assert_int_equal(clapp_loss_create(&L, &p, D, D, B, T, NULL, "t"), 0);
    tw = loss_tensor(L, "W");
    for (int it = 0; it < STEPS; it++) {
        clapp_loss_stats st;
        /* z_t: four planes rotating by ang per step from a random start */
        for (int b = 0; b < B; b++)
            for (int pl = 0; pl < D / 2; pl++) {
                double r = 1.0, ph = 6.283185307179586 * trand();
                for (int t = 0; t < T; t++) {
                    z.blk.x.data[(b * D + 2 * pl) * T + t] = (float)(r * cos(ph + ang * (pl + 1) * t));
                    z.blk.x.data[(b * D + 2 * pl + 1) * T + t] = (float)(r * sin(ph + ang * (pl + 1) * t));
                }
            }
        clapp_tensor_zero(tw->grad);
        assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, &st), 0);
        for (int64_t i = 0; i < K * D * D; i++)
            tw->value->data[i] -= (float)(lr * tw->grad->data[i]);
        if (it < 10)
            first += st.loss / 10;
        if (it >= STEPS - 10)
            last += st.loss / 10;
        /* independent check on this (not yet trained-on) batch: mean positive
         * score minus mean score against the same lane shifted by T/2 */
        if (it == 0 || it == STEPS - 1) {
            double sp = 0, sn = 0;
            int np = 0;
            for (int k = 1; k <= K; k++)
                for (int b = 0; b < B; b++)
                    for (int t = 0; t + k < T; t++) {
                        int tn = (t + k + T / 2) % T, bn = (b + 1) % B;
                        for (int j = 0; j < D; j++)
                            for (int i = 0; i < D; i++) {
                                double w = tw->value->data[((k - 1) * D + j) * D + i];
                                double ci = z.blk.x.data[(b * D + i) * T + t];
                                sp += z.blk.x.data[(b * D + j) * T + t + k] * w * ci;
                                sn += z.blk.x.data[(bn * D + j) * T + tn] * w * ci;
                            }
                        np++;
                    }
            margin[it != 0] = (sp - sn) / np;
        }
    }
    print_message("  hinge loss (mean of 10 calls) %.4f -> %.4f after %d SGD steps on W; "
                  "mean u_pos - u_neg %.3f -> %.3f\n",
                  first, last, STEPS, margin[0], margin[1]);
    /* the negative term cannot vanish (random phases give zero-mean negative
     * scores), so the floor is about 1; the positive term goes to ~0 */
    assert_true(last < 0.8 * first);
    assert_true(last < 1.1);
    assert_true(margin[1] > 0.8 && margin[1] > margin[0] + 0.5);
    clapp_loss_destroy(L);
    clapp_tensor_free(&z.blk.x);
}

/* ---- video layout: [B, C, T, H, W] is the same as [B, C*H*W, T] --------------------- */

static void test_loss_video_layout(void **state)
{
    enum { B = 2, C = 2, H = 2, WD = 3, HW = H * WD, D = C * HW, T = 10 };
    const int32_t lens[B] = {10, 8};
    clapp_loss_params p;
    clapp_loss *L3, *L5;
    tblock z3, z5;
    clapp_tensor g3 = {0}, g5 = {0};
    clapp_loss_stats s3, s5;
    int64_t sh5[5] = {B, C, T, H, WD};
    (void)state;
    trng_state = 555;
    clapp_loss_default_params(&p);
    p.steps = 3;
    p.negatives = 3;
    p.window = 6;
    p.seed = 21;
    tb_init(&z3, B, D, T, lens);
    tb_fill(&z3, 1.0);
    z5 = z3;
    z5.blk.lane = z5.lane;
    assert_int_equal(clapp_tensor_alloc_shape(&z5.blk.x, 5, sh5), 0);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++)
                for (int s = 0; s < HW; s++)
                    z5.blk.x.data[((b * C + c) * T + t) * HW + s] = z3.blk.x.data[(b * D + c * HW + s) * T + t];
    g3.ndim = 3;
    memcpy(g3.shape, z3.blk.x.shape, sizeof g3.shape);
    assert_int_equal(clapp_tensor_alloc(&g3), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&g5, 5, sh5), 0);
    assert_int_equal(clapp_loss_create(&L3, &p, D, D, B, T, NULL, "t"), 0);
    assert_int_equal(clapp_loss_create(&L5, &p, D, D, B, T, NULL, "t"), 0);
    assert_int_equal(clapp_loss_compute(L3, &z3.blk, &z3.blk, &g3, &g3, &s3), 0);
    assert_int_equal(clapp_loss_compute(L5, &z5.blk, &z5.blk, &g5, &g5, &s5), 0);
    assert_true(s3.pairs > 0 && s3.loss > 0);
    assert_memory_equal(&s3.loss, &s5.loss, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++)
                for (int s = 0; s < HW; s++)
                    assert_true(g5.data[((b * C + c) * T + t) * HW + s] ==
                                g3.data[(b * D + c * HW + s) * T + t]);
    assert_memory_equal(loss_tensor(L3, "W")->grad->data, loss_tensor(L5, "W")->grad->data,
                        sizeof(float) * 3 * D * D);
    print_message("  [2, 2, 10, 2, 3] block: loss %.6f, gradients identical to the [2, 12, 10] form\n",
                  s5.loss);
    clapp_loss_destroy(L3);
    clapp_loss_destroy(L5);
    clapp_tensor_free(&g3);
    clapp_tensor_free(&g5);
    clapp_tensor_free(&z3.blk.x);
    clapp_tensor_free(&z5.blk.x);
}

/* ---- 6. refusals ------------------------------------------------------------------- */

static void test_loss_refusals(void **state)
{
    clapp_host host;
    tu_log log;
    clapp_loss_params p;
    clapp_loss *L = NULL;
    tblock z, c;
    const int32_t lens[2] = {5, 5};
    clapp_tensor g = {0};
    (void)state;
    tu_host_init(&host, &log);
    clapp_loss_default_params(&p);
    p.steps = 0;
    assert_int_equal(clapp_loss_create(&L, &p, 4, 4, 2, 8, &host, "bad"), CLAPP_E_INVAL);
    assert_null(L);
    assert_int_equal(tu_log_count(&log, "core/learning/loss.c"), 1);
    clapp_loss_default_params(&p);
    assert_int_equal(clapp_loss_create(&L, &p, 4, 4, 2, 8, &host, "l"), 0);
    tb_init(&z, 2, 3, 8, lens); /* wrong feature size */
    assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, NULL), CLAPP_E_SHAPE);
    clapp_tensor_free(&z.blk.x);
    tb_init(&z, 2, 4, 9, lens); /* beyond the time capacity */
    assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, NULL), CLAPP_E_SHAPE);
    clapp_tensor_free(&z.blk.x);
    tb_init(&z, 2, 4, 8, lens);
    tb_init(&c, 2, 4, 7, lens); /* different time axes */
    assert_int_equal(clapp_loss_compute(L, &z.blk, &c.blk, NULL, NULL, NULL), CLAPP_E_SHAPE);
    {
        int64_t sh[3] = {2, 4, 7};
        assert_int_equal(clapp_tensor_alloc_shape(&g, 3, sh), 0); /* gradient of the wrong size */
        assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, &g, NULL, NULL), CLAPP_E_SHAPE);
    }
    z.lane[1].len = 9;
    assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, NULL, NULL, NULL), CLAPP_E_INVAL);
    assert_int_equal(tu_log_count(&log, "core/learning/loss.c"), 6);
    clapp_loss_destroy(L);
    clapp_tensor_free(&g);
    clapp_tensor_free(&z.blk.x);
    clapp_tensor_free(&c.blk.x);
    tu_log_free(&log);
}

/* ---- timing (CLAPP_LOSS_BENCH=1) ------------------------------------------------------ */

static void test_loss_bench(void **state)
{
    enum { B = 8, D = 512, T = 128 };
    const int32_t lens[B] = {128, 128, 128, 128, 128, 128, 128, 128};
    clapp_loss_params p;
    clapp_loss *L;
    tblock z;
    clapp_tensor g = {0};
    clapp_loss_stats st;
    struct timespec t0, t1;
    double best = 1e9;
    (void)state;
    if (!getenv("CLAPP_LOSS_BENCH"))
        skip();
    clapp_loss_default_params(&p); /* K = 12, N = 10, window 128 */
    tb_init(&z, B, D, T, lens);
    tb_fill(&z, 0.05);
    g.ndim = 3;
    memcpy(g.shape, z.blk.x.shape, sizeof g.shape);
    assert_int_equal(clapp_tensor_alloc(&g), 0);
    assert_int_equal(clapp_loss_create(&L, &p, D, D, B, T, NULL, "t"), 0);
    for (int r = 0; r < 5; r++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(clapp_loss_compute(L, &z.blk, &z.blk, &g, &g, &st), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        best = fmin(best, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    {
        double ns = B * (T - 1), gemm = 3.0 * 2.0 * ns * 12 * D * D;
        print_message("  B=8 T=128 D=512 K=12 N=10: best %.1f ms per call; the 3 GEMMs are %.2f GFLOP "
                      "-> %.1f GFLOP/s overall\n",
                      best * 1e3, gemm * 1e-9, gemm * 1e-9 / best);
    }
    clapp_loss_destroy(L);
    clapp_tensor_free(&g);
    clapp_tensor_free(&z.blk.x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_finite_differences),
        cmocka_unit_test(test_loss_local_update),
        cmocka_unit_test(test_loss_window),
        cmocka_unit_test(test_loss_determinism),
        cmocka_unit_test(test_loss_learns),
        cmocka_unit_test(test_loss_video_layout),
        cmocka_unit_test(test_loss_refusals),
        cmocka_unit_test(test_loss_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
