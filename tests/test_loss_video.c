/* The video form of the contrastive loss (core/learning/loss_video.c).
 *
 * 1. finite differences of the loss value against the engine's gradients
 *    (z == c, W; separate z and c streams; detach_context) for hinge and
 *    InfoNCE;
 * 2. an independent double-precision formulation (loops over context/target
 *    pairs, positions and channels) equals the engine's loss and gradients
 *    within 1e-5 relative;
 * 3. the explicit local update (docs/ALGORITHMS.md §2.1, Eq. 6/7/8 form with W_k shared
 *    over positions) for a one-layer module z = relu(conv1x1(x) + b) computed
 *    here, against the engine's gradient chained through that layer;
 * 4. empty blocks, lanes too short for a context, refusals;
 * 5. the graph: `clapp` after a conv3d picks the video form (form=auto), its
 *    loss and the layer's gradient equal a direct call; form=flat keeps the
 *    flat loss; form=video on a 3-D stream is refused.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "learning/loss_clapp.h"
#include "learning/loss_supervised.h"
#include "learning/loss_video.h"
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

/* ---- helpers ---------------------------------------------------------------- */

typedef struct trng { uint64_t s; } trng;
static double trand(trng *r) /* uniform [0, 1) */
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (double)(r->s >> 11) * 0x1.0p-53;
}
static double tnormal(trng *r)
{
    double u1 = trand(r) + 1e-12, u2 = trand(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct vblock {
    clapp_block blk;
    clapp_lane  lane[8];
} vblock;

static void vb_init(vblock *vb, int32_t B, int64_t C, int64_t T, int64_t H, int64_t W,
                    const int32_t *lens)
{
    int64_t sh[5] = {B, C, T, H, W};
    memset(vb, 0, sizeof *vb);
    assert_int_equal(clapp_tensor_alloc_shape(&vb->blk.x, 5, sh), 0);
    vb->blk.lanes = B;
    vb->blk.lane = vb->lane;
    for (int32_t b = 0; b < B; b++) {
        vb->lane[b].len = lens[b];
        vb->lane[b].seq_id = lens[b] ? b : -1;
    }
}

static int64_t vb_at(const vblock *vb, int64_t b, int64_t ch, int64_t t, int64_t q)
{
    const int64_t *s = vb->blk.x.shape;
    return ((b * s[1] + ch) * s[2] + t) * (s[3] * s[4]) + q;
}

/* Random values at valid steps, zeros past len. */
static void vb_fill(vblock *vb, double scale, trng *r)
{
    const int64_t *s = vb->blk.x.shape;
    clapp_tensor_zero(&vb->blk.x);
    for (int32_t b = 0; b < vb->blk.lanes; b++)
        for (int64_t ch = 0; ch < s[1]; ch++)
            for (int64_t t = 0; t < vb->lane[b].len; t++)
                for (int64_t q = 0; q < s[3] * s[4]; q++)
                    vb->blk.x.data[vb_at(vb, b, ch, t, q)] = (float)(scale * tnormal(r));
}

static clapp_tensor grad_like(const vblock *vb)
{
    clapp_tensor g;
    assert_int_equal(clapp_tensor_alloc_shape(&g, vb->blk.x.ndim, vb->blk.x.shape), 0);
    return g;
}

/* One evaluation with a fresh loss holding the given W. */
static int eval_video(const clapp_loss_params *p, const float *W, const vblock *z, const vblock *c,
                      clapp_tensor *gz, clapp_tensor *gc, float *Wg, clapp_loss_stats *st)
{
    clapp_loss_video *L = NULL;
    const clapp_named_tensor *nt;
    int32_t n;
    int rc;
    const int64_t *zs = z->blk.x.shape, *cs = c->blk.x.shape;
    assert_int_equal(clapp_loss_video_create(&L, p, zs[1], cs[1], zs[3], zs[4], z->blk.lanes,
                                             zs[2], NULL, "t"), 0);
    assert_int_equal(clapp_loss_video_tensors(L, &nt, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(nt[0].name, "W");
    assert_int_equal(nt[0].value->ndim, 3);
    assert_int_equal(nt[0].value->shape[0], p->steps);
    assert_int_equal(nt[0].value->shape[1], zs[1]);
    assert_int_equal(nt[0].value->shape[2], cs[1]);
    if (W)
        memcpy(nt[0].value->data, W, sizeof(float) * (size_t)clapp_tensor_numel(nt[0].value));
    rc = clapp_loss_video_compute(L, &z->blk, &c->blk, gz, gc, st);
    if (Wg)
        memcpy(Wg, nt[0].grad->data, sizeof(float) * (size_t)clapp_tensor_numel(nt[0].grad));
    clapp_loss_video_destroy(L);
    return rc;
}

static void random_W(float *W, int64_t n, double scale, trng *r)
{
    for (int64_t i = 0; i < n; i++)
        W[i] = (float)(scale * tnormal(r));
}

/* ---- 2. the independent reference (double, loops) ------------------------------ */

typedef struct ref_out {
    double  loss;
    double *dz, *dc, *dW;  /* same layouts as the engine's tensors */
    int64_t N;
} ref_out;

/* Context list: (b, t) with t < len_b - K, len_b = min(z len, c len). */
static int64_t ref_contexts(const vblock *z, const vblock *c, int K, int32_t *cb, int32_t *ct)
{
    int64_t N = 0;
    for (int32_t b = 0; b < z->blk.lanes; b++) {
        int32_t len = z->lane[b].len < c->lane[b].len ? z->lane[b].len : c->lane[b].len;
        for (int32_t t = 0; t + K < len; t++) {
            cb[N] = b;
            ct[N] = t;
            N++;
        }
    }
    return N;
}

/* s = sum_q sum_a sum_e z[bj, a, tj+k, q] W_k[a][e] c[bi, e, ti, q] and the
 * gradients of L = mean_k L_k, every sum written out. */
static void ref_compute(const vblock *z, const vblock *c, const float *W, int K, int infonce,
                        ref_out *o)
{
    const int64_t Cz = z->blk.x.shape[1], Cc = c->blk.x.shape[1];
    const int64_t Q = z->blk.x.shape[3] * z->blk.x.shape[4];
    int32_t cb[64], ct[64];
    int64_t N = ref_contexts(z, c, K, cb, ct);
    double *s = calloc((size_t)(N * N), sizeof *s), *g = calloc((size_t)(N * N), sizeof *g);
    o->N = N;
    o->loss = 0.0;
    o->dz = calloc((size_t)clapp_tensor_numel(&z->blk.x), sizeof(double));
    o->dc = calloc((size_t)clapp_tensor_numel(&c->blk.x), sizeof(double));
    o->dW = calloc((size_t)(K * Cz * Cc), sizeof(double));
    for (int k = 1; k <= K && N > 0; k++) {
        const float *Wk = W + (int64_t)(k - 1) * Cz * Cc;
        double Lk = 0.0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0.0;
                for (int64_t q = 0; q < Q; q++)
                    for (int64_t a = 0; a < Cz; a++)
                        for (int64_t e = 0; e < Cc; e++)
                            acc += (double)z->blk.x.data[vb_at(z, cb[j], a, ct[j] + k, q)] *
                                   (double)Wk[a * Cc + e] *
                                   (double)c->blk.x.data[vb_at(c, cb[i], e, ct[i], q)];
                s[i * N + j] = acc;
            }
        if (infonce) {
            for (int64_t i = 0; i < N; i++) {
                double m = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < N; j++)
                    m = fmax(m, s[i * N + j]);
                for (int64_t j = 0; j < N; j++)
                    sum += exp(s[i * N + j] - m);
                Lk += (m + log(sum) - s[i * N + i]) / (double)N;
                for (int64_t j = 0; j < N; j++)
                    g[i * N + j] = (exp(s[i * N + j] - m) / sum - (i == j)) / (double)N;
            }
        } else {
            double np = (double)N, nn = (double)N * (double)(N - 1);
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < N; j++) {
                    double u = s[i * N + j];
                    if (i == j) {
                        Lk += 0.5 * fmax(0.0, 1.0 - u) / np;
                        g[i * N + j] = u < 1.0 ? -0.5 / np : 0.0;
                    } else {
                        Lk += 0.5 * fmax(0.0, 1.0 + u) / nn;
                        g[i * N + j] = u > -1.0 ? 0.5 / nn : 0.0;
                    }
                }
        }
        o->loss += Lk / K;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                double gij = g[i * N + j] / K;
                if (gij == 0.0)
                    continue;
                for (int64_t q = 0; q < Q; q++)
                    for (int64_t a = 0; a < Cz; a++)
                        for (int64_t e = 0; e < Cc; e++) {
                            int64_t iz = vb_at(z, cb[j], a, ct[j] + k, q);
                            int64_t ic = vb_at(c, cb[i], e, ct[i], q);
                            double w = Wk[a * Cc + e];
                            o->dz[iz] += gij * w * c->blk.x.data[ic];
                            o->dc[ic] += gij * w * z->blk.x.data[iz];
                            o->dW[(k - 1) * Cz * Cc + a * Cc + e] +=
                                gij * z->blk.x.data[iz] * c->blk.x.data[ic];
                        }
            }
    }
    free(s);
    free(g);
}

static void ref_free(ref_out *o)
{
    free(o->dz);
    free(o->dc);
    free(o->dW);
}

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const double *b, int64_t n)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return m > 0 ? e / m : e;
}

static double max_abs_d(const double *b, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(b[i]));
    return m;
}

typedef struct ref_case {
    const char     *label;
    clapp_loss_mode mode;
    int             separate, detach;
    int64_t         cz, cc;
} ref_case;

static void run_ref_case(const ref_case *rc_)
{
    const int32_t B = 4, T = 8, H = 3, Wd = 2, K = 3;
    int32_t lens[4] = {8, 6, 3, 0};   /* lane 2: len 3 <= K, no context; lane 3 idle */
    int32_t lens_c[4] = {7, 6, 3, 0};
    trng r = {0x9E3779B97F4A7C15ull ^ (uint64_t)rc_->mode};
    vblock z, cs, *c = &z;
    clapp_loss_params p;
    clapp_tensor gz, gc;
    clapp_loss_stats st;
    float *W, *Wg;
    ref_out ref;
    int64_t nW = K * rc_->cz * rc_->cc;
    double e;

    clapp_loss_default_params(&p);
    p.mode = rc_->mode;
    p.steps = K;
    p.detach_context = rc_->detach;
    p.grad_target = 1;
    vb_init(&z, B, rc_->cz, T, H, Wd, lens);
    vb_fill(&z, 0.5, &r);
    if (rc_->separate) {
        vb_init(&cs, B, rc_->cc, T, H, Wd, lens_c);
        vb_fill(&cs, 0.5, &r);
        c = &cs;
    }
    W = malloc(sizeof(float) * (size_t)nW);
    Wg = malloc(sizeof(float) * (size_t)nW);
    random_W(W, nW, 0.2, &r);
    gz = grad_like(&z);
    gc = c == &z ? gz : grad_like(c);
    assert_int_equal(eval_video(&p, W, &z, c, &gz, c == &z ? &gz : &gc, Wg, &st), 0);
    ref_compute(&z, c, W, K, p.mode == CLAPP_LOSS_INFONCE, &ref);

    /* the reference's c path goes into dc; with c == z both paths meet in one tensor */
    if (c == &z) {
        for (int64_t i = 0; i < clapp_tensor_numel(&z.blk.x); i++)
            ref.dz[i] += p.detach_context ? 0.0 : ref.dc[i];
    } else if (p.detach_context) {
        memset(ref.dc, 0, sizeof(double) * (size_t)clapp_tensor_numel(&c->blk.x));
    }
    assert_int_equal(st.pairs, ref.N * K);
    assert_true(ref.N == (rc_->separate ? 4 + 3 : 5 + 3));
    e = fabs(st.loss - ref.loss) / fabs(ref.loss);
    printf("  %-28s N=%lld loss engine %.9f ref %.9f (rel %.2e)", rc_->label, (long long)ref.N,
           st.loss, ref.loss, e);
    assert_true(e < 1e-5);
    e = rel_err(gz.data, ref.dz, clapp_tensor_numel(&z.blk.x));
    printf(" dz %.2e", e);
    assert_true(max_abs_d(ref.dz, clapp_tensor_numel(&z.blk.x)) > 1e-4);
    assert_true(e < 1e-5);
    if (c != &z) {
        int64_t nc = clapp_tensor_numel(&c->blk.x);
        if (p.detach_context) {
            for (int64_t i = 0; i < nc; i++)
                assert_true(gc.data[i] == 0.0f);
            printf(" dc == 0 (detached)");
        } else {
            e = rel_err(gc.data, ref.dc, nc);
            printf(" dc %.2e", e);
            assert_true(max_abs_d(ref.dc, nc) > 1e-4);
            assert_true(e < 1e-5);
        }
    }
    e = rel_err(Wg, ref.dW, nW);
    printf(" dW %.2e\n", e);
    assert_true(max_abs_d(ref.dW, nW) > 1e-4);
    assert_true(e < 1e-5);
    /* nothing outside valid steps */
    for (int32_t b = 0; b < B; b++)
        for (int64_t t = lens[b]; t < T; t++)
            for (int64_t ch = 0; ch < rc_->cz; ch++)
                for (int64_t q = 0; q < H * Wd; q++)
                    assert_true(gz.data[vb_at(&z, b, ch, t, q)] == 0.0f);

    ref_free(&ref);
    free(W);
    free(Wg);
    if (c != &z) {
        clapp_tensor_free(&gc);
        clapp_tensor_free(&cs.blk.x);
    }
    clapp_tensor_free(&gz);
    clapp_tensor_free(&z.blk.x);
}

static void test_reference(void **state)
{
    (void)state;
    static const ref_case cases[] = {
        {"hinge, c == z", CLAPP_LOSS_CLAPP_S, 0, 0, 4, 4},
        {"hinge-cpc, c == z", CLAPP_LOSS_HINGE_CPC, 0, 0, 3, 3},
        {"infonce, c == z", CLAPP_LOSS_INFONCE, 0, 0, 4, 4},
        {"hinge, separate (5 <- 4)", CLAPP_LOSS_CLAPP_S, 1, 0, 5, 4},
        {"infonce, separate (5 <- 4)", CLAPP_LOSS_INFONCE, 1, 0, 5, 4},
        {"hinge, detach_context", CLAPP_LOSS_CLAPP_S, 0, 1, 4, 4},
        {"hinge, separate, detach", CLAPP_LOSS_CLAPP_S, 1, 1, 5, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_ref_case(&cases[i]);
}

/* ---- 1. finite differences ------------------------------------------------------ */

static int same_gates(const clapp_loss_stats *a, const clapp_loss_stats *b)
{
    return a->pos_active == b->pos_active && a->neg_active == b->neg_active;
}

typedef struct fd_acc {
    double max_err, gmax;
    int    checked, skipped;
} fd_acc;

/* Central differences over every entry of x (a value of z, c or W). */
static void fd_array(const clapp_loss_params *p, float *W, vblock *z, vblock *c, float *x, int64_t n,
                     const float *an, const clapp_loss_stats *base, fd_acc *acc)
{
    const float h = 1e-2f;
    for (int64_t i = 0; i < n; i++) {
        float keep = x[i];
        clapp_loss_stats sp, sm;
        double fd;
        x[i] = keep + h;
        assert_int_equal(eval_video(p, W, z, c, NULL, NULL, NULL, &sp), 0);
        x[i] = keep - h;
        assert_int_equal(eval_video(p, W, z, c, NULL, NULL, NULL, &sm), 0);
        x[i] = keep;
        if (!same_gates(&sp, base) || !same_gates(&sm, base)) {
            acc->skipped++;
            continue;
        }
        fd = (sp.loss - sm.loss) / (double)((keep + h) - (keep - h));
        acc->max_err = fmax(acc->max_err, fabs(fd - (double)an[i]));
        acc->gmax = fmax(acc->gmax, fabs((double)an[i]));
        acc->checked++;
    }
}

static void run_fd(clapp_loss_mode mode, int separate, int detach)
{
    const int32_t B = 2, T = 6, H = 2, Wd = 2, K = 2;
    int32_t lens[2] = {6, 5};
    const int64_t C = 3;
    trng r = {1234567ull + (uint64_t)mode * 7 + (uint64_t)separate};
    vblock z, cs, *c = &z;
    clapp_loss_params p;
    clapp_tensor gz, gc;
    clapp_loss_stats base;
    float W[2 * 3 * 3], Wg[2 * 3 * 3];
    fd_acc az = {0}, ac = {0}, aw = {0};

    clapp_loss_default_params(&p);
    p.mode = mode;
    p.steps = K;
    p.detach_context = detach;
    p.grad_target = 1;
    vb_init(&z, B, C, T, H, Wd, lens);
    vb_fill(&z, 0.6, &r);
    if (separate) {
        vb_init(&cs, B, C, T, H, Wd, lens);
        vb_fill(&cs, 0.6, &r);
        c = &cs;
    }
    random_W(W, (int64_t)(sizeof W / sizeof W[0]), 0.4, &r);
    gz = grad_like(&z);
    gc = grad_like(c);
    assert_int_equal(eval_video(&p, W, &z, c, &gz, c == &z ? &gz : &gc, Wg, &base), 0);
    fd_array(&p, W, &z, c, z.blk.x.data, clapp_tensor_numel(&z.blk.x), gz.data, &base, &az);
    if (c != &z)
        fd_array(&p, W, &z, c, c->blk.x.data, clapp_tensor_numel(&c->blk.x), gc.data, &base, &ac);
    fd_array(&p, W, &z, c, W, (int64_t)(sizeof W / sizeof W[0]), Wg, &base, &aw);
    printf("  mode %d%s%s: loss %.5f; z: %d checked (%d at a kink) max err %.2e of %.3f; "
           "c: %d max err %.2e of %.3f; W: %d max err %.2e of %.3f\n", (int)mode,
           separate ? " separate" : " c == z", detach ? " detach" : "", base.loss, az.checked,
           az.skipped, az.max_err, az.gmax, ac.checked, ac.max_err, ac.gmax, aw.checked,
           aw.max_err, aw.gmax);
    assert_true(az.checked > (int)clapp_tensor_numel(&z.blk.x) / 2);
    assert_true(az.gmax > 1e-3);
    assert_true(az.max_err < 2e-3 * fmax(1.0, az.gmax));
    assert_true(aw.checked > 9);
    assert_true(aw.gmax > 1e-3);
    assert_true(aw.max_err < 2e-3 * fmax(1.0, aw.gmax));
    if (c != &z && !detach) {
        assert_true(ac.checked > (int)clapp_tensor_numel(&c->blk.x) / 2);
        assert_true(ac.gmax > 1e-3);
        assert_true(ac.max_err < 2e-3 * fmax(1.0, ac.gmax));
    }
    if (c != &z && detach)
        assert_true(ac.gmax == 0.0);   /* analytic c gradient is zero when detached */
    clapp_tensor_free(&gz);
    clapp_tensor_free(&gc);
    clapp_tensor_free(&z.blk.x);
    if (c != &z)
        clapp_tensor_free(&cs.blk.x);
}

static void test_finite_differences(void **state)
{
    (void)state;
    run_fd(CLAPP_LOSS_CLAPP_S, 0, 0);
    run_fd(CLAPP_LOSS_INFONCE, 0, 0);
    run_fd(CLAPP_LOSS_CLAPP_S, 1, 0);
    run_fd(CLAPP_LOSS_INFONCE, 1, 0);
    run_fd(CLAPP_LOSS_CLAPP_S, 1, 1);
}

/* ---- 3. explicit local updates (Eq. 6/7/8 form) --------------------------------- */

/* One layer z = relu(V x + bias) at every (t, position) (a 1x1x1 conv), the
 * CLAPP-s hinge on z (c == z). The explicit rule, per pair (context i, target
 * j) of step k with gate gamma = y * H and the mean weight omega (1/(2N) on
 * the diagonal, 1/(2N(N-1)) off it), summed over positions q:
 *   dV_ji += omega gamma [ (W_k c^t_q)_j rho'(a^tau_jq) x^tau_iq       (Eq. 6)
 *                        + (W_k^T z^tau_q)_j rho'(a^t_jq) x^t_iq ]     (Eq. 7)
 *   dW_k  += omega gamma z^tau_q (c^t_q)^T                             (Eq. 8)
 * all divided by K: this must equal minus the engine's gradient. */
static void test_explicit_update(void **state)
{
    (void)state;
    const int32_t B = 3, T = 7, H = 2, Wd = 3, K = 3;
    const int64_t Cin = 3, C = 4, Q = H * Wd;
    int32_t lens[3] = {7, 6, 5};
    trng r = {42ull};
    vblock x, z;
    clapp_loss_params p;
    clapp_tensor gz;
    clapp_loss_stats st;
    float V[4 * 3], bias[4], W[3 * 4 * 4], Wg[3 * 4 * 4];
    double dV_eng[4 * 3] = {0}, db_eng[4] = {0}, dV_exp[4 * 3] = {0}, db_exp[4] = {0};
    double dW_exp[3 * 4 * 4] = {0};
    int32_t cb[64], ct[64];
    int64_t N;
    int pos_on = 0, neg_on = 0, neg_off = 0;
    double eV, eb, eW;

    vb_init(&x, B, Cin, T, H, Wd, lens);
    vb_fill(&x, 1.0, &r);
    vb_init(&z, B, C, T, H, Wd, lens);
    random_W(V, 12, 0.6, &r);
    for (int j = 0; j < 4; j++)
        bias[j] = (float)(0.1 * tnormal(&r));
    random_W(W, 48, 0.3, &r);
    for (int32_t b = 0; b < B; b++)
        for (int64_t t = 0; t < lens[b]; t++)
            for (int64_t q = 0; q < Q; q++)
                for (int64_t j = 0; j < C; j++) {
                    double a = bias[j];
                    for (int64_t i = 0; i < Cin; i++)
                        a += (double)V[j * Cin + i] * x.blk.x.data[vb_at(&x, b, i, t, q)];
                    z.blk.x.data[vb_at(&z, b, j, t, q)] = a > 0 ? (float)a : 0.0f;
                }

    clapp_loss_default_params(&p);
    p.mode = CLAPP_LOSS_CLAPP_S;
    p.steps = K;
    gz = grad_like(&z);
    assert_int_equal(eval_video(&p, W, &z, &z, &gz, &gz, Wg, &st), 0);
    /* chain the engine's dL/dz through the layer (relu' = 1 where z > 0) */
    for (int32_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t q = 0; q < Q; q++)
                for (int64_t j = 0; j < C; j++) {
                    double g = gz.data[vb_at(&z, b, j, t, q)];
                    if (z.blk.x.data[vb_at(&z, b, j, t, q)] <= 0.0f)
                        continue;
                    db_eng[j] += g;
                    for (int64_t i = 0; i < Cin; i++)
                        dV_eng[j * Cin + i] += g * x.blk.x.data[vb_at(&x, b, i, t, q)];
                }

    N = ref_contexts(&z, &z, K, cb, ct);
    assert_int_equal(N, 4 + 3 + 2);
    for (int k = 1; k <= K; k++) {
        const float *Wk = W + (k - 1) * C * C;
        for (int64_t i = 0; i < N; i++)
            for (int64_t jj = 0; jj < N; jj++) {
                /* context (cb[i], ct[i]); target (cb[jj], ct[jj] + k) */
                int32_t bc = cb[i], tc = ct[i], bt = cb[jj], tt = ct[jj] + k;
                double u = 0.0, y = i == jj ? 1.0 : -1.0, gamma, omega;
                for (int64_t q = 0; q < Q; q++)
                    for (int64_t a = 0; a < C; a++)
                        for (int64_t e = 0; e < C; e++)
                            u += (double)z.blk.x.data[vb_at(&z, bt, a, tt, q)] * Wk[a * C + e] *
                                 z.blk.x.data[vb_at(&z, bc, e, tc, q)];
                gamma = (1.0 - y * u > 0.0) ? y : 0.0;
                omega = i == jj ? 1.0 / (2.0 * N) : 1.0 / (2.0 * N * (N - 1));
                if (i == jj)
                    pos_on += gamma != 0.0;
                else if (gamma != 0.0)
                    neg_on++;
                else
                    neg_off++;
                if (gamma == 0.0)
                    continue;
                for (int64_t q = 0; q < Q; q++) {
                    double pred[4], retro[4];   /* W_k c^t_q and W_k^T z^tau_q */
                    for (int64_t a = 0; a < C; a++) {
                        pred[a] = 0.0;
                        retro[a] = 0.0;
                        for (int64_t e = 0; e < C; e++) {
                            pred[a] += Wk[a * C + e] * z.blk.x.data[vb_at(&z, bc, e, tc, q)];
                            retro[a] += Wk[e * C + a] * z.blk.x.data[vb_at(&z, bt, e, tt, q)];
                        }
                    }
                    for (int64_t j = 0; j < C; j++) {
                        double post_tau = z.blk.x.data[vb_at(&z, bt, j, tt, q)] > 0 ? 1.0 : 0.0;
                        double post_t = z.blk.x.data[vb_at(&z, bc, j, tc, q)] > 0 ? 1.0 : 0.0;
                        double f6 = omega * gamma * pred[j] * post_tau / K;
                        double f7 = omega * gamma * retro[j] * post_t / K;
                        db_exp[j] += f6 + f7;
                        for (int64_t i2 = 0; i2 < Cin; i2++)
                            dV_exp[j * Cin + i2] += f6 * x.blk.x.data[vb_at(&x, bt, i2, tt, q)] +
                                                    f7 * x.blk.x.data[vb_at(&x, bc, i2, tc, q)];
                        for (int64_t e = 0; e < C; e++)
                            dW_exp[(k - 1) * C * C + j * C + e] +=
                                omega * gamma * z.blk.x.data[vb_at(&z, bt, j, tt, q)] *
                                z.blk.x.data[vb_at(&z, bc, e, tc, q)] / K;
                    }
                }
            }
    }
    /* the update is minus the gradient */
    for (int i = 0; i < 12; i++)
        dV_exp[i] = -dV_exp[i];
    for (int i = 0; i < 4; i++)
        db_exp[i] = -db_exp[i];
    for (int i = 0; i < 48; i++)
        dW_exp[i] = -dW_exp[i];
    {
        float fV[12], fb[4];
        for (int i = 0; i < 12; i++)
            fV[i] = (float)dV_eng[i];
        for (int i = 0; i < 4; i++)
            fb[i] = (float)db_eng[i];
        eV = rel_err(fV, dV_exp, 12);
        eb = rel_err(fb, db_exp, 4);
        eW = rel_err(Wg, dW_exp, 48);
    }
    printf("  N=%lld, positives active %d/%lld, negatives active %d, inactive %d; rel err "
           "dV %.2e (|dV| max %.4f) db %.2e dW %.2e (|dW| max %.4f)\n", (long long)N, pos_on,
           (long long)(N * K), neg_on, neg_off, eV, max_abs_d(dV_exp, 12), eb, eW,
           max_abs_d(dW_exp, 48));
    /* both gate values occur, so the test sees the gating */
    assert_true(pos_on > 0 && neg_on > 0 && neg_off > 0);
    assert_true(max_abs_d(dV_exp, 12) > 1e-4);
    assert_true(eV < 1e-5);
    assert_true(eb < 1e-5);
    assert_true(eW < 1e-5);
    clapp_tensor_free(&gz);
    clapp_tensor_free(&x.blk.x);
    clapp_tensor_free(&z.blk.x);
}

/* ---- 4. edges and refusals -------------------------------------------------------- */

static void test_edges(void **state)
{
    (void)state;
    int32_t lens[2] = {3, 0};
    int32_t lens_ok[2] = {5, 5};
    vblock z, bad;
    clapp_loss_params p;
    clapp_loss_stats st;
    clapp_loss_video *L = NULL;
    clapp_tensor gz;
    tu_log log;
    clapp_host host;
    trng r = {99ull};

    tu_host_init(&host, &log);
    clapp_loss_default_params(&p);
    p.steps = 3;
    /* no lane longer than K: no pairs, loss 0, gradient untouched */
    vb_init(&z, 2, 2, 5, 2, 2, lens);
    vb_fill(&z, 1.0, &r);
    gz = grad_like(&z);
    assert_int_equal(eval_video(&p, NULL, &z, &z, &gz, &gz, NULL, &st), 0);
    assert_int_equal(st.pairs, 0);
    assert_true(st.loss == 0.0);
    for (int64_t i = 0; i < clapp_tensor_numel(&gz); i++)
        assert_true(gz.data[i] == 0.0f);
    /* len 4 = K + 1: one context per lane; B = 2 lanes -> N = 2 */
    z.lane[0].len = 4;
    z.lane[1].len = 4;
    vb_fill(&z, 1.0, &r);
    assert_int_equal(eval_video(&p, NULL, &z, &z, &gz, &gz, NULL, &st), 0);
    assert_int_equal(st.pairs, 2 * 3);
    assert_true(st.loss > 0.0);

    /* refusals */
    p.mode = CLAPP_LOSS_CLAPP;
    assert_int_equal(clapp_loss_video_create(&L, &p, 2, 2, 2, 2, 2, 5, &host, "v"),
                     CLAPP_E_UNSUPPORTED);
    assert_int_equal(tu_log_count(&log, "core/learning/loss_video.c: mode=clapp"), 1);
    p.mode = CLAPP_LOSS_CLAPP_S;
    p.retro = 1;
    assert_int_equal(clapp_loss_video_create(&L, &p, 2, 2, 2, 2, 2, 5, &host, "v"),
                     CLAPP_E_UNSUPPORTED);
    p.retro = 0;
    assert_int_equal(clapp_loss_video_create(&L, &p, 2, 2, 0, 2, 2, 5, &host, "v"), CLAPP_E_SHAPE);
    assert_null(L);
    assert_int_equal(clapp_loss_video_create(&L, &p, 2, 2, 2, 2, 2, 5, &host, "v"), 0);
    /* wrong spatial size */
    vb_init(&bad, 2, 2, 5, 3, 2, lens_ok);
    assert_int_equal(clapp_loss_video_compute(L, &bad.blk, &bad.blk, NULL, NULL, &st),
                     CLAPP_E_SHAPE);
    assert_int_equal(tu_log_count(&log, "core/learning/loss_video.c: channels"), 1);
    clapp_tensor_free(&bad.blk.x);
    /* more steps than the capacity */
    vb_init(&bad, 2, 2, 6, 2, 2, lens_ok);
    assert_int_equal(clapp_loss_video_compute(L, &bad.blk, &bad.blk, NULL, NULL, &st),
                     CLAPP_E_SHAPE);
    clapp_tensor_free(&bad.blk.x);
    /* a lane length past T */
    z.lane[0].len = 6;
    assert_int_equal(clapp_loss_video_compute(L, &z.blk, &z.blk, NULL, NULL, &st), CLAPP_E_INVAL);
    clapp_loss_video_destroy(L);
    clapp_tensor_free(&gz);
    clapp_tensor_free(&z.blk.x);
    tu_log_free(&log);
}

/* A few Adam-free gradient steps on W alone lower the hinge loss on a fixed
 * block (the gradient points downhill at the scale of real blocks). */
static void test_descent(void **state)
{
    (void)state;
    int32_t lens[4] = {12, 12, 12, 12};
    vblock z;
    clapp_loss_params p;
    clapp_loss_stats st;
    clapp_loss_video *L = NULL;
    const clapp_named_tensor *nt;
    int32_t n;
    trng r = {777ull};
    double first = 0.0;

    clapp_loss_default_params(&p);
    p.steps = 3;
    vb_init(&z, 4, 8, 12, 4, 4, lens);
    vb_fill(&z, 0.3, &r);
    /* a slowly varying signal, so the future is predictable */
    for (int32_t b = 0; b < 4; b++)
        for (int64_t ch = 0; ch < 8; ch++)
            for (int64_t t = 1; t < 12; t++)
                for (int64_t q = 0; q < 16; q++)
                    z.blk.x.data[vb_at(&z, b, ch, t, q)] =
                        0.9f * z.blk.x.data[vb_at(&z, b, ch, t - 1, q)] +
                        0.1f * z.blk.x.data[vb_at(&z, b, ch, t, q)];
    assert_int_equal(clapp_loss_video_create(&L, &p, 8, 8, 4, 4, 4, 12, NULL, "v"), 0);
    assert_int_equal(clapp_loss_video_tensors(L, &nt, &n), 0);
    for (int it = 0; it < 30; it++) {
        clapp_tensor_zero(nt[0].grad);
        assert_int_equal(clapp_loss_video_compute(L, &z.blk, &z.blk, NULL, NULL, &st), 0);
        if (it == 0)
            first = st.loss;
        for (int64_t i = 0; i < clapp_tensor_numel(nt[0].value); i++)
            nt[0].value->data[i] -= 0.5f * nt[0].grad->data[i];
    }
    printf("  W-only descent: loss %.4f -> %.4f, flops/call %.3g\n", first, st.loss,
           clapp_loss_video_last_flops(L));
    assert_true(st.loss < 0.8 * first);
    clapp_loss_video_destroy(L);
    clapp_tensor_free(&z.blk.x);
}

/* ---- 5. graph dispatch --------------------------------------------------------- */

typedef struct grun {
    tu_log              log;
    clapp_host          host;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
    char                err[1024];
} grun;

static int grun_open(grun *r, const char *text, const clapp_stream_info *src)
{
    clapp_graph_params gp;
    memset(r, 0, sizeof *r);
    tu_host_init(&r->host, &r->log);
    assert_int_equal(clapp_registry_init_default(&r->reg, &r->host), 0);
    if (clapp_pipedesc_parse(&r->pd, text, "<test>", r->err, sizeof r->err) < 0 ||
        clapp_pipedesc_resolve(&r->pd, &r->reg, r->err, sizeof r->err) < 0)
        fail_msg("%s", r->err);
    clapp_graph_default_params(&gp);
    gp.seed = 5;
    return clapp_graph_create(&r->g, &r->pd, src, &gp, &r->host, r->err, sizeof r->err);
}

static void grun_close(grun *r)
{
    clapp_graph_destroy(&r->g);
    clapp_pipedesc_free(&r->pd);
    clapp_registry_free(&r->reg);
    tu_log_free(&r->log);
}

static void test_graph_dispatch(void **state)
{
    (void)state;
    const clapp_stream_info src = {5, {2, 3, 7, 4, 5, 0}, 10.0};
    const clapp_stream_info src3 = {3, {2, 3, 7, 0, 0, 0}, 10.0};
    int32_t lens[2] = {7, 6};
    vblock in;
    trng r = {31337ull};
    grun g;
    clapp_node *conv, *loss;
    clapp_loss_stats st;
    clapp_tensor gz;
    float W0[2 * 4 * 4], Wg[2 * 4 * 4];
    clapp_loss_params p;

    /* auto on [B, C, T, H, W]: the video form, W [K, C, C] */
    assert_int_equal(grun_open(&g, "source kind=video ! conv3d name=c out=4 kt=1 kh=3 kw=3 "
                                   "! clapp name=l steps=2", &src), 0);
    conv = &g.g.nodes[1];
    loss = &g.g.nodes[2];
    assert_non_null(node_loss_video(loss));
    assert_null(node_loss_flat(loss));
    assert_int_equal(loss->n_tensors, 1);
    assert_int_equal(loss->tensors[0].value->shape[0], 2);
    assert_int_equal(loss->tensors[0].value->shape[1], 4);
    assert_int_equal(loss->tensors[0].value->shape[2], 4);
    memcpy(W0, loss->tensors[0].value->data, sizeof W0);
    vb_init(&in, 2, 3, 7, 4, 5, lens);
    vb_fill(&in, 1.0, &r);
    for (int b = 0; b < 2; b++)
        in.lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
    in.blk.rate = 10.0;
    assert_int_equal(clapp_graph_process(&g.g, &in.blk, g.err, sizeof g.err), 0);
    /* the same loss called directly on the layer's output, with the W the graph had */
    clapp_loss_default_params(&p);
    p.steps = 2;
    {
        vblock out;
        memset(&out, 0, sizeof out);
        out.blk = conv->out;
        gz = grad_like(&out);
        assert_int_equal(eval_video(&p, W0, &out, &out, &gz, &gz, Wg, &st), 0);
    }
    printf("  graph: loss %.6f (direct %.6f), pairs %lld\n", loss->last.loss, st.loss,
           (long long)loss->last.pairs);
    assert_int_equal(loss->last.pairs, (5 + 4) * 2);
    assert_true(fabs(loss->last.loss - st.loss) <= 1e-12 * fabs(st.loss));
    assert_true(tu_max_abs_diff(conv->grad.data, gz.data, (size_t)clapp_tensor_numel(&gz)) == 0.0);
    /* the optimizer moved W along its gradient */
    assert_true(tu_max_abs_diff(loss->tensors[0].value->data, W0, 32) > 0.0);
    clapp_tensor_free(&gz);
    grun_close(&g);

    /* form=flat keeps the flat loss over C*H*W features */
    assert_int_equal(grun_open(&g, "source kind=video ! conv3d name=c out=4 kt=1 kh=3 kw=3 "
                                   "! clapp name=l steps=2 form=flat", &src), 0);
    loss = &g.g.nodes[2];
    assert_null(node_loss_video(loss));
    assert_non_null(node_loss_flat(loss));
    assert_int_equal(loss->tensors[0].value->shape[1], 4 * 4 * 5);
    grun_close(&g);

    /* auto on [B, C, T]: flat; video refused */
    assert_int_equal(grun_open(&g, "source ! conv1d name=c out=4 kernel=1 stride=1 pad=0 "
                                   "! clapp name=l steps=2", &src3), 0);
    assert_non_null(node_loss_flat(&g.g.nodes[2]));
    grun_close(&g);
    assert_int_equal(grun_open(&g, "source ! conv1d name=c out=4 kernel=1 stride=1 pad=0 "
                                   "! clapp name=l steps=2 form=video", &src3), CLAPP_E_SHAPE);
    assert_non_null(strstr(g.err, "form=video needs [B, C, T, H, W] streams"));
    grun_close(&g);
    clapp_tensor_free(&in.blk.x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_explicit_update),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_descent),
        cmocka_unit_test(test_graph_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
