/* clapp core — the video form of the contrastive loss (see loss_video.h).
 *
 * Layout: the valid steps of z (lanes with at least one context) are
 * transposed once per call into Zx [rows, H*W, Cz] and the contexts into
 * Cx [N, H*W, Cc]. Per step k:
 *   Pred = Cx W_k^T          [N*HW x Cc] x [Cc x Cz]   (W_k c at every position)
 *   Zk   = gathered targets  [N, HW*Cz]                (row i = target of context i)
 *   S    = Pred Zk^T         [N x HW*Cz] x [HW*Cz x N]
 *   G    = dL/dS (hinge gates or softmax), overwriting S
 *   dPred = G Zk,  dZk = G^T Pred (into Zk's buffer, then added to dZx rows),
 *   dW_k += dPred^T Cx,  dCx += dPred W_k.
 * Finally dZx / dCx are transposed back and added into the gradient tensors
 * at valid steps only. Everything is allocated in create.
 * The pooled form (pool=P or frame) fills the rows with window means
 * [Cz*G] / [Cc*G] instead (one position per row, so the same GEMMs apply a
 * full W_k) and spreads the row gradients back over each window's pixels.
 */
#include "learning/loss_video.h"
#include "clapp/plugin_util.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clapp_loss_video {
    clapp_loss_params p;
    int64_t           cz, cc, hw, dz, dc, tcap;
    int32_t           B, K;
    const clapp_host *host;
    char              name[64];

    /* Row geometry. Shared form: npos = H*W positions of rz = Cz / rc = Cc
     * channels. Pooled: npos = 1 "position" of rz = Cz*G / rc = Cc*G. */
    int64_t pool;                  /* CLAPP_LOSS_VIDEO_POOL_* or P */
    int64_t h, w, ph, pw, gh, gw, G;
    int64_t npos, rz, rc;
    float  *inv;                   /* [G] 1 / pixels of each window */

    clapp_tensor       W, Wg;      /* [K, rz, rc] */
    clapp_named_tensor nt[1];

    int32_t *len, *nctx;           /* [B] */
    int64_t *zoff, *coff;          /* [B + 1] first Zx row / Cx row of a lane */
    float   *Zx, *dZx;             /* [B*tcap, dz] */
    float   *Cx, *dCx;             /* [B*tcap, dc] */
    float   *Pred, *dPred, *Zk;    /* [B*tcap, dz] */
    float   *S;                    /* [(B*tcap)^2] scores, then dL/dS */
    double   flops;
};

#define VERR(rc_, ...)                                                      \
    do {                                                                    \
        clapp_host_log(host, CLAPP_LOG_ERROR, name ? name : "clapp",        \
                       "core/learning/loss_video.c: " __VA_ARGS__);                 \
        rc = (rc_);                                                         \
        goto fail;                                                          \
    } while (0)

static void *xalloc(size_t n) { return clapp_aligned_calloc((int64_t)n, 1); }

/* splitmix64 stream: W init only (the video form draws nothing per call). */
static double init_unit(uint64_t *x)
{
    return clapp_uniform53(x);
}

/* Windows per axis: ceil(n / p). */
static int64_t windows(int64_t n, int64_t p) { return (n + p - 1) / p; }

int clapp_loss_video_pool_check(const char *text, int32_t steps, int64_t cz, int64_t cc,
                                int64_t h, int64_t w, int64_t *pool, char *why, size_t whylen)
{
    int64_t P;
    if (!text || !*text || !strcmp(text, "shared")) {
        P = CLAPP_LOSS_VIDEO_POOL_SHARED;
    } else if (!strcmp(text, "frame")) {
        P = CLAPP_LOSS_VIDEO_POOL_FRAME;
    } else {
        char *end = NULL;
        long long v = strtoll(text, &end, 10);
        if (!end || *end || end == text || v < 0 || v > 1000000) {
            snprintf(why, whylen, "pool=%s: expected shared, frame, or a window size P >= 0 "
                     "(0 = frame)", text);
            return CLAPP_E_INVAL;
        }
        P = (int64_t)v;
    }
    *pool = P;
    if (P != CLAPP_LOSS_VIDEO_POOL_SHARED && h > 0 && w > 0) {
        int64_t G = P == CLAPP_LOSS_VIDEO_POOL_FRAME ? 1 : windows(h, P) * windows(w, P);
        double nw = (double)steps * (double)(cz * G) * (double)(cc * G);
        if (nw > (double)CLAPP_LOSS_VIDEO_MAX_W_FLOATS) {
            snprintf(why, whylen, "pool=%s on %lldx%lld maps makes %lld windows, so W is %d x "
                     "%lld x %lld = %.4g floats (%.1f MiB; gradient and Adam moments 4x that), "
                     "over the limit of %lld floats (%lld MiB): choose a larger pool or pool=frame",
                     text, (long long)h, (long long)w, (long long)G, (int)steps,
                     (long long)(cz * G), (long long)(cc * G), nw, nw * 4.0 / 1048576.0,
                     (long long)CLAPP_LOSS_VIDEO_MAX_W_FLOATS,
                     (long long)(CLAPP_LOSS_VIDEO_MAX_W_FLOATS * 4 / 1048576));
            return CLAPP_E_INVAL;
        }
    }
    return CLAPP_OK;
}

int clapp_loss_video_create(clapp_loss_video **out, const clapp_loss_params *p, int64_t cz,
                            int64_t cc, int64_t h, int64_t w, int32_t lanes, int64_t t_cap,
                            const clapp_host *host, const char *name)
{
    return clapp_loss_video_create_pool(out, p, CLAPP_LOSS_VIDEO_POOL_SHARED, cz, cc, h, w, lanes,
                                        t_cap, host, name);
}

int clapp_loss_video_create_pool(clapp_loss_video **out, const clapp_loss_params *p,
                                 int64_t pool, int64_t cz, int64_t cc, int64_t h, int64_t w,
                                 int32_t lanes, int64_t t_cap, const clapp_host *host,
                                 const char *name)
{
    clapp_loss_video *L = NULL;
    int rc = CLAPP_OK;
    int64_t rows, shape[3];
    uint64_t s;
    char why[320], ptext[32];

    if (!out || !p)
        return CLAPP_E_INVAL;
    *out = NULL;
    if (p->mode == CLAPP_LOSS_CLAPP)
        VERR(CLAPP_E_UNSUPPORTED, "mode=clapp (pos or neg per lane) has no video form; the "
             "paper's video CLAPP is synchronous: use mode=clapp-s");
    if (p->mode != CLAPP_LOSS_CLAPP_S && p->mode != CLAPP_LOSS_HINGE_CPC &&
        p->mode != CLAPP_LOSS_INFONCE)
        VERR(CLAPP_E_INVAL, "unknown mode %d", (int)p->mode);
    if (p->retro)
        VERR(CLAPP_E_UNSUPPORTED, "retro=true has no video form (symmetric W only)");
    if (p->steps < 1)
        VERR(CLAPP_E_INVAL, "steps=%d must be >= 1", (int)p->steps);
    if (cz < 1 || cc < 1 || h < 1 || w < 1 || lanes < 1 || t_cap < 1)
        VERR(CLAPP_E_SHAPE, "bad sizes cz=%lld cc=%lld h=%lld w=%lld lanes=%d t_cap=%lld",
             (long long)cz, (long long)cc, (long long)h, (long long)w, (int)lanes,
             (long long)t_cap);
    if (pool < CLAPP_LOSS_VIDEO_POOL_SHARED)
        VERR(CLAPP_E_INVAL, "pool=%lld must be shared (-1), frame (0) or a window size >= 1",
             (long long)pool);
    if (pool == CLAPP_LOSS_VIDEO_POOL_FRAME)
        snprintf(ptext, sizeof ptext, "frame");
    else
        snprintf(ptext, sizeof ptext, "%lld", (long long)pool);
    if (pool != CLAPP_LOSS_VIDEO_POOL_SHARED) {
        int64_t dummy;
        if (clapp_loss_video_pool_check(ptext, p->steps, cz, cc, h, w, &dummy, why, sizeof why) < 0)
            VERR(CLAPP_E_INVAL, "%s", why);
    }

    L = calloc(1, sizeof *L);
    if (!L)
        VERR(CLAPP_E_NOMEM, "out of memory");
    L->p = *p;
    L->cz = cz;
    L->cc = cc;
    L->hw = h * w;
    L->h = h;
    L->w = w;
    L->pool = pool;
    if (pool == CLAPP_LOSS_VIDEO_POOL_SHARED) {
        L->npos = L->hw;
        L->rz = cz;
        L->rc = cc;
    } else {
        L->ph = pool == CLAPP_LOSS_VIDEO_POOL_FRAME ? h : pool;
        L->pw = pool == CLAPP_LOSS_VIDEO_POOL_FRAME ? w : pool;
        L->gh = windows(h, L->ph);
        L->gw = windows(w, L->pw);
        L->G = L->gh * L->gw;
        L->npos = 1;
        L->rz = cz * L->G;
        L->rc = cc * L->G;
        L->inv = calloc((size_t)L->G, sizeof *L->inv);
        if (!L->inv)
            VERR(CLAPP_E_NOMEM, "out of memory");
        for (int64_t gy = 0; gy < L->gh; gy++)
            for (int64_t gx = 0; gx < L->gw; gx++) {
                int64_t ny = (gy + 1) * L->ph < h ? L->ph : h - gy * L->ph;
                int64_t nx = (gx + 1) * L->pw < w ? L->pw : w - gx * L->pw;
                L->inv[gy * L->gw + gx] = (float)(1.0 / (double)(ny * nx));
            }
    }
    L->dz = L->npos * L->rz;
    L->dc = L->npos * L->rc;
    L->tcap = t_cap;
    L->B = lanes;
    L->K = p->steps;
    L->host = host;
    snprintf(L->name, sizeof L->name, "%s", name ? name : "clapp");

    shape[0] = L->K;
    shape[1] = L->rz;
    shape[2] = L->rc;
    if (clapp_tensor_alloc_shape(&L->W, 3, shape) < 0 ||
        clapp_tensor_alloc_shape(&L->Wg, 3, shape) < 0)
        VERR(CLAPP_E_NOMEM, "out of memory for W [%d, %lld, %lld]", (int)L->K, (long long)L->rz,
             (long long)L->rc);
    s = p->seed;
    for (int64_t i = 0, n = clapp_tensor_numel(&L->W); i < n; i++)
        L->W.data[i] = (float)((2.0 * init_unit(&s) - 1.0) / sqrt((double)L->rc));
    L->nt[0] = (clapp_named_tensor){"W", &L->W, &L->Wg};

    rows = (int64_t)lanes * t_cap;
    L->len = calloc((size_t)lanes, sizeof *L->len);
    L->nctx = calloc((size_t)lanes, sizeof *L->nctx);
    L->zoff = calloc((size_t)lanes + 1, sizeof *L->zoff);
    L->coff = calloc((size_t)lanes + 1, sizeof *L->coff);
    L->Zx = xalloc((size_t)(rows * L->dz) * sizeof(float));
    L->dZx = xalloc((size_t)(rows * L->dz) * sizeof(float));
    L->Cx = xalloc((size_t)(rows * L->dc) * sizeof(float));
    L->dCx = xalloc((size_t)(rows * L->dc) * sizeof(float));
    L->Pred = xalloc((size_t)(rows * L->dz) * sizeof(float));
    L->dPred = xalloc((size_t)(rows * L->dz) * sizeof(float));
    L->Zk = xalloc((size_t)(rows * L->dz) * sizeof(float));
    L->S = xalloc((size_t)(rows * rows) * sizeof(float));
    if (!L->len || !L->nctx || !L->zoff || !L->coff || !L->Zx || !L->dZx || !L->Cx || !L->dCx ||
        !L->Pred || !L->dPred || !L->Zk || !L->S)
        VERR(CLAPP_E_NOMEM, "out of memory for work buffers (%lld steps x %lld features)",
             (long long)rows, (long long)(L->dz > L->dc ? L->dz : L->dc));
    *out = L;
    return CLAPP_OK;
fail:
    clapp_loss_video_destroy(L);
    return rc;
}

void clapp_loss_video_destroy(clapp_loss_video *L)
{
    if (!L)
        return;
    clapp_tensor_free(&L->W);
    clapp_tensor_free(&L->Wg);
    free(L->inv);
    free(L->len);
    free(L->nctx);
    free(L->zoff);
    free(L->coff);
    free(L->Zx);
    free(L->dZx);
    free(L->Cx);
    free(L->dCx);
    free(L->Pred);
    free(L->dPred);
    free(L->Zk);
    free(L->S);
    free(L);
}

int clapp_loss_video_tensors(clapp_loss_video *L, const clapp_named_tensor **list, int32_t *count)
{
    if (!L || !list || !count)
        return CLAPP_E_INVAL;
    *list = L->nt;
    *count = 1;
    return CLAPP_OK;
}

double clapp_loss_video_last_flops(const clapp_loss_video *L) { return L ? L->flops : 0.0; }

/* [C, T, HW] of one lane, step t  ->  row [HW, C] (channels innermost). */
static void gather_step(float *restrict row, const float *restrict x, int64_t C, int64_t T,
                        int64_t hw, int64_t t)
{
    for (int64_t ch = 0; ch < C; ch++) {
        const float *src = x + (ch * T + t) * hw;
        for (int64_t q = 0; q < hw; q++)
            row[q * C + ch] = src[q];
    }
}

static void scatter_add_step(float *restrict x, const float *restrict row, int64_t C, int64_t T,
                             int64_t hw, int64_t t)
{
    for (int64_t ch = 0; ch < C; ch++) {
        float *dst = x + (ch * T + t) * hw;
        for (int64_t q = 0; q < hw; q++)
            dst[q] += row[q * C + ch];
    }
}

/* Pooled form: [C, T, H*W] step t -> row [C*G] of window means (channel-major). */
static void pool_step(const clapp_loss_video *L, float *restrict row, const float *restrict x,
                      int64_t C, int64_t T, int64_t t)
{
    memset(row, 0, (size_t)(C * L->G) * sizeof(float));
    for (int64_t ch = 0; ch < C; ch++) {
        const float *src = x + (ch * T + t) * L->hw;
        float *acc = row + ch * L->G;
        for (int64_t y = 0; y < L->h; y++) {
            float *ay = acc + (y / L->ph) * L->gw;
            for (int64_t xx = 0; xx < L->w; xx++)
                ay[xx / L->pw] += src[y * L->w + xx];
        }
        for (int64_t g = 0; g < L->G; g++)
            acc[g] *= L->inv[g];
    }
}

/* The adjoint of pool_step: every pixel gets its window's gradient / window size. */
static void unpool_add_step(const clapp_loss_video *L, float *restrict x, const float *restrict row,
                            int64_t C, int64_t T, int64_t t)
{
    for (int64_t ch = 0; ch < C; ch++) {
        float *dst = x + (ch * T + t) * L->hw;
        const float *gr = row + ch * L->G;
        for (int64_t y = 0; y < L->h; y++) {
            const int64_t g0 = (y / L->ph) * L->gw;
            for (int64_t xx = 0; xx < L->w; xx++) {
                const int64_t g = g0 + xx / L->pw;
                dst[y * L->w + xx] += gr[g] * L->inv[g];
            }
        }
    }
}

static void load_row(const clapp_loss_video *L, float *row, const float *x, int64_t C, int64_t T,
                     int64_t t)
{
    if (L->pool == CLAPP_LOSS_VIDEO_POOL_SHARED)
        gather_step(row, x, C, T, L->hw, t);
    else
        pool_step(L, row, x, C, T, t);
}

static void store_row(const clapp_loss_video *L, float *x, const float *row, int64_t C, int64_t T,
                      int64_t t)
{
    if (L->pool == CLAPP_LOSS_VIDEO_POOL_SHARED)
        scatter_add_step(x, row, C, T, L->hw, t);
    else
        unpool_add_step(L, x, row, C, T, t);
}

/* Loss of one N x N score matrix; overwrites S with dL_k/dS scaled by `scale`. */
static double step_loss(float *S, int64_t N, int infonce, double scale, int64_t *pos_act,
                        int64_t *neg_act)
{
    double loss = 0.0;
    if (infonce) {
        for (int64_t i = 0; i < N; i++) {
            float *r = S + i * N;
            double m = r[0], sum = 0.0, lse;
            for (int64_t j = 1; j < N; j++)
                if (r[j] > m)
                    m = r[j];
            for (int64_t j = 0; j < N; j++)
                sum += exp((double)r[j] - m);
            lse = m + log(sum);
            loss += lse - (double)r[i];
            for (int64_t j = 0; j < N; j++)
                r[j] = (float)(scale / (double)N * (exp((double)r[j] - lse) - (j == i ? 1.0 : 0.0)));
        }
        return loss / (double)N;
    }
    {
        double pos = 0.0, neg = 0.0;
        double gpos = -0.5 * scale / (double)N;
        double gneg = N > 1 ? 0.5 * scale / ((double)N * (double)(N - 1)) : 0.0;
        for (int64_t i = 0; i < N; i++) {
            float *r = S + i * N;
            for (int64_t j = 0; j < N; j++) {
                double u = r[j];
                if (j == i) {
                    /* strict gates: the kink gives 0 */
                    int on = u < 1.0;
                    pos += on ? 1.0 - u : 0.0;
                    *pos_act += on;
                    r[j] = on ? (float)gpos : 0.0f;
                } else {
                    int on = u > -1.0;
                    neg += on ? 1.0 + u : 0.0;
                    *neg_act += on;
                    r[j] = on ? (float)gneg : 0.0f;
                }
            }
        }
        loss = 0.5 * pos / (double)N;
        if (N > 1)
            loss += 0.5 * neg / ((double)N * (double)(N - 1));
        return loss;
    }
}

int clapp_loss_video_compute(clapp_loss_video *L, const clapp_block *z, const clapp_block *c,
                             clapp_tensor *grad_z, clapp_tensor *grad_c, clapp_loss_stats *st)
{
    const clapp_host *host = L ? L->host : NULL;
    const char *name = L ? L->name : NULL;
    int rc = CLAPP_OK, same, need_z, need_c, infonce;
    int64_t T, hw, N = 0, rows = 0, pos_act = 0, neg_act = 0;
    clapp_tensor *gz = NULL, *gc = NULL;
    double loss = 0.0;

    if (!L || !z || !c || !st)
        return CLAPP_E_INVAL;
    memset(st, 0, sizeof *st);
    L->flops = 0.0;
    if (z->x.ndim != 5 || c->x.ndim != 5 || !z->x.data || !c->x.data)
        VERR(CLAPP_E_SHAPE, "z and c must be [B, C, T, H, W] blocks with data");
    hw = z->x.shape[3] * z->x.shape[4];
    if (z->x.shape[1] != L->cz || c->x.shape[1] != L->cc || z->x.shape[3] != L->h ||
        z->x.shape[4] != L->w || c->x.shape[3] != L->h || c->x.shape[4] != L->w)
        VERR(CLAPP_E_SHAPE, "channels z=%lld c=%lld over %lld positions, created for z=%lld "
             "c=%lld over %lld", (long long)z->x.shape[1], (long long)c->x.shape[1],
             (long long)hw, (long long)L->cz, (long long)L->cc, (long long)L->hw);
    T = z->x.shape[2];
    if (z->x.shape[0] != c->x.shape[0] || c->x.shape[2] != T || z->lanes != z->x.shape[0] ||
        c->lanes != c->x.shape[0])
        VERR(CLAPP_E_SHAPE, "z [%lld lanes, T=%lld] and c [%lld, %lld] must share lanes and time",
             (long long)z->x.shape[0], (long long)T, (long long)c->x.shape[0],
             (long long)c->x.shape[2]);
    if (z->lanes > L->B || T > L->tcap)
        VERR(CLAPP_E_SHAPE, "block of %d lanes x %lld steps exceeds the capacity %d x %lld",
             (int)z->lanes, (long long)T, (int)L->B, (long long)L->tcap);

    same = (c == z || c->x.data == z->x.data) && L->cz == L->cc;
    if (same) {
        gz = grad_z ? grad_z : grad_c;
        gc = gz;
    } else {
        gz = L->p.grad_target ? grad_z : NULL;
        gc = grad_c;
    }
    if (L->p.detach_context)
        gc = NULL;
    if ((gz && clapp_tensor_numel(gz) != clapp_tensor_numel(&z->x)) ||
        (gc && clapp_tensor_numel(gc) != clapp_tensor_numel(&c->x)))
        VERR(CLAPP_E_SHAPE, "gradient tensors must have the shape of their block");
    need_z = gz != NULL;
    need_c = gc != NULL;
    infonce = L->p.mode == CLAPP_LOSS_INFONCE;

    /* Valid lanes, their contexts, and the transposed rows. */
    for (int32_t b = 0; b < z->lanes; b++) {
        int32_t lz = z->lane[b].len, lc = c->lane[b].len, len = lz < lc ? lz : lc;
        if (lz < 0 || lc < 0 || lz > T || lc > T)
            VERR(CLAPP_E_INVAL, "lane %d: len z=%d c=%d outside [0, %lld]", (int)b, (int)lz,
                 (int)lc, (long long)T);
        L->len[b] = len;
        L->nctx[b] = len > L->K ? len - L->K : 0;
        L->zoff[b] = rows;
        L->coff[b] = N;
        if (L->nctx[b] > 0)
            rows += len;
        N += L->nctx[b];
    }
    L->zoff[z->lanes] = rows;
    L->coff[z->lanes] = N;
    if (N == 0)
        return CLAPP_OK;

    for (int32_t b = 0; b < z->lanes; b++) {
        const float *zb = z->x.data + (int64_t)b * L->cz * T * hw;
        const float *cb = c->x.data + (int64_t)b * L->cc * T * hw;
        for (int64_t t = 0; L->nctx[b] > 0 && t < L->len[b]; t++)
            load_row(L, L->Zx + (L->zoff[b] + t) * L->dz, zb, L->cz, T, t);
        for (int64_t t = 0; t < L->nctx[b]; t++) {
            float *row = L->Cx + (L->coff[b] + t) * L->dc;
            if (same)
                memcpy(row, L->Zx + (L->zoff[b] + t) * L->dz, (size_t)L->dc * sizeof(float));
            else
                load_row(L, row, cb, L->cc, T, t);
        }
    }
    if (need_z)
        memset(L->dZx, 0, (size_t)(rows * L->dz) * sizeof(float));
    if (need_c)
        memset(L->dCx, 0, (size_t)(N * L->dc) * sizeof(float));

    for (int32_t kk = 0; kk < L->K; kk++) {
        const float *Wk = L->W.data + kk * L->rz * L->rc;
        float *dWk = L->Wg.data + kk * L->rz * L->rc;
        const int NP = (int)(N * L->npos), n = (int)N, dz = (int)L->dz;
        const int czi = (int)L->rz, cci = (int)L->rc;

        /* Pred[(i,q), :] = (W_k c_i[:, q])^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, NP, czi, cci, 1.0f, L->Cx, cci, Wk,
                    cci, 0.0f, L->Pred, czi);
        for (int32_t b = 0; b < z->lanes; b++)
            if (L->nctx[b] > 0)
                memcpy(L->Zk + L->coff[b] * L->dz, L->Zx + (L->zoff[b] + kk + 1) * L->dz,
                       (size_t)(L->nctx[b] * L->dz) * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, dz, 1.0f, L->Pred, dz, L->Zk,
                    dz, 0.0f, L->S, n);
        loss += step_loss(L->S, N, infonce, 1.0 / (double)L->K, &pos_act, &neg_act);
        L->flops += 2.0 * (double)NP * (double)czi * (double)cci + 2.0 * (double)n * n * dz;

        /* backward: S now holds dL/dS */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dz, n, 1.0f, L->S, n, L->Zk, dz,
                    0.0f, L->dPred, dz);
        L->flops += 2.0 * (double)n * n * dz;
        if (need_z) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dz, n, 1.0f, L->S, n, L->Pred,
                        dz, 0.0f, L->Zk, dz);
            L->flops += 2.0 * (double)n * n * dz;
            for (int32_t b = 0; b < z->lanes; b++) {
                float *dst = L->dZx + (L->zoff[b] + kk + 1) * L->dz;
                const float *src = L->Zk + L->coff[b] * L->dz;
                for (int64_t e = 0, ne = L->nctx[b] * L->dz; e < ne; e++)
                    dst[e] += src[e];
            }
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, czi, cci, NP, 1.0f, L->dPred, czi,
                    L->Cx, cci, 1.0f, dWk, cci);
        L->flops += 2.0 * (double)NP * (double)czi * (double)cci;
        if (need_c) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NP, cci, czi, 1.0f, L->dPred,
                        czi, Wk, cci, 1.0f, L->dCx, cci);
            L->flops += 2.0 * (double)NP * (double)czi * (double)cci;
        }
    }

    for (int32_t b = 0; b < z->lanes; b++) {
        if (need_z)
            for (int64_t t = 0; L->nctx[b] > 0 && t < L->len[b]; t++)
                store_row(L, gz->data + (int64_t)b * L->cz * T * hw,
                          L->dZx + (L->zoff[b] + t) * L->dz, L->cz, T, t);
        if (need_c)
            for (int64_t t = 0; t < L->nctx[b]; t++)
                store_row(L, gc->data + (int64_t)b * L->cc * T * hw,
                          L->dCx + (L->coff[b] + t) * L->dc, L->cc, T, t);
    }

    st->loss = loss / (double)L->K;
    st->pairs = N * L->K;
    if (!infonce) {
        st->pos_active = (double)pos_act / (double)(N * L->K);
        st->neg_active = N > 1 ? (double)neg_act / ((double)N * (double)(N - 1) * L->K) : 0.0;
    }
    return CLAPP_OK;
fail:
    return rc;
}
