/* probe_phoneme sink: gradients against finite differences of an independent
 * double-precision cross-entropy, the frame -> label mapping (rates, pts
 * offsets, missing labels, idle lanes), learning a linearly separable
 * problem, the report JSON and its counters, Xavier init and seeding.
 *
 * The plugin is loaded with dlopen and driven through its descriptor. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct fixture {
    void                    *so;
    const clapp_plugin_desc *desc;
    clapp_host               host;
    tu_log                   log;
    int                      normalize;   /* value of normalize= for probe_open */
} fixture;

/* An instance plus a host-owned input block. */
typedef struct probe_t {
    const clapp_plugin_desc *d;
    void                    *self;
    int64_t                  B, D, T, C;
    clapp_block              in;
    clapp_tensor            *w, *b, *gw, *gb;
} probe_t;

static uint64_t rng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unif(uint64_t *st) /* U(-1, 1) */
{
    return (double)(rng_next(st) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static void probe_open(probe_t *P, fixture *f, int64_t C, int64_t B, int64_t D, int64_t T, double lr, int debug,
                       uint64_t seed)
{
    clapp_param_value v[8];
    clapp_create_info ci;
    clapp_stream_info si;
    const clapp_named_tensor *list = NULL;
    int32_t n = 0;
    const clapp_plugin_desc *d = f->desc;
    memset(P, 0, sizeof *P);
    assert_true(d->n_params <= 8);
    for (int32_t i = 0; i < d->n_params; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].name = d->params[i].name;
        v[i].s = d->params[i].def;
        if (strcmp(v[i].name, "classes") == 0)
            v[i].i = C;
        else if (strcmp(v[i].name, "probe_lr") == 0)
            v[i].f = lr;
        else if (strcmp(v[i].name, "debug_grad") == 0)
            v[i].i = debug;
        else if (strcmp(v[i].name, "normalize") == 0)
            v[i].i = f->normalize;
        if (d->params[i].type == CLAPP_PARAM_INT)
            v[i].f = (double)v[i].i;
    }
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = &f->host;
    ci.instance_name = "probe";
    ci.values = v;
    ci.n_values = d->n_params;
    ci.seed = seed;
    P->d = d;
    P->B = B;
    P->D = D;
    P->T = T;
    P->C = C;
    assert_int_equal(d->create(&ci, &P->self), CLAPP_OK);
    memset(&si, 0, sizeof si);
    si.ndim = 3;
    si.shape[0] = B;
    si.shape[1] = D;
    si.shape[2] = T;
    si.rate = 100.0;
    assert_int_equal(d->configure(P->self, &si, NULL), CLAPP_OK);
    assert_int_equal(d->set_mode(P->self, CLAPP_MODE_LEARN), CLAPP_OK);
    assert_int_equal(clapp_tensor_alloc_shape(&P->in.x, 3, si.shape), 0);
    P->in.lanes = (int32_t)B;
    P->in.lane = calloc((size_t)B, sizeof(clapp_lane));
    assert_non_null(P->in.lane);
    P->in.rate = 100.0;
    P->in.label_rate = 100.0;
    assert_int_equal(d->tensors(P->self, &list, &n), CLAPP_OK);
    assert_int_equal(n, (debug ? 4 : 2) + (f->normalize ? 2 : 0));
    assert_string_equal(list[0].name, "weight");
    assert_string_equal(list[1].name, "bias");
    assert_null(list[0].grad);   /* the probe trains itself: the host must not step it */
    assert_null(list[1].grad);
    P->w = list[0].value;
    P->b = list[1].value;
    assert_int_equal(P->w->ndim, 2);
    assert_int_equal(P->w->shape[0], C);
    assert_int_equal(P->w->shape[1], D);
    assert_int_equal(P->b->shape[0], C);
    if (debug) {
        assert_string_equal(list[2].name, "weight_grad");
        assert_string_equal(list[3].name, "bias_grad");
        P->gw = list[2].value;
        P->gb = list[3].value;
    }
}

static void probe_close(probe_t *P)
{
    P->d->destroy(P->self);
    clapp_tensor_free(&P->in.x);
    free(P->in.lane);
}

static void forward(probe_t *P)
{
    assert_int_equal(P->d->forward(P->self, &P->in, NULL), CLAPP_OK);
}

static cJSON *report(probe_t *P)
{
    char buf[1024];
    cJSON *j;
    assert_int_equal(P->d->report(P->self, buf, sizeof buf), CLAPP_OK);
    j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static double report_num(probe_t *P, const char *key)
{
    cJSON *j = report(P);
    cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    double v;
    assert_non_null(it);
    assert_true(cJSON_IsNumber(it));
    v = it->valuedouble;
    cJSON_Delete(j);
    return v;
}

/* Mean cross-entropy in double over frames xs[n][D] with labels ys. */
static double ref_loss(const float *W, const float *bias, const double *xs, const int *ys, int n, int C, int D)
{
    double total = 0;
    for (int r = 0; r < n; r++) {
        double z[64], mx = -1e300, s = 0;
        for (int c = 0; c < C; c++) {
            z[c] = bias[c];
            for (int d = 0; d < D; d++)
                z[c] += (double)W[c * D + d] * xs[r * D + d];
            if (z[c] > mx)
                mx = z[c];
        }
        for (int c = 0; c < C; c++)
            s += exp(z[c] - mx);
        total += log(s) + mx - z[ys[r]];
    }
    return total / n;
}

/* ------------------------------------------------------------------------ */
/* 1. Gradients                                                              */

static void test_probe_gradients(void **state)
{
    fixture *f = *state;
    enum { C = 5, B = 2, D = 7, T = 6 };
    probe_t P;
    uint64_t st = 42;
    int32_t labels[B][T];
    double xs[B * T * D];
    int ys[B * T], n = 0;
    float w0[C * D], b0[C];
    double max_err = 0, max_g = 0;

    probe_open(&P, f, C, B, D, T, 0.0, 1, 7);
    for (int b = 0; b < B; b++) {
        P.in.lane[b].seq_id = b;
        P.in.lane[b].len = b == 0 ? T : T - 2;
        P.in.lane[b].pts = 0;
        P.in.lane[b].labels = labels[b];
        P.in.lane[b].n_labels = T;
        P.in.lane[b].label_pts = 0;
        for (int t = 0; t < T; t++) {
            labels[b][t] = (int32_t)(rng_next(&st) % C);
            for (int d = 0; d < D; d++)
                P.in.x.data[(b * D + d) * T + t] = t < P.in.lane[b].len ? (float)rng_unif(&st) : 0.0f;
        }
        for (int t = 0; t < P.in.lane[b].len; t++) {
            for (int d = 0; d < D; d++)
                xs[n * D + d] = P.in.x.data[(b * D + d) * T + t];
            ys[n++] = labels[b][t];
        }
    }
    /* A non-zero bias so that its gradient is exercised off the origin. */
    for (int c = 0; c < C; c++)
        P.b->data[c] = (float)(0.3 * rng_unif(&st));
    memcpy(w0, P.w->data, sizeof w0);
    memcpy(b0, P.b->data, sizeof b0);

    forward(&P);
    /* probe_lr = 0: the Adam step leaves the weights as they were. */
    assert_true(tu_max_abs_diff(w0, P.w->data, C * D) == 0.0);
    double L = report_num(&P, "loss");
    double Lref = ref_loss(w0, b0, xs, ys, n, C, D);
    assert_true(fabs(L - Lref) < 1e-5 * fabs(Lref));
    assert_true(report_num(&P, "frames") == n);

    /* Central differences of the reference loss in double. */
    const double eps = 1e-3;
    for (int i = 0; i < C * D + C; i++) {
        float wp[C * D], bp[C];
        double lp, lm, fd, g;
        memcpy(wp, w0, sizeof wp);
        memcpy(bp, b0, sizeof bp);
        float *slot = i < C * D ? &wp[i] : &bp[i - C * D];
        float keep = *slot;
        *slot = keep + (float)eps;
        lp = ref_loss(wp, bp, xs, ys, n, C, D);
        *slot = keep - (float)eps;
        lm = ref_loss(wp, bp, xs, ys, n, C, D);
        fd = (lp - lm) / ((double)(keep + (float)eps) - (double)(keep - (float)eps));
        g = i < C * D ? P.gw->data[i] : P.gb->data[i - C * D];
        if (fabs(g - fd) > max_err)
            max_err = fabs(g - fd);
        if (fabs(g) > max_g)
            max_g = fabs(g);
    }
    assert_true(max_g > 1e-2);          /* the gradient is not trivially zero */
    assert_true(max_err < 1e-5);

    /* The same derivative through the plugin itself: perturb one weight,
     * forward again (lr = 0), read the loss from the report. */
    for (int k = 0; k < 3; k++) {
        int i = (int)(rng_next(&st) % (C * D));
        double lp, lm, g = P.gw->data[i];
        float keep = P.w->data[i];
        P.w->data[i] = keep + 1e-2f;
        forward(&P);
        lp = report_num(&P, "loss");
        P.w->data[i] = keep - 1e-2f;
        forward(&P);
        lm = report_num(&P, "loss");
        P.w->data[i] = keep;
        forward(&P);   /* restore weight_grad at w0 */
        report_num(&P, "loss");   /* and start a new loss window */
        assert_true(fabs((lp - lm) / 2e-2 - g) < 1e-4);
    }
    probe_close(&P);
}

/* ------------------------------------------------------------------------ */
/* 2. Which label each frame gets                                            */

/* With W = 0 and b = 0 the softmax is uniform and, with one-hot features
 * (frame k of the block -> feature k), dL/dW[c, k] = (1/C - [y_k = c]) / n
 * for a labelled frame and 0 for a skipped one: the column of weight_grad
 * reveals the label the probe used for every frame. */
static void decode_labels(probe_t *P, int *got)
{
    for (int64_t k = 0; k < P->D; k++) {
        int64_t arg = -1;
        double mn = 0;
        for (int64_t c = 0; c < P->C; c++)
            if (P->gw->data[c * P->D + k] < mn - 1e-9) {
                mn = P->gw->data[c * P->D + k];
                arg = c;
            }
        got[k] = (int)arg;   /* -1: the frame was skipped */
    }
}

static void one_hot_frames(probe_t *P)
{
    clapp_tensor_zero(&P->in.x);
    for (int64_t b = 0; b < P->B; b++)
        for (int64_t t = 0; t < P->T; t++)
            P->in.x.data[(b * P->D + b * P->T + t) * P->T + t] = 1.0f;
    clapp_tensor_zero(P->w);
    clapp_tensor_zero(P->b);
}

static void test_probe_label_mapping(void **state)
{
    fixture *f = *state;
    enum { C = 50, B = 3, T = 8 };
    probe_t P;
    int got[B * T], want[B * T];
    int32_t lab100[40], lab1000[400], lab_short[3];

    for (int i = 0; i < 40; i++)
        lab100[i] = (i * 7) % C;            /* label index i -> class */
    for (int i = 0; i < 400; i++)
        lab1000[i] = (i / 3) % C;           /* changes every 3 ms: resolves the frame centre */
    lab_short[0] = 11;
    lab_short[1] = -1;                      /* "no label" */
    lab_short[2] = 13;
    probe_open(&P, f, C, B, B * T, T, 0.0, 1, 1);

    /* Lane 0: labels at the frame rate, pts 37, labels start at index 30:
     * frame t takes labels[pts + t - label_pts]. Lane 1: labels at 1000/s,
     * pts 12, labels start at index 100: frame t is centred on
     * 10 (pts + t) + 5 ms. Lane 2: len 5 of 8, labels cover 3 frames, one is -1. */
    P.in.label_rate = 100.0;
    P.in.lane[0] = (clapp_lane){.seq_id = 0, .len = T, .pts = 37, .class_label = -1, .labels = lab100,
                                .n_labels = 40, .label_pts = 30};
    P.in.lane[1] = (clapp_lane){.seq_id = 1, .len = T, .pts = 12, .class_label = -1, .labels = NULL};
    P.in.lane[2] = (clapp_lane){.seq_id = 2, .len = 5, .pts = 3, .class_label = -1, .labels = lab_short,
                                .n_labels = 3, .label_pts = 4};
    one_hot_frames(&P);
    forward(&P);
    decode_labels(&P, got);
    for (int t = 0; t < T; t++) {
        want[t] = 37 + t - 30 < 40 ? lab100[37 + t - 30] : -1;
        want[T + t] = -1;                                    /* no labels */
        int i = 3 + t - 4;                                   /* lane 2 index */
        want[2 * T + t] = t < 5 && i >= 0 && i < 3 && lab_short[i] >= 0 ? lab_short[i] : -1;
    }
    assert_memory_equal(got, want, sizeof got);
    /* Frames counted: 8 + 0 + (t = 1 -> 11, t = 3 -> 13). */
    assert_int_equal((int)report_num(&P, "frames"), 10);

    /* 1000 labels/s on a 100 steps/s stream. */
    P.d->reset(P.self, -1);
    P.in.label_rate = 1000.0;
    P.in.lane[0] = (clapp_lane){.seq_id = 0, .len = T, .pts = 12, .class_label = -1, .labels = lab1000,
                                .n_labels = 400, .label_pts = 100};
    P.in.lane[1] = (clapp_lane){.seq_id = -1, .len = T, .pts = 0, .class_label = -1, .labels = lab1000,
                                .n_labels = 400};                       /* idle lane: ignored */
    P.in.lane[2] = (clapp_lane){.seq_id = 5, .len = T, .pts = 38, .class_label = -1, .labels = lab1000,
                                .n_labels = 400, .label_pts = 0};       /* runs off the labels at t = 2 */
    one_hot_frames(&P);
    forward(&P);
    decode_labels(&P, got);
    for (int t = 0; t < T; t++) {
        int i0 = 10 * (12 + t) + 5 - 100, i2 = 10 * (38 + t) + 5;
        want[t] = lab1000[i0];
        want[T + t] = -1;
        want[2 * T + t] = i2 < 400 ? lab1000[i2] : -1;
    }
    assert_memory_equal(got, want, sizeof got);
    assert_int_equal((int)report_num(&P, "frames"), T + 2);

    /* No label stream at all (label_rate 0): nothing is counted or learnt. */
    P.d->reset(P.self, -1);
    P.in.label_rate = 0.0;
    forward(&P);
    assert_int_equal((int)report_num(&P, "frames"), 0);

    /* A label outside the classes is an error with a message. */
    int32_t bad[1] = {C};
    P.in.label_rate = 100.0;
    P.in.lane[0] = (clapp_lane){.seq_id = 0, .len = 1, .pts = 0, .labels = bad, .n_labels = 1, .seq_name = "x"};
    tu_log_clear(&f->log);
    assert_int_equal(P.d->forward(P.self, &P.in, NULL), CLAPP_E_INVAL);
    assert_int_equal(tu_log_count(&f->log, "outside classes=50"), 1);
    probe_close(&P);
}

/* ------------------------------------------------------------------------ */
/* 3. Learning                                                               */

/* Frames of class c are mu_c + noise, with well separated means. */
static void make_block(probe_t *P, uint64_t *st, const double *mu, int32_t *labels, int64_t *pts)
{
    for (int64_t b = 0; b < P->B; b++) {
        clapp_lane *ln = &P->in.lane[b];
        *ln = (clapp_lane){.seq_id = b, .len = (int32_t)P->T, .pts = *pts, .class_label = -1,
                           .labels = labels + b * P->T, .n_labels = (int32_t)P->T, .label_pts = *pts};
        for (int64_t t = 0; t < P->T; t++) {
            int32_t c = (int32_t)(rng_next(st) % (uint64_t)P->C);
            labels[b * P->T + t] = c;
            for (int64_t d = 0; d < P->D; d++)
                P->in.x.data[(b * P->D + d) * P->T + t] = (float)(mu[c * P->D + d] + 0.5 * rng_unif(st));
        }
    }
    *pts += P->T;
}

static void test_probe_learns(void **state)
{
    fixture *f = *state;
    enum { C = 6, B = 4, D = 16, T = 25 };
    probe_t P;
    uint64_t st = 9;
    double mu[C * D];
    int32_t labels[B * T];
    int64_t pts = 0;
    float wsave[C * D];
    double acc0, acc1, loss_first = 0, loss_last;

    for (int i = 0; i < C * D; i++)
        mu[i] = rng_unif(&st);
    probe_open(&P, f, C, B, D, T, 1e-2, 0, 3);

    /* Frozen, untrained: near chance (1/6). */
    assert_int_equal(P.d->set_mode(P.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    for (int k = 0; k < 20; k++) {
        make_block(&P, &st, mu, labels, &pts);
        forward(&P);
    }
    acc0 = report_num(&P, "accuracy");
    assert_true(acc0 < 0.6);

    P.d->reset(P.self, -1);
    assert_int_equal(P.d->set_mode(P.self, CLAPP_MODE_LEARN), CLAPP_OK);
    for (int k = 0; k < 300; k++) {
        make_block(&P, &st, mu, labels, &pts);
        forward(&P);
        if (k == 9)
            loss_first = report_num(&P, "loss");   /* mean over blocks 0..9 */
    }
    loss_last = report_num(&P, "loss");            /* mean over blocks 10..299 */
    assert_true(report_num(&P, "steps") == 300);
    assert_true(loss_last < 0.5 * loss_first);

    /* Frozen on fresh data: accuracy from the counters after reset(-1), and
     * the weights do not move. */
    P.d->reset(P.self, -1);
    assert_int_equal((int)report_num(&P, "frames"), 0);
    assert_int_equal(P.d->set_mode(P.self, CLAPP_MODE_FROZEN), CLAPP_OK);
    memcpy(wsave, P.w->data, sizeof wsave);
    for (int k = 0; k < 40; k++) {
        make_block(&P, &st, mu, labels, &pts);
        forward(&P);
    }
    assert_true(tu_max_abs_diff(wsave, P.w->data, C * D) == 0.0);
    acc1 = report_num(&P, "accuracy");
    print_message("probe: frozen accuracy %.3f before, %.3f after 300 blocks; loss %.3f -> %.3f\n", acc0, acc1,
                  loss_first, loss_last);
    assert_true(acc1 > 0.95);
    assert_int_equal((int)report_num(&P, "frames"), 40 * B * T);
    probe_close(&P);
}

/* normalize=true: the running moments equal a two-pass mean / std over all
 * training frames so far (any block split), and the probe equals a probe
 * without normalisation fed the standardised frames (independent
 * formulation: the test standardises in double). FROZEN blocks leave the
 * moments alone. */
static void test_probe_normalize(void **state)
{
    fixture *f = *state;
    enum { C = 5, B = 3, D = 6, T = 10, K = 4 };
    probe_t A, R;
    uint64_t st = 77;
    double mu[C * D], all[K * B * T * D];
    int32_t labels[B * T];
    int64_t pts = 0, pts_r = 0;
    int n = 0;
    const clapp_named_tensor *list;
    int32_t cnt;
    clapp_tensor *fmean, *fstd;

    for (int i = 0; i < C * D; i++)
        mu[i] = rng_unif(&st);
    f->normalize = 1;
    probe_open(&A, f, C, B, D, T, 1e-2, 0, 5);
    f->normalize = 0;
    probe_open(&R, f, C, B, D, T, 1e-2, 0, 5);
    assert_int_equal(A.d->tensors(A.self, &list, &cnt), CLAPP_OK);
    assert_int_equal(cnt, 4);
    assert_string_equal(list[2].name, "feature_mean");
    assert_string_equal(list[3].name, "feature_std");
    fmean = list[2].value;
    fstd = list[3].value;
    assert_memory_equal(A.w->data, R.w->data, sizeof(float) * C * D);

    for (int k = 0; k < K; k++) {
        double mean[D], sd[D];
        uint64_t keep;
        make_block(&A, &st, mu, labels, &pts);
        /* Feature d gets scale 10^(d - 2) and offset 100 d: from 0.01 to 1000. */
        for (int64_t i = 0; i < B * D * T; i++) {
            int64_t d = (i / T) % D;
            A.in.x.data[i] = (float)(A.in.x.data[i] * pow(10.0, (double)d - 2) + 100.0 * d);
        }
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++, n++)
                for (int d = 0; d < D; d++)
                    all[n * D + d] = A.in.x.data[(b * D + d) * T + t];
        for (int d = 0; d < D; d++) {
            double s = 0, s2 = 0;
            for (int r = 0; r < n; r++)
                s += all[r * D + d];
            mean[d] = s / n;
            for (int r = 0; r < n; r++)
                s2 += (all[r * D + d] - mean[d]) * (all[r * D + d] - mean[d]);
            sd[d] = sqrt(s2 / n + 1e-8);
        }
        /* The reference probe sees the same labels, standardised in double. */
        keep = st;
        make_block(&R, &keep, mu, labels, &pts_r);
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < T; t++)
                    R.in.x.data[(b * D + d) * T + t] =
                        (float)(((double)A.in.x.data[(b * D + d) * T + t] - mean[d]) / sd[d]);
        forward(&A);
        forward(&R);
        for (int d = 0; d < D; d++) {
            assert_true(fabs(fmean->data[d] - mean[d]) <= 1e-5 * (fabs(mean[d]) + sd[d]));
            assert_true(fabs(fstd->data[d] - sd[d]) <= 1e-4 * sd[d]);
        }
    }
    print_message("probe normalize: weights differ from the reference by %.2e after %d blocks\n",
                  tu_max_abs_diff(A.w->data, R.w->data, C * D), K);
    assert_true(tu_max_abs_diff(A.w->data, R.w->data, C * D) < 1e-4);
    assert_true(tu_max_abs_diff(A.b->data, R.b->data, C) < 1e-4);
    assert_true(report_num(&A, "loss") > 0);

    /* Frozen: the moments stay. */
    {
        float m0[D], s0[D];
        memcpy(m0, fmean->data, sizeof m0);
        memcpy(s0, fstd->data, sizeof s0);
        assert_int_equal(A.d->set_mode(A.self, CLAPP_MODE_FROZEN), CLAPP_OK);
        make_block(&A, &st, mu, labels, &pts);
        forward(&A);
        assert_memory_equal(m0, fmean->data, sizeof m0);
        assert_memory_equal(s0, fstd->data, sizeof s0);
    }
    probe_close(&A);
    probe_close(&R);
}

/* ------------------------------------------------------------------------ */
/* 4. Report, confusion file, init, descriptor                               */

static void test_probe_report(void **state)
{
    fixture *f = *state;
    enum { C = 4, B = 2, D = 3, T = 5 };
    probe_t P;
    int32_t labels[B * T];
    uint64_t st = 5;
    char small[16];
    cJSON *j;

    probe_open(&P, f, C, B, D, T, 1e-3, 0, 2);
    j = report(&P);   /* nothing seen yet: accuracy and loss are null */
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "accuracy")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "loss")));
    cJSON_Delete(j);
    for (int i = 0; i < B * T; i++)
        labels[i] = (int32_t)(rng_next(&st) % C);
    for (int b = 0; b < B; b++)
        P.in.lane[b] = (clapp_lane){.seq_id = b, .len = T, .labels = labels + b * T, .n_labels = T};
    for (int i = 0; i < B * D * T; i++)
        P.in.x.data[i] = (float)rng_unif(&st);
    forward(&P);
    forward(&P);
    j = report(&P);
    const char *keys[] = {"accuracy", "frames", "correct", "loss", "loss_blocks", "steps", "classes"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, keys[k])));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "mode")->valuestring, "learn");
    double frames = cJSON_GetObjectItemCaseSensitive(j, "frames")->valuedouble;
    double correct = cJSON_GetObjectItemCaseSensitive(j, "correct")->valuedouble;
    assert_true(frames == 2 * B * T);
    assert_true(fabs(cJSON_GetObjectItemCaseSensitive(j, "accuracy")->valuedouble - correct / frames) < 1e-6);
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "loss_blocks")->valuedouble == 2);
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "classes")->valuedouble == C);
    cJSON_Delete(j);
    /* The loss window restarts at each report; the accuracy counters do not. */
    j = report(&P);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "loss")));
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "frames")->valuedouble == 2 * B * T);
    cJSON_Delete(j);
    assert_int_equal(P.d->report(P.self, small, sizeof small), CLAPP_E_NOMEM);
    /* reset of one lane keeps the counters; reset(-1) clears them, not the weights. */
    float w0 = P.w->data[0];
    assert_int_equal(P.d->reset(P.self, 1), CLAPP_OK);
    assert_true(report_num(&P, "frames") == 2 * B * T);
    assert_int_equal(P.d->reset(P.self, -1), CLAPP_OK);
    assert_true(report_num(&P, "frames") == 0);
    assert_true(P.w->data[0] == w0);
    probe_close(&P);
}

static void test_probe_confusion_file(void **state)
{
    fixture *f = *state;
    enum { C = 3, B = 1, D = 3, T = 4 };
    const clapp_plugin_desc *d = f->desc;
    char *dir = tu_tmpdir("probe"), *path = tu_path(dir, "conf.tsv");
    clapp_param_value v[8];
    clapp_create_info ci;
    clapp_stream_info si = {.ndim = 3, .shape = {B, D, T}, .rate = 100};
    clapp_block in;
    clapp_lane lane;
    const clapp_named_tensor *list;
    int32_t n, labels[T] = {0, 1, 2, 2};
    void *self = NULL;
    long long m[C][C];
    FILE *fp;
    char line[256];

    for (int32_t i = 0; i < d->n_params; i++) {
        memset(&v[i], 0, sizeof v[i]);
        v[i].name = d->params[i].name;
        v[i].s = d->params[i].def;
        if (strcmp(v[i].name, "classes") == 0)
            v[i].i = C, v[i].f = C;
        else if (strcmp(v[i].name, "probe_lr") == 0)
            v[i].f = 1e-4;
        else if (strcmp(v[i].name, "confusion_out") == 0)
            v[i].s = path;
    }
    ci = (clapp_create_info){.struct_size = sizeof ci, .host = &f->host, .instance_name = "p", .values = v,
                             .n_values = d->n_params, .seed = 1};
    assert_int_equal(d->create(&ci, &self), CLAPP_OK);
    assert_int_equal(d->configure(self, &si, NULL), CLAPP_OK);
    assert_int_equal(d->set_mode(self, CLAPP_MODE_FROZEN), CLAPP_OK);
    assert_int_equal(d->tensors(self, &list, &n), CLAPP_OK);
    /* Identity weights: frame t with feature e_k is predicted as class k. */
    clapp_tensor_zero(list[0].value);
    for (int c = 0; c < C; c++)
        list[0].value->data[c * D + c] = 1.0f;
    memset(&in, 0, sizeof in);
    assert_int_equal(clapp_tensor_alloc_shape(&in.x, 3, si.shape), 0);
    in.lanes = 1;
    in.lane = &lane;
    in.rate = 100;
    in.label_rate = 100;
    lane = (clapp_lane){.seq_id = 0, .len = T, .labels = labels, .n_labels = T};
    /* predictions 0, 1, 1, 2 against labels 0, 1, 2, 2 */
    int pred[T] = {0, 1, 1, 2};
    for (int t = 0; t < T; t++)
        in.x.data[pred[t] * T + t] = 1.0f;
    assert_int_equal(d->forward(self, &in, NULL), CLAPP_OK);
    assert_int_equal(d->finish(self), CLAPP_OK);
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof line, fp));   /* comment */
    assert_int_equal(line[0], '#');
    for (int r = 0; r < C; r++)
        assert_int_equal(fscanf(fp, "%lld %lld %lld", &m[r][0], &m[r][1], &m[r][2]), 3);
    fclose(fp);
    long long want[C][C] = {{1, 0, 0}, {0, 1, 0}, {0, 1, 1}};
    assert_memory_equal(m, want, sizeof m);
    d->destroy(self);
    clapp_tensor_free(&in.x);
    tu_rmtree(dir);
    free(dir);
    free(path);
}

static void test_probe_init_and_shapes(void **state)
{
    fixture *f = *state;
    probe_t P, Q, R;
    double s = 0, s2 = 0;
    int64_t n = 41 * 256;
    clapp_stream_info si5 = {.ndim = 5, .shape = {1, 3, 4, 8, 8}, .rate = 10};

    probe_open(&P, f, 41, 1, 256, 4, 1e-4, 0, 11);
    probe_open(&Q, f, 41, 1, 256, 4, 1e-4, 0, 11);
    probe_open(&R, f, 41, 1, 256, 4, 1e-4, 0, 12);
    for (int64_t i = 0; i < n; i++) {
        s += P.w->data[i];
        s2 += (double)P.w->data[i] * P.w->data[i];
    }
    double sd = sqrt(s2 / n - (s / n) * (s / n)), want = sqrt(2.0 / (41 + 256));
    print_message("probe: init std %.5f (Xavier-normal %.5f), mean %.5f\n", sd, want, s / n);
    assert_true(fabs(sd - want) < 0.03 * want);   /* 10496 samples: std error ~0.7% */
    assert_true(fabs(s / n) < 0.05 * want);
    for (int c = 0; c < 41; c++)
        assert_true(P.b->data[c] == 0.0f);
    assert_memory_equal(P.w->data, Q.w->data, (size_t)n * sizeof(float));
    assert_true(tu_max_abs_diff(P.w->data, R.w->data, (size_t)n) > 0.01);

    /* Re-configuring a larger block keeps the trained weights. */
    P.w->data[0] = 123.0f;
    clapp_stream_info big = {.ndim = 3, .shape = {8, 256, 64}, .rate = 100};
    assert_int_equal(P.d->configure(P.self, &big, NULL), CLAPP_OK);
    const clapp_named_tensor *list;
    int32_t cnt;
    assert_int_equal(P.d->tensors(P.self, &list, &cnt), CLAPP_OK);
    assert_true(list[0].value->data[0] == 123.0f);

    tu_log_clear(&f->log);
    assert_int_equal(P.d->configure(P.self, &si5, NULL), CLAPP_E_SHAPE);
    assert_int_equal(tu_log_count(&f->log, "[B, D, T]"), 1);
    assert_int_equal(f->desc->kind, CLAPP_KIND_SINK);
    assert_null(f->desc->backward);
    assert_string_equal(f->desc->id, "probe_phoneme");
    probe_close(&P);
    probe_close(&Q);
    probe_close(&R);
}

/* ------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const clapp_plugin_entry *entry;
    if (!f)
        return -1;
    tu_host_init(&f->host, &f->log);
    f->so = dlopen(CLAPP_TEST_PLUGIN_DIR "/probe_phoneme.so", RTLD_NOW | RTLD_LOCAL);
    if (!f->so) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        free(f);
        return -1;
    }
    entry = dlsym(f->so, CLAPP_PLUGIN_ENTRY_SYMBOL);
    if (!entry || entry->abi_major != CLAPP_ABI_MAJOR || entry->n_plugins != 1) {
        dlclose(f->so);
        free(f);
        return -1;
    }
    f->desc = entry->plugins[0];
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    if (f) {
        dlclose(f->so);
        tu_log_free(&f->log);
        free(f);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_gradients),
        cmocka_unit_test(test_probe_label_mapping),
        cmocka_unit_test(test_probe_learns),
        cmocka_unit_test(test_probe_normalize),
        cmocka_unit_test(test_probe_report),
        cmocka_unit_test(test_probe_confusion_file),
        cmocka_unit_test(test_probe_init_and_shapes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
