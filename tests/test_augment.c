/* Augmentation in the source element (core/media/augment.h): off is bit-identical
 * to no augmentation, draws are seeded, and each perturbation does what its
 * draw says: gain, SNR, equaliser response, speed with aligned labels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "media/augment.h"
#include "media/manifest.h"
#include "media/source.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define RATE 16000

static char *g_dir;

/* ------------------------------------------------------------------------ */
/* Media                                                                     */

/* A float WAV from samples (raw f32 through ffmpeg, bit-exact). */
static void write_wav(const char *name, const float *x, int64_t n)
{
    char *raw = tu_path(g_dir, "tmp.f32");
    char *wav = tu_path(g_dir, name);
    FILE *f = fopen(raw, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(x, sizeof(float), (size_t)n, f), (size_t)n);
    fclose(f);
    assert_int_equal(tu_run("ffmpeg -nostdin -y -v error -f f32le -ar %d -ac 1 -i '%s' "
                            "-c:a pcm_f32le '%s'", RATE, raw, wav), 0);
    free(raw);
    free(wav);
}

static uint64_t g_rng = 12345;
static double test_uniform(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) * 0x1.0p-53;
}

/* The phone tones of the speed test: 5 segments of SEG samples. */
#define SEG 6400
static const char *const g_phones[] = {"aa", "iy", "s", "m", "f"};
static const double g_tones[] = {400, 1100, 2500, 700, 1800};

static int group_setup(void **state)
{
    const int64_t n = 32000;
    float *x = malloc((size_t)n * sizeof(float));
    char phn[256] = "";
    (void)state;
    g_dir = tu_tmpdir("augment");
    assert_non_null(g_dir);
    assert_non_null(x);
    /* A tone with a little noise (2 s), and pure noise (1 s). */
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(0.4 * sin(2 * M_PI * 440.0 * (double)i / RATE) +
                       0.05 * (test_uniform() - 0.5));
    write_wav("tone.wav", x, n);
    for (int64_t i = 0; i < 16000; i++)
        x[i] = (float)(0.6 * (test_uniform() - 0.5));
    write_wav("noise.wav", x, 16000);
    /* Sines for the equaliser: 2 s each. */
    {
        static const double freqs[] = {150, 1000, 4000};
        for (int k = 0; k < 3; k++) {
            char name[32];
            for (int64_t i = 0; i < n; i++)
                x[i] = (float)(0.5 * sin(2 * M_PI * freqs[k] * (double)i / RATE));
            snprintf(name, sizeof name, "sine%d.wav", k);
            write_wav(name, x, n);
        }
    }
    /* Phones as tones, labelled: 5 segments of 0.4 s. */
    for (int s = 0; s < 5; s++) {
        char line[64];
        for (int64_t i = s * SEG; i < (s + 1) * SEG; i++)
            x[i] = (float)(0.5 * sin(2 * M_PI * g_tones[s] * (double)i / RATE));
        snprintf(line, sizeof line, "%d %d %s\n", s * SEG, (s + 1) * SEG, g_phones[s]);
        strcat(phn, line);
    }
    write_wav("phones.wav", x, n);
    {
        char *p = tu_path(g_dir, "phones.phn");
        assert_int_equal(tu_write_text(p, phn), 0);
        free(p);
    }
    free(x);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tu_rmtree(g_dir);
    free(g_dir);
    return 0;
}

static char *write_manifest(const char *name, const char *text)
{
    char *p = tu_path(g_dir, name);
    assert_int_equal(tu_write_text(p, text), 0);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Running a source: what it delivers, per sequence                          */

typedef struct seq_out {
    float   *x;
    int64_t  n, cap;
    int32_t *lab;
    int64_t  n_lab, cap_lab;
    int64_t  first_pts, lab0;   /* lab0: label_pts of the first block */
    int      blocks;
    int64_t  block_n[64];   /* steps per block (stream mode), for per-block checks */
} seq_out;

typedef struct run_out {
    seq_out *seq;
    int64_t  max_seq;
    int32_t  failed, done;
} run_out;

static void run_free(run_out *r)
{
    for (int64_t i = 0; i < r->max_seq; i++) {
        free(r->seq[i].x);
        free(r->seq[i].lab);
    }
    free(r->seq);
    memset(r, 0, sizeof *r);
}

static void audio_defaults(clapp_source_params *sp)
{
    clapp_source_default_params(sp);
    sp->decode.kind = CLAPP_MEDIA_AUDIO;
    sp->decode.rate = RATE;
    sp->block = 4096;
    sp->lanes = 2;
    sp->queue = 2;
    sp->label_rate = 0;
}

static void run_source(const clapp_source_params *sp, const char *manifest_path,
                       clapp_labelset *labels, tu_log *log, run_out *out)
{
    char err[512] = "";
    clapp_manifest m;
    clapp_host host;
    clapp_source *src = NULL;
    const clapp_block *blk;
    const int64_t T = sp->block;
    int rc;
    memset(out, 0, sizeof *out);
    tu_host_init(&host, log);
    assert_int_equal(clapp_manifest_load(&m, manifest_path, err, sizeof err), 0);
    out->max_seq = (int64_t)m.n * sp->epochs;
    out->seq = calloc((size_t)out->max_seq, sizeof *out->seq);
    assert_non_null(out->seq);
    assert_int_equal(clapp_source_create(&src, sp, &m, labels, &host), 0);
    assert_int_equal(clapp_source_start(src), 0);
    while ((rc = clapp_source_next(src, &blk)) > 0) {
        for (int32_t b = 0; b < blk->lanes; b++) {
            const clapp_lane *L = &blk->lane[b];
            const float *x = blk->x.data + (size_t)b * (size_t)T;
            seq_out *s;
            for (int64_t t = L->len; t < T; t++)
                assert_true(x[t] == 0.0f);
            if (L->seq_id < 0)
                continue;
            s = &out->seq[L->seq_id];
            if (s->blocks == 0)
                s->first_pts = L->pts;
            else
                assert_int_equal(L->pts, s->first_pts + s->n);
            if (s->blocks < 64)
                s->block_n[s->blocks] = L->len;
            s->blocks++;
            if (s->n + L->len > s->cap) {
                s->cap = (s->n + L->len) * 2 + 16;
                s->x = realloc(s->x, (size_t)s->cap * sizeof(float));
                assert_non_null(s->x);
            }
            memcpy(s->x + s->n, x, (size_t)L->len * sizeof(float));
            s->n += L->len;
            if (L->labels) {
                /* Labels of the sequence from its first block's label_pts on;
                 * neighbouring blocks may share their boundary frame. */
                int64_t base;
                if (s->blocks == 1)
                    s->lab0 = L->label_pts;
                base = L->label_pts - s->lab0;
                assert_true(base == s->n_lab || base == s->n_lab - 1);
                if (base + L->n_labels > s->cap_lab) {
                    s->cap_lab = (base + L->n_labels) * 2 + 16;
                    s->lab = realloc(s->lab, (size_t)s->cap_lab * sizeof(int32_t));
                    assert_non_null(s->lab);
                }
                memcpy(s->lab + base, L->labels, (size_t)L->n_labels * sizeof(int32_t));
                if (base + L->n_labels > s->n_lab)
                    s->n_lab = base + L->n_labels;
            }
        }
    }
    assert_int_equal(rc, 0);
    out->failed = clapp_source_failed_count(src);
    out->done = clapp_source_done_count(src);
    clapp_source_destroy(src);
    clapp_manifest_free(&m);
}

static int same_runs(const run_out *a, const run_out *b)
{
    if (a->max_seq != b->max_seq)
        return 0;
    for (int64_t i = 0; i < a->max_seq; i++) {
        const seq_out *x = &a->seq[i], *y = &b->seq[i];
        if (x->n != y->n || x->first_pts != y->first_pts || x->n_lab != y->n_lab)
            return 0;
        if (x->n && memcmp(x->x, y->x, (size_t)x->n * sizeof(float)) != 0)
            return 0;
        if (x->n_lab && memcmp(x->lab, y->lab, (size_t)x->n_lab * sizeof(int32_t)) != 0)
            return 0;
    }
    return 1;
}

/* The draws the source makes for (params, seed, seq_id). */
static void draw_for(const clapp_source_params *sp, int64_t seq_id, clapp_aug_draw *d)
{
    char why[256];
    clapp_aug *a = NULL;
    assert_int_equal(clapp_aug_create(&a, &sp->aug, sp->decode.rate, sp->block, 1, why,
                                      sizeof why), 0);
    assert_non_null(a);
    clapp_aug_draw_seq(a, sp->seed, seq_id, d);
    clapp_aug_destroy(a);
}

static double power(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s / (double)n;
}

/* ------------------------------------------------------------------------ */

/* Every option at its off value: the same bits (and labels) as a source
 * without the augmentation fields, in both modes. */
static void test_aug_off_identical(void **state)
{
    char *mp = write_manifest("off.tsv", "tone.wav\nnoise.wav\nphones.wav\t\tphones.phn\n");
    clapp_labelset ls;
    (void)state;
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    for (int mode = 0; mode < 2; mode++) {
        clapp_source_params sp;
        tu_log log = {0};
        run_out ref, r;
        audio_defaults(&sp);
        sp.mode = mode ? CLAPP_SOURCE_WINDOW : CLAPP_SOURCE_STREAM;
        sp.label_rate = 100;
        sp.epochs = 2;
        memset(&sp.aug, 0, sizeof sp.aug);   /* as before augmentation existed */
        run_source(&sp, mp, &ls, &log, &ref);
        assert_int_equal(ref.failed, 0);
        for (int variant = 0; variant < 3; variant++) {
            sp.aug.gain_db = 0;
            sp.aug.snr = variant == 0 ? "" : NULL;
            sp.aug.noise = variant == 1 ? CLAPP_NOISE_PINK : CLAPP_NOISE_EITHER;
            sp.aug.eq_db = 0;
            sp.aug.speed = variant == 2 ? 0.0 : 1.0;
            run_source(&sp, mp, &ls, &log, &r);
            assert_true(same_runs(&ref, &r));
            run_free(&r);
        }
        assert_int_equal(log.n_errors, 0);
        run_free(&ref);
        tu_log_free(&log);
    }
    clapp_labelset_free(&ls);
    free(mp);
}

/* Each option, and all together: the same seed gives the same bits, another
 * seed other ones; the stream transforms (speed, EQ, gain) do not depend on
 * the block size (their state crosses blocks). */
static void test_aug_seeded(void **state)
{
    char *mp = write_manifest("seeded.tsv", "tone.wav\nnoise.wav\nphones.wav\t\tphones.phn\n");
    clapp_labelset ls;
    (void)state;
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    for (int opt = 0; opt < 6; opt++) {
        for (int mode = 0; mode < 2; mode++) {
            clapp_source_params sp;
            tu_log log = {0};
            run_out a, b, c;
            audio_defaults(&sp);
            sp.mode = mode ? CLAPP_SOURCE_WINDOW : CLAPP_SOURCE_STREAM;
            sp.label_rate = 100;
            sp.block = 3000;
            sp.seed = 7;
            if (opt == 0 || opt == 5)
                sp.aug.gain_db = 6;
            if (opt == 1 || opt == 5)
                sp.aug.snr = "5:20";
            if (opt == 2) {
                sp.aug.snr = "10";
                sp.aug.noise = CLAPP_NOISE_PINK;
            }
            if (opt == 3 || opt == 5)
                sp.aug.eq_db = 10;
            if (opt == 4 || opt == 5)
                sp.aug.speed = 1.2;
            run_source(&sp, mp, &ls, &log, &a);
            run_source(&sp, mp, &ls, &log, &b);
            assert_true(same_runs(&a, &b));
            sp.seed = 8;
            run_source(&sp, mp, &ls, &log, &c);
            assert_false(same_runs(&a, &c));
            run_free(&c);
            if (mode == 0 && opt != 1 && opt != 2 && opt != 5) {
                sp.seed = 7;
                sp.block = 1000;
                sp.lanes = 3;
                run_source(&sp, mp, &ls, &log, &c);
                assert_true(same_runs(&a, &c));
                run_free(&c);
            }
            assert_int_equal(log.n_errors, 0);
            assert_int_equal(a.failed, 0);
            run_free(&a);
            run_free(&b);
            tu_log_free(&log);
        }
    }
    clapp_labelset_free(&ls);
    free(mp);
}

/* The gain of each sequence is its draw, in [-G, G] dB, covering the range. */
static void test_aug_gain(void **state)
{
    char *mp = write_manifest("gain.tsv", "noise.wav\n");
    clapp_source_params sp, off;
    tu_log log = {0};
    run_out r, ref;
    double lo = 1e9, hi = -1e9;
    (void)state;
    audio_defaults(&off);
    run_source(&off, mp, NULL, &log, &ref);
    audio_defaults(&sp);
    sp.epochs = 60;
    sp.aug.gain_db = 6;
    run_source(&sp, mp, NULL, &log, &r);
    for (int64_t id = 0; id < 60; id++) {
        const seq_out *s = &r.seq[id];
        clapp_aug_draw d;
        double g = 0, e = 0;
        draw_for(&sp, id, &d);
        assert_int_equal(s->n, ref.seq[0].n);
        for (int64_t i = 0; i < s->n; i++) {
            g += (double)s->x[i] * ref.seq[0].x[i];
            e += (double)ref.seq[0].x[i] * ref.seq[0].x[i];
        }
        g /= e;
        assert_true(fabs(20 * log10(g) - d.gain_db) < 1e-4);
        for (int64_t i = 0; i < s->n; i++)
            assert_true(fabsf(s->x[i] - (float)d.gain * ref.seq[0].x[i]) <= 1e-6f);
        assert_true(d.gain_db >= -6 && d.gain_db <= 6);
        lo = fmin(lo, d.gain_db);
        hi = fmax(hi, d.gain_db);
    }
    assert_true(lo < -4.5 && hi > 4.5);
    run_free(&r);
    run_free(&ref);
    tu_log_free(&log);
    free(mp);
}

/* Realised SNR (clean power over the power of what was added) against the
 * drawn SNR: exact per window, and per file when it fits a block; in a
 * stream of several blocks each block's noise follows the running power. */
static void test_aug_snr(void **state)
{
    char *mp = write_manifest("snr.tsv", "tone.wav\nnoise.wav\n");
    (void)state;
    for (int color = 0; color < 3; color++) {
        for (int mode = 0; mode < 3; mode++) {
            clapp_source_params sp, off;
            tu_log log = {0};
            run_out r, ref;
            double lo = 1e9, hi = -1e9;
            int n_pink = 0;
            const int epochs = 10;
            audio_defaults(&sp);
            sp.epochs = epochs;
            sp.seed = 3;
            /* mode 0: windows; 1: a block holds a whole file; 2: several blocks */
            sp.mode = mode == 0 ? CLAPP_SOURCE_WINDOW : CLAPP_SOURCE_STREAM;
            sp.block = mode == 0 ? 8000 : mode == 1 ? 32768 : 4000;
            off = sp;
            sp.aug.snr = "0:20";
            sp.aug.noise = (clapp_noise_color)color;
            run_source(&off, mp, NULL, &log, &ref);
            run_source(&sp, mp, NULL, &log, &r);
            for (int64_t id = 0; id < 2 * epochs; id++) {
                const seq_out *s = &r.seq[id], *c = &ref.seq[id];
                clapp_aug_draw d;
                double ps, pn, r1 = 0, realised;
                float *noise;
                draw_for(&sp, id, &d);
                assert_true(d.noise);
                assert_true(d.snr_db >= 0 && d.snr_db <= 20);
                assert_int_equal(s->n, c->n);
                assert_int_equal(s->first_pts, c->first_pts);   /* windows do not move */
                noise = malloc((size_t)s->n * sizeof(float));
                assert_non_null(noise);
                for (int64_t i = 0; i < s->n; i++)
                    noise[i] = s->x[i] - c->x[i];
                ps = power(c->x, c->n);
                pn = power(noise, s->n);
                realised = 10 * log10(ps / pn);
                if (mode < 2) {
                    assert_true(fabs(realised - d.snr_db) < 0.01);
                } else {
                    /* Stationary signals: every block near the draw, the file closer. */
                    int64_t at = 0;
                    assert_true(fabs(realised - d.snr_db) < 0.3);
                    for (int k = 0; k < s->blocks; k++) {
                        int64_t n = s->block_n[k];
                        double rb = 10 * log10(power(c->x + at, n) / power(noise + at, n));
                        assert_true(fabs(rb - d.snr_db) < 1.0);
                        at += n;
                    }
                }
                /* The colour: pink noise is strongly correlated step to step. */
                for (int64_t i = 1; i < s->n; i++)
                    r1 += (double)noise[i] * noise[i - 1];
                r1 /= pn * (double)(s->n - 1);
                if (d.pink)
                    assert_true(r1 > 0.5);
                else
                    assert_true(fabs(r1) < 0.05);
                assert_int_equal(d.pink, color == 1 ? 1 : color == 0 ? 0 : d.pink);
                n_pink += d.pink;
                lo = fmin(lo, d.snr_db);
                hi = fmax(hi, d.snr_db);
                free(noise);
            }
            assert_true(lo < 5 && hi > 15);
            if (color == 2)
                assert_true(n_pink > 0 && n_pink < 2 * epochs);
            run_free(&r);
            run_free(&ref);
            tu_log_free(&log);
        }
    }
    free(mp);
}

/* |H(e^jw)| of a biquad. */
static double biquad_mag(const clapp_biquad *q, double w)
{
    double c1 = cos(w), s1 = sin(w), c2 = cos(2 * w), s2 = sin(2 * w);
    double nr = q->b0 + q->b1 * c1 + q->b2 * c2, ni = -(q->b1 * s1 + q->b2 * s2);
    double dr = 1 + q->a1 * c1 + q->a2 * c2, di = -(q->a1 * s1 + q->a2 * s2);
    return sqrt((nr * nr + ni * ni) / (dr * dr + di * di));
}

/* Amplitude of the sine at f in x (least squares on sin and cos). */
static double sine_amplitude(const float *x, int64_t n, double f)
{
    double ss = 0, cc = 0, sc = 0, xs = 0, xc = 0, det, a, b;
    for (int64_t i = 0; i < n; i++) {
        double s = sin(2 * M_PI * f * (double)i / RATE), c = cos(2 * M_PI * f * (double)i / RATE);
        ss += s * s;
        cc += c * c;
        sc += s * c;
        xs += x[i] * s;
        xc += x[i] * c;
    }
    det = ss * cc - sc * sc;
    a = (xs * cc - xc * sc) / det;
    b = (xc * ss - xs * sc) / det;
    return sqrt(a * a + b * b);
}

/* The designed biquads have the cookbook's defining gains, and a sine through
 * the source comes out scaled by the cascade's response at its frequency. */
static void test_aug_eq(void **state)
{
    static const double freqs[] = {150, 1000, 4000};
    char *mp = write_manifest("eq.tsv", "sine0.wav\nsine1.wav\nsine2.wav\n");
    clapp_source_params sp, off;
    tu_log log = {0};
    run_out r, ref;
    int seen[4] = {0}, types[3] = {0};
    const int epochs = 6;
    (void)state;
    audio_defaults(&sp);
    sp.epochs = epochs;
    sp.block = 4096;
    off = sp;
    sp.aug.eq_db = 12;
    run_source(&off, mp, NULL, &log, &ref);
    run_source(&sp, mp, NULL, &log, &r);
    for (int64_t id = 0; id < 3 * epochs; id++) {
        const seq_out *s = &r.seq[id], *c = &ref.seq[id];
        const double f = freqs[id % 3];
        clapp_aug_draw d;
        double want = 1, got;
        draw_for(&sp, id, &d);
        assert_true(d.n_eq >= 1 && d.n_eq <= 3);
        seen[d.n_eq]++;
        for (int k = 0; k < d.n_eq; k++) {
            const clapp_biquad *q = &d.eq[k];
            const double lin = pow(10, d.eq_gain_db[k] / 20);
            const double w0 = 2 * M_PI * d.eq_freq[k] / RATE;
            types[d.eq_type[k]]++;
            assert_true(d.eq_gain_db[k] >= -12 && d.eq_gain_db[k] <= 12);
            assert_true(d.eq_freq[k] >= 50 && d.eq_freq[k] <= 0.4 * RATE);
            /* Stable: both poles inside the unit circle. */
            assert_true(fabs(q->a2) < 1 && fabs(q->a1) < 1 + q->a2);
            if (d.eq_type[k] == CLAPP_EQ_PEAK)
                assert_true(fabs(biquad_mag(q, w0) / lin - 1) < 1e-9);
            else if (d.eq_type[k] == CLAPP_EQ_LOW_SHELF)
                assert_true(fabs(biquad_mag(q, 0) / lin - 1) < 1e-9);
            else
                assert_true(fabs(biquad_mag(q, M_PI) / lin - 1) < 1e-9);
            want *= biquad_mag(q, 2 * M_PI * f / RATE);
        }
        /* Steady state: the last second. */
        assert_int_equal(s->n, c->n);
        got = sine_amplitude(s->x + s->n - RATE, RATE, f) /
              sine_amplitude(c->x + c->n - RATE, RATE, f);
        if (fabs(got / want - 1) > 1e-3)
            fail_msg("seq %lld at %.0f Hz: gain %.6f, the biquads say %.6f", (long long)id, f,
                     got, want);
    }
    assert_true(seen[1] && seen[2] && seen[3]);
    assert_true(types[0] && types[1] && types[2]);
    assert_int_equal(log.n_errors, 0);
    run_free(&r);
    run_free(&ref);
    tu_log_free(&log);
    free(mp);
}

/* Goertzel power of x at f. */
static double tone_power(const float *x, int64_t n, double f)
{
    double w = 2 * M_PI * f / RATE, k = 2 * cos(w), s1 = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double s0 = x[i] + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    return s1 * s1 + s2 * s2 - k * s1 * s2;
}

/* The strongest frequency of x in 100..6000 Hz: a coarse scan, then a fine one. */
static double dominant_freq(const float *x, int64_t n)
{
    double best = 0, best_p = -1;
    for (double f = 100; f <= 6000; f += 10) {
        double p = tone_power(x, n, f);
        if (p > best_p) {
            best_p = p;
            best = f;
        }
    }
    for (double f = best - 10; f <= best + 10; f += 0.5) {
        double p = tone_power(x, n, f);
        if (p > best_p) {
            best_p = p;
            best = f;
        }
    }
    return best;
}

/* Each run of one label in the sequence's labels holds that phone's tone,
 * at f times its frequency; returns the number of runs checked. */
static int check_label_runs(const seq_out *s, int64_t pts, const clapp_labelset *ls, double f,
                            int min_frames)
{
    const int64_t hop = RATE / 100;
    int checked = 0;
    int64_t first_frame = pts / hop;   /* label index 0 of s->lab is this frame */
    for (int64_t i = 0; i < s->n_lab;) {
        int64_t j = i;
        int tone = -1;
        while (j < s->n_lab && s->lab[j] == s->lab[i])
            j++;
        for (int k = 0; k < 5; k++)
            if (clapp_labelset_find(ls, g_phones[k]) == s->lab[i])
                tone = k;
        if (tone >= 0 && j - i >= min_frames) {
            /* The run's samples, less two frames at each end (the boundary
             * lies somewhere inside the frame at the run's edge). */
            int64_t a = (first_frame + i + 2) * hop - pts, b = (first_frame + j - 2) * hop - pts;
            double want = g_tones[tone] * f, got;
            if (a < 0)
                a = 0;
            if (b > s->n)
                b = s->n;
            assert_true(b - a >= 4 * hop);
            got = dominant_freq(s->x + a, b - a);
            if (fabs(got - want) > 0.01 * want + 5)
                fail_msg("label %s (frames %lld..%lld): dominant %.1f Hz, want %.1f (%.0f x %.4f)",
                         g_phones[tone], (long long)i, (long long)j, got, want, g_tones[tone],
                         f);
            checked++;
        }
        i = j;
    }
    return checked;
}

/* Speed perturbation: length scales by 1/f, labels stay on their tones (now
 * at f times their pitch), in stream and window mode. */
static void test_aug_speed(void **state)
{
    char *mp = write_manifest("speed.tsv", "phones.wav\t\tphones.phn\n");
    clapp_labelset ls;
    double lo = 10, hi = 0;
    (void)state;
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    for (int mode = 0; mode < 2; mode++) {
        clapp_source_params sp;
        tu_log log = {0};
        run_out r;
        const int epochs = 6;
        audio_defaults(&sp);
        sp.mode = mode ? CLAPP_SOURCE_WINDOW : CLAPP_SOURCE_STREAM;
        sp.block = mode ? 8000 : 3000;
        sp.lanes = 2;
        sp.epochs = epochs;
        sp.label_rate = 100;
        sp.aug.speed = 1.3;
        run_source(&sp, mp, &ls, &log, &r);
        assert_int_equal(r.failed, 0);
        assert_int_equal(log.n_errors, 0);   /* labels end with the audio at every speed */
        assert_int_equal(r.done, epochs);
        for (int64_t id = 0; id < epochs; id++) {
            const seq_out *s = &r.seq[id];
            clapp_aug_draw d;
            int64_t n_out;
            draw_for(&sp, id, &d);
            assert_true(d.speed >= 1 / 1.3 - 1e-12 && d.speed <= 1.3 + 1e-12);
            lo = fmin(lo, d.speed);
            hi = fmax(hi, d.speed);
            n_out = clapp_aug_out_len(32000, d.speed);
            assert_true(fabs((double)n_out - 32000 / d.speed) <= 1);
            if (mode == 0) {
                int runs;
                assert_int_equal(s->n, n_out);
                assert_int_equal(s->n_lab, clapp_label_frame_count(n_out, 100, RATE));
                runs = check_label_runs(s, 0, &ls, d.speed, 6);
                assert_int_equal(runs, 5);
                /* The boundaries moved with the speed: phone k starts at
                 * k * SEG / f output samples. */
                for (int k = 1; k < 5; k++) {
                    int64_t frame = (int64_t)((double)k * SEG / d.speed / (RATE / 100));
                    assert_int_equal(s->lab[frame - 1], clapp_labelset_find(&ls, g_phones[k - 1]));
                    assert_int_equal(s->lab[frame + 1], clapp_labelset_find(&ls, g_phones[k]));
                }
            } else {
                /* A window of the perturbed sequence, inside it. */
                assert_int_equal(s->n, sp.block);
                assert_true(s->first_pts >= sp.window_align);
                assert_true(s->first_pts + sp.block <= n_out);
                assert_true(check_label_runs(s, s->first_pts, &ls, d.speed, 10) >= 1);
            }
        }
        run_free(&r);
        tu_log_free(&log);
    }
    assert_true(lo < 0.9 && hi > 1.1);
    clapp_labelset_free(&ls);
    free(mp);
}

/* Bad values and video sources are refused at create, naming the option. */
static void test_aug_refused(void **state)
{
    static const struct {
        const char *snr;
        double      gain, eq, speed;
        const char *msg;
    } bad[] = {
        {"abc", 0, 0, 1, "aug_snr=abc: expected LO:HI"},
        {"20:5", 0, 0, 1, "aug_snr=20:5: LO must not exceed HI"},
        {"5:x", 0, 0, 1, "aug_snr=5:x"},
        {NULL, -1, 0, 1, "aug_gain_db=-1"},
        {NULL, 0, 50, 1, "aug_eq_db=50"},
        {NULL, 0, 0, 0.5, "aug_speed=0.5"},
    };
    char *mp = write_manifest("bad.tsv", "tone.wav\n");
    char err[256];
    clapp_manifest m;
    clapp_host host;
    tu_log log = {0};
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(clapp_manifest_load(&m, mp, err, sizeof err), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clapp_source_params sp;
        clapp_source *src = NULL;
        audio_defaults(&sp);
        sp.aug.snr = bad[i].snr;
        sp.aug.gain_db = bad[i].gain;
        sp.aug.eq_db = bad[i].eq;
        sp.aug.speed = bad[i].speed;
        tu_log_clear(&log);
        assert_int_equal(clapp_source_create(&src, &sp, &m, NULL, &host), CLAPP_E_INVAL);
        assert_null(src);
        if (tu_log_count(&log, bad[i].msg) != 1)
            fail_msg("want '%s' in the log:\n%s", bad[i].msg, log.text ? log.text : "");
    }
    for (int opt = 0; opt < 4; opt++) {
        clapp_source_params sp;
        clapp_source *src = NULL;
        audio_defaults(&sp);
        sp.decode.kind = CLAPP_MEDIA_VIDEO;
        sp.decode.channels = 1;
        sp.aug.gain_db = opt == 0 ? 3 : 0;
        sp.aug.snr = opt == 1 ? "10:20" : "";
        sp.aug.eq_db = opt == 2 ? 3 : 0;
        sp.aug.speed = opt == 3 ? 1.1 : 1;
        tu_log_clear(&log);
        assert_int_equal(clapp_source_create(&src, &sp, &m, NULL, &host), CLAPP_E_INVAL);
        assert_int_equal(tu_log_count(&log, "are audio-only"), 1);
    }
    clapp_manifest_free(&m);
    tu_log_free(&log);
    free(mp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aug_off_identical),
        cmocka_unit_test(test_aug_seeded),
        cmocka_unit_test(test_aug_gain),
        cmocka_unit_test(test_aug_snr),
        cmocka_unit_test(test_aug_eq),
        cmocka_unit_test(test_aug_speed),
        cmocka_unit_test(test_aug_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
