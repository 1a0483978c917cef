/* clapp core — the supervised loss element (see loss_supervised.h).
 *
 * Frames: per lane, logits [classes, len] = W X_b with X_b the lane's [D, T]
 * features (audio: the block itself; video: transposed from [C, T, HW] into
 * a staging buffer), one GEMM; the softmax gradient overwrites the logits
 * (zero columns for unlabelled steps), then dW += G X_b^T and
 * dX_b += W^T G are two more GEMMs. Class: the lanes' time averages are
 * the rows of one [n, D] matrix and the same three GEMMs apply.
 */
#include "learning/loss_supervised.h"
#include "clapp/plugin_util.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clapp_loss_supervised {
    clapp_sup_params  p;
    const clapp_host *host;
    char              name[64];
    int64_t           B, C, T, HW, D, K;   /* K = classes */
    int               video;               /* 5-D stream: features staged per lane */

    clapp_tensor       W, Wg, b, bg;       /* [K, D], [K] */
    clapp_named_tensor nt[2];

    int32_t *lab;       /* [B * T] frames, [B] class: the label used, -1 skipped */
    int32_t *lane_of;   /* class: [B] lane of each row */
    float   *logits;    /* frames [K, T]; class [B, K] */
    float   *xs, *dxs;  /* video frames: [D, T] staging; class: [B, D] means / their grads */
    int64_t  rows, correct;
    int      warned;
};

#define SERR(rc_, ...)                                                       \
    do {                                                                     \
        clapp_host_log(L->host, CLAPP_LOG_ERROR, L->name,                    \
                       "supervised: " __VA_ARGS__);                          \
        rc = (rc_);                                                          \
        goto done;                                                           \
    } while (0)

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

/* splitmix64: the classifier's initialisation only. */
static double init_unit(uint64_t *x)
{
    return clapp_uniform53(x);
}

int clapp_loss_supervised_create(clapp_loss_supervised **out, const clapp_sup_params *p,
                                 const clapp_stream_info *in, const clapp_host *host,
                                 const char *name)
{
    clapp_loss_supervised *L;
    int64_t ws[2], bs[1];
    double a;
    uint64_t s;

    if (!out || !p || !in)
        return CLAPP_E_INVAL;
    *out = NULL;
    if ((in->ndim != 3 && in->ndim != 5) || p->classes < 2 || in->shape[0] < 1 ||
        in->shape[1] < 1 || in->shape[2] < 1) {
        clapp_host_log(host, CLAPP_LOG_ERROR, name ? name : "supervised",
                       "supervised: needs a [B, C, T] or [B, C, T, H, W] stream and classes >= 2 "
                       "(got %d dimensions, classes=%lld)", (int)in->ndim, (long long)p->classes);
        return CLAPP_E_SHAPE;
    }
    L = calloc(1, sizeof *L);
    if (!L)
        return CLAPP_E_NOMEM;
    L->p = *p;
    L->host = host;
    snprintf(L->name, sizeof L->name, "%s", name ? name : "supervised");
    L->B = in->shape[0];
    L->C = in->shape[1];
    L->T = in->shape[2];
    L->video = in->ndim == 5;
    L->HW = L->video ? in->shape[3] * in->shape[4] : 1;
    L->D = L->C * L->HW;
    L->K = p->classes;

    ws[0] = L->K;
    ws[1] = L->D;
    bs[0] = L->K;
    if (clapp_tensor_alloc_shape(&L->W, 2, ws) < 0 || clapp_tensor_alloc_shape(&L->Wg, 2, ws) < 0 ||
        clapp_tensor_alloc_shape(&L->b, 1, bs) < 0 || clapp_tensor_alloc_shape(&L->bg, 1, bs) < 0)
        goto nomem;
    a = 1.0 / sqrt((double)L->D);
    s = p->seed;
    for (int64_t i = 0; i < L->K * L->D; i++)
        L->W.data[i] = (float)((2.0 * init_unit(&s) - 1.0) * a);
    for (int64_t i = 0; i < L->K; i++)
        L->b.data[i] = (float)((2.0 * init_unit(&s) - 1.0) * a);
    L->nt[0] = (clapp_named_tensor){"weight", &L->W, &L->Wg};
    L->nt[1] = (clapp_named_tensor){"bias", &L->b, &L->bg};

    L->lab = calloc((size_t)(L->B * L->T), sizeof *L->lab);
    L->lane_of = calloc((size_t)L->B, sizeof *L->lane_of);
    if (p->labels == CLAPP_SUP_FRAMES) {
        L->logits = falloc(L->K * L->T);
        if (L->video) {
            L->xs = falloc(L->D * L->T);
            L->dxs = falloc(L->D * L->T);
        }
    } else {
        L->logits = falloc(L->B * L->K);
        L->xs = falloc(L->B * L->D);
        L->dxs = falloc(L->B * L->D);
    }
    if (!L->lab || !L->lane_of || !L->logits || ((L->video || p->labels == CLAPP_SUP_CLASS) && (!L->xs || !L->dxs)))
        goto nomem;
    *out = L;
    return CLAPP_OK;
nomem:
    clapp_host_log(host, CLAPP_LOG_ERROR, L->name, "supervised: out of memory (classes=%lld, "
                   "%lld features, %lld steps)", (long long)L->K, (long long)L->D, (long long)L->T);
    clapp_loss_supervised_destroy(L);
    return CLAPP_E_NOMEM;
}

void clapp_loss_supervised_destroy(clapp_loss_supervised *L)
{
    if (!L)
        return;
    clapp_tensor_free(&L->W);
    clapp_tensor_free(&L->Wg);
    clapp_tensor_free(&L->b);
    clapp_tensor_free(&L->bg);
    free(L->lab);
    free(L->lane_of);
    free(L->logits);
    free(L->xs);
    free(L->dxs);
    free(L);
}

int clapp_loss_supervised_tensors(clapp_loss_supervised *L, const clapp_named_tensor **list,
                                  int32_t *count)
{
    if (!L || !list || !count)
        return CLAPP_E_INVAL;
    *list = L->nt;
    *count = 2;
    return CLAPP_OK;
}

void clapp_loss_supervised_last(const clapp_loss_supervised *L, int64_t *rows, int64_t *correct,
                                const int32_t **label_of)
{
    if (rows)
        *rows = L ? L->rows : 0;
    if (correct)
        *correct = L ? L->correct : 0;
    if (label_of)
        *label_of = L ? L->lab : NULL;
}

/* Softmax cross-entropy of one row of logits (stride apart), label y: adds
 * the loss, counts a correct argmax, and overwrites the logits with
 * (softmax - onehot) * scale. */
static double ce_row(float *z, int64_t stride, int64_t K, const float *bias, int32_t y,
                     double scale, int64_t *correct)
{
    double m = -INFINITY, sum = 0.0, lse;
    int64_t arg = 0;
    for (int64_t k = 0; k < K; k++) {
        double v = (double)z[k * stride] + (double)bias[k];
        z[k * stride] = (float)v;
        if (v > m) {
            m = v;
            arg = k;
        }
    }
    for (int64_t k = 0; k < K; k++)
        sum += exp((double)z[k * stride] - m);
    lse = m + log(sum);
    *correct += arg == y;
    {
        double loss = lse - (double)z[(int64_t)y * stride];
        for (int64_t k = 0; k < K; k++)
            z[k * stride] = (float)(scale * (exp((double)z[k * stride] - lse) - (k == y ? 1.0 : 0.0)));
        return loss;
    }
}

/* The label of every valid step of the block, as probe_phoneme reads it. */
static int frame_labels(clapp_loss_supervised *L, const clapp_block *x, int64_t *n)
{
    const int64_t T = x->x.shape[2];
    int rc = CLAPP_OK;
    *n = 0;
    for (int64_t i = 0; i < (int64_t)x->lanes * T; i++)
        L->lab[i] = -1;
    if (x->label_rate <= 0 || x->rate <= 0)
        return CLAPP_OK;
    for (int32_t b = 0; b < x->lanes; b++) {
        const clapp_lane *ln = &x->lane[b];
        if (ln->seq_id < 0 || ln->len <= 0 || !ln->labels || ln->n_labels <= 0)
            continue;
        for (int32_t t = 0; t < ln->len; t++) {
            double pos = ((double)ln->pts + (double)t + 0.5) * x->label_rate / x->rate;
            int64_t i = (int64_t)floor(pos) - ln->label_pts;
            int32_t lab;
            if (i < 0 || i >= ln->n_labels)
                continue;
            lab = ln->labels[i];
            if (lab < 0)
                continue;
            if (lab >= L->K)
                SERR(CLAPP_E_INVAL, "label %d of sequence '%s' is outside classes=%lld", (int)lab,
                     ln->seq_name ? ln->seq_name : "?", (long long)L->K);
            L->lab[(int64_t)b * T + t] = lab;
            (*n)++;
        }
    }
done:
    return rc;
}

static double compute_frames(clapp_loss_supervised *L, const clapp_block *x, clapp_tensor *grad,
                             int64_t n)
{
    const int64_t T = x->x.shape[2], D = L->D, K = L->K, C = L->C, HW = L->HW;
    const double scale = 1.0 / (double)n;
    double loss = 0.0;

    for (int32_t b = 0; b < x->lanes; b++) {
        const int len = x->lane[b].len;
        const int32_t *lab = L->lab + (int64_t)b * T;
        const float *xb = x->x.data + (int64_t)b * D * T;
        float *gb = grad ? grad->data + (int64_t)b * D * T : NULL;
        int any = 0;
        for (int t = 0; t < len; t++)
            any |= lab[t] >= 0;
        if (!any)
            continue;
        if (L->video) {   /* [C, T, HW] -> [C*HW, T] */
            for (int64_t c = 0; c < C; c++)
                for (int t = 0; t < len; t++)
                    for (int64_t q = 0; q < HW; q++)
                        L->xs[(c * HW + q) * T + t] = xb[(c * T + t) * HW + q];
            xb = L->xs;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)K, len, (int)D, 1.0f,
                    L->W.data, (int)D, xb, (int)T, 0.0f, L->logits, (int)T);
        for (int t = 0; t < len; t++) {
            if (lab[t] < 0) {
                for (int64_t k = 0; k < K; k++)
                    L->logits[k * T + t] = 0.0f;
                continue;
            }
            loss += ce_row(L->logits + t, T, K, L->b.data, lab[t], scale, &L->correct);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)K, (int)D, len, 1.0f, L->logits,
                    (int)T, xb, (int)T, 1.0f, L->Wg.data, (int)D);
        for (int64_t k = 0; k < K; k++) {
            double s = 0.0;
            for (int t = 0; t < len; t++)
                s += L->logits[k * T + t];
            L->bg.data[k] += (float)s;
        }
        if (!gb)
            continue;
        if (!L->video) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, len, (int)K, 1.0f,
                        L->W.data, (int)D, L->logits, (int)T, 1.0f, gb, (int)T);
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)D, len, (int)K, 1.0f, L->W.data,
                    (int)D, L->logits, (int)T, 0.0f, L->dxs, (int)T);
        for (int64_t c = 0; c < C; c++)
            for (int t = 0; t < len; t++)
                for (int64_t q = 0; q < HW; q++)
                    gb[(c * T + t) * HW + q] += L->dxs[(c * HW + q) * T + t];
    }
    return loss * scale;
}

static int compute_class(clapp_loss_supervised *L, const clapp_block *x, clapp_tensor *grad,
                         double *loss_out)
{
    const int64_t T = x->x.shape[2], D = L->D, K = L->K, C = L->C, HW = L->HW;
    int32_t *lane_of = L->lane_of;
    int64_t n = 0;
    double loss = 0.0;
    int rc = CLAPP_OK;

    for (int32_t b = 0; b < x->lanes; b++) {
        const clapp_lane *ln = &x->lane[b];
        const float *xb = x->x.data + (int64_t)b * D * T;
        float *m;
        L->lab[b] = -1;
        if (ln->seq_id < 0 || ln->len <= 0 || ln->class_label < 0)
            continue;
        if (ln->class_label >= K)
            SERR(CLAPP_E_INVAL, "class_label %d of sequence '%s' is outside classes=%lld",
                 (int)ln->class_label, ln->seq_name ? ln->seq_name : "?", (long long)K);
        m = L->xs + n * D;
        for (int64_t c = 0; c < C; c++)
            for (int64_t q = 0; q < HW; q++) {
                double s = 0.0;
                for (int t = 0; t < ln->len; t++)
                    s += xb[(c * T + t) * HW + q];
                m[c * HW + q] = (float)(s / (double)ln->len);
            }
        L->lab[b] = ln->class_label;
        lane_of[n++] = b;
    }
    L->rows = n;
    if (n == 0)
        goto done;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)K, (int)D, 1.0f, L->xs,
                (int)D, L->W.data, (int)D, 0.0f, L->logits, (int)K);
    for (int64_t r = 0; r < n; r++)
        loss += ce_row(L->logits + r * K, 1, K, L->b.data, L->lab[lane_of[r]], 1.0 / (double)n,
                       &L->correct);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)D, (int)n, 1.0f, L->logits,
                (int)K, L->xs, (int)D, 1.0f, L->Wg.data, (int)D);
    for (int64_t k = 0; k < K; k++) {
        double s = 0.0;
        for (int64_t r = 0; r < n; r++)
            s += L->logits[r * K + k];
        L->bg.data[k] += (float)s;
    }
    *loss_out = loss / (double)n;
    if (!grad)
        goto done;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)D, (int)K, 1.0f, L->logits,
                (int)K, L->W.data, (int)D, 0.0f, L->dxs, (int)D);
    for (int64_t r = 0; r < n; r++) {
        const int32_t b = lane_of[r], len = x->lane[b].len;
        const float *dm = L->dxs + r * D;
        float *gb = grad->data + (int64_t)b * D * T;
        const float inv = 1.0f / (float)len;
        for (int64_t c = 0; c < C; c++)
            for (int t = 0; t < len; t++)
                for (int64_t q = 0; q < HW; q++)
                    gb[(c * T + t) * HW + q] += dm[c * HW + q] * inv;
    }
done:
    return rc;
}

int clapp_loss_supervised_compute(clapp_loss_supervised *L, const clapp_block *x,
                                  clapp_tensor *grad, clapp_loss_stats *st)
{
    int rc = CLAPP_OK;
    int64_t T, n = 0, steps = 0;
    double loss = 0.0;

    if (!L || !x || !st)
        return CLAPP_E_INVAL;
    memset(st, 0, sizeof *st);
    L->rows = 0;
    L->correct = 0;
    if (x->x.ndim != (L->video ? 5 : 3) || !x->x.data || x->x.shape[1] != L->C ||
        (L->video && x->x.shape[3] * x->x.shape[4] != L->HW) || x->lanes != x->x.shape[0] ||
        x->lanes > L->B || x->x.shape[2] > L->T)
        SERR(CLAPP_E_SHAPE, "block [%lld lanes, %lld channels, %lld steps] differs from the "
             "configured [%lld, %lld, %lld]", (long long)x->x.shape[0], (long long)x->x.shape[1],
             (long long)x->x.shape[2], (long long)L->B, (long long)L->C, (long long)L->T);
    T = x->x.shape[2];
    if (grad && clapp_tensor_numel(grad) != clapp_tensor_numel(&x->x))
        SERR(CLAPP_E_SHAPE, "the gradient tensor must have the block's shape");
    for (int32_t b = 0; b < x->lanes; b++) {
        if (x->lane[b].len < 0 || x->lane[b].len > T)
            SERR(CLAPP_E_INVAL, "lane %d: len %d outside [0, %lld]", (int)b, (int)x->lane[b].len,
                 (long long)T);
        if (x->lane[b].seq_id >= 0)
            steps += x->lane[b].len;
    }
    if (L->p.labels == CLAPP_SUP_FRAMES) {
        rc = frame_labels(L, x, &n);
        if (rc < 0)
            goto done;
        L->rows = n;
        if (n > 0)
            loss = compute_frames(L, x, grad, n);
    } else {
        rc = compute_class(L, x, grad, &loss);
        if (rc < 0)
            goto done;
        n = L->rows;
    }
    if (n == 0 && steps > 0 && !L->warned) {
        clapp_host_log(L->host, CLAPP_LOG_WARNING, L->name,
                       L->p.labels == CLAPP_SUP_FRAMES
                           ? "supervised: a block without any labelled step (labels=frames needs "
                             ".phn alignments in the manifest and the source's label_rate > 0)"
                           : "supervised: a block without any labelled clip (labels=class needs "
                             "a LABEL column in the manifest)");
        L->warned = 1;
    }
    st->loss = loss;
    st->pairs = n;
done:
    return rc;
}

/* ---- the `supervised` element's loss form (learning/loss_form.h) ---------- */

static const clapp_param_desc supervised_params[] = {
    {"classes", CLAPP_PARAM_INT, "41", 2, 1 << 20, NULL, "number of label classes (41: flite/CMU phones)"},
    {"labels", CLAPP_PARAM_ENUM, "frames", 0, 0, "frames|class",
     "frames: each valid step gets the frame label at its centre, as probe_phoneme reads it "
     "(unlabelled steps skipped); class: the lane's class_label on the time average of its valid "
     "steps in the block, as probe_action (clips without a label skipped)"},
};

/* The paper's reference algorithms (appendix): at the top of one module,
 * supervised end to end; after every layer, greedy supervised. */
static const clapp_plugin_desc supervised_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "supervised",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LOSS,
    .help = "supervised loss: its own linear classifier (weight, bias; learned by the host's "
            "optimizer) with softmax cross-entropy on the frame or clip labels; local update of "
            "the module's layers (core/learning/loss_supervised.h)",
    .params = supervised_params,
    .n_params = (int32_t)(sizeof supervised_params / sizeof supervised_params[0]),
};


static int sup_create(void **self, const clapp_loss_setup *s, char *err, size_t errlen)
{
    const clapp_pipe_elem *pe = s->pe;
    clapp_sup_params sp;
    clapp_loss_supervised *L = NULL;
    int rc;
    sp.classes = clapp_param_find(pe->values, pe->desc->n_params, "classes")->i;
    sp.labels = (clapp_sup_labels)clapp_param_find(pe->values, pe->desc->n_params, "labels")->i;
    sp.seed = s->seed;
    rc = clapp_loss_supervised_create(&L, &sp, s->c, s->host, pe->name);
    *self = L;
    if (rc < 0)
        snprintf(err, errlen, "%s '%s': cannot create the classifier (status %d; see the log "
                 "above)", pe->type, pe->name, rc);
    return rc;
}

static void sup_destroy(void *self) { clapp_loss_supervised_destroy(self); }

static int sup_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    return clapp_loss_supervised_tensors(self, list, count);
}

/* No target: z is c, one gradient. */
static int sup_compute(void *self, const clapp_block *z, const clapp_block *c, clapp_tensor *grad_z,
                       clapp_tensor *grad_c, clapp_loss_stats *st)
{
    (void)z;
    return clapp_loss_supervised_compute(self, c, grad_c ? grad_c : grad_z, st);
}

const clapp_loss_form clapp_loss_form_supervised = {
    .desc = &supervised_desc,
    .create = sup_create,
    .destroy = sup_destroy,
    .tensors = sup_tensors,
    .compute = sup_compute,
};

clapp_loss_supervised *clapp_loss_supervised_of(const clapp_loss_form *form, void *self)
{
    return form == &clapp_loss_form_supervised ? self : NULL;
}
