/* make_speech_corpus (tools/gen): a tiny flite corpus and a tiny corpus with
 * the default voices (flite + espeak-ng) are well formed and usable by the
 * core readers, alignments cover the audio exactly with labels of the 41-phone
 * set, the labels land on the audio (pauses quiet, vowels loud), the splits
 * hold out whole voices and sentences (train / val / test disjoint), the same
 * seed gives the same bytes with 1 or 2 workers, and bad arguments fail with
 * a message.
 *
 * Runs the built generator (build/make_speech_corpus). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sndfile.h>

#include "media/manifest.h"
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

/* Mean squared sample value of [start, end) of a 16-bit FLAC file. */
typedef struct energy_acc {
    double pau, vowel;     /* sums of squares */
    int64_t n_pau, n_vowel;
} energy_acc;

static int is_vowel(const char *name)
{
    static const char *const v[] = {"aa", "ae", "ah", "ao", "aw", "ax", "ay", "eh", "er", "ey", "ih", "iy",
                                    "ow", "oy", "uh", "uw"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (strcmp(v[i], name) == 0)
            return 1;
    return 0;
}

/* Every entry of a manifest: audio of 16 kHz, .phn in the 41-phone set,
 * contiguous from 0 to the audio's last sample, ending with a pause (flite
 * items also start with one; espeak-ng may start with the first phone). In
 * espeak-ng items no phone is empty. Returns seconds of audio; adds the
 * energy of pauses and vowels of the espeak items to *en. */
static double check_manifest(const char *path, int *phones_seen, energy_acc *en)
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
        int rate = 0, espeak = strstr(m.entries[i].path, "/wav/espeak-") != NULL;
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
        for (int32_t k = 0; k < a.n; k++)
            assert_true(espeak ? a.seg[k].end > a.seg[k].start : a.seg[k].end >= a.seg[k].start);
        assert_int_equal(a.seg[a.n - 1].end, n);
        if (!espeak)
            assert_int_equal(a.seg[0].label, CLAPP_CMU41_PAU);
        assert_int_equal(a.seg[a.n - 1].label, CLAPP_CMU41_PAU);
        for (int32_t k = 0; k < a.n; k++)
            phones_seen[a.seg[k].label] = 1;
        if (espeak && en) {
            SF_INFO info;
            SNDFILE *sf;
            short *x = malloc((size_t)n * sizeof *x);
            memset(&info, 0, sizeof info);
            assert_non_null(x);
            sf = sf_open(m.entries[i].path, SFM_READ, &info);
            assert_non_null(sf);
            assert_int_equal(sf_read_short(sf, x, n), n);
            sf_close(sf);
            for (int32_t k = 0; k < a.n; k++) {
                int pau = a.seg[k].label == CLAPP_CMU41_PAU, vowel = is_vowel(ls.names[a.seg[k].label]);
                for (int64_t t = a.seg[k].start; t < a.seg[k].end && (pau || vowel); t++) {
                    double e = (double)x[t] * x[t];
                    if (pau) {
                        en->pau += e;
                        en->n_pau++;
                    } else {
                        en->vowel += e;
                        en->n_vowel++;
                    }
                }
            }
            free(x);
        }
        seconds += (double)n / 16000.0;
        clapp_alignment_free(&a);
    }
    clapp_manifest_free(&m);
    clapp_labelset_free(&ls);
    return seconds;
}

/* items.tsv: path, split, voice, samples, stretch, pitch, text. */
typedef struct corpus_items {
    char *buf;
    char *f[2048][7];
    int n;
} corpus_items;

static void load_items(corpus_items *ci, const char *dir)
{
    char *p = tu_path(dir, "items.tsv"), *line, *save = NULL;
    ci->buf = read_all(p);
    free(p);
    assert_non_null(ci->buf);
    ci->n = 0;
    for (line = strtok_r(ci->buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *s2 = NULL, *tok = line;
        int k = 0;
        if (line[0] == '#')
            continue;
        assert_true(ci->n < 2048);
        for (; k < 7 && (ci->f[ci->n][k] = strtok_r(tok, "\t", &s2)); k++)
            tok = NULL;
        assert_int_equal(k, 7);
        ci->n++;
    }
}

/* No voice and no sentence in two splits (items of one split may share
 * neither with another). */
static void check_disjoint(const corpus_items *ci)
{
    for (int i = 0; i < ci->n; i++)
        for (int j = i + 1; j < ci->n; j++) {
            if (strcmp(ci->f[i][1], ci->f[j][1]) == 0)
                continue;
            if (strcmp(ci->f[i][2], ci->f[j][2]) == 0)
                fail_msg("voice %s in splits %s and %s", ci->f[i][2], ci->f[i][1], ci->f[j][1]);
            if (strcmp(ci->f[i][6], ci->f[j][6]) == 0)
                fail_msg("sentence \"%s\" in splits %s and %s", ci->f[i][6], ci->f[i][1], ci->f[j][1]);
        }
}

/* flite's four voices only, as before espeak-ng: slt, rms, kal16 train,
 * awb test, no validation. */
static void test_speech_corpus_flite(void **state)
{
    char *dir = tu_tmpdir("corpus"), *a = tu_path(dir, "a"), *p;
    corpus_items ci;
    int phones[41] = {0}, n_phones = 0, n_train = 0, n_test = 0;
    double train_s, test_s;
    (void)state;

    if (tu_run("test -x %s", GEN) != 0)
        fail_msg("%s is not built (cmake --build BUILD --target make_speech_corpus)", GEN);
    assert_int_equal(tu_run("%s --out %s --hours 0.01 --seed 5 -q --voices slt,rms,kal16 --test-voices awb "
                            "--val-voices none", GEN, a), 0);
    p = tu_path(a, "ssl-train.tsv");
    train_s = check_manifest(p, phones, NULL);
    free(p);
    p = tu_path(a, "probe-test.tsv");
    test_s = check_manifest(p, phones, NULL);
    free(p);
    p = tu_path(a, "probe-train.tsv");
    assert_int_equal(tu_run("cmp -s %s/ssl-train.tsv %s", a, p), 0);   /* default: all training items */
    free(p);
    assert_int_equal(tu_run("test -f %s/probe-val.tsv && ! test -s %s/probe-val.tsv", a, a), 0);   /* empty */
    for (int i = 0; i < 41; i++)
        n_phones += phones[i];
    print_message("flite corpus: %.1f s train, %.1f s test, %d of 41 phones\n", train_s, test_s, n_phones);
    /* 36 s requested: 10%% test; the last item may overshoot by one sentence */
    assert_true(train_s >= 32.4 && train_s < 32.4 + 15);
    assert_true(test_s >= 3.6 && test_s < 3.6 + 15);
    assert_true(n_phones >= 30);

    /* Held out: awb only in the test, and no test sentence in the training items. */
    load_items(&ci, a);
    for (int i = 0; i < ci.n; i++) {
        if (strcmp(ci.f[i][1], "train") == 0) {
            assert_string_not_equal(ci.f[i][2], "awb");
            n_train++;
        } else {
            assert_string_equal(ci.f[i][1], "test");
            assert_string_equal(ci.f[i][2], "awb");
            n_test++;
        }
    }
    assert_true(n_train > 3 && n_test >= 1);
    check_disjoint(&ci);
    free(ci.buf);

    tu_rmtree(dir);
    free(dir);
    free(a);
}

/* The default voices: flite and espeak-ng voices in training, validation
 * and test, whole voices held out. */
static void test_speech_corpus_espeak(void **state)
{
    char *dir = tu_tmpdir("corpus_es"), *a = tu_path(dir, "a"), *b = tu_path(dir, "b"), *c = tu_path(dir, "c");
    char *p;
    corpus_items ci;
    int phones[41] = {0}, n_phones = 0, n_split[3] = {0}, n_espeak = 0, n_flite = 0;
    double train_s, val_s, test_s;
    energy_acc en = {0};
    (void)state;

    if (tu_run("test -x %s", GEN) != 0)
        fail_msg("%s is not built (cmake --build BUILD --target make_speech_corpus)", GEN);
    assert_int_equal(tu_run("%s --out %s --hours 0.02 --seed 5 -q 2>%s/log", GEN, a, dir), 0);
    /* every espeak phoneme met is in the map: no item skipped with a warning */
    assert_int_not_equal(tu_run("grep -q warning %s/log", dir), 0);
    /* same seed, one worker instead of two: identical bytes */
    assert_int_equal(tu_run("%s --out %s --hours 0.02 --seed 5 -q --threads 1", GEN, b), 0);
    assert_int_equal(tu_run("diff -r %s %s", a, b), 0);
    assert_int_equal(tu_run("%s --out %s --hours 0.02 --seed 6 -q", GEN, c), 0);
    assert_int_not_equal(tu_run("diff -q %s/items.tsv %s/items.tsv", a, c), 0);

    p = tu_path(a, "ssl-train.tsv");
    train_s = check_manifest(p, phones, &en);
    free(p);
    p = tu_path(a, "probe-val.tsv");
    val_s = check_manifest(p, phones, &en);
    free(p);
    p = tu_path(a, "probe-test.tsv");
    test_s = check_manifest(p, phones, &en);
    free(p);
    for (int i = 0; i < 41; i++)
        n_phones += phones[i];
    assert_true(en.n_pau > 0 && en.n_vowel > 0);
    print_message("default corpus: %.1f s train, %.1f s val, %.1f s test, %d of 41 phones; espeak mean "
                  "square: pauses %.0f, vowels %.0f\n", train_s, val_s, test_s, n_phones,
                  en.pau / (double)en.n_pau, en.vowel / (double)en.n_vowel);
    /* 72 s requested: 85 / 5 / 10 %%; the last item may overshoot by one sentence */
    assert_true(train_s >= 61.2 && train_s < 61.2 + 15);
    assert_true(val_s >= 3.6 && val_s < 3.6 + 15);
    assert_true(test_s >= 7.2 && test_s < 7.2 + 15);
    assert_true(n_phones >= 35);
    /* the labels land on the audio: pauses are far quieter than vowels */
    assert_true(en.pau / (double)en.n_pau * 100 < en.vowel / (double)en.n_vowel);

    /* whole voices and sentences held out; the default split's voices */
    load_items(&ci, a);
    check_disjoint(&ci);
    for (int i = 0; i < ci.n; i++) {
        const char *split = ci.f[i][1], *voice = ci.f[i][2];
        int s = strcmp(split, "train") == 0 ? 0 : strcmp(split, "val") == 0 ? 1 : 2;
        if (s == 2)
            assert_string_equal(split, "test");
        n_split[s]++;
        if (strncmp(voice, "espeak:", 7) == 0) {
            const char *var = strchr(voice, '+');
            assert_non_null(var);
            var++;
            n_espeak++;
            if (s == 0)
                assert_true(strcmp(var, "m7") && strcmp(var, "f4") && strcmp(var, "klatt4") && strcmp(var, "m8") &&
                            strcmp(var, "f5") && strcmp(var, "klatt5"));
            else if (s == 1)
                assert_true(strcmp(var, "m7") == 0 || strcmp(var, "f4") == 0 || strcmp(var, "klatt4") == 0);
            else
                assert_true(strcmp(var, "m8") == 0 || strcmp(var, "f5") == 0 || strcmp(var, "klatt5") == 0);
        } else {
            n_flite++;
            if (s == 2)
                assert_string_equal(voice, "awb");
            else
                assert_true(s == 0 && strcmp(voice, "awb") != 0);
        }
    }
    assert_true(n_split[0] > 10 && n_split[1] >= 1 && n_split[2] >= 2);
    assert_true(n_espeak > n_flite && n_flite >= 2);
    free(ci.buf);

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
    /* espeak voices: unknown accent, unknown variant, a voice in two lists, an empty list */
    assert_int_not_equal(tu_run("%s --out %s/o --voices espeak:xx-yy -q 2>%s/e6", GEN, dir, dir), 0);
    assert_int_equal(tu_run("grep -q \"unknown espeak accent 'xx-yy'\" %s/e6", dir), 0);
    assert_int_not_equal(tu_run("%s --out %s/o --voices espeak:en-us+nosuch --hours 0.001 -q 2>%s/e7", GEN, dir,
                                dir), 0);
    assert_int_equal(tu_run("grep -q 'espeak-ng has no voice espeak:en-us+nosuch' %s/e7", dir), 0);
    assert_int_not_equal(tu_run("%s --out %s/o --val-voices espeak:en-gb+m2 -q 2>%s/e8", GEN, dir, dir), 0);
    assert_int_equal(tu_run("grep -q \"'espeak:en-gb+m2' is both a training and a validation voice\" %s/e8", dir),
                     0);
    assert_int_not_equal(tu_run("%s --out %s/o --test-voices none -q 2>%s/e9", GEN, dir, dir), 0);
    assert_int_equal(tu_run("grep -q 'test voice list is empty' %s/e9", dir), 0);
    tu_rmtree(dir);
    free(dir);
    free(txt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_speech_corpus_flite),
        cmocka_unit_test(test_speech_corpus_espeak),
        cmocka_unit_test(test_speech_corpus_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
