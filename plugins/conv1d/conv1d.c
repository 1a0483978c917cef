/* conv1d — a streaming 1-D convolution layer (PyTorch Conv1d semantics) with
 * optional ReLU and a local backward.
 *
 * Input [B, Cin, T], output [B, out, T_out] at rate/stride. Per lane, the
 * sequence is the zero-padded signal (pad zeros on the left at SEQ_START, pad
 * zeros on the right at SEQ_END); output j reads padded samples
 * [j*stride, j*stride + kernel). Each forward emits every output whose window
 * is complete and carries the unused tail (< kernel steps) to the next block,
 * so a sequence cut into any blocks gives the same outputs as one block:
 * floor((N + 2 pad - kernel) / stride) + 1 frames in total.
 *
 * Compute: the padded input of a lane is staged time-major ([steps, Cin]), so
 * the receptive field of output j is ONE contiguous run of kernel*Cin floats;
 * im2col is then a memcpy per output column. All lanes' columns go into one
 * GEMM (M = out, N = sum of lane outputs, K = Cin*kernel). The weight is
 * permuted once per forward to the matching [out, kernel, Cin] order.
 *
 * Backward: dA = grad_out * 1[a > 0]; dW = dA . cols (one GEMM over all lanes),
 * db = row sums of dA; dcols = dA^T . W in column chunks, scattered back
 * (col2im) and added to grad_in for this block's input steps only. The part
 * that falls on context carried from the previous block is dropped: gradients
 * do not cross blocks.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/plugin.h"
#include "clapp/plugin_util.h"

#define CONV1D_TILE 32                       /* transpose tile (cache-friendly) */
#define CONV1D_DCOLS_FLOATS (4L << 20)      /* backward dcols chunk: ~16 MB */

typedef struct conv1d_lane {
    int64_t ctx_len;  /* carried padded-input steps, time-major rows in ctx */
    int64_t skip;     /* upcoming padded steps to drop (only when stride > kernel) */
    int64_t emitted;  /* outputs emitted so far in this sequence */
    /* The last forward, for backward: */
    int64_t off;      /* first column of this lane in cols / pre */
    int64_t n;        /* outputs (columns) of this lane */
    int64_t start;    /* staged row where column 0's window begins */
    int64_t base;     /* staged row of input step 0 (= carried context length) */
    int64_t len;      /* input steps of the block */
} conv1d_lane;

typedef struct conv1d {
    const clapp_host *host;
    char             *name;
    int64_t           out_ch, kernel, stride, pad;
    int               activation, relu, has_bias;   /* activation: choice index (0: relu) */
    uint64_t          seed;
    clapp_mode        mode;
    int               configured;
    int               cached;      /* the last forward kept what backward needs */

    int64_t B, cin, t_in, t_out;   /* configured shapes */
    int64_t kdim;                  /* Cin * kernel */
    int64_t ctx_cap;               /* max carried steps: max(kernel-1, pad) */
    int64_t stage_rows;            /* ctx_cap + t_in + pad */
    int64_t chunk;                 /* backward dcols columns per GEMM */
    int64_t n_total;               /* columns of the last forward */

    clapp_tensor       w, gw, b, gb;
    clapp_named_tensor list[2];
    int32_t            n_list;

    float       *wp;     /* [out, kernel, cin] weight in im2col order */
    float       *cols;   /* [B * t_out, kdim] im2col columns, one row per output */
    float       *pre;    /* [out, B * t_out] pre-activations (incl. bias) */
    float       *da;     /* [out, B * t_out] dL/da */
    float       *dwp;    /* [out, kdim] dL/dW in im2col order */
    float       *dcols;  /* [chunk, kdim] */
    float       *stage;  /* [stage_rows, cin] one lane's padded input, time-major */
    float       *ctx;    /* [B, ctx_cap, cin] carried context per lane */
    conv1d_lane *lanes;
} conv1d;

static const clapp_param_desc conv1d_params[] = {
    {"out", CLAPP_PARAM_INT, "512", 1, 65536, NULL, "output channels"},
    {"kernel", CLAPP_PARAM_INT, "10", 1, 65536, NULL, "kernel size in time steps"},
    {"stride", CLAPP_PARAM_INT, "5", 1, 65536, NULL, "stride in time steps (output rate = input rate / stride)"},
    {"pad", CLAPP_PARAM_INT, "2", 0, 65536, NULL, "zeros added at the start and end of each sequence"},
    {"activation", CLAPP_PARAM_ENUM, "relu", 0, 0, "relu|none", "nonlinearity after the convolution"},
    {"bias", CLAPP_PARAM_BOOL, "true", 0, 1, NULL, "learn a bias per output channel"},
};
#define CONV1D_N_PARAMS ((int32_t)(sizeof conv1d_params / sizeof conv1d_params[0]))

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

/* Uniform in [-bound, bound): 24 random bits, exact in float. */
static float uniform_sym(uint64_t *state, double bound)
{
    return (float)(bound * (2.0 * clapp_uniform24(state) - 1.0));
}

static void *alloc_floats(int64_t n) { return clapp_aligned_calloc(n, sizeof(float)); }

/* dst[t * C + c] = src[c * ld + t] for c < C, t < T. */
static void to_time_major(const float *src, int64_t ld, int64_t C, int64_t T, float *dst)
{
    if (C == 1) {
        memcpy(dst, src, (size_t)T * sizeof(float));
        return;
    }
    for (int64_t t0 = 0; t0 < T; t0 += CONV1D_TILE) {
        int64_t t1 = t0 + CONV1D_TILE < T ? t0 + CONV1D_TILE : T;
        for (int64_t c0 = 0; c0 < C; c0 += CONV1D_TILE) {
            int64_t c1 = c0 + CONV1D_TILE < C ? c0 + CONV1D_TILE : C;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t t = t0; t < t1; t++)
                    dst[t * C + c] = src[c * ld + t];
        }
    }
}

/* dst[c * ld + t] += src[t * C + c] for c < C, t < T. */
static void add_channel_major(const float *src, int64_t C, int64_t T, float *dst, int64_t ld)
{
    for (int64_t t0 = 0; t0 < T; t0 += CONV1D_TILE) {
        int64_t t1 = t0 + CONV1D_TILE < T ? t0 + CONV1D_TILE : T;
        for (int64_t c0 = 0; c0 < C; c0 += CONV1D_TILE) {
            int64_t c1 = c0 + CONV1D_TILE < C ? c0 + CONV1D_TILE : C;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t t = t0; t < t1; t++)
                    dst[c * ld + t] += src[t * C + c];
        }
    }
}

/* The hot elementwise loops, with restrict so the compiler vectorizes them. */
static void add_into(float *restrict dst, const float *restrict src, int64_t n)
{
    for (int64_t e = 0; e < n; e++)
        dst[e] += src[e];
}

/* a += bias (kept for backward); y = act(a). */
static void bias_act(float *restrict a, float *restrict y, int64_t n, float bias, int relu)
{
    for (int64_t j = 0; j < n; j++) {
        float v = a[j] + bias;
        a[j] = v;
        y[j] = relu && v < 0.0f ? 0.0f : v;
    }
}

/* d = g * act'(a). */
static void act_grad(float *restrict d, const float *restrict g, const float *restrict a, int64_t n,
                     int relu)
{
    if (!relu) {
        memcpy(d, g, (size_t)n * sizeof(float));
        return;
    }
    for (int64_t j = 0; j < n; j++)
        d[j] = a[j] > 0.0f ? g[j] : 0.0f;
}

/* Start a sequence: pad zeros of left context, nothing emitted. */
static void lane_restart(conv1d *cv, int64_t b)
{
    conv1d_lane *l = &cv->lanes[b];
    l->ctx_len = cv->pad;
    l->skip = 0;
    l->emitted = 0;
    memset(cv->ctx + b * cv->ctx_cap * cv->cin, 0, (size_t)(cv->pad * cv->cin) * sizeof(float));
}

static void free_scratch(conv1d *cv)
{
    free(cv->wp);
    free(cv->cols);
    free(cv->pre);
    free(cv->da);
    free(cv->dwp);
    free(cv->dcols);
    free(cv->stage);
    free(cv->ctx);
    free(cv->lanes);
    cv->wp = cv->cols = cv->pre = cv->da = cv->dwp = cv->dcols = cv->stage = cv->ctx = NULL;
    cv->lanes = NULL;
}

static void free_params(conv1d *cv)
{
    clapp_tensor_free(&cv->w);
    clapp_tensor_free(&cv->gw);
    clapp_tensor_free(&cv->b);
    clapp_tensor_free(&cv->gb);
}

/* PyTorch's Conv1d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
static int init_params(conv1d *cv)
{
    int64_t wshape[3] = {cv->out_ch, cv->cin, cv->kernel};
    int64_t bshape[1] = {cv->out_ch};
    uint64_t state = cv->seed;
    double bound = 1.0 / sqrt((double)(cv->cin * cv->kernel));
    if (clapp_tensor_alloc_shape(&cv->w, 3, wshape) || clapp_tensor_alloc_shape(&cv->gw, 3, wshape))
        return CLAPP_E_NOMEM;
    for (int64_t i = 0; i < clapp_tensor_numel(&cv->w); i++)
        cv->w.data[i] = uniform_sym(&state, bound);
    cv->n_list = 0;
    cv->list[cv->n_list++] = (clapp_named_tensor){"weight", &cv->w, &cv->gw};
    if (cv->has_bias) {
        if (clapp_tensor_alloc_shape(&cv->b, 1, bshape) || clapp_tensor_alloc_shape(&cv->gb, 1, bshape))
            return CLAPP_E_NOMEM;
        for (int64_t i = 0; i < cv->out_ch; i++)
            cv->b.data[i] = uniform_sym(&state, bound);
        cv->list[cv->n_list++] = (clapp_named_tensor){"bias", &cv->b, &cv->gb};
    }
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

static void conv1d_destroy(void *self)
{
    conv1d *cv = self;
    if (!cv)
        return;
    free_scratch(cv);
    free_params(cv);
    free(cv->name);
    free(cv);
}

static const clapp_param_field conv1d_fields[] = {
    CLAPP_FIELD_AS(conv1d, out_ch, "out"), CLAPP_FIELD(conv1d, kernel), CLAPP_FIELD(conv1d, stride),
    CLAPP_FIELD(conv1d, pad),              CLAPP_FIELD(conv1d, activation),
    CLAPP_FIELD_AS(conv1d, has_bias, "bias"),
};

static int conv1d_create(const clapp_create_info *info, void **self)
{
    conv1d *cv = calloc(1, sizeof *cv);
    *self = cv;
    if (!cv)
        return CLAPP_E_NOMEM;
    cv->host = info->host;
    cv->name = strdup(info->instance_name ? info->instance_name : "conv1d");
    if (!cv->name)
        return CLAPP_E_NOMEM;
    if (clapp_params_bind(info, conv1d_params, CONV1D_N_PARAMS, conv1d_fields,
                          (int32_t)(sizeof conv1d_fields / sizeof conv1d_fields[0]), cv) != CLAPP_OK)
        return CLAPP_E_INVAL;
    cv->relu = cv->activation == 0;
    cv->has_bias = cv->has_bias != 0;
    cv->seed = info->seed;
    cv->mode = CLAPP_MODE_LEARN;
    if (cv->out_ch < 1 || cv->kernel < 1 || cv->stride < 1 || cv->pad < 0) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: need out, kernel, stride >= 1 and pad >= 0 (got out=%lld kernel=%lld "
                       "stride=%lld pad=%lld)",
                       (long long)cv->out_ch, (long long)cv->kernel, (long long)cv->stride,
                       (long long)cv->pad);
        return CLAPP_E_INVAL;
    }
    return CLAPP_OK;
}

static int conv1d_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    conv1d *cv = self;
    int64_t B, cin, t_in, avail_max, n_cols;
    int rc;
    if (!cv || !in || !out)
        return CLAPP_E_INVAL;
    if (in->ndim != 3 || in->shape[0] < 1 || in->shape[1] < 1 || in->shape[2] < 1) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: input must be [B, C, T] with positive sizes (got %d dims)", in->ndim);
        return CLAPP_E_SHAPE;
    }
    B = in->shape[0];
    cin = in->shape[1];
    t_in = in->shape[2];
    cv->configured = 0;
    cv->cached = 0;
    free_scratch(cv);
    /* Keep trained (or loaded) weights when only the block size changes. */
    if (!cv->w.data || cv->cin != cin) {
        free_params(cv);
        cv->cin = cin;
        if ((rc = init_params(cv)) < 0)
            goto fail;
    }
    cv->B = B;
    cv->t_in = t_in;
    cv->kdim = cin * cv->kernel;
    cv->ctx_cap = cv->kernel - 1 > cv->pad ? cv->kernel - 1 : cv->pad;
    cv->stage_rows = cv->ctx_cap + t_in + cv->pad;
    /* Worst case per block: a full context, a full block and the right pad. */
    avail_max = cv->stage_rows;
    cv->t_out = avail_max >= cv->kernel ? (avail_max - cv->kernel) / cv->stride + 1 : 1;
    n_cols = B * cv->t_out;
    cv->chunk = CONV1D_DCOLS_FLOATS / cv->kdim;
    if (cv->chunk < 1)
        cv->chunk = 1;
    if (cv->chunk > cv->t_out)
        cv->chunk = cv->t_out;
    if ((double)n_cols * (double)cv->kdim > 4e9 || (double)cv->stage_rows * (double)cin > 4e9) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: block too large for im2col (%lld columns of %lld); use smaller blocks",
                       (long long)n_cols, (long long)cv->kdim);
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    cv->wp = alloc_floats(cv->out_ch * cv->kdim);
    cv->cols = alloc_floats(n_cols * cv->kdim);
    cv->pre = alloc_floats(cv->out_ch * n_cols);
    cv->da = alloc_floats(cv->out_ch * n_cols);
    cv->dwp = alloc_floats(cv->out_ch * cv->kdim);
    cv->dcols = alloc_floats(cv->chunk * cv->kdim);
    cv->stage = alloc_floats(cv->stage_rows * cin);
    cv->ctx = alloc_floats(B * cv->ctx_cap * cin);
    cv->lanes = calloc((size_t)B, sizeof *cv->lanes);
    if (!cv->wp || !cv->cols || !cv->pre || !cv->da || !cv->dwp || !cv->dcols || !cv->stage ||
        !cv->ctx || !cv->lanes) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: out of memory for scratch (%lld columns x %lld)", (long long)n_cols,
                       (long long)cv->kdim);
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    for (int64_t b = 0; b < B; b++)
        lane_restart(cv, b);
    memset(out, 0, sizeof *out);
    out->ndim = 3;
    out->shape[0] = B;
    out->shape[1] = cv->out_ch;
    out->shape[2] = cv->t_out;
    out->rate = in->rate / (double)cv->stride;
    cv->configured = 1;
    return CLAPP_OK;
fail:
    free_scratch(cv);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Streaming forward                                                         */

/* Stage one lane (context + new input [+ right pad]), write its im2col
 * columns at cols[off..], and advance its streaming state. */
static int64_t lane_forward(conv1d *cv, int64_t b, const clapp_block *in, int64_t off)
{
    conv1d_lane *l = &cv->lanes[b];
    const clapp_lane *meta = &in->lane[b];
    const int64_t cin = cv->cin, s = cv->stride, k = cv->kernel;
    const int64_t len = meta->len;
    const int end = (meta->flags & CLAPP_LANE_SEQ_END) != 0;
    float *ctx = cv->ctx + b * cv->ctx_cap * cin;
    float *st = cv->stage;
    int64_t total, start, avail, n, consumed;

    if (meta->flags & CLAPP_LANE_SEQ_START)
        lane_restart(cv, b);
    if (meta->seq_id < 0 && len == 0 && !(meta->flags & CLAPP_LANE_SEQ_START)) {
        /* Idle lane: no sequence, so no padding-only outputs (pad >= kernel). */
        l->off = off;
        l->n = l->len = l->start = l->base = 0;
        return 0;
    }
    memcpy(st, ctx, (size_t)(l->ctx_len * cin) * sizeof(float));
    to_time_major(in->x.data + b * cin * cv->t_in, cv->t_in, cin, len, st + l->ctx_len * cin);
    total = l->ctx_len + len;
    if (end) {
        memset(st + total * cin, 0, (size_t)(cv->pad * cin) * sizeof(float));
        total += cv->pad;
    }
    start = l->skip < total ? l->skip : total;
    avail = total - start;
    n = avail >= k ? (avail - k) / s + 1 : 0;
    for (int64_t j = 0; j < n; j++)
        memcpy(cv->cols + (off + j) * cv->kdim, st + (start + j * s) * cin,
               (size_t)cv->kdim * sizeof(float));

    l->off = off;
    l->n = n;
    l->start = start;
    l->base = l->ctx_len;
    l->len = len;
    if (end) {
        /* Ready for the next sequence even if its first block lacks SEQ_START. */
        lane_restart(cv, b);
        return n;
    }
    consumed = start + n * s;
    l->skip = (l->skip - start) + (consumed > total ? consumed - total : 0);
    l->ctx_len = consumed < total ? total - consumed : 0;
    memmove(ctx, st + consumed * cin, (size_t)(l->ctx_len * cin) * sizeof(float));
    l->emitted += n;
    return n;
}

static int conv1d_forward(void *self, const clapp_block *in, clapp_block *out)
{
    conv1d *cv = self;
    const int64_t M = cv ? cv->out_ch : 0;
    int64_t N = 0;
    if (!cv || !in || !out)
        return CLAPP_E_INVAL;
    if (!cv->configured) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name, "conv1d: forward before configure");
        return CLAPP_E_STATE;
    }
    if (in->x.ndim != 3 || in->x.shape[0] != cv->B || in->x.shape[1] != cv->cin ||
        in->x.shape[2] != cv->t_in || in->lanes != cv->B || out->x.ndim != 3 ||
        out->x.shape[0] != cv->B || out->x.shape[1] != M || out->x.shape[2] != cv->t_out) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: block shape differs from the configured [%lld, %lld, %lld] -> "
                       "[%lld, %lld, %lld]",
                       (long long)cv->B, (long long)cv->cin, (long long)cv->t_in, (long long)cv->B,
                       (long long)M, (long long)cv->t_out);
        return CLAPP_E_SHAPE;
    }
    for (int64_t b = 0; b < cv->B; b++) {
        if (in->lane[b].len < 0 || in->lane[b].len > cv->t_in) {
            clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                           "conv1d: lane %lld has len %d outside [0, %lld]", (long long)b,
                           in->lane[b].len, (long long)cv->t_in);
            return CLAPP_E_SHAPE;
        }
    }
    cv->cached = 0;
    /* The optimizer may have stepped the weights since the last block. */
    for (int64_t o = 0; o < M; o++)
        for (int64_t i = 0; i < cv->cin; i++)
            for (int64_t kk = 0; kk < cv->kernel; kk++)
                cv->wp[o * cv->kdim + kk * cv->cin + i] = cv->w.data[(o * cv->cin + i) * cv->kernel + kk];

    for (int64_t b = 0; b < cv->B; b++) {
        int64_t pts = in->lane[b].flags & CLAPP_LANE_SEQ_START ? 0 : cv->lanes[b].emitted;
        int64_t n = lane_forward(cv, b, in, N);
        out->lane[b].len = (int32_t)n;
        out->lane[b].pts = pts;
        N += n;
    }
    cv->n_total = N;
    if (N > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)cv->kdim, 1.0f,
                    cv->wp, (int)cv->kdim, cv->cols, (int)cv->kdim, 0.0f, cv->pre, (int)N);

    /* Bias and activation while scattering columns back to lanes. */
    for (int64_t b = 0; b < cv->B; b++) {
        const conv1d_lane *l = &cv->lanes[b];
        for (int64_t o = 0; o < M; o++) {
            float *a = cv->pre + o * N + l->off;
            float *y = out->x.data + (b * M + o) * cv->t_out;
            bias_act(a, y, l->n, cv->has_bias ? cv->b.data[o] : 0.0f, cv->relu);
            memset(y + l->n, 0, (size_t)(cv->t_out - l->n) * sizeof(float));
        }
    }
    cv->cached = cv->mode == CLAPP_MODE_LEARN;
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Local backward                                                            */

static int conv1d_backward(void *self, const clapp_tensor *grad_out, clapp_tensor *grad_in)
{
    conv1d *cv = self;
    int64_t M, N, K;
    if (!cv || !grad_out)
        return CLAPP_E_INVAL;
    if (!cv->cached) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: backward without a learning-mode forward before it");
        return CLAPP_E_STATE;
    }
    M = cv->out_ch;
    N = cv->n_total;
    K = cv->kdim;
    if (grad_out->ndim != 3 || grad_out->shape[0] != cv->B || grad_out->shape[1] != M ||
        grad_out->shape[2] != cv->t_out ||
        (grad_in && (grad_in->ndim != 3 || grad_in->shape[0] != cv->B || grad_in->shape[1] != cv->cin ||
                     grad_in->shape[2] != cv->t_in))) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name,
                       "conv1d: gradient shapes differ from the configured output/input");
        return CLAPP_E_SHAPE;
    }
    if (N == 0)
        return CLAPP_OK;

    /* dA = grad_out * relu'(a), gathered into the [out, N] column layout. */
    for (int64_t b = 0; b < cv->B; b++) {
        const conv1d_lane *l = &cv->lanes[b];
        for (int64_t o = 0; o < M; o++) {
            const float *g = grad_out->data + (b * M + o) * cv->t_out;
            const float *a = cv->pre + o * N + l->off;
            float *d = cv->da + o * N + l->off;
            act_grad(d, g, a, l->n, cv->relu);
        }
    }
    if (cv->has_bias) {
        for (int64_t o = 0; o < M; o++) {
            double sum = 0.0;
            const float *d = cv->da + o * N;
            for (int64_t n = 0; n < N; n++)
                sum += d[n];
            cv->gb.data[o] += (float)sum;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)K, (int)N, 1.0f, cv->da, (int)N,
                cv->cols, (int)K, 0.0f, cv->dwp, (int)K);
    for (int64_t o = 0; o < M; o++)
        for (int64_t i = 0; i < cv->cin; i++)
            for (int64_t kk = 0; kk < cv->kernel; kk++)
                cv->gw.data[(o * cv->cin + i) * cv->kernel + kk] += cv->dwp[o * K + kk * cv->cin + i];

    if (!grad_in)
        return CLAPP_OK;
    for (int64_t b = 0; b < cv->B; b++) {
        const conv1d_lane *l = &cv->lanes[b];
        int64_t rows, first, last;
        if (l->n == 0)
            continue;
        rows = l->start + (l->n - 1) * cv->stride + cv->kernel;
        memset(cv->stage, 0, (size_t)(rows * cv->cin) * sizeof(float));
        for (int64_t c0 = 0; c0 < l->n; c0 += cv->chunk) {
            int64_t c = l->n - c0 < cv->chunk ? l->n - c0 : cv->chunk;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, (int)K, (int)M, 1.0f,
                        cv->da + l->off + c0, (int)N, cv->wp, (int)K, 0.0f, cv->dcols, (int)K);
            /* col2im: each column's window is one contiguous run of staged rows. */
            for (int64_t j = 0; j < c; j++)
                add_into(cv->stage + (l->start + (c0 + j) * cv->stride) * cv->cin, cv->dcols + j * K, K);
        }
        /* Only this block's input steps: carried context and right pad are dropped. */
        first = l->base;
        last = l->base + l->len < rows ? l->base + l->len : rows;
        if (last > first)
            add_channel_major(cv->stage + first * cv->cin, cv->cin, last - first,
                              grad_in->data + b * cv->cin * cv->t_in, cv->t_in);
    }
    return CLAPP_OK;
}

static int conv1d_reset(void *self, int32_t lane)
{
    conv1d *cv = self;
    if (!cv || !cv->configured)
        return cv ? CLAPP_E_STATE : CLAPP_E_INVAL;
    if (lane >= cv->B) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name, "conv1d: reset of lane %d, only %lld lanes",
                       lane, (long long)cv->B);
        return CLAPP_E_INVAL;
    }
    for (int64_t b = lane < 0 ? 0 : lane; b < (lane < 0 ? cv->B : lane + 1); b++)
        lane_restart(cv, b);
    return CLAPP_OK;
}

static int conv1d_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    conv1d *cv = self;
    if (!cv || !list || !count)
        return CLAPP_E_INVAL;
    if (!cv->w.data) {
        clapp_host_log(cv->host, CLAPP_LOG_ERROR, cv->name, "conv1d: tensors before configure");
        return CLAPP_E_STATE;
    }
    *list = cv->list;
    *count = cv->n_list;
    return CLAPP_OK;
}

static int conv1d_set_mode(void *self, clapp_mode mode)
{
    conv1d *cv = self;
    if (!cv || (mode != CLAPP_MODE_LEARN && mode != CLAPP_MODE_FROZEN))
        return CLAPP_E_INVAL;
    cv->mode = mode;
    cv->cached = 0;
    return CLAPP_OK;
}

static const clapp_plugin_desc conv1d_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "conv1d",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LAYER,
    .help = "streaming 1-D convolution (PyTorch Conv1d padding semantics) + ReLU, local backward",
    .params = conv1d_params,
    .n_params = CONV1D_N_PARAMS,
    .create = conv1d_create,
    .destroy = conv1d_destroy,
    .configure = conv1d_configure,
    .forward = conv1d_forward,
    .backward = conv1d_backward,
    .reset = conv1d_reset,
    .tensors = conv1d_tensors,
    .set_mode = conv1d_set_mode,
    .finish = NULL,
};

CLAPP_PLUGIN_ENTRY(&conv1d_desc);
