/* clapp train --resume: a run cut after K blocks and resumed equals a run
 * that was never interrupted, byte for byte (weights, optimizer moments,
 * counters and the loss elements' PRNG states all live in the checkpoint);
 * another seed is refused; killing a run while it writes checkpoints always
 * leaves a loadable one. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "storage/checkpoint.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

/* Eight 1.5 s noise files, and a two-module pipeline in window mode with
 * shuffling and both random loss forms (CLAPP lane draws, CLAPP-s negatives). */
static char *setup_data(const char *tag)
{
    char *dir = tu_tmpdir(tag), *p;
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && for i in 0 1 2 3 4 5 6 7; do ffmpeg -v error -f lavfi "
                            "-i anoisesrc=d=1.5:r=16000:a=0.3:seed=$i -ac 1 f$i.wav || exit 1; "
                            "echo f$i.wav >> m.tsv; done", dir), 0);
    p = tu_path(dir, "p.pipe");
    assert_int_equal(tu_write_text(p,
        "source rate=16000 block=4000 lanes=2 mode=window window_align=160 shuffle=true\n"
        "! conv1d name=conv1 out=16 kernel=10 stride=5 pad=2\n"
        "! clapp name=loss1 mode=clapp steps=4 window=0\n"
        "! conv1d name=conv2 out=16 kernel=8 stride=4 pad=2\n"
        "! clapp name=loss2 mode=clapp-s steps=4 negatives=3 window=0\n"), 0);
    free(p);
    return dir;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* The data section of a safetensors file (after the 8-byte length and header). */
static const char *st_data(const char *buf, size_t n, size_t *len)
{
    uint64_t h = 0;
    for (int b = 0; b < 8; b++)
        h |= (uint64_t)(unsigned char)buf[b] << (8 * b);
    assert_true(8 + h <= n);
    *len = n - 8 - h;
    return buf + 8 + h;
}

static void test_resume_equals_uninterrupted(void **state)
{
    (void)state;
    char *dir = setup_data("resume");
    char *a = tu_path(dir, "a.st"), *b = tu_path(dir, "b.st"), *k = tu_path(dir, "k.st");
    char err[512] = "";
    char *fa, *fb, *fk, *blocks, *rng;
    size_t na, nb, nk, da_n, db_n, dk_n;

    /* 3 epochs x 8 files / 2 lanes = 12 blocks in one go ... */
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 3 --seed 5 --checkpoint a.st -q "
                            ">/dev/null", dir, CLAPP_BIN), 0);
    /* ... and 4 blocks (1 epoch), checkpoint, then resumed up to 3 epochs. */
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 1 --seed 5 --checkpoint b.st -q "
                            ">/dev/null && cp b.st k.st", dir, CLAPP_BIN), 0);
    blocks = clapp_ckpt_read_meta(b, "blocks", err, sizeof err);
    assert_non_null(blocks);
    assert_string_equal(blocks, "4");
    rng = clapp_ckpt_read_meta(b, "rng", err, sizeof err);
    assert_non_null(rng);
    assert_non_null(strstr(rng, "\"loss1\""));
    assert_non_null(strstr(rng, "\"loss2\""));
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 3 --seed 5 --checkpoint b.st "
                            "--resume -q >/dev/null", dir, CLAPP_BIN), 0);

    fa = slurp(a, &na);
    fb = slurp(b, &nb);
    fk = slurp(k, &nk);
    assert_non_null(fa);
    assert_non_null(fb);
    assert_non_null(fk);
    {
        const char *da = st_data(fa, na, &da_n), *db = st_data(fb, nb, &db_n), *dk = st_data(fk, nk, &dk_n);
        assert_int_equal(da_n, db_n);
        /* every tensor byte: weights, W of both losses, Adam moments */
        assert_memory_equal(da, db, da_n);
        /* and the check can fail: the 4-block state is a different one */
        assert_int_equal(dk_n, da_n);
        assert_true(memcmp(da, dk, da_n) != 0);
    }
    /* the whole file too (counters and PRNG states in the metadata) */
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);

    free(fa);
    free(fb);
    free(fk);
    free(blocks);
    free(rng);
    free(a);
    free(b);
    free(k);
    tu_rmtree(dir);
    free(dir);
}

static void test_resume_refuses_other_seed_and_short_data(void **state)
{
    (void)state;
    char *dir = setup_data("resume_refuse");
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 2 --seed 5 --checkpoint c.st -q "
                            ">/dev/null", dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 3 --seed 6 --checkpoint c.st "
                            "--resume -q > /dev/null 2> e.txt; s=$?; cat e.txt; test $s -eq 2 && "
                            "grep -q 'c.st was trained with --seed 5; resume with the same seed' e.txt",
                            dir, CLAPP_BIN), 0);
    /* 8 blocks learned, the data of 1 epoch has 4: cannot land on block 8 */
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 1 --seed 5 --checkpoint c.st "
                            "--resume -q > /dev/null 2> e.txt; s=$?; cat e.txt; test $s -eq 2 && "
                            "grep -q 'cannot resume: the data ends before block 8' e.txt", dir, CLAPP_BIN), 0);
    tu_rmtree(dir);
    free(dir);
}

/* SIGKILL at several moments of a run that checkpoints after every block:
 * the checkpoint on disk always loads (extract reads it), never half-written. */
static void test_kill_while_checkpointing(void **state)
{
    (void)state;
    char *dir = setup_data("resume_kill");
    int loaded = 0;
    for (int round = 0; round < 6; round++) {
        int rc = tu_run("cd %s && rm -f c.st && (%s train p.pipe --data m.tsv --epochs 40 --checkpoint c.st "
                        "--checkpoint-every 1 -q > /dev/null & pid=$!; "
                        "while [ ! -e c.st ]; do sleep 0.01; done; sleep 0.%d; kill -9 $pid; wait $pid; true)",
                        dir, CLAPP_BIN, 5 + 13 * round);
        assert_int_equal(rc, 0);
        /* whatever the moment, the file is complete and loads */
        assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint c.st --data m.tsv --out x%d "
                                "--element conv1 -q && test -s x%d/f0.conv1.npy", dir, CLAPP_BIN, round,
                                round), 0);
        loaded++;
    }
    assert_int_equal(loaded, 6);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_equals_uninterrupted),
        cmocka_unit_test(test_resume_refuses_other_seed_and_short_data),
        cmocka_unit_test(test_kill_while_checkpointing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
