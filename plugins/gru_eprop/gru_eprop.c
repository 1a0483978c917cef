/* gru_eprop — a streaming GRU layer (PyTorch gate convention) that learns
 * online with e-prop (eligibility traces carried across blocks) or with BPTT
 * truncated at the block boundary.
 *
 * Input [B, D, T], output [B, H, T] at the same rate. Per lane the hidden
 * state is carried from block to block and reset to 0 at SEQ_START (and by
 * reset()). Steps past a lane's len output 0 and leave the state unchanged;
 * they are stored as identity transitions (r = 0, z = 1, n = g = 0), so every
 * backward formula below gives exactly zero for them without special cases.
 *
 * Forward, with row = t*B + b (time-major, so one step's lanes are contiguous):
 *   gates = X W_ih^T                         one GEMM over all lanes and steps
 *   per step: gh = h_{t-1} W_hh^T            one GEMM over lanes
 *   r = s(gi_r + b_ir + gh_r + b_hr), z = s(gi_z + b_iz + gh_z + b_hz),
 *   g = gh_n + b_hn, n = tanh(gi_n + b_in + r g), h = (1 - z) n + z h_{t-1}.
 * LEARN mode keeps X, h_{t-1}, r, z, n, g of the block.
 *
 * e-prop (docs/ALGORITHMS.md §6.2, §6.4): in the network where the gates see
 * block_grad(h_{t-1}), dh_t,i/dθ is non-zero only for parameters of row i and
 * obeys e_t = ψ_t pre_t + z_t,i e_{t-1}, with
 *   ψz = (h_{t-1} - n) z (1 - z), ψn = (1 - z)(1 - n^2), ψr = ψn g r (1 - r)
 * (W_hn and b_hn see ψn r). The gradient Σ_t L_t e_t of a block [0, T) is
 * computed in the algebraically equal "block" form
 *   Λ_t = L_t + z_{t+1} Λ_{t+1}   (backward diagonal recursion in the block)
 *   G  += Σ_t (ψ_t Λ_t) ⊗ pre_t    (two GEMMs over all lanes)
 *       + (z_0 Λ_0) ⊙_rows e_{-1}  (the carried traces)
 * and the traces advance to the end of the block as
 *   e_{T-1} = (Π_t z_t) ⊙_rows e_{-1} + Σ_t (ψ_t P_t) ⊗ pre_t,  P_t = Π_{u>t} z_u
 * (two GEMMs per lane). The "step" form (parameter traces=step) runs the plain
 * per-step recursion instead; both give the same numbers.
 * The trace advance is done lazily at the start of the next forward, because
 * backward may be called several times per block and each call needs the
 * traces of the block start. Trace memory is therefore one set of traces per
 * lane (3HD + 3HH + 6H floats), independent of the block length.
 *
 * BPTT: the same per-step gate derivatives with dh_t = L_t + z_{t+1} dh_{t+1}
 * + W_hh^T δ_{t+1}; h_{-1} (the previous block's state) is a constant.
 * grad_in = δ_ih W_ih in both modes.
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

enum { GRU_RULE_EPROP = 0, GRU_RULE_BPTT = 1 };
enum { GRU_TRACES_BLOCK = 0, GRU_TRACES_STEP = 1 };

typedef struct gru {
    const clapp_host *host;
    char             *name;
    int64_t           H;
    int               rule;     /* GRU_RULE_* */
    int               traces;   /* GRU_TRACES_*: e-prop arithmetic */
    uint64_t          seed;
    clapp_mode        mode;
    int               configured;
    int               cached;   /* the last forward kept what backward needs */

    int64_t B, D, T;            /* configured input shape */
    int64_t G;                  /* 3H */

    clapp_tensor       wih, whh, bih, bhh, gwih, gwhh, gbih, gbhh;
    clapp_named_tensor list[4];

    float   *h;       /* [B, H] carried hidden state */
    float   *xs;      /* [T*B, D] staged input of the block */
    float   *gates;   /* [T*B, 3H] X W_ih^T, overwritten with r, z, n */
    float   *gn;      /* [T*B, H] g = W_hn h_{t-1} + b_hn */
    float   *hp;      /* [T*B, H] h_{t-1} of each step */
    float   *gh;      /* [B, 3H] per-step recurrent part */
    float   *dih;     /* [T*B, 3H] δ for W_ih / b_ih (also ψP for the trace advance) */
    float   *dhh;     /* [T*B, 3H] δ for W_hh / b_hh */
    float   *dx;      /* [T*B, D] dLoss/dx, time-major */
    float   *lam;     /* [B, H] running Λ (e-prop) or dh (BPTT) */
    float   *dhp;     /* [B, H] W_hh^T δ_hh of the later step (BPTT) */
    float   *scratch; /* [2 * max(D, H)] step-form trace row and its sum */
    float   *tr;      /* [B, tr_lane] e-prop traces: E_ih [3H,D], E_hh [3H,H], e_bih [3H], e_bhh [3H] */
    int64_t  tr_lane; /* floats of trace state per lane */
    int32_t *len;     /* [B] valid steps of the cached block */
    unsigned char *pending; /* [B] trace advance owed for the cached block */
} gru;

static const clapp_param_desc gru_params[] = {
    {"hidden", CLAPP_PARAM_INT, "256", 1, 65536, NULL, "hidden units H"},
    {"mode", CLAPP_PARAM_ENUM, "eprop", 0, 0, "eprop|bptt",
     "learning rule: e-prop traces carried across blocks, or BPTT inside each block"},
    {"traces", CLAPP_PARAM_ENUM, "block", 0, 0, "block|step",
     "e-prop arithmetic: block (GEMM form) or step (plain per-step trace recursion, for verification)"},
};
#define GRU_N_PARAMS ((int32_t)(sizeof gru_params / sizeof gru_params[0]))

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

/* Uniform in [-bound, bound): 24 random bits, exact in float. */
static float uniform_sym(uint64_t *state, double bound)
{
    return (float)(bound * (2.0 * clapp_uniform24(state) - 1.0));
}

static float *alloc_floats(int64_t n) { return clapp_aligned_calloc(n, sizeof(float)); }

static float sigmoidf(float a)
{
    return 1.0f / (1.0f + expf(-a));
}

/* Post-synaptic factors of step row `row`, unit i (see the header comment). */
static void gru_psi(const gru *g, int64_t row, int64_t i, float *pr, float *pz, float *pn, float *r)
{
    const float *gt = g->gates + row * g->G;
    float rr = gt[i], z = gt[g->H + i], n = gt[2 * g->H + i];
    float hprev = g->hp[row * g->H + i], gg = g->gn[row * g->H + i];
    float psin = (1.0f - z) * (1.0f - n * n);
    *pz = (hprev - n) * z * (1.0f - z);
    *pn = psin;
    *pr = psin * gg * rr * (1.0f - rr);
    *r = rr;
}

static float *trace_ih(const gru *g, int64_t b)
{
    return g->tr + b * g->tr_lane;
}
static float *trace_hh(const gru *g, int64_t b)
{
    return trace_ih(g, b) + g->G * g->D;
}
static float *trace_bih(const gru *g, int64_t b)
{
    return trace_hh(g, b) + g->G * g->H;
}
static float *trace_bhh(const gru *g, int64_t b)
{
    return trace_bih(g, b) + g->G;
}

static void lane_clear(gru *g, int64_t b)
{
    memset(g->h + b * g->H, 0, (size_t)g->H * sizeof(float));
    if (g->tr)
        memset(g->tr + b * g->tr_lane, 0, (size_t)g->tr_lane * sizeof(float));
    if (g->pending)
        g->pending[b] = 0;
}

static void free_scratch(gru *g)
{
    free(g->h);
    free(g->xs);
    free(g->gates);
    free(g->gn);
    free(g->hp);
    free(g->gh);
    free(g->dih);
    free(g->dhh);
    free(g->dx);
    free(g->lam);
    free(g->dhp);
    free(g->scratch);
    free(g->tr);
    free(g->len);
    free(g->pending);
    g->h = g->xs = g->gates = g->gn = g->hp = g->gh = g->dih = g->dhh = g->dx = NULL;
    g->lam = g->dhp = g->scratch = g->tr = NULL;
    g->len = NULL;
    g->pending = NULL;
}

static void free_params(gru *g)
{
    clapp_tensor *all[] = {&g->wih, &g->whh, &g->bih, &g->bhh, &g->gwih, &g->gwhh, &g->gbih, &g->gbhh};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clapp_tensor_free(all[i]);
}

/* PyTorch's GRU default: every weight and bias U(-1/sqrt(H), 1/sqrt(H)). */
static int init_params(gru *g)
{
    int64_t sih[2] = {g->G, g->D}, shh[2] = {g->G, g->H}, sb[1] = {g->G};
    clapp_tensor *vals[4] = {&g->wih, &g->whh, &g->bih, &g->bhh};
    uint64_t state = g->seed;
    double bound = 1.0 / sqrt((double)g->H);
    if (clapp_tensor_alloc_shape(&g->wih, 2, sih) || clapp_tensor_alloc_shape(&g->gwih, 2, sih) ||
        clapp_tensor_alloc_shape(&g->whh, 2, shh) || clapp_tensor_alloc_shape(&g->gwhh, 2, shh) ||
        clapp_tensor_alloc_shape(&g->bih, 1, sb) || clapp_tensor_alloc_shape(&g->gbih, 1, sb) ||
        clapp_tensor_alloc_shape(&g->bhh, 1, sb) || clapp_tensor_alloc_shape(&g->gbhh, 1, sb))
        return CLAPP_E_NOMEM;
    for (int k = 0; k < 4; k++)
        for (int64_t i = 0; i < clapp_tensor_numel(vals[k]); i++)
            vals[k]->data[i] = uniform_sym(&state, bound);
    g->list[0] = (clapp_named_tensor){"weight_ih", &g->wih, &g->gwih};
    g->list[1] = (clapp_named_tensor){"weight_hh", &g->whh, &g->gwhh};
    g->list[2] = (clapp_named_tensor){"bias_ih", &g->bih, &g->gbih};
    g->list[3] = (clapp_named_tensor){"bias_hh", &g->bhh, &g->gbhh};
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

static void gru_destroy(void *self)
{
    gru *g = self;
    if (!g)
        return;
    free_scratch(g);
    free_params(g);
    free(g->name);
    free(g);
}

static const clapp_param_field gru_fields[] = {
    CLAPP_FIELD_AS(gru, H, "hidden"), CLAPP_FIELD_AS(gru, rule, "mode"), CLAPP_FIELD(gru, traces),
};

static int gru_create(const clapp_create_info *info, void **self)
{
    gru *g = calloc(1, sizeof *g);
    *self = g;
    if (!g)
        return CLAPP_E_NOMEM;
    g->host = info->host;
    g->name = strdup(info->instance_name ? info->instance_name : "gru_eprop");
    if (!g->name)
        return CLAPP_E_NOMEM;
    if (clapp_params_bind(info, gru_params, GRU_N_PARAMS, gru_fields,
                          (int32_t)(sizeof gru_fields / sizeof gru_fields[0]), g) != CLAPP_OK)
        return CLAPP_E_INVAL;
    g->seed = info->seed;
    g->mode = CLAPP_MODE_LEARN;
    if (g->H < 1 || g->H > 65536 || g->rule < 0 || g->rule > 1 || g->traces < 0 || g->traces > 1) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                       "gru_eprop: need hidden in [1, 65536], mode eprop|bptt, traces block|step "
                       "(got hidden=%lld mode=%d traces=%d)",
                       (long long)g->H, g->rule, g->traces);
        return CLAPP_E_INVAL;
    }
    g->G = 3 * g->H;
    return CLAPP_OK;
}

static int gru_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    gru *g = self;
    int64_t B, D, T, rows, wide;
    int rc;
    if (!g || !in || !out)
        return CLAPP_E_INVAL;
    if (in->ndim != 3 || in->shape[0] < 1 || in->shape[1] < 1 || in->shape[2] < 1) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                       "gru_eprop: input must be [B, D, T] with positive sizes (got %d dims)", in->ndim);
        return CLAPP_E_SHAPE;
    }
    B = in->shape[0];
    D = in->shape[1];
    T = in->shape[2];
    rows = B * T;
    wide = D > g->G ? D : g->G;
    /* BLAS takes int sizes and leading dimensions. */
    if ((double)rows * (double)wide >= (double)INT_MAX || (double)g->G * (double)D >= (double)INT_MAX ||
        (double)B * (double)wide >= (double)INT_MAX) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                       "gru_eprop: block [%lld, %lld, %lld] with hidden %lld is too large; use smaller blocks",
                       (long long)B, (long long)D, (long long)T, (long long)g->H);
        return CLAPP_E_SHAPE;
    }
    g->configured = 0;
    g->cached = 0;
    free_scratch(g);
    /* Keep trained (or loaded) weights when only the block size or lane count changes. */
    if (!g->wih.data || g->D != D) {
        free_params(g);
        g->D = D;
        if ((rc = init_params(g)) < 0)
            goto nomem;
    }
    g->B = B;
    g->T = T;
    g->tr_lane = g->rule == GRU_RULE_EPROP ? g->G * D + g->G * g->H + 2 * g->G : 0;
    g->h = alloc_floats(B * g->H);
    g->xs = alloc_floats(rows * D);
    g->gates = alloc_floats(rows * g->G);
    g->gn = alloc_floats(rows * g->H);
    g->hp = alloc_floats(rows * g->H);
    g->gh = alloc_floats(B * g->G);
    g->dih = alloc_floats(rows * g->G);
    g->dhh = alloc_floats(rows * g->G);
    g->dx = alloc_floats(rows * D);
    g->lam = alloc_floats(B * g->H);
    g->dhp = alloc_floats(B * g->H);
    g->scratch = alloc_floats(2 * (D > g->H ? D : g->H));
    g->len = calloc((size_t)B, sizeof *g->len);
    g->pending = calloc((size_t)B, 1);
    if (g->tr_lane > 0)
        g->tr = alloc_floats(B * g->tr_lane);
    if (!g->h || !g->xs || !g->gates || !g->gn || !g->hp || !g->gh || !g->dih || !g->dhh || !g->dx ||
        !g->lam || !g->dhp || !g->scratch || !g->len || !g->pending || (g->tr_lane > 0 && !g->tr))
        goto nomem;
    memset(out, 0, sizeof *out);
    out->ndim = 3;
    out->shape[0] = B;
    out->shape[1] = g->H;
    out->shape[2] = T;
    out->rate = in->rate;
    g->configured = 1;
    return CLAPP_OK;
nomem:
    clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                   "gru_eprop: out of memory for [%lld, %lld, %lld] with hidden %lld", (long long)B,
                   (long long)D, (long long)T, (long long)g->H);
    free_scratch(g);
    return CLAPP_E_NOMEM;
}

/* ------------------------------------------------------------------------ */
/* e-prop trace arithmetic                                                   */

/* Plain per-step trace recursion of one parameter row of lane b: row k of
 * W_ih (hh = 0) or W_hh (hh = 1) and its bias. For t < len:
 *   e <- ψ_t pre_t + z_t e;   if L: acc += L_t e
 * With L == NULL the final e is written back (trace advance); otherwise the
 * traces are left as they were and acc is added to the gradient row. */
static void step_row(gru *g, int64_t b, int64_t k, int hh, const float *L)
{
    const int64_t H = g->H, B = g->B, q = k / H, i = k % H;
    const int64_t n = hh ? H : g->D;
    const float *pre_base = hh ? g->hp : g->xs;
    float *e_row = (hh ? trace_hh(g, b) : trace_ih(g, b)) + k * n;
    float *e_bias = (hh ? trace_bhh(g, b) : trace_bih(g, b)) + k;
    float *grow = (hh ? g->gwhh.data : g->gwih.data) + k * n;
    float *gbias = (hh ? g->gbhh.data : g->gbih.data) + k;
    float *e = L ? g->scratch : e_row;
    float *acc = g->scratch + n;
    float eb = *e_bias, accb = 0.0f;
    if (L) {
        memcpy(e, e_row, (size_t)n * sizeof(float));
        memset(acc, 0, (size_t)n * sizeof(float));
    }
    for (int64_t t = 0; t < g->len[b]; t++) {
        const int64_t row = t * B + b;
        const float *pre = pre_base + row * n;
        const float z = g->gates[row * g->G + H + i];
        float pr, pz, pn, r, psi;
        gru_psi(g, row, i, &pr, &pz, &pn, &r);
        psi = q == 0 ? pr : q == 1 ? pz : (hh ? pn * r : pn);
        for (int64_t j = 0; j < n; j++)
            e[j] = psi * pre[j] + z * e[j];
        eb = psi + z * eb;
        if (L) {
            const float l = L[(b * H + i) * g->T + t];
            for (int64_t j = 0; j < n; j++)
                acc[j] += l * e[j];
            accb += l * eb;
        }
    }
    if (L) {
        for (int64_t j = 0; j < n; j++)
            grow[j] += acc[j];
        *gbias += accb;
    } else {
        *e_bias = eb;
    }
}

/* Advance the traces of every pending lane over the cached block. */
static void traces_advance(gru *g)
{
    const int64_t B = g->B, H = g->H, G = g->G, D = g->D;
    int any = 0;
    for (int64_t b = 0; b < B; b++)
        any |= g->pending[b];
    if (!any)
        return;
    if (g->traces == GRU_TRACES_STEP) {
        for (int64_t b = 0; b < B; b++)
            if (g->pending[b])
                for (int64_t k = 0; k < G; k++) {
                    step_row(g, b, k, 0, NULL);
                    step_row(g, b, k, 1, NULL);
                }
        goto done;
    }
    /* ψ_t P_t with P_t = Π_{u>t} z_u, into dih (W_ih type) and dhh (W_hh type);
     * lam ends as the block's decay Π_t z_t. */
    for (int64_t x = 0; x < B * H; x++)
        g->lam[x] = 1.0f;
    for (int64_t t = g->T - 1; t >= 0; t--) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = t * B + b;
            float *pi = g->dih + row * G, *ph = g->dhh + row * G;
            float *P = g->lam + b * H;
            for (int64_t i = 0; i < H; i++) {
                float pr, pz, pn, r;
                gru_psi(g, row, i, &pr, &pz, &pn, &r);
                pi[i] = ph[i] = pr * P[i];
                pi[H + i] = ph[H + i] = pz * P[i];
                pi[2 * H + i] = pn * P[i];
                ph[2 * H + i] = pn * r * P[i];
                P[i] *= g->gates[row * G + H + i];
            }
        }
    }
    for (int64_t b = 0; b < B; b++) {
        float *eih = trace_ih(g, b), *ehh = trace_hh(g, b), *ebi = trace_bih(g, b), *ebh = trace_bhh(g, b);
        const float *decay = g->lam + b * H;
        const int len = g->len[b];
        if (!g->pending[b])
            continue;
        for (int64_t k = 0; k < G; k++) {
            const float d = decay[k % H];
            cblas_sscal((int)D, d, eih + k * D, 1);
            cblas_sscal((int)H, d, ehh + k * H, 1);
            ebi[k] *= d;
            ebh[k] *= d;
            for (int t = 0; t < len; t++) {
                ebi[k] += g->dih[(t * B + b) * G + k];
                ebh[k] += g->dhh[(t * B + b) * G + k];
            }
        }
        /* Lane b's steps are every B-th row: leading dimensions B*G, B*D, B*H. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)G, (int)D, len, 1.0f, g->dih + b * G,
                    (int)(B * G), g->xs + b * D, (int)(B * D), 1.0f, eih, (int)D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)G, (int)H, len, 1.0f, g->dhh + b * G,
                    (int)(B * G), g->hp + b * H, (int)(B * H), 1.0f, ehh, (int)H);
    }
done:
    memset(g->pending, 0, (size_t)B);
}

/* ------------------------------------------------------------------------ */
/* Streaming forward                                                         */

static int gru_forward(void *self, const clapp_block *in, clapp_block *out)
{
    gru *g = self;
    int64_t B, D, H, G, T, tmax = 0;
    if (!g || !in || !out)
        return CLAPP_E_INVAL;
    if (!g->configured) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name, "gru_eprop: forward before configure");
        return CLAPP_E_STATE;
    }
    B = g->B, D = g->D, H = g->H, G = g->G, T = g->T;
    if (in->x.ndim != 3 || in->x.shape[0] != B || in->x.shape[1] != D || in->x.shape[2] != T ||
        in->lanes != B || out->x.ndim != 3 || out->x.shape[0] != B || out->x.shape[1] != H ||
        out->x.shape[2] != T) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                       "gru_eprop: block shape differs from the configured [%lld, %lld, %lld] -> "
                       "[%lld, %lld, %lld]",
                       (long long)B, (long long)D, (long long)T, (long long)B, (long long)H, (long long)T);
        return CLAPP_E_SHAPE;
    }
    for (int64_t b = 0; b < B; b++) {
        if (in->lane[b].len < 0 || in->lane[b].len > T) {
            clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                           "gru_eprop: lane %lld has len %d outside [0, %lld]", (long long)b,
                           in->lane[b].len, (long long)T);
            return CLAPP_E_SHAPE;
        }
    }
    /* The traces owe the previous block; its cache is about to be overwritten. */
    if (g->tr)
        traces_advance(g);
    g->cached = 0;
    for (int64_t b = 0; b < B; b++) {
        if (in->lane[b].flags & CLAPP_LANE_SEQ_START)
            lane_clear(g, b);
        g->len[b] = in->lane[b].len;
        if (g->len[b] > tmax)
            tmax = g->len[b];
    }

    /* Stage time-major; steps past len are zero whatever the block holds. */
    for (int64_t b = 0; b < B; b++) {
        const float *x = in->x.data + b * D * T;
        for (int64_t t = 0; t < T; t++) {
            float *dst = g->xs + (t * B + b) * D;
            if (t < g->len[b])
                for (int64_t d = 0; d < D; d++)
                    dst[d] = x[d * T + t];
            else
                memset(dst, 0, (size_t)D * sizeof(float));
        }
    }
    if (tmax > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(tmax * B), (int)G, (int)D, 1.0f, g->xs,
                    (int)D, g->wih.data, (int)D, 0.0f, g->gates, (int)G);

    for (int64_t t = 0; t < T; t++) {
        float *hp = g->hp + t * B * H;
        memcpy(hp, g->h, (size_t)(B * H) * sizeof(float));
        if (t < tmax)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)G, (int)H, 1.0f, hp, (int)H,
                        g->whh.data, (int)H, 0.0f, g->gh, (int)G);
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = t * B + b;
            float *gt = g->gates + row * G, *gnr = g->gn + row * H, *hb = g->h + b * H;
            const float *gh = g->gh + b * G;
            float *y = out->x.data + b * H * T + t;
            if (t >= g->len[b]) {
                for (int64_t i = 0; i < H; i++) {
                    gt[i] = 0.0f;
                    gt[H + i] = 1.0f;
                    gt[2 * H + i] = 0.0f;
                    gnr[i] = 0.0f;
                    y[i * T] = 0.0f;
                }
                continue;
            }
            for (int64_t i = 0; i < H; i++) {
                float r = sigmoidf(gt[i] + g->bih.data[i] + gh[i] + g->bhh.data[i]);
                float z = sigmoidf(gt[H + i] + g->bih.data[H + i] + gh[H + i] + g->bhh.data[H + i]);
                float gg = gh[2 * H + i] + g->bhh.data[2 * H + i];
                float n = tanhf(gt[2 * H + i] + g->bih.data[2 * H + i] + r * gg);
                float hn = (1.0f - z) * n + z * hb[i];
                gt[i] = r;
                gt[H + i] = z;
                gt[2 * H + i] = n;
                gnr[i] = gg;
                hb[i] = hn;
                y[i * T] = hn;
            }
        }
    }
    for (int64_t b = 0; b < B; b++) {
        out->lane[b].len = in->lane[b].len;
        out->lane[b].pts = in->lane[b].pts;
    }
    g->cached = g->mode == CLAPP_MODE_LEARN;
    if (g->cached && g->tr)
        for (int64_t b = 0; b < B; b++)
            g->pending[b] = g->len[b] > 0;
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */

static int gru_backward(void *self, const clapp_tensor *grad_out, clapp_tensor *grad_in)
{
    gru *g = self;
    int64_t B, D, H, G, T, rows;
    const float *L;
    int bptt;
    if (!g || !grad_out)
        return CLAPP_E_INVAL;
    if (!g->cached) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                       "gru_eprop: backward without a learning-mode forward before it");
        return CLAPP_E_STATE;
    }
    B = g->B, D = g->D, H = g->H, G = g->G, T = g->T, rows = B * T;
    if (grad_out->ndim != 3 || grad_out->shape[0] != B || grad_out->shape[1] != H ||
        grad_out->shape[2] != T ||
        (grad_in && (grad_in->ndim != 3 || grad_in->shape[0] != B || grad_in->shape[1] != D ||
                     grad_in->shape[2] != T))) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name,
                       "gru_eprop: gradient shapes differ from the configured output/input");
        return CLAPP_E_SHAPE;
    }
    L = grad_out->data;
    bptt = g->rule == GRU_RULE_BPTT;

    /* Reverse sweep: lam = Λ_t (e-prop) or dh_t (BPTT); δ of the gate pre-activations. */
    memset(g->lam, 0, (size_t)(B * H) * sizeof(float));
    memset(g->dhp, 0, (size_t)(B * H) * sizeof(float));
    for (int64_t t = T - 1; t >= 0; t--) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = t * B + b;
            float *di = g->dih + row * G, *dh = g->dhh + row * G, *lam = g->lam + b * H;
            const float *znext = t + 1 < T ? g->gates + (row + B) * G + H : NULL;
            const float *dhp = g->dhp + b * H;
            const int active = t < g->len[b];
            for (int64_t i = 0; i < H; i++) {
                float l = active ? L[(b * H + i) * T + t] : 0.0f;
                float pr, pz, pn, r;
                if (znext)
                    l += znext[i] * lam[i] + dhp[i];
                lam[i] = l;
                gru_psi(g, row, i, &pr, &pz, &pn, &r);
                di[i] = dh[i] = pr * l;
                di[H + i] = dh[H + i] = pz * l;
                di[2 * H + i] = pn * l;
                dh[2 * H + i] = pn * r * l;
            }
        }
        /* Through ĥ only in BPTT; e-prop keeps the diagonal path alone. */
        if (bptt && t > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)H, (int)G, 1.0f,
                        g->dhh + t * B * G, (int)G, g->whh.data, (int)H, 0.0f, g->dhp, (int)H);
    }

    if (bptt || g->traces == GRU_TRACES_BLOCK) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)G, (int)D, (int)rows, 1.0f, g->dih, (int)G,
                    g->xs, (int)D, 1.0f, g->gwih.data, (int)D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)G, (int)H, (int)rows, 1.0f, g->dhh, (int)G,
                    g->hp, (int)H, 1.0f, g->gwhh.data, (int)H);
        for (int64_t row = 0; row < rows; row++)
            for (int64_t k = 0; k < G; k++) {
                g->gbih.data[k] += g->dih[row * G + k];
                g->gbhh.data[k] += g->dhh[row * G + k];
            }
        if (!bptt) {
            /* Carried traces: Σ_t L_t Π_{u<=t} z_u = z_0 Λ_0 per unit. */
            for (int64_t b = 0; b < B; b++) {
                const float *eih = trace_ih(g, b), *ehh = trace_hh(g, b);
                const float *ebi = trace_bih(g, b), *ebh = trace_bhh(g, b);
                for (int64_t k = 0; k < G; k++) {
                    const int64_t i = k % H;
                    const float c = g->gates[b * G + H + i] * g->lam[b * H + i];
                    if (c == 0.0f)
                        continue;
                    cblas_saxpy((int)D, c, eih + k * D, 1, g->gwih.data + k * D, 1);
                    cblas_saxpy((int)H, c, ehh + k * H, 1, g->gwhh.data + k * H, 1);
                    g->gbih.data[k] += c * ebi[k];
                    g->gbhh.data[k] += c * ebh[k];
                }
            }
        }
    } else {
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < G; k++) {
                step_row(g, b, k, 0, L);
                step_row(g, b, k, 1, L);
            }
    }

    if (grad_in) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)D, (int)G, 1.0f, g->dih, (int)G,
                    g->wih.data, (int)D, 0.0f, g->dx, (int)D);
        for (int64_t b = 0; b < B; b++) {
            float *gi = grad_in->data + b * D * T;
            for (int64_t t = 0; t < g->len[b]; t++) {
                const float *src = g->dx + (t * B + b) * D;
                for (int64_t d = 0; d < D; d++)
                    gi[d * T + t] += src[d];
            }
        }
    }
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* State, tensors, mode, report                                              */

static int gru_reset(void *self, int32_t lane)
{
    gru *g = self;
    if (!g)
        return CLAPP_E_INVAL;
    if (!g->configured)
        return CLAPP_E_STATE;
    if (lane >= g->B) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name, "gru_eprop: reset of lane %d, only %lld lanes",
                       lane, (long long)g->B);
        return CLAPP_E_INVAL;
    }
    for (int64_t b = lane < 0 ? 0 : lane; b < (lane < 0 ? g->B : lane + 1); b++)
        lane_clear(g, b);
    return CLAPP_OK;
}

static int gru_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    gru *g = self;
    if (!g || !list || !count)
        return CLAPP_E_INVAL;
    if (!g->wih.data) {
        clapp_host_log(g->host, CLAPP_LOG_ERROR, g->name, "gru_eprop: tensors before configure");
        return CLAPP_E_STATE;
    }
    *list = g->list;
    *count = 4;
    return CLAPP_OK;
}

static int gru_set_mode(void *self, clapp_mode mode)
{
    gru *g = self;
    if (!g || (mode != CLAPP_MODE_LEARN && mode != CLAPP_MODE_FROZEN))
        return CLAPP_E_INVAL;
    /* Frozen blocks keep no traces, so eligibility restarts when learning resumes. */
    if (mode != g->mode && g->tr) {
        memset(g->tr, 0, (size_t)(g->B * g->tr_lane) * sizeof(float));
        memset(g->pending, 0, (size_t)g->B);
    }
    g->mode = mode;
    g->cached = 0;
    return CLAPP_OK;
}

static int gru_report(void *self, char *buf, size_t cap)
{
    gru *g = self;
    int n;
    if (!g || !buf)
        return CLAPP_E_INVAL;
    if (!g->configured)
        return CLAPP_E_STATE;
    n = snprintf(buf, cap,
                 "{\"mode\":\"%s\",\"traces\":\"%s\",\"lanes\":%lld,\"trace_floats_per_lane\":%lld,"
                 "\"trace_bytes\":%lld}",
                 g->rule == GRU_RULE_EPROP ? "eprop" : "bptt",
                 g->traces == GRU_TRACES_BLOCK ? "block" : "step", (long long)g->B, (long long)g->tr_lane,
                 (long long)(g->B * g->tr_lane * (int64_t)sizeof(float)));
    return n < 0 || (size_t)n >= cap ? CLAPP_E_NOMEM : CLAPP_OK;
}

static const clapp_plugin_desc gru_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "gru_eprop",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LAYER,
    .help = "streaming GRU (PyTorch gates) learning with e-prop traces across blocks or in-block BPTT",
    .params = gru_params,
    .n_params = GRU_N_PARAMS,
    .create = gru_create,
    .destroy = gru_destroy,
    .configure = gru_configure,
    .forward = gru_forward,
    .backward = gru_backward,
    .reset = gru_reset,
    .tensors = gru_tensors,
    .set_mode = gru_set_mode,
    .finish = NULL,
    .report = gru_report,
};

CLAPP_PLUGIN_ENTRY(&gru_desc);
