/* make_action_corpus: a tiny corpus (2 train + 1 test clips per class,
 * 32x32, 1 s at 10 fps) checked from the outside: files, manifests and the
 * UCF-101 lists, decoding with ffprobe, determinism (same seed: identical
 * lists, first-frame pixels and bytes; another seed: other pixels), the
 * direction of the pans measured by cross-correlation of consecutive decoded
 * frames, image-folder and IDX-sprite textures, and error exits. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "media/manifest.h"
#include "testutil.h"

#define TOOL CLAPP_TEST_BINARY_DIR "/make_action_corpus"
#define S 32
#define FRAMES 10

static const char *classes[10] = {"PanLeft",   "PanRight", "PanUp",  "PanDown",      "RotateCW",
                                  "RotateCCW", "ZoomIn",   "ZoomOut", "ObjectCircle", "ObjectBounce"};

typedef struct corpus {
    char *tmp, *a, *b, *c;
} corpus;

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)len + 1)) && fread(buf, 1, (size_t)len, f) == (size_t)len) {
        buf[len] = 0;
        if (n)
            *n = (size_t)len;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...)
{
    char *p = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0)
        p = NULL;
    va_end(ap);
    assert_non_null(p);
    return p;
}

static int setup(void **state)
{
    corpus *c = calloc(1, sizeof *c);
    if (!c || !(c->tmp = tu_tmpdir("actcorpus")))
        return -1;
    c->a = tu_path(c->tmp, "a");
    c->b = tu_path(c->tmp, "b");
    c->c = tu_path(c->tmp, "c");
    if (tu_run("%s -q --out %s --clips-per-class 2 --test-clips-per-class 1 --size %d --seconds 1 --fps %d --seed 5",
               TOOL, c->a, S, FRAMES) != 0 ||
        tu_run("%s -q --out %s --clips-per-class 2 --test-clips-per-class 1 --size %d --seconds 1 --fps %d --seed 5",
               TOOL, c->b, S, FRAMES) != 0 ||
        tu_run("%s -q --out %s --clips-per-class 1 --test-clips-per-class 0 --size %d --seconds 1 --fps %d --seed 6",
               TOOL, c->c, S, FRAMES) != 0)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    corpus *c = *state;
    if (c) {
        tu_rmtree(c->tmp);
        free(c->tmp);
        free(c->a);
        free(c->b);
        free(c->c);
        free(c);
    }
    return 0;
}

static int class_index(const char *name, size_t len)
{
    for (int i = 0; i < 10; i++)
        if (strlen(classes[i]) == len && strncmp(classes[i], name, len) == 0)
            return i;
    return -1;
}

static void test_layout_and_lists(void **state)
{
    corpus *c = *state;
    char *p, *text, *line, *save = NULL;
    clapp_manifest m;
    char err[512];
    int n;

    /* classInd.txt: "1 PanLeft" ... "10 ObjectBounce". */
    p = tu_path(c->a, "classInd.txt");
    text = slurp(p, NULL);
    assert_non_null(text);
    n = 0;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        char want[64];
        snprintf(want, sizeof want, "%d %s", n + 1, classes[n]);
        assert_string_equal(line, want);
    }
    assert_int_equal(n, 10);
    free(text);
    free(p);

    /* Manifests: every entry exists, sits in its class folder, is labelled by it. */
    for (int split = 0; split < 2; split++) {
        p = tu_path(c->a, split ? "test.tsv" : "train.tsv");
        assert_int_equal(clapp_manifest_load(&m, p, err, sizeof err), 0);
        assert_int_equal(m.n, split ? 10 : 20);
        for (int i = 0; i < m.n; i++) {
            struct stat sb;
            const char *rel = m.entries[i].path + strlen(c->a) + 1;
            const char *slash = strchr(rel, '/');
            assert_non_null(slash);
            assert_int_equal(stat(m.entries[i].path, &sb), 0);
            assert_true(sb.st_size > 200);
            assert_int_equal(class_index(rel, (size_t)(slash - rel)), i / (split ? 1 : 2));
            assert_string_equal(m.entries[i].label, classes[i / (split ? 1 : 2)]);
            assert_non_null(strstr(rel, split ? "_test_" : "_train_"));
        }
        clapp_manifest_free(&m);
        free(p);
    }

    /* trainlist01.txt: "Class/file N" with N the class's line in classInd;
     * testlist01.txt: "Class/file", the same files as test.tsv. */
    p = tu_path(c->a, "trainlist01.txt");
    text = slurp(p, NULL);
    assert_non_null(text);
    n = 0;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        char *sp = strrchr(line, ' '), *slash = strchr(line, '/');
        assert_non_null(sp);
        assert_non_null(slash);
        assert_int_equal(atoi(sp + 1), class_index(line, (size_t)(slash - line)) + 1);
        assert_int_equal(atoi(sp + 1), n / 2 + 1);
    }
    assert_int_equal(n, 20);
    free(text);
    free(p);
    p = tu_path(c->a, "testlist01.txt");
    text = slurp(p, NULL);
    assert_non_null(text);
    n = 0;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        char want[128];
        snprintf(want, sizeof want, "%s/v_%s_test_0000.mp4", classes[n], classes[n]);
        assert_string_equal(line, want);
    }
    assert_int_equal(n, 10);
    free(text);
    free(p);
}

static void test_clip_decodes(void **state)
{
    corpus *c = *state;
    char *out = tu_path(c->tmp, "probe.txt"), *text;
    for (int k = 0; k < 10; k += 3) {
        assert_int_equal(tu_run("{ ffprobe -v error -count_frames -select_streams v:0 -show_entries "
                                "stream=codec_name,width,height,nb_read_frames -of csv=p=0 "
                                "%s/%s/v_%s_train_0001.mp4 > %s; }",
                                c->a, classes[k], classes[k], out),
                         0);
        text = slurp(out, NULL);
        assert_non_null(text);
        print_message("  %-12s ffprobe: %s", classes[k], text);
        assert_string_equal(text, "h264,32,32,10\n");
        free(text);
    }
    free(out);
}

/* Decode a clip to gray bytes (FRAMES x S x S). */
static unsigned char *decode_gray(const corpus *c, const char *file, size_t *n)
{
    char *raw = tu_path(c->tmp, "frames.gray");
    unsigned char *px;
    assert_int_equal(tu_run("ffmpeg -v error -y -i %s -f rawvideo -pix_fmt gray %s", file, raw), 0);
    px = (unsigned char *)slurp(raw, n);
    assert_non_null(px);
    free(raw);
    return px;
}

static void test_deterministic(void **state)
{
    corpus *c = *state;
    const char *lists[] = {"train.tsv", "test.tsv", "classInd.txt", "trainlist01.txt", "testlist01.txt"};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        char *pa = tu_path(c->a, lists[i]), *pb = tu_path(c->b, lists[i]);
        char *ta = slurp(pa, NULL), *tb = slurp(pb, NULL);
        assert_non_null(ta);
        assert_non_null(tb);
        assert_string_equal(ta, tb);
        free(ta);
        free(tb);
        free(pa);
        free(pb);
    }
    for (int k = 0; k < 10; k += 4) {
        char *fa = pathf("%s/%s/v_%s_train_0000.mp4", c->a, classes[k], classes[k]);
        char *fb = pathf("%s/%s/v_%s_train_0000.mp4", c->b, classes[k], classes[k]);
        char *fc = pathf("%s/%s/v_%s_train_0000.mp4", c->c, classes[k], classes[k]);
        size_t na, nb, nc, ba, bb;
        unsigned char *ga = decode_gray(c, fa, &na), *gb = decode_gray(c, fb, &nb), *gc = decode_gray(c, fc, &nc);
        char *bytes_a = slurp(fa, &ba), *bytes_b = slurp(fb, &bb);
        long diff = 0;
        assert_int_equal(na, (size_t)FRAMES * S * S);
        assert_int_equal(nb, na);
        assert_int_equal(nc, na);
        /* Same seed: the same first frame (and, bit-exact encoding, the same file). */
        assert_memory_equal(ga, gb, S * S);
        assert_int_equal(ba, bb);
        assert_memory_equal(bytes_a, bytes_b, ba);
        /* Another seed: another picture. */
        for (int i = 0; i < S * S; i++)
            diff += abs((int)ga[i] - (int)gc[i]);
        print_message("  %-12s seed 5 vs 5: identical; seed 5 vs 6: mean |diff| %.1f gray levels\n", classes[k],
                      (double)diff / (S * S));
        assert_true(diff > 5 * S * S);
        free(ga);
        free(gb);
        free(gc);
        free(bytes_a);
        free(bytes_b);
        free(fa);
        free(fb);
        free(fc);
    }
}

/* Content displacement between consecutive frames: the (dx, dy) in [-R, R]^2
 * maximising the normalised cross-correlation of f[t+1](x, y) with
 * f[t](x - dx, y - dy), summed over all frame pairs of the clip. */
static void peak_shift(const unsigned char *px, int *bx, int *by)
{
    enum { R = 4 };
    double best = -1e9;
    for (int dy = -R; dy <= R; dy++)
        for (int dx = -R; dx <= R; dx++) {
            double score = 0.0;
            for (int t = 0; t + 1 < FRAMES; t++) {
                const unsigned char *f0 = px + (size_t)t * S * S, *f1 = f0 + S * S;
                double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0, n = 0;
                for (int y = R; y < S - R; y++)
                    for (int x = R; x < S - R; x++) {
                        double a = f1[y * S + x], b = f0[(y - dy) * S + (x - dx)];
                        sa += a;
                        sb += b;
                        saa += a * a;
                        sbb += b * b;
                        sab += a * b;
                        n++;
                    }
                score += (sab - sa * sb / n) / sqrt((saa - sa * sa / n) * (sbb - sb * sb / n) + 1e-9);
            }
            if (score > best) {
                best = score;
                *bx = dx;
                *by = dy;
            }
        }
}

static void test_pan_direction(void **state)
{
    corpus *c = *state;
    /* Camera right -> content left (dx < 0); camera down -> content up (dy < 0). */
    static const struct {
        const char *cls;
        int sx, sy;
    } want[] = {{"PanRight", -1, 0}, {"PanLeft", 1, 0}, {"PanDown", 0, -1}, {"PanUp", 0, 1}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        for (int clip = 0; clip < 2; clip++) {
            char *f = pathf("%s/%s/v_%s_train_%04d.mp4", c->a, want[k].cls, want[k].cls, clip);
            size_t n;
            unsigned char *px = decode_gray(c, f, &n);
            int dx = 99, dy = 99;
            assert_int_equal(n, (size_t)FRAMES * S * S);
            peak_shift(px, &dx, &dy);
            print_message("  %-8s clip %d: content moves (%+d, %+d) px per frame\n", want[k].cls, clip, dx, dy);
            /* 0.25..0.6 frame widths per second at 10 fps: 0.8..1.9 px per frame. */
            assert_int_equal(dx * want[k].sx >= 1 && dx * want[k].sx <= 2, want[k].sx != 0);
            assert_int_equal(dy * want[k].sy >= 1 && dy * want[k].sy <= 2, want[k].sy != 0);
            if (want[k].sx == 0)
                assert_int_equal(dx, 0);
            if (want[k].sy == 0)
                assert_int_equal(dy, 0);
            free(px);
            free(f);
        }
}

static void test_images_and_sprites(void **state)
{
    corpus *c = *state;
    char *img = tu_path(c->tmp, "img"), *out = tu_path(c->tmp, "withimages"), *idx = tu_path(c->tmp, "sprites.idx");
    char *probe = tu_path(c->tmp, "probe2.txt"), *text;
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0, 12, 0, 0, 0, 28, 0, 0, 0, 28};
    FILE *f;
    assert_int_equal(mkdir(img, 0777), 0);
    /* Three pictures (two lavfi patterns and a fractal) and a file that is not one. */
    assert_int_equal(tu_run("ffmpeg -v error -f lavfi -i testsrc2=size=160x120 -frames:v 1 %s/a.png && "
                            "ffmpeg -v error -f lavfi -i mandelbrot=size=128x128 -frames:v 1 %s/b.jpg && "
                            "ffmpeg -v error -f lavfi -i cellauto=size=128x96 -frames:v 1 %s/c.png && "
                            "echo not an image > %s/notes.txt",
                            img, img, img, img),
                     0);
    /* An IDX file of 12 sprites, 28x28: filled rings of different sizes. */
    f = fopen(idx, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, 16, f), 16);
    for (int k = 0; k < 12; k++)
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                double r = hypot(x - 13.5, y - 13.5);
                fputc(r < 6 + k / 2 ? 230 : 0, f);
            }
    fclose(f);
    assert_int_equal(tu_run("%s -q --out %s --images %s --sprites %s --clips-per-class 1 --test-clips-per-class 1 "
                            "--size %d --seconds 1 --fps %d --codec mpeg4",
                            TOOL, out, img, idx, S, FRAMES),
                     0);
    assert_int_equal(tu_run("{ ffprobe -v error -count_frames -show_entries stream=codec_name,nb_read_frames -of "
                            "csv=p=0 %s/ObjectBounce/v_ObjectBounce_test_0000.avi > %s; }",
                            out, probe),
                     0);
    text = slurp(probe, NULL);
    assert_non_null(text);
    assert_string_equal(text, "mpeg4,10\n");
    free(text);
    /* A gzipped IDX file is read through gzip. */
    assert_int_equal(tu_run("gzip -k %s && %s -q --out %s/gz --sprites %s.gz --clips-per-class 1 "
                            "--test-clips-per-class 0 --size %d --seconds 1",
                            idx, TOOL, out, idx, S),
                     0);
    free(img);
    free(out);
    free(idx);
    free(probe);
}

static void test_errors(void **state)
{
    corpus *c = *state;
    char *log = tu_path(c->tmp, "err.txt"), *text, *empty = tu_path(c->tmp, "empty");
    static const struct {
        const char *args;
        int status;
        const char *needle;
    } cases[] = {
        {"--out /proc/clapp-no/such", 1, "cannot create or write the output folder"},
        {"--out %s/x --size 33", 2, "expected an even number of pixels"},
        {"--out %s/x --codec vp9", 2, "expected h264 or mpeg4"},
        {"--out %s/x --bogus 1", 2, "unknown option"},
        {"--clips-per-class 1", 2, "--out DIR is required"},
        {"--out %s/x --images %s/empty", 1, "needs at least 2 decodable images"},
        {"--out %s/x --sprites %s/a/classInd.txt", 1, "not an IDX file"},
    };
    assert_int_equal(mkdir(empty, 0777), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *args = pathf(cases[i].args, c->tmp, c->tmp);
        int rc = tu_run("{ %s %s 2> %s; }", TOOL, args, log);
        text = slurp(log, NULL);
        assert_non_null(text);
        print_message("  exit %d: %s", rc, text);
        assert_int_equal(rc, cases[i].status);
        assert_non_null(strstr(text, cases[i].needle));
        free(text);
        free(args);
    }
    free(log);
    free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_lists),
        cmocka_unit_test(test_clip_decodes),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_pan_direction),
        cmocka_unit_test(test_images_and_sprites),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
