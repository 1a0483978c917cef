/* Direct feedback (a loss element with context=, core/graph/graph.c): the targets
 * are the own layer's output, the context a later layer's output, detached.
 *
 * 1. one SGD step: the gradients of the layer (weight, bias) and of W_k equal
 *    a double reference computed here from the recorded draws (CLAPP-s,
 *    Eq. 6 and 8 forms chained through z = relu(w x + b)); the context layer
 *    gets exactly zero gradient;
 * 2. refusals: different rates (naming both elements and rates), target=;
 * 3. a feedback loss from a GRU (e-prop and BPTT) trains, and a checkpoint
 *    resumes bit-identically.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "learning/loss_clapp.h"
#include "learning/loss_supervised.h"
#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "testutil.h"

/* The `clapp` element's parts (learning/loss_clapp.h) and the classifier of
 * a `supervised` one, from a graph node. */
static inline const clapp_loss_params *node_loss_params(const clapp_node *nd)
{
    return clapp_loss_clapp_params(nd->loss_form, nd->loss_self);
}
static inline clapp_loss *node_loss_flat(const clapp_node *nd)
{
    return clapp_loss_clapp_flat(nd->loss_form, nd->loss_self);
}
static inline clapp_loss_video *node_loss_video(const clapp_node *nd)
{
    return clapp_loss_clapp_video(nd->loss_form, nd->loss_self);
}
static inline clapp_loss_supervised *node_loss_sup(const clapp_node *nd)
{
    return clapp_loss_supervised_of(nd->loss_form, nd->loss_self);
}

#define LANES 2

typedef struct run {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
    clapp_block         blk;
    clapp_lane          lanes[LANES];
    int64_t             T;
} run;

static int run_open(run *r, const char *text, int64_t T, int sgd, double lr, char *err, size_t errlen)
{
    clapp_stream_info src = {3, {LANES, 1, T, 0, 0, 0}, 16000.0};
    clapp_graph_params gp;
    memset(r, 0, sizeof *r);
    r->T = T;
    tu_host_init(&r->host, &r->log);
    assert_int_equal(clapp_registry_init_default(&r->reg, &r->host), 0);
    if (clapp_pipedesc_parse(&r->pd, text, "<test>", err, errlen) < 0 ||
        clapp_pipedesc_resolve(&r->pd, &r->reg, err, errlen) < 0)
        fail_msg("%s", err);
    clapp_graph_default_params(&gp);
    gp.seed = 5;
    gp.optim.lr = lr;
    if (sgd)
        gp.optim.type = CLAPP_OPTIM_SGD;
    r->blk.x.ndim = 3;
    memcpy(r->blk.x.shape, src.shape, sizeof src.shape);
    assert_int_equal(clapp_tensor_alloc(&r->blk.x), 0);
    r->blk.lanes = LANES;
    r->blk.lane = r->lanes;
    r->blk.rate = src.rate;
    return clapp_graph_create(&r->g, &r->pd, &src, &gp, &r->host, err, errlen);
}

static void run_close(run *r)
{
    clapp_tensor_free(&r->blk.x);
    clapp_graph_destroy(&r->g);
    clapp_pipedesc_free(&r->pd);
    clapp_registry_free(&r->reg);
    tu_log_free(&r->log);
}

/* Harmonics with a drifting pitch, per lane and block; lane 1 shorter. */
static void fill(run *r, int block, double amp)
{
    for (int b = 0; b < LANES; b++) {
        float *x = r->blk.x.data + (int64_t)b * r->T;
        int len = (int)(r->T - r->T / 4 * b);
        double f0 = 150.0 + 60.0 * b + 13.0 * (block % 7), ph = 0.0;
        for (int64_t t = 0; t < r->T; t++) {
            ph += 2 * M_PI * f0 * (1.0 + 0.1 * sin((double)t / 90.0)) / 16000.0;
            x[t] = t < len ? (float)(amp * (0.6 * sin(ph) + 0.3 * sin(3 * ph + b) +
                                            0.1 * cos(7 * ph))) : 0.0f;
        }
        r->lanes[b] = (clapp_lane){.seq_id = b + LANES * block, .seq_name = "x",
                                   .flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END,
                                   .len = len, .class_label = -1};
    }
}

static int node(const run *r, const char *name)
{
    int i = clapp_pipedesc_find(&r->pd, name);
    assert_true(i > 0);
    return i;
}

static clapp_tensor *param(run *r, const char *elem, const char *tensor)
{
    const clapp_node *nd = &r->g.nodes[node(r, elem)];
    for (int32_t t = 0; t < nd->n_tensors; t++)
        if (!strcmp(nd->tensors[t].name, tensor))
            return nd->tensors[t].value;
    fail_msg("no tensor %s.%s", elem, tensor);
    return NULL;
}

static float *copy_of(const clapp_tensor *t)
{
    size_t n = (size_t)clapp_tensor_numel(t);
    float *y = malloc(n * sizeof(float));
    memcpy(y, t->data, n * sizeof(float));
    return y;
}

/* ---- 1. gradients against a double reference ---------------------------------- */

static void test_feedback_gradients(void **state)
{
    enum { T = 24, DZ = 4, DC = 3 };
    const double LR = 1e4;   /* SGD: gradient = (before - after) / LR, exact to ~1e-7 */
    const char *text = "source ! conv1d name=a out=4 kernel=1 stride=1 pad=0 "
                       "! clapp name=fb context=b mode=clapp-s steps=3 negatives=4 window=0 "
                       "! conv1d name=b out=3 kernel=1 stride=1 pad=0";
    run r;
    char err[1024] = "";
    clapp_loss_draws d;
    (void)state;
    assert_int_equal(run_open(&r, text, T, 1, LR, err, sizeof err), 0);
    {
        clapp_tensor *W = param(&r, "fb", "W");   /* scores of order 1: hinges partly active */
        for (int64_t i = 0; i < clapp_tensor_numel(W); i++)
            W->data[i] *= 30.0f;
    }
    float *wa = copy_of(param(&r, "a", "weight")), *ba = copy_of(param(&r, "a", "bias"));
    float *wb = copy_of(param(&r, "b", "weight")), *Wf = copy_of(param(&r, "fb", "W"));
    fill(&r, 0, 4.0);
    assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
    assert_int_equal(clapp_loss_last_draws(node_loss_flat(&r.g.nodes[node(&r, "fb")]), &d), 0);
    const clapp_block *cb = clapp_graph_output(&r.g, node(&r, "b"));
    const float *x = r.blk.x.data;
    int32_t lens[LANES];
    for (int b = 0; b < LANES; b++)
        lens[b] = r.lanes[b].len;

    /* z = relu(w x + bias) in double; c as the graph computed it (data, detached) */
    double z[LANES][DZ][T], gz[LANES][DZ][T], gW[3 * DZ * DC], gw[DZ], gb[DZ];
    memset(gz, 0, sizeof gz);
    memset(gW, 0, sizeof gW);
    for (int b = 0; b < LANES; b++)
        for (int o = 0; o < DZ; o++)
            for (int t = 0; t < T; t++) {
                double pre = (double)wa[o] * x[b * T + t] + ba[o];
                z[b][o][t] = t < lens[b] && pre > 0 ? pre : 0.0;
            }
#define C(b_, i_, t_) ((double)cb->x.data[((b_) * DC + (i_)) * T + (t_)])
    {
        const int K = d.steps, N = d.negatives;
        int K_eff = 0;
        long active = 0, terms = 0;
        for (int k = 1; k <= K; k++)
            K_eff += d.pair_off[k] > d.pair_off[k - 1];
        for (int k = 1; k <= K; k++) {
            int64_t pair = d.pair_off[k - 1], P = d.pair_off[k] - pair;
            double wpos = 1.0 / (K_eff * (double)P), wneg = wpos / N;
            const float *Wk = Wf + (k - 1) * DZ * DC;
            for (int b = 0; b < LANES; b++)
                for (int t = d.lo[b]; t < d.hi[b] - k; t++, pair++) {
                    double pred[DZ];
                    for (int j = 0; j < DZ; j++) {
                        pred[j] = 0;
                        for (int i = 0; i < DC; i++)
                            pred[j] += Wk[j * DC + i] * C(b, i, t);
                    }
                    for (int m = 0; m <= N; m++) {
                        int qb = b, qt = t + k;
                        double u = 0, g;
                        if (m > 0) {
                            int32_t q = d.neg[0][pair * N + (m - 1)];
                            qb = q >= d.pool_off[1];
                            qt = (int)(q - d.pool_off[qb]);
                        }
                        for (int j = 0; j < DZ; j++)
                            u += z[qb][j][qt] * pred[j];
                        g = m == 0 ? (u < 1 ? -wpos : 0) : (u > -1 ? wneg : 0);
                        terms++;
                        active += g != 0;
                        for (int j = 0; j < DZ; j++) {
                            gz[qb][j][qt] += g * pred[j];
                            for (int i = 0; i < DC; i++)
                                gW[(k - 1) * DZ * DC + j * DC + i] += g * z[qb][j][qt] * C(b, i, t);
                        }
                    }
                }
        }
        print_message("feedback loss: %ld of %ld hinge terms active\n", active, terms);
        assert_true(active > terms / 10 && active < terms);
    }
#undef C
    memset(gw, 0, sizeof gw);
    memset(gb, 0, sizeof gb);
    for (int b = 0; b < LANES; b++)
        for (int o = 0; o < DZ; o++)
            for (int t = 0; t < lens[b]; t++)
                if (z[b][o][t] > 0) {
                    gw[o] += gz[b][o][t] * x[b * T + t];
                    gb[o] += gz[b][o][t];
                }
    {
        const float *wa1 = param(&r, "a", "weight")->data, *ba1 = param(&r, "a", "bias")->data;
        const float *Wf1 = param(&r, "fb", "W")->data, *wb1 = param(&r, "b", "weight")->data;
        double e = 0, m = 0, eW = 0, mW = 0;
        for (int o = 0; o < DZ; o++) {
            e = fmax(e, fabs(((double)wa[o] - wa1[o]) / LR - gw[o]));
            e = fmax(e, fabs(((double)ba[o] - ba1[o]) / LR - gb[o]));
            m = fmax(m, fmax(fabs(gw[o]), fabs(gb[o])));
        }
        for (int i = 0; i < 3 * DZ * DC; i++) {
            eW = fmax(eW, fabs(((double)Wf[i] - Wf1[i]) / LR - gW[i]));
            mW = fmax(mW, fabs(gW[i]));
        }
        print_message("layer a: |g|max %.3g, relative error %.1e; fb.W: |g|max %.3g, relative "
                      "error %.1e\n", m, e / m, mW, eW / mW);
        assert_true(m > 0 && e / m <= 1e-5);
        assert_true(mW > 0 && eW / mW <= 1e-5);
        /* the context layer got nothing: its weights did not move at all */
        assert_memory_equal(wb, wb1, sizeof(float) * DC * DZ);
    }
    free(wa);
    free(ba);
    free(wb);
    free(Wf);
    run_close(&r);
}

/* ---- 2. refusals ------------------------------------------------------------------ */

static void test_feedback_refusals(void **state)
{
    run r;
    char err[1024] = "";
    (void)state;
    /* conv a at 3200 steps/s, b at 1600: refused, naming both and the rates */
    assert_true(run_open(&r, "source ! conv1d name=a out=4 kernel=10 stride=5 pad=2 "
                             "! clapp name=fb context=b ! conv1d name=b out=3 kernel=4 stride=2 pad=1",
                         400, 0, 1e-3, err, sizeof err) < 0);
    print_message("%s\n", err);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "'fb'"));
    assert_non_null(strstr(err, "context=b runs at 1600"));
    assert_non_null(strstr(err, "layer a at 3200"));
    run_close(&r);
    err[0] = 0;
    assert_true(run_open(&r, "source ! conv1d name=a out=4 kernel=1 stride=1 pad=0 "
                             "! conv1d name=a2 out=4 kernel=1 stride=1 pad=0 "
                             "! clapp name=fb context=b target=a ! conv1d name=b out=3 kernel=1 "
                             "stride=1 pad=0", 40, 0, 1e-3, err, sizeof err) < 0);
    assert_non_null(strstr(err, "context=b and target=a"));
    run_close(&r);
}

/* ---- 3. a feedback loss from a GRU trains and resumes ---------------------------------- */

#define TRAIN_PIPE(mode) \
    "source ! conv1d name=a out=8 kernel=10 stride=5 pad=2 " \
    "! clapp name=la steps=4 negatives=5 window=48 " \
    "! clapp name=fb context=g steps=4 negatives=5 window=48 " \
    "! gru_eprop name=g hidden=8 mode=" mode " " \
    "! clapp name=lg steps=4 negatives=5 window=48 target=a"

static void all_weights(run *r, float **out, int64_t *n)
{
    int64_t total = 0, k = 0;
    for (int i = 1; i < r->g.n; i++)
        for (int32_t t = 0; t < r->g.nodes[i].n_tensors; t++)
            total += clapp_tensor_numel(r->g.nodes[i].tensors[t].value);
    *out = malloc((size_t)total * sizeof(float));
    for (int i = 1; i < r->g.n; i++)
        for (int32_t t = 0; t < r->g.nodes[i].n_tensors; t++) {
            const clapp_tensor *v = r->g.nodes[i].tensors[t].value;
            memcpy(*out + k, v->data, (size_t)clapp_tensor_numel(v) * sizeof(float));
            k += clapp_tensor_numel(v);
        }
    *n = total;
}

static void train_and_resume(const char *text, const char *label)
{
    enum { BLOCKS = 40, SPLIT = 30, T = 400 };
    run r;
    char err[1024] = "", *dir = tu_tmpdir("feedback"), *ck = tu_path(dir, "f.safetensors");
    clapp_ckpt_options opt = {1, 1};
    double first = 0, last = 0;
    float *w1, *w2;
    int64_t n1, n2;
    assert_int_equal(run_open(&r, text, T, 0, 3e-3, err, sizeof err), 0);
    for (int blk = 0; blk < BLOCKS; blk++) {
        fill(&r, blk, 1.0);
        assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
        double l = r.g.nodes[node(&r, "fb")].last.loss;
        if (blk < 10)
            first += l / 10;
        if (blk >= BLOCKS - 10)
            last += l / 10;
        if (blk + 1 == SPLIT)
            assert_int_equal(clapp_ckpt_save(&r.g, ck, &opt, err, sizeof err), 0);
    }
    print_message("%s: feedback loss %.4f over the first 10 blocks, %.4f over the last 10\n",
                  label, first, last);
    assert_true(last < first);
    all_weights(&r, &w1, &n1);
    run_close(&r);

    assert_int_equal(run_open(&r, text, T, 0, 3e-3, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_load(&r.g, ck, &opt, err, sizeof err), 0);
    for (int blk = SPLIT; blk < BLOCKS; blk++) {
        fill(&r, blk, 1.0);
        assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
    }
    all_weights(&r, &w2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(w1, w2, (size_t)n1 * sizeof(float));   /* resumed = uninterrupted */
    run_close(&r);
    free(w1);
    free(w2);
    tu_rmtree(dir);
    free(ck);
    free(dir);
}

static void test_feedback_trains_and_resumes(void **state)
{
    (void)state;
    train_and_resume(TRAIN_PIPE("eprop"), "e-prop GRU context");
    train_and_resume(TRAIN_PIPE("bptt"), "BPTT GRU context");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feedback_gradients),
        cmocka_unit_test(test_feedback_refusals),
        cmocka_unit_test(test_feedback_trains_and_resumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
