/* Media decoders: the FFmpeg backend against the ffmpeg CLI's own conversion
 * (audio: -ac 1 -ar 16000 -f f32le; video: -vf fps,scale,format=gray), the
 * libsndfile backend against the FFmpeg one and against samples written by
 * the test itself, chunked reads against one big read, standard input, and
 * the failure cases (missing, empty, text, truncated, corrupt files).
 *
 * All media is generated with the ffmpeg CLI's lavfi sources into a temp
 * folder once, in the group setup. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavutil/log.h>

#include "media/decode.h"
#include "testutil.h"

static char *g_dir;

static char *P(const char *name)
{
    static char buf[8][1024]; /* a few paths alive at once in one expression */
    static int  k;
    char       *b = buf[k++ & 7];
    snprintf(b, 1024, "%s/%s", g_dir, name);
    return b;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

typedef struct decoded {
    float  *data;
    int64_t frames;   /* samples or pictures */
    int64_t errors;
    int64_t duration; /* clapp_decoder_duration_frames */
    int     input_rate;
    int     ret;      /* last read's return (0 at a clean end) */
    char    err[512];
} decoded;

static clapp_decode_params audio_params(int rate, clapp_decode_backend backend)
{
    clapp_decode_params p = { 0 };
    p.kind = CLAPP_MEDIA_AUDIO;
    p.backend = backend;
    p.rate = rate;
    return p;
}

static clapp_decode_params video_params(int w, int h, double fps, int channels)
{
    clapp_decode_params p = { 0 };
    p.kind = CLAPP_MEDIA_VIDEO;
    p.width = w;
    p.height = h;
    p.fps = fps;
    p.channels = channels;
    return p;
}

/* Decode a whole stream reading `chunk` frames per call. Returns the open
 * error (< 0) or 0; d->ret holds the read that ended it. */
static int decode_all(const char *url, const clapp_decode_params *p, int64_t chunk, decoded *d)
{
    clapp_decoder *dec = NULL;
    size_t         fsize = p->kind == CLAPP_MEDIA_VIDEO ? (size_t)p->channels * p->width * p->height : 1;
    int64_t        cap = 0;
    int            ret;

    memset(d, 0, sizeof(*d));
    ret = clapp_decoder_open(&dec, url, p, d->err, sizeof(d->err));
    if (ret < 0) {
        assert_null(dec);
        d->ret = ret;
        return ret;
    }
    d->duration = clapp_decoder_duration_frames(dec);
    d->input_rate = clapp_decoder_input_rate(dec);
    for (;;) {
        if (d->frames + chunk > cap) {
            cap = (d->frames + chunk) * 2;
            d->data = realloc(d->data, (size_t)cap * fsize * sizeof(float));
            assert_non_null(d->data);
        }
        int64_t n = clapp_decoder_read(dec, d->data + (size_t)d->frames * fsize, chunk, d->err, sizeof(d->err));
        if (n <= 0) {
            d->ret = (int)n;
            break;
        }
        assert_true(n <= chunk);
        d->frames += n;
    }
    d->errors = clapp_decoder_error_count(dec);
    clapp_decoder_close(dec);
    return 0;
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE    *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long     len;
    *n = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && fread(buf, 1, (size_t)len, f) == (size_t)len)
        *n = (size_t)len;
    fclose(f);
    return buf;
}

static int write_bytes(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(b, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* The CLI's mono 16 kHz float conversion of a file. */
static float *cli_audio(const char *in, size_t *n)
{
    char *out = NULL;
    assert_true(asprintf(&out, "%s.cli.f32", in) > 0);
    assert_int_equal(tu_run("ffmpeg -v error -y -i '%s' -ac 1 -ar 16000 -f f32le '%s'", in, out), 0);
    float *ref = tu_read_f32(out, n);
    assert_non_null(ref);
    free(out);
    return ref;
}

/* The CLI's fps/scale/format conversion, bytes scaled to [0, 1] in our
 * planar R, G, B order (the CLI writes gbrp as G, B, R planes). */
static float *cli_video(const char *in, int w, int h, const char *fps, int channels, const char *extra, size_t *frames)
{
    char    *out = NULL;
    size_t   nb, plane = (size_t)w * h, fsize = plane * channels;
    assert_true(asprintf(&out, "%s.cli.raw", in) > 0);
    assert_int_equal(tu_run("ffmpeg -v error -y %s -i '%s' -vf fps=%s,scale=%d:%d,format=%s -f rawvideo '%s'", extra,
                            in, fps, w, h, channels == 1 ? "gray" : "gbrp", out),
                     0);
    uint8_t *b = read_bytes(out, &nb);
    assert_non_null(b);
    assert_int_equal(nb % fsize, 0);
    *frames = nb / fsize;
    float *ref = malloc((nb ? nb : 1) * sizeof(float));
    assert_non_null(ref);
    static const int src_plane[3] = { 2, 0, 1 };
    for (size_t f = 0; f < *frames; f++)
        for (int c = 0; c < channels; c++)
            for (size_t i = 0; i < plane; i++)
                ref[f * fsize + c * plane + i] =
                    (float)b[f * fsize + (channels == 1 ? 0 : src_plane[c]) * plane + i] / 255.0f;
    free(b);
    free(out);
    return ref;
}

/* A 16-bit PCM WAV written byte by byte, so the expected samples are known
 * without any decoder. */
static void write_wav16(const char *path, const int16_t *x, int frames, int channels, int rate)
{
    size_t   data = (size_t)frames * channels * 2, n = 44 + data;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
#define LE32(o, v) (b[o] = (uint8_t)(v), b[o + 1] = (uint8_t)((v) >> 8), b[o + 2] = (uint8_t)((v) >> 16), b[o + 3] = (uint8_t)((v) >> 24))
#define LE16(o, v) (b[o] = (uint8_t)(v), b[o + 1] = (uint8_t)((v) >> 8))
    memcpy(b, "RIFF", 4);
    LE32(4, (uint32_t)(n - 8));
    memcpy(b + 8, "WAVEfmt ", 8);
    LE32(16, 16u);
    LE16(20, 1u);
    LE16(22, (unsigned)channels);
    LE32(24, (uint32_t)rate);
    LE32(28, (uint32_t)(rate * channels * 2));
    LE16(32, (unsigned)(channels * 2));
    LE16(34, 16u);
    memcpy(b + 36, "data", 4);
    LE32(40, (uint32_t)data);
    for (size_t i = 0; i < (size_t)frames * channels; i++)
        LE16(44 + 2 * i, (uint16_t)x[i]);
#undef LE32
#undef LE16
    assert_int_equal(write_bytes(path, b, n), 0);
    free(b);
}

/* Overwrite `count` runs of 64 pseudo-random bytes in the middle third. */
static void corrupt_copy(const char *src, const char *dst, int count, uint32_t seed)
{
    size_t   n;
    uint8_t *b = read_bytes(src, &n);
    assert_non_null(b);
    assert_true(n > 3000);
    for (int k = 0; k < count; k++) {
        size_t at = n / 3 + (size_t)k * (n / 3) / (size_t)count;
        for (int i = 0; i < 64; i++) {
            seed = seed * 1664525u + 1013904223u;
            b[at + i] = (uint8_t)(seed >> 24);
        }
    }
    assert_int_equal(write_bytes(dst, b, n), 0);
    free(b);
}

static void truncate_copy(const char *src, const char *dst, size_t keep_num, size_t keep_den)
{
    size_t   n;
    uint8_t *b = read_bytes(src, &n);
    assert_non_null(b);
    assert_int_equal(write_bytes(dst, b, n * keep_num / keep_den), 0);
    free(b);
}

/* ------------------------------------------------------------------------ */
/* Media                                                                     */

static int setup_media(void **state)
{
    (void)state;
    g_dir = tu_tmpdir("decode");
    if (!g_dir)
        return -1;
    /* Stereo sources with different content per channel: a tone on the left,
     * noise on the right. The 44.1 kHz WAV has no channel mask (unknown
     * layout), the 48 kHz one is tagged stereo. */
    const char *cmds[] = {
        "ffmpeg -v error -y -f lavfi -i sine=f=440:r=44100:d=3 -f lavfi -i anoisesrc=r=44100:d=3:a=0.3:seed=1 "
        "-filter_complex '[0][1]amerge=inputs=2' '%s/st44.wav'",
        "ffmpeg -v error -y -f lavfi -i sine=f=1000:r=48000:d=2.5 -f lavfi -i anoisesrc=r=48000:d=2.5:a=0.2:seed=2 "
        "-filter_complex '[0][1]amerge=inputs=2,aformat=channel_layouts=stereo' '%s/st48.wav'",
        "ffmpeg -v error -y -i '%1$s/st44.wav' '%1$s/st44.flac' -c:a libmp3lame -b:a 128k '%1$s/st44.mp3' "
        "-c:a aac '%1$s/st44.m4a'",
        "ffmpeg -v error -y -i '%1$s/st48.wav' '%1$s/st48.flac' -c:a libvorbis '%1$s/st48.ogg' "
        "-c:a libopus '%1$s/st48.opus'",
        "ffmpeg -v error -y -f lavfi -i testsrc2=s=160x120:r=25:d=2 -c:v libx264 -pix_fmt yuv420p '%s/h264.mp4'",
        "ffmpeg -v error -y -f lavfi -i mandelbrot=s=160x120:r=25 -t 1.96 -c:v mpeg4 '%s/mpeg4.avi'",
        "ffmpeg -v error -y -f lavfi -i testsrc2=s=160x120:r=25:d=1.88 -c:v libvpx-vp9 -deadline realtime "
        "-cpu-used 8 -b:v 300k '%s/vp9.webm'",
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        char *cmd = NULL;
        if (asprintf(&cmd, cmds[i], g_dir, g_dir) < 0)
            return -1;
        int rc = tu_run("%s", cmd);
        free(cmd);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int teardown_media(void **state)
{
    (void)state;
    tu_rmtree(g_dir);
    free(g_dir);
    g_dir = NULL;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Audio                                                                     */

static void test_decode_audio_matches_cli(void **state)
{
    (void)state;
    const char *files[] = { "st44.wav", "st48.wav", "st44.flac", "st44.mp3", "st48.ogg", "st48.opus", "st44.m4a" };
    clapp_decode_params p = audio_params(16000, CLAPP_DECODE_FFMPEG);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        size_t  nref;
        float  *ref = cli_audio(P(files[i]), &nref);
        decoded d;
        assert_int_equal(decode_all(P(files[i]), &p, 4096, &d), 0);
        assert_int_equal(d.ret, 0);
        double diff = tu_max_abs_diff(d.data, ref, nref < (size_t)d.frames ? nref : (size_t)d.frames);
        printf("  %-10s %7lld samples (CLI %7zu), max |diff| %.3g, input %d Hz\n", files[i], (long long)d.frames,
               nref, diff, d.input_rate);
        assert_int_equal(d.frames, (int64_t)nref);
        assert_true(diff < 1e-4);
        assert_int_equal(d.errors, 0);
        assert_int_equal(d.input_rate, strstr(files[i], "44") ? 44100 : 48000);
        /* The signal is there: not silence (a broken downmix could be). */
        double energy = 0;
        for (int64_t k = 0; k < d.frames; k++)
            energy += (double)d.data[k] * d.data[k];
        assert_true(energy / (double)d.frames > 1e-3);
        free(ref);
        free(d.data);
    }
}

/* Known samples, no decoder involved in the expectation: the stereo-to-mono
 * rule of `ffmpeg -ac 1` is (L + R) / sqrt(2) for float output. */
static void test_decode_downmix_and_resample_independent(void **state)
{
    (void)state;
    enum { N = 16000 };
    int16_t *x = malloc(sizeof(int16_t) * 2 * N);
    assert_non_null(x);
    for (int i = 0; i < N; i++) {
        x[2 * i] = (int16_t)lrint(8000.0 * sin(2 * M_PI * 300.0 * i / 16000.0));
        x[2 * i + 1] = (int16_t)lrint(5000.0 * cos(2 * M_PI * 1100.0 * i / 16000.0));
    }
    write_wav16(P("known.wav"), x, N, 2, 16000);
    const clapp_decode_backend backends[] = { CLAPP_DECODE_FFMPEG, CLAPP_DECODE_SNDFILE };
    for (int b = 0; b < 2; b++) {
        clapp_decode_params p = audio_params(16000, backends[b]);
        decoded             d;
        double              m = 0;
        assert_int_equal(decode_all(P("known.wav"), &p, 1000, &d), 0);
        assert_int_equal(d.ret, 0);
        assert_int_equal(d.frames, N);
        assert_int_equal(d.duration, N);
        for (int i = 0; i < N; i++) {
            double want = ((double)x[2 * i] + x[2 * i + 1]) / 32768.0 * M_SQRT1_2;
            m = fmax(m, fabs(d.data[i] - want));
        }
        printf("  backend %d: downmix max |diff| vs (L+R)/sqrt(2) = %.3g\n", (int)backends[b], m);
        assert_true(m < 1e-6);
        free(d.data);
    }

    /* Resampling a 16 kHz tone to 8 kHz keeps the tone (away from the ends). */
    for (int i = 0; i < N; i++)
        x[i] = (int16_t)lrint(10000.0 * sin(2 * M_PI * 500.0 * i / 16000.0));
    write_wav16(P("tone.wav"), x, N, 1, 16000);
    for (int b = 0; b < 2; b++) {
        clapp_decode_params p = audio_params(8000, backends[b]);
        decoded             d;
        double              m = 0;
        assert_int_equal(decode_all(P("tone.wav"), &p, 333, &d), 0);
        assert_int_equal(d.frames, N / 2);
        assert_int_equal(d.input_rate, 16000);
        for (int i = 200; i < N / 2 - 200; i++)
            m = fmax(m, fabs(d.data[i] - 10000.0 / 32768.0 * sin(2 * M_PI * 500.0 * i / 8000.0)));
        printf("  backend %d: 16 kHz -> 8 kHz tone max |diff| vs the analytic tone = %.3g\n", (int)backends[b], m);
        assert_true(m < 2e-3);
        free(d.data);
    }
    free(x);
}

static void test_decode_audio_chunks(void **state)
{
    (void)state;
    const char         *files[] = { "st44.mp3", "st48.opus", "st44.wav" };
    const int64_t       chunks[] = { 1, 7, 4096, 100000 };
    clapp_decode_params p = audio_params(16000, CLAPP_DECODE_AUTO);
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        decoded whole;
        assert_int_equal(decode_all(P(files[f]), &p, 1 << 22, &whole), 0);
        assert_int_equal(whole.ret, 0);
        assert_true(whole.frames > 30000);
        for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
            decoded d;
            assert_int_equal(decode_all(P(files[f]), &p, chunks[c], &d), 0);
            assert_int_equal(d.ret, 0);
            assert_int_equal(d.frames, whole.frames);
            assert_memory_equal(d.data, whole.data, (size_t)d.frames * sizeof(float));
            free(d.data);
        }
        free(whole.data);
    }
}

static void test_decode_sndfile_vs_ffmpeg(void **state)
{
    (void)state;
    const char *files[] = { "st44.wav", "st48.wav", "st44.flac", "st48.flac" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        clapp_decode_params pf = audio_params(16000, CLAPP_DECODE_FFMPEG);
        clapp_decode_params ps = audio_params(16000, CLAPP_DECODE_SNDFILE);
        decoded             a, b;
        assert_int_equal(decode_all(P(files[i]), &pf, 4096, &a), 0);
        assert_int_equal(decode_all(P(files[i]), &ps, 777, &b), 0);
        assert_int_equal(a.ret, 0);
        assert_int_equal(b.ret, 0);
        double diff = tu_max_abs_diff(a.data, b.data, (size_t)(a.frames < b.frames ? a.frames : b.frames));
        printf("  %-10s ffmpeg %lld, sndfile %lld samples, max |diff| %.3g\n", files[i], (long long)a.frames,
               (long long)b.frames, diff);
        assert_int_equal(a.frames, b.frames);
        assert_true(diff < 1e-4);
        assert_int_equal(a.input_rate, b.input_rate);
        assert_int_equal(b.duration, b.frames);
        free(a.data);
        free(b.data);
    }
}

/* ------------------------------------------------------------------------ */
/* Video                                                                     */

static void check_video(const char *file, int w, int h, const char *fps, int channels, const char *cli_extra)
{
    size_t              nref;
    float              *ref = cli_video(P(file), w, h, fps, channels, cli_extra, &nref);
    clapp_decode_params p = video_params(w, h, atof(fps), channels);
    decoded             d;
    size_t              fsize = (size_t)w * h * channels;
    assert_int_equal(decode_all(P(file), &p, 3, &d), 0);
    assert_int_equal(d.ret, 0);
    size_t n = (size_t)d.frames < nref ? (size_t)d.frames : nref;
    double diff = tu_max_abs_diff(d.data, ref, n * fsize);
    printf("  %-10s %dx%d@%s c=%d: %lld frames (CLI %zu), max |diff| %.3g (x255 = %.2f), %lld skipped errors\n",
           file, w, h, fps, channels, (long long)d.frames, nref, diff, diff * 255, (long long)d.errors);
    assert_int_equal(d.frames, (int64_t)nref);
    assert_true(diff <= 2.0 / 255.0 + 1e-6);
    free(ref);
    free(d.data);
}

static void test_decode_video_matches_cli(void **state)
{
    (void)state;
    check_video("h264.mp4", 64, 48, "10", 1, "");
    check_video("mpeg4.avi", 64, 48, "10", 1, "");
    check_video("vp9.webm", 64, 48, "10", 1, "");
    /* Dropping at an uneven ratio, duplicating, RGB. */
    check_video("h264.mp4", 40, 30, "7", 1, "");
    check_video("vp9.webm", 40, 30, "29.97", 1, "");
    check_video("h264.mp4", 64, 48, "10", 3, "");
    check_video("mpeg4.avi", 32, 24, "10", 3, "");
}

static void test_decode_video_frames_independent(void **state)
{
    (void)state;
    /* A flat mid-gray clip of 49 frames at 25 fps: the fps rule gives
     * round(49 / 25 * 10) = 20 frames at 10 fps, and every pixel is the
     * encoded gray 0x80 (within the codec's error). */
    assert_int_equal(tu_run("ffmpeg -v error -y -f lavfi -i color=c=0x808080:s=96x64:r=25:d=1.96 -c:v libx264 "
                            "-pix_fmt yuv420p '%s'", P("flat.mp4")), 0);
    clapp_decode_params p = video_params(48, 32, 10, 1);
    decoded             d;
    assert_int_equal(decode_all(P("flat.mp4"), &p, 100, &d), 0);
    assert_int_equal(d.ret, 0);
    assert_int_equal(d.frames, 20);
    assert_int_equal(d.duration, 20);
    double m = 0;
    for (int64_t i = 0; i < d.frames * 48 * 32; i++)
        m = fmax(m, fabs(d.data[i] - 128.0 / 255.0));
    printf("  flat gray: %lld frames, max |pixel - 128/255| = %.3g\n", (long long)d.frames, m);
    assert_true(m <= 2.0 / 255.0);
    free(d.data);

    /* Same clip in RGB: three equal planes of gray. */
    p = video_params(48, 32, 5, 3);
    assert_int_equal(decode_all(P("flat.mp4"), &p, 100, &d), 0);
    assert_int_equal(d.frames, 10);
    m = 0;
    for (int64_t i = 0; i < d.frames * 3 * 48 * 32; i++)
        m = fmax(m, fabs(d.data[i] - 128.0 / 255.0));
    assert_true(m <= 3.0 / 255.0);
    free(d.data);
}

static void test_decode_video_chunks(void **state)
{
    (void)state;
    const int64_t       chunks[] = { 1, 7, 100000 };
    clapp_decode_params p = video_params(32, 24, 10, 3);
    decoded             whole;
    assert_int_equal(decode_all(P("vp9.webm"), &p, 1000, &whole), 0);
    assert_int_equal(whole.ret, 0);
    assert_true(whole.frames >= 18);
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        decoded d;
        assert_int_equal(decode_all(P("vp9.webm"), &p, chunks[c], &d), 0);
        assert_int_equal(d.frames, whole.frames);
        assert_memory_equal(d.data, whole.data, (size_t)d.frames * 3 * 32 * 24 * sizeof(float));
        free(d.data);
    }
    free(whole.data);
}

/* ------------------------------------------------------------------------ */
/* Standard input and pipes                                                  */

/* Decode `url` while standard input is a pipe fed with `file` by cat. */
static void decode_from_pipe(const char *file, const char *url, const clapp_decode_params *p, decoded *d)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "cat '%s'", file);
    FILE *pp = popen(cmd, "r");
    assert_non_null(pp);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(pp), STDIN_FILENO) >= 0);
    int ret = decode_all(url, p, 4096, d);
    assert_true(dup2(saved, STDIN_FILENO) >= 0);
    close(saved);
    pclose(pp);
    assert_int_equal(ret, 0);
}

static void test_decode_stdin(void **state)
{
    (void)state;
    /* mp3 from a pipe: the CLI reading the same pipe is the reference (the
     * end padding cannot be found without seeking, for both). */
    clapp_decode_params pa = audio_params(16000, CLAPP_DECODE_AUTO);
    decoded             d;
    size_t              nref;
    assert_int_equal(tu_run("cat '%s' | ffmpeg -v error -y -i - -ac 1 -ar 16000 -f f32le '%s'", P("st44.mp3"),
                            P("pipe.f32")), 0);
    float *ref = tu_read_f32(P("pipe.f32"), &nref);
    assert_non_null(ref);
    decode_from_pipe(P("st44.mp3"), "-", &pa, &d);
    assert_int_equal(d.ret, 0);
    assert_int_equal(d.duration, -1); /* live: unknown length */
    assert_int_equal(d.frames, (int64_t)nref);
    assert_true(tu_max_abs_diff(d.data, ref, nref) < 1e-4);
    printf("  stdin mp3: %lld samples (CLI %zu)\n", (long long)d.frames, nref);
    free(ref);
    free(d.data);

    /* WAV through libsndfile from standard input equals the file read. */
    decoded f;
    pa.backend = CLAPP_DECODE_SNDFILE;
    assert_int_equal(decode_all(P("st48.wav"), &pa, 4096, &f), 0);
    decode_from_pipe(P("st48.wav"), "-", &pa, &d);
    assert_int_equal(d.ret, 0);
    assert_int_equal(d.frames, f.frames);
    assert_memory_equal(d.data, f.data, (size_t)f.frames * sizeof(float));
    free(f.data);
    free(d.data);

    /* Video through the pipe: protocol. */
    clapp_decode_params pv = video_params(64, 48, 10, 1);
    ref = cli_video(P("vp9.webm"), 64, 48, "10", 1, "", &nref);
    decode_from_pipe(P("vp9.webm"), "pipe:0", &pv, &d);
    assert_int_equal(d.ret, 0);
    assert_int_equal(d.duration, -1);
    assert_int_equal(d.frames, (int64_t)nref);
    assert_true(tu_max_abs_diff(d.data, ref, nref * 64 * 48) <= 2.0 / 255.0);
    free(ref);
    free(d.data);
}

/* ------------------------------------------------------------------------ */
/* Failures                                                                  */

static void expect_open_error(const char *path, const clapp_decode_params *p, int code, const char *cause)
{
    clapp_decoder *dec = (clapp_decoder *)&dec; /* must be reset to NULL */
    char           err[512] = "";
    int            ret = clapp_decoder_open(&dec, path, p, err, sizeof(err));
    printf("  open %-24s -> %d \"%s\"\n", strrchr(path, '/') ? strrchr(path, '/') + 1 : path, ret, err);
    assert_int_equal(ret, code);
    assert_null(dec);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, cause));
    assert_null(strchr(err, '\n'));
}

static void test_decode_open_errors(void **state)
{
    (void)state;
    clapp_decode_params pa = audio_params(16000, CLAPP_DECODE_AUTO);
    clapp_decode_params ps = audio_params(16000, CLAPP_DECODE_SNDFILE);
    clapp_decode_params pv = video_params(64, 48, 10, 1);

    assert_int_equal(tu_write_text(P("x.txt"), "this is text, not sound\nline two\n"), 0);
    assert_int_equal(tu_write_text(P("notes.dat"), "0 1 2 3 4 5 6 7 8 9\n"), 0);
    assert_int_equal(tu_write_text(P("empty.wav"), ""), 0);

    expect_open_error(P("nope.wav"), &pa, CLAPP_E_NOTFOUND, ": no such file");
    expect_open_error(P("nope.wav"), &ps, CLAPP_E_NOTFOUND, ": no such file");
    expect_open_error(P("empty.wav"), &pa, CLAPP_E_FORMAT, ": empty file");
    expect_open_error(P("x.txt"), &pa, CLAPP_E_FORMAT, ": not a media file (");
    expect_open_error(P("x.txt"), &pv, CLAPP_E_FORMAT, ": not a media file (");
    expect_open_error(P("notes.dat"), &pa, CLAPP_E_FORMAT, ": not a media file (");
    expect_open_error(P("x.txt"), &ps, CLAPP_E_FORMAT, ": not a media file (libsndfile");
    expect_open_error(P("h264.mp4"), &pa, CLAPP_E_FORMAT, ": no audio stream");
    expect_open_error(P("st44.mp3"), &pv, CLAPP_E_FORMAT, ": no video stream");
    expect_open_error(g_dir, &pa, CLAPP_E_IO, ": is a directory");

    /* A truncated MP4 lost its index (moov at the end). */
    truncate_copy(P("h264.mp4"), P("half.mp4"), 1, 2);
    expect_open_error(P("half.mp4"), &pv, CLAPP_E_FORMAT, ": not a media file (");
    /* Bad parameters. */
    pa.rate = 0;
    expect_open_error(P("st44.wav"), &pa, CLAPP_E_INVAL, "sample rate");
    pv.channels = 2;
    expect_open_error(P("h264.mp4"), &pv, CLAPP_E_INVAL, "channels");
    pv.channels = 1;
    pv.backend = CLAPP_DECODE_SNDFILE;
    expect_open_error(P("h264.mp4"), &pv, CLAPP_E_UNSUPPORTED, "audio only");
}

/* Cut at half: the decodable prefix, then the end; the prefix is the whole
 * file's (up to the resampler/codec tail at the cut). */
static void test_decode_truncated(void **state)
{
    (void)state;
    const char *files[] = { "st44.wav", "st44.flac", "st44.mp3", "st48.ogg", "st48.opus" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char cut[64];
        snprintf(cut, sizeof(cut), "half-%s", files[i]);
        truncate_copy(P(files[i]), P(cut), 1, 2);
        clapp_decode_params p = audio_params(16000, CLAPP_DECODE_AUTO);
        decoded             whole, d;
        assert_int_equal(decode_all(P(files[i]), &p, 4096, &whole), 0);
        assert_int_equal(decode_all(P(cut), &p, 4096, &d), 0);
        printf("  %-15s %lld of %lld samples, end %d, %lld skipped errors\n", cut, (long long)d.frames,
               (long long)whole.frames, d.ret, (long long)d.errors);
        assert_true(d.ret == 0 || d.ret < 0);
        assert_true(d.frames > whole.frames / 4 && d.frames < whole.frames * 3 / 4);
        int64_t n = d.frames - 3000;
        assert_true(tu_max_abs_diff(d.data, whole.data, (size_t)n) < 1e-6);
        free(whole.data);
        free(d.data);
    }
    /* Video cut at half (WebM has its index up front): a prefix of frames. */
    truncate_copy(P("vp9.webm"), P("half.webm"), 1, 2);
    clapp_decode_params pv = video_params(64, 48, 10, 1);
    decoded             whole, d;
    assert_int_equal(decode_all(P("vp9.webm"), &pv, 4, &whole), 0);
    assert_int_equal(decode_all(P("half.webm"), &pv, 4, &d), 0);
    printf("  half.webm: %lld of %lld frames\n", (long long)d.frames, (long long)whole.frames);
    assert_true(d.frames >= 3 && d.frames < whole.frames);
    assert_memory_equal(d.data, whole.data, (size_t)(d.frames - 1) * 64 * 48 * sizeof(float));
    free(whole.data);
    free(d.data);
}

/* Random bytes in the middle: damaged packets are skipped and counted,
 * and the output is what the CLI makes of the same file. */
static void test_decode_corrupt(void **state)
{
    (void)state;
    const char *files[] = { "st44.mp3", "st44.flac", "st44.m4a" };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char bad[64];
        snprintf(bad, sizeof(bad), "bad-%s", files[i]);
        corrupt_copy(P(files[i]), P(bad), 16, 12345u + (uint32_t)i);
        clapp_decode_params p = audio_params(16000, CLAPP_DECODE_FFMPEG);
        size_t              nref;
        float              *ref = cli_audio(P(bad), &nref);
        decoded             d;
        assert_int_equal(decode_all(P(bad), &p, 4096, &d), 0);
        double diff = tu_max_abs_diff(d.data, ref, nref < (size_t)d.frames ? nref : (size_t)d.frames);
        printf("  %-14s %lld samples (CLI %zu), %lld skipped errors, max |diff| %.3g\n", bad,
               (long long)d.frames, nref, (long long)d.errors, diff);
        assert_int_equal(d.ret, 0);
        assert_true(d.errors > 0);
        assert_int_equal(d.frames, (int64_t)nref);
        assert_true(diff < 1e-4);
        free(ref);
        free(d.data);
    }
    /* H.264 with damaged slices: the CLI conceals them the same way when it
     * decodes on one thread as we do. */
    corrupt_copy(P("h264.mp4"), P("bad.mp4"), 12, 777u);
    size_t              nref;
    float              *ref = cli_video(P("bad.mp4"), 64, 48, "10", 1, "-threads 1", &nref);
    clapp_decode_params pv = video_params(64, 48, 10, 1);
    decoded             d;
    assert_int_equal(decode_all(P("bad.mp4"), &pv, 5, &d), 0);
    double diff = tu_max_abs_diff(d.data, ref, nref * 64 * 48);
    printf("  bad.mp4: %lld frames (CLI %zu), %lld skipped errors, max |diff| %.3g\n", (long long)d.frames, nref,
           (long long)d.errors, diff);
    assert_int_equal(d.frames, (int64_t)nref);
    assert_true(diff <= 2.0 / 255.0);
    free(ref);
    free(d.data);
}

/* Nothing decodable: the end is an error, and it stays one. */
static void test_decode_nothing_decodable(void **state)
{
    (void)state;
    size_t   n;
    uint8_t *b = read_bytes(P("st44.flac"), &n);
    assert_non_null(b);
    /* Keep the FLAC metadata, replace every audio frame by noise. */
    size_t first = 0;
    for (size_t i = 42; i + 1 < n; i++)
        if (b[i] == 0xFF && b[i + 1] == 0xF8) {
            first = i;
            break;
        }
    assert_true(first > 0);
    uint32_t seed = 99;
    for (size_t i = first; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        b[i] = (uint8_t)(seed >> 24);
    }
    assert_int_equal(write_bytes(P("noise.flac"), b, n), 0);
    free(b);

    clapp_decode_params p = audio_params(16000, CLAPP_DECODE_FFMPEG);
    clapp_decoder      *dec = NULL;
    char                err[512];
    float               buf[256];
    assert_int_equal(clapp_decoder_open(&dec, P("noise.flac"), &p, err, sizeof(err)), 0);
    int64_t r1 = clapp_decoder_read(dec, buf, 256, err, sizeof(err));
    printf("  noise.flac: read -> %lld \"%s\"\n", (long long)r1, err);
    assert_int_equal(r1, CLAPP_E_FORMAT);
    assert_non_null(strstr(err, "noise.flac: truncated or corrupt data"));
    char first_err[512];
    memcpy(first_err, err, sizeof(err));
    err[0] = '\0';
    assert_int_equal(clapp_decoder_read(dec, buf, 256, err, sizeof(err)), CLAPP_E_FORMAT);
    assert_string_equal(err, first_err);
    clapp_decoder_close(dec);

    /* A WAV header that promises 1000 frames, and no data after it. */
    int16_t zeros[1000] = { 0 };
    write_wav16(P("hdr.wav"), zeros, 1000, 1, 16000);
    truncate_copy(P("hdr.wav"), P("hdr-only.wav"), 44, 2044);
    const clapp_decode_backend backends[] = { CLAPP_DECODE_FFMPEG, CLAPP_DECODE_SNDFILE };
    for (int k = 0; k < 2; k++) {
        decoded d;
        p.backend = backends[k];
        int ret = decode_all(P("hdr-only.wav"), &p, 256, &d);
        printf("  hdr-only.wav backend %d: open %d, read %d \"%s\"\n", (int)backends[k], ret, d.ret, d.err);
        assert_int_equal(d.ret, CLAPP_E_FORMAT);
        assert_int_equal(d.frames, 0);
        assert_non_null(strstr(d.err, "hdr-only.wav: "));
        free(d.data);
    }

    /* One still picture is shorter than one output frame at 10 fps: the CLI
     * writes nothing, we say why. */
    assert_int_equal(tu_run("ffmpeg -v error -y -f lavfi -i testsrc2=s=160x120 -frames:v 1 '%s'", P("still.png")), 0);
    size_t              nref;
    float              *ref = cli_video(P("still.png"), 64, 48, "10", 1, "", &nref);
    clapp_decode_params pv = video_params(64, 48, 10, 1);
    decoded             d;
    assert_int_equal(decode_all(P("still.png"), &pv, 4, &d), 0);
    printf("  still.png: %lld frames (CLI %zu), \"%s\"\n", (long long)d.frames, nref, d.err);
    assert_int_equal(nref, 0);
    assert_int_equal(d.frames, 0);
    assert_int_equal(d.ret, CLAPP_E_FORMAT);
    assert_non_null(strstr(d.err, "still.png: too short"));
    free(ref);
    free(d.data);
}

int main(void)
{
    av_log_set_level(AV_LOG_QUIET); /* corrupt inputs make FFmpeg chatty */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_audio_matches_cli),
        cmocka_unit_test(test_decode_downmix_and_resample_independent),
        cmocka_unit_test(test_decode_audio_chunks),
        cmocka_unit_test(test_decode_sndfile_vs_ffmpeg),
        cmocka_unit_test(test_decode_video_matches_cli),
        cmocka_unit_test(test_decode_video_frames_independent),
        cmocka_unit_test(test_decode_video_chunks),
        cmocka_unit_test(test_decode_stdin),
        cmocka_unit_test(test_decode_open_errors),
        cmocka_unit_test(test_decode_truncated),
        cmocka_unit_test(test_decode_corrupt),
        cmocka_unit_test(test_decode_nothing_decodable),
    };
    return cmocka_run_group_tests(tests, setup_media, teardown_media);
}
