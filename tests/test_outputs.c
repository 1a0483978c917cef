/* Outputs never look valid when they are not, and write errors are never
 * ignored: metrics on a full disk (/dev/full) and --dump-graph to a full
 * standard output fail with one error naming the file (the final
 * checkpoint is still written); a features file that cannot be written
 * (RLIMIT_FSIZE) is removed and fails the run; a file whose decoding fails
 * mid-way leaves NAME.partial.npy, never a complete-looking NAME.npy; no
 * NAME.npy.partial is left after a run; a features writer never writes
 * outside its folder (suffix= with '/', out= with '..', a stream name that
 * is absolute or has a '..' part are refused, naming them), while
 * `clapp extract --out ../x` still works (made absolute). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clapp/clapp.h"
#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

typedef struct fixture {
    char *dir, *err, *feat, *manifest, *pipe, *train_pipe, *ckpt;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char *a = NULL, *text = NULL;
    f->dir = tu_tmpdir("outputs");
    f->err = tu_path(f->dir, "err.txt");
    f->feat = tu_path(f->dir, "feat");
    f->manifest = tu_path(f->dir, "m.tsv");
    f->pipe = tu_path(f->dir, "p.pipe");
    f->train_pipe = tu_path(f->dir, "t.pipe");
    f->ckpt = tu_path(f->dir, "c.safetensors");
    a = tu_path(f->dir, "a.flac");
    assert_int_equal(tu_run("ffmpeg -nostdin -v error -y -f lavfi -i 'sine=frequency=300:duration=20' "
                            "-ar 16000 -ac 1 '%s'", a), 0);
    assert_int_equal(tu_write_text(f->manifest, "a.flac\n"), 0);
    assert_true(asprintf(&text, "source rate=16000 block=4096 lanes=1 ! features name=feat out=%s/\n", f->feat) > 0);
    assert_int_equal(tu_write_text(f->pipe, text), 0);
    assert_int_equal(tu_write_text(f->train_pipe, "source rate=16000 block=4096 lanes=1 "
                                   "! conv1d name=c out=4 kernel=4 stride=2 ! clapp name=l steps=2 negatives=2 window=0\n"),
                     0);
    free(text);
    free(a);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tu_rmtree(f->dir);
    free(f->dir); free(f->err); free(f->feat); free(f->manifest); free(f->pipe); free(f->train_pipe);
    free(f->ckpt);
    free(f);
    return 0;
}

static void test_metrics_full_disk(void **state)
{
    fixture *f = *state;
    char *err, *blocks = NULL, e[512] = "";
    assert_int_equal(tu_run("%s train '%s' --data '%s' --metrics /dev/full --checkpoint '%s' 2> '%s'; "
                            "test $? -eq 1", CLAPP_BIN, f->train_pipe, f->manifest, f->ckpt, f->err), 0);
    err = tu_read_text(f->err);
    assert_int_equal(tu_count_substr(err, "/dev/full: cannot write the metrics"), 1);
    /* The run stopped at the first block, and its checkpoint was written. */
    assert_int_equal(clapp_checkpoint_metadata(f->ckpt, "blocks", &blocks, e, sizeof e), CLAPP_OK);
    assert_string_equal(blocks, "1");
    clapp_free(blocks);
    free(err);
    /* Metrics on a full standard output: the same. */
    assert_int_equal(tu_run("%s train '%s' --data '%s' > /dev/full 2> '%s'; test $? -eq 1", CLAPP_BIN,
                            f->train_pipe, f->manifest, f->err), 0);
    err = tu_read_text(f->err);
    assert_int_equal(tu_count_substr(err, "standard output: cannot write the metrics"), 1);
    free(err);
}

static void test_dump_graph_full_disk(void **state)
{
    fixture *f = *state;
    char *err;
    assert_int_equal(tu_run("%s run '%s' --dump-graph > /dev/full 2> '%s'; test $? -eq 1", CLAPP_BIN,
                            f->pipe, f->err), 0);
    err = tu_read_text(f->err);
    assert_int_equal(tu_count_substr(err, "standard output: cannot write the pipeline"), 1);
    free(err);
}

/* Writes beyond 200 KiB fail (EFBIG, SIGXFSZ ignored): the features file is
 * removed, the error names it, the run exits 1. */
static void test_features_write_error(void **state)
{
    fixture *f = *state;
    char *err;
    assert_int_equal(tu_run("sh -c \"trap '' XFSZ; ulimit -f 200; exec %s run '%s' --data '%s'\" 2> '%s'; "
                            "test $? -eq 1", CLAPP_BIN, f->pipe, f->manifest, f->err), 0);
    err = tu_read_text(f->err);
    assert_int_equal(tu_count_substr(err, "a.npy.partial: write failed"), 1);
    assert_int_equal(tu_run("test -z \"$(ls -A '%s')\"", f->feat), 0);
    free(err);
}

/* A file with damaged packets in the middle: a warning naming it, the
 * packets and the seconds lost, b.npy of what could be decoded, exit 0.
 * With --strict its damage fails it: b.partial.npy (a valid array of what
 * was decoded), no b.npy, exit 1; the good file is a.npy either way; no
 * temporary is left. */
static void test_failed_input_marked_partial(void **state)
{
    fixture *f = *state;
    char *a = tu_path(f->dir, "a.flac"), *b = tu_path(f->dir, "b.flac"), *err;
    char *bpart = tu_path(f->feat, "b.partial.npy"), *anpy = tu_path(f->feat, "a.npy");
    char *bnpy = tu_path(f->feat, "b.npy");
    long rows;
    assert_int_equal(tu_run("python3 -c \"import random,sys; d=bytearray(open(sys.argv[1],'rb').read()); "
                            "random.seed(1); n=len(d)//2\nfor i in range(n, n+4000): d[i]=random.randrange(256)\n"
                            "open(sys.argv[2],'wb').write(d)\" '%s' '%s'", a, b), 0);
    assert_int_equal(tu_write_text(f->manifest, "a.flac\nb.flac\n"), 0);
    assert_int_equal(tu_run("%s run '%s' --data '%s' 2> '%s'; test $? -eq 0", CLAPP_BIN, f->pipe, f->manifest,
                            f->err), 0);
    err = tu_read_text(f->err);
    if (tu_count_substr(err, "warning: source: ") != 1 || tu_count_substr(err, "b.flac: damaged: ") != 1 ||
        tu_count_substr(err, "packet(s) skipped, about ") != 1 || tu_count_substr(err, "error") != 0)
        fail_msg("stderr:\n%s", err);
    rows = tu_npy_rows_consistent(bnpy);
    assert_true(rows > 0 && rows < 320000);
    assert_int_equal(tu_run("cd '%s' && test \"$(ls | sort | tr '\\n' ' ')\" = 'a.npy b.npy ' && rm b.npy", f->feat), 0);
    free(err);

    assert_int_equal(tu_run("%s run '%s' --data '%s' --strict 2> '%s'; test $? -eq 1", CLAPP_BIN, f->pipe,
                            f->manifest, f->err), 0);
    err = tu_read_text(f->err);
    assert_int_equal(tu_count_substr(err, "error: source: "), 1);
    assert_int_equal(tu_count_substr(err, "b.flac: damaged: "), 1);
    assert_int_equal(tu_count_substr(err, "(strict: damage fails the file)"), 1);
    assert_int_equal(tu_count_substr(err, "b.partial.npy"), 1);
    assert_true(tu_npy_rows_consistent(bpart) > 0);
    assert_int_equal(tu_npy_rows_consistent(anpy), 320000);
    assert_int_equal(tu_run("cd '%s' && test \"$(ls | sort | tr '\\n' ' ')\" = 'a.npy b.partial.npy '", f->feat), 0);
    free(err);
    free(a);
    free(b);
    free(bpart);
    free(bnpy);
    free(anpy);
}

/* Outputs stay inside their folder. */
static void test_outputs_stay_inside(void **state)
{
    fixture *f = *state;
    static const char *const bad[][2] = {
        {"feat.suffix=/../../escaped", "suffix=/../../escaped: a suffix is part of a file name and may not hold '/'"},
        {"feat.suffix=x/y", "suffix=x/y: a suffix is part of a file name"},
        {"feat.out=sub/../../escaped", "out=sub/../../escaped: a '..' part is not allowed"},
        {"feat.out=../escaped", "out=../escaped: a '..' part is not allowed"},
    };
    clapp_pipeline *p = NULL;
    clapp_options opt;
    const float zeros[512] = {0};
    char *err, *text = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tu_run("cd '%s' && %s run '%s' --data '%s' --set '%s' 2> '%s'; test $? -eq 2", f->dir,
                                CLAPP_BIN, f->pipe, f->manifest, bad[i][0], f->err), 0);
        err = tu_read_text(f->err);
        if (tu_count_substr(err, bad[i][1]) != 1)
            fail_msg("--set %s: expected '%s' once; stderr:\n%s", bad[i][0], bad[i][1], err);
        free(err);
    }
    assert_int_equal(tu_run("cd '%s' && test ! -e escaped && test ! -e ../escaped && test ! -e feat", f->dir), 0);

    /* A pushed stream named "../escaped" fails its step, naming it. */
    clapp_options_init(&opt);
    opt.log_level = -1;
    assert_true(asprintf(&text, "source rate=16000 block=256 lanes=1 ! features name=feat out=%s/\n", f->feat) > 0);
    assert_int_equal(clapp_pipeline_create_from_text(&p, text, NULL, 0, &opt), CLAPP_OK);
    assert_int_equal(clapp_pipeline_open_push(p, 1), CLAPP_OK);
    assert_int_equal(clapp_pipeline_begin(p, 0, "../escaped", 16000), CLAPP_OK);
    assert_int_equal(clapp_pipeline_push(p, 0, zeros, 512), CLAPP_OK);
    assert_int_equal(clapp_pipeline_end(p, 0), CLAPP_OK);
    assert_true(clapp_pipeline_step(p) < 0);
    assert_non_null(strstr(clapp_pipeline_error(p), "feat"));
    clapp_pipeline_destroy(p);
    free(text);
    assert_int_equal(tu_run("cd '%s' && test ! -e escaped.npy && test ! -e escaped.npy.partial", f->dir), 0);

    /* extract --out with '..' on the command line: the same folder, absolute. */
    assert_int_equal(tu_run("cd '%s' && mkdir -p w && cd w && %s extract '%s' --random-init --data '%s' "
                            "--out ../x/../xo --element source0 -q 2> '%s' && test -s ../xo/a.source0.npy",
                            f->dir, CLAPP_BIN, f->pipe, f->manifest, f->err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_graph_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_features_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_input_marked_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outputs_stay_inside, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
