/* probe_action plugin: gradients of the classifier against finite differences
 * of an independent double-precision forward (BatchNorm on batch statistics,
 * linear, cross-entropy), running statistics, per-sequence averaging across
 * blocks and lanes, learning separable clips, report() and errors.
 *
 * The plugin is driven through its descriptor with dlopen, as a host would.
 * Gradients are read off one plain SGD step with lr = 1 and no weight decay:
 * grad = value_before - value_after. */
#define _GNU_SOURCE
#include <cJSON.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct kv {
    const char *key, *val;
} kv;

typedef struct probe {
    void                    *so;
    const clapp_plugin_desc *d;
    void                    *self;
    clapp_host               host;
    tu_log                   log;
    clapp_block              blk;
    int32_t                  B, C, T, H, W, D;
    const clapp_named_tensor *tl;
    int32_t                  nt;
} probe;

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

static double rng_gauss(uint64_t *st)
{
    double u = (rng_unif(st) + 1.0) / 2.0, v = (rng_unif(st) + 1.0) / 2.0;
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* Open the plugin, create with defaults overridden by kvs, configure to
 * [B, C, T, H, W] (H = W = 0: [B, C, T]) and allocate a host block. */
static void probe_open(probe *p, const kv *kvs, int nkv, int32_t B, int32_t C, int32_t T, int32_t H,
                       int32_t W, uint64_t seed)
{
    const clapp_plugin_entry *e;
    clapp_param_value v[16];
    clapp_create_info ci;
    clapp_stream_info in;
    memset(p, 0, sizeof *p);
    p->so = dlopen(CLAPP_TEST_PLUGIN_DIR "/probe_action.so", RTLD_NOW | RTLD_LOCAL);
    assert_non_null(p->so);
    e = dlsym(p->so, CLAPP_PLUGIN_ENTRY_SYMBOL);
    assert_non_null(e);
    assert_int_equal(e->n_plugins, 1);
    p->d = e->plugins[0];
    assert_string_equal(p->d->id, "probe_action");
    assert_true(p->d->n_params <= 16);
    for (int32_t i = 0; i < p->d->n_params; i++) {
        const clapp_param_desc *pd = &p->d->params[i];
        const char *txt = pd->def;
        for (int k = 0; k < nkv; k++)
            if (strcmp(kvs[k].key, pd->name) == 0)
                txt = kvs[k].val;
        memset(&v[i], 0, sizeof v[i]);
        v[i].name = pd->name;
        v[i].s = txt;
        if (pd->type == CLAPP_PARAM_INT) {
            v[i].i = strtoll(txt, NULL, 10);
            v[i].f = (double)v[i].i;
        } else if (pd->type == CLAPP_PARAM_FLOAT) {
            v[i].f = strtod(txt, NULL);
        } else if (pd->type == CLAPP_PARAM_ENUM) {
            v[i].i = strcmp(txt, "sgd") == 0 ? 1 : 0;
        }
    }
    tu_host_init(&p->host, &p->log);
    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = &p->host;
    ci.instance_name = "probe";
    ci.values = v;
    ci.n_values = p->d->n_params;
    ci.seed = seed;
    assert_int_equal(p->d->create(&ci, &p->self), 0);
    memset(&in, 0, sizeof in);
    in.ndim = H > 0 ? 5 : 3;
    in.shape[0] = B;
    in.shape[1] = C;
    in.shape[2] = T;
    in.shape[3] = H;
    in.shape[4] = W;
    in.rate = 10;
    assert_int_equal(p->d->configure(p->self, &in, NULL), 0);
    assert_int_equal(p->d->tensors(p->self, &p->tl, &p->nt), 0);
    p->B = B;
    p->C = C;
    p->T = T;
    p->H = H > 0 ? H : 1;
    p->W = H > 0 ? W : 1;
    p->D = C * p->H * p->W;
    assert_int_equal(clapp_tensor_alloc_shape(&p->blk.x, in.ndim, in.shape), 0);
    p->blk.lanes = B;
    p->blk.lane = calloc((size_t)B, sizeof *p->blk.lane);
    assert_non_null(p->blk.lane);
    p->blk.rate = 10;
}

static void probe_close(probe *p)
{
    p->d->destroy(p->self);
    clapp_tensor_free(&p->blk.x);
    free(p->blk.lane);
    tu_log_free(&p->log);
    dlclose(p->so);
}

static clapp_tensor *tensor_named(probe *p, const char *name)
{
    for (int32_t i = 0; i < p->nt; i++)
        if (strcmp(p->tl[i].name, name) == 0) {
            assert_null(p->tl[i].grad);
            return p->tl[i].value;
        }
    fail_msg("no tensor %s", name);
    return NULL;
}

/* Value of feature d (c*H*W + hw) at step t of lane b in the host block. */
static float *blk_at(probe *p, int32_t b, int32_t t, int32_t d)
{
    int32_t hw = p->H * p->W, c = d / hw, i = d % hw;
    return p->blk.x.data + (((int64_t)b * p->C + c) * p->T + t) * hw + i;
}

static cJSON *report_json(probe *p)
{
    char buf[512];
    cJSON *j;
    assert_int_equal(p->d->report(p->self, buf, sizeof buf), 0);
    j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static double json_num(cJSON *j, const char *key)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_non_null(it);
    assert_true(cJSON_IsNumber(it));
    return it->valuedouble;
}

/* ------------------------------------------------------------------------ */
/* Independent forward in double                                             */

typedef struct refnet {
    int32_t N, D, K;
    double *x;       /* [N, D] clip means */
    int32_t *y;      /* [N] */
    double *W, *b, *g, *beta;
} refnet;

/* Mean cross-entropy with BN on the batch statistics (biased variance). */
static double ref_loss(const refnet *r)
{
    double L = 0.0;
    double *h = calloc((size_t)(r->N * r->D), sizeof *h);
    assert_non_null(h);
    for (int32_t d = 0; d < r->D; d++) {
        double mu = 0.0, var = 0.0;
        for (int32_t n = 0; n < r->N; n++)
            mu += r->x[n * r->D + d] / r->N;
        for (int32_t n = 0; n < r->N; n++)
            var += (r->x[n * r->D + d] - mu) * (r->x[n * r->D + d] - mu) / r->N;
        for (int32_t n = 0; n < r->N; n++)
            h[n * r->D + d] = r->g[d] * (r->x[n * r->D + d] - mu) / sqrt(var + 1e-5) + r->beta[d];
    }
    for (int32_t n = 0; n < r->N; n++) {
        double z[16], mx = -1e300, s = 0.0;
        for (int32_t k = 0; k < r->K; k++) {
            z[k] = r->b[k];
            for (int32_t d = 0; d < r->D; d++)
                z[k] += r->W[k * r->D + d] * h[n * r->D + d];
            mx = fmax(mx, z[k]);
        }
        for (int32_t k = 0; k < r->K; k++)
            s += exp(z[k] - mx);
        L += (log(s) + mx - z[r->y[n]]) / r->N;
    }
    free(h);
    return L;
}

static void check_fd(refnet *r, double *param, int32_t n, const float *grad, const char *what)
{
    double worst = 0.0, gnorm = 0.0;
    for (int32_t i = 0; i < n; i++) {
        const double h = 1e-5, keep = param[i];
        double lp, lm, fd;
        param[i] = keep + h;
        lp = ref_loss(r);
        param[i] = keep - h;
        lm = ref_loss(r);
        param[i] = keep;
        fd = (lp - lm) / (2 * h);
        worst = fmax(worst, fabs(fd - grad[i]) / (1e-3 + fabs(fd)));
        gnorm += fd * fd;
    }
    print_message("  %-10s %2d values, |grad| %.4f, worst relative error %.2e\n", what, n, sqrt(gnorm),
                  worst);
    assert_true(gnorm > 1e-6); /* a zero gradient would check nothing */
    assert_true(worst < 2e-3);
}

/* ------------------------------------------------------------------------ */

static void test_gradient_check(void **state)
{
    enum { B = 6, C = 2, T = 3, H = 2, W = 2, D = C * H * W, K = 3 };
    const kv kvs[] = {{"classes", "3"}, {"batch", "6"}, {"dropout", "0"}, {"optimizer", "sgd"},
                      {"probe_lr", "1"}, {"probe_wd", "0"}};
    probe p;
    uint64_t st = 11;
    double xm[B * D], Wd[K * D], bd[K], gd[D], betad[D];
    float W0[K * D], b0[K], g0[D], beta0[D];
    float gW[K * D], gb[K], gg[D], gbeta[D];
    int32_t y[B] = {0, 1, 2, 1, 0, 2};
    clapp_tensor *tw, *tb, *tg, *tbeta, *trm, *trv;
    refnet r = {B, D, K, xm, y, Wd, bd, gd, betad};
    cJSON *j;
    (void)state;

    probe_open(&p, kvs, 6, B, C, T, H, W, 5);
    tw = tensor_named(&p, "weight");
    tb = tensor_named(&p, "bias");
    tg = tensor_named(&p, "bn.weight");
    tbeta = tensor_named(&p, "bn.bias");
    trm = tensor_named(&p, "bn.running_mean");
    trv = tensor_named(&p, "bn.running_var");
    assert_int_equal(tw->shape[0], K);
    assert_int_equal(tw->shape[1], D);
    /* Orthogonal init: W W^T = I; bias 0, gamma 1, beta 0. */
    for (int k = 0; k < K; k++)
        for (int l = 0; l < K; l++) {
            double s = 0.0;
            for (int d = 0; d < D; d++)
                s += (double)tw->data[k * D + d] * tw->data[l * D + d];
            assert_true(fabs(s - (k == l)) < 1e-5);
        }
    for (int d = 0; d < D; d++) {
        assert_true(tg->data[d] == 1.0f && tbeta->data[d] == 0.0f);
        assert_true(trm->data[d] == 0.0f && trv->data[d] == 1.0f);
    }
    /* Move gamma, beta and bias off their init so every term is exercised. */
    for (int d = 0; d < D; d++) {
        tg->data[d] = (float)(1.0 + 0.5 * rng_unif(&st));
        tbeta->data[d] = (float)(0.3 * rng_unif(&st));
    }
    for (int k = 0; k < K; k++)
        tb->data[k] = (float)(0.2 * rng_unif(&st));
    memcpy(W0, tw->data, sizeof W0);
    memcpy(b0, tb->data, sizeof b0);
    memcpy(g0, tg->data, sizeof g0);
    memcpy(beta0, tbeta->data, sizeof beta0);

    /* One block: every lane holds a whole clip; mean over its `len` steps. */
    for (int b = 0; b < B; b++) {
        clapp_lane *ln = &p.blk.lane[b];
        ln->seq_id = b;
        ln->flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        ln->len = 1 + b % T;
        ln->class_label = y[b];
        for (int d = 0; d < D; d++) {
            double s = 0.0;
            for (int t = 0; t < T; t++) {
                float v = (float)(2.0 * rng_unif(&st) + 0.5 * d);
                *blk_at(&p, b, t, d) = t < ln->len ? v : 0.0f;
                s += t < ln->len ? v : 0.0;
            }
            xm[b * D + d] = s / ln->len;
        }
    }
    assert_int_equal(p.d->forward(p.self, &p.blk, NULL), 0);
    for (int i = 0; i < K * D; i++) {
        gW[i] = W0[i] - tw->data[i];
        Wd[i] = W0[i];
    }
    for (int k = 0; k < K; k++) {
        gb[k] = b0[k] - tb->data[k];
        bd[k] = b0[k];
    }
    for (int d = 0; d < D; d++) {
        gg[d] = g0[d] - tg->data[d];
        gbeta[d] = beta0[d] - tbeta->data[d];
        gd[d] = g0[d];
        betad[d] = beta0[d];
    }
    /* The reported loss is the step's loss. */
    j = report_json(&p);
    assert_int_equal((int)json_num(j, "clips"), B);
    assert_int_equal((int)json_num(j, "steps"), 1);
    print_message("  loss: plugin %.7f, reference %.7f\n", json_num(j, "loss"), ref_loss(&r));
    assert_true(fabs(json_num(j, "loss") - ref_loss(&r)) < 1e-5);
    cJSON_Delete(j);
    check_fd(&r, Wd, K * D, gW, "weight");
    check_fd(&r, bd, K, gb, "bias");
    check_fd(&r, gd, D, gg, "bn.weight");
    check_fd(&r, betad, D, gbeta, "bn.bias");
    /* Running statistics after one step from (0, 1), momentum 0.1, unbiased variance. */
    for (int d = 0; d < D; d++) {
        double mu = 0.0, var = 0.0;
        for (int b = 0; b < B; b++)
            mu += xm[b * D + d] / B;
        for (int b = 0; b < B; b++)
            var += (xm[b * D + d] - mu) * (xm[b * D + d] - mu) / (B - 1);
        assert_true(fabs(trm->data[d] - 0.1 * mu) < 1e-5 * (1 + fabs(mu)));
        assert_true(fabs(trv->data[d] - (0.9 + 0.1 * var)) < 1e-5 * (1 + var));
    }
    probe_close(&p);
}

/* Clips spread over several blocks and lanes, with idle lanes and garbage
 * past each lane's len, evaluated FROZEN with weights set by the test. */
static void test_sequence_average(void **state)
{
    enum { B = 3, C = 3, T = 4, H = 2, W = 1, D = C * H * W, K = 4, NBLK = 3 };
    /* len per block and lane; flags: S start, E end, '-' idle */
    static const int32_t lens[NBLK][B] = {{4, 3, 0}, {4, 4, 0}, {2, 1, 0}};
    static const char *flags[NBLK][B] = {{"S", "S", "-"}, {"", "E", "-"}, {"E", "SE", "-"}};
    static const int32_t label_of[NBLK][B] = {{2, 1, 0}, {2, 1, 0}, {2, 3, 0}};
    const kv kvs[] = {{"classes", "4"}};
    probe p;
    uint64_t st = 99;
    double sum[B][D] = {{0}}, n[B] = {0}, loss = 0.0;
    int clips = 0, top1 = 0, top3 = 0;
    clapp_tensor *tw, *tb, *trm, *trv;
    cJSON *j;
    (void)state;

    probe_open(&p, kvs, 1, B, C, T, H, W, 3);
    assert_int_equal(p.d->set_mode(p.self, CLAPP_MODE_FROZEN), 0);
    tw = tensor_named(&p, "weight");
    tb = tensor_named(&p, "bias");
    trm = tensor_named(&p, "bn.running_mean");
    trv = tensor_named(&p, "bn.running_var");
    for (int i = 0; i < K * D; i++)
        tw->data[i] = (float)rng_unif(&st);
    for (int k = 0; k < K; k++)
        tb->data[k] = (float)(0.5 * rng_unif(&st));
    for (int d = 0; d < D; d++) {
        trm->data[d] = (float)(0.3 * d);
        trv->data[d] = (float)(1.0 + 0.1 * d);
    }
    for (int blk = 0; blk < NBLK; blk++) {
        for (int b = 0; b < B; b++) {
            clapp_lane *ln = &p.blk.lane[b];
            const char *f = flags[blk][b];
            ln->seq_id = f[0] == '-' ? -1 : b + 10 * blk;
            ln->flags = (strchr(f, 'S') ? CLAPP_LANE_SEQ_START : 0u) | (strchr(f, 'E') ? CLAPP_LANE_SEQ_END : 0u);
            ln->len = lens[blk][b];
            ln->class_label = label_of[blk][b];
            if (ln->flags & CLAPP_LANE_SEQ_START) {
                memset(sum[b], 0, sizeof sum[b]);
                n[b] = 0;
            }
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    float v = (float)(3.0 * rng_unif(&st) + d);
                    /* Steps past len must be ignored: poison them. */
                    *blk_at(&p, b, t, d) = t < ln->len && ln->seq_id >= 0 ? v : 1e4f;
                    if (t < ln->len && ln->seq_id >= 0)
                        sum[b][d] += v;
                }
            n[b] += ln->seq_id >= 0 ? ln->len : 0;
        }
        assert_int_equal(p.d->forward(p.self, &p.blk, NULL), 0);
        /* Reference: each ended clip -> BN(running) -> linear -> CE and rank. */
        for (int b = 0; b < B; b++) {
            double z[K], mx = -1e300, s = 0.0;
            int lab = label_of[blk][b], rank = 0;
            if (!strchr(flags[blk][b], 'E'))
                continue;
            for (int k = 0; k < K; k++) {
                z[k] = tb->data[k];
                for (int d = 0; d < D; d++)
                    z[k] += tw->data[k * D + d] * (sum[b][d] / n[b] - trm->data[d]) / sqrt(trv->data[d] + 1e-5);
                mx = fmax(mx, z[k]);
            }
            for (int k = 0; k < K; k++) {
                s += exp(z[k] - mx);
                rank += z[k] > z[lab];
            }
            loss += log(s) + mx - z[lab];
            clips++;
            top1 += rank < 1;
            top3 += rank < 3;
        }
    }
    j = report_json(&p);
    print_message("  3 clips over 3 blocks: loss plugin %.6f reference %.6f, top1 %d/3, top3 %d/3\n",
                  json_num(j, "loss"), loss / clips, top1, top3);
    assert_int_equal(clips, 3);
    assert_int_equal((int)json_num(j, "clips"), clips);
    assert_true(fabs(json_num(j, "loss") - loss / clips) < 1e-5 * (1 + loss));
    assert_true(fabs(json_num(j, "accuracy") - (double)top1 / clips) < 1e-6);
    assert_true(fabs(json_num(j, "top3") - (double)top3 / clips) < 1e-6);
    assert_int_equal((int)json_num(j, "steps"), 0); /* FROZEN does not train */
    cJSON_Delete(j);

    /* reset(-1): counters cleared, weights kept. An open sequence is
     * forgotten too: a clip ending without new data is not counted. */
    float w0 = tw->data[0];
    assert_int_equal(p.d->reset(p.self, -1), 0);
    j = report_json(&p);
    assert_int_equal((int)json_num(j, "clips"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "accuracy")));
    cJSON_Delete(j);
    assert_true(tw->data[0] == w0);
    probe_close(&p);
}

/* Feed `nclips` synthetic clips through the lanes: clip i has label i % K,
 * a random length, frames = prototype[label] + noise. */
static void feed_clips(probe *p, const double *proto, int32_t K, int32_t nclips, uint64_t seed,
                       double noise)
{
    int32_t next = 0, left[16] = {0}, started[16] = {0}, label[16] = {0};
    uint64_t st = seed;
    double off[16][64];
    assert_true(p->B <= 16 && p->D <= 64);
    for (;;) {
        int active = 0;
        for (int b = 0; b < p->B; b++) {
            clapp_lane *ln = &p->blk.lane[b];
            if (left[b] == 0 && next < nclips) {
                label[b] = next % K;
                left[b] = 3 + (int32_t)(rng_next(&st) % 10);
                started[b] = 0;
                for (int d = 0; d < p->D; d++)
                    off[b][d] = 0.3 * rng_gauss(&st);
                next++;
            }
            memset(ln, 0, sizeof *ln);
            ln->seq_id = left[b] > 0 ? b : -1;
            ln->class_label = label[b];
            if (left[b] == 0)
                continue;
            active = 1;
            ln->len = left[b] < p->T ? left[b] : p->T;
            ln->flags = (started[b] ? 0u : CLAPP_LANE_SEQ_START) | (left[b] == ln->len ? CLAPP_LANE_SEQ_END : 0u);
            started[b] = 1;
            left[b] -= ln->len;
            for (int t = 0; t < p->T; t++)
                for (int d = 0; d < p->D; d++)
                    *blk_at(p, b, t, d) =
                        t < ln->len ? (float)(proto[label[b] * p->D + d] + off[b][d] + noise * rng_gauss(&st)) : 0.0f;
        }
        if (!active)
            break;
        assert_int_equal(p->d->forward(p->self, &p->blk, NULL), 0);
    }
}

static void test_learns_separable_clips(void **state)
{
    enum { B = 4, C = 4, T = 5, H = 2, W = 2, D = C * H * W, K = 5 };
    const kv kvs[] = {{"classes", "5"}, {"probe_lr", "3e-3"}};
    probe p;
    uint64_t st = 7;
    double proto[K * D], before, after, loss_first = 0, loss_last = 0;
    cJSON *j;
    (void)state;
    for (int i = 0; i < K * D; i++)
        proto[i] = 0.8 * rng_gauss(&st) + 2.0;  /* offset: BN must centre */
    probe_open(&p, kvs, 2, B, C, T, H, W, 21);

    /* Untrained, frozen: about chance. */
    assert_int_equal(p.d->set_mode(p.self, CLAPP_MODE_FROZEN), 0);
    feed_clips(&p, proto, K, 200, 1000, 1.0);
    j = report_json(&p);
    before = json_num(j, "accuracy");
    cJSON_Delete(j);

    assert_int_equal(p.d->set_mode(p.self, CLAPP_MODE_LEARN), 0);
    for (int epoch = 0; epoch < 12; epoch++) {
        assert_int_equal(p.d->reset(p.self, -1), 0);
        feed_clips(&p, proto, K, 160, 2000 + (uint64_t)epoch, 1.0);
        assert_int_equal(p.d->finish(p.self), 0);
        j = report_json(&p);
        if (epoch == 0)
            loss_first = json_num(j, "loss");
        loss_last = json_num(j, "loss");
        assert_int_equal((int)json_num(j, "steps"), 20);
        cJSON_Delete(j);
    }
    assert_int_equal(p.d->set_mode(p.self, CLAPP_MODE_FROZEN), 0);
    feed_clips(&p, proto, K, 200, 9999, 1.0);
    j = report_json(&p);
    after = json_num(j, "accuracy");
    assert_int_equal((int)json_num(j, "clips"), 200);
    print_message("  held-out accuracy %.3f before, %.3f after (top3 %.3f); train loss %.3f -> %.3f\n",
                  before, after, json_num(j, "top3"), loss_first, loss_last);
    cJSON_Delete(j);
    assert_true(before < 0.5);
    assert_true(after > 0.9);
    assert_true(loss_last < 0.5 * loss_first);
    probe_close(&p);
}

static void test_report_and_errors(void **state)
{
    probe p;
    char small[8];
    cJSON *j;
    const char *keys[] = {"accuracy", "top3", "clips", "loss", "mode", "steps", "unlabeled"};
    clapp_stream_info bad;
    (void)state;
    probe_open(&p, NULL, 0, 2, 3, 2, 0, 0, 1); /* [B, C, T] stream */
    j = report_json(&p);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(cJSON_GetObjectItemCaseSensitive(j, keys[i]));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "mode")->valuestring, "learn");
    cJSON_Delete(j);
    assert_int_equal(p.d->report(p.self, small, sizeof small), CLAPP_E_NOMEM);

    /* An unlabeled clip is skipped and counted; a label >= classes is an error. */
    for (int b = 0; b < 2; b++) {
        p.blk.lane[b].seq_id = b;
        p.blk.lane[b].len = 2;
        p.blk.lane[b].flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END;
        p.blk.lane[b].class_label = b == 0 ? -1 : 3;
    }
    p.blk.lane[1].seq_id = -1;
    assert_int_equal(p.d->forward(p.self, &p.blk, NULL), 0);
    j = report_json(&p);
    assert_int_equal((int)json_num(j, "unlabeled"), 1);
    assert_int_equal((int)json_num(j, "clips"), 0);
    cJSON_Delete(j);
    assert_int_equal(tu_log_count(&p.log, "without a class label"), 1);
    p.blk.lane[1].seq_id = 1;
    p.blk.lane[1].class_label = 10;
    assert_int_equal(p.d->forward(p.self, &p.blk, NULL), CLAPP_E_INVAL);
    assert_int_equal(tu_log_count(&p.log, "class label 10 is outside 0..9"), 1);

    memset(&bad, 0, sizeof bad);
    bad.ndim = 4;
    bad.shape[0] = bad.shape[1] = bad.shape[2] = bad.shape[3] = 2;
    assert_int_equal(p.d->configure(p.self, &bad, NULL), CLAPP_E_SHAPE);
    probe_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient_check),
        cmocka_unit_test(test_sequence_average),
        cmocka_unit_test(test_learns_separable_clips),
        cmocka_unit_test(test_report_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
