/* Manifests, label sets and .phn alignments. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "media/manifest.h"

typedef struct fx {
    char *dir;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->dir = tu_tmpdir("manifest");
    assert_non_null(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Write `text` to dir/name and return the malloc'd path. */
static char *write_file(const fx *f, const char *name, const char *text)
{
    char *p = tu_path(f->dir, name);
    assert_int_equal(tu_write_text(p, text), 0);
    return p;
}

static void test_manifest_parse(void **state)
{
    fx *f = *state;
    char err[512] = "";
    clapp_manifest m;
    char *p = write_file(f, "list.tsv",
                         "# a comment\n"
                         "a/b.wav\tdog\tali/b.phn\n"
                         "\n"
                         "   \n"
                         "c.flac\r\n"
                         "-\n"
                         "http://example.org/x/y.mp3?t=1\t-\t\n"
                         "/abs/elsewhere/z.wav\tcat\t-\n"
                         "pipe:0\n"
                         " d.tar.gz \t bird \n"
                         "../up/e.wav\n"
                         "a/b.mp3\n"
                         "s/...wav\n"
                         "..wav\n");
    char want[1024];
    int rc = clapp_manifest_load(&m, p, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(m.n, 11);

    snprintf(want, sizeof want, "%s/a/b.wav", f->dir);
    assert_string_equal(m.entries[0].path, want);
    assert_string_equal(m.entries[0].key, "a/b");
    assert_string_equal(m.entries[0].label, "dog");
    snprintf(want, sizeof want, "%s/ali/b.phn", f->dir);
    assert_string_equal(m.entries[0].alignment, want);
    assert_int_equal(m.entries[0].line, 2);

    snprintf(want, sizeof want, "%s/c.flac", f->dir);
    assert_string_equal(m.entries[1].path, want);      /* CR of CRLF stripped */
    assert_string_equal(m.entries[1].key, "c");
    assert_null(m.entries[1].label);
    assert_null(m.entries[1].alignment);
    assert_int_equal(m.entries[1].line, 5);

    assert_string_equal(m.entries[2].path, "-");
    assert_string_equal(m.entries[2].key, "stdin");

    assert_string_equal(m.entries[3].path, "http://example.org/x/y.mp3?t=1");
    assert_string_equal(m.entries[3].key, "example.org/x/y");
    assert_null(m.entries[3].label);       /* "-" is no label */
    assert_null(m.entries[3].alignment);   /* empty is no alignment */

    assert_string_equal(m.entries[4].path, "/abs/elsewhere/z.wav");
    assert_string_equal(m.entries[4].key, "abs/elsewhere/z");
    assert_string_equal(m.entries[4].label, "cat");
    assert_null(m.entries[4].alignment);

    assert_string_equal(m.entries[5].path, "pipe:0");
    assert_string_equal(m.entries[5].key, "pipe_0");

    snprintf(want, sizeof want, "%s/d.tar.gz", f->dir);
    assert_string_equal(m.entries[6].path, want);   /* spaces around fields trimmed */
    assert_string_equal(m.entries[6].key, "d.tar");
    assert_string_equal(m.entries[6].label, "bird");

    snprintf(want, sizeof want, "%s/../up/e.wav", f->dir);
    assert_string_equal(m.entries[7].path, want);
    assert_string_equal(m.entries[7].key, "__/up/e");  /* never escapes the output folder */

    /* a/b.mp3 has the same key as a/b.wav: the later one is made unique. */
    assert_string_equal(m.entries[8].key, "a/b-L12");
    /* Without their extensions "...wav" and "..wav" would be "..", ".":
     * folder names (tests/fuzz/fuzz_manifest.c found it). */
    assert_string_equal(m.entries[9].key, "s/__");
    assert_string_equal(m.entries[10].key, "_");
    clapp_manifest_free(&m);
    assert_null(m.entries);
    free(p);
}

static void test_manifest_absolute_inside_folder(void **state)
{
    fx *f = *state;
    char err[512] = "", text[1024];
    clapp_manifest m;
    char *real = realpath(f->dir, NULL);
    char *p;
    snprintf(text, sizeof text, "%s/sub/x.wav\n", real);
    p = write_file(f, "abs.tsv", text);
    assert_int_equal(clapp_manifest_load(&m, p, err, sizeof err), 0);
    assert_int_equal(m.n, 1);
    assert_string_equal(m.entries[0].key, "sub/x");
    clapp_manifest_free(&m);
    free(real);
    free(p);
}

/* Load a manifest that must fail; check the status and that err holds `needle`. */
static void expect_manifest_error(const fx *f, const char *text, int want_rc, const char *needle)
{
    char err[512] = "";
    clapp_manifest m;
    char *p = write_file(f, "bad.tsv", text);
    int rc = clapp_manifest_load(&m, p, err, sizeof err);
    assert_int_equal(rc, want_rc);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
    assert_non_null(strstr(err, "bad.tsv"));
    assert_int_equal(m.n, 0);
    assert_null(m.entries);
    free(p);
}

static void test_manifest_errors(void **state)
{
    fx *f = *state;
    char err[512] = "";
    clapp_manifest m;
    char *missing = tu_path(f->dir, "nope.tsv");

    expect_manifest_error(f, "a.wav\nb.wav\tl\tx.phn\textra\n", CLAPP_E_FORMAT,
                          "bad.tsv:2: too many columns (4");
    expect_manifest_error(f, "# c\n\tlabel\n", CLAPP_E_FORMAT, "bad.tsv:2: empty path");
    expect_manifest_error(f, "a.wav\n  \t x\n", CLAPP_E_FORMAT, "bad.tsv:2: empty path");
    expect_manifest_error(f, "", CLAPP_E_FORMAT, "no entries");
    expect_manifest_error(f, "# only comments\n\n", CLAPP_E_FORMAT, "no entries");
    {
        /* A binary file: NUL bytes are refused with the line. */
        char *p = tu_path(f->dir, "bad.tsv");
        FILE *fp = fopen(p, "wb");
        fwrite("ok.wav\nRIFF\0\0\0WAVE\n", 1, 19, fp);
        fclose(fp);
        assert_int_equal(clapp_manifest_load(&m, p, err, sizeof err), CLAPP_E_FORMAT);
        assert_non_null(strstr(err, "bad.tsv:2: NUL byte"));
        free(p);
    }
    assert_int_equal(clapp_manifest_load(&m, missing, err, sizeof err), CLAPP_E_IO);
    assert_non_null(strstr(err, "nope.tsv: cannot open manifest"));
    /* A folder is not a manifest. */
    assert_int_equal(clapp_manifest_load(&m, f->dir, err, sizeof err), CLAPP_E_IO);
    assert_non_null(strstr(err, f->dir));
    clapp_manifest_free(&m);   /* safe after a failure */
    free(missing);
}

static void test_labelset_cmu41(void **state)
{
    static const char *const cmu39[] = {
        "aa", "ae", "ah", "ao", "aw", "ay", "b",  "ch", "d",  "dh", "eh", "er", "ey",
        "f",  "g",  "hh", "ih", "iy", "jh", "k",  "l",  "m",  "n",  "ng", "ow", "oy",
        "p",  "r",  "s",  "sh", "t",  "th", "uh", "uw", "v",  "w",  "y",  "z",  "zh",
    };
    clapp_labelset ls;
    (void)state;
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    assert_int_equal(ls.n, 41);
    assert_true(ls.frozen);
    /* Ids 0..39 are sorted, all distinct, and cover the 39 phones and ax. */
    for (int i = 1; i < 40; i++)
        assert_true(strcmp(ls.names[i - 1], ls.names[i]) < 0);
    for (size_t i = 0; i < 39; i++) {
        int id = clapp_labelset_find(&ls, cmu39[i]);
        assert_true(id >= 0 && id < 40);
    }
    assert_int_equal(clapp_labelset_find(&ls, "aa"), 0);
    assert_int_equal(clapp_labelset_find(&ls, "ax"), 5);
    assert_int_equal(clapp_labelset_find(&ls, "ay"), 6);
    assert_int_equal(clapp_labelset_find(&ls, "zh"), 39);
    assert_int_equal(clapp_labelset_find(&ls, "pau"), CLAPP_CMU41_PAU);
    assert_int_equal(clapp_labelset_find(&ls, "sil"), 40);
    assert_int_equal(clapp_labelset_find(&ls, "h#"), 40);
    assert_int_equal(clapp_labelset_find(&ls, "_"), 40);
    assert_int_equal(clapp_labelset_find(&ls, "AA"), -1);
    assert_int_equal(clapp_labelset_find(&ls, "xx"), -1);
    /* Frozen: known names give their id, unknown ones are refused. */
    assert_int_equal(clapp_labelset_add(&ls, "t"), 31);
    assert_int_equal(clapp_labelset_add(&ls, "h#"), 40);
    assert_int_equal(clapp_labelset_add(&ls, "xx"), CLAPP_E_NOTFOUND);
    assert_int_equal(ls.n, 41);
    clapp_labelset_free(&ls);
    assert_int_equal(ls.n, 0);
    assert_null(ls.names);
}

static void test_labelset_grow(void **state)
{
    clapp_labelset ls = {0};
    char name[16];
    (void)state;
    assert_int_equal(clapp_labelset_add(&ls, "walk"), 0);
    assert_int_equal(clapp_labelset_add(&ls, "run"), 1);
    assert_int_equal(clapp_labelset_add(&ls, "walk"), 0);
    assert_int_equal(clapp_labelset_add(&ls, ""), CLAPP_E_INVAL);
    for (int i = 0; i < 100; i++) {   /* past the first growth steps */
        snprintf(name, sizeof name, "c%d", i);
        assert_int_equal(clapp_labelset_add(&ls, name), 2 + i);
    }
    assert_int_equal(clapp_labelset_find(&ls, "c57"), 59);
    assert_int_equal(clapp_labelset_alias(&ls, "jog", "run"), 0);
    assert_int_equal(clapp_labelset_add(&ls, "jog"), 1);
    assert_int_equal(clapp_labelset_alias(&ls, "x", "nothing"), CLAPP_E_NOTFOUND);
    assert_int_equal(clapp_labelset_alias(&ls, "walk", "run"), CLAPP_E_INVAL);
    assert_int_equal(ls.n, 102);
    clapp_labelset_free(&ls);
}

static void test_alignment_parse_and_frames(void **state)
{
    fx *f = *state;
    char err[512] = "";
    clapp_labelset ls;
    clapp_alignment a;
    /* 16 kHz; a gap 3200..3360 between ah and t; a zero-length l. */
    char *p = write_file(f, "x.phn",
                         "# start end phone\n"
                         "0 1600 h#\n"
                         "\n"
                         "1600 3200 ah\n"
                         "3360 3360 l\n"
                         "3360 4000 t   # trailing comment\n"
                         "4000 4815 pau\n");
    int32_t out[64];
    int64_t n;
    const int32_t pau = CLAPP_CMU41_PAU, ah = 2, t = 31;

    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    assert_int_equal(clapp_alignment_load(&a, p, &ls, err, sizeof err), 0);
    assert_int_equal(a.n, 5);
    assert_int_equal(a.seg[0].label, pau);   /* h# is pau */
    assert_int_equal(a.seg[1].start, 1600);
    assert_int_equal(a.seg[1].end, 3200);
    assert_int_equal(a.seg[1].label, ah);
    assert_int_equal(a.seg[1].line, 4);
    assert_int_equal(a.seg[2].label, 21);    /* l */
    assert_int_equal(a.seg[3].label, t);
    assert_int_equal(a.seg[4].line, 7);

    /* 100 labels/s: frame i centre at (i + 0.5) * 160 samples. */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 0, -7), pau);
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 9, -7), pau);    /* 1520 */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 10, -7), ah);    /* 1680 */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 19, -7), ah);    /* 3120 */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 20, -7), -7);    /* 3280: gap */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 21, -7), t);     /* 3440 */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 30, -7), -7);    /* 4880: past the end */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 1000, -7), -7);
    /* Boundary: the centre exactly on a segment start belongs to that segment. */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 125, 12, -7), ah);    /* 12.5*128 = 1600 */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 125, 11, -7), pau);   /* 1472 */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 125, 25, -7), -7);    /* 3264: gap */
    assert_int_equal(clapp_alignment_label_at(&a, 16000, 125, 26, -7), t);     /* 3392 */

    /* Frames over 4900 samples at 100/s: ceil(30.625) = 31 frames, the
     * last partial one included; frames 20 (gap) and 30 (past the end of
     * the labels) get the silence id. */
    n = clapp_alignment_frames(&a, 16000, 4900, 100, 99, out, 64);
    assert_int_equal(n, 31);
    assert_int_equal(clapp_alignment_frames(&a, 16000, 4900, 100, 99, NULL, 0), 31);
    for (int64_t i = 0; i < n; i++) {
        double c = ((double)i + 0.5) * 160;
        int32_t want = c < 1600 ? pau : c < 3200 ? ah : c < 3360 ? 99 : c < 4000 ? t :
                       c < 4815 ? pau : 99;
        assert_int_equal(out[i], want);
    }
    assert_int_equal(out[20], 99);
    assert_int_equal(out[30], 99);
    /* Exact multiple: 4800 samples -> 30 frames, no extra one. */
    assert_int_equal(clapp_alignment_frames(&a, 16000, 4800, 100, 99, out, 64), 30);
    assert_int_equal(clapp_alignment_frames(&a, 16000, 4801, 100, 99, out, 64), 31);
    /* max bounds what is written. */
    out[5] = 12345;
    assert_int_equal(clapp_alignment_frames(&a, 16000, 4900, 100, 99, out, 5), 5);
    assert_int_equal(out[5], 12345);
    /* Another input rate: 8 kHz, segments in 8 kHz samples, 50 labels/s:
     * frame 3 centre = 3.5 * 160 = 560 samples -> seg 0 (0..1600). */
    assert_int_equal(clapp_alignment_label_at(&a, 8000, 50, 3, -1), pau);
    assert_int_equal(clapp_alignment_label_at(&a, 8000, 50, 10, -1), ah);      /* 1680 */
    assert_int_equal(clapp_label_frame_count(16001, 100, 16000), 101);
    assert_int_equal(clapp_label_frame_count(16000, 100, 16000), 100);
    assert_int_equal(clapp_label_frame_count(0, 100, 16000), 0);
    clapp_alignment_free(&a);
    clapp_labelset_free(&ls);
    free(p);
}

static void expect_phn_error(const fx *f, clapp_labelset *ls, const char *text, int want_rc,
                             const char *needle)
{
    char err[512] = "";
    clapp_alignment a;
    char *p = write_file(f, "bad.phn", text);
    int rc = clapp_alignment_load(&a, p, ls, err, sizeof err);
    assert_int_equal(rc, want_rc);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
    assert_non_null(strstr(err, "bad.phn"));
    assert_null(a.seg);
    assert_int_equal(a.n, 0);
    free(p);
}

static void test_alignment_errors(void **state)
{
    fx *f = *state;
    clapp_labelset ls, open = {0};
    clapp_alignment a;
    char err[512] = "";
    char *missing = tu_path(f->dir, "none.phn");
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    expect_phn_error(f, &ls, "0 10 pau\n10 x ah\n", CLAPP_E_FORMAT, "bad.phn:2: malformed");
    expect_phn_error(f, &ls, "0 10\n", CLAPP_E_FORMAT, "bad.phn:1: malformed");
    expect_phn_error(f, &ls, "0 10 pau extra\n", CLAPP_E_FORMAT, "bad.phn:1: malformed");
    expect_phn_error(f, &ls, "# c\n0 10 pau\n20 15 ah\n", CLAPP_E_FORMAT,
                     "bad.phn:3: end 15 before start 20");
    expect_phn_error(f, &ls, "0 10 pau\n5 20 ah\n", CLAPP_E_FORMAT, "bad.phn:2: segment starts");
    expect_phn_error(f, &ls, "100 200 pau\n0 50 ah\n", CLAPP_E_FORMAT, "bad.phn:2:");
    expect_phn_error(f, &ls, "0 10 pau\n10 20 qq\n", CLAPP_E_FORMAT,
                     "bad.phn:2: unknown phone 'qq'");
    expect_phn_error(f, &ls, "-5 10 pau\n", CLAPP_E_FORMAT, "bad.phn:1: negative start");
    assert_int_equal(clapp_alignment_load(&a, missing, &ls, err, sizeof err), CLAPP_E_IO);
    assert_non_null(strstr(err, "none.phn"));
    /* A growable set takes new phones in order of appearance. */
    {
        char *p = write_file(f, "open.phn", "0 10 qq\n10 20 rr\n20 30 qq\n");
        assert_int_equal(clapp_alignment_load(&a, p, &open, err, sizeof err), 0);
        assert_int_equal(open.n, 2);
        assert_int_equal(a.seg[0].label, 0);
        assert_int_equal(a.seg[1].label, 1);
        assert_int_equal(a.seg[2].label, 0);
        clapp_alignment_free(&a);
        free(p);
    }
    /* An empty alignment is valid: everything is silence. */
    {
        char *p = write_file(f, "empty.phn", "# nothing\n\n");
        assert_int_equal(clapp_alignment_load(&a, p, &ls, err, sizeof err), 0);
        assert_int_equal(a.n, 0);
        assert_int_equal(clapp_alignment_label_at(&a, 16000, 100, 3, 40), 40);
        clapp_alignment_free(&a);
        free(p);
    }
    clapp_labelset_free(&open);
    clapp_labelset_free(&ls);
    free(missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_manifest_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_absolute_inside_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_errors, setup, teardown),
        cmocka_unit_test(test_labelset_cmu41),
        cmocka_unit_test(test_labelset_grow),
        cmocka_unit_test_setup_teardown(test_alignment_parse_and_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alignment_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
