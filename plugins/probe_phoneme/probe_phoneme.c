/* probe_phoneme — a linear softmax probe of frame labels (phones), trained
 * online on the stream it sees (docs/ALGORITHMS.md §4.5: Linear(D -> classes)
 * with bias, Xavier-normal weights, Adam, cross-entropy over frames).
 *
 * A sink: input [B, D, T] at the block rate r. Valid frame t of lane b gets
 * the label of time (pts + t + 0.5) / r seconds, i.e. labels[i] with
 * i = floor((pts + t + 0.5) * label_rate / r) - label_pts; frames without a
 * label (no labels, i out of range, label < 0) are skipped.
 *
 * LEARN: one Adam step per block on the mean cross-entropy over the block's
 * labelled frames (the probe trains itself; its tensors have grad NULL so the
 * host's optimizer leaves them alone). Accuracy counters also run, measured
 * before the step (training accuracy).
 * FROZEN: only the accuracy counters and the confusion counts.
 *
 * anneal_blocks=N (> 0) lowers the learning rate along a half cosine from
 * probe_lr to 0 over the first N LEARN blocks (0 after them): the last steps
 * of a long training are small, so probes trained with different seeds or
 * data orders end near the same optimum instead of wherever the last
 * full-size step left them. clapp eval sets it to the blocks it will feed.
 *
 * report() gives {"accuracy","frames","correct","loss","loss_blocks","steps",
 * "mode","classes"}; "loss" is the mean block loss since the previous
 * report. reset(-1) clears the accuracy counters and the confusion counts,
 * never the weights. With confusion_out=FILE, finish() writes the confusion
 * counts (rows: true label, columns: prediction) as TSV.
 *
 * normalize=true (default) standardises every feature before the linear map:
 * x' = (x - mean) / sqrt(var + 1e-8), with mean and var counted over every
 * labelled frame seen in LEARN mode so far (exact running moments, not an
 * average of block moments) and fixed in FROZEN mode. The probe stays linear
 * (the standardisation folds into W and b); it only makes Adam's step size
 * independent of the feature scale, which differs by orders of magnitude
 * between a random-init and a trained encoder (ReLU stacks shrink or grow
 * the signal layer by layer). The moments are the tensors "feature_mean" and
 * "feature_std".
 *
 * debug_grad=true (tests only) keeps the last block's gradients in extra
 * tensors "weight_grad" and "bias_grad".
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/plugin.h"
#include "clapp/plugin_util.h"

#define PROBE_BETA1 0.9
#define PROBE_BETA2 0.999
#define PROBE_EPS 1e-8

typedef struct probe {
    const clapp_host *host;
    char             *name;
    int64_t           classes;
    double            lr;
    int64_t           anneal_blocks;   /* 0: constant learning rate */
    int64_t           learn_blocks;    /* LEARN blocks seen, for the schedule */
    int               debug_grad;
    int               normalize;
    const char       *confusion_param;   /* the parameter (valid until destroy) */
    char             *confusion_out;     /* its copy, NULL when empty */
    uint64_t          seed;
    clapp_mode        mode;
    int               configured;

    int64_t B, D, T;               /* configured input shape */

    clapp_tensor       w, b;       /* [classes, D], [classes] */
    clapp_tensor       gw, gb;     /* gradient of the last LEARN block */
    float             *mw, *vw, *mb, *vb;   /* Adam moments */
    int64_t            steps;
    clapp_tensor       fmean, fstd;  /* [D] standardisation used by forward */
    double            *msum, *m2;    /* [D] running mean and sum of squared deviations */
    int64_t            mcount;       /* frames in the running moments */
    clapp_named_tensor list[6];
    int32_t            n_list;

    float   *x;       /* [B * T, D] labelled frames, one row each */
    float   *z;       /* [B * T, classes] logits, then dL/dlogits */
    int32_t *y;       /* [B * T] labels */

    /* Counters. */
    int64_t  frames, correct;
    int64_t *confusion;   /* [classes, classes] */
    double   loss_sum;
    int64_t  loss_blocks;
} probe;

static const clapp_param_desc probe_params[] = {
    {"classes", CLAPP_PARAM_INT, "41", 2, 1 << 20, NULL, "number of label classes (41: flite/CMU phones)"},
    {"probe_lr", CLAPP_PARAM_FLOAT, "1e-4", 0, 10, NULL, "Adam learning rate of the probe (its own optimizer)"},
    {"anneal_blocks", CLAPP_PARAM_INT, "0", 0, 1e15, NULL,
     "lower the learning rate along a half cosine to 0 over this many training blocks (0: constant)"},
    {"confusion_out", CLAPP_PARAM_STRING, "", 0, 0, NULL,
     "write the confusion counts (TSV, rows: true label) to this file at finish; empty: no file"},
    {"normalize", CLAPP_PARAM_BOOL, "true", 0, 1, NULL,
     "standardise each feature with the running mean and std of the training frames (still a linear probe)"},
    {"debug_grad", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "tests: expose the last block's gradients as tensors weight_grad and bias_grad"},
};
#define PROBE_N_PARAMS ((int32_t)(sizeof probe_params / sizeof probe_params[0]))

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static void *alloc_floats(int64_t n) { return clapp_aligned_calloc(n, sizeof(float)); }

static const clapp_param_field probe_fields[] = {
    CLAPP_FIELD(probe, classes),        CLAPP_FIELD_AS(probe, lr, "probe_lr"),
    CLAPP_FIELD(probe, anneal_blocks),  CLAPP_FIELD(probe, debug_grad),
    CLAPP_FIELD(probe, normalize),      CLAPP_FIELD_AS(probe, confusion_param, "confusion_out"),
};

static void probe_free_shapes(probe *p)
{
    clapp_tensor_free(&p->w);
    clapp_tensor_free(&p->b);
    clapp_tensor_free(&p->gw);
    clapp_tensor_free(&p->gb);
    clapp_tensor_free(&p->fmean);
    clapp_tensor_free(&p->fstd);
    free(p->msum);
    free(p->m2);
    p->msum = p->m2 = NULL;
    p->mcount = 0;
    free(p->mw);
    free(p->vw);
    free(p->mb);
    free(p->vb);
    free(p->x);
    free(p->z);
    free(p->y);
    free(p->confusion);
    p->mw = p->vw = p->mb = p->vb = p->x = p->z = NULL;
    p->y = NULL;
    p->confusion = NULL;
    p->configured = 0;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

static void probe_destroy(void *self)
{
    probe *p = self;
    if (!p)
        return;
    probe_free_shapes(p);
    free(p->confusion_out);
    free(p->name);
    free(p);
}

static int probe_create(const clapp_create_info *info, void **self)
{
    probe *p = calloc(1, sizeof *p);
    *self = p;
    if (!p)
        return CLAPP_E_NOMEM;
    p->host = info->host;
    p->name = strdup(info->instance_name ? info->instance_name : "probe_phoneme");
    if (!p->name)
        return CLAPP_E_NOMEM;
    if (clapp_params_bind(info, probe_params, PROBE_N_PARAMS, probe_fields,
                          (int32_t)(sizeof probe_fields / sizeof probe_fields[0]), p) != CLAPP_OK)
        return CLAPP_E_INVAL;
    p->debug_grad = p->debug_grad != 0;
    p->normalize = p->normalize != 0;
    if (p->confusion_param && p->confusion_param[0] && !(p->confusion_out = strdup(p->confusion_param)))
        return CLAPP_E_NOMEM;
    p->seed = info->seed;
    p->mode = CLAPP_MODE_LEARN;
    if (p->classes < 2 || !(p->lr >= 0) || !isfinite(p->lr)) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name,
                       "probe_phoneme: need classes >= 2 and probe_lr >= 0 (got classes=%lld probe_lr=%g)",
                       (long long)p->classes, p->lr);
        return CLAPP_E_INVAL;
    }
    return CLAPP_OK;
}

/* Xavier-normal weights (std sqrt(2 / (fan_in + fan_out))), zero bias, as
 * the GIM probe initialises its Linear layer. */
static void probe_init_weights(probe *p)
{
    uint64_t st = p->seed ^ 0x70b3e9a1c2d4f607ull;
    double sd = sqrt(2.0 / (double)(p->D + p->classes));
    int64_t n = p->classes * p->D;
    for (int64_t i = 0; i < n; i++)
        p->w.data[i] = (float)(sd * clapp_normal01(&st));
    clapp_tensor_zero(&p->b);
}

static int probe_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    probe *p = self;
    int64_t C, rows;
    (void)out;
    if (!in || in->ndim != 3 || in->shape[0] < 1 || in->shape[1] < 1 || in->shape[2] < 1) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name,
                       "probe_phoneme: needs a [B, D, T] stream (audio-like features), got %d dimensions",
                       in ? in->ndim : 0);
        return CLAPP_E_SHAPE;
    }
    if (in->rate <= 0) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name,
                       "probe_phoneme: the input stream has no rate (%g steps/s)", in->rate);
        return CLAPP_E_SHAPE;
    }
    C = p->classes;
    /* Keep trained weights if only the block capacity changes. */
    if (p->configured && in->shape[1] == p->D) {
        rows = in->shape[0] * in->shape[2];
        if (rows > p->B * p->T) {
            float *x = alloc_floats(rows * p->D), *z = alloc_floats(rows * C);
            int32_t *y = calloc((size_t)rows, sizeof *y);
            if (!x || !z || !y) {
                free(x);
                free(z);
                free(y);
                clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name, "probe_phoneme: out of memory for %lld frames",
                               (long long)rows);
                return CLAPP_E_NOMEM;
            }
            free(p->x);
            free(p->z);
            free(p->y);
            p->x = x;
            p->z = z;
            p->y = y;
        }
        p->B = in->shape[0];
        p->T = in->shape[2];
        return CLAPP_OK;
    }
    probe_free_shapes(p);
    p->B = in->shape[0];
    p->D = in->shape[1];
    p->T = in->shape[2];
    rows = p->B * p->T;
    {
        int64_t ws[2] = {C, p->D}, bs[1] = {C};
        if (clapp_tensor_alloc_shape(&p->w, 2, ws) < 0 || clapp_tensor_alloc_shape(&p->b, 1, bs) < 0 ||
            clapp_tensor_alloc_shape(&p->gw, 2, ws) < 0 || clapp_tensor_alloc_shape(&p->gb, 1, bs) < 0 ||
            clapp_tensor_alloc_shape(&p->fmean, 1, &p->D) < 0 || clapp_tensor_alloc_shape(&p->fstd, 1, &p->D) < 0)
            goto nomem;
    }
    p->mw = alloc_floats(C * p->D);
    p->vw = alloc_floats(C * p->D);
    p->mb = alloc_floats(C);
    p->vb = alloc_floats(C);
    p->x = alloc_floats(rows * p->D);
    p->z = alloc_floats(rows * C);
    p->y = calloc((size_t)rows, sizeof *p->y);
    p->confusion = calloc((size_t)(C * C), sizeof *p->confusion);
    p->msum = calloc((size_t)p->D, sizeof *p->msum);
    p->m2 = calloc((size_t)p->D, sizeof *p->m2);
    if (!p->msum || !p->m2 || !p->mw || !p->vw || !p->mb || !p->vb || !p->x || !p->z || !p->y || !p->confusion)
        goto nomem;
    probe_init_weights(p);
    for (int64_t d = 0; d < p->D; d++)
        p->fstd.data[d] = 1.0f;   /* identity until frames are seen */
    p->steps = 0;
    p->learn_blocks = 0;
    p->frames = p->correct = p->loss_blocks = 0;
    p->loss_sum = 0;
    p->n_list = 0;
    p->list[p->n_list++] = (clapp_named_tensor){"weight", &p->w, NULL};
    p->list[p->n_list++] = (clapp_named_tensor){"bias", &p->b, NULL};
    if (p->debug_grad) {
        p->list[p->n_list++] = (clapp_named_tensor){"weight_grad", &p->gw, NULL};
        p->list[p->n_list++] = (clapp_named_tensor){"bias_grad", &p->gb, NULL};
    }
    if (p->normalize) {
        p->list[p->n_list++] = (clapp_named_tensor){"feature_mean", &p->fmean, NULL};
        p->list[p->n_list++] = (clapp_named_tensor){"feature_std", &p->fstd, NULL};
    }
    p->configured = 1;
    return CLAPP_OK;
nomem:
    probe_free_shapes(p);
    clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name, "probe_phoneme: out of memory for %lld x %lld weights",
                   (long long)C, (long long)in->shape[1]);
    return CLAPP_E_NOMEM;
}

/* ------------------------------------------------------------------------ */
/* Streaming                                                                 */

/* Gather the labelled frames of the block into rows of x / y. Returns the
 * row count or a negative CLAPP_E_*. */
static int64_t probe_gather(probe *p, const clapp_block *in)
{
    int64_t n = 0, T = in->x.shape[2], D = p->D;
    if (in->label_rate <= 0)
        return 0;
    for (int32_t b = 0; b < in->lanes; b++) {
        const clapp_lane *ln = &in->lane[b];
        const float *xb = in->x.data + (int64_t)b * D * T;
        if (ln->seq_id < 0 || ln->len <= 0 || !ln->labels || ln->n_labels <= 0)
            continue;
        for (int32_t t = 0; t < ln->len && t < T; t++) {
            double pos = ((double)ln->pts + (double)t + 0.5) * in->label_rate / in->rate;
            int64_t i = (int64_t)floor(pos) - ln->label_pts;
            int32_t lab;
            if (i < 0 || i >= ln->n_labels)
                continue;
            lab = ln->labels[i];
            if (lab < 0)
                continue;
            if (lab >= p->classes) {
                clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name,
                               "probe_phoneme: label %d of sequence '%s' is outside classes=%lld",
                               (int)lab, ln->seq_name ? ln->seq_name : "?", (long long)p->classes);
                return CLAPP_E_INVAL;
            }
            for (int64_t d = 0; d < D; d++)
                p->x[n * D + d] = xb[d * T + t];
            p->y[n++] = lab;
        }
    }
    return n;
}

/* Merge the n gathered rows into the running moments (Chan et al.'s
 * pairwise update, exact for any split into blocks) and refresh fmean/fstd. */
static void probe_moments_update(probe *p, int64_t n)
{
    int64_t D = p->D, na = p->mcount, nt = na + n;
    for (int64_t d = 0; d < D; d++) {
        double mb = 0, m2b = 0, delta;
        for (int64_t r = 0; r < n; r++)
            mb += p->x[r * D + d];
        mb /= (double)n;
        for (int64_t r = 0; r < n; r++) {
            double e = p->x[r * D + d] - mb;
            m2b += e * e;
        }
        delta = mb - p->msum[d];
        p->msum[d] += delta * (double)n / (double)nt;
        p->m2[d] += m2b + delta * delta * (double)na * (double)n / (double)nt;
        p->fmean.data[d] = (float)p->msum[d];
        p->fstd.data[d] = (float)sqrt(p->m2[d] / (double)nt + 1e-8);
    }
    p->mcount = nt;
}

static void probe_standardise(probe *p, int64_t n)
{
    int64_t D = p->D;
    for (int64_t r = 0; r < n; r++) {
        float *xr = p->x + r * D;
        for (int64_t d = 0; d < D; d++)
            xr[d] = (xr[d] - p->fmean.data[d]) / p->fstd.data[d];
    }
}

/* z = x W^T + b, then per row: count the prediction, turn z into the
 * softmax minus the one-hot target, scaled by 1/n (= dL/dz of the mean
 * cross-entropy). Returns the mean cross-entropy. */
static double probe_logits(probe *p, int64_t n, int count)
{
    int64_t C = p->classes;
    double loss = 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)C, (int)p->D, 1.0f, p->x, (int)p->D,
                p->w.data, (int)p->D, 0.0f, p->z, (int)C);
    for (int64_t r = 0; r < n; r++) {
        float *zr = p->z + r * C;
        int32_t y = p->y[r];
        int64_t arg = 0;
        double mx, sum = 0;
        for (int64_t c = 0; c < C; c++) {
            zr[c] += p->b.data[c];
            if (zr[c] > zr[arg])
                arg = c;
        }
        mx = zr[arg];
        for (int64_t c = 0; c < C; c++)
            sum += exp((double)zr[c] - mx);
        loss += log(sum) + mx - (double)zr[y];
        if (count) {
            p->frames++;
            p->correct += arg == y;
            p->confusion[(int64_t)y * C + arg]++;
        }
        for (int64_t c = 0; c < C; c++)
            zr[c] = (float)((exp((double)zr[c] - mx) / sum - (c == y ? 1.0 : 0.0)) / (double)n);
    }
    return loss / (double)n;
}

static void adam(float *w, const float *g, float *m, float *v, int64_t n, double lr, double c1, double c2)
{
    for (int64_t i = 0; i < n; i++) {
        m[i] = (float)(PROBE_BETA1 * m[i] + (1 - PROBE_BETA1) * g[i]);
        v[i] = (float)(PROBE_BETA2 * v[i] + (1 - PROBE_BETA2) * (double)g[i] * g[i]);
        w[i] -= (float)(lr * ((double)m[i] / c1) / (sqrt((double)v[i] / c2) + PROBE_EPS));
    }
}

static int probe_forward(void *self, const clapp_block *in, clapp_block *out)
{
    probe *p = self;
    int64_t n, C;
    double loss;
    (void)out;
    if (!p->configured) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name, "probe_phoneme: forward before configure");
        return CLAPP_E_STATE;
    }
    if (in->x.ndim != 3 || in->x.shape[1] != p->D || (int64_t)in->lanes * in->x.shape[2] > p->B * p->T ||
        in->rate <= 0) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name,
                       "probe_phoneme: block [%lld, %lld, %lld] at %g/s does not match the configured "
                       "[%lld, %lld, %lld]", (long long)in->x.shape[0], (long long)in->x.shape[1],
                       (long long)in->x.shape[2], in->rate, (long long)p->B, (long long)p->D, (long long)p->T);
        return CLAPP_E_SHAPE;
    }
    n = probe_gather(p, in);
    if (p->mode == CLAPP_MODE_LEARN && n >= 0)
        p->learn_blocks++;
    if (n <= 0)
        return n < 0 ? (int)n : CLAPP_OK;
    C = p->classes;
    if (p->normalize) {
        if (p->mode == CLAPP_MODE_LEARN)
            probe_moments_update(p, n);
        probe_standardise(p, n);
    }
    loss = probe_logits(p, n, 1);
    if (p->mode != CLAPP_MODE_LEARN)
        return CLAPP_OK;
    p->loss_sum += loss;
    p->loss_blocks++;
    /* dW = dZ^T X, db = column sums of dZ. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)C, (int)p->D, (int)n, 1.0f, p->z, (int)C, p->x,
                (int)p->D, 0.0f, p->gw.data, (int)p->D);
    for (int64_t c = 0; c < C; c++) {
        double s = 0;
        for (int64_t r = 0; r < n; r++)
            s += p->z[r * C + c];
        p->gb.data[c] = (float)s;
    }
    p->steps++;
    {
        double c1 = 1 - pow(PROBE_BETA1, (double)p->steps), c2 = 1 - pow(PROBE_BETA2, (double)p->steps);
        double lr = p->lr;
        if (p->anneal_blocks > 0) {
            double f = (double)(p->learn_blocks - 1) / (double)p->anneal_blocks;
            lr = f >= 1 ? 0 : p->lr * 0.5 * (1 + cos(3.141592653589793 * f));
        }
        adam(p->w.data, p->gw.data, p->mw, p->vw, C * p->D, lr, c1, c2);
        adam(p->b.data, p->gb.data, p->mb, p->vb, C, lr, c1, c2);
    }
    return CLAPP_OK;
}

/* Per-lane streaming state: none. Whole reset: the measurement restarts. */
static int probe_reset(void *self, int32_t lane)
{
    probe *p = self;
    if (lane >= 0)
        return CLAPP_OK;
    p->frames = p->correct = 0;
    if (p->confusion)
        memset(p->confusion, 0, (size_t)(p->classes * p->classes) * sizeof *p->confusion);
    return CLAPP_OK;
}

static int probe_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    probe *p = self;
    if (!p->configured) {
        *list = NULL;
        *count = 0;
        return CLAPP_E_STATE;
    }
    *list = p->list;
    *count = p->n_list;
    return CLAPP_OK;
}

static int probe_set_mode(void *self, clapp_mode mode)
{
    probe *p = self;
    if (mode != CLAPP_MODE_LEARN && mode != CLAPP_MODE_FROZEN)
        return CLAPP_E_INVAL;
    p->mode = mode;
    return CLAPP_OK;
}

static int probe_finish(void *self)
{
    probe *p = self;
    FILE *f;
    int64_t C = p->classes;
    if (!p->confusion_out || !p->configured || p->frames == 0)
        return CLAPP_OK;
    f = fopen(p->confusion_out, "w");
    if (!f) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name, "probe_phoneme: %s: cannot write the confusion: %s",
                       p->confusion_out, strerror(errno));
        return CLAPP_E_IO;
    }
    fprintf(f, "# confusion counts: row = true label id, column = predicted id (%lld frames)\n",
            (long long)p->frames);
    for (int64_t r = 0; r < C; r++)
        for (int64_t c = 0; c < C; c++)
            fprintf(f, "%lld%c", (long long)p->confusion[r * C + c], c + 1 == C ? '\n' : '\t');
    if (fclose(f) != 0) {
        clapp_host_log(p->host, CLAPP_LOG_ERROR, p->name, "probe_phoneme: %s: write failed", p->confusion_out);
        return CLAPP_E_IO;
    }
    return CLAPP_OK;
}

static int probe_report(void *self, char *buf, size_t cap)
{
    probe *p = self;
    char acc[32], loss[32];
    int n;
    if (p->frames > 0)
        snprintf(acc, sizeof acc, "%.6f", (double)p->correct / (double)p->frames);
    else
        snprintf(acc, sizeof acc, "null");
    if (p->loss_blocks > 0)
        snprintf(loss, sizeof loss, "%.10g", p->loss_sum / (double)p->loss_blocks);
    else
        snprintf(loss, sizeof loss, "null");
    n = snprintf(buf, cap,
                 "{\"accuracy\":%s,\"frames\":%lld,\"correct\":%lld,\"loss\":%s,\"loss_blocks\":%lld,"
                 "\"steps\":%lld,\"mode\":\"%s\",\"classes\":%lld}",
                 acc, (long long)p->frames, (long long)p->correct, loss, (long long)p->loss_blocks,
                 (long long)p->steps, p->mode == CLAPP_MODE_LEARN ? "learn" : "frozen", (long long)p->classes);
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            buf[0] = '\0';
        return CLAPP_E_NOMEM;
    }
    /* "loss" is the mean since the previous report. */
    p->loss_sum = 0;
    p->loss_blocks = 0;
    return CLAPP_OK;
}

static const clapp_plugin_desc probe_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "probe_phoneme",
    .version = "1.0.0",
    .kind = CLAPP_KIND_SINK,
    .help = "linear softmax probe of frame labels (phones), trained online with its own Adam; reports accuracy",
    .params = probe_params,
    .n_params = PROBE_N_PARAMS,
    .create = probe_create,
    .destroy = probe_destroy,
    .configure = probe_configure,
    .forward = probe_forward,
    .backward = NULL,
    .reset = probe_reset,
    .tensors = probe_tensors,
    .set_mode = probe_set_mode,
    .finish = probe_finish,
    .report = probe_report,
};

CLAPP_PLUGIN_ENTRY(&probe_desc);
