/* The pooled video form of the contrastive loss (core/learning/loss_video.h, pool=).
 *
 * 1. an independent double formulation (pool the pixels, score every
 *    context/target pair with a full W_k, loss and gradients by loops, the
 *    pooling's adjoint by hand) whose gradients are checked by central finite
 *    differences of its own loss, equals the engine's loss and gradients
 *    within 1e-5 relative: pool=2 on a 5x4 map (edge windows cut by the
 *    border), pool=frame, pool=3 with separate z / c streams, InfoNCE and
 *    detach_context; the engine's float gradients also match finite
 *    differences of the engine's loss (coarse, float precision);
 * 2. pool=1 with W_k = W_shared (x) I_G equals the shared form (loss, z and c
 *    gradients; the full W's gradient summed over its diagonal blocks is the
 *    shared W's gradient);
 * 3. refusals: a W beyond CLAPP_LOSS_VIDEO_MAX_W_FLOATS (the message names
 *    pool= and the size), bad pool text, pool= on a flat stream; the graph
 *    builds a pooled loss with W [K, C*G, C*G] whose loss equals a direct call.
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

typedef struct trng { uint64_t s; } trng;
static double trand(trng *r)
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

static void vb_fill(vblock *vb, double scale, trng *r)
{
    const int64_t *s = vb->blk.x.shape;
    const int64_t HW = s[3] * s[4];
    clapp_tensor_zero(&vb->blk.x);
    for (int32_t b = 0; b < vb->blk.lanes; b++)
        for (int64_t ch = 0; ch < s[1]; ch++)
            for (int64_t t = 0; t < vb->lane[b].len; t++)
                for (int64_t q = 0; q < HW; q++)
                    vb->blk.x.data[((b * s[1] + ch) * s[2] + t) * HW + q] =
                        (float)(scale * tnormal(r));
}

static double rel_err(const float *a, const double *b, int64_t n)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return m > 0 ? e / m : e;
}

/* ---- 1. the independent reference -------------------------------------------- */

/* Geometry of one pooled stream: [B, C, T, H, W] pixels, windows ph x pw. */
typedef struct rgeo {
    int64_t B, C, T, H, W, ph, pw, gh, gw, G;
} rgeo;

static rgeo rgeo_make(const clapp_tensor *x, int64_t pool)
{
    rgeo g;
    g.B = x->shape[0];
    g.C = x->shape[1];
    g.T = x->shape[2];
    g.H = x->shape[3];
    g.W = x->shape[4];
    g.ph = pool == CLAPP_LOSS_VIDEO_POOL_FRAME ? g.H : pool;
    g.pw = pool == CLAPP_LOSS_VIDEO_POOL_FRAME ? g.W : pool;
    g.gh = (g.H + g.ph - 1) / g.ph;
    g.gw = (g.W + g.pw - 1) / g.pw;
    g.G = g.gh * g.gw;
    return g;
}

static int64_t pix(const rgeo *g, int64_t b, int64_t ch, int64_t t, int64_t y, int64_t x)
{
    return (((b * g->C + ch) * g->T + t) * g->H + y) * g->W + x;
}

/* The pooled vector of (b, t): v[ch*G + gy*gw + gx] = mean of the window's pixels. */
static void ref_pool(const rgeo *g, const double *x, int64_t b, int64_t t, double *v)
{
    for (int64_t ch = 0; ch < g->C; ch++)
        for (int64_t gy = 0; gy < g->gh; gy++)
            for (int64_t gx = 0; gx < g->gw; gx++) {
                double sum = 0.0;
                int64_t n = 0;
                for (int64_t y = gy * g->ph; y < (gy + 1) * g->ph && y < g->H; y++)
                    for (int64_t xx = gx * g->pw; xx < (gx + 1) * g->pw && xx < g->W; xx++) {
                        sum += x[pix(g, b, ch, t, y, xx)];
                        n++;
                    }
                v[ch * g->G + gy * g->gw + gx] = sum / (double)n;
            }
}

/* d(pooled v)/d(pixels), transposed: add dv / window size to every pixel. */
static void ref_unpool(const rgeo *g, double *dx, int64_t b, int64_t t, const double *dv)
{
    for (int64_t ch = 0; ch < g->C; ch++)
        for (int64_t gy = 0; gy < g->gh; gy++)
            for (int64_t gx = 0; gx < g->gw; gx++) {
                int64_t y1 = (gy + 1) * g->ph < g->H ? (gy + 1) * g->ph : g->H;
                int64_t x1 = (gx + 1) * g->pw < g->W ? (gx + 1) * g->pw : g->W;
                double n = (double)((y1 - gy * g->ph) * (x1 - gx * g->pw));
                for (int64_t y = gy * g->ph; y < y1; y++)
                    for (int64_t xx = gx * g->pw; xx < x1; xx++)
                        dx[pix(g, b, ch, t, y, xx)] += dv[ch * g->G + gy * g->gw + gx] / n;
            }
}

typedef struct rcase {
    int64_t pool;
    int     K, infonce, same, detach;
    const int32_t *zlen, *clen;
} rcase;

/* Loss of the pooled form and its gradients (dz, dc pixels; dW [K, Dz, Dc]);
 * with same, z is c and dz holds both paths (dc unused). gates counts the
 * hinge terms inside the margin (to spot a finite-difference step across a
 * kink). */
static double ref_loss(const rcase *rc, const rgeo *gz, const rgeo *gc, const double *z,
                       const double *c, const double *W, double *dz, double *dc, double *dW,
                       int64_t *gates)
{
    const int64_t Dz = gz->C * gz->G, Dc = gc->C * gc->G, K = rc->K;
    int32_t cb[64], ct[64];
    int64_t N = 0;
    double loss = 0.0;
    double *zp, *cp, *dzp, *dcp, *s, *gs;

    for (int32_t b = 0; b < gz->B; b++) {
        int32_t len = rc->zlen[b] < rc->clen[b] ? rc->zlen[b] : rc->clen[b];
        for (int32_t t = 0; t + K < len; t++) {
            cb[N] = b;
            ct[N] = t;
            N++;
        }
    }
    zp = calloc((size_t)(gz->B * gz->T * Dz), sizeof *zp);
    cp = calloc((size_t)(gc->B * gc->T * Dc), sizeof *cp);
    dzp = calloc((size_t)(gz->B * gz->T * Dz), sizeof *dzp);
    dcp = calloc((size_t)(gc->B * gc->T * Dc), sizeof *dcp);
    s = calloc((size_t)(N * N + 1), sizeof *s);
    gs = calloc((size_t)(N * N + 1), sizeof *gs);
    for (int64_t b = 0; b < gz->B; b++)
        for (int64_t t = 0; t < gz->T; t++) {
            ref_pool(gz, z, b, t, zp + (b * gz->T + t) * Dz);
            ref_pool(gc, c, b, t, cp + (b * gc->T + t) * Dc);
        }
    *gates = 0;
    for (int64_t k = 1; k <= K && N > 0; k++) {
        const double *Wk = W + (k - 1) * Dz * Dc;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                const double *zj = zp + ((int64_t)cb[j] * gz->T + ct[j] + k) * Dz;
                const double *ci = cp + ((int64_t)cb[i] * gc->T + ct[i]) * Dc;
                double acc = 0.0;
                for (int64_t a = 0; a < Dz; a++)
                    for (int64_t e = 0; e < Dc; e++)
                        acc += zj[a] * Wk[a * Dc + e] * ci[e];
                s[i * N + j] = acc;
            }
        if (rc->infonce) {
            for (int64_t i = 0; i < N; i++) {
                double m = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < N; j++)
                    m = fmax(m, s[i * N + j]);
                for (int64_t j = 0; j < N; j++)
                    sum += exp(s[i * N + j] - m);
                loss += (m + log(sum) - s[i * N + i]) / (double)N / (double)K;
                for (int64_t j = 0; j < N; j++)
                    gs[i * N + j] = (exp(s[i * N + j] - m) / sum - (i == j)) / (double)N / (double)K;
            }
        } else {
            double np = (double)N, nn = (double)N * (double)(N - 1);
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < N; j++) {
                    double u = s[i * N + j];
                    int on = i == j ? u < 1.0 : u > -1.0;
                    *gates += on;
                    if (i == j) {
                        loss += 0.5 * fmax(0.0, 1.0 - u) / np / (double)K;
                        gs[i * N + j] = on ? -0.5 / np / (double)K : 0.0;
                    } else {
                        loss += 0.5 * fmax(0.0, 1.0 + u) / nn / (double)K;
                        gs[i * N + j] = on ? 0.5 / nn / (double)K : 0.0;
                    }
                }
        }
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                double g = gs[i * N + j];
                const double *zj = zp + ((int64_t)cb[j] * gz->T + ct[j] + k) * Dz;
                const double *ci = cp + ((int64_t)cb[i] * gc->T + ct[i]) * Dc;
                double *dzj = dzp + ((int64_t)cb[j] * gz->T + ct[j] + k) * Dz;
                double *dci = dcp + ((int64_t)cb[i] * gc->T + ct[i]) * Dc;
                if (g == 0.0)
                    continue;
                for (int64_t a = 0; a < Dz; a++)
                    for (int64_t e = 0; e < Dc; e++) {
                        dzj[a] += g * Wk[a * Dc + e] * ci[e];
                        dci[e] += g * zj[a] * Wk[a * Dc + e];
                        if (dW)
                            dW[(k - 1) * Dz * Dc + a * Dc + e] += g * zj[a] * ci[e];
                    }
            }
    }
    for (int64_t b = 0; b < gz->B; b++)
        for (int64_t t = 0; t < gz->T; t++) {
            if (dz)
                ref_unpool(gz, dz, b, t, dzp + (b * gz->T + t) * Dz);
            if (rc->detach)
                continue;   /* no c path */
            if (rc->same && dz)
                ref_unpool(gz, dz, b, t, dcp + (b * gc->T + t) * Dc);
            else if (dc)
                ref_unpool(gc, dc, b, t, dcp + (b * gc->T + t) * Dc);
        }
    free(zp);
    free(cp);
    free(dzp);
    free(dcp);
    free(s);
    free(gs);
    return loss;
}

/* Central differences of the reference's own loss at a few entries of x. */
static double ref_fd_check(const rcase *rc, const rgeo *gz, const rgeo *gc, double *z, double *c,
                           double *W, double *x, const double *grad, int64_t n, int64_t stride,
                           int *skipped)
{
    const double eps = 1e-6;
    double worst = 0.0, scale = 0.0;
    *skipped = 0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(grad[i]));
    for (int64_t i = 0; i < n; i += stride) {
        double keep = x[i], lp, lm;
        int64_t gp, gm;
        x[i] = keep + eps;
        lp = ref_loss(rc, gz, gc, z, c, W, NULL, NULL, NULL, &gp);
        x[i] = keep - eps;
        lm = ref_loss(rc, gz, gc, z, c, W, NULL, NULL, NULL, &gm);
        x[i] = keep;
        if (gp != gm) {   /* a hinge gate flipped inside the step */
            (*skipped)++;
            continue;
        }
        worst = fmax(worst, fabs((lp - lm) / (2 * eps) - grad[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

static double *to_double(const clapp_tensor *t)
{
    int64_t n = clapp_tensor_numel(t);
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = t->data[i];
    return d;
}

/* The engine's loss at the current values (fresh gradients discarded). */
static double engine_loss(clapp_loss_video *L, const vblock *z, const vblock *c, double *act)
{
    clapp_loss_stats st;
    assert_int_equal(clapp_loss_video_compute(L, &z->blk, &c->blk, NULL, NULL, &st), 0);
    *act = st.pos_active * 1e6 + st.neg_active;
    return st.loss;
}

/* Central differences of the engine's float loss at every stride-th entry. */
static double engine_fd_check(clapp_loss_video *L, const vblock *z, const vblock *c, float *x,
                              const float *grad, int64_t n, int64_t stride)
{
    const float eps = 1e-2f;
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)grad[i]));
    for (int64_t i = 0; i < n; i += stride) {
        float keep = x[i];
        double lp, lm, ap, am;
        x[i] = keep + eps;
        lp = engine_loss(L, z, c, &ap);
        x[i] = keep - eps;
        lm = engine_loss(L, z, c, &am);
        x[i] = keep;
        if (ap != am)
            continue;   /* a hinge gate flipped */
        worst = fmax(worst, fabs((lp - lm) / (2.0 * (double)eps) - (double)grad[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

typedef struct pcase {
    const char     *label;
    int64_t         pool;
    clapp_loss_mode mode;
    int             same, detach;
    int64_t         cz, cc, H, W;
} pcase;

static void run_case(const pcase *pc)
{
    static const int32_t zlen[3] = {7, 6, 3}, clen[3] = {7, 5, 7};
    const int32_t B = 3, T = 7, K = 2;
    trng r = {0x5EEDull + (uint64_t)pc->pool * 7919u + (uint64_t)pc->mode * 31u};
    vblock z, c;
    const vblock *cv;
    clapp_loss_params p;
    clapp_loss_video *L = NULL;
    const clapp_named_tensor *nt;
    int32_t nn;
    clapp_loss_stats st;
    clapp_tensor gz, gc;
    rcase rc = {pc->pool, K, pc->mode == CLAPP_LOSS_INFONCE, pc->same, pc->detach, zlen,
                pc->same ? zlen : clen};
    rgeo gzg, gcg;
    double *zd, *cd, *Wd, *dz, *dc, *dW, lref;
    double e_loss, e_dz, e_dc = 0.0, e_dW, fd_z = 0.0, fd_c = 0.0, fd_W = 0.0, efd_z, efd_W;
    int64_t gates, nW;
    int sk_z = 0, sk_c = 0, sk_W = 0;

    vb_init(&z, B, pc->cz, T, pc->H, pc->W, zlen);
    vb_fill(&z, 0.6, &r);
    if (!pc->same) {
        vb_init(&c, B, pc->cc, T, pc->H, pc->W, clen);
        vb_fill(&c, 0.6, &r);
    }
    cv = pc->same ? &z : &c;
    clapp_loss_default_params(&p);
    p.mode = pc->mode;
    p.steps = K;
    p.grad_target = !pc->same;
    p.detach_context = pc->detach;
    assert_int_equal(clapp_loss_video_create_pool(&L, &p, pc->pool, pc->cz, pc->same ? pc->cz : pc->cc,
                                                  pc->H, pc->W, B, T, NULL, "pool"), 0);
    assert_int_equal(clapp_loss_video_tensors(L, &nt, &nn), 0);
    gzg = rgeo_make(&z.blk.x, pc->pool);
    gcg = rgeo_make(&cv->blk.x, pc->pool);
    assert_int_equal(nt[0].value->shape[1], pc->cz * gzg.G);
    assert_int_equal(nt[0].value->shape[2], cv->blk.x.shape[1] * gcg.G);
    nW = clapp_tensor_numel(nt[0].value);
    for (int64_t i = 0; i < nW; i++)   /* larger than the init, so scores reach the margins */
        nt[0].value->data[i] = (float)(0.8 * tnormal(&r) / sqrt((double)nt[0].value->shape[2]));

    assert_int_equal(clapp_tensor_alloc_shape(&gz, 5, z.blk.x.shape), 0);
    assert_int_equal(clapp_tensor_alloc_shape(&gc, 5, cv->blk.x.shape), 0);
    clapp_tensor_zero(nt[0].grad);
    assert_int_equal(clapp_loss_video_compute(L, &z.blk, &cv->blk, &gz, pc->same ? &gz : &gc, &st),
                     0);

    zd = to_double(&z.blk.x);
    cd = pc->same ? zd : to_double(&cv->blk.x);
    Wd = to_double(nt[0].value);
    dz = calloc((size_t)clapp_tensor_numel(&z.blk.x), sizeof *dz);
    dc = calloc((size_t)clapp_tensor_numel(&cv->blk.x), sizeof *dc);
    dW = calloc((size_t)nW, sizeof *dW);
    lref = ref_loss(&rc, &gzg, &gcg, zd, cd, Wd, dz, pc->same ? NULL : dc, dW, &gates);

    e_loss = fabs(st.loss - lref) / fabs(lref);
    e_dz = rel_err(gz.data, dz, clapp_tensor_numel(&gz));
    if (!pc->same && !pc->detach)
        e_dc = rel_err(gc.data, dc, clapp_tensor_numel(&gc));
    e_dW = rel_err(nt[0].grad->data, dW, nW);
    if (!pc->detach) {
        fd_z = ref_fd_check(&rc, &gzg, &gcg, zd, cd, Wd, zd, dz, clapp_tensor_numel(&gz), 7, &sk_z);
        if (!pc->same)
            fd_c = ref_fd_check(&rc, &gzg, &gcg, zd, cd, Wd, cd, dc, clapp_tensor_numel(&gc), 7,
                                &sk_c);
        fd_W = ref_fd_check(&rc, &gzg, &gcg, zd, cd, Wd, Wd, dW, nW, nW / 40 + 1, &sk_W);
    }
    {
        /* the engine against its own finite differences (float: coarse) */
        float *gzc = malloc((size_t)clapp_tensor_numel(&gz) * sizeof *gzc);
        float *gWc = malloc((size_t)nW * sizeof *gWc);
        memcpy(gzc, gz.data, (size_t)clapp_tensor_numel(&gz) * sizeof *gzc);
        memcpy(gWc, nt[0].grad->data, (size_t)nW * sizeof *gWc);
        efd_z = pc->detach ? 0.0 : engine_fd_check(L, &z, cv, z.blk.x.data, gzc,
                                                   clapp_tensor_numel(&gz), 11);
        efd_W = engine_fd_check(L, &z, cv, nt[0].value->data, gWc, nW, nW / 30 + 1);
        free(gzc);
        free(gWc);
    }
    printf("  %-26s G=%lld N*K=%lld loss %.9f ref %.9f (rel %.1e) | engine vs ref: dz %.1e "
           "dc %.1e dW %.1e | ref FD: z %.1e c %.1e W %.1e (kinks skipped %d) | engine FD: z %.1e "
           "W %.1e\n", pc->label, (long long)gzg.G, (long long)st.pairs, st.loss, lref, e_loss,
           e_dz, e_dc, e_dW, fd_z, fd_c, fd_W, sk_z + sk_c + sk_W, efd_z, efd_W);
    assert_true(st.pairs > 0);
    assert_true(e_loss <= 1e-5);
    assert_true(e_dz <= 1e-5);
    assert_true(e_dc <= 1e-5);
    assert_true(e_dW <= 1e-5);
    assert_true(fd_z <= 1e-6 && fd_c <= 1e-6 && fd_W <= 1e-6);
    assert_true(efd_z <= 2e-2 && efd_W <= 2e-2);
    if (pc->detach && !pc->same) {
        for (int64_t i = 0; i < clapp_tensor_numel(&gc); i++)
            assert_true(gc.data[i] == 0.0f);
    }
    clapp_loss_video_destroy(L);
    free(zd);
    if (!pc->same) {
        free(cd);
        clapp_tensor_free(&c.blk.x);
    }
    free(Wd);
    free(dz);
    free(dc);
    free(dW);
    clapp_tensor_free(&gz);
    clapp_tensor_free(&gc);
    clapp_tensor_free(&z.blk.x);
}

static void test_reference(void **state)
{
    (void)state;
    static const pcase cases[] = {
        {"hinge pool=2, c == z", 2, CLAPP_LOSS_CLAPP_S, 1, 0, 3, 3, 5, 4},
        {"infonce pool=2, c == z", 2, CLAPP_LOSS_INFONCE, 1, 0, 3, 3, 5, 4},
        {"hinge pool=frame", CLAPP_LOSS_VIDEO_POOL_FRAME, CLAPP_LOSS_CLAPP_S, 1, 0, 4, 4, 5, 4},
        {"hinge pool=1 (no pooling)", 1, CLAPP_LOSS_CLAPP_S, 1, 0, 2, 2, 3, 2},
        {"hinge pool=3, separate", 3, CLAPP_LOSS_CLAPP_S, 0, 0, 3, 2, 5, 4},
        {"infonce pool=3, separate", 3, CLAPP_LOSS_INFONCE, 0, 0, 3, 2, 5, 4},
        {"hinge pool=2, detach", 2, CLAPP_LOSS_CLAPP_S, 1, 1, 3, 3, 5, 4},
        {"hinge pool=2, sep, detach", 2, CLAPP_LOSS_HINGE_CPC, 0, 1, 3, 2, 5, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* ---- 2. pool=1 with a block-diagonal W is the shared form -------------------- */

static void test_blockdiag_equals_shared(void **state)
{
    (void)state;
    const int32_t lens[3] = {8, 7, 8}, clens[3] = {8, 8, 6};
    const int64_t Cz = 3, Cc = 2, H = 3, Wd = 4, G = H * Wd, K = 3;
    trng r = {424242ull};
    vblock z, c;
    clapp_loss_params p;
    clapp_loss_video *Ls = NULL, *Lf = NULL;
    const clapp_named_tensor *ns, *nf;
    int32_t n;
    clapp_loss_stats sts, stf;
    clapp_tensor gzs, gcs, gzf, gcf;
    double e_dz, e_dc, e_dW = 0.0, m_dW = 0.0;

    for (int same = 1; same >= 0; same--) {
        const vblock *cv;
        vb_init(&z, 3, Cz, 8, H, Wd, lens);
        vb_fill(&z, 0.7, &r);
        if (!same) {
            vb_init(&c, 3, Cc, 8, H, Wd, clens);
            vb_fill(&c, 0.7, &r);
        }
        cv = same ? &z : &c;
        clapp_loss_default_params(&p);
        p.steps = (int32_t)K;
        p.grad_target = 1;
        const int64_t cc = cv->blk.x.shape[1];
        assert_int_equal(clapp_loss_video_create(&Ls, &p, Cz, cc, H, Wd, 3, 8, NULL, "s"), 0);
        assert_int_equal(clapp_loss_video_create_pool(&Lf, &p, 1, Cz, cc, H, Wd, 3, 8, NULL, "f"),
                         0);
        assert_int_equal(clapp_loss_video_tensors(Ls, &ns, &n), 0);
        assert_int_equal(clapp_loss_video_tensors(Lf, &nf, &n), 0);
        assert_int_equal(nf[0].value->shape[1], Cz * G);
        assert_int_equal(nf[0].value->shape[2], cc * G);
        /* W_full[(a G + g), (e G + h)] = W_shared[a, e] [g == h] */
        clapp_tensor_zero(nf[0].value);
        for (int64_t k = 0; k < K; k++)
            for (int64_t a = 0; a < Cz; a++)
                for (int64_t e = 0; e < cc; e++) {
                    float w = ns[0].value->data[(k * Cz + a) * cc + e] *= 1.7f;
                    for (int64_t g = 0; g < G; g++)
                        nf[0].value->data[(k * Cz * G + a * G + g) * cc * G + e * G + g] = w;
                }
        assert_int_equal(clapp_tensor_alloc_shape(&gzs, 5, z.blk.x.shape), 0);
        assert_int_equal(clapp_tensor_alloc_shape(&gzf, 5, z.blk.x.shape), 0);
        assert_int_equal(clapp_tensor_alloc_shape(&gcs, 5, cv->blk.x.shape), 0);
        assert_int_equal(clapp_tensor_alloc_shape(&gcf, 5, cv->blk.x.shape), 0);
        assert_int_equal(clapp_loss_video_compute(Ls, &z.blk, &cv->blk, &gzs, same ? &gzs : &gcs,
                                                  &sts), 0);
        assert_int_equal(clapp_loss_video_compute(Lf, &z.blk, &cv->blk, &gzf, same ? &gzf : &gcf,
                                                  &stf), 0);
        {
            int64_t nz = clapp_tensor_numel(&gzs), nc = clapp_tensor_numel(&gcs);
            double *ref = malloc((size_t)(nz > nc ? nz : nc) * sizeof *ref);
            for (int64_t i = 0; i < nz; i++)
                ref[i] = gzs.data[i];
            e_dz = rel_err(gzf.data, ref, nz);
            for (int64_t i = 0; i < nc; i++)
                ref[i] = gcs.data[i];
            e_dc = same ? 0.0 : rel_err(gcf.data, ref, nc);
            free(ref);
        }
        /* the shared W's gradient is the full gradient summed over its diagonal */
        for (int64_t k = 0; k < K; k++)
            for (int64_t a = 0; a < Cz; a++)
                for (int64_t e = 0; e < cc; e++) {
                    double sum = 0.0, want = ns[0].grad->data[(k * Cz + a) * cc + e];
                    for (int64_t g = 0; g < G; g++)
                        sum += nf[0].grad->data[(k * Cz * G + a * G + g) * cc * G + e * G + g];
                    e_dW = fmax(e_dW, fabs(sum - want));
                    m_dW = fmax(m_dW, fabs(want));
                }
        printf("  pool=1, W = W_shared (x) I_%lld, %s: loss %.9f shared %.9f; rel dz %.1e dc %.1e "
               "dW (diagonal sum) %.1e; hinge active pos %.3f/%.3f neg %.3f/%.3f\n", (long long)G,
               same ? "c == z" : "separate", stf.loss, sts.loss, e_dz, e_dc, e_dW / m_dW,
               stf.pos_active, sts.pos_active, stf.neg_active, sts.neg_active);
        assert_true(fabs(stf.loss - sts.loss) <= 1e-5 * fabs(sts.loss));
        assert_true(stf.pairs == sts.pairs);
        assert_true(e_dz <= 1e-5 && e_dc <= 1e-5 && e_dW <= 1e-5 * m_dW);
        clapp_loss_video_destroy(Ls);
        clapp_loss_video_destroy(Lf);
        Ls = Lf = NULL;
        clapp_tensor_free(&gzs);
        clapp_tensor_free(&gzf);
        clapp_tensor_free(&gcs);
        clapp_tensor_free(&gcf);
        clapp_tensor_free(&z.blk.x);
        if (!same)
            clapp_tensor_free(&c.blk.x);
    }
}

/* ---- 3. refusals and the graph ----------------------------------------------- */

static void test_refusals(void **state)
{
    (void)state;
    clapp_loss_params p;
    clapp_loss_video *L = NULL;
    tu_log log;
    clapp_host host;
    char why[400];
    int64_t pool;

    tu_host_init(&host, &log);
    clapp_loss_default_params(&p);
    p.steps = 3;
    /* parsing */
    assert_int_equal(clapp_loss_video_pool_check("shared", 3, 4, 4, 8, 8, &pool, why, sizeof why), 0);
    assert_int_equal(pool, CLAPP_LOSS_VIDEO_POOL_SHARED);
    assert_int_equal(clapp_loss_video_pool_check("", 3, 4, 4, 8, 8, &pool, why, sizeof why), 0);
    assert_int_equal(pool, CLAPP_LOSS_VIDEO_POOL_SHARED);
    assert_int_equal(clapp_loss_video_pool_check("frame", 3, 4, 4, 8, 8, &pool, why, sizeof why), 0);
    assert_int_equal(pool, CLAPP_LOSS_VIDEO_POOL_FRAME);
    assert_int_equal(clapp_loss_video_pool_check("0", 3, 4, 4, 8, 8, &pool, why, sizeof why), 0);
    assert_int_equal(pool, CLAPP_LOSS_VIDEO_POOL_FRAME);
    assert_int_equal(clapp_loss_video_pool_check("4", 3, 4, 4, 8, 8, &pool, why, sizeof why), 0);
    assert_int_equal(pool, 4);
    assert_int_equal(clapp_loss_video_pool_check("2x2", 3, 4, 4, 8, 8, &pool, why, sizeof why),
                     CLAPP_E_INVAL);
    assert_non_null(strstr(why, "pool=2x2"));
    assert_int_equal(clapp_loss_video_pool_check("-3", 3, 4, 4, 8, 8, &pool, why, sizeof why),
                     CLAPP_E_INVAL);

    /* conv1 of video_clapp.pipe (96 channels, 14x14): pool=2 (G = 49) fits just under the
     * limit, pool=1 (G = 196) does not */
    assert_int_equal(clapp_loss_video_pool_check("2", 3, 96, 96, 14, 14, &pool, why, sizeof why), 0);
    assert_int_equal(clapp_loss_video_pool_check("1", 3, 96, 96, 14, 14, &pool, why, sizeof why),
                     CLAPP_E_INVAL);
    printf("  refusal: %s\n", why);
    assert_non_null(strstr(why, "pool=1"));
    assert_non_null(strstr(why, "3 x 18816 x 18816"));
    assert_non_null(strstr(why, "67108864 floats"));
    /* create refuses before allocating anything */
    assert_int_equal(clapp_loss_video_create_pool(&L, &p, 1, 512, 512, 64, 64, 8, 54, &host, "big"),
                     CLAPP_E_INVAL);
    assert_null(L);
    assert_int_equal(tu_log_count(&log, "pool=1 on 64x64 maps"), 1);
    assert_int_equal(clapp_loss_video_create_pool(&L, &p, -2, 4, 4, 8, 8, 8, 54, &host, "bad"),
                     CLAPP_E_INVAL);
    assert_null(L);
    tu_log_free(&log);
}

typedef struct grun {
    clapp_host          host;
    tu_log              log;
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

static void test_graph(void **state)
{
    (void)state;
    const clapp_stream_info src = {5, {2, 3, 7, 7, 8, 0}, 10.0};
    const clapp_stream_info src3 = {3, {2, 3, 7, 0, 0, 0}, 10.0};
    const int32_t lens[2] = {7, 6};
    trng r = {777ull};
    vblock in;
    grun g;
    clapp_node *conv, *loss;
    clapp_loss_params p;
    clapp_loss_video *L = NULL;
    const clapp_named_tensor *nt;
    int32_t n;
    clapp_loss_stats st;
    int64_t oh, ow;

    /* pool=2 on the conv's H x W maps: ceil(H/2) ceil(W/2) windows, W [2, 4 G, 4 G] */
    assert_int_equal(grun_open(&g, "source kind=video ! conv3d name=c out=4 kt=1 kh=3 kw=3 "
                                   "! clapp name=l steps=2 pool=2", &src), 0);
    conv = &g.g.nodes[1];
    loss = &g.g.nodes[2];
    oh = conv->out_info.shape[3];
    ow = conv->out_info.shape[4];
    assert_non_null(node_loss_video(loss));
    assert_int_equal(loss->tensors[0].value->shape[1], 4 * ((oh + 1) / 2) * ((ow + 1) / 2));
    assert_int_equal(loss->tensors[0].value->shape[2], 4 * ((oh + 1) / 2) * ((ow + 1) / 2));
    vb_init(&in, 2, 3, 7, 7, 8, lens);
    vb_fill(&in, 1.0, &r);
    for (int b = 0; b < 2; b++)
        in.lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
    in.blk.rate = 10.0;
    /* the loss of this block, directly, with the graph's initial W */
    clapp_loss_default_params(&p);
    p.steps = 2;
    assert_int_equal(clapp_loss_video_create_pool(&L, &p, 2, 4, 4, oh, ow, 2, 7, NULL, "d"), 0);
    assert_int_equal(clapp_loss_video_tensors(L, &nt, &n), 0);
    memcpy(nt[0].value->data, loss->tensors[0].value->data,
           sizeof(float) * (size_t)clapp_tensor_numel(nt[0].value));
    assert_int_equal(clapp_graph_process(&g.g, &in.blk, g.err, sizeof g.err), 0);
    assert_int_equal(clapp_loss_video_compute(L, &conv->out, &conv->out, NULL, NULL, &st), 0);
    printf("  graph pool=2: loss %.6f (direct %.6f), pairs %lld\n", loss->last.loss, st.loss,
           (long long)loss->last.pairs);
    assert_true(fabs(loss->last.loss - st.loss) <= 1e-6 * fabs(st.loss));
    clapp_loss_video_destroy(L);
    grun_close(&g);

    /* pool=frame: W [2, 4, 4]; pool=shared (the default) keeps [2, 4, 4] too */
    assert_int_equal(grun_open(&g, "source kind=video ! conv3d name=c out=4 kt=1 kh=3 kw=3 "
                                   "! clapp name=l steps=2 pool=frame", &src), 0);
    assert_int_equal(g.g.nodes[2].tensors[0].value->shape[1], 4);
    grun_close(&g);

    /* too large a W: refused, naming the element, pool= and the size */
    assert_true(grun_open(&g, "source kind=video ! conv3d name=c out=512 kt=1 kh=1 kw=1 "
                              "! clapp name=l steps=3 pool=1", &src) < 0);
    printf("  graph refusal: %s\n", g.err);
    assert_non_null(strstr(g.err, "clapp 'l'"));
    assert_non_null(strstr(g.err, "pool=1"));
    assert_non_null(strstr(g.err, "floats"));
    grun_close(&g);
    /* pool= on a flat stream */
    assert_true(grun_open(&g, "source ! conv1d name=c out=4 kernel=3 ! clapp name=l pool=2",
                          &src3) < 0);
    assert_non_null(strstr(g.err, "pool=2 applies to the video form only"));
    grun_close(&g);
    assert_true(grun_open(&g, "source kind=video ! conv3d name=c out=4 kt=1 kh=3 kw=3 "
                              "! clapp name=l pool=two", &src) < 0);
    assert_non_null(strstr(g.err, "pool=two"));
    grun_close(&g);
    clapp_tensor_free(&in.blk.x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_blockdiag_equals_shared),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_graph),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
