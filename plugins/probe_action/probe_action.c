/* probe_action — a clip-level linear classifier that trains itself online
 * (the action probe of the video experiments, docs/ALGORITHMS.md §5.4).
 *
 * Per lane, the features of one sequence (SEQ_START .. SEQ_END) are averaged
 * over time, each time step flattened to D = C·H·W values ([B, C, T] streams:
 * D = C). A finished clip with class_label in 0..classes-1 then goes through
 *
 *     BatchNorm1d(D) -> Dropout(p) -> Linear(D -> classes) -> softmax CE
 *
 * LEARN: finished clips queue up; every `batch` of them makes one optimizer
 * step (Adam with coupled L2 weight decay, as torch.optim.Adam; or plain SGD),
 * with BatchNorm on the batch statistics (biased variance for normalising,
 * unbiased for the running estimate, momentum 0.1, eps 1e-5) and dropout from
 * a PRNG seeded by the instance seed. A partial batch of >= 2 clips is
 * stepped at finish() and when switching to FROZEN (BatchNorm needs two);
 * a single leftover clip waits for the next pass, or is dropped at the switch.
 * FROZEN: every finished clip is classified at once with the running
 * statistics and no dropout.
 *
 * anneal_blocks=N (> 0): the learning rate falls along a half cosine from
 * probe_lr to 0 over the first N LEARN blocks (clapp eval sets it).
 *
 * report() counts the clips of the current mode since the last reset(-1) or
 * mode change: top-1/top-3 accuracy and mean cross-entropy (in LEARN these
 * are the training-batch predictions, dropout included). Clips without a
 * label (-1) are skipped and counted as "unlabeled".
 *
 * The probe exposes its tensors with grad NULL: the host's optimizer leaves
 * them alone, checkpoints still save them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/plugin.h"
#include "clapp/plugin_util.h"

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8

enum { OPT_ADAM = 0, OPT_SGD = 1 };
enum { P_W = 0, P_B, P_GAMMA, P_BETA, P_COUNT }; /* trained parameters */

typedef struct probe_action {
    const clapp_host *host;
    char             *name;
    uint64_t          seed;
    uint64_t          rng;       /* dropout stream */
    int32_t           K;         /* classes */
    int32_t           batch;
    double            lr, wd, p_drop;
    int64_t           anneal_blocks;   /* 0: constant learning rate */
    int64_t           learn_blocks;    /* LEARN blocks seen, for the schedule */
    int               optimizer;
    clapp_mode        mode;

    int32_t           B;         /* lanes configured */
    int64_t           C, HW, D;
    double           *acc;       /* [B, D] running sums of the open sequences */
    int64_t          *acc_n;     /* [B] time steps summed */

    float            *bx;        /* [batch, D] mean features of queued clips */
    int32_t          *by;        /* [batch] their labels */
    int32_t           n_pending;

    clapp_tensor      W, bias, gamma, beta, rmean, rvar;
    float            *grad[P_COUNT], *m[P_COUNT], *v[P_COUNT];
    int64_t           adam_t;

    float            *xhat;      /* [batch, D] */
    float            *y;         /* [batch, D] after BN + dropout */
    float            *mask;      /* [batch, D] dropout scale (0 or 1/(1-p)) */
    float            *dy;        /* [D] */
    double           *logits;    /* [batch, K] */
    double           *dlogits;   /* [batch, K] */
    double           *mu, *var;  /* [D] */

    clapp_named_tensor list[6];

    int64_t           clips, top1, top3, steps, unlabeled;
    double            loss_sum;
    int               warned_unlabeled;
} probe_action;

static const clapp_param_desc probe_action_params[] = {
    {"classes", CLAPP_PARAM_INT, "10", 2, 100000, NULL, "number of classes"},
    {"probe_lr", CLAPP_PARAM_FLOAT, "1e-4", 0, 1e3, NULL, "learning rate of the probe's optimizer"},
    {"anneal_blocks", CLAPP_PARAM_INT, "0", 0, 1e15, NULL,
     "lower the learning rate along a half cosine to 0 over this many training blocks (0: constant)"},
    {"probe_wd", CLAPP_PARAM_FLOAT, "1e-5", 0, 1e3, NULL, "L2 weight decay (added to the gradient)"},
    {"batch", CLAPP_PARAM_INT, "8", 2, 65536, NULL, "finished clips per optimizer step"},
    {"dropout", CLAPP_PARAM_FLOAT, "0.5", 0, 0.99, NULL, "dropout probability before the linear layer"},
    {"optimizer", CLAPP_PARAM_ENUM, "adam", 0, 0, "adam|sgd", "the probe's optimizer"},
};
#define PROBE_ACTION_N_PARAMS ((int32_t)(sizeof probe_action_params / sizeof probe_action_params[0]))

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */


/* Dot product with eight float partial sums so the compiler can vectorize it. */
static double dot_f32(const float *restrict a, const float *restrict b, int64_t n)
{
    float part[8] = {0};
    int64_t i = 0;
    double s = 0.0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            part[j] += a[i + j] * b[i + j];
    for (int j = 0; j < 8; j++)
        s += part[j];
    for (; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Orthonormal rows (K <= D) or columns (K > D) of a Gaussian matrix, by
 * modified Gram-Schmidt done twice (as torch.nn.init.orthogonal_, gain 1). */
static void init_orthogonal(float *W, int64_t K, int64_t D, uint64_t *st)
{
    int rows = K <= D;
    int64_t nvec = rows ? K : D, len = rows ? D : K;
    int64_t step = rows ? 1 : D;   /* stride between elements of one vector */
    for (int64_t i = 0; i < K * D; i++)
        W[i] = (float)clapp_normal01(st);
    for (int pass = 0; pass < 2; pass++)
        for (int64_t a = 0; a < nvec; a++) {
            float *va = rows ? W + a * D : W + a;
            for (int64_t b = 0; b < a; b++) {
                const float *vb = rows ? W + b * D : W + b;
                double d = 0.0;
                for (int64_t i = 0; i < len; i++)
                    d += (double)va[i * step] * vb[i * step];
                for (int64_t i = 0; i < len; i++)
                    va[i * step] -= (float)(d * vb[i * step]);
            }
            double nrm = 0.0;
            for (int64_t i = 0; i < len; i++)
                nrm += (double)va[i * step] * va[i * step];
            nrm = nrm > 0.0 ? 1.0 / sqrt(nrm) : 0.0;
            for (int64_t i = 0; i < len; i++)
                va[i * step] = (float)(va[i * step] * nrm);
        }
}

/* Cross-entropy of one row of logits and the rank of the true class (the
 * number of classes ranked before it; ties go to the lower index, as argmax).
 * Writes softmax into prob if not NULL. */
static double row_ce(const double *z, int32_t K, int32_t label, double *prob, int32_t *rank)
{
    double mx = z[0], s = 0.0;
    int32_t r = 0;
    for (int32_t k = 1; k < K; k++)
        mx = z[k] > mx ? z[k] : mx;
    for (int32_t k = 0; k < K; k++)
        s += exp(z[k] - mx);
    if (prob)
        for (int32_t k = 0; k < K; k++)
            prob[k] = exp(z[k] - mx) / s;
    for (int32_t k = 0; k < K; k++)
        if (z[k] > z[label] || (z[k] == z[label] && k < label))
            r++;
    *rank = r;
    return log(s) + mx - z[label];
}

static void count_clip(probe_action *pa, double loss, int32_t rank)
{
    pa->clips++;
    pa->loss_sum += loss;
    pa->top1 += rank < 1;
    pa->top3 += rank < 3;
}

static void clear_counters(probe_action *pa)
{
    pa->clips = pa->top1 = pa->top3 = pa->steps = pa->unlabeled = 0;
    pa->loss_sum = 0.0;
}

static void free_buffers(probe_action *pa)
{
    free(pa->acc);
    free(pa->acc_n);
    free(pa->bx);
    free(pa->by);
    clapp_tensor_free(&pa->W);
    clapp_tensor_free(&pa->bias);
    clapp_tensor_free(&pa->gamma);
    clapp_tensor_free(&pa->beta);
    clapp_tensor_free(&pa->rmean);
    clapp_tensor_free(&pa->rvar);
    for (int i = 0; i < P_COUNT; i++) {
        free(pa->grad[i]);
        free(pa->m[i]);
        free(pa->v[i]);
        pa->grad[i] = pa->m[i] = pa->v[i] = NULL;
    }
    free(pa->xhat);
    free(pa->y);
    free(pa->mask);
    free(pa->dy);
    free(pa->logits);
    free(pa->dlogits);
    free(pa->mu);
    free(pa->var);
    pa->acc = NULL;
    pa->acc_n = NULL;
    pa->bx = NULL;
    pa->by = NULL;
    pa->xhat = pa->y = pa->mask = pa->dy = NULL;
    pa->logits = pa->dlogits = pa->mu = pa->var = NULL;
}

/* ------------------------------------------------------------------------ */
/* Training and evaluation                                                   */

static float *param_data(probe_action *pa, int i)
{
    clapp_tensor *t[P_COUNT] = {&pa->W, &pa->bias, &pa->gamma, &pa->beta};
    return t[i]->data;
}

static int64_t param_size(const probe_action *pa, int i)
{
    return i == P_W ? (int64_t)pa->K * pa->D : i == P_B ? pa->K : pa->D;
}

static void optimizer_step(probe_action *pa)
{
    const double wd = pa->wd;
    double c1 = 1.0, c2 = 1.0, lr = pa->lr;
    /* anneal_blocks: half cosine to 0 over the first N LEARN blocks (as probe_phoneme). */
    if (pa->anneal_blocks > 0) {
        double f = (double)(pa->learn_blocks - 1) / (double)pa->anneal_blocks;
        lr = f >= 1 ? 0 : pa->lr * 0.5 * (1 + cos(3.141592653589793 * f));
    }
    pa->adam_t++;
    if (pa->optimizer == OPT_ADAM) {
        c1 = 1.0 - pow(ADAM_B1, (double)pa->adam_t);
        c2 = 1.0 - pow(ADAM_B2, (double)pa->adam_t);
    }
    for (int i = 0; i < P_COUNT; i++) {
        float *restrict p = param_data(pa, i);
        const float *restrict g = pa->grad[i];
        float *restrict m = pa->m[i], *restrict v = pa->v[i];
        const int64_t n = param_size(pa, i);
        if (pa->optimizer == OPT_SGD) {
            for (int64_t j = 0; j < n; j++)
                p[j] -= (float)(lr * ((double)g[j] + wd * p[j]));
            continue;
        }
        for (int64_t j = 0; j < n; j++) {
            double gj = (double)g[j] + wd * p[j];
            m[j] = (float)(ADAM_B1 * m[j] + (1.0 - ADAM_B1) * gj);
            v[j] = (float)(ADAM_B2 * v[j] + (1.0 - ADAM_B2) * gj * gj);
            p[j] -= (float)(lr * (m[j] / c1) / (sqrt(v[j] / c2) + ADAM_EPS));
        }
    }
}

/* One optimizer step on the n queued clips (2 <= n <= batch). */
static void train_step(probe_action *pa, int32_t n)
{
    const int64_t D = pa->D;
    const int32_t K = pa->K;
    const float *gamma = pa->gamma.data, *beta = pa->beta.data, *W = pa->W.data, *bias = pa->bias.data;
    const double keep = 1.0 - pa->p_drop;

    /* BatchNorm on the batch statistics; running stats as PyTorch. */
    for (int64_t d = 0; d < D; d++) {
        double mu = 0.0, var = 0.0;
        for (int32_t i = 0; i < n; i++)
            mu += pa->bx[i * D + d];
        mu /= n;
        for (int32_t i = 0; i < n; i++) {
            double e = pa->bx[i * D + d] - mu;
            var += e * e;
        }
        pa->rmean.data[d] = (float)((1.0 - BN_MOMENTUM) * pa->rmean.data[d] + BN_MOMENTUM * mu);
        pa->rvar.data[d] =
            (float)((1.0 - BN_MOMENTUM) * pa->rvar.data[d] + BN_MOMENTUM * var / (n - 1));
        var /= n;
        pa->mu[d] = mu;
        pa->var[d] = 1.0 / sqrt(var + BN_EPS);
    }
    for (int32_t i = 0; i < n; i++) {
        float *xh = pa->xhat + i * D, *y = pa->y + i * D, *mk = pa->mask + i * D;
        const float *x = pa->bx + i * D;
        for (int64_t d = 0; d < D; d++) {
            xh[d] = (float)((x[d] - pa->mu[d]) * pa->var[d]);
            mk[d] = pa->p_drop > 0.0 ? (clapp_uniform53(&pa->rng) < keep ? (float)(1.0 / keep) : 0.0f)
                                     : 1.0f;
            y[d] = (gamma[d] * xh[d] + beta[d]) * mk[d];
        }
    }
    /* Linear, softmax cross-entropy, dL/dlogits (mean over the batch). */
    for (int32_t i = 0; i < n; i++) {
        double *z = pa->logits + (int64_t)i * K, *dz = pa->dlogits + (int64_t)i * K;
        int32_t rank;
        double ce;
        for (int32_t k = 0; k < K; k++)
            z[k] = bias[k] + dot_f32(W + (int64_t)k * D, pa->y + i * D, D);
        ce = row_ce(z, K, pa->by[i], dz, &rank);
        dz[pa->by[i]] -= 1.0;
        for (int32_t k = 0; k < K; k++)
            dz[k] /= n;
        count_clip(pa, ce, rank);
    }
    /* Gradients: dW = dz^T y, db = sum dz, dy = dz W, then through dropout and
     * the BN affine (the input is frozen, so no dL/dx is needed). */
    for (int i = 0; i < P_COUNT; i++)
        memset(pa->grad[i], 0, (size_t)param_size(pa, i) * sizeof(float));
    for (int32_t i = 0; i < n; i++) {
        const double *dz = pa->dlogits + (int64_t)i * K;
        const float *restrict y = pa->y + i * D, *restrict xh = pa->xhat + i * D,
                              *restrict mk = pa->mask + i * D;
        float *restrict dy = pa->dy;
        float *restrict gg = pa->grad[P_GAMMA], *restrict gbeta = pa->grad[P_BETA];
        memset(dy, 0, (size_t)D * sizeof(float));
        for (int32_t k = 0; k < K; k++) {
            const float a = (float)dz[k];
            float *restrict gw = pa->grad[P_W] + (int64_t)k * D;
            const float *restrict wk = W + (int64_t)k * D;
            pa->grad[P_B][k] += a;
            for (int64_t d = 0; d < D; d++) {
                gw[d] += a * y[d];
                dy[d] += a * wk[d];
            }
        }
        for (int64_t d = 0; d < D; d++) {
            float dh = dy[d] * mk[d];
            gg[d] += dh * xh[d];
            gbeta[d] += dh;
        }
    }
    optimizer_step(pa);
    pa->steps++;
}

static void flush_pending(probe_action *pa, int drop_single)
{
    if (pa->n_pending >= 2) {
        train_step(pa, pa->n_pending);
        pa->n_pending = 0;
    } else if (drop_single && pa->n_pending == 1) {
        clapp_host_log(pa->host, CLAPP_LOG_DEBUG, pa->name,
                       "dropped one leftover training clip (batch norm needs two)");
        pa->n_pending = 0;
    }
}

static void evaluate_clip(probe_action *pa, const float *x, int32_t label)
{
    const int64_t D = pa->D;
    double *z = pa->logits;
    int32_t rank = 0;
    double ce;
    for (int64_t d = 0; d < D; d++)
        pa->dy[d] = (float)((x[d] - pa->rmean.data[d]) / sqrt((double)pa->rvar.data[d] + BN_EPS) *
                                pa->gamma.data[d] +
                            pa->beta.data[d]);
    for (int32_t k = 0; k < pa->K; k++)
        z[k] = pa->bias.data[k] + dot_f32(pa->W.data + (int64_t)k * D, pa->dy, D);
    /* Two statements: argument evaluation order would leave rank unset. */
    ce = row_ce(z, pa->K, label, NULL, &rank);
    count_clip(pa, ce, rank);
}

/* A lane's sequence ended: turn its sum into a mean and use it. */
static int finish_clip(probe_action *pa, int32_t b, int32_t label)
{
    double *acc = pa->acc + (int64_t)b * pa->D;
    int64_t n = pa->acc_n[b];
    float *dst;
    pa->acc_n[b] = 0;
    if (n == 0)
        return CLAPP_OK;
    if (label < 0) {
        pa->unlabeled++;
        if (!pa->warned_unlabeled++)
            clapp_host_log(pa->host, CLAPP_LOG_WARNING, pa->name,
                           "a sequence without a class label was skipped (the manifest needs a LABEL column)");
        return CLAPP_OK;
    }
    if (label >= pa->K) {
        clapp_host_log(pa->host, CLAPP_LOG_ERROR, pa->name,
                       "class label %d is outside 0..%d: set classes= to the number of classes",
                       label, pa->K - 1);
        return CLAPP_E_INVAL;
    }
    /* FROZEN borrows the first row of xhat (free between training steps). */
    dst = pa->mode == CLAPP_MODE_LEARN ? pa->bx + (int64_t)pa->n_pending * pa->D : pa->xhat;
    for (int64_t d = 0; d < pa->D; d++)
        dst[d] = (float)(acc[d] / (double)n);
    if (pa->mode == CLAPP_MODE_FROZEN) {
        evaluate_clip(pa, dst, label);
        return CLAPP_OK;
    }
    pa->by[pa->n_pending++] = label;
    if (pa->n_pending == pa->batch) {
        train_step(pa, pa->n_pending);
        pa->n_pending = 0;
    }
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Plugin calls                                                              */

static void probe_action_destroy(void *self)
{
    probe_action *pa = self;
    if (!pa)
        return;
    free_buffers(pa);
    free(pa->name);
    free(pa);
}

static const clapp_param_field probe_action_fields[] = {
    CLAPP_FIELD_AS(probe_action, K, "classes"),  CLAPP_FIELD_AS(probe_action, lr, "probe_lr"),
    CLAPP_FIELD_AS(probe_action, wd, "probe_wd"), CLAPP_FIELD(probe_action, anneal_blocks),
    CLAPP_FIELD(probe_action, batch),            CLAPP_FIELD_AS(probe_action, p_drop, "dropout"),
    CLAPP_FIELD(probe_action, optimizer),
};

static int probe_action_create(const clapp_create_info *info, void **self)
{
    probe_action *pa = calloc(1, sizeof *pa);
    *self = pa;
    if (!pa)
        return CLAPP_E_NOMEM;
    pa->host = info->host;
    pa->seed = info->seed;
    pa->name = strdup(info->instance_name ? info->instance_name : "probe_action");
    if (!pa->name)
        return CLAPP_E_NOMEM;
    if (clapp_params_bind(info, probe_action_params, PROBE_ACTION_N_PARAMS, probe_action_fields,
                          (int32_t)(sizeof probe_action_fields / sizeof probe_action_fields[0]), pa) != CLAPP_OK)
        return CLAPP_E_INVAL;
    if (pa->K < 2 || pa->batch < 2 || pa->lr < 0 || pa->wd < 0 || pa->p_drop < 0 || pa->p_drop >= 1 ||
        (pa->optimizer != OPT_ADAM && pa->optimizer != OPT_SGD)) {
        clapp_host_log(pa->host, CLAPP_LOG_ERROR, pa->name,
                       "bad parameters: classes >= 2, batch >= 2, 0 <= dropout < 1, lr, wd >= 0");
        return CLAPP_E_INVAL;
    }
    pa->mode = CLAPP_MODE_LEARN;
    return CLAPP_OK;
}

static int alloc_vec(clapp_tensor *t, int64_t n0, int64_t n1)
{
    int64_t shape[2] = {n0, n1};
    return clapp_tensor_alloc_shape(t, n1 > 0 ? 2 : 1, shape) < 0 ? CLAPP_E_NOMEM : CLAPP_OK;
}

static int probe_action_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    probe_action *pa = self;
    uint64_t init = pa->seed ^ 0x70726f6265616374ull; /* "proberact": weights apart from dropout */
    int64_t D, nb;
    (void)out;
    if ((in->ndim != 3 && in->ndim != 5) || in->shape[0] < 1 || in->shape[1] < 1 ||
        (in->ndim == 5 && (in->shape[3] < 1 || in->shape[4] < 1))) {
        clapp_host_log(pa->host, CLAPP_LOG_ERROR, pa->name,
                       "takes [B,C,T] or [B,C,T,H,W] with positive sizes, got %d dims", in->ndim);
        return CLAPP_E_SHAPE;
    }
    free_buffers(pa);
    pa->B = (int32_t)in->shape[0];
    pa->C = in->shape[1];
    pa->HW = in->ndim == 5 ? in->shape[3] * in->shape[4] : 1;
    pa->D = D = pa->C * pa->HW;
    nb = pa->batch;
    pa->acc = calloc((size_t)(pa->B * D), sizeof *pa->acc);
    pa->acc_n = calloc((size_t)pa->B, sizeof *pa->acc_n);
    pa->bx = malloc((size_t)(nb * D) * sizeof(float));
    pa->by = malloc((size_t)nb * sizeof(int32_t));
    pa->xhat = malloc((size_t)(nb * D) * sizeof(float));
    pa->y = malloc((size_t)(nb * D) * sizeof(float));
    pa->mask = malloc((size_t)(nb * D) * sizeof(float));
    pa->dy = malloc((size_t)D * sizeof(float));
    pa->logits = malloc((size_t)(nb * pa->K) * sizeof(double));
    pa->dlogits = malloc((size_t)(nb * pa->K) * sizeof(double));
    pa->mu = malloc((size_t)D * sizeof(double));
    pa->var = malloc((size_t)D * sizeof(double));
    if (!pa->acc || !pa->acc_n || !pa->bx || !pa->by || !pa->xhat || !pa->y || !pa->mask || !pa->dy ||
        !pa->logits || !pa->dlogits || !pa->mu || !pa->var)
        goto nomem;
    if (alloc_vec(&pa->W, pa->K, D) < 0 || alloc_vec(&pa->bias, pa->K, 0) < 0 ||
        alloc_vec(&pa->gamma, D, 0) < 0 || alloc_vec(&pa->beta, D, 0) < 0 ||
        alloc_vec(&pa->rmean, D, 0) < 0 || alloc_vec(&pa->rvar, D, 0) < 0)
        goto nomem;
    for (int i = 0; i < P_COUNT; i++) {
        size_t n = (size_t)param_size(pa, i);
        pa->grad[i] = calloc(n, sizeof(float));
        pa->m[i] = calloc(n, sizeof(float));
        pa->v[i] = calloc(n, sizeof(float));
        if (!pa->grad[i] || !pa->m[i] || !pa->v[i])
            goto nomem;
    }
    init_orthogonal(pa->W.data, pa->K, D, &init);
    for (int64_t d = 0; d < D; d++)
        pa->gamma.data[d] = pa->rvar.data[d] = 1.0f;
    pa->rng = pa->seed;
    pa->adam_t = 0;
    pa->n_pending = 0;
    clear_counters(pa);
    pa->list[0] = (clapp_named_tensor){"weight", &pa->W, NULL};
    pa->list[1] = (clapp_named_tensor){"bias", &pa->bias, NULL};
    pa->list[2] = (clapp_named_tensor){"bn.weight", &pa->gamma, NULL};
    pa->list[3] = (clapp_named_tensor){"bn.bias", &pa->beta, NULL};
    pa->list[4] = (clapp_named_tensor){"bn.running_mean", &pa->rmean, NULL};
    pa->list[5] = (clapp_named_tensor){"bn.running_var", &pa->rvar, NULL};
    return CLAPP_OK;
nomem:
    clapp_host_log(pa->host, CLAPP_LOG_ERROR, pa->name, "out of memory for %lld features x %d classes",
                   (long long)D, pa->K);
    free_buffers(pa);
    return CLAPP_E_NOMEM;
}

static int probe_action_forward(void *self, const clapp_block *in, clapp_block *out)
{
    probe_action *pa = self;
    const clapp_tensor *x = &in->x;
    int64_t T, HW;
    (void)out;
    if (!pa->acc)
        return CLAPP_E_STATE;
    HW = x->ndim == 5 ? x->shape[3] * x->shape[4] : 1;
    if ((x->ndim != 3 && x->ndim != 5) || in->lanes > pa->B || x->shape[0] != in->lanes ||
        x->shape[1] != pa->C || HW != pa->HW) {
        clapp_host_log(pa->host, CLAPP_LOG_ERROR, pa->name, "block shape differs from the configured one");
        return CLAPP_E_SHAPE;
    }
    T = x->shape[2];
    if (pa->mode == CLAPP_MODE_LEARN)
        pa->learn_blocks++;
    for (int32_t b = 0; b < in->lanes; b++) {
        const clapp_lane *ln = &in->lane[b];
        double *acc = pa->acc + (int64_t)b * pa->D;
        const float *src = x->data + (int64_t)b * pa->C * T * HW;
        int32_t len = ln->len < 0 ? 0 : ln->len > T ? (int32_t)T : ln->len;
        if (ln->seq_id < 0)
            continue;
        if (ln->flags & CLAPP_LANE_SEQ_START) {
            memset(acc, 0, (size_t)pa->D * sizeof *acc);
            pa->acc_n[b] = 0;
        }
        /* [C, T, HW]: step t of channel c lands at feature c*HW + hw. */
        for (int64_t c = 0; c < pa->C; c++)
            for (int32_t t = 0; t < len; t++) {
                const float *s = src + (c * T + t) * HW;
                double *a = acc + c * HW;
                for (int64_t i = 0; i < HW; i++)
                    a[i] += s[i];
            }
        pa->acc_n[b] += len;
        if (ln->flags & CLAPP_LANE_SEQ_END) {
            int rc = finish_clip(pa, b, ln->class_label);
            memset(acc, 0, (size_t)pa->D * sizeof *acc);
            if (rc < 0)
                return rc;
        }
    }
    return CLAPP_OK;
}

static int probe_action_reset(void *self, int32_t lane)
{
    probe_action *pa = self;
    if (!pa->acc)
        return CLAPP_OK;
    if (lane >= pa->B)
        return CLAPP_E_INVAL;
    for (int32_t b = lane < 0 ? 0 : lane; b < (lane < 0 ? pa->B : lane + 1); b++) {
        memset(pa->acc + (int64_t)b * pa->D, 0, (size_t)pa->D * sizeof *pa->acc);
        pa->acc_n[b] = 0;
    }
    if (lane < 0)
        clear_counters(pa);
    return CLAPP_OK;
}

static int probe_action_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    probe_action *pa = self;
    if (!pa->acc)
        return CLAPP_E_STATE;
    *list = pa->list;
    *count = 6;
    return CLAPP_OK;
}

static int probe_action_set_mode(void *self, clapp_mode mode)
{
    probe_action *pa = self;
    if (mode != CLAPP_MODE_LEARN && mode != CLAPP_MODE_FROZEN)
        return CLAPP_E_INVAL;
    if (mode == pa->mode)
        return CLAPP_OK;
    if (pa->acc && pa->mode == CLAPP_MODE_LEARN)
        flush_pending(pa, 1);
    pa->mode = mode;
    clear_counters(pa);
    return CLAPP_OK;
}

static int probe_action_finish(void *self)
{
    probe_action *pa = self;
    if (pa->acc && pa->mode == CLAPP_MODE_LEARN)
        flush_pending(pa, 0);
    return CLAPP_OK;
}

static int probe_action_report(void *self, char *buf, size_t cap)
{
    probe_action *pa = self;
    char acc[32] = "null", top3[32] = "null", loss[32] = "null";
    int n;
    if (pa->clips > 0) {
        snprintf(acc, sizeof acc, "%.6f", (double)pa->top1 / (double)pa->clips);
        snprintf(top3, sizeof top3, "%.6f", (double)pa->top3 / (double)pa->clips);
        snprintf(loss, sizeof loss, "%.9g", pa->loss_sum / (double)pa->clips);
    }
    n = snprintf(buf, cap,
                 "{\"accuracy\":%s,\"top3\":%s,\"clips\":%lld,\"loss\":%s,\"mode\":\"%s\",\"steps\":%lld,"
                 "\"unlabeled\":%lld}",
                 acc, top3, (long long)pa->clips, loss,
                 pa->mode == CLAPP_MODE_LEARN ? "learn" : "frozen", (long long)pa->steps,
                 (long long)pa->unlabeled);
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            buf[0] = 0;
        return CLAPP_E_NOMEM;
    }
    return CLAPP_OK;
}

static const clapp_plugin_desc probe_action_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "probe_action",
    .version = "1.0.0",
    .kind = CLAPP_KIND_SINK,
    .help = "clip classifier on time-averaged features: BatchNorm1d, dropout, linear; trains itself",
    .params = probe_action_params,
    .n_params = PROBE_ACTION_N_PARAMS,
    .create = probe_action_create,
    .destroy = probe_action_destroy,
    .configure = probe_action_configure,
    .forward = probe_action_forward,
    .reset = probe_action_reset,
    .tensors = probe_action_tensors,
    .set_mode = probe_action_set_mode,
    .finish = probe_action_finish,
    .report = probe_action_report,
};

CLAPP_PLUGIN_ENTRY(&probe_action_desc);
