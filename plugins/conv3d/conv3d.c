/* conv3d — a streaming 3-D convolution layer for video (PyTorch Conv3d
 * semantics) with ReLU, optional BatchNorm3d and 1x3x3 max-pool inside the
 * layer, and a local backward. 2-D images are the case kt = 1.
 *
 * Input [B, Cin, T, H, W], output [B, out, T_out, Ho, Wo] at rate/st. Order
 * inside the layer, as the paper's video encoder (appendix Table 5):
 *     conv -> ReLU -> BN (if bn) -> MaxPool 1x3x3 stride (1,2,2) (if pool).
 *
 * Time is streamed exactly as conv1d does it: per lane, the sequence is the
 * frame sequence padded with pt zero frames at SEQ_START and pt at SEQ_END;
 * output frame j reads padded frames [j*st, j*st + kt). Each forward emits
 * every output frame whose kt frames are there and carries the unused tail
 * (< kt frames) to the next block, so outputs do not depend on where blocks
 * are cut. Space is ordinary zero padding (ph, pw).
 *
 * Compute: each lane's padded frames (carried context + this block's input)
 * are staged frame-major and kept until the next forward. For chunks of a
 * lane's output frames, im2col builds cols [K, c * P], one column per
 * (output frame, y, x), K = Cin*kt*kh*kw in the weight's own order, and one
 * GEMM adds W[out, K] . cols into pre[out, N] (N: all lanes' output columns,
 * bias preset). ReLU, BN and pool then run channel by channel on the rows of
 * pre. Only one chunk of columns exists at a time (~16 MB): the whole block's
 * would be about kt*kh*kw/(sh*sw) times the input (800 MB for the paper's
 * layer 2 at B = 8, T = 54).
 *
 * Backward (LEARN mode, from the cached forward): the output gradient goes to
 * the argmax of each pool window, through BN with batch statistics (the full
 * formula, x-hat recomputed from pre), through ReLU; then per chunk the
 * columns are rebuilt from the staged frames, dW += dA . cols^T straight into
 * the weight gradient, and grad_in gets W^T . dA scattered back (col2im) for
 * this block's input frames only.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/plugin.h"
#include "clapp/plugin_util.h"

#define CONV3D_COLS_FLOATS (4L << 20)   /* im2col chunk: ~16 MB */
#define CONV3D_POOL_K 3                 /* MaxPool kernel (1, 3, 3) ... */
#define CONV3D_POOL_S 2                 /* ... stride (1, 2, 2), no padding */

enum { CONV3D_POOL_NONE = 0, CONV3D_POOL_1X3X3 = 1 };

typedef struct conv3d_lane {
    int64_t ctx_len;  /* carried padded frames, in ctx */
    int64_t skip;     /* upcoming padded frames to drop (only when st > kt) */
    int64_t emitted;  /* output frames emitted so far in this sequence */
    /* The last forward, for backward: */
    int64_t off;      /* first global output frame of this lane (column off * P) */
    int64_t n;        /* output frames of this lane */
    int64_t start;    /* padded frame where output 0's window begins */
    int64_t base;     /* padded frame of input frame 0 (= carried context length) */
    int64_t len;      /* input frames of the block */
    int64_t total;    /* padded frames of the block: staged ones, then end padding */
    int64_t nreal;    /* staged frames (carried context + input) */
} conv3d_lane;

typedef struct conv3d {
    const clapp_host *host;
    char             *name;
    int64_t           out_ch, kt, kh, kw, st, sh, sw, pt, ph, pw;
    int               activation, relu, has_bias, bn, pool;   /* activation: choice index (0: relu) */
    double            momentum, eps;
    uint64_t          seed;
    clapp_mode        mode;
    int               configured;
    int               cached;      /* the last forward kept what backward needs */

    int64_t B, cin, t_in, H, W;    /* configured input */
    int64_t hc, wc, P;             /* conv output plane, P = hc * wc */
    int64_t ho, wo, Q;             /* layer output plane (after pool), Q = ho * wo */
    int64_t t_out;                 /* output time capacity */
    int64_t K;                     /* cin * kt * kh * kw */
    int64_t HW, frame;             /* floats per input plane / per input frame (cin planes) */
    int64_t ctx_cap;               /* max carried frames: max(kt - 1, pt) */
    int64_t stage_rows;            /* ctx_cap + t_in + pt: padded frames of one lane and block */
    int64_t max_frames;            /* B * t_out */
    int64_t ncap;                  /* max_frames * P: leading dimension of pre/act */
    int64_t chunk;                 /* output frames per im2col chunk (one GEMM) */
    int64_t n_frames;              /* output frames of the last forward */

    clapp_tensor       w, gw, b, gb, gamma, ggamma, beta, gbeta, rmean, rvar;
    clapp_named_tensor list[6];
    int32_t            n_list;

    float        *cols;    /* [K, chunk * P] im2col columns of one chunk; backward: also dcols */
    float        *pre;     /* [out, ncap] conv + bias */
    float        *act;     /* [out, ncap] after ReLU/BN; backward: dL/d(that) then dL/dpre */
    int32_t      *arg;     /* [out, max_frames * Q] pool argmax within the plane */
    double       *mean;    /* [out] statistics the last forward normalised with */
    double       *invstd;  /* [out] */
    float        *ctx;     /* [B, ctx_cap, cin, H, W] carried frames per lane */
    float        *stage;   /* [B, stage_rows, cin, H, W] the last block's padded frames, kept for backward */
    const float **fptr;    /* [stage_rows] one lane's padded frames (NULL: zero frame) */
    int64_t      *fstr;    /* [stage_rows] their channel strides */
    float       **gframes; /* [kt] backward: grad_in frames of one window (NULL: dropped) */
    int64_t      *gstr;    /* [kt] their channel strides */
    conv3d_lane  *lanes;
} conv3d;

static const clapp_param_desc conv3d_params[] = {
    {"out", CLAPP_PARAM_INT, "64", 1, 65536, NULL, "output channels"},
    {"kt", CLAPP_PARAM_INT, "1", 1, 4096, NULL, "kernel size in frames"},
    {"kh", CLAPP_PARAM_INT, "3", 1, 4096, NULL, "kernel height"},
    {"kw", CLAPP_PARAM_INT, "3", 1, 4096, NULL, "kernel width"},
    {"st", CLAPP_PARAM_INT, "1", 1, 4096, NULL, "temporal stride (output rate = input rate / st)"},
    {"sh", CLAPP_PARAM_INT, "1", 1, 4096, NULL, "vertical stride"},
    {"sw", CLAPP_PARAM_INT, "1", 1, 4096, NULL, "horizontal stride"},
    {"pt", CLAPP_PARAM_INT, "0", 0, 4096, NULL, "zero frames added at the start and end of each sequence"},
    {"ph", CLAPP_PARAM_INT, "1", 0, 4096, NULL, "zero rows added above and below"},
    {"pw", CLAPP_PARAM_INT, "1", 0, 4096, NULL, "zero columns added left and right"},
    {"activation", CLAPP_PARAM_ENUM, "relu", 0, 0, "relu|none", "nonlinearity after the convolution"},
    {"bias", CLAPP_PARAM_BOOL, "true", 0, 1, NULL, "learn a bias per output channel"},
    {"bn", CLAPP_PARAM_BOOL, "false", 0, 1, NULL, "BatchNorm3d after the activation (Conv3d -> ReLU -> BN)"},
    {"bn_momentum", CLAPP_PARAM_FLOAT, "0.1", 0, 1, NULL, "BatchNorm running-statistics momentum"},
    {"bn_eps", CLAPP_PARAM_FLOAT, "1e-5", 0, 1, NULL, "BatchNorm epsilon added to the variance"},
    {"pool", CLAPP_PARAM_ENUM, "none", 0, 0, "none|1x3x3", "max-pool last: 1x3x3, stride (1,2,2), no padding"},
};
#define CONV3D_N_PARAMS ((int32_t)(sizeof conv3d_params / sizeof conv3d_params[0]))

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static void *alloc_bytes(int64_t n) { return clapp_aligned_calloc(n, 1); }

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Output positions o in [0, n_out) whose input index o*s + d - p lies in [0, n_in):
 * [*lo, *hi). Lets im2col/col2im skip the bounds test in the inner loop. */
static void valid_range(int64_t n_out, int64_t n_in, int64_t s, int64_t d, int64_t p, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = p - d; /* need o*s >= a and o*s <= n_in - 1 + a */
    int64_t l = a > 0 ? (a + s - 1) / s : 0;
    int64_t h = n_in - 1 + a >= 0 ? (n_in - 1 + a) / s + 1 : 0;
    *lo = min64(l, n_out);
    *hi = min64(h, n_out);
    if (*hi < *lo)
        *hi = *lo;
}

/* Reductions over a channel row: float partial sums in CONV3D_VL independent
 * lanes (so they vectorize without reassociation), flushed into double every
 * CONV3D_FLUSH elements (so long rows keep their precision). */
#define CONV3D_VL 16
#define CONV3D_FLUSH 2048

/* s1 = sum (v - mu), s2 = sum (v - mu)^2. */
static void row_moments(const float *restrict v, int64_t n, float mu, double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0;
    for (int64_t j0 = 0; j0 < n; j0 += CONV3D_FLUSH) {
        float a1[CONV3D_VL] = {0}, a2[CONV3D_VL] = {0};
        int64_t j1 = min64(j0 + CONV3D_FLUSH, n), j = j0;
        for (; j + CONV3D_VL <= j1; j += CONV3D_VL)
            for (int k = 0; k < CONV3D_VL; k++) {
                float d = v[j + k] - mu;
                a1[k] += d;
                a2[k] += d * d;
            }
        for (; j < j1; j++) {
            float d = v[j] - mu;
            a1[0] += d;
            a2[0] += d * d;
        }
        for (int k = 0; k < CONV3D_VL; k++) {
            t1 += a1[k];
            t2 += a2[k];
        }
    }
    *s1 = t1;
    *s2 = t2;
}

/* With v = act(a): s1 = sum d, s2 = sum d * (v - mu). */
static void row_grad_moments(const float *restrict d, const float *restrict a, int64_t n, float mu, int relu,
                             double *s1, double *s2)
{
    double t1 = 0.0, t2 = 0.0;
    for (int64_t j0 = 0; j0 < n; j0 += CONV3D_FLUSH) {
        float a1[CONV3D_VL] = {0}, a2[CONV3D_VL] = {0};
        int64_t j1 = min64(j0 + CONV3D_FLUSH, n), j = j0;
        for (; j + CONV3D_VL <= j1; j += CONV3D_VL)
            for (int k = 0; k < CONV3D_VL; k++) {
                float v = relu && a[j + k] < 0.0f ? 0.0f : a[j + k];
                a1[k] += d[j + k];
                a2[k] += d[j + k] * (v - mu);
            }
        for (; j < j1; j++) {
            float v = relu && a[j] < 0.0f ? 0.0f : a[j];
            a1[0] += d[j];
            a2[0] += d[j] * (v - mu);
        }
        for (int k = 0; k < CONV3D_VL; k++) {
            t1 += a1[k];
            t2 += a2[k];
        }
    }
    *s1 = t1;
    *s2 = t2;
}

/* Start a sequence: pt zero frames of left context, nothing emitted. */
static void lane_restart(conv3d *cv, int64_t b)
{
    conv3d_lane *l = &cv->lanes[b];
    l->ctx_len = cv->pt;
    l->skip = 0;
    l->emitted = 0;
    memset(cv->ctx + b * cv->ctx_cap * cv->frame, 0, (size_t)(cv->pt * cv->frame) * sizeof(float));
}

static void free_scratch(conv3d *cv)
{
    free(cv->cols);
    free(cv->pre);
    free(cv->act);
    free(cv->arg);
    free(cv->stage);
    free(cv->mean);
    free(cv->invstd);
    free(cv->ctx);
    free((void *)cv->fptr);
    free(cv->fstr);
    free(cv->gframes);
    free(cv->gstr);
    free(cv->lanes);
    cv->cols = cv->pre = cv->act = cv->stage = cv->ctx = NULL;
    cv->arg = NULL;
    cv->mean = cv->invstd = NULL;
    cv->fptr = NULL;
    cv->fstr = NULL;
    cv->gframes = NULL;
    cv->gstr = NULL;
    cv->lanes = NULL;
}

static void free_params(conv3d *cv)
{
    clapp_tensor *all[] = {&cv->w, &cv->gw, &cv->b, &cv->gb, &cv->gamma, &cv->ggamma,
                           &cv->beta, &cv->gbeta, &cv->rmean, &cv->rvar};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clapp_tensor_free(all[i]);
    cv->n_list = 0;
}

/* The paper's init: Kaiming-normal (fan_out, ReLU gain) weights, bias 0,
 * BN gamma 1, beta 0, running mean 0, running var 1. */
static int init_params(conv3d *cv)
{
    int64_t wshape[5] = {cv->out_ch, cv->cin, cv->kt, cv->kh, cv->kw};
    int64_t cshape[1] = {cv->out_ch};
    uint64_t state = cv->seed;
    double std = sqrt(2.0 / (double)(cv->out_ch * cv->kt * cv->kh * cv->kw));
    if (clapp_tensor_alloc_shape(&cv->w, 5, wshape) || clapp_tensor_alloc_shape(&cv->gw, 5, wshape))
        return CLAPP_E_NOMEM;
    for (int64_t i = 0; i < clapp_tensor_numel(&cv->w); i++)
        cv->w.data[i] = (float)(std * clapp_normal01(&state));
    cv->n_list = 0;
    cv->list[cv->n_list++] = (clapp_named_tensor){"weight", &cv->w, &cv->gw};
    if (cv->has_bias) {
        if (clapp_tensor_alloc_shape(&cv->b, 1, cshape) || clapp_tensor_alloc_shape(&cv->gb, 1, cshape))
            return CLAPP_E_NOMEM;
        cv->list[cv->n_list++] = (clapp_named_tensor){"bias", &cv->b, &cv->gb};
    }
    if (cv->bn) {
        if (clapp_tensor_alloc_shape(&cv->gamma, 1, cshape) ||
            clapp_tensor_alloc_shape(&cv->ggamma, 1, cshape) ||
            clapp_tensor_alloc_shape(&cv->beta, 1, cshape) ||
            clapp_tensor_alloc_shape(&cv->gbeta, 1, cshape) ||
            clapp_tensor_alloc_shape(&cv->rmean, 1, cshape) ||
            clapp_tensor_alloc_shape(&cv->rvar, 1, cshape))
            return CLAPP_E_NOMEM;
        for (int64_t o = 0; o < cv->out_ch; o++) {
            cv->gamma.data[o] = 1.0f;
            cv->rvar.data[o] = 1.0f;
        }
        cv->list[cv->n_list++] = (clapp_named_tensor){"bn_weight", &cv->gamma, &cv->ggamma};
        cv->list[cv->n_list++] = (clapp_named_tensor){"bn_bias", &cv->beta, &cv->gbeta};
        cv->list[cv->n_list++] = (clapp_named_tensor){"running_mean", &cv->rmean, NULL};
        cv->list[cv->n_list++] = (clapp_named_tensor){"running_var", &cv->rvar, NULL};
    }
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

static void conv3d_destroy(void *self)
{
    conv3d *cv = self;
    if (!cv)
        return;
    free_scratch(cv);
    free_params(cv);
    free(cv->name);
    free(cv);
}

static const clapp_param_field conv3d_fields[] = {
    CLAPP_FIELD_AS(conv3d, out_ch, "out"),  CLAPP_FIELD(conv3d, kt), CLAPP_FIELD(conv3d, kh),
    CLAPP_FIELD(conv3d, kw),                CLAPP_FIELD(conv3d, st), CLAPP_FIELD(conv3d, sh),
    CLAPP_FIELD(conv3d, sw),                CLAPP_FIELD(conv3d, pt), CLAPP_FIELD(conv3d, ph),
    CLAPP_FIELD(conv3d, pw),                CLAPP_FIELD(conv3d, activation),
    CLAPP_FIELD_AS(conv3d, has_bias, "bias"), CLAPP_FIELD(conv3d, bn),
    CLAPP_FIELD_AS(conv3d, momentum, "bn_momentum"), CLAPP_FIELD_AS(conv3d, eps, "bn_eps"),
    CLAPP_FIELD(conv3d, pool),
};

static int conv3d_create(const clapp_create_info *info, void **self)
{
    conv3d *cv = calloc(1, sizeof *cv);
    *self = cv;
    if (!cv)
        return CLAPP_E_NOMEM;
    cv->host = info->host;
    cv->name = strdup(info->instance_name ? info->instance_name : "conv3d");
    if (!cv->name)
        return CLAPP_E_NOMEM;
    if (clapp_params_bind(info, conv3d_params, CONV3D_N_PARAMS, conv3d_fields,
                          (int32_t)(sizeof conv3d_fields / sizeof conv3d_fields[0]), cv) != CLAPP_OK)
        return CLAPP_E_INVAL;
    cv->relu = cv->activation == 0;
    cv->has_bias = cv->has_bias != 0;
    cv->bn = cv->bn != 0;
    cv->seed = info->seed;
    cv->mode = CLAPP_MODE_LEARN;
    if (cv->out_ch < 1 || cv->kt < 1 || cv->kh < 1 || cv->kw < 1 || cv->st < 1 || cv->sh < 1 ||
        cv->sw < 1 || cv->pt < 0 || cv->ph < 0 || cv->pw < 0) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: need out, kernel and stride >= 1 and padding >= 0 (got out=%lld "
                       "kernel %lldx%lldx%lld stride %lldx%lldx%lld pad %lldx%lldx%lld)",
                       (long long)cv->out_ch, (long long)cv->kt, (long long)cv->kh, (long long)cv->kw,
                       (long long)cv->st, (long long)cv->sh, (long long)cv->sw, (long long)cv->pt,
                       (long long)cv->ph, (long long)cv->pw);
        return CLAPP_E_INVAL;
    }
    if (!(cv->momentum >= 0.0 && cv->momentum <= 1.0) || !(cv->eps > 0.0) ||
        (cv->pool != CONV3D_POOL_NONE && cv->pool != CONV3D_POOL_1X3X3)) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: need bn_momentum in [0, 1], bn_eps > 0 and pool none|1x3x3 (got %g, %g, %d)",
                       cv->momentum, cv->eps, cv->pool);
        return CLAPP_E_INVAL;
    }
    return CLAPP_OK;
}

static int conv3d_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    conv3d *cv = self;
    int64_t B, cin, H, W, hc, wc;
    double big;
    int rc;
    if (!cv || !in || !out)
        return CLAPP_E_INVAL;
    if (in->ndim != 5 || in->shape[0] < 1 || in->shape[1] < 1 || in->shape[2] < 1 || in->shape[3] < 1 ||
        in->shape[4] < 1) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: input must be [B, C, T, H, W] with positive sizes (got %d dims)", in->ndim);
        return CLAPP_E_SHAPE;
    }
    B = in->shape[0];
    cin = in->shape[1];
    H = in->shape[3];
    W = in->shape[4];
    if (H + 2 * cv->ph < cv->kh || W + 2 * cv->pw < cv->kw) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: frame %lldx%lld with padding %lldx%lld is smaller than the kernel %lldx%lld",
                       (long long)H, (long long)W, (long long)cv->ph, (long long)cv->pw, (long long)cv->kh,
                       (long long)cv->kw);
        return CLAPP_E_SHAPE;
    }
    hc = (H + 2 * cv->ph - cv->kh) / cv->sh + 1;
    wc = (W + 2 * cv->pw - cv->kw) / cv->sw + 1;
    if (cv->pool == CONV3D_POOL_1X3X3 && (hc < CONV3D_POOL_K || wc < CONV3D_POOL_K)) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: the convolution gives %lldx%lld planes, too small for the 1x3x3 pool",
                       (long long)hc, (long long)wc);
        return CLAPP_E_SHAPE;
    }
    cv->configured = 0;
    cv->cached = 0;
    free_scratch(cv);
    /* Keep trained (or loaded) weights when only the block or frame size changes. */
    if (!cv->w.data || cv->cin != cin) {
        free_params(cv);
        cv->cin = cin;
        if ((rc = init_params(cv)) < 0)
            goto nomem;
    }
    cv->B = B;
    cv->t_in = in->shape[2];
    cv->H = H;
    cv->W = W;
    cv->hc = hc;
    cv->wc = wc;
    cv->P = hc * wc;
    if (cv->pool == CONV3D_POOL_1X3X3) {
        cv->ho = (hc - CONV3D_POOL_K) / CONV3D_POOL_S + 1;
        cv->wo = (wc - CONV3D_POOL_K) / CONV3D_POOL_S + 1;
    } else {
        cv->ho = hc;
        cv->wo = wc;
    }
    cv->Q = cv->ho * cv->wo;
    cv->K = cin * cv->kt * cv->kh * cv->kw;
    cv->HW = H * W;
    cv->frame = cin * cv->HW;
    cv->ctx_cap = cv->kt - 1 > cv->pt ? cv->kt - 1 : cv->pt;
    cv->stage_rows = cv->ctx_cap + cv->t_in + cv->pt;
    /* Worst case per block: a full context, a full block and the end padding. */
    cv->t_out = cv->stage_rows >= cv->kt ? (cv->stage_rows - cv->kt) / cv->st + 1 : 1;
    cv->max_frames = B * cv->t_out;
    cv->ncap = cv->max_frames * cv->P;
    cv->chunk = CONV3D_COLS_FLOATS / (cv->K * cv->P);
    if (cv->chunk < 1)
        cv->chunk = 1;
    if (cv->chunk > cv->t_out)
        cv->chunk = cv->t_out;
    big = (double)cv->ncap * (double)cv->out_ch;
    if ((double)cv->ncap > (double)INT_MAX || (double)cv->K * (double)cv->chunk * (double)cv->P > 4e9 ||
        big > 4e9 || (double)B * (double)cv->stage_rows * (double)cv->frame > 4e9) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: block too large (%lld output columns of %lld channels); use smaller blocks",
                       (long long)cv->ncap, (long long)cv->out_ch);
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    cv->cols = alloc_bytes(cv->K * cv->chunk * cv->P * (int64_t)sizeof(float));
    cv->pre = alloc_bytes(cv->out_ch * cv->ncap * (int64_t)sizeof(float));
    cv->act = alloc_bytes(cv->out_ch * cv->ncap * (int64_t)sizeof(float));
    cv->arg = alloc_bytes(cv->pool ? cv->out_ch * cv->max_frames * cv->Q * (int64_t)sizeof(int32_t) : 0);
    cv->mean = calloc((size_t)cv->out_ch, sizeof(double));
    cv->invstd = calloc((size_t)cv->out_ch, sizeof(double));
    cv->ctx = alloc_bytes(B * cv->ctx_cap * cv->frame * (int64_t)sizeof(float));
    cv->stage = alloc_bytes(B * cv->stage_rows * cv->frame * (int64_t)sizeof(float));
    cv->fptr = calloc((size_t)cv->stage_rows, sizeof *cv->fptr);
    cv->fstr = calloc((size_t)cv->stage_rows, sizeof *cv->fstr);
    cv->gframes = calloc((size_t)cv->kt, sizeof *cv->gframes);
    cv->gstr = calloc((size_t)cv->kt, sizeof *cv->gstr);
    cv->lanes = calloc((size_t)B, sizeof *cv->lanes);
    if (!cv->cols || !cv->pre || !cv->act || !cv->arg || !cv->stage || !cv->mean || !cv->invstd ||
        !cv->ctx || !cv->fptr || !cv->fstr || !cv->gframes || !cv->gstr || !cv->lanes)
        goto nomem;
    for (int64_t b = 0; b < B; b++)
        lane_restart(cv, b);
    memset(out, 0, sizeof *out);
    out->ndim = 5;
    out->shape[0] = B;
    out->shape[1] = cv->out_ch;
    out->shape[2] = cv->t_out;
    out->shape[3] = cv->ho;
    out->shape[4] = cv->wo;
    out->rate = in->rate / (double)cv->st;
    cv->configured = 1;
    return CLAPP_OK;
nomem:
    clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                   "conv3d: out of memory for parameters or scratch (%lld output columns x %lld channels)",
                   (long long)cv->ncap, (long long)cv->out_ch);
    rc = CLAPP_E_NOMEM;
fail:
    free_scratch(cv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* im2col / col2im                                                           */

/* Columns of one output frame: dst[r * ld + y * wc + x] for kernel row
 * r = ((c * kt + dt) * kh + dy) * kw + dx, reading padded frame `frames[dt]`
 * (NULL: a zero frame) with channel stride `cstr[dt]`. */
static void im2col_frame(const conv3d *cv, const float *const *frames, const int64_t *cstr, float *dst,
                         int64_t ld)
{
    const int64_t hc = cv->hc, wc = cv->wc, H = cv->H, W = cv->W;
    for (int64_t c = 0; c < cv->cin; c++)
        for (int64_t dt = 0; dt < cv->kt; dt++) {
            const float *plane = frames[dt] ? frames[dt] + c * cstr[dt] : NULL;
            for (int64_t dy = 0; dy < cv->kh; dy++) {
                int64_t y0, y1;
                valid_range(hc, H, cv->sh, dy, cv->ph, &y0, &y1);
                for (int64_t dx = 0; dx < cv->kw; dx++) {
                    int64_t r = ((c * cv->kt + dt) * cv->kh + dy) * cv->kw + dx;
                    float *row = dst + r * ld;
                    int64_t x0, x1;
                    if (!plane) {
                        memset(row, 0, (size_t)(hc * wc) * sizeof(float));
                        continue;
                    }
                    valid_range(wc, W, cv->sw, dx, cv->pw, &x0, &x1);
                    memset(row, 0, (size_t)(y0 * wc) * sizeof(float));
                    for (int64_t y = y0; y < y1; y++) {
                        const float *src = plane + (y * cv->sh + dy - cv->ph) * W + dx - cv->pw;
                        float *d = row + y * wc;
                        memset(d, 0, (size_t)x0 * sizeof(float));
                        if (cv->sw == 1)
                            memcpy(d + x0, src + x0, (size_t)(x1 - x0) * sizeof(float));
                        else
                            for (int64_t x = x0; x < x1; x++)
                                d[x] = src[x * cv->sw];
                        memset(d + x1, 0, (size_t)(wc - x1) * sizeof(float));
                    }
                    memset(row + y1 * wc, 0, (size_t)((hc - y1) * wc) * sizeof(float));
                }
            }
        }
}

/* The adjoint of im2col_frame: frames[dt][c * cstr[dt] + ...] += columns
 * (NULL frames are not this block's input: their gradient is dropped). */
static void col2im_frame(const conv3d *cv, float *const *frames, const int64_t *cstr, const float *src,
                         int64_t ld)
{
    const int64_t hc = cv->hc, wc = cv->wc, H = cv->H, W = cv->W;
    for (int64_t c = 0; c < cv->cin; c++)
        for (int64_t dt = 0; dt < cv->kt; dt++) {
            float *plane = frames[dt] ? frames[dt] + c * cstr[dt] : NULL;
            if (!plane)
                continue;
            for (int64_t dy = 0; dy < cv->kh; dy++) {
                int64_t y0, y1;
                valid_range(hc, H, cv->sh, dy, cv->ph, &y0, &y1);
                for (int64_t dx = 0; dx < cv->kw; dx++) {
                    int64_t r = ((c * cv->kt + dt) * cv->kh + dy) * cv->kw + dx;
                    const float *row = src + r * ld;
                    int64_t x0, x1;
                    valid_range(wc, W, cv->sw, dx, cv->pw, &x0, &x1);
                    for (int64_t y = y0; y < y1; y++) {
                        float *d = plane + (y * cv->sh + dy - cv->ph) * W + dx - cv->pw;
                        const float *s = row + y * wc;
                        for (int64_t x = x0; x < x1; x++)
                            d[x * cv->sw] += s[x];
                    }
                }
            }
        }
}

/* ------------------------------------------------------------------------ */
/* Streaming forward                                                         */

/* Point fptr/fstr at lane b's padded frames of the last block: staged
 * frames, then NULL (zero) frames of end padding. */
static void lane_frames(conv3d *cv, int64_t b)
{
    const conv3d_lane *l = &cv->lanes[b];
    const float *st = cv->stage + b * cv->stage_rows * cv->frame;
    for (int64_t i = 0; i < l->total; i++) {
        cv->fptr[i] = i < l->nreal ? st + i * cv->frame : NULL;
        cv->fstr[i] = cv->HW;
    }
}

/* im2col of output frames [j0, j0 + c) of lane b (lane_frames done) into cols [K, c * P]. */
static void lane_im2col(conv3d *cv, int64_t b, int64_t j0, int64_t c)
{
    const conv3d_lane *l = &cv->lanes[b];
    for (int64_t j = j0; j < j0 + c; j++) {
        int64_t i = l->start + j * cv->st;
        im2col_frame(cv, cv->fptr + i, cv->fstr + i, cv->cols + (j - j0) * cv->P, c * cv->P);
    }
}

/* Stage one lane's padded frames (carried context + this block's input; end
 * padding stays implicit), count its complete windows, and advance its
 * streaming state. The frames stay staged until the next forward, so
 * backward can rebuild the columns. Returns the number of output frames. */
static int64_t lane_forward(conv3d *cv, int64_t b, const clapp_block *in, int64_t off)
{
    conv3d_lane *l = &cv->lanes[b];
    const clapp_lane *meta = &in->lane[b];
    const int64_t s = cv->st, k = cv->kt, frame = cv->frame, HW = cv->HW;
    const int64_t len = meta->len;
    const int end = (meta->flags & CLAPP_LANE_SEQ_END) != 0;
    float *ctx = cv->ctx + b * cv->ctx_cap * frame;
    float *st = cv->stage + b * cv->stage_rows * frame;
    const float *x = in->x.data + b * cv->cin * cv->t_in * HW;
    int64_t start, avail, n, consumed, old_ctx;

    if (meta->flags & CLAPP_LANE_SEQ_START)
        lane_restart(cv, b);
    l->off = off;
    if (meta->seq_id < 0 && len == 0 && !(meta->flags & CLAPP_LANE_SEQ_START)) {
        /* Idle lane: no sequence, so no padding-only outputs (pt >= kt). */
        l->n = l->len = l->start = l->base = l->total = l->nreal = 0;
        return 0;
    }
    old_ctx = l->ctx_len;
    memcpy(st, ctx, (size_t)(old_ctx * frame) * sizeof(float));
    for (int64_t t = 0; t < len; t++)
        for (int64_t c = 0; c < cv->cin; c++)
            memcpy(st + (old_ctx + t) * frame + c * HW, x + (c * cv->t_in + t) * HW, (size_t)HW * sizeof(float));
    l->nreal = old_ctx + len;
    l->total = l->nreal + (end ? cv->pt : 0);
    start = min64(l->skip, l->total);
    avail = l->total - start;
    n = avail >= k ? (avail - k) / s + 1 : 0;
    l->n = n;
    l->start = start;
    l->base = old_ctx;
    l->len = len;
    if (end) {
        /* Ready for the next sequence even if its first block lacks SEQ_START. */
        lane_restart(cv, b);
        return n;
    }
    consumed = start + n * s;
    l->skip = (l->skip - start) + (consumed > l->total ? consumed - l->total : 0);
    l->ctx_len = consumed < l->total ? l->total - consumed : 0;
    /* Carry staged frames [consumed, total) (no padding: not at the end). */
    memcpy(ctx, st + consumed * frame, (size_t)(l->ctx_len * frame) * sizeof(float));
    l->emitted += n;
    return n;
}

/* Row o of pre (bias included): v = act(pre) (the BN input), its batch or
 * running statistics, then the normalised value in place. */
static void channel_post(conv3d *cv, int64_t o, int64_t N)
{
    const float *restrict a = cv->pre + o * cv->ncap;
    float *restrict v = cv->act + o * cv->ncap;
    if (cv->relu)
        for (int64_t j = 0; j < N; j++)
            v[j] = a[j] < 0.0f ? 0.0f : a[j];
    else
        memcpy(v, a, (size_t)N * sizeof(float));
    if (!cv->bn)
        return;
    if (cv->mode == CLAPP_MODE_LEARN) {
        double s1, s2, mean, var;
        row_moments(v, N, 0.0f, &s1, &s2);
        mean = s1 / (double)N;
        /* Centred second pass; s1 corrects the rounding of mean. */
        row_moments(v, N, (float)mean, &s1, &s2);
        mean += s1 / (double)N;
        var = s2 / (double)N - (s1 / (double)N) * (s1 / (double)N);
        var = var > 0.0 ? var : 0.0;
        cv->mean[o] = mean;
        cv->invstd[o] = 1.0 / sqrt(var + cv->eps);
        /* PyTorch: the running variance takes the unbiased estimate. */
        cv->rmean.data[o] = (float)((1.0 - cv->momentum) * cv->rmean.data[o] + cv->momentum * mean);
        if (N > 1)
            cv->rvar.data[o] = (float)((1.0 - cv->momentum) * cv->rvar.data[o] +
                                       cv->momentum * var * (double)N / (double)(N - 1));
    } else {
        cv->mean[o] = cv->rmean.data[o];
        cv->invstd[o] = 1.0 / sqrt((double)cv->rvar.data[o] + cv->eps);
    }
    {
        const float mu = (float)cv->mean[o];
        const float scale = (float)(cv->gamma.data[o] * cv->invstd[o]);
        const float shift = cv->beta.data[o];
        for (int64_t j = 0; j < N; j++)
            v[j] = (v[j] - mu) * scale + shift;
    }
}

/* 1x3x3 max-pool, stride 2, of one [hc, wc] plane; ties go to the first max. */
static void pool_plane(const conv3d *cv, const float *src, float *dst, int32_t *arg)
{
    for (int64_t oy = 0; oy < cv->ho; oy++)
        for (int64_t ox = 0; ox < cv->wo; ox++) {
            int64_t i0 = oy * CONV3D_POOL_S * cv->wc + ox * CONV3D_POOL_S, best = i0;
            for (int64_t dy = 0; dy < CONV3D_POOL_K; dy++)
                for (int64_t dx = 0; dx < CONV3D_POOL_K; dx++) {
                    int64_t i = i0 + dy * cv->wc + dx;
                    if (src[i] > src[best])
                        best = i;
                }
            dst[oy * cv->wo + ox] = src[best];
            arg[oy * cv->wo + ox] = (int32_t)best;
        }
}

static int conv3d_forward(void *self, const clapp_block *in, clapp_block *out)
{
    conv3d *cv = self;
    int64_t F = 0, N, M;
    if (!cv || !in || !out || !in->x.data || !out->x.data || !in->lane || !out->lane)
        return CLAPP_E_INVAL;
    if (!cv->configured) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name, "conv3d: forward before configure");
        return CLAPP_E_STATE;
    }
    M = cv->out_ch;
    if (in->x.ndim != 5 || in->x.shape[0] != cv->B || in->x.shape[1] != cv->cin ||
        in->x.shape[2] != cv->t_in || in->x.shape[3] != cv->H || in->x.shape[4] != cv->W ||
        in->lanes != cv->B || out->x.ndim != 5 || out->x.shape[0] != cv->B || out->x.shape[1] != M ||
        out->x.shape[2] != cv->t_out || out->x.shape[3] != cv->ho || out->x.shape[4] != cv->wo) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: block shape differs from the configured [%lld, %lld, %lld, %lld, %lld] -> "
                       "[%lld, %lld, %lld, %lld, %lld]",
                       (long long)cv->B, (long long)cv->cin, (long long)cv->t_in, (long long)cv->H,
                       (long long)cv->W, (long long)cv->B, (long long)M, (long long)cv->t_out,
                       (long long)cv->ho, (long long)cv->wo);
        return CLAPP_E_SHAPE;
    }
    for (int64_t b = 0; b < cv->B; b++) {
        if (in->lane[b].len < 0 || in->lane[b].len > cv->t_in) {
            clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                           "conv3d: lane %lld has len %d outside [0, %lld]", (long long)b, in->lane[b].len,
                           (long long)cv->t_in);
            return CLAPP_E_SHAPE;
        }
    }
    cv->cached = 0;
    for (int64_t b = 0; b < cv->B; b++) {
        int64_t pts = in->lane[b].flags & CLAPP_LANE_SEQ_START ? 0 : cv->lanes[b].emitted;
        int64_t n = lane_forward(cv, b, in, F);
        out->lane[b].len = (int32_t)n;
        out->lane[b].pts = pts;
        F += n;
    }
    cv->n_frames = F;
    N = F * cv->P;
    memset(out->x.data, 0, (size_t)clapp_tensor_numel(&out->x) * sizeof(float));
    if (N == 0)
        goto done;
    /* pre = bias + W . cols. The bias goes in first (beta = 1 then spares the
     * zeroing pass that beta = 0 costs), and the weight is read in place: its
     * [out, Cin, kt, kh, kw] order is cols' K order (the optimizer may have
     * stepped it since the last block). */
    for (int64_t o = 0; o < M; o++) {
        float *restrict a = cv->pre + o * cv->ncap;
        const float bias = cv->has_bias ? cv->b.data[o] : 0.0f;
        for (int64_t j = 0; j < N; j++)
            a[j] = bias;
    }
    for (int64_t b = 0; b < cv->B; b++) {
        const conv3d_lane *l = &cv->lanes[b];
        if (l->n > 0)
            lane_frames(cv, b);
        for (int64_t j0 = 0; j0 < l->n; j0 += cv->chunk) {
            int64_t c = min64(l->n - j0, cv->chunk);
            lane_im2col(cv, b, j0, c);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)(c * cv->P), (int)cv->K, 1.0f,
                        cv->w.data, (int)cv->K, cv->cols, (int)(c * cv->P), 1.0f,
                        cv->pre + (l->off + j0) * cv->P, (int)cv->ncap);
        }
    }
    for (int64_t o = 0; o < M; o++) {
        const float *v = cv->act + o * cv->ncap;
        channel_post(cv, o, N);
        for (int64_t b = 0; b < cv->B; b++) {
            const conv3d_lane *l = &cv->lanes[b];
            for (int64_t j = 0; j < l->n; j++) {
                int64_t f = l->off + j;
                float *y = out->x.data + ((b * M + o) * cv->t_out + j) * cv->Q;
                if (cv->pool)
                    pool_plane(cv, v + f * cv->P, y, cv->arg + (o * cv->max_frames + f) * cv->Q);
                else
                    memcpy(y, v + f * cv->P, (size_t)cv->P * sizeof(float));
            }
        }
    }
done:
    cv->cached = cv->mode == CLAPP_MODE_LEARN;
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Local backward                                                            */

/* dL/dpre of row o, in place in act (which holds dL/d(layer output before pool)). */
static void channel_grad(conv3d *cv, int64_t o, int64_t N)
{
    float *restrict d = cv->act + o * cv->ncap;
    const float *restrict a = cv->pre + o * cv->ncap;
    const int relu = cv->relu;
    if (cv->bn) {
        /* Batch-statistics BN: dv = gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)),
         * xhat = (act(pre) - mean) * invstd recomputed from pre. */
        const double is = cv->invstd[o];
        const float mu = (float)cv->mean[o];
        double sdy, sdyc;
        float scale, k1, k2;
        row_grad_moments(d, a, N, mu, relu, &sdy, &sdyc);
        cv->ggamma.data[o] += (float)(sdyc * is);
        cv->gbeta.data[o] += (float)sdy;
        scale = (float)(cv->gamma.data[o] * is);
        k1 = (float)(sdy / (double)N);
        k2 = (float)(sdyc * is * is / (double)N);
        for (int64_t j = 0; j < N; j++) {
            float v = relu && a[j] < 0.0f ? 0.0f : a[j];
            float g = scale * (d[j] - k1 - (v - mu) * k2);
            d[j] = relu && !(a[j] > 0.0f) ? 0.0f : g;
        }
    } else if (relu) {
        for (int64_t j = 0; j < N; j++)
            d[j] = a[j] > 0.0f ? d[j] : 0.0f;
    }
    if (cv->has_bias) {
        double s1, s2;
        row_moments(d, N, 0.0f, &s1, &s2);
        cv->gb.data[o] += (float)s1;
    }
}

static int conv3d_backward(void *self, const clapp_tensor *grad_out, clapp_tensor *grad_in)
{
    conv3d *cv = self;
    int64_t M, N, K;
    if (!cv || !grad_out || !grad_out->data)
        return CLAPP_E_INVAL;
    if (!cv->cached) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: backward without a learning-mode forward before it");
        return CLAPP_E_STATE;
    }
    M = cv->out_ch;
    N = cv->n_frames * cv->P;
    K = cv->K;
    if (grad_out->ndim != 5 || grad_out->shape[0] != cv->B || grad_out->shape[1] != M ||
        grad_out->shape[2] != cv->t_out || grad_out->shape[3] != cv->ho || grad_out->shape[4] != cv->wo ||
        (grad_in && (!grad_in->data || grad_in->ndim != 5 || grad_in->shape[0] != cv->B ||
                     grad_in->shape[1] != cv->cin || grad_in->shape[2] != cv->t_in ||
                     grad_in->shape[3] != cv->H || grad_in->shape[4] != cv->W))) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv3d: gradient shapes differ from the configured output/input");
        return CLAPP_E_SHAPE;
    }
    if (N == 0)
        return CLAPP_OK;

    /* dL/d(pre-pool values), gathered into the column layout of act. */
    for (int64_t o = 0; o < M; o++) {
        float *d = cv->act + o * cv->ncap;
        if (cv->pool)
            memset(d, 0, (size_t)N * sizeof(float));
        for (int64_t b = 0; b < cv->B; b++) {
            const conv3d_lane *l = &cv->lanes[b];
            for (int64_t j = 0; j < l->n; j++) {
                int64_t f = l->off + j;
                const float *g = grad_out->data + ((b * M + o) * cv->t_out + j) * cv->Q;
                float *dp = d + f * cv->P;
                if (cv->pool) {
                    const int32_t *arg = cv->arg + (o * cv->max_frames + f) * cv->Q;
                    for (int64_t q = 0; q < cv->Q; q++)
                        dp[arg[q]] += g[q];
                } else {
                    memcpy(dp, g, (size_t)cv->P * sizeof(float));
                }
            }
        }
        channel_grad(cv, o, N);
    }
    /* Per chunk of a lane's output frames: rebuild the columns from the staged
     * frames, dW += dA . cols^T, then (if asked) dcols = W^T . dA into the same
     * buffer and col2im onto this block's input frames only: carried context
     * and padding are dropped. */
    for (int64_t b = 0; b < cv->B; b++) {
        const conv3d_lane *l = &cv->lanes[b];
        float *gx = grad_in ? grad_in->data + b * cv->cin * cv->t_in * cv->HW : NULL;
        if (l->n > 0)
            lane_frames(cv, b);
        for (int64_t j0 = 0; j0 < l->n; j0 += cv->chunk) {
            int64_t c = min64(l->n - j0, cv->chunk), ld = c * cv->P;
            const float *da = cv->act + (l->off + j0) * cv->P;
            lane_im2col(cv, b, j0, c);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)K, (int)ld, 1.0f, da,
                        (int)cv->ncap, cv->cols, (int)ld, 1.0f, cv->gw.data, (int)K);
            if (!gx)
                continue;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)ld, (int)M, 1.0f, cv->w.data,
                        (int)K, da, (int)cv->ncap, 0.0f, cv->cols, (int)ld);
            for (int64_t j = j0; j < j0 + c; j++) {
                int64_t first = l->start + j * cv->st;
                for (int64_t dt = 0; dt < cv->kt; dt++) {
                    int64_t i = first + dt - l->base;
                    cv->gframes[dt] = i >= 0 && i < l->len ? gx + i * cv->HW : NULL;
                    cv->gstr[dt] = cv->t_in * cv->HW;
                }
                col2im_frame(cv, cv->gframes, cv->gstr, cv->cols + (j - j0) * cv->P, ld);
            }
        }
    }
    return CLAPP_OK;
}

static int conv3d_reset(void *self, int32_t lane)
{
    conv3d *cv = self;
    if (!cv || !cv->configured)
        return cv ? CLAPP_E_STATE : CLAPP_E_INVAL;
    if (lane >= cv->B) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name, "conv3d: reset of lane %d, only %lld lanes", lane,
                       (long long)cv->B);
        return CLAPP_E_INVAL;
    }
    for (int64_t b = lane < 0 ? 0 : lane; b < (lane < 0 ? cv->B : lane + 1); b++)
        lane_restart(cv, b);
    return CLAPP_OK;
}

static int conv3d_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    conv3d *cv = self;
    if (!cv || !list || !count)
        return CLAPP_E_INVAL;
    if (!cv->w.data) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name, "conv3d: tensors before configure");
        return CLAPP_E_STATE;
    }
    *list = cv->list;
    *count = cv->n_list;
    return CLAPP_OK;
}

static int conv3d_set_mode(void *self, clapp_mode mode)
{
    conv3d *cv = self;
    if (!cv || (mode != CLAPP_MODE_LEARN && mode != CLAPP_MODE_FROZEN))
        return CLAPP_E_INVAL;
    cv->mode = mode;
    cv->cached = 0;
    return CLAPP_OK;
}

static const clapp_plugin_desc conv3d_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "conv3d",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LAYER,
    .help = "streaming 3-D convolution (video; kt=1 for images) + ReLU [+ BatchNorm3d] [+ 1x3x3 max-pool], "
            "local backward",
    .params = conv3d_params,
    .n_params = CONV3D_N_PARAMS,
    .create = conv3d_create,
    .destroy = conv3d_destroy,
    .configure = conv3d_configure,
    .forward = conv3d_forward,
    .backward = conv3d_backward,
    .reset = conv3d_reset,
    .tensors = conv3d_tensors,
    .set_mode = conv3d_set_mode,
    .finish = NULL,
};

CLAPP_PLUGIN_ENTRY(&conv3d_desc);
