/* make_speech_corpus (tools/gen): a tiny flite corpus is well formed and
 * usable by the core readers, alignments cover the audio exactly, the split
 * holds out voices and sentences, the same seed gives the same bytes, and
 * bad arguments fail with a message.
 *
 * Runs the built generator (build/make_speech_corpus). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sndfile.h>

#include "manifest.h"
#include "testutil.h"

#define GEN CLAPP_TEST_BINARY_DIR "/make_speech_corpus"

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

static int64_t flac_frames(const char *path, int *rate)
{
    SF_INFO info;
    SNDFILE *sf;
    memset(&info, 0, sizeof info);
    sf = sf_open(path, SFM_READ, &info);
    if (!sf)
        return -1;
    sf_close(sf);
    *rate = info.samplerate;
    return info.channels == 1 ? (int64_t)info.frames : -1;
}

/* Every entry of a manifest: audio of 16 kHz, .phn in the 41-phone set,
 * contiguous from 0 to the audio's last sample. Returns seconds of audio. */
static double check_manifest(const char *path, int *phones_seen)
{
    clapp_manifest m;
    clapp_labelset ls = {0};
    char err[512];
    double seconds = 0;
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    assert_int_equal(clapp_manifest_load(&m, path, err, sizeof err), 0);
    assert_true(m.n > 0);
    for (int32_t i = 0; i < m.n; i++) {
        clapp_alignment a;
        int rate = 0;
        int64_t n = flac_frames(m.entries[i].path, &rate);
        assert_true(n > 0);
        assert_int_equal(rate, 16000);
        assert_null(m.entries[i].label);
        assert_non_null(m.entries[i].alignment);
        if (clapp_alignment_load(&a, m.entries[i].alignment, &ls, err, sizeof err) != 0)
            fail_msg("%s", err);
        assert_true(a.n >= 3);
        assert_int_equal(a.seg[0].start, 0);
        for (int32_t k = 1; k < a.n; k++)
            assert_int_equal(a.seg[k].start, a.seg[k - 1].end);
        assert_int_equal(a.seg[a.n - 1].end, n);
        assert_int_equal(a.seg[0].label, CLAPP_CMU41_PAU);   /* flite starts and ends with a pause */
        assert_int_equal(a.seg[a.n - 1].label, CLAPP_CMU41_PAU);
        for (int32_t k = 0; k < a.n; k++)
            phones_seen[a.seg[k].label] = 1;
        seconds += (double)n / 16000.0;
        clapp_alignment_free(&a);
    }
    clapp_manifest_free(&m);
    clapp_labelset_free(&ls);
    return seconds;
}

static void test_speech_corpus_generate(void **state)
{
    char *dir = tu_tmpdir("corpus"), *a = tu_path(dir, "a"), *b = tu_path(dir, "b"), *c = tu_path(dir, "c");
    char *p, *items, *line, *save = NULL;
    int phones[41] = {0}, n_phones = 0;
    double train_s, test_s;
    (void)state;

    if (tu_run("test -x %s", GEN) != 0)
        fail_msg("%s is not built (cmake --build BUILD --target make_speech_corpus)", GEN);
    assert_int_equal(tu_run("%s --out %s --hours 0.01 --seed 5 -q", GEN, a), 0);
    /* same seed, one worker instead of two: identical bytes */
    assert_int_equal(tu_run("%s --out %s --hours 0.01 --seed 5 -q --threads 1", GEN, b), 0);
    assert_int_equal(tu_run("diff -r %s %s", a, b), 0);
    assert_int_equal(tu_run("%s --out %s --hours 0.01 --seed 6 -q", GEN, c), 0);
    assert_int_not_equal(tu_run("diff -q %s/items.tsv %s/items.tsv", a, c), 0);

    p = tu_path(a, "ssl-train.tsv");
    train_s = check_manifest(p, phones);
    free(p);
    p = tu_path(a, "probe-test.tsv");
    test_s = check_manifest(p, phones);
    free(p);
    p = tu_path(a, "probe-train.tsv");
    assert_int_equal(tu_run("cmp -s %s/ssl-train.tsv %s", a, p), 0);   /* default: all training items */
    free(p);
    for (int i = 0; i < 41; i++)
        n_phones += phones[i];
    print_message("corpus: %.1f s train, %.1f s test, %d of 41 phones\n", train_s, test_s, n_phones);
    /* 36 s requested: 10%% test; the last item may overshoot by one sentence */
    assert_true(train_s >= 32.4 && train_s < 32.4 + 15);
    assert_true(test_s >= 3.6 && test_s < 3.6 + 15);
    assert_true(n_phones >= 30);

    /* Held out: awb only in the test, and no test sentence in the training items. */
    p = tu_path(a, "items.tsv");
    items = read_all(p);
    free(p);
    assert_non_null(items);
    char *train_text[256];
    int n_train = 0, n_test = 0;
    for (line = strtok_r(items, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[7], *s2 = NULL, *tok = line;
        int k = 0;
        if (line[0] == '#')
            continue;
        for (; k < 7 && (f[k] = strtok_r(tok, "\t", &s2)); k++)
            tok = NULL;
        assert_int_equal(k, 7);
        if (strcmp(f[1], "train") == 0) {
            assert_string_not_equal(f[2], "awb");
            assert_true(n_train < 256);
            train_text[n_train++] = f[6];
        } else {
            assert_string_equal(f[1], "test");
            assert_string_equal(f[2], "awb");
            for (int i = 0; i < n_train; i++)
                assert_string_not_equal(train_text[i], f[6]);
            n_test++;
        }
    }
    assert_true(n_train > 3 && n_test >= 1);
    free(items);

    tu_rmtree(dir);
    free(dir);
    free(a);
    free(b);
    free(c);
}

static void test_speech_corpus_errors(void **state)
{
    char *dir = tu_tmpdir("corpus_err"), *txt = tu_path(dir, "t.txt");
    (void)state;
    if (tu_run("test -x %s", GEN) != 0)
        fail_msg("%s is not built", GEN);
    assert_int_not_equal(tu_run("%s --out %s/o --text %s/missing.txt -q 2>%s/e1", GEN, dir, dir, dir), 0);
    assert_int_equal(tu_run("grep -q 'missing.txt: cannot open the text file' %s/e1", dir), 0);
    assert_int_not_equal(tu_run("%s --out /proc/no/such -q 2>%s/e2", GEN, dir), 0);
    assert_int_equal(tu_run("grep -q 'cannot create or write the output folder' %s/e2", dir), 0);
    assert_int_not_equal(tu_run("%s --out %s/o --voices slt --test-voices slt 2>%s/e3", GEN, dir, dir), 0);
    assert_int_equal(tu_run("grep -q 'both a training and a test voice' %s/e3", dir), 0);
    assert_int_not_equal(tu_run("%s --out %s/o --voices bob 2>%s/e4", GEN, dir, dir), 0);
    assert_int_equal(tu_run("grep -q \"unknown voice 'bob'\" %s/e4", dir), 0);
    /* --text: lines that fail the filter are skipped; one usable line is too few */
    assert_int_equal(tu_write_text(txt, "Hello there, my good friend.\nno\n\tTabbed line here ok.\n"), 0);
    assert_int_not_equal(tu_run("%s --out %s/o --text %s -q 2>%s/e5", GEN, dir, txt, dir), 0);
    assert_int_equal(tu_run("grep -q 'only 1 usable sentences' %s/e5", dir), 0);
    tu_rmtree(dir);
    free(dir);
    free(txt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_speech_corpus_generate),
        cmocka_unit_test(test_speech_corpus_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
