/* mpirun -np 2 clapp train|extract (tools/cli/dist.c): data parallelism.
 *
 * - 2 ranks x L lanes reach the weights of 1 process x 2L lanes (a loss
 *   without random draws: the supervised classifier, so that both runs see
 *   the same arithmetic up to the order of the sums);
 * - uneven shards: a rank whose data ended contributes zeros and is not
 *   counted, so 2 ranks x 1 lane still equal 1 x 2 lanes whose last block
 *   has one lane; the run ends on both ranks;
 * - a rank that cannot open a file names it and goes on, as one process
 *   does; no rank hangs, the run exits 1, the ranks' weights are identical;
 * - --resume with the same number of ranks equals the uninterrupted run byte
 *   for byte; another number is refused;
 * - clapp extract on 2 ranks writes the files one process writes, byte for
 *   byte with one file per block (lanes=1), within rounding when files share
 *   blocks (the GEMM's last bits depend on the steps of all lanes, in one
 *   process too); commands that do not run on several ranks refuse.
 * Every mpirun is bounded by `timeout`, so a hang fails instead of blocking.
 * Skipped (exit 77) when clapp is built without MPI. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"
#ifndef CLAPP_TEST_MPIEXEC
#define CLAPP_TEST_MPIEXEC "mpirun"
#endif

/* "timeout 120 mpirun --oversubscribe [--allow-run-as-root] -np" */
static char mpirun[512];

/* Noise files f0..f{n-1} (1 s each) with class labels c0..c2 in m.tsv, and
 * the supervised pipeline sup.pipe (window mode, shuffled). */
static char *setup(const char *tag, int n)
{
    char *dir = tu_tmpdir(tag), *p;
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && for i in $(seq 0 %d); do ffmpeg -v error -f lavfi "
                            "-i anoisesrc=d=1.0:r=16000:a=0.3:seed=$i -ac 1 f$i.wav || exit 1; "
                            "printf 'f%%s.wav\\tc%%s\\n' $i $((i %% 3)) >> m.tsv; done", dir, n - 1), 0);
    p = tu_path(dir, "sup.pipe");
    assert_int_equal(tu_write_text(p,
        "source name=src rate=16000 block=4000 lanes=2 mode=window window_align=160 shuffle=true\n"
        "! conv1d name=conv1 out=16 kernel=10 stride=5 pad=2\n"
        "! conv1d name=conv2 out=16 kernel=4 stride=2 pad=1\n"
        "! supervised name=cls classes=3 labels=class\n"), 0);
    free(p);
    return dir;
}

/* The text of file NAME in DIR. */
static char *read_in(const char *dir, const char *name)
{
    char *path = tu_path(dir, name), *text = tu_read_text(path);
    free(path);
    return text;
}

/* A safetensors file: the header (JSON) and the data. */
typedef struct st_file {
    char  *raw;
    size_t n;
    cJSON *hdr;
    const char *data;
} st_file;

static void st_open(st_file *f, const char *path)
{
    uint64_t h = 0;
    char *text;
    memset(f, 0, sizeof *f);
    f->raw = tu_read_text(path);
    assert_non_null(f->raw);
    {
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        fseek(fp, 0, SEEK_END);
        f->n = (size_t)ftell(fp);
        fclose(fp);
    }
    assert_true(f->n > 8);
    for (int b = 0; b < 8; b++)
        h |= (uint64_t)(unsigned char)f->raw[b] << (8 * b);
    assert_true(8 + h <= f->n);
    text = strndup(f->raw + 8, (size_t)h);
    f->hdr = cJSON_Parse(text);
    free(text);
    assert_non_null(f->hdr);
    f->data = f->raw + 8 + h;
}

static void st_close(st_file *f)
{
    cJSON_Delete(f->hdr);
    free(f->raw);
}

static const char *st_meta(const st_file *f, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(f->hdr, "__metadata__");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* max over the weight tensors (not the optimizer's) of max|a - b| / max|a|. */
static double max_rel_diff(const char *pa, const char *pb)
{
    st_file a, b;
    const cJSON *e;
    double worst = 0;
    int seen = 0;
    st_open(&a, pa);
    st_open(&b, pb);
    cJSON_ArrayForEach(e, a.hdr) {
        const cJSON *eb = cJSON_GetObjectItemCaseSensitive(b.hdr, e->string), *oa, *ob;
        double num = 0, den = 0;
        if (!strcmp(e->string, "__metadata__") || !strncmp(e->string, "__optim__", 9))
            continue;
        assert_non_null(eb);
        oa = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        ob = cJSON_GetObjectItemCaseSensitive(eb, "data_offsets");
        {
            size_t a0 = (size_t)cJSON_GetArrayItem(oa, 0)->valuedouble, a1 = (size_t)cJSON_GetArrayItem(oa, 1)->valuedouble;
            size_t b0 = (size_t)cJSON_GetArrayItem(ob, 0)->valuedouble;
            const float *x = (const float *)(const void *)(a.data + a0), *y = (const float *)(const void *)(b.data + b0);
            for (size_t i = 0; i < (a1 - a0) / sizeof(float); i++) {
                float xi, yi;
                memcpy(&xi, x + i, sizeof xi);   /* the data need not be aligned in the buffer */
                memcpy(&yi, y + i, sizeof yi);
                num = fmax(num, fabs((double)xi - yi));
                den = fmax(den, fabs((double)xi));
            }
        }
        worst = fmax(worst, den > 0 ? num / den : num);
        seen++;
    }
    assert_true(seen >= 6);   /* conv1, conv2 and the classifier: weight and bias each */
    st_close(&a);
    st_close(&b);
    return worst;
}

/* 2 ranks x 2 lanes against 1 process x 4 lanes: 8 files, 2 epochs, 4 steps. */
static void test_two_ranks_equal_double_lanes(void **state)
{
    (void)state;
    char *dir = setup("mpi-even", 8), *one, *two, *half;
    double d, dh;
    const char *args = "train sup.pipe --data m.tsv --epochs 2 --seed 3 --lr 1e-2 --adam-eps 1e-2 -q";

    assert_int_equal(tu_run("cd %s && %s %s --checkpoint one.st --set src.lanes=4 >/dev/null", dir, CLAPP_BIN,
                            args), 0);
    assert_int_equal(tu_run("cd %s && %s 2 %s %s --checkpoint two.st --metrics two.jsonl", dir, mpirun, CLAPP_BIN,
                            args), 0);
    /* the same data with 2 lanes in one process: half the batch, other weights */
    assert_int_equal(tu_run("cd %s && %s %s --checkpoint half.st >/dev/null", dir, CLAPP_BIN, args), 0);
    one = tu_path(dir, "one.st");
    two = tu_path(dir, "two.st");
    half = tu_path(dir, "half.st");
    d = max_rel_diff(one, two);
    dh = max_rel_diff(one, half);
    print_message("2 ranks x 2 lanes vs 1 x 4 lanes: max relative difference %.3g (1 x 2 lanes: %.3g)\n", d, dh);
    assert_true(d < 1e-5);
    assert_true(dh > 1e-3);   /* the comparison can fail */
    {
        st_file f;
        char *metrics;
        st_open(&f, two);
        assert_string_equal(st_meta(&f, "shards"), "2");
        assert_string_equal(st_meta(&f, "blocks"), "4");
        st_close(&f);
        /* rank 0's metrics: one line per step, the lanes of both ranks, the summary */
        metrics = read_in(dir, "two.jsonl");
        assert_non_null(strstr(metrics, "\"block\":4,"));
        assert_null(strstr(metrics, "\"block\":5,"));
        assert_non_null(strstr(metrics, "\"lanes_active\":4,"));
        assert_non_null(strstr(metrics, "\"ranks\":2,\"allreduce_seconds\""));
        free(metrics);
    }
    free(one);
    free(two);
    free(half);
    tu_rmtree(dir);
    free(dir);
}

/* 5 files, one epoch: rank 0 has 3 blocks, rank 1 has 2; the third step is
 * rank 0's alone (count 1), as the single process's last block of one lane. */
static void test_uneven_shards(void **state)
{
    (void)state;
    char *dir = setup("mpi-uneven", 5), *one, *two, *metrics;
    double d;
    const char *args = "train sup.pipe --data m.tsv --seed 3 --lr 1e-2 --adam-eps 1e-2 -q";

    assert_int_equal(tu_run("cd %s && %s %s --checkpoint one.st >/dev/null", dir, CLAPP_BIN, args), 0);
    assert_int_equal(tu_run("cd %s && %s 2 %s %s --checkpoint two.st --set src.lanes=1 --metrics two.jsonl", dir,
                            mpirun, CLAPP_BIN, args), 0);
    one = tu_path(dir, "one.st");
    two = tu_path(dir, "two.st");
    d = max_rel_diff(one, two);
    print_message("uneven shards, 2 ranks x 1 lane vs 1 x 2 lanes: max relative difference %.3g\n", d);
    assert_true(d < 1e-5);
    metrics = read_in(dir, "two.jsonl");
    assert_non_null(strstr(metrics, "\"block\":3,"));
    assert_null(strstr(metrics, "\"block\":4,"));
    assert_non_null(strstr(metrics, "\"ranks_active\":1,"));
    free(metrics);
    free(one);
    free(two);
    tu_rmtree(dir);
    free(dir);
}

/* A file missing on rank 1 (position 3 of the order): it is named, the
 * others go on, the run ends on every rank with status 1 and the weights
 * of both ranks agree. A contrastive pipeline, so the ranks draw their own
 * negatives. */
static void test_failed_file_does_not_hang(void **state)
{
    (void)state;
    char *dir = setup("mpi-fail", 6), *p, *log;
    p = tu_path(dir, "c.pipe");
    assert_int_equal(tu_write_text(p,
        "source name=src rate=16000 block=4000 lanes=2 mode=window window_align=160\n"
        "! conv1d name=conv1 out=16 kernel=10 stride=5 pad=2\n"
        "! clapp name=loss1 mode=clapp-s steps=4 negatives=3 window=0\n"
        "! conv1d name=conv2 out=16 kernel=4 stride=2 pad=1\n"
        "! clapp name=loss2 mode=clapp steps=4 window=0\n"), 0);
    free(p);
    assert_int_equal(tu_run("cd %s && sed -i '4s/.*/missing.wav/' m.tsv", dir), 0);
    assert_int_equal(tu_run("cd %s && %s 2 %s train c.pipe --data m.tsv --epochs 2 --checkpoint c.st -v "
                            "--metrics c.jsonl 2> err.txt; test $? = 1", dir, mpirun, CLAPP_BIN), 0);
    log = read_in(dir, "err.txt");
    assert_non_null(strstr(log, "clapp[rank 1]: error:"));
    assert_non_null(strstr(log, "missing.wav"));
    assert_non_null(strstr(log, "the 2 ranks hold identical weights"));
    assert_non_null(strstr(log, "1 of 11 file(s) could not be read"));
    assert_null(strstr(log, "clapp[rank 1]: warning"));   /* rank 0 alone logs below errors */
    free(log);
    assert_int_equal(tu_run("test -s %s/c.st", dir), 0);
    tu_rmtree(dir);
    free(dir);
}

/* One epoch, then --resume to two on 2 ranks: the uninterrupted run's file
 * byte for byte (no random draws here); one process cannot resume it. */
static void test_resume_same_ranks(void **state)
{
    (void)state;
    char *dir = setup("mpi-resume", 8), *a, *b, *fa, *fb, *log;
    size_t na, nb;
    const char *args = "train sup.pipe --data m.tsv --seed 5 -q";

    assert_int_equal(tu_run("cd %s && %s 2 %s %s --epochs 2 --checkpoint a.st >/dev/null", dir, mpirun, CLAPP_BIN,
                            args), 0);
    assert_int_equal(tu_run("cd %s && %s 2 %s %s --epochs 1 --checkpoint b.st >/dev/null && cp b.st k.st", dir,
                            mpirun, CLAPP_BIN, args), 0);
    assert_int_equal(tu_run("cd %s && %s 2 %s %s --epochs 2 --checkpoint b.st --resume >/dev/null", dir, mpirun,
                            CLAPP_BIN, args), 0);
    a = tu_path(dir, "a.st");
    b = tu_path(dir, "b.st");
    fa = tu_read_text(a);
    fb = tu_read_text(b);
    {
        st_file x, y;
        st_open(&x, a);
        st_open(&y, b);
        na = x.n;
        nb = y.n;
        st_close(&x);
        st_close(&y);
    }
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    assert_int_equal(tu_run("cd %s && %s %s --epochs 2 --checkpoint k.st --resume 2> err.txt; test $? = 2", dir,
                            CLAPP_BIN, args), 0);
    log = read_in(dir, "err.txt");
    assert_non_null(strstr(log, "trained by 2 processes"));
    free(log);
    free(fa);
    free(fb);
    free(a);
    free(b);
    tu_rmtree(dir);
    free(dir);
}

/* Extraction: stream mode, whole files of different lengths, a GRU that
 * carries state across blocks; every .npy and sidecar equal to one
 * process's. */
static void test_extract_identical(void **state)
{
    (void)state;
    char *dir = setup("mpi-extract", 1), *p, *log;
    p = tu_path(dir, "x.pipe");
    assert_int_equal(tu_write_text(p,
        "source name=src rate=16000 block=3000 lanes=2\n"
        "! conv1d name=conv1 out=8 kernel=10 stride=5 pad=2\n"
        "! clapp name=loss1 mode=clapp-s steps=3 negatives=2 window=0\n"
        "! gru_eprop name=gru hidden=8\n"), 0);
    free(p);
    assert_int_equal(tu_run("cd %s && rm -f m.tsv f0.wav && for i in 0 1 2 3 4; do ffmpeg -v error -f lavfi "
                            "-i anoisesrc=d=0.$((3 + 2 * i))7:r=16000:a=0.3:seed=$i -ac 1 g$i.wav || exit 1; "
                            "echo g$i.wav >> m.tsv; done", dir), 0);
    assert_int_equal(tu_run("cd %s && %s train x.pipe --data m.tsv --checkpoint x.st -q >/dev/null", dir,
                            CLAPP_BIN), 0);
    /* One file per block (lanes=1): the same blocks in both runs, the same bytes. */
    assert_int_equal(tu_run("cd %s && %s extract x.pipe --checkpoint x.st --data m.tsv --out one --set src.lanes=1 "
                            "-q", dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && %s 2 %s extract x.pipe --checkpoint x.st --data m.tsv --out two "
                            "--set src.lanes=1 2> err.txt", dir, mpirun, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && test $(ls one | wc -l) = 20 && diff -r one two", dir), 0);
    log = read_in(dir, "err.txt");
    assert_non_null(strstr(log, "from 5 file(s)"));   /* rank 0 counts every rank's files */
    free(log);
    /* Files sharing blocks (lanes=2): one GEMM over the valid steps of all
     * lanes, whose last bits depend on how many there are, in one process
     * as on several ranks; the same files and sidecars, values within
     * rounding. */
    assert_int_equal(tu_run("cd %s && %s extract x.pipe --checkpoint x.st --data m.tsv --out one2 -q && "
                            "%s 2 %s extract x.pipe --checkpoint x.st --data m.tsv --out two2 -q && "
                            "diff -r -x '*.npy' one2 two2 && /usr/bin/python3 -c \"import glob, numpy as np\n"
                            "fs = sorted(glob.glob('one2/*.npy')); assert len(fs) == 10\n"
                            "for f in fs:\n"
                            "    a, b = np.load(f), np.load('two2/' + f[5:])\n"
                            "    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6 * max(1, np.abs(a).max()), f\"",
                            dir, CLAPP_BIN, mpirun, CLAPP_BIN), 0);
    /* a command that would only run twice over refuses */
    assert_int_equal(tu_run("cd %s && %s 2 %s run x.pipe --data m.tsv 2> err.txt; test $? = 2", dir, mpirun,
                            CLAPP_BIN), 0);
    log = read_in(dir, "err.txt");
    assert_non_null(strstr(log, "run runs in one process"));
    free(log);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_ranks_equal_double_lanes),
        cmocka_unit_test(test_uneven_shards),
        cmocka_unit_test(test_failed_file_does_not_hang),
        cmocka_unit_test(test_resume_same_ranks),
        cmocka_unit_test(test_extract_identical),
    };
#ifndef CLAPP_TEST_MPI
    printf("test_mpi: skipped: clapp is built without MPI (CLAPP_MPI=OFF, or no MPI found: Debian "
           "libopenmpi-dev openmpi-bin)\n");
    (void)tests;
    return 77;
#else
    /* Open MPI refuses root unless told; --oversubscribe: 2 ranks on any machine.
     * Under the sanitizers the ranks keep ASan and UBSan but not the leak
     * check: Open MPI keeps allocations until exit in components it unloads
     * before LeakSanitizer runs, so they cannot be suppressed by name;
     * clapp's own code is leak-checked by the single-process tests. */
    snprintf(mpirun, sizeof mpirun, "%stimeout 120 %s --oversubscribe%s -np",
#ifdef CLAPP_SANITIZED
             "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 ",
#else
             "",
#endif
             CLAPP_TEST_MPIEXEC, geteuid() == 0 ? " --allow-run-as-root" : "");
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
