/* clapp core — the contrastive loss element (docs/ALGORITHMS.md §1, §2, §4.3, §6.3).
 *
 * One call works on one block. Both halves (pred, and retro when enabled)
 * have the same shape: u = z^T A_k c with A_k = W_k (pred) or W_retro_k^T
 * (retro). For every context c^t inside the positive window the predictions
 * A_k c^t of all K steps are computed by GEMM into PT [ns, K*Dz] (row s =
 * context s, one contiguous Dz run per k), so every score is one contiguous
 * dot product with a gathered z row. The backward mirrors it: dPT[s, k] =
 * sum over the terms of that context of dL/du * z, then dA = dPT^T S and
 * dS = dPT A as GEMMs, and dz rows get dL/du * PT[s, k].
 *
 * Work layout: z (all valid steps of all lanes, the negative pool) and the
 * contexts are transposed to time-major rows [rows, D]; gradients are
 * accumulated there and added back into the [B, C, T, (H, W)] tensors at
 * valid steps only. Everything is allocated in create.
 *
 * Random draws (own xoshiro256** state, seeded from params.seed), in order
 * per call: the window start w0, then per half either the negatives (N
 * uniform pool indices per pair and step k by default; neg_draw=shared: per
 * context, the same for every k) or, in CLAPP mode, the lane pos/neg choices
 * and r(b) per step. GIM builds its permutations once but takes a different
 * slice of them for each k, so a context meets different negatives at each
 * step, as in the vision code: per_step is the reference. Only the z steps
 * these draws reference are gathered.
 */
#include "learning/loss.h"
#include "clapp/plugin_util.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clapp_loss {
    clapp_loss_params p;
    int64_t           dz, dc, tcap;
    int32_t           B, K, N;
    int64_t           nneg;        /* entries of neg[h] drawn by the last call */
    int64_t           weff;        /* window length used for capacities */
    const clapp_host *host;
    char              name[64];
    uint64_t          rng[4];

    clapp_tensor       W, Wg, Wr, Wrg;
    clapp_named_tensor nt[2];
    int32_t            n_nt;

    /* per call */
    int32_t  w0, lastB;
    double  *ubuf;                 /* [N] InfoNCE negative scores of one pair */
    int32_t *lo, *hi, *act;        /* [B]; act: active lane list */
    int64_t *pool_off;             /* [B + 1] */
    int64_t *src_off;              /* [B] first context row of a lane */
    int64_t *pair_off;             /* [K + 1] */
    int32_t *neg[2];               /* [pairs_cap * N] */
    uint8_t *lane_pos[2];          /* [B] */
    int32_t *lane_r[2];            /* [K * B] */

    /* work */
    int32_t *zrow;                 /* [B*tcap] pool index -> gathered z row, -1: not referenced */
    int32_t *zlist;                /* [B*tcap] pool indices of the gathered rows, ascending */
    int64_t *zl_off;               /* [B + 1] first zlist entry of a lane */
    int64_t  nref, ns;             /* gathered z rows, contexts */
    float *Zw, *dZw;               /* [B*tcap, Dz], first nref rows used */
    float *S, *dS;                 /* [ns_cap, Dc] */
    float *PT, *dPT;               /* [ns_cap, K*Dz] */
};

/* ---- PRNG (xoshiro256**, seeded by splitmix64) ---------------------------- */

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static double rng_unit(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n >= 1. */
static int64_t rng_below(uint64_t s[4], int64_t n)
{
    int64_t v = (int64_t)(rng_unit(s) * (double)n);
    return v < n ? v : n - 1;
}

/* ---- small vector kernels ------------------------------------------------- */

/* Written as fixed-width inner blocks so that -O2's straight-line vectoriser
 * turns them into SIMD without -ffast-math; 32 partial sums hide the FMA
 * latency. The summation order is fixed, so results are reproducible. */
static float dotf(const float *restrict a, const float *restrict b, int64_t n)
{
    float s[32] = {0};
    int64_t i = 0;
    float r = 0.0f;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 32; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    for (int w = 16; w >= 1; w /= 2)
        for (int j = 0; j < w; j++)
            s[j] += s[j + w];
    r = s[0];
    return r;
}

static void axpyf(float *restrict y, float a, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            y[i + j] += a * x[i + j];
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* ---- create / destroy ------------------------------------------------------ */

void clapp_loss_default_params(clapp_loss_params *p)
{
    memset(p, 0, sizeof *p);
    p->mode = CLAPP_LOSS_CLAPP_S;
    p->steps = 12;
    p->negatives = 10;
    p->window = 128;
    p->seed = 1;
}

int clapp_loss_default_grad_target(clapp_loss_mode mode, int target_in_module)
{
    return mode == CLAPP_LOSS_CLAPP_S || mode == CLAPP_LOSS_CLAPP || target_in_module;
}

#define LOSS_ERR(rc_, ...)                                                  \
    do {                                                                    \
        clapp_host_log(host, CLAPP_LOG_ERROR, name ? name : "clapp",        \
                       "core/learning/loss.c: " __VA_ARGS__);                       \
        rc = (rc_);                                                         \
        goto fail;                                                          \
    } while (0)

static void *xalloc(size_t n) { return clapp_aligned_calloc((int64_t)n, 1); }

static void init_uniform(clapp_tensor *t, double bound, uint64_t s[4])
{
    int64_t n = clapp_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        t->data[i] = (float)((2.0 * rng_unit(s) - 1.0) * bound);
}

int clapp_loss_create(clapp_loss **out, const clapp_loss_params *p, int64_t dz, int64_t dc,
                      int32_t lanes, int64_t t_cap, const clapp_host *host, const char *name)
{
    clapp_loss *L = NULL;
    int rc = CLAPP_OK;
    int64_t pool_cap, ns_cap;
    uint64_t sm;

    if (!out || !p)
        return CLAPP_E_INVAL;
    *out = NULL;
    if (p->mode < CLAPP_LOSS_CLAPP_S || p->mode > CLAPP_LOSS_INFONCE)
        LOSS_ERR(CLAPP_E_INVAL, "unknown mode %d", (int)p->mode);
    if (p->steps < 1)
        LOSS_ERR(CLAPP_E_INVAL, "steps=%d must be >= 1", (int)p->steps);
    if (p->mode != CLAPP_LOSS_CLAPP && p->negatives < 1)
        LOSS_ERR(CLAPP_E_INVAL, "negatives=%d must be >= 1", (int)p->negatives);
    if (p->window < 0)
        LOSS_ERR(CLAPP_E_INVAL, "window=%d must be >= 0", (int)p->window);
    if (p->neg_draw != CLAPP_LOSS_NEG_PER_STEP && p->neg_draw != CLAPP_LOSS_NEG_SHARED)
        LOSS_ERR(CLAPP_E_INVAL, "unknown neg_draw %d", (int)p->neg_draw);
    if (dz < 1 || dc < 1 || lanes < 1 || t_cap < 1)
        LOSS_ERR(CLAPP_E_SHAPE, "bad sizes dz=%lld dc=%lld lanes=%d t_cap=%lld", (long long)dz,
                 (long long)dc, (int)lanes, (long long)t_cap);

    L = calloc(1, sizeof *L);
    if (!L)
        LOSS_ERR(CLAPP_E_NOMEM, "out of memory");
    L->p = *p;
    L->dz = dz;
    L->dc = dc;
    L->B = lanes;
    L->tcap = t_cap;
    L->K = p->steps;
    L->N = p->mode == CLAPP_LOSS_CLAPP ? 1 : p->negatives;
    L->weff = (p->window > 0 && p->window < t_cap) ? p->window : t_cap;
    L->host = host;
    snprintf(L->name, sizeof L->name, "%s", name ? name : "clapp");
    sm = p->seed;
    for (int i = 0; i < 4; i++)
        L->rng[i] = clapp_splitmix64(&sm);

    {
        int64_t shw[3] = {L->K, dz, dc}, shr[3] = {L->K, dc, dz};
        if (clapp_tensor_alloc_shape(&L->W, 3, shw) || clapp_tensor_alloc_shape(&L->Wg, 3, shw))
            LOSS_ERR(CLAPP_E_NOMEM, "out of memory for W [%d, %lld, %lld]", (int)L->K,
                     (long long)dz, (long long)dc);
        /* PyTorch Linear default: U(+-1/sqrt(fan_in)), fan_in = Dc for W (c -> z space) */
        init_uniform(&L->W, 1.0 / sqrt((double)dc), L->rng);
        L->nt[0] = (clapp_named_tensor){"W", &L->W, &L->Wg};
        L->n_nt = 1;
        if (p->retro) {
            if (clapp_tensor_alloc_shape(&L->Wr, 3, shr) || clapp_tensor_alloc_shape(&L->Wrg, 3, shr))
                LOSS_ERR(CLAPP_E_NOMEM, "out of memory for W_retro");
            /* W_retro maps z -> c space: fan_in = Dz */
            init_uniform(&L->Wr, 1.0 / sqrt((double)dz), L->rng);
            L->nt[1] = (clapp_named_tensor){"W_retro", &L->Wr, &L->Wrg};
            L->n_nt = 2;
        }
    }

    pool_cap = (int64_t)lanes * t_cap;
    ns_cap = (int64_t)lanes * L->weff;
    L->lo = xalloc(sizeof(int32_t) * (size_t)lanes);
    L->hi = xalloc(sizeof(int32_t) * (size_t)lanes);
    L->act = xalloc(sizeof(int32_t) * (size_t)lanes);
    L->pool_off = xalloc(sizeof(int64_t) * (size_t)(lanes + 1));
    L->src_off = xalloc(sizeof(int64_t) * (size_t)lanes);
    L->pair_off = xalloc(sizeof(int64_t) * (size_t)(L->K + 1));
    L->ubuf = xalloc(sizeof(double) * (size_t)L->N);
    if (!L->lo || !L->hi || !L->act || !L->pool_off || !L->src_off || !L->pair_off || !L->ubuf)
        LOSS_ERR(CLAPP_E_NOMEM, "out of memory");
    for (int h = 0; h < (p->retro ? 2 : 1); h++) {
        if (p->mode == CLAPP_LOSS_CLAPP) {
            L->lane_pos[h] = xalloc((size_t)lanes);
            L->lane_r[h] = xalloc(sizeof(int32_t) * (size_t)lanes * (size_t)L->K);
            if (!L->lane_pos[h] || !L->lane_r[h])
                LOSS_ERR(CLAPP_E_NOMEM, "out of memory");
        } else {
            /* per step: at most K pairs per context */
            int64_t nn = ns_cap * L->N * (p->neg_draw == CLAPP_LOSS_NEG_PER_STEP ? L->K : 1);
            L->neg[h] = xalloc(sizeof(int32_t) * (size_t)nn);
            if (!L->neg[h])
                LOSS_ERR(CLAPP_E_NOMEM, "out of memory for %lld negative indices", (long long)nn);
        }
    }
    L->zrow = xalloc(sizeof(int32_t) * (size_t)pool_cap);
    L->zlist = xalloc(sizeof(int32_t) * (size_t)pool_cap);
    L->zl_off = xalloc(sizeof(int64_t) * (size_t)(lanes + 1));
    if (!L->zrow || !L->zlist || !L->zl_off)
        LOSS_ERR(CLAPP_E_NOMEM, "out of memory");
    L->Zw = xalloc(sizeof(float) * (size_t)(pool_cap * dz));
    L->dZw = xalloc(sizeof(float) * (size_t)(pool_cap * dz));
    L->S = xalloc(sizeof(float) * (size_t)(ns_cap * dc));
    L->dS = xalloc(sizeof(float) * (size_t)(ns_cap * dc));
    L->PT = xalloc(sizeof(float) * (size_t)(ns_cap * L->K * dz));
    L->dPT = xalloc(sizeof(float) * (size_t)(ns_cap * L->K * dz));
    if (!L->Zw || !L->dZw || !L->S || !L->dS || !L->PT || !L->dPT)
        LOSS_ERR(CLAPP_E_NOMEM, "out of memory for work buffers (%lld contexts x %d steps x %lld)",
                 (long long)ns_cap, (int)L->K, (long long)dz);
    *out = L;
    return CLAPP_OK;
fail:
    clapp_loss_destroy(L);
    return rc;
}

void clapp_loss_get_rng(const clapp_loss *loss, uint64_t state[4])
{
    memcpy(state, loss->rng, sizeof loss->rng);
}

void clapp_loss_set_rng(clapp_loss *loss, const uint64_t state[4])
{
    memcpy(loss->rng, state, sizeof loss->rng);
}

void clapp_loss_destroy(clapp_loss *L)
{
    if (!L)
        return;
    clapp_tensor_free(&L->W);
    clapp_tensor_free(&L->Wg);
    clapp_tensor_free(&L->Wr);
    clapp_tensor_free(&L->Wrg);
    free(L->lo);
    free(L->hi);
    free(L->act);
    free(L->ubuf);
    free(L->pool_off);
    free(L->src_off);
    free(L->pair_off);
    for (int h = 0; h < 2; h++) {
        free(L->neg[h]);
        free(L->lane_pos[h]);
        free(L->lane_r[h]);
    }
    free(L->zrow);
    free(L->zlist);
    free(L->zl_off);
    free(L->Zw);
    free(L->dZw);
    free(L->S);
    free(L->dS);
    free(L->PT);
    free(L->dPT);
    free(L);
}

int clapp_loss_update_params(clapp_loss *L, const clapp_loss_params *p)
{
    const clapp_loss_params *o;
    if (!L || !p)
        return CLAPP_E_INVAL;
    o = &L->p;
    /* only the three may change; per_step needs K times the shared buffer */
    if (p->mode != o->mode || p->steps != o->steps || p->negatives != o->negatives ||
        p->window != o->window || p->retro != o->retro || p->detach_context != o->detach_context ||
        p->seed != o->seed ||
        (p->neg_draw == CLAPP_LOSS_NEG_PER_STEP && o->neg_draw != CLAPP_LOSS_NEG_PER_STEP))
        return CLAPP_E_INVAL;
    L->p.neg_draw = p->neg_draw;
    L->p.grad_target = p->grad_target;
    L->p.neg_exclude_self = p->neg_exclude_self;
    return CLAPP_OK;
}

int clapp_loss_tensors(clapp_loss *L, const clapp_named_tensor **list, int32_t *count)
{
    if (!L || !list || !count)
        return CLAPP_E_INVAL;
    *list = L->nt;
    *count = L->n_nt;
    return CLAPP_OK;
}

int clapp_loss_last_draws(const clapp_loss *L, clapp_loss_draws *d)
{
    if (!L || !d)
        return CLAPP_E_INVAL;
    memset(d, 0, sizeof *d);
    d->lanes = L->lastB;
    d->steps = L->K;
    d->negatives = L->N;
    d->w0 = L->w0;
    d->lo = L->lo;
    d->hi = L->hi;
    d->pool_off = L->pool_off;
    d->pair_off = L->pair_off;
    d->contexts = L->ns;
    d->ctx_off = L->src_off;
    d->per_step = L->p.neg_draw == CLAPP_LOSS_NEG_PER_STEP;
    d->n_neg = L->nneg;
    for (int h = 0; h < 2; h++) {
        d->neg[h] = L->neg[h];
        d->lane_pos[h] = L->lane_pos[h];
        d->lane_r[h] = L->lane_r[h];
    }
    return CLAPP_OK;
}

/* ---- layout helpers ------------------------------------------------------- */

/* Feature size per step of a block tensor and the spatial factor (H*W or 1). */
static int block_dims(const clapp_tensor *x, int64_t *d, int64_t *sp)
{
    if (x->ndim < 3 || !x->data)
        return -1;
    *sp = 1;
    for (int i = 3; i < x->ndim; i++)
        *sp *= x->shape[i];
    *d = x->shape[1] * *sp;
    return 0;
}

/* Copy steps of lane b of x [B, C, T, sp] into rows [n, C*sp]: row i holds
 * step list[i] - base (or t0 + i when list is NULL). Channels go in tiles so
 * that reads stream along t and writes fill whole cache lines. */
#define LOSS_CTILE 16
static void gather_rows(const clapp_tensor *x, int64_t sp, int b, const int32_t *list, int64_t base,
                        int64_t t0, int64_t n, float *rows)
{
    const int64_t C = x->shape[1], T = x->shape[2], D = C * sp;
    const float *lane = x->data + (int64_t)b * C * T * sp;
    for (int64_t c0 = 0; c0 < C; c0 += LOSS_CTILE) {
        int64_t c1 = c0 + LOSS_CTILE < C ? c0 + LOSS_CTILE : C;
        for (int64_t i = 0; i < n; i++) {
            int64_t t = list ? list[i] - base : t0 + i;
            float *row = rows + i * D;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t s = 0; s < sp; s++)
                    row[c * sp + s] = lane[(c * T + t) * sp + s];
        }
    }
}

/* The reverse: add rows into the steps of lane b of g. */
static void scatter_add_rows(clapp_tensor *g, int64_t sp, int b, const int32_t *list, int64_t base,
                             int64_t t0, int64_t n, const float *rows)
{
    const int64_t C = g->shape[1], T = g->shape[2], D = C * sp;
    float *lane = g->data + (int64_t)b * C * T * sp;
    for (int64_t c0 = 0; c0 < C; c0 += LOSS_CTILE) {
        int64_t c1 = c0 + LOSS_CTILE < C ? c0 + LOSS_CTILE : C;
        for (int64_t i = 0; i < n; i++) {
            int64_t t = list ? list[i] - base : t0 + i;
            const float *row = rows + i * D;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t s = 0; s < sp; s++)
                    lane[(c * T + t) * sp + s] += row[c * sp + s];
        }
    }
}

/* Mark the z steps this call reads (window targets, negatives, CLAPP's
 * other-lane targets) and give them consecutive rows in pool order. */
static void index_rows(clapp_loss *L, int32_t B, int64_t npool, int halves)
{
    int32_t *zr = L->zrow;
    for (int64_t q = 0; q < npool; q++)
        zr[q] = -1;
    for (int32_t b = 0; b < B; b++)
        for (int64_t t = L->lo[b] + 1; t < L->hi[b]; t++)
            zr[L->pool_off[b] + t] = 0;
    for (int h = 0; h < halves; h++) {
        if (L->p.mode != CLAPP_LOSS_CLAPP) {
            for (int64_t i = 0; i < L->nneg; i++)
                zr[L->neg[h][i]] = 0;
            continue;
        }
        for (int32_t kk = 0; kk < L->K; kk++)
            for (int32_t b = 0; b < B; b++) {
                int32_t r = L->lane_r[h][kk * B + b];
                int64_t lr;
                if (L->lane_pos[h][b] || r < 0)
                    continue;
                lr = L->pool_off[r + 1] - L->pool_off[r];
                for (int64_t t = L->lo[b]; t < L->hi[b] - (kk + 1); t++)
                    if (t + kk + 1 < lr)
                        zr[L->pool_off[r] + t + kk + 1] = 0;
            }
    }
    L->nref = 0;
    for (int32_t b = 0; b < B; b++) {
        L->zl_off[b] = L->nref;
        for (int64_t q = L->pool_off[b]; q < L->pool_off[b + 1]; q++)
            if (zr[q] == 0) {
                zr[q] = (int32_t)L->nref;
                L->zlist[L->nref++] = (int32_t)q;
            }
    }
    L->zl_off[B] = L->nref;
}

/* ---- one half -------------------------------------------------------------- */

typedef struct half_out {
    double  loss;
    int64_t pos_terms, pos_act, neg_terms, neg_act;
} half_out;

/* The other-lane choice r(b) of CLAPP mode: uniform over the active lanes,
 * or over the active lanes other than b (neg_exclude_self; -1 if none). */
static int32_t draw_lane(clapp_loss *L, int32_t b, int32_t n_act)
{
    int32_t self = -1, j;
    if (!L->p.neg_exclude_self)
        return L->act[rng_below(L->rng, n_act)];
    for (int32_t i = 0; i < n_act; i++)
        if (L->act[i] == b)
            self = i;
    if (self < 0)
        return L->act[rng_below(L->rng, n_act)];
    if (n_act < 2)
        return -1;
    j = (int32_t)rng_below(L->rng, n_act - 1);
    return L->act[j >= self ? j + 1 : j];
}

/* Draw this half's negatives / lane choices. */
static void draw_half(clapp_loss *L, int h, int32_t B, int32_t n_act, int64_t npool)
{
    if (L->p.mode == CLAPP_LOSS_CLAPP) {
        for (int32_t b = 0; b < B; b++)
            L->lane_pos[h][b] = (uint8_t)(rng_next(L->rng) >> 63);
        for (int32_t kk = 0; kk < L->K; kk++)
            for (int32_t b = 0; b < B; b++)
                L->lane_r[h][kk * B + b] = draw_lane(L, b, n_act);
    } else {
        /* N per pair (per step) or N per context shared by all k */
        for (int64_t i = 0; i < L->nneg; i++)
            L->neg[h][i] = (int32_t)rng_below(L->rng, npool);
    }
}

/* Gathered z row of pool index q (only referenced steps are gathered). */
#define ZROW(q) (L->Zw + (int64_t)L->zrow[(q)] * dz)
#define DZROW(q) (L->dZw + (int64_t)L->zrow[(q)] * dz)

/* Scores, loss and dL/du for all terms of half h; fills dPT (and dZw when
 * grad_dest). PT must hold the predictions. */
static void half_terms(clapp_loss *L, int h, int32_t B, int64_t K_eff, int grad_dest, half_out *o)
{
    const int64_t dz = L->dz, KD = (int64_t)L->K * dz;
    const int32_t N = L->N;
    const clapp_loss_mode mode = L->p.mode;
    const int per_step = L->p.neg_draw == CLAPP_LOSS_NEG_PER_STEP;

    for (int32_t kk = 0; kk < L->K; kk++) {
        const int32_t k = kk + 1;
        int64_t Pk = L->pair_off[kk + 1] - L->pair_off[kk], pair = L->pair_off[kk];
        double wpos, wneg;
        if (Pk == 0)
            continue;
        if (mode == CLAPP_LOSS_CLAPP) {
            int64_t npos = 0, nneg = 0;
            for (int32_t b = 0; b < B; b++) {
                int64_t cnt = L->hi[b] - L->lo[b] - k;
                if (cnt <= 0)
                    continue;
                if (L->lane_pos[h][b]) {
                    npos += cnt;
                } else {
                    int32_t r = L->lane_r[h][kk * B + b];
                    int64_t lr = r < 0 ? 0 : L->pool_off[r + 1] - L->pool_off[r];
                    for (int64_t t = L->lo[b]; t < L->hi[b] - k; t++)
                        nneg += t + k < lr;
                }
            }
            wpos = npos ? 1.0 / ((double)K_eff * (double)npos) : 0.0;
            wneg = nneg ? 1.0 / ((double)K_eff * (double)nneg) : 0.0;
        } else {
            wpos = 1.0 / ((double)K_eff * (double)Pk);
            wneg = 1.0 / ((double)K_eff * (double)Pk * (double)N);
        }

        for (int32_t b = 0; b < B; b++) {
            for (int64_t t = L->lo[b]; t < L->hi[b] - k; t++, pair++) {
                int64_t s = L->src_off[b] + (t - L->lo[b]);
                const float *pv = L->PT + s * KD + (int64_t)kk * dz;
                float *dpv = L->dPT + s * KD + (int64_t)kk * dz;
                int64_t tgt = L->pool_off[b] + t + k;
                const int32_t *ng = L->neg[h] ? L->neg[h] + (per_step ? pair : s) * N : NULL;

                if (mode == CLAPP_LOSS_CLAPP) {
                    int64_t q;
                    double u, g;
                    if (L->lane_pos[h][b]) {
                        q = tgt;
                        u = dotf(pv, ZROW(q), dz);
                        o->pos_terms++;
                        if (!(u < 1.0))
                            continue;
                        o->pos_act++;
                        o->loss += (1.0 - u) * wpos;
                        g = -wpos;
                    } else {
                        int32_t r = L->lane_r[h][kk * B + b];
                        if (r < 0 || t + k >= L->pool_off[r + 1] - L->pool_off[r])
                            continue;
                        q = L->pool_off[r] + t + k;
                        u = dotf(pv, ZROW(q), dz);
                        o->neg_terms++;
                        if (!(u > -1.0))
                            continue;
                        o->neg_act++;
                        o->loss += (1.0 + u) * wneg;
                        g = wneg;
                    }
                    axpyf(dpv, (float)g, ZROW(q), dz);
                    if (grad_dest)
                        axpyf(DZROW(q), (float)g, pv, dz);
                } else if (mode == CLAPP_LOSS_INFONCE) {
                    double *un = L->ubuf;
                    double up = dotf(pv, ZROW(tgt), dz), m = up, se, lse, g;
                    for (int32_t n = 0; n < N; n++) {
                        un[n] = dotf(pv, ZROW(ng[n]), dz);
                        if (un[n] > m)
                            m = un[n];
                    }
                    se = exp(up - m);
                    for (int32_t n = 0; n < N; n++)
                        se += exp(un[n] - m);
                    lse = m + log(se);
                    o->loss += (lse - up) * wpos;
                    g = (exp(up - lse) - 1.0) * wpos;
                    axpyf(dpv, (float)g, ZROW(tgt), dz);
                    if (grad_dest)
                        axpyf(DZROW(tgt), (float)g, pv, dz);
                    for (int32_t n = 0; n < N; n++) {
                        const float *zn = ZROW(ng[n]);
                        double gn = exp(un[n] - lse) * wpos;
                        axpyf(dpv, (float)gn, zn, dz);
                        if (grad_dest)
                            axpyf(DZROW(ng[n]), (float)gn, pv, dz);
                    }
                } else {
                    double u = dotf(pv, ZROW(tgt), dz);
                    o->pos_terms++;
                    if (u < 1.0) {
                        o->pos_act++;
                        o->loss += (1.0 - u) * wpos;
                        axpyf(dpv, (float)-wpos, ZROW(tgt), dz);
                        if (grad_dest)
                            axpyf(DZROW(tgt), (float)-wpos, pv, dz);
                    }
                    for (int32_t n = 0; n < N; n++) {
                        const float *zn = ZROW(ng[n]);
                        double un_ = dotf(pv, zn, dz);
                        o->neg_terms++;
                        if (!(un_ > -1.0))
                            continue;
                        o->neg_act++;
                        o->loss += (1.0 + un_) * wneg;
                        axpyf(dpv, (float)wneg, zn, dz);
                        if (grad_dest)
                            axpyf(DZROW(ng[n]), (float)wneg, pv, dz);
                    }
                }
            }
        }
    }
}

/* ---- compute ---------------------------------------------------------------- */

int clapp_loss_compute(clapp_loss *L, const clapp_block *z, const clapp_block *c,
                       clapp_tensor *grad_z, clapp_tensor *grad_c, clapp_loss_stats *st)
{
    const clapp_host *host = L ? L->host : NULL;
    const char *name = L ? L->name : NULL;
    int rc = CLAPP_OK;
    int64_t dz, dc, spz, spc, T, npool, ns, K_eff = 0;
    int32_t B, n_act = 0;
    const int same = (z == c) || (z && c && z->x.data == c->x.data);
    clapp_tensor *gz = NULL, *gc = NULL;
    int halves, gdest_pred, gsrc_pred;
    half_out ho[2];
    int64_t minstart = -1;

    if (!L || !z || !c)
        return CLAPP_E_INVAL;
    memset(ho, 0, sizeof ho);
    if (block_dims(&z->x, &dz, &spz) || block_dims(&c->x, &dc, &spc))
        LOSS_ERR(CLAPP_E_SHAPE, "z and c must be [B, C, T, ...] blocks with data");
    if (dz != L->dz || dc != L->dc)
        LOSS_ERR(CLAPP_E_SHAPE, "feature sizes z=%lld c=%lld, created for z=%lld c=%lld",
                 (long long)dz, (long long)dc, (long long)L->dz, (long long)L->dc);
    B = (int32_t)z->x.shape[0];
    T = z->x.shape[2];
    if (B != c->x.shape[0] || T != c->x.shape[2] || z->lanes != B || c->lanes != B || !z->lane ||
        !c->lane)
        LOSS_ERR(CLAPP_E_SHAPE, "z [%lld lanes, T=%lld] and c [%lld, %lld] must share lanes and time",
                 (long long)B, (long long)T, (long long)c->x.shape[0], (long long)c->x.shape[2]);
    if (B > L->B || T > L->tcap)
        LOSS_ERR(CLAPP_E_SHAPE, "block of %d lanes x %lld steps exceeds the capacity %d x %lld",
                 (int)B, (long long)T, (int)L->B, (long long)L->tcap);

    /* gradient routing */
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
        LOSS_ERR(CLAPP_E_SHAPE, "gradient tensors must have the shape of their block");

    /* lanes, pool, window */
    L->pool_off[0] = 0;
    for (int32_t b = 0; b < B; b++) {
        int32_t lz = z->lane[b].len, lc = c->lane[b].len;
        if (lz < 0 || lz > T || lc < 0 || lc > T)
            LOSS_ERR(CLAPP_E_INVAL, "lane %d: len z=%d c=%d outside [0, %lld]", (int)b, (int)lz,
                     (int)lc, (long long)T);
        L->pool_off[b + 1] = L->pool_off[b] + lz;
        L->hi[b] = lz < lc ? lz : lc;
        if (lz > 0)
            L->act[n_act++] = b;
        if (L->p.window > 0 && L->hi[b] > L->p.window) {
            int64_t ms = L->hi[b] - L->p.window;
            if (minstart < 0 || ms < minstart)
                minstart = ms;
        }
    }
    npool = L->pool_off[B];
    L->lastB = B;
    L->w0 = minstart >= 0 ? (int32_t)rng_below(L->rng, minstart + 1) : 0;
    ns = 0;
    for (int32_t b = 0; b < B; b++) {
        if (L->p.window > 0 && L->hi[b] > L->p.window) {
            L->lo[b] = L->w0;
            L->hi[b] = L->w0 + L->p.window;
        } else {
            L->lo[b] = 0;
        }
        L->src_off[b] = ns;
        if (L->hi[b] - L->lo[b] >= 2)
            ns += L->hi[b] - L->lo[b] - 1; /* the last step is never a context */
    }
    L->pair_off[0] = 0;
    for (int32_t kk = 0; kk < L->K; kk++) {
        int64_t Pk = 0;
        for (int32_t b = 0; b < B; b++)
            if (L->hi[b] - L->lo[b] > kk + 1)
                Pk += L->hi[b] - L->lo[b] - (kk + 1);
        L->pair_off[kk + 1] = L->pair_off[kk] + Pk;
        K_eff += Pk > 0;
    }

    L->ns = ns;
    L->nneg = L->p.mode == CLAPP_LOSS_CLAPP ? 0
              : (L->p.neg_draw == CLAPP_LOSS_NEG_PER_STEP ? L->pair_off[L->K] : ns) * L->N;
    halves = L->p.retro ? 2 : 1;
    for (int h = 0; h < halves; h++)
        if (K_eff > 0)
            draw_half(L, h, B, n_act, npool);
    if (K_eff == 0)
        goto done;
    index_rows(L, B, npool, halves);

    /* gather */
    for (int32_t b = 0; b < B; b++) {
        gather_rows(&z->x, spz, b, L->zlist + L->zl_off[b], L->pool_off[b], 0,
                    L->zl_off[b + 1] - L->zl_off[b], L->Zw + L->zl_off[b] * dz);
        if (L->hi[b] - L->lo[b] >= 2)
            gather_rows(&c->x, spc, b, NULL, 0, L->lo[b], L->hi[b] - L->lo[b] - 1,
                        L->S + L->src_off[b] * dc);
    }
    if (gz)
        memset(L->dZw, 0, sizeof(float) * (size_t)(L->nref * dz));
    if (gc)
        memset(L->dS, 0, sizeof(float) * (size_t)(ns * dc));

    /* pred half: trains W and the z path; also the c path unless retro/detach */
    gdest_pred = gz != NULL;
    gsrc_pred = gc != NULL && !L->p.retro;
    {
        const int KD = (int)(L->K * dz);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ns, KD, (int)dc, 1.0f, L->S,
                    (int)dc, L->W.data, (int)dc, 0.0f, L->PT, KD);
        memset(L->dPT, 0, sizeof(float) * (size_t)(ns * KD));
        half_terms(L, 0, B, K_eff, gdest_pred, &ho[0]);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, KD, (int)dc, (int)ns, 1.0f, L->dPT, KD,
                    L->S, (int)dc, 1.0f, L->Wg.data, (int)dc);
        if (gsrc_pred)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, (int)dc, KD, 1.0f,
                        L->dPT, KD, L->W.data, (int)dc, 1.0f, L->dS, (int)dc);
    }
    /* retro half: u = c . (W_retro z) trains W_retro and the c path; z is blocked */
    if (L->p.retro) {
        const int KD = (int)(L->K * dz);
        for (int32_t kk = 0; kk < L->K; kk++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ns, (int)dz, (int)dc, 1.0f,
                        L->S, (int)dc, L->Wr.data + (int64_t)kk * dc * dz, (int)dz, 0.0f,
                        L->PT + (int64_t)kk * dz, KD);
        memset(L->dPT, 0, sizeof(float) * (size_t)(ns * KD));
        half_terms(L, 1, B, K_eff, 0, &ho[1]);
        for (int32_t kk = 0; kk < L->K; kk++) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)dc, (int)dz, (int)ns, 1.0f,
                        L->S, (int)dc, L->dPT + (int64_t)kk * dz, KD, 1.0f,
                        L->Wrg.data + (int64_t)kk * dc * dz, (int)dz);
            if (gc)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ns, (int)dc, (int)dz, 1.0f,
                            L->dPT + (int64_t)kk * dz, KD, L->Wr.data + (int64_t)kk * dc * dz,
                            (int)dz, 1.0f, L->dS, (int)dc);
        }
    }

    /* scatter back into the [B, C, T, ...] gradients */
    for (int32_t b = 0; b < B; b++) {
        if (gz)
            scatter_add_rows(gz, spz, b, L->zlist + L->zl_off[b], L->pool_off[b], 0,
                             L->zl_off[b + 1] - L->zl_off[b], L->dZw + L->zl_off[b] * dz);
        if (gc && L->hi[b] - L->lo[b] >= 2)
            scatter_add_rows(gc, spc, b, NULL, 0, L->lo[b], L->hi[b] - L->lo[b] - 1,
                             L->dS + L->src_off[b] * dc);
    }

done:
    if (st) {
        int64_t pt = ho[0].pos_terms + ho[1].pos_terms, nt = ho[0].neg_terms + ho[1].neg_terms;
        memset(st, 0, sizeof *st);
        st->loss = ho[0].loss + ho[1].loss;
        st->loss_retro = ho[1].loss;
        st->pairs = L->pair_off[L->K];
        if (L->p.mode != CLAPP_LOSS_INFONCE) {
            st->pos_active = pt ? (double)(ho[0].pos_act + ho[1].pos_act) / (double)pt : 0.0;
            st->neg_active = nt ? (double)(ho[0].neg_act + ho[1].neg_act) / (double)nt : 0.0;
        }
    }
    return CLAPP_OK;
fail:
    return rc;
}
