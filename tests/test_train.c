/* Learning through the graph: module wiring checked by finite differences of
 * each module's own loss (GIM: gradients stop at loss elements; CPC: one
 * module end to end), determinism with a seed, and a short training run that
 * lowers every layer's loss. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "testutil.h"

typedef struct run {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
    clapp_block         blk;
    clapp_lane          lanes[4];
} run;

#define LANES 3
#define T_IN 600

static void run_open_diag(run *r, const char *text, int sgd, double lr, uint64_t seed,
                          int64_t diag_every)
{
    char err[1024] = "";
    clapp_stream_info src = {3, {LANES, 1, T_IN, 0, 0, 0}, 16000.0};
    clapp_graph_params gp;
    memset(r, 0, sizeof *r);
    tu_host_init(&r->host, &r->log);
    assert_int_equal(clapp_registry_init_default(&r->reg, &r->host), 0);
    if (clapp_pipedesc_parse(&r->pd, text, "<test>", err, sizeof err) < 0 ||
        clapp_pipedesc_resolve(&r->pd, &r->reg, err, sizeof err) < 0)
        fail_msg("%s", err);
    clapp_graph_default_params(&gp);
    gp.seed = seed;
    gp.optim.lr = lr;
    gp.diag_every = diag_every;
    if (sgd)
        gp.optim.type = CLAPP_OPTIM_SGD;
    if (clapp_graph_create(&r->g, &r->pd, &src, &gp, &r->host, err, sizeof err) < 0)
        fail_msg("%s", err);
    r->blk.x.ndim = 3;
    memcpy(r->blk.x.shape, src.shape, sizeof src.shape);
    assert_int_equal(clapp_tensor_alloc(&r->blk.x), 0);
    r->blk.lanes = LANES;
    r->blk.lane = r->lanes;
    r->blk.rate = src.rate;
}

static void run_open(run *r, const char *text, int sgd, double lr, uint64_t seed)
{
    run_open_diag(r, text, sgd, lr, seed, 0);
}

static void run_close(run *r)
{
    clapp_tensor_free(&r->blk.x);
    clapp_graph_destroy(&r->g);
    clapp_pipedesc_free(&r->pd);
    clapp_registry_free(&r->reg);
    tu_log_free(&r->log);
}

/* A speech-like signal: harmonics of a drifting pitch with formant-ish
 * amplitude changes, different per lane and block. */
static void fill(run *r, int block)
{
    for (int b = 0; b < LANES; b++) {
        float *x = r->blk.x.data + (int64_t)b * T_IN;
        double f0 = 110.0 + 37.0 * b + 11.0 * (block % 5), phase = 0.0;
        int len = T_IN - 40 * b;   /* lanes of different lengths */
        for (int t = 0; t < T_IN; t++) {
            double env = 0.6 + 0.4 * sin(2 * M_PI * t / 300.0 + b + block);
            phase += 2 * M_PI * f0 * (1.0 + 0.1 * sin(t / 150.0)) / 16000.0;
            x[t] = t < len ? (float)(env * (0.5 * sin(phase) + 0.3 * sin(2 * phase + 0.3 * b) +
                                            0.2 * sin(5 * phase))) : 0.0f;
        }
        r->lanes[b] = (clapp_lane){.seq_id = b + LANES * block, .seq_name = "x",
                                   .flags = CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END,
                                   .len = len, .pts = 0, .class_label = -1};
    }
}

static int node_of(const run *r, const char *name)
{
    int i = clapp_pipedesc_find(&r->pd, name);
    assert_true(i > 0);
    return i;
}

static clapp_tensor *param(run *r, const char *node, const char *tensor)
{
    const clapp_node *nd = &r->g.nodes[node_of(r, node)];
    for (int32_t t = 0; t < nd->n_tensors; t++)
        if (!strcmp(nd->tensors[t].name, tensor))
            return nd->tensors[t].value;
    fail_msg("no tensor %s.%s", node, tensor);
    return NULL;
}

/* Loss of one element after one block, with a weight perturbed. */
static double loss_with(const char *text, const char *node, const char *tensor, int64_t idx,
                        double delta, const char *loss_node)
{
    run r;
    char err[512];
    run_open(&r, text, 1, 0.0, 7);
    param(&r, node, tensor)->data[idx] += (float)delta;
    fill(&r, 0);
    assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
    double l = r.g.nodes[node_of(&r, loss_node)].last.loss;
    run_close(&r);
    return l;
}

/* With SGD at lr = 1, one step moves every weight by minus its gradient. */
static void check_gradient(const char *text, const char *node, const char *tensor,
                           const char *loss_node, int n_coords)
{
    run r;
    char err[512];
    run_open(&r, text, 1, 1.0, 7);
    clapp_tensor *w = param(&r, node, tensor);
    int64_t n = clapp_tensor_numel(w);
    float *before = malloc((size_t)n * sizeof(float));
    memcpy(before, w->data, (size_t)n * sizeof(float));
    fill(&r, 0);
    assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
    double gmax = 0;
    for (int64_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs((double)before[i] - w->data[i]));
    assert_true(gmax > 0);
    int checked = 0;
    for (int c = 0; c < n_coords; c++) {
        int64_t i = (int64_t)((c * 7919 + 13) % n);
        double g = (double)before[i] - w->data[i];
        double h = 3e-3 * fmax(fabs((double)before[i]), 0.05);
        double fd = (loss_with(text, node, tensor, i, h, loss_node) -
                     loss_with(text, node, tensor, i, -h, loss_node)) / (2 * h);
        if (fabs(fd - g) > 2e-2 * gmax + 1e-6)
            fail_msg("%s.%s[%lld] for %s: engine %g, finite difference %g (largest %g)", node,
                     tensor, (long long)i, loss_node, g, fd, gmax);
        checked++;
    }
    assert_int_equal(checked, n_coords);
    free(before);
    run_close(&r);
}

#define TWO_LAYERS "conv1d name=a out=6 kernel=10 stride=5 pad=2 activation=none " \
                   "! conv1d name=b out=5 kernel=4 stride=2 pad=1 activation=none "

/* GIM: each layer is its own module; a's gradient comes from its loss only. */
static void test_gim_modules_gradients(void **state)
{
    const char *text = "source ! " "conv1d name=a out=6 kernel=10 stride=5 pad=2 activation=none "
                       "! clapp name=la mode=infonce steps=3 negatives=4 window=0 "
                       "! conv1d name=b out=5 kernel=4 stride=2 pad=1 activation=none "
                       "! clapp name=lb mode=infonce steps=3 negatives=4 window=0";
    (void)state;
    check_gradient(text, "a", "weight", "la", 6);
    check_gradient(text, "a", "bias", "la", 3);
    check_gradient(text, "b", "weight", "lb", 6);
    check_gradient(text, "la", "W", "la", 4);
}

/* CPC: one module end to end: the gradient reaches a through b. */
static void test_cpc_end_to_end_gradients(void **state)
{
    const char *text = "source ! " TWO_LAYERS "! clapp name=l mode=infonce steps=3 negatives=4 window=0";
    (void)state;
    check_gradient(text, "a", "weight", "l", 6);
    check_gradient(text, "b", "weight", "l", 4);
    check_gradient(text, "b", "bias", "l", 3);
}

/* CPC with a context network: c = GRU(z), z = b's output, one module. */
static void test_cpc_with_gru_end_to_end(void **state)
{
    const char *text = "source ! " TWO_LAYERS "! gru_eprop name=g hidden=4 mode=bptt "
                       "! clapp name=l mode=infonce steps=2 negatives=3 window=0 target=b";
    (void)state;
    check_gradient(text, "g", "weight_hh", "l", 5);
    check_gradient(text, "b", "weight", "l", 5);
    check_gradient(text, "a", "weight", "l", 5);
}

static void weights_of(run *r, float **out, int64_t *n)
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

static const char *small_clapp =
    "source ! conv1d name=c1 out=16 kernel=10 stride=5 pad=2 ! clapp name=l1 steps=4 negatives=5 window=64 "
    "! conv1d name=c2 out=16 kernel=4 stride=2 pad=1 ! clapp name=l2 steps=4 negatives=5 window=64 "
    "! gru_eprop name=g hidden=8 ! clapp name=lg steps=4 negatives=5 window=64 target=c2";

static void test_same_seed_bit_identical(void **state)
{
    float *w[3];
    int64_t n[3];
    char err[512];
    (void)state;
    for (int rep = 0; rep < 3; rep++) {
        run r;
        run_open(&r, small_clapp, 0, 1e-3, rep < 2 ? 11 : 12);
        for (int blk = 0; blk < 4; blk++) {
            fill(&r, blk);
            assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
        }
        weights_of(&r, &w[rep], &n[rep]);
        run_close(&r);
    }
    assert_int_equal(n[0], n[1]);
    assert_memory_equal(w[0], w[1], (size_t)n[0] * sizeof(float));
    assert_true(memcmp(w[0], w[2], (size_t)n[0] * sizeof(float)) != 0);
    for (int i = 0; i < 3; i++)
        free(w[i]);
}

/* A short run lowers every loss element's loss (first vs last blocks). */
static void test_training_lowers_every_loss(void **state)
{
    run r;
    char err[512];
    const int blocks = 120, span = 20;
    double first[3] = {0}, last[3] = {0};
    const char *names[3] = {"l1", "l2", "lg"};
    (void)state;
    run_open(&r, small_clapp, 0, 2e-3, 3);
    for (int blk = 0; blk < blocks; blk++) {
        fill(&r, blk);
        assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
        for (int k = 0; k < 3; k++) {
            double l = r.g.nodes[node_of(&r, names[k])].last.loss;
            if (blk < span)
                first[k] += l / span;
            if (blk >= blocks - span)
                last[k] += l / span;
        }
    }
    for (int k = 0; k < 3; k++) {
        print_message("%s: mean loss %.4f over the first %d blocks, %.4f over the last %d\n",
                      names[k], first[k], span, last[k], span);
        if (!(last[k] < 0.9 * first[k]))
            fail_msg("%s did not learn: %.4f -> %.4f", names[k], first[k], last[k]);
    }
    run_close(&r);
}

/* Diagnostics on blocks 1, 3, 6 (diag_every 3): each layer's statistics are
 * those of its output block; with SGD at lr 1 each element's update is its
 * gradient, so update_norm equals grad_norm; weight_norm is the weights'. */
static void test_diagnostics(void **state)
{
    run r;
    char err[512];
    const int64_t want_block[7] = {0, 1, 1, 3, 3, 3, 6};
    (void)state;
    run_open_diag(&r, small_clapp, 1, 1.0, 5, 3);
    for (int blk = 1; blk <= 6; blk++) {
        fill(&r, blk);
        assert_int_equal(clapp_graph_process(&r.g, &r.blk, err, sizeof err), 0);
        assert_int_equal(r.g.diag_block, want_block[blk]);
        if (r.g.diag_block != blk)
            continue;
        for (int i = 1; i < r.g.n; i++) {
            const clapp_node *nd = &r.g.nodes[i];
            if (nd->kind == CLAPP_KIND_LAYER) {
                clapp_diag d;
                clapp_diag_stats st;
                assert_true(nd->diag.has_out);
                assert_int_equal(clapp_diag_init(&d, nd->out_info.shape[1]), 0);
                assert_int_equal(clapp_diag_compute(&d, &nd->out, nd->relu, &st), 0);
                clapp_diag_free(&d);
                assert_true(st.samples > 0 && st.pr > 0);
                assert_true(st.pr == nd->diag.out.pr && st.dead == nd->diag.out.dead);
            }
            assert_int_equal(nd->relu, !strcmp(nd->pe->type, "conv1d"));
            assert_true(nd->diag.has_grad);
            assert_true(nd->diag.grad_norm > 0);
            if (fabs(nd->diag.update_norm - nd->diag.grad_norm) > 1e-4 * nd->diag.grad_norm)
                fail_msg("%s: update norm %g, gradient norm %g", nd->pe->name, nd->diag.update_norm,
                         nd->diag.grad_norm);
            double w2 = 0;
            for (int32_t t = 0; t < nd->n_tensors; t++) {
                const clapp_tensor *v = nd->tensors[t].value;
                for (int64_t k = 0; k < clapp_tensor_numel(v); k++)
                    w2 += (double)v->data[k] * v->data[k];
            }
            if (fabs(sqrt(w2) - nd->diag.weight_norm) > 1e-9 * sqrt(w2))
                fail_msg("%s: weight norm %g, want %g", nd->pe->name, nd->diag.weight_norm, sqrt(w2));
        }
    }
    run_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gim_modules_gradients),
        cmocka_unit_test(test_cpc_end_to_end_gradients),
        cmocka_unit_test(test_cpc_with_gru_end_to_end),
        cmocka_unit_test(test_same_seed_bit_identical),
        cmocka_unit_test(test_training_lowers_every_loss),
        cmocka_unit_test(test_diagnostics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
