/* tools/make-real-speech-corpus and align_phones (tools/gen): a small corpus
 * of Asterisk prompts (20 English prompts, 20 French) has loadable
 * manifests, alignments of the 41-phone set that run from 0 to the end of
 * the audio without gaps, a prompt split that is disjoint and complete, and
 * ssl-real.tsv holds both languages; the aligner agrees with flite's exact
 * phone boundaries on a few synthetic sentences.
 *
 * Needs the asterisk-core-sounds packages and pocketsphinx-en-us (tools/setup
 * installs them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "media/decode.h"
#include "media/manifest.h"
#include "testutil.h"

#define ALIGNER CLAPP_TEST_BINARY_DIR "/align_phones"
#define GEN CLAPP_TEST_BINARY_DIR "/make_speech_corpus"
#define TOOL CLAPP_TEST_SOURCE_DIR "/tools/make-real-speech-corpus"
#define EN_DIR "/usr/share/asterisk/sounds/en_US_f_Allison"
#define FR_DIR "/usr/share/asterisk/sounds/fr_CA_f_June"
#define N_PROMPTS 20
#define MIN_FRAME_AGREEMENT 0.75   /* measured 0.87 (ax folded into ah) */
#define MAX_MEDIAN_MS 15.0         /* measured 7.9 ms */

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

static void require_packages(void)
{
    static const char *const need[][2] = {
        {EN_DIR, "asterisk-core-sounds-en-g722"},
        {FR_DIR, "asterisk-core-sounds-fr-g722"},
        {"/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "asterisk-core-sounds-en"},
        {"/usr/share/pocketsphinx/model/en-us/en-us/mdef", "pocketsphinx-en-us"},
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (access(need[i][0], R_OK) != 0)
            fail_msg("%s is missing: install %s (tools/setup installs it)", need[i][0], need[i][1]);
    if (access(ALIGNER, X_OK) != 0)
        fail_msg("%s is not built (cmake --build BUILD --target align_phones)", ALIGNER);
}

/* Samples of 16 kHz audio in a file, as the project's decoder reads it. */
static int64_t audio_samples(const char *path)
{
    clapp_decode_params p = {0};
    clapp_decoder *dec = NULL;
    char err[512];
    float buf[4096];
    int64_t n = 0, got;
    p.kind = CLAPP_MEDIA_AUDIO;
    p.rate = 16000;
    if (clapp_decoder_open(&dec, path, &p, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(clapp_decoder_input_rate(dec), 16000);
    while ((got = clapp_decoder_read(dec, buf, 4096, err, sizeof err)) > 0)
        n += got;
    clapp_decoder_close(dec);
    assert_true(got == 0);
    return n;
}

/* The lines of a text file (no comments), as one '\n'-joined string with a
 * leading and a trailing '\n', so that "\nNAME\n" finds a line. */
static char *lines_of(const char *dir, const char *name, int *count)
{
    char *path = tu_path(dir, name), *text = read_all(path), *out;
    size_t n = 0;
    if (!text)
        fail_msg("%s was not written", path);
    out = malloc(strlen(text) + 3);
    assert_non_null(out);
    out[n++] = '\n';
    *count = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        strcpy(out + n, line);
        n += strlen(line);
        out[n++] = '\n';
        (*count)++;
    }
    out[n] = 0;
    free(text);
    free(path);
    return out;
}

static int has_line(const char *lines, const char *name)
{
    size_t n = strlen(name);
    char *key = malloc(n + 3);
    int found;
    assert_non_null(key);
    key[0] = '\n';
    memcpy(key + 1, name, n);
    memcpy(key + 1 + n, "\n", 2);
    found = strstr(lines, key) != NULL;
    free(key);
    return found;
}

/* Checks one probe manifest; returns its entry count. */
static int check_probe(const char *dir, const char *split, const char *split_lines)
{
    char name[64], err[512];
    char *path;
    clapp_manifest m;
    clapp_labelset ls;
    int n;
    snprintf(name, sizeof name, "probe-%s.tsv", split);
    path = tu_path(dir, name);
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    if (clapp_manifest_load(&m, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    for (int32_t i = 0; i < m.n; i++) {
        const clapp_manifest_entry *e = &m.entries[i];
        char prompt[512];
        size_t plen = strlen(EN_DIR "/");
        clapp_alignment a;
        int64_t samples;
        /* The prompt name: the path below the speaker folder, no extension. */
        assert_int_equal(strncmp(e->path, EN_DIR "/", plen), 0);
        snprintf(prompt, sizeof prompt, "%s", e->path + plen);
        assert_non_null(strstr(prompt, ".g722"));
        *strstr(prompt, ".g722") = 0;
        if (!has_line(split_lines, prompt))
            fail_msg("%s: %s is not in split-%s.txt", path, prompt, split);
        assert_non_null(e->alignment);
        if (clapp_alignment_load(&a, e->alignment, &ls, err, sizeof err) != 0)
            fail_msg("%s", err);   /* also: every label is one of the 41 */
        assert_true(a.n >= 2);
        assert_int_equal(a.seg[0].start, 0);
        for (int32_t k = 0; k < a.n; k++) {
            assert_true(a.seg[k].end > a.seg[k].start);
            if (k > 0)
                assert_int_equal(a.seg[k].start, a.seg[k - 1].end);
            assert_true(a.seg[k].label >= 0 && a.seg[k].label < 41);
        }
        samples = audio_samples(e->path);
        if (llabs(a.seg[a.n - 1].end - samples) > 320)   /* 20 ms */
            fail_msg("%s ends at %lld, the audio at %lld samples", e->alignment,
                     (long long)a.seg[a.n - 1].end, (long long)samples);
        clapp_alignment_free(&a);
    }
    n = m.n;
    clapp_manifest_free(&m);
    clapp_labelset_free(&ls);
    free(path);
    return n;
}

static void test_small_corpus(void **state)
{
    char *tmp, *train, *val, *test, *rejected, *ssl;
    int n_train, n_val, n_test, n_rej, n_ssl, n_aligned = 0, n_no_text = 0, n_en = 0, n_fr = 0;
    (void)state;
    require_packages();
    tmp = tu_tmpdir("real_speech");
    if (tu_run("CLAPP_ALIGNER=%s %s --out %s/c --max-prompts %d --langs en,fr --seed 7", ALIGNER,
               TOOL, tmp, N_PROMPTS) != 0)
        fail_msg("make-real-speech-corpus failed (see the log above)");
    {
        char *dir = tu_path(tmp, "c");
        train = lines_of(dir, "split-train.txt", &n_train);
        val = lines_of(dir, "split-val.txt", &n_val);
        test = lines_of(dir, "split-test.txt", &n_test);
        rejected = lines_of(dir, "rejected.tsv", &n_rej);
        ssl = lines_of(dir, "ssl-real.tsv", &n_ssl);

        /* Disjoint and complete: every prompt in exactly one split, or
         * rejected for want of a transcript. */
        for (char *p = rejected; (p = strstr(p, "\tno transcript")); p++)
            n_no_text++;
        assert_int_equal(n_train + n_val + n_test + n_no_text, N_PROMPTS);
        assert_true(n_train >= 10 && n_val >= 3 && n_test >= 3);
        for (const char *p = train + 1; *p; p = strchr(p, '\n') + 1) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(strchr(p, '\n') - p), p);
            assert_false(has_line(val, name));
            assert_false(has_line(test, name));
        }
        for (const char *p = val + 1; *p; p = strchr(p, '\n') + 1) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(strchr(p, '\n') - p), p);
            assert_false(has_line(test, name));
        }

        n_aligned += check_probe(dir, "train", train);
        n_aligned += check_probe(dir, "val", val);
        n_aligned += check_probe(dir, "test", test);
        /* Every split prompt is aligned or rejected with a reason. */
        assert_int_equal(n_aligned + n_rej - n_no_text, n_train + n_val + n_test);
        assert_true(n_aligned >= N_PROMPTS * 3 / 4);

        /* ssl-real.tsv: loadable, English training prompts and French. */
        {
            clapp_manifest m;
            char err[512], *path = tu_path(dir, "ssl-real.tsv");
            if (clapp_manifest_load(&m, path, err, sizeof err) != 0)
                fail_msg("%s", err);
            for (int32_t i = 0; i < m.n; i++) {
                n_en += strncmp(m.entries[i].path, EN_DIR "/", strlen(EN_DIR "/")) == 0;
                n_fr += strncmp(m.entries[i].path, FR_DIR "/", strlen(FR_DIR "/")) == 0;
                assert_int_equal(access(m.entries[i].path, R_OK), 0);
            }
            assert_int_equal(n_en, n_train);
            assert_true(n_fr > 0 && n_fr <= N_PROMPTS);
            assert_int_equal(n_en + n_fr, m.n);
            clapp_manifest_free(&m);
            free(path);
        }
        free(dir);
    }
    free(train);
    free(val);
    free(test);
    free(rejected);
    free(ssl);
    tu_rmtree(tmp);
    free(tmp);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(tu_run("CLAPP_ALIGNER=%s %s --max-prompts 2 2>/dev/null", ALIGNER, TOOL), 2);
    assert_int_equal(tu_run("CLAPP_ALIGNER=%s %s --out /tmp/x --langs en,xx 2>/dev/null",
                            ALIGNER, TOOL), 2);
    assert_int_equal(tu_run("%s --list /nonexistent/jobs.tsv 2>/dev/null", ALIGNER), 2);
}

/* flite speech has exact phone boundaries: the aligner must find most. */
static void test_aligner_on_flite(void **state)
{
    char *tmp, *out, *json;
    double agree = 0, median = 1e9;
    (void)state;
    require_packages();
    if (access(GEN, X_OK) != 0)
        fail_msg("%s is not built", GEN);
    tmp = tu_tmpdir("real_speech_flite");
    if (tu_run("%s --out %s/flite --hours 0.01 --seed 5 --voices slt,rms,kal16 --test-voices awb "
               "--val-voices none -q", GEN, tmp) != 0)
        fail_msg("make_speech_corpus failed");
    if (tu_run("%s --evaluate %s/flite > %s/eval.txt 2>/dev/null", ALIGNER, tmp, tmp) != 0)
        fail_msg("align_phones --evaluate failed");
    out = tu_path(tmp, "eval.txt");
    json = read_all(out);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"frame_agreement_ax_ah\": "));
    agree = atof(strstr(json, "\"frame_agreement_ax_ah\": ") + strlen("\"frame_agreement_ax_ah\": "));
    median = atof(strstr(json, "\"median_ms\": ") + strlen("\"median_ms\": "));
    print_message("flite: frame agreement %.3f, median boundary error %.1f ms\n", agree, median);
    assert_true(agree >= MIN_FRAME_AGREEMENT);
    assert_true(median <= MAX_MEDIAN_MS);
    free(json);
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_corpus),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_aligner_on_flite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
