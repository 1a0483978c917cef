/* Feature diagnostics (core/learning/diag.h) against a direct double computation on
 * known data: participation ratio of isotropic data ~ C, of rank-1 data 1,
 * of random correlated data equal to the two-pass formula; dead channels for
 * ReLU (all zero) and other outputs (constant); only valid steps count
 * (lanes of different lengths, garbage after len); video outputs (every
 * (t, h, w) a sample); sample counts beyond one dsyrk chunk. Then the
 * "diag" object in the metrics of a short `clapp train`. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "learning/diag.h"
#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

#define assert_near(a, b, tol)                                                                \
    do {                                                                                      \
        const double a_ = (a), b_ = (b);                                                      \
        if (!(fabs(a_ - b_) <= (tol)))                                                        \
            fail_msg("%s = %.12g, want %.12g (tolerance %g)", #a, a_, b_, (double)(tol));     \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(void)
{
    return sqrt(-2.0 * log(uniform())) * cos(2.0 * M_PI * uniform());
}

/* A block [B, C, T, (H, W)] with lane lengths; steps after len hold garbage
 * (the diagnostics must ignore them). */
typedef struct blk {
    clapp_block b;
    clapp_lane  lanes[8];
} blk;

static void blk_alloc(blk *k, int32_t ndim, int64_t B, int64_t C, int64_t T, int64_t H, int64_t W,
                      const int32_t *lens)
{
    const int64_t shape[5] = {B, C, T, H, W};
    memset(k, 0, sizeof *k);
    assert_int_equal(clapp_tensor_alloc_shape(&k->b.x, ndim, shape), 0);
    k->b.lanes = (int32_t)B;
    k->b.lane = k->lanes;
    for (int64_t b = 0; b < B; b++)
        k->lanes[b].len = lens[b];
    for (int64_t i = 0; i < clapp_tensor_numel(&k->b.x); i++)
        k->b.x.data[i] = 1e3f;   /* garbage unless overwritten by a valid sample */
}

static int64_t per_step(const blk *k)
{
    int64_t p = 1;
    for (int32_t d = 3; d < k->b.x.ndim; d++)
        p *= k->b.x.shape[d];
    return p;
}

/* Pointer to sample s of lane b, channel c (s counts the lane's valid positions). */
static float *at(blk *k, int64_t b, int64_t c, int64_t s)
{
    const int64_t C = k->b.x.shape[1], row = k->b.x.shape[2] * per_step(k);
    return k->b.x.data + (b * C + c) * row + s;
}

/* Fill valid samples with x = A z (+ offset): z ~ N(0, I_r), A [C, r]. */
static void fill_mixed(blk *k, const double *A, int r, double offset)
{
    const int64_t C = k->b.x.shape[1];
    for (int64_t b = 0; b < k->b.lanes; b++)
        for (int64_t s = 0; s < (int64_t)k->lanes[b].len * per_step(k); s++) {
            double z[16];
            for (int j = 0; j < r; j++)
                z[j] = gauss();
            for (int64_t c = 0; c < C; c++) {
                double v = offset;
                for (int j = 0; j < r; j++)
                    v += A[c * r + j] * z[j];
                *at(k, b, c, s) = (float)v;
            }
        }
}

/* The reference: two passes in double, no eigendecomposition. */
static double pr_reference(blk *k)
{
    const int64_t C = k->b.x.shape[1];
    double *mean = calloc((size_t)C, sizeof *mean), *cov = calloc((size_t)(C * C), sizeof *cov);
    double tr = 0, tr2 = 0;
    int64_t n = 0;
    for (int64_t b = 0; b < k->b.lanes; b++)
        for (int64_t s = 0; s < (int64_t)k->lanes[b].len * per_step(k); s++, n++)
            for (int64_t c = 0; c < C; c++)
                mean[c] += *at(k, b, c, s);
    for (int64_t c = 0; c < C; c++)
        mean[c] /= (double)n;
    for (int64_t b = 0; b < k->b.lanes; b++)
        for (int64_t s = 0; s < (int64_t)k->lanes[b].len * per_step(k); s++)
            for (int64_t i = 0; i < C; i++)
                for (int64_t j = 0; j < C; j++)
                    cov[i * C + j] += (*at(k, b, i, s) - mean[i]) * (*at(k, b, j, s) - mean[j]);
    for (int64_t i = 0; i < C; i++) {
        tr += cov[i * C + i];
        for (int64_t j = 0; j < C; j++)
            tr2 += cov[i * C + j] * cov[i * C + j];
    }
    free(mean);
    free(cov);
    return tr2 > 0 ? tr * tr / tr2 : 0;
}

static void stats(blk *k, int relu, int64_t workspace, clapp_diag_stats *st)
{
    clapp_diag d;
    assert_int_equal(clapp_diag_init(&d, workspace), 0);
    assert_int_equal(clapp_diag_compute(&d, &k->b, relu, st), 0);
    clapp_diag_free(&d);
}

/* Isotropic Gaussian features: PR close to C (the sample covariance of n
 * samples spreads the eigenvalues a little: E[PR] ~ C / (1 + C/n)). */
static void test_pr_isotropic(void **state)
{
    const int32_t lens[3] = {3000, 2500, 2000};
    double A[12 * 12] = {0};
    clapp_diag_stats st;
    blk k;
    (void)state;
    for (int c = 0; c < 12; c++)
        A[c * 12 + c] = 2.0;
    blk_alloc(&k, 3, 3, 12, 3000, 1, 1, lens);
    fill_mixed(&k, A, 12, 0.7);
    stats(&k, 0, 12, &st);
    assert_int_equal(st.samples, 7500);
    assert_near(st.pr, 12.0, 0.2);
    assert_near(st.pr, pr_reference(&k), 1e-9 * st.pr);
    assert_near(st.dead, 0.0, 0.0);
    clapp_tensor_free(&k.b.x);
}

/* All the variance along one direction (with an offset): PR = 1. */
static void test_pr_rank_one(void **state)
{
    const int32_t lens[2] = {700, 650};
    double A[9];
    clapp_diag_stats st;
    blk k;
    (void)state;
    for (int c = 0; c < 9; c++)
        A[c] = 0.3 + 0.2 * c;
    blk_alloc(&k, 3, 2, 9, 700, 1, 1, lens);
    fill_mixed(&k, A, 1, 5.0);
    stats(&k, 0, 64, &st);
    /* float samples: the rank-1 structure holds to float precision */
    assert_near(st.pr, 1.0, 1e-5);
    clapp_tensor_free(&k.b.x);
}

/* Correlated random features against the two-pass reference; lanes of
 * different lengths (one empty), more samples than one dsyrk chunk. */
static void test_pr_random_matches_reference(void **state)
{
    const int32_t lens[4] = {1200, 0, 977, 3};
    double A[10 * 6];
    clapp_diag_stats st;
    blk k;
    (void)state;
    for (int i = 0; i < 60; i++)
        A[i] = gauss();
    blk_alloc(&k, 3, 4, 10, 1200, 1, 1, lens);
    fill_mixed(&k, A, 6, -0.4);
    stats(&k, 0, 10, &st);
    assert_int_equal(st.samples, 1200 + 977 + 3);
    assert_true(st.pr > 1.0 && st.pr < 6.0);   /* rank 6 */
    assert_near(st.pr, pr_reference(&k), 1e-9 * st.pr);
    clapp_tensor_free(&k.b.x);
}

/* Video [B, C, T, H, W]: each valid (t, h, w) is a sample of the C-vector. */
static void test_pr_video(void **state)
{
    const int32_t lens[2] = {5, 3};
    double A[7 * 4];
    clapp_diag_stats st;
    blk k;
    (void)state;
    for (int i = 0; i < 28; i++)
        A[i] = gauss();
    blk_alloc(&k, 5, 2, 7, 6, 4, 5, lens);
    fill_mixed(&k, A, 4, 0.1);
    stats(&k, 0, 7, &st);
    assert_int_equal(st.samples, (5 + 3) * 4 * 5);
    assert_near(st.pr, pr_reference(&k), 1e-9 * st.pr);
    clapp_tensor_free(&k.b.x);
}

/* ReLU: dead = zero at every valid step (garbage after len does not revive
 * a channel); other outputs: dead = constant. */
static void test_dead_channels(void **state)
{
    const int32_t lens[2] = {50, 30};
    double A[8 * 8] = {0};
    clapp_diag_stats st;
    blk k;
    (void)state;
    for (int c = 0; c < 8; c++)
        A[c * 8 + c] = 1.0;
    blk_alloc(&k, 3, 2, 8, 60, 1, 1, lens);
    fill_mixed(&k, A, 8, 0.0);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t s = 0; s < lens[b]; s++)
            for (int64_t c = 0; c < 8; c++) {
                float *x = at(&k, b, c, s);
                *x = *x > 0 ? *x : 0.0f;   /* ReLU */
                if (c < 3)
                    *x = 0.0f;             /* channels 0-2 dead */
                if (c == 3)
                    *x = 2.5f;             /* constant but alive for ReLU */
            }
    stats(&k, 1, 8, &st);
    assert_near(st.dead, 3.0 / 8.0, 1e-15);
    stats(&k, 0, 8, &st);          /* not ReLU: constant channels are dead */
    assert_near(st.dead, 4.0 / 8.0, 1e-15);
    assert_near(st.pr, pr_reference(&k), 1e-9 * st.pr);

    /* everything zero: all dead, no variance */
    for (int64_t i = 0; i < clapp_tensor_numel(&k.b.x); i++)
        k.b.x.data[i] = 0.0f;
    stats(&k, 1, 8, &st);
    assert_near(st.dead, 1.0, 0.0);
    assert_near(st.pr, 0.0, 0.0);
    clapp_tensor_free(&k.b.x);
}

static void test_edge_cases(void **state)
{
    const int32_t none[2] = {0, 0}, some[2] = {4, 4};
    clapp_diag_stats st;
    clapp_diag d;
    blk k;
    (void)state;
    blk_alloc(&k, 3, 2, 5, 4, 1, 1, none);
    stats(&k, 1, 5, &st);          /* no valid step: nothing, no error */
    assert_int_equal(st.samples, 0);
    assert_near(st.pr, 0.0, 0.0);
    clapp_tensor_free(&k.b.x);
    blk_alloc(&k, 3, 2, 5, 4, 1, 1, some);
    assert_int_equal(clapp_diag_init(&d, 4), 0);   /* narrower than the block */
    assert_int_equal(clapp_diag_compute(&d, &k.b, 0, &st), CLAPP_E_SHAPE);
    clapp_diag_free(&d);
    clapp_diag_free(&d);           /* twice is safe */
    clapp_tensor_free(&k.b.x);
}

/* clapp train --diag-every 2: blocks 1, 2, 4 carry "diag" (layers: dead,
 * pr; learning elements: grad_norm, update_norm, weight_norm), block 3 not;
 * --diag-every 0 turns it off. */
static void test_metrics_in_training(void **state)
{
    char *dir = tu_tmpdir("diag_train");
    (void)state;
    assert_int_equal(tu_run("cd %s && for i in 0 1 2 3 4 5 6 7; do ffmpeg -v error -f lavfi "
                            "-i anoisesrc=d=1:r=16000:a=0.3:seed=$i -ac 1 f$i.wav || exit 1; "
                            "echo f$i.wav >> m.tsv; done", dir), 0);
    {
        char *p = tu_path(dir, "p.pipe");
        assert_int_equal(tu_write_text(p,
            "source rate=16000 block=4000 lanes=2 mode=window window_align=160\n"
            "! conv1d name=conv1 out=16 kernel=10 stride=5 pad=2\n"
            "! clapp name=loss1 mode=clapp-s steps=4 negatives=3 window=0\n"
            "! conv1d name=conv2 out=8 kernel=8 stride=4 pad=2 activation=none\n"
            "! clapp name=loss2 mode=clapp-s steps=4 negatives=3 window=0\n"), 0);
        free(p);
    }
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --diag-every 2 --warmup 3 "
                            "--clip 1 --metrics d.jsonl -q", dir, CLAPP_BIN), 0);
    /* 8 files / 2 lanes = 4 blocks */
    {
        char *check = tu_path(dir, "check.py");
        assert_int_equal(tu_write_text(check,
                            "import json\n"
                            "lines = [json.loads(l) for l in open('d.jsonl')]\n"
                            "blocks = [l for l in lines if l['event'] == 'block']\n"
                            "assert [b['block'] for b in blocks] == [1, 2, 3, 4], blocks\n"
                            "assert ['diag' in b for b in blocks] == [True, True, False, True]\n"
                            "for b in blocks[:2] + blocks[3:]:\n"
                            "    d = b['diag']\n"
                            "    assert d['seconds'] >= 0 and 0 < d['lr_scale'] <= 1, d\n"
                            "    for layer, c in (('conv1', 16), ('conv2', 8)):\n"
                            "        assert 0 <= d[layer]['dead'] <= 1, d\n"
                            "        assert 0 < d[layer]['pr'] <= c, d\n"
                            "    for e in ('conv1', 'loss1', 'conv2', 'loss2'):\n"
                            "        for key in ('grad_norm', 'update_norm', 'weight_norm'):\n"
                            "            assert d[e][key] > 0, (e, key, d)\n"
                            "    assert 'dead' not in d['loss1']\n"
                            "assert abs(blocks[0]['diag']['lr_scale'] - 1/3) < 1e-6\n"
                            "assert blocks[3]['diag']['lr_scale'] == 1\n"), 0);
        free(check);
    }
    assert_int_equal(tu_run("cd %s && python3 check.py", dir), 0);
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --diag-every 0 --metrics o.jsonl -q && "
                            "! grep -q diag o.jsonl && test $(grep -c '\"block\"' o.jsonl) -eq 4", dir,
                            CLAPP_BIN), 0);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pr_isotropic),
        cmocka_unit_test(test_pr_rank_one),
        cmocka_unit_test(test_pr_random_matches_reference),
        cmocka_unit_test(test_pr_video),
        cmocka_unit_test(test_dead_channels),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_metrics_in_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
