/* A bounded mutation fuzzer in the test suite: the pipeline parser (and
 * resolve), the checkpoint loader, manifests and .phn alignments are fed
 * mutated versions of valid inputs (bit flips, random bytes, insertions,
 * deletions, truncation, splices of two seeds) from a fixed seed, for
 * CLAPP_FUZZ_SECONDS seconds per target (default 2) or CLAPP_FUZZ_RUNS runs
 * (default 20000), whichever comes first. Every run must return OK or an
 * error with a message; under ASan + UBSan (the second suite) any memory
 * or undefined-behaviour error fails the test. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clapp/plugin_util.h"
#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "media/labels.h"
#include "media/manifest.h"
#include "storage/checkpoint.h"
#include "testutil.h"

typedef struct buf {
    unsigned char *p;
    size_t         n;
} buf;

static double fuzz_seconds(void)
{
    const char *s = getenv("CLAPP_FUZZ_SECONDS");
    return s ? atof(s) : 2.0;
}

static long fuzz_runs(void)
{
    const char *s = getenv("CLAPP_FUZZ_RUNS");
    return s ? atol(s) : 20000;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One mutation of seed a (b: another seed for splices) into out. */
static void mutate(const buf *a, const buf *b, buf *out, uint64_t *rng, size_t protect)
{
    size_t cap = a->n + b->n + 64, n = a->n;
    unsigned char *p = malloc(cap + 1);
    int k = 1 + (int)(clapp_splitmix64(rng) % 4);
    assert_non_null(p);
    memcpy(p, a->p, a->n);
    for (int m = 0; m < k; m++) {
        uint64_t r = clapp_splitmix64(rng);
        size_t at = n > protect ? protect + (size_t)(clapp_splitmix64(rng) % (n - protect)) : 0;
        switch (r % 7) {
        case 0: /* bit flip */
            if (n > 0)
                p[at] ^= (unsigned char)(1u << (r >> 8 & 7));
            break;
        case 1: /* random byte */
            if (n > 0)
                p[at] = (unsigned char)(r >> 16);
            break;
        case 2: /* an interesting byte */
            if (n > 0)
                p[at] = (unsigned char)"\0\n\t =!#\"\\.-9e"[(r >> 16) % 14];
            break;
        case 3: /* insert a few bytes */
            if (n + 8 < cap) {
                size_t c = 1 + (r >> 8) % 8;
                memmove(p + at + c, p + at, n - at);
                for (size_t i = 0; i < c; i++)
                    p[at + i] = (unsigned char)"9999999999e99-.x!"[(r >> (12 + i)) % 17];
                n += c;
            }
            break;
        case 4: /* delete a few bytes */
            if (n > at + 1) {
                size_t c = 1 + (r >> 8) % 16;
                if (c > n - at)
                    c = n - at;
                memmove(p + at, p + at + c, n - at - c);
                n -= c;
            }
            break;
        case 5: /* truncate */
            n = at;
            break;
        default: /* splice: a tail of the other seed */
            if (b->n > 0) {
                size_t from = (size_t)((r >> 8) % b->n), c = b->n - from;
                if (at + c > cap)
                    c = cap - at;
                memcpy(p + at, b->p + from, c);
                n = at + c;
            }
            break;
        }
    }
    p[n] = 0;
    out->p = p;
    out->n = n;
}

static buf read_all(const char *path)
{
    buf b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    long n;
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc((size_t)n + 1);
    assert_non_null(b.p);
    assert_int_equal(fread(b.p, 1, (size_t)n, f), (size_t)n);
    b.p[n] = 0;
    b.n = (size_t)n;
    fclose(f);
    return b;
}

static void write_all(const char *path, const buf *b)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b->p, 1, b->n, f), b->n);
    fclose(f);
}

/* Either OK or a failure that says why. */
static void check_result(int rc, const char *err, const char *what, long run)
{
    if (rc < 0 && !*err)
        fail_msg("%s, run %ld: status %d without a message", what, run, rc);
}

static void test_fuzz_pipeline(void **state)
{
    static const char *seeds[] = {"audio_clapp.pipe", "video_clapp.pipe", "audio_clapp_dfb.pipe", "raw_features.pipe"};
    buf s[4];
    clapp_registry reg;
    clapp_host host;
    tu_log log;
    uint64_t rng = 1;
    long run = 0, ok = 0;
    double t0 = now();
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(clapp_registry_init_default(&reg, &host), 0);
    for (int i = 0; i < 4; i++) {
        char *p = tu_path(CLAPP_TEST_SOURCE_DIR "/pipelines", seeds[i]);
        s[i] = read_all(p);
        free(p);
    }
    for (; run < fuzz_runs() && now() - t0 < fuzz_seconds(); run++) {
        clapp_pipeline_desc pd;
        char err[1024] = "";
        buf m;
        int rc;
        mutate(&s[run % 4], &s[(run / 4) % 4], &m, &rng, 0);
        rc = clapp_pipedesc_parse(&pd, (const char *)m.p, "<fuzz>", err, sizeof err);
        check_result(rc, err, "parse", run);
        if (rc == 0) {
            rc = clapp_pipedesc_resolve(&pd, &reg, err, sizeof err);
            check_result(rc, err, "resolve", run);
            ok += rc == 0;
            clapp_pipedesc_free(&pd);
        }
        free(m.p);
        tu_log_clear(&log);
    }
    fprintf(stderr, "pipeline: %ld runs, %ld resolved\n", run, ok);
    for (int i = 0; i < 4; i++)
        free(s[i].p);
    clapp_registry_free(&reg);
    tu_log_free(&log);
}

static void test_fuzz_checkpoint(void **state)
{
    clapp_host host;
    tu_log log;
    clapp_registry reg;
    clapp_pipeline_desc pd;
    clapp_graph g;
    clapp_graph_params gp;
    clapp_stream_info src = {3, {1, 6, 4, 0, 0, 0}, 100.0};
    clapp_ckpt_options co = {1, 1};
    char err[1024] = "", *dir = tu_tmpdir("fuzz"), *path = tu_path(dir, "c.safetensors"),
         *mut = tu_path(dir, "m.safetensors");
    uint64_t rng = 2;
    long run = 0, ok = 0;
    double t0;
    buf seed;
    (void)state;
    tu_host_init(&host, &log);
    clapp_registry_init_default(&reg, &host);
    clapp_registry_load_dir(&reg, CLAPP_TEST_FIXTURE_DIR);
    assert_int_equal(clapp_pipedesc_parse(&pd, "source ! fixture_scale name=s init=2 ! fixture_scale name=t",
                                          "<fuzz>", err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_resolve(&pd, &reg, err, sizeof err), 0);
    clapp_graph_default_params(&gp);
    assert_int_equal(clapp_graph_create(&g, &pd, &src, &gp, &host, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_save(&g, path, &co, err, sizeof err), 0);
    seed = read_all(path);
    t0 = now();
    for (; run < fuzz_runs() && now() - t0 < fuzz_seconds(); run++) {
        buf m;
        int rc;
        /* Mostly after the length prefix, sometimes anywhere. */
        mutate(&seed, &seed, &m, &rng, run % 4 == 0 ? 0 : 8);
        write_all(mut, &m);
        err[0] = 0;
        rc = clapp_ckpt_load(&g, mut, &co, err, sizeof err);
        check_result(rc, err, "checkpoint", run);
        ok += rc == 0;
        free(m.p);
        tu_log_clear(&log);
    }
    fprintf(stderr, "checkpoint: %ld runs, %ld loaded\n", run, ok);
    /* The loader refused everything that would break it: the graph still saves and reloads. */
    assert_int_equal(clapp_ckpt_save(&g, path, &co, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_load(&g, path, &co, err, sizeof err), 0);
    free(seed.p);
    clapp_graph_destroy(&g);
    clapp_pipedesc_free(&pd);
    clapp_registry_free(&reg);
    tu_log_free(&log);
    tu_rmtree(dir);
    free(path);
    free(mut);
    free(dir);
}

static void test_fuzz_text_inputs(void **state)
{
    static const char manifest[] = "a.wav\n# comment\nsub/b.flac\tspeech\tb.phn\n\"q.wav\"\t-\t-\n-\n";
    static const char phn[] = "0 1600 h#\n1600 3200 ae\n3200 3300 t\n# c\n3300 8000 h#\n";
    buf ms = {(unsigned char *)strdup(manifest), sizeof manifest - 1};
    buf ps = {(unsigned char *)strdup(phn), sizeof phn - 1};
    char err[1024], *dir = tu_tmpdir("fuzz"), *mp = tu_path(dir, "m.tsv"), *pp = tu_path(dir, "a.phn");
    uint64_t rng = 3;
    long run = 0;
    double t0 = now();
    (void)state;
    for (; run < fuzz_runs() && now() - t0 < fuzz_seconds(); run++) {
        buf m;
        int rc;
        err[0] = 0;
        if (run % 2 == 0) {
            clapp_manifest man;
            mutate(&ms, &ps, &m, &rng, 0);
            write_all(mp, &m);
            rc = clapp_manifest_load(&man, mp, err, sizeof err);
            check_result(rc, err, "manifest", run);
            if (rc == 0)
                clapp_manifest_free(&man);
        } else {
            clapp_alignment a;
            clapp_labelset ls = {0};
            mutate(&ps, &ms, &m, &rng, 0);
            write_all(pp, &m);
            if (run % 4 == 1)
                assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
            rc = clapp_alignment_load(&a, pp, &ls, err, sizeof err);
            check_result(rc, err, "alignment", run);
            if (rc == 0)
                clapp_alignment_free(&a);
            clapp_labelset_free(&ls);
        }
        free(m.p);
    }
    fprintf(stderr, "text inputs: %ld runs\n", run);
    free(ms.p);
    free(ps.p);
    tu_rmtree(dir);
    free(mp);
    free(pp);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_pipeline),
        cmocka_unit_test(test_fuzz_checkpoint),
        cmocka_unit_test(test_fuzz_text_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
