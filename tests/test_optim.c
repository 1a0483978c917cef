/* The optimizer's remedies against early collapse, each checked against a
 * double-precision reference on known gradients: learning-rate warmup (step
 * k uses lr*k/N), per-element gradient-norm clipping, Adam's eps and betas,
 * decoupled weight decay, and the norms recorded for the diagnostics. Then
 * the settings in the checkpoint metadata: written, and checked on resume. */
#define _GNU_SOURCE
#include <cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "graph/graph.h"
#include "learning/optim.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"
#define MAXN 16

#define assert_near(a, b, tol)                                                                \
    do {                                                                                      \
        const double a_ = (a), b_ = (b);                                                      \
        if (!(fabs(a_ - b_) <= (tol)))                                                        \
            fail_msg("%s = %.12g, want %.12g (tolerance %g)", #a, a_, b_, (double)(tol));     \
    } while (0)

/* Up to four tensors with their gradients, under given element names. */
typedef struct bench {
    clapp_tensor       w[4], g[4];
    clapp_named_tensor nt[4];
    clapp_optim        o;
    int                n;
} bench;

static void bench_open(bench *b, const clapp_optim_params *p, int n, const int64_t *sizes,
                       const char *const *elements)
{
    memset(b, 0, sizeof *b);
    assert_int_equal(clapp_optim_init(&b->o, p), 0);
    b->n = n;
    for (int k = 0; k < n; k++) {
        b->w[k].ndim = b->g[k].ndim = 1;
        b->w[k].shape[0] = b->g[k].shape[0] = sizes[k];
        assert_int_equal(clapp_tensor_alloc(&b->w[k]), 0);
        assert_int_equal(clapp_tensor_alloc(&b->g[k]), 0);
        for (int64_t i = 0; i < sizes[k]; i++)
            b->w[k].data[i] = (float)(0.5 - 0.13 * (double)i + 0.07 * k);
        b->nt[k] = (clapp_named_tensor){.name = "p", .value = &b->w[k], .grad = &b->g[k]};
        assert_int_equal(clapp_optim_add(&b->o, elements[k], &b->nt[k], -1), 0);
    }
}

static void bench_close(bench *b)
{
    clapp_optim_free(&b->o);
    for (int k = 0; k < b->n; k++) {
        clapp_tensor_free(&b->w[k]);
        clapp_tensor_free(&b->g[k]);
    }
}

/* A deterministic gradient for step s. */
static double grad_at(int k, int64_t i, int s, double scale)
{
    return scale * (sin(1.7 * (double)i + 0.9 * s + k) + 0.3 * cos(0.4 * s * (double)(i + 1)));
}

static void set_grads(bench *b, int s, double scale)
{
    for (int k = 0; k < b->n; k++)
        for (int64_t i = 0; i < b->g[k].shape[0]; i++)
            b->g[k].data[i] = (float)grad_at(k, i, s, scale);
}

/* SGD, warmup 4: the step k moves the weights by lr*k/4 * g, then by lr * g. */
static void test_warmup_ramps_lr(void **state)
{
    clapp_optim_params p;
    const int64_t sizes[1] = {7};
    const char *el[1] = {"a"};
    bench b;
    (void)state;
    clapp_optim_default_params(&p);
    p.type = CLAPP_OPTIM_SGD;
    p.lr = 0.1;
    p.warmup = 4;
    bench_open(&b, &p, 1, sizes, el);
    for (int s = 1; s <= 6; s++) {
        float before[MAXN];
        const double want_lr = 0.1 * (s < 4 ? s / 4.0 : 1.0);
        memcpy(before, b.w[0].data, sizeof(float) * 7);
        set_grads(&b, s, 1.0);
        assert_near(clapp_optim_lr_scale(&p, s), s < 4 ? s / 4.0 : 1.0, 1e-15);
        clapp_optim_step(&b.o);
        for (int64_t i = 0; i < 7; i++) {
            double d = (double)before[i] - b.w[0].data[i];
            double want = want_lr * (double)(float)grad_at(0, i, s, 1.0);
            if (fabs(d - want) > 1e-6 * fabs(want) + 1e-7)
                fail_msg("step %d [%lld]: moved by %.9g, want lr*k/N*g = %.9g", s, (long long)i, d, want);
        }
    }
    bench_close(&b);
    assert_near(clapp_optim_lr_scale(&p, 0), 0.0, 0.0);
}

/* One Adam step (v = g^2, m = g after bias correction): the update is
 * lr*k/N * g/(|g| + eps); the warmup reaches Adam too. */
static void test_warmup_adam_first_step(void **state)
{
    clapp_optim_params p;
    const int64_t sizes[1] = {5};
    const char *el[1] = {"a"};
    bench b;
    float before[MAXN];
    (void)state;
    clapp_optim_default_params(&p);
    p.lr = 0.01;
    p.warmup = 10;
    bench_open(&b, &p, 1, sizes, el);
    memcpy(before, b.w[0].data, sizeof(float) * 5);
    set_grads(&b, 1, 1.0);
    clapp_optim_step(&b.o);
    for (int64_t i = 0; i < 5; i++) {
        double g = (float)grad_at(0, i, 1, 1.0);
        double want = 0.01 * 0.1 * g / (fabs(g) + 1e-8);
        /* within the rounding of the stored weight and of the float (1 - beta2) */
        assert_near((double)before[i] - b.w[0].data[i], want,
                    1e-5 * fabs(want) + FLT_EPSILON * fabs(before[i]));
    }
    bench_close(&b);
}

static double group_norm(const bench *b, int from, int to, const float (*before)[MAXN])
{
    double acc = 0;
    for (int k = from; k < to; k++)
        for (int64_t i = 0; i < b->w[k].shape[0]; i++) {
            double d = (double)before[k][i] - b->w[k].data[i];
            acc += d * d;
        }
    return sqrt(acc);
}

/* SGD at lr 1 moves the weights by the (clipped) gradient. Element a (two
 * tensors, large gradient) is scaled to a joint norm of exactly NORM, in
 * the gradient's direction; element b (small gradient) is left alone. */
static void test_clip_per_element(void **state)
{
    clapp_optim_params p;
    const int64_t sizes[3] = {9, 4, 6};
    const char *el[3] = {"a", "a", "b"};
    float before[3][MAXN];
    double gnorm_a = 0;
    bench b;
    (void)state;
    clapp_optim_default_params(&p);
    p.type = CLAPP_OPTIM_SGD;
    p.lr = 1.0;
    p.clip = 0.5;
    bench_open(&b, &p, 3, sizes, el);
    assert_int_equal(b.o.slots[0].group, b.o.slots[1].group);
    assert_true(b.o.slots[2].group != b.o.slots[1].group);
    set_grads(&b, 1, 1.0);
    for (int k = 2; k < 3; k++)   /* b: norm well below 0.5 */
        for (int64_t i = 0; i < sizes[k]; i++)
            b.g[k].data[i] *= 0.05f;
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < sizes[k]; i++)
            gnorm_a += (double)b.g[k].data[i] * b.g[k].data[i];
    gnorm_a = sqrt(gnorm_a);
    assert_true(gnorm_a > 1.0);
    float gsave[3][MAXN];
    for (int k = 0; k < 3; k++) {
        memcpy(before[k], b.w[k].data, sizeof(float) * (size_t)sizes[k]);
        memcpy(gsave[k], b.g[k].data, sizeof(float) * (size_t)sizes[k]);
    }
    b.o.record = 1;
    clapp_optim_step(&b.o);
    /* a: joint update norm == clip, direction of the gradient */
    assert_near(group_norm(&b, 0, 2, before), 0.5, 0.5 * 2e-6);
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < sizes[k]; i++)
            assert_near((double)before[k][i] - b.w[k].data[i],
                                gsave[k][i] * 0.5 / gnorm_a, 1e-6);
    /* recorded: the gradient norm before clipping */
    assert_near(hypot(b.o.slots[0].grad_norm, b.o.slots[1].grad_norm), gnorm_a, 1e-9 * gnorm_a);
    /* b: untouched gradient, bit for bit */
    for (int64_t i = 0; i < sizes[2]; i++)
        assert_true(before[2][i] - gsave[2][i] == b.w[2].data[i]);
    bench_close(&b);

    /* clip = 0: off */
    p.clip = 0;
    bench_open(&b, &p, 3, sizes, el);
    set_grads(&b, 1, 1.0);
    memcpy(before[0], b.w[0].data, sizeof(float) * (size_t)sizes[0]);
    memcpy(gsave[0], b.g[0].data, sizeof(float) * (size_t)sizes[0]);
    clapp_optim_step(&b.o);
    for (int64_t i = 0; i < sizes[0]; i++)
        assert_true(before[0][i] - gsave[0][i] == b.w[0].data[i]);
    bench_close(&b);
}

/* Adam in double, as torch.optim.Adam / AdamW. */
static void adam_reference(double *w, double *m, double *v, const double *g, int64_t n, int t,
                           double lr, double b1, double b2, double eps, double wd, int decoupled)
{
    const double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i] + (decoupled ? 0 : wd * w[i]);
        if (decoupled)
            w[i] -= lr * wd * w[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        w[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}

/* Runs 3 Adam steps with p and returns the largest difference to the double
 * reference with (b1, b2, eps, wd, decoupled), relative to the largest
 * displacement of a weight. (The float path differs from the double one by
 * about 1e-5 of the update for beta2 = 0.999: 1 - beta2 is computed in float.) */
static double adam_vs_reference(const clapp_optim_params *p, double b1, double b2, double eps,
                                double wd, int decoupled)
{
    const int64_t n = 11, sizes[1] = {11};
    const char *el[1] = {"a"};
    double w[MAXN], w0[MAXN], m[MAXN] = {0}, v[MAXN] = {0}, g[MAXN], worst = 0, moved = 0;
    bench b;
    bench_open(&b, p, 1, sizes, el);
    for (int64_t i = 0; i < n; i++)
        w0[i] = w[i] = b.w[0].data[i];
    for (int s = 1; s <= 3; s++) {
        set_grads(&b, s, 1e-3);   /* the size of eps: it matters */
        for (int64_t i = 0; i < n; i++)
            g[i] = b.g[0].data[i];
        clapp_optim_step(&b.o);
        adam_reference(w, m, v, g, n, s, p->lr, b1, b2, eps, wd, decoupled);
    }
    for (int64_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(w[i] - b.w[0].data[i]));
        moved = fmax(moved, fabs(w[i] - w0[i]));
    }
    worst /= moved;
    print_message("b1 %g b2 %g eps %g wd %g%s: largest relative difference %.3g\n", b1, b2, eps, wd,
                  decoupled ? " (decoupled)" : "", worst);
    bench_close(&b);
    return worst;
}

/* eps and betas reach the update: one run with non-default ones agrees with
 * the reference using them, and differs from the reference using defaults. */
static void test_adam_eps_betas(void **state)
{
    clapp_optim_params p;
    (void)state;
    clapp_optim_default_params(&p);
    p.lr = 0.05;
    p.beta1 = 0.7;
    p.beta2 = 0.9;
    p.eps = 2e-3;
    assert_true(adam_vs_reference(&p, 0.7, 0.9, 2e-3, 0, 0) < 5e-5);
    assert_true(adam_vs_reference(&p, 0.9, 0.9, 2e-3, 0, 0) > 1e-3);
    assert_true(adam_vs_reference(&p, 0.7, 0.999, 2e-3, 0, 0) > 1e-3);
    assert_true(adam_vs_reference(&p, 0.7, 0.9, 1e-8, 0, 0) > 1e-3);
    /* the defaults are PyTorch's */
    clapp_optim_default_params(&p);
    p.lr = 0.05;
    assert_true(adam_vs_reference(&p, 0.9, 0.999, 1e-8, 0, 0) < 5e-5);
}

/* Decoupled weight decay (AdamW) against L2 in the gradient (Adam). */
static void test_weight_decay(void **state)
{
    clapp_optim_params p;
    (void)state;
    clapp_optim_default_params(&p);
    p.lr = 0.05;
    p.weight_decay = 0.3;
    p.decoupled_wd = 1;
    assert_true(adam_vs_reference(&p, 0.9, 0.999, 1e-8, 0.3, 1) < 5e-5);
    assert_true(adam_vs_reference(&p, 0.9, 0.999, 1e-8, 0.3, 0) > 1e-3);
    p.decoupled_wd = 0;
    assert_true(adam_vs_reference(&p, 0.9, 0.999, 1e-8, 0.3, 0) < 5e-5);
}

/* record: gradient, update and value norms of the step; off afterwards. */
static void test_recorded_norms(void **state)
{
    clapp_optim_params p;
    const int64_t sizes[2] = {8, 3};
    const char *el[2] = {"a", "b"};
    float before[2][MAXN];
    bench b;
    (void)state;
    clapp_optim_default_params(&p);
    bench_open(&b, &p, 2, sizes, el);
    set_grads(&b, 1, 0.1);
    double g2[2] = {0};
    for (int k = 0; k < 2; k++) {
        memcpy(before[k], b.w[k].data, sizeof(float) * (size_t)sizes[k]);
        for (int64_t i = 0; i < sizes[k]; i++)
            g2[k] += (double)b.g[k].data[i] * b.g[k].data[i];
    }
    b.o.record = 1;
    clapp_optim_step(&b.o);
    assert_int_equal(b.o.record, 0);
    for (int k = 0; k < 2; k++) {
        double u2 = 0, w2 = 0;
        for (int64_t i = 0; i < sizes[k]; i++) {
            double d = (double)before[k][i] - b.w[k].data[i];
            u2 += d * d;
            w2 += (double)b.w[k].data[i] * b.w[k].data[i];
        }
        assert_near(b.o.slots[k].grad_norm, sqrt(g2[k]), 1e-12);
        assert_near(b.o.slots[k].update_norm, sqrt(u2), 1e-6 * sqrt(u2));
        assert_near(b.o.slots[k].value_norm, sqrt(w2), 1e-9 * sqrt(w2));
    }
    bench_close(&b);
}

static void test_check_params(void **state)
{
    clapp_optim_params p;
    char err[256];
    clapp_optim o;
    (void)state;
    clapp_optim_default_params(&p);
    assert_int_equal(clapp_optim_check_params(&p, err, sizeof err), 0);
    p.beta1 = 1.0;
    assert_int_equal(clapp_optim_check_params(&p, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "beta1"));
    assert_int_equal(clapp_optim_init(&o, &p), CLAPP_E_INVAL);
    clapp_optim_default_params(&p);
    p.eps = 0;
    assert_int_equal(clapp_optim_check_params(&p, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "eps"));
    clapp_optim_default_params(&p);
    p.clip = -1;
    assert_int_equal(clapp_optim_check_params(&p, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "clip"));
    clapp_optim_default_params(&p);
    p.warmup = -2;
    assert_int_equal(clapp_optim_check_params(&p, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "warmup"));
}

/* A small graph with the given optimizer settings. */
typedef struct gfix {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
} gfix;

static void gfix_open(gfix *f, const clapp_optim_params *op)
{
    char err[1024] = "";
    clapp_stream_info src = {3, {2, 1, 400, 0, 0, 0}, 16000.0};
    clapp_graph_params gp;
    memset(f, 0, sizeof *f);
    tu_host_init(&f->host, &f->log);
    assert_int_equal(clapp_registry_init_default(&f->reg, &f->host), 0);
    if (clapp_pipedesc_parse(&f->pd, "source ! conv1d name=c out=4 kernel=10 stride=5 "
                             "! clapp name=l steps=2 negatives=2 window=0", "<test>", err, sizeof err) < 0 ||
        clapp_pipedesc_resolve(&f->pd, &f->reg, err, sizeof err) < 0)
        fail_msg("%s", err);
    clapp_graph_default_params(&gp);
    gp.optim = *op;
    if (clapp_graph_create(&f->g, &f->pd, &src, &gp, &f->host, err, sizeof err) < 0)
        fail_msg("%s", err);
}

static void gfix_close(gfix *f)
{
    clapp_graph_destroy(&f->g);
    clapp_pipedesc_free(&f->pd);
    clapp_registry_free(&f->reg);
    tu_log_free(&f->log);
}

/* The checkpoint records the optimizer settings; resuming (with the
 * optimizer state) under other settings is refused naming the option;
 * loading weights only (eval, extract) does not care. */
static void test_checkpoint_optim_settings(void **state)
{
    clapp_optim_params p, q;
    clapp_ckpt_options resume = {1, 1}, weights = {0, 1};
    char err[1024] = "", *dir = tu_tmpdir("optim_ckpt"), *path = tu_path(dir, "c.st"), *text;
    cJSON *j;
    gfix f;
    (void)state;
    clapp_optim_default_params(&p);
    p.lr = 3e-4;
    p.eps = 1e-6;
    p.beta1 = 0.8;
    p.beta2 = 0.99;
    p.warmup = 100;
    p.clip = 2.5;
    p.weight_decay = 0.01;
    p.decoupled_wd = 1;
    gfix_open(&f, &p);
    assert_int_equal(clapp_ckpt_save(&f.g, path, &resume, err, sizeof err), 0);
    gfix_close(&f);

    text = clapp_ckpt_read_meta(path, "optim", err, sizeof err);
    assert_non_null(text);
    j = cJSON_Parse(text);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring, "adam");
    assert_true(cJSON_GetObjectItem(j, "lr")->valuedouble == 3e-4);
    assert_true(cJSON_GetObjectItem(j, "eps")->valuedouble == 1e-6);
    assert_true(cJSON_GetObjectItem(j, "beta1")->valuedouble == 0.8);
    assert_true(cJSON_GetObjectItem(j, "beta2")->valuedouble == 0.99);
    assert_true(cJSON_GetObjectItem(j, "warmup")->valuedouble == 100);
    assert_true(cJSON_GetObjectItem(j, "clip")->valuedouble == 2.5);
    assert_true(cJSON_GetObjectItem(j, "weight_decay")->valuedouble == 0.01);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "decoupled_wd")));
    cJSON_Delete(j);
    free(text);

    /* the same settings resume */
    gfix_open(&f, &p);
    assert_int_equal(clapp_ckpt_load(&f.g, path, &resume, err, sizeof err), 0);
    gfix_close(&f);
    /* another warmup, clip or eps: refused, naming the option */
    q = p;
    q.warmup = 0;
    gfix_open(&f, &q);
    assert_int_equal(clapp_ckpt_load(&f.g, path, &resume, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "was trained with --warmup 100, this run has 0"));
    /* weights only: fine */
    assert_int_equal(clapp_ckpt_load(&f.g, path, &weights, err, sizeof err), 0);
    gfix_close(&f);
    q = p;
    q.clip = 1;
    gfix_open(&f, &q);
    assert_int_equal(clapp_ckpt_load(&f.g, path, &resume, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "--clip 2.5, this run has 1"));
    gfix_close(&f);
    q = p;
    q.eps = 1e-8;
    gfix_open(&f, &q);
    assert_int_equal(clapp_ckpt_load(&f.g, path, &resume, err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "--adam-eps 1e-06, this run has 1e-08"));
    gfix_close(&f);

    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* The train options: ranges are checked, naming the option. */
static void test_cli_options(void **state)
{
    const char *bad[][2] = {
        {"--adam-beta1 1", "--adam-beta1 1: expected a number in \\[0, 1)"},
        {"--adam-beta2 -0.1", "--adam-beta2 -0.1: expected a number in \\[0, 1)"},
        {"--clip -1", "--clip -1: expected a number >= 0"},
        {"--weight-decay x", "--weight-decay x: expected a number"},
        {"--warmup 1.5", "--warmup 1.5: expected a number of blocks >= 0"},
        {"--diag-every -3", "--diag-every -3: expected a number of blocks >= 0"},
        {"--adam-eps 0", "--adam-eps 0: expected a number > 0"},
    };
    char *dir = tu_tmpdir("optim_cli");
    (void)state;
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        if (tu_run("cd %s && %s train x.pipe --data m.tsv %s 2> e.txt; s=$?; cat e.txt; "
                   "test $s -eq 2 && grep -q -- '%s' e.txt", dir, CLAPP_BIN, bad[k][0], bad[k][1]) != 0)
            fail_msg("%s: not refused as expected", bad[k][0]);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_warmup_ramps_lr),
        cmocka_unit_test(test_warmup_adam_first_step),
        cmocka_unit_test(test_clip_per_element),
        cmocka_unit_test(test_adam_eps_betas),
        cmocka_unit_test(test_weight_decay),
        cmocka_unit_test(test_recorded_norms),
        cmocka_unit_test(test_check_params),
        cmocka_unit_test(test_checkpoint_optim_settings),
        cmocka_unit_test(test_cli_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
