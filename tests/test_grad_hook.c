/* The learning step in two phases through the host API: a gradient hook
 * (clapp_pipeline_set_data_parallel) between the gradients of a block and
 * the optimizer step.
 * - A hook that passes the gradients through one contiguous buffer (what a
 *   reducer over one process does) leaves every byte of the checkpoint as
 *   without a hook, over several steps: tensors, Adam moments, counters and
 *   the loss elements' PRNG states.
 * - It sees every learning tensor (layers, W_k, the classifier) in order.
 * - It runs before the update: zeroed gradients leave the weights as they
 *   were.
 * - A process whose data ended keeps stepping from the hook's gradients
 *   (step returns 2) until the hook says no process had a block (0).
 * - Shards: the files are dealt round-robin; shard k > 0 draws its own
 *   negatives from the same initial weights.
 * On libclapp.so alone, as a host sees it. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/clapp.h"
#include "clapp/plugin_util.h"
#include "testutil.h"

static const char *pipe_text =
    "source name=src rate=16000 block=4000 lanes=2 mode=window window_align=160 shuffle=true\n"
    "! conv1d name=conv1 out=8 kernel=10 stride=5 pad=2\n"
    "! clapp name=loss1 mode=clapp-s steps=3 negatives=2 window=0\n"
    "! conv1d name=conv2 out=8 kernel=4 stride=2 pad=1\n"
    "! supervised name=cls classes=3 labels=class\n";

/* conv1 8x1x10 + 8, loss1 W 3x8x8, conv2 8x8x4 + 8, cls 3x8 + 3 */
#define EXPECTED_FLOATS (88 + 192 + 264 + 27)

typedef struct hook_ctx {
    int     calls, idle_calls;
    int     mode;           /* 0: through a buffer; 1: zero the gradients; 2: fake other ranks */
    int     fake_steps;     /* mode 2: idle calls that get a gradient from "elsewhere" */
    int64_t floats;
    int     names_ok;
    float  *buf;
} hook_ctx;

static int hook(void *user, clapp_grad *g, int32_t n, int64_t *count)
{
    hook_ctx *h = user;
    int64_t at = 0;
    const char *want[] = {"conv1.weight", "conv1.bias", "loss1.W", "conv2.weight", "conv2.bias",
                          "cls.weight", "cls.bias"};
    h->calls++;
    h->idle_calls += *count == 0;
    h->floats = 0;
    h->names_ok = n == 7;
    for (int32_t i = 0; i < n; i++) {
        h->floats += g[i].numel;
        if (i < 7 && strcmp(g[i].name, want[i]))
            h->names_ok = 0;
    }
    if (!h->buf && !(h->buf = malloc((size_t)h->floats * sizeof *h->buf)))
        return CLAPP_E_NOMEM;
    for (int32_t i = 0; i < n; i++) {
        switch (h->mode) {
        case 0:   /* pack, then unpack: a reducer over one process */
            memcpy(h->buf + at, g[i].grad, (size_t)g[i].numel * sizeof(float));
            memset(g[i].grad, 0xFF, (size_t)g[i].numel * sizeof(float));
            memcpy(g[i].grad, h->buf + at, (size_t)g[i].numel * sizeof(float));
            break;
        case 1:
            memset(g[i].grad, 0, (size_t)g[i].numel * sizeof(float));
            break;
        case 2:
            if (*count == 0 && h->idle_calls <= h->fake_steps)
                for (int64_t k = 0; k < g[i].numel; k++)
                    g[i].grad[k] = 0.01f;
            break;
        }
        at += g[i].numel;
    }
    if (h->mode == 2 && *count == 0 && h->idle_calls <= h->fake_steps)
        *count = 1;   /* another process had a block */
    return CLAPP_OK;
}

/* Six 0.5 s noise files with class labels. */
static char *setup(void)
{
    char *dir = tu_tmpdir("grad-hook");
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && for i in 0 1 2 3 4 5; do ffmpeg -v error -f lavfi "
                            "-i anoisesrc=d=0.5:r=16000:a=0.3:seed=$i -ac 1 f$i.wav || exit 1; "
                            "printf 'f%%s.wav\\tc%%s\\n' $i $((i %% 3)) >> m.tsv; done", dir), 0);
    return dir;
}

static clapp_pipeline *open_run(const char *dir, int epochs, int shard, int shards, hook_ctx *h)
{
    clapp_pipeline *p = NULL;
    clapp_options o;
    char *m = tu_path(dir, "m.tsv");
    clapp_options_init(&o);
    o.learn = 1;
    o.seed = 7;
    o.lr = 1e-2;
    assert_int_equal(clapp_pipeline_create_from_text(&p, pipe_text, NULL, 0, &o), CLAPP_OK);
    if (h || shards > 1)
        assert_int_equal(clapp_pipeline_set_data_parallel(p, shard, shards, h ? hook : NULL, h), CLAPP_OK);
    assert_int_equal(clapp_pipeline_open_manifest(p, m, epochs), CLAPP_OK);
    free(m);
    return p;
}

/* The checkpoint's bytes (whole file). */
static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(*n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *n, f), *n);
    fclose(f);
    return buf;
}

/* The tensor bytes after the header. */
static const char *data_of(const char *buf, size_t n, size_t *len)
{
    uint64_t h = 0;
    for (int b = 0; b < 8; b++)
        h |= (uint64_t)(unsigned char)buf[b] << (8 * b);
    assert_true(8 + h <= n);
    *len = n - 8 - h;
    return buf + 8 + h;
}

static int run_all(clapp_pipeline *p)
{
    int rc, steps = 0;
    while ((rc = clapp_pipeline_step(p)) == 1)
        steps++;
    assert_int_equal(rc, 0);
    return steps;
}

static void test_identity_hook_bit_identical(void **state)
{
    (void)state;
    char *dir = setup(), *a = tu_path(dir, "a.st"), *b = tu_path(dir, "b.st");
    hook_ctx h = {0};
    clapp_pipeline *p;
    char *fa, *fb;
    size_t na, nb;

    /* 3 epochs x 6 files / 2 lanes = 9 steps, without and with the hook */
    p = open_run(dir, 3, 0, 1, NULL);
    assert_int_equal(run_all(p), 9);
    assert_int_equal(clapp_pipeline_save(p, a), CLAPP_OK);
    clapp_pipeline_destroy(p);
    p = open_run(dir, 3, 0, 1, &h);
    assert_int_equal(run_all(p), 9);
    assert_int_equal(clapp_pipeline_save(p, b), CLAPP_OK);
    clapp_pipeline_destroy(p);
    /* every step, then once more when the data ended (count 0: the end) */
    assert_int_equal(h.calls, 10);
    assert_int_equal(h.idle_calls, 1);
    assert_true(h.names_ok);
    assert_int_equal(h.floats, EXPECTED_FLOATS);
    fa = read_all(a, &na);
    fb = read_all(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);   /* tensors, moments, counters, PRNG states */
    free(fa);
    free(fb);
    free(h.buf);
    free(a);
    free(b);
    tu_rmtree(dir);
    free(dir);
}

static void test_hook_runs_before_the_update(void **state)
{
    (void)state;
    char *dir = setup(), *a = tu_path(dir, "a.st"), *b = tu_path(dir, "b.st");
    hook_ctx h = {0};
    clapp_pipeline *p;
    char *fa, *fb;
    size_t na, nb, da_n, db_n;
    const char *da, *db;

    h.mode = 1;
    p = open_run(dir, 1, 0, 1, &h);
    assert_int_equal(clapp_pipeline_save(p, a), CLAPP_OK);   /* the initial weights */
    assert_int_equal(run_all(p), 3);
    assert_int_equal(clapp_pipeline_save(p, b), CLAPP_OK);
    clapp_pipeline_destroy(p);
    fa = read_all(a, &na);
    fb = read_all(b, &nb);
    da = data_of(fa, na, &da_n);
    db = data_of(fb, nb, &db_n);
    /* Adam from zero gradients: no change, moments still zero */
    assert_int_equal(da_n, db_n);
    assert_memory_equal(da, db, da_n);
    free(fa);
    free(fb);
    free(h.buf);
    free(a);
    free(b);
    tu_rmtree(dir);
    free(dir);
}

static void test_idle_steps_and_shards(void **state)
{
    (void)state;
    char *dir = setup(), *a = tu_path(dir, "a.st"), *b = tu_path(dir, "b.st");
    hook_ctx h = {0};
    clapp_pipeline *p;
    clapp_run_info ri;
    char *fa, *fb;
    size_t na, nb, da_n, db_n;
    const char *da, *db;

    /* shard 1 of 2: positions 1, 3, 5 of the shuffled order, 2 blocks of 2 lanes */
    h.mode = 2;
    h.fake_steps = 2;
    p = open_run(dir, 1, 1, 2, &h);
    assert_int_equal(clapp_pipeline_step(p), 1);
    assert_int_equal(clapp_pipeline_step(p), 1);
    assert_int_equal(clapp_pipeline_save(p, a), CLAPP_OK);
    /* its data has ended; two more steps come from "elsewhere", then the end */
    assert_int_equal(clapp_pipeline_step(p), 2);
    assert_int_equal(clapp_pipeline_step(p), 2);
    assert_int_equal(clapp_pipeline_step(p), 0);
    assert_int_equal(clapp_pipeline_step(p), 0);
    assert_int_equal(clapp_pipeline_run_info(p, &ri), CLAPP_OK);
    assert_int_equal(ri.blocks, 4);        /* every optimizer step counts */
    assert_int_equal(ri.files_done, 3);    /* its own share */
    assert_int_equal(clapp_pipeline_save(p, b), CLAPP_OK);
    clapp_pipeline_destroy(p);
    fa = read_all(a, &na);
    fb = read_all(b, &nb);
    da = data_of(fa, na, &da_n);
    db = data_of(fb, nb, &db_n);
    assert_int_equal(da_n, db_n);
    assert_true(memcmp(da, db, da_n) != 0);   /* the idle steps applied the others' gradients */
    assert_non_null(memmem(fb, nb, "\"shards\":\"2\"", 12));
    free(fa);
    free(fb);
    free(h.buf);
    free(a);
    free(b);
    tu_rmtree(dir);
    free(dir);
}

/* Shards 0 and 1 of 2 on the same pushed block: the same initial weights
 * (the layers' output), their own negatives (the contrastive loss). */
static void test_shards_draw_their_own(void **state)
{
    (void)state;
    clapp_loss_info li[2];
    float out0[64];
    float *x = malloc(8000 * sizeof *x);
    uint64_t s = 3;
    assert_non_null(x);
    for (int i = 0; i < 8000; i++)
        x[i] = (float)((double)(clapp_splitmix64(&s) >> 11) * 0x1.0p-53 - 0.5);
    for (int k = 0; k < 2; k++) {
        clapp_pipeline *p = NULL;
        clapp_options o;
        const clapp_block *blk;
        clapp_options_init(&o);
        o.learn = 1;
        assert_int_equal(clapp_pipeline_create_from_text(&p,
            "source name=src rate=16000 block=4000 lanes=2\n"
            "! conv1d name=conv1 out=8 kernel=10 stride=5 pad=2\n"
            "! clapp name=loss1 mode=clapp-s steps=3 negatives=2 window=0\n", NULL, 0, &o), CLAPP_OK);
        assert_int_equal(clapp_pipeline_set_data_parallel(p, k, 2, NULL, NULL), CLAPP_OK);
        assert_int_equal(clapp_pipeline_set_data_parallel(p, 2, 2, NULL, NULL), CLAPP_E_INVAL);
        assert_int_equal(clapp_pipeline_open_push(p, 0), CLAPP_OK);
        assert_int_equal(clapp_pipeline_set_data_parallel(p, 0, 1, NULL, NULL), CLAPP_E_STATE);
        for (int32_t b = 0; b < 2; b++) {
            assert_int_equal(clapp_pipeline_begin(p, b, "x", 16000), CLAPP_OK);
            assert_int_equal(clapp_pipeline_push(p, b, x + 4000 * b, 4000), CLAPP_OK);
            assert_int_equal(clapp_pipeline_end(p, b), CLAPP_OK);
        }
        assert_int_equal(clapp_pipeline_step(p), 1);
        assert_int_equal(clapp_pipeline_output(p, "conv1", &blk), CLAPP_OK);
        if (k == 0)
            memcpy(out0, blk->x.data, sizeof out0);
        else
            assert_memory_equal(out0, blk->x.data, sizeof out0);
        assert_int_equal(clapp_pipeline_loss(p, "loss1", &li[k]), CLAPP_OK);
        clapp_pipeline_destroy(p);
    }
    assert_true(li[0].last_pairs > 0);
    assert_true(li[0].last != li[1].last);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_hook_bit_identical),
        cmocka_unit_test(test_hook_runs_before_the_update),
        cmocka_unit_test(test_idle_steps_and_shards),
        cmocka_unit_test(test_shards_draw_their_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
