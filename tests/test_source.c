/* The source element: block-size invariance, bad inputs, window mode,
 * frame labels and video blocks, against the decoder run on whole files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "media/decode.h"
#include "media/manifest.h"
#include "media/source.h"

/* ------------------------------------------------------------------------ */
/* Media made once for the whole group.                                      */

typedef struct media {
    const char *name;
    const char *lavfi;     /* ffmpeg -f lavfi source */
    int64_t     samples;   /* exact length at 16 kHz */
} media;

/* Lengths chosen around the block sizes used below: shorter than a block,
 * exact multiples of 4096 and of 20480, and ragged. */
static const media g_audio[] = {
    {"a.wav", "sine=frequency=440:sample_rate=16000", 8000},
    {"sub/b.wav", "anoisesrc=sample_rate=16000:seed=7:amplitude=0.3", 19680},
    {"c.wav", "sine=frequency=1000:sample_rate=16000", 800},
    {"d.wav", "anoisesrc=sample_rate=16000:seed=3:color=pink:amplitude=0.5", 20480},
    {"e.wav", "sine=frequency=220:sample_rate=16000", 4096},
};
#define N_AUDIO ((int)(sizeof g_audio / sizeof g_audio[0]))

typedef struct group {
    char  *dir;
    float *ref[N_AUDIO];   /* whole-file decodes */
    int64_t ref_n[N_AUDIO];
} group;

static group g;

static clapp_decode_params audio_params(void)
{
    clapp_decode_params d;
    memset(&d, 0, sizeof d);
    d.kind = CLAPP_MEDIA_AUDIO;
    d.backend = CLAPP_DECODE_AUTO;
    d.rate = 16000;
    d.channels = 1;
    return d;
}

/* Decode a whole file at once with the decoder (the reference). */
static float *decode_all(const char *path, const clapp_decode_params *dp, int64_t step_floats,
                         int64_t *n_steps)
{
    char err[512] = "";
    clapp_decoder *dec = NULL;
    int64_t cap = step_floats > 1 ? 16 : 1 << 16, n = 0, r;
    float *buf = malloc((size_t)(cap * step_floats) * sizeof(float));
    assert_non_null(buf);
    if (clapp_decoder_open(&dec, path, dp, err, sizeof err) < 0)
        fail_msg("reference decode of %s: %s", path, err);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, (size_t)(cap * step_floats) * sizeof(float));
            assert_non_null(buf);
        }
        r = clapp_decoder_read(dec, buf + n * step_floats, cap - n, err, sizeof err);
        if (r < 0)
            fail_msg("reference decode of %s: %s", path, err);
        if (r == 0)
            break;
        n += r;
    }
    clapp_decoder_close(dec);
    *n_steps = n;
    return buf;
}

static int group_setup(void **state)
{
    (void)state;
    memset(&g, 0, sizeof g);
    g.dir = tu_tmpdir("source");
    assert_non_null(g.dir);
    assert_int_equal(tu_run("mkdir -p '%s/sub'", g.dir), 0);
    for (int i = 0; i < N_AUDIO; i++) {
        clapp_decode_params dp = audio_params();
        char *p = tu_path(g.dir, g_audio[i].name);
        assert_int_equal(tu_run("ffmpeg -nostdin -y -v error -f lavfi -i '%s' -af "
                                "atrim=end_sample=%lld -ac 1 -c:a pcm_s16le '%s'",
                                g_audio[i].lavfi, (long long)g_audio[i].samples, p), 0);
        g.ref[i] = decode_all(p, &dp, 1, &g.ref_n[i]);
        assert_int_equal(g.ref_n[i], g_audio[i].samples);
        free(p);
    }
    /* A 2 s mp3, its first half (the header still announces 2 s), and a copy
     * with 600 bytes of garbage over its middle. */
    assert_int_equal(tu_run("cd '%s' && ffmpeg -nostdin -y -v error -f lavfi -i "
                            "sine=sample_rate=16000 -af atrim=end_sample=32000 -c:a libmp3lame "
                            "full.mp3 && head -c $(( $(stat -c %%s full.mp3) / 2 )) full.mp3 > "
                            "half.mp3 && cp full.mp3 damaged.mp3 && yes 'garbage 0123456789' | "
                            "head -c 600 | dd of=damaged.mp3 bs=1 seek=2000 conv=notrunc", g.dir),
                     0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_AUDIO; i++)
        free(g.ref[i]);
    tu_rmtree(g.dir);
    free(g.dir);
    return 0;
}

static char *write_manifest(const char *name, const char *text)
{
    char *p = tu_path(g.dir, name);
    assert_int_equal(tu_write_text(p, text), 0);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Collecting what a source delivers, per sequence.                          */

typedef struct seq_out {
    float   *x;          /* concatenated valid steps */
    int64_t  n, cap;     /* in steps */
    int32_t *lab;        /* concatenated labels */
    int64_t  n_lab, cap_lab;
    int      blocks, starts, ends, ended, failed;   /* failed: SEQ_FAILED seen */
    int64_t  first_pts;
    int32_t  class_label;
    char     name[256];
} seq_out;

typedef struct run_out {
    seq_out *seq;        /* [max_seq] by seq_id */
    int64_t  max_seq;
    int64_t  blocks;
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

/* Run a source over a manifest to the end, checking the per-block
 * invariants on the way: each lane carries at most one sequence per block,
 * SEQ_START exactly on its first block, SEQ_END exactly on its last, pts
 * continuing where the previous block stopped, zeros past len, labels
 * continuing at label_pts. video_hw > 0: blocks are [B,C,T,H,W] and the
 * collected steps are frames of C*H*W (transposed back). */
static void run_source(const clapp_source_params *sp, const char *manifest_path,
                       clapp_labelset *labels, tu_log *log, run_out *out)
{
    char err[512] = "";
    clapp_manifest m;
    clapp_host host;
    clapp_source *src = NULL;
    clapp_stream_info info;
    const clapp_block *blk;
    const int video = sp->decode.kind == CLAPP_MEDIA_VIDEO;
    const int64_t C = video ? sp->decode.channels : 1;
    const int64_t hw = video ? (int64_t)sp->decode.width * sp->decode.height : 1;
    const int64_t F = C * hw, T = sp->block;
    int rc;

    memset(out, 0, sizeof *out);
    tu_host_init(&host, log);
    assert_int_equal(clapp_manifest_load(&m, manifest_path, err, sizeof err), 0);
    out->max_seq = (int64_t)m.n * sp->epochs;
    out->seq = calloc((size_t)out->max_seq, sizeof *out->seq);
    assert_int_equal(clapp_source_create(&src, sp, &m, labels, &host), 0);
    clapp_source_info(src, &info);
    assert_int_equal(info.ndim, video ? 5 : 3);
    assert_int_equal(info.shape[0], sp->lanes);
    assert_int_equal(info.shape[1], C);
    assert_int_equal(info.shape[2], T);
    assert_int_equal(clapp_source_start(src), 0);
    while ((rc = clapp_source_next(src, &blk)) > 0) {
        out->blocks++;
        assert_int_equal(blk->lanes, sp->lanes);
        assert_int_equal(blk->x.ndim, info.ndim);
        for (int d = 0; d < info.ndim; d++)
            assert_int_equal(blk->x.shape[d], info.shape[d]);
        for (int32_t b = 0; b < blk->lanes; b++) {
            const clapp_lane *L = &blk->lane[b];
            const float *x = blk->x.data + (size_t)b * (size_t)(T * F);
            seq_out *s;
            assert_true(L->len >= 0 && L->len <= T);
            /* Steps past len are zero. */
            for (int64_t c = 0; c < C; c++)
                for (int64_t t = L->len; t < T; t++)
                    for (int64_t k = 0; k < hw; k++)
                        if (x[(c * T + t) * hw + k] != 0.0f)
                            fail_msg("lane %d step %lld past len %d is not zero", b, (long long)t,
                                     L->len);
            if (L->seq_id < 0) {
                assert_int_equal(L->len, 0);
                assert_int_equal(L->flags, 0);
                continue;
            }
            assert_true(L->seq_id < out->max_seq);
            s = &out->seq[L->seq_id];
            assert_false(s->ended);
            if (s->blocks == 0) {
                assert_true(L->flags & CLAPP_LANE_SEQ_START);
                s->first_pts = L->pts;
                s->class_label = L->class_label;
                snprintf(s->name, sizeof s->name, "%s", L->seq_name);
            } else {
                assert_false(L->flags & CLAPP_LANE_SEQ_START);
                assert_int_equal(L->pts, s->first_pts + s->n);   /* no gap, no overlap */
                assert_string_equal(L->seq_name, s->name);
                assert_int_equal(L->class_label, s->class_label);
            }
            if (!(L->flags & CLAPP_LANE_SEQ_END))
                assert_int_equal(L->len, T);   /* only a sequence's last block is short */
            s->blocks++;
            s->starts += !!(L->flags & CLAPP_LANE_SEQ_START);
            s->ends += !!(L->flags & CLAPP_LANE_SEQ_END);
            s->ended = !!(L->flags & CLAPP_LANE_SEQ_END);
            s->failed |= !!(L->flags & CLAPP_LANE_SEQ_FAILED);
            if (s->n + L->len > s->cap) {
                s->cap = (s->n + L->len) * 2 + 16;
                s->x = realloc(s->x, (size_t)(s->cap * F) * sizeof(float));
                assert_non_null(s->x);
            }
            for (int64_t t = 0; t < L->len; t++)
                for (int64_t c = 0; c < C; c++)
                    memcpy(s->x + (s->n + t) * F + c * hw, x + (c * T + t) * hw,
                           (size_t)hw * sizeof(float));
            s->n += L->len;
            if (L->labels) {
                /* The frames covering [pts, pts+len) at R = rate steps/s:
                 * floor(pts*lr/R) .. ceil((pts+len)*lr/R) - 1 (integer rates). */
                const int64_t lr = (int64_t)sp->label_rate, R = sp->decode.rate;
                const int64_t end = L->label_pts + L->n_labels;
                assert_int_equal(L->label_pts, L->pts * lr / R);
                assert_int_equal(end, ((L->pts + L->len) * lr + R - 1) / R);
                /* Continues the sequence: at most the boundary frame repeats,
                 * with the same label. */
                assert_true(L->label_pts == s->n_lab || L->label_pts == s->n_lab - 1);
                if (L->label_pts < s->n_lab && L->n_labels > 0)
                    assert_int_equal(L->labels[0], s->lab[L->label_pts]);
                if (end > s->cap_lab) {
                    s->cap_lab = end * 2 + 16;
                    s->lab = realloc(s->lab, (size_t)s->cap_lab * sizeof(int32_t));
                    assert_non_null(s->lab);
                }
                if (end > s->n_lab) {
                    memcpy(s->lab + L->label_pts, L->labels,
                           (size_t)L->n_labels * sizeof(int32_t));
                    s->n_lab = end;
                }
            } else {
                assert_int_equal(L->n_labels, 0);
            }
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(clapp_source_next(src, &blk), 0);   /* stays at the end */
    out->failed = clapp_source_failed_count(src);
    out->done = clapp_source_done_count(src);
    clapp_source_destroy(src);
    clapp_manifest_free(&m);
}

/* ------------------------------------------------------------------------ */

static void test_source_block_size_invariance(void **state)
{
    static const int64_t blocks[] = {1000, 4096, 20480};
    static const int32_t lanes[] = {1, 2, 3};
    /* Manifest order != media order, and one class label column. */
    char *mp = write_manifest("all.tsv", "sub/b.wav\tnoise\n"
                                         "a.wav\ttone\n"
                                         "# comment\n"
                                         "c.wav\ttone\n"
                                         "d.wav\tnoise\n"
                                         "e.wav\n");
    static const int media_of[] = {1, 0, 2, 3, 4};
    static const char *const keys[] = {"sub/b", "a", "c", "d", "e"};
    (void)state;
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        for (size_t li = 0; li < sizeof lanes / sizeof lanes[0]; li++) {
            clapp_source_params sp;
            clapp_labelset classes = {0};
            tu_log log = {0};
            run_out r;
            int64_t total = 0;
            clapp_source_default_params(&sp);
            sp.decode = audio_params();
            sp.block = blocks[bi];
            sp.lanes = lanes[li];
            sp.queue = 1 + (int32_t)li;   /* 1..3 blocks ahead */
            sp.label_rate = 0;
            sp.classes = &classes;
            run_source(&sp, mp, NULL, &log, &r);
            assert_int_equal(r.failed, 0);
            assert_int_equal(r.done, N_AUDIO);
            assert_int_equal(log.n_errors, 0);
            for (int i = 0; i < N_AUDIO; i++) {
                const seq_out *s = &r.seq[i];
                int k = media_of[i];
                int64_t want_blocks = (g.ref_n[k] + sp.block - 1) / sp.block;
                assert_int_equal(s->n, g.ref_n[k]);
                assert_int_equal(s->blocks, want_blocks);
                assert_int_equal(s->starts, 1);
                assert_int_equal(s->ends, 1);
                assert_int_equal(s->first_pts, 0);
                assert_string_equal(s->name, keys[i]);
                assert_true(tu_max_abs_diff(s->x, g.ref[k], (size_t)s->n) == 0.0);
                total += s->n;
            }
            /* Class ids in order of first appearance; e has none. */
            assert_int_equal(r.seq[0].class_label, 0);
            assert_int_equal(r.seq[1].class_label, 1);
            assert_int_equal(r.seq[2].class_label, 1);
            assert_int_equal(r.seq[3].class_label, 0);
            assert_int_equal(r.seq[4].class_label, -1);
            assert_int_equal(classes.n, 2);
            /* Lanes run in lockstep: never more blocks than a perfectly
             * packed schedule of whole files would need plus one per lane. */
            assert_true(r.blocks * sp.lanes >= (total + sp.block - 1) / sp.block);
            run_free(&r);
            tu_log_free(&log);
            clapp_labelset_free(&classes);
        }
    }
    free(mp);
}

static void test_source_bad_inputs(void **state)
{
    clapp_source_params sp;
    tu_log log = {0};
    run_out r;
    char *p;
    /* Files that cannot be opened at all, then two that decode in part: an
     * mp3 cut in half (its header announces 2 s) and one with 600 bytes of
     * garbage over its middle (the decoder skips damaged packets). */
    static const char *const bad[] = {"missing.wav", "empty.wav", "text.wav", "trunc.wav",
                                      "corrupt.wav", "half.mp3", "damaged.mp3"};
    char *mp = write_manifest("bad.tsv", "a.wav\n"
                                         "missing.wav\n"
                                         "empty.wav\n"
                                         "sub/b.wav\n"
                                         "text.wav\n"
                                         "trunc.wav\n"
                                         "half.mp3\n"
                                         "e.wav\n"
                                         "corrupt.wav\n"
                                         "damaged.mp3\n"
                                         "d.wav\n");
    static const int good_seq[] = {0, 3, 7, 10}, good_media[] = {0, 1, 4, 3};
    (void)state;
    p = tu_path(g.dir, "empty.wav");
    assert_int_equal(tu_write_text(p, ""), 0);
    free(p);
    p = tu_path(g.dir, "text.wav");
    assert_int_equal(tu_write_text(p, "this is not audio\njust some text\n"), 0);
    free(p);
    /* The header of a.wav cut in the middle. */
    assert_int_equal(tu_run("head -c 30 '%s/a.wav' > '%s/trunc.wav'", g.dir, g.dir), 0);
    /* A RIFF/WAVE signature followed by garbage. */
    assert_int_equal(tu_run("(printf 'RIFF\\044\\000\\001\\000WAVEfmt '; yes 'garbage 0123456789' | "
                            "head -c 4000) > '%s/corrupt.wav'", g.dir), 0);

    clapp_source_default_params(&sp);
    sp.decode = audio_params();
    sp.block = 4096;
    sp.lanes = 2;
    sp.queue = 2;
    run_source(&sp, mp, NULL, &log, &r);
    for (size_t i = 0; i < sizeof good_seq / sizeof good_seq[0]; i++) {
        const seq_out *s = &r.seq[good_seq[i]];
        int k = good_media[i];
        assert_int_equal(s->n, g.ref_n[k]);
        assert_int_equal(s->starts, 1);
        assert_int_equal(s->ends, 1);
        assert_true(tu_max_abs_diff(s->x, g.ref[k], (size_t)s->n) == 0.0);
    }
    /* The damaged files gave what they had, as one closed sequence each:
     * half.mp3 about 1 s of its 2 s, damaged.mp3 most of its 2 s. */
    assert_int_equal(r.seq[6].starts, 1);
    assert_int_equal(r.seq[6].ends, 1);
    assert_true(r.seq[6].n > 12000 && r.seq[6].n < 20000);
    assert_int_equal(r.seq[9].starts, 1);
    assert_int_equal(r.seq[9].ends, 1);
    assert_true(r.seq[9].n > 20000 && r.seq[9].n < 32000);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = tu_path(g.dir, bad[i]);
        if (tu_log_count(&log, path) != 1)
            fail_msg("%s reported %d times; log:\n%s", bad[i], tu_log_count(&log, path),
                     log.text ? log.text : "");
        free(path);
    }
    /* Damage is a warning naming the file and what was lost; the files
     * count as done. */
    if (tu_log_count(&log, "half.mp3: truncated: ") != 1 || tu_log_count(&log, "s its header declares (") < 1 ||
        tu_log_count(&log, "damaged.mp3: damaged: ") != 1 || tu_log_count(&log, "packet(s) skipped, about ") != 1)
        fail_msg("log:\n%s", log.text ? log.text : "");
    assert_int_equal(log.n_warnings, 2);
    assert_int_equal(log.n_errors, 5);
    assert_int_equal(r.failed, 5);
    assert_int_equal(r.done, 6);
    assert_int_equal(r.seq[6].failed, 0);
    assert_int_equal(r.seq[9].failed, 0);
    run_free(&r);
    tu_log_free(&log);   /* run_source starts a new log */

    /* Over three epochs: the damage is said once, the files are used each time. */
    sp.epochs = 3;
    run_source(&sp, mp, NULL, &log, &r);
    assert_int_equal(log.n_warnings, 2);
    assert_int_equal(r.done, 18);
    run_free(&r);
    tu_log_free(&log);   /* run_source starts a new log */
    sp.epochs = 1;

    /* strict=true: the same damage fails the two files, flagged SEQ_FAILED. */
    sp.strict = 1;
    run_source(&sp, mp, NULL, &log, &r);
    assert_int_equal(tu_log_count(&log, "half.mp3: truncated: "), 1);
    assert_int_equal(tu_log_count(&log, "damaged.mp3: damaged: "), 1);
    assert_int_equal(tu_log_count(&log, "(strict: damage fails the file)"), 2);
    assert_int_equal(log.n_warnings, 0);
    assert_int_equal(log.n_errors, 7);
    assert_int_equal(r.failed, 7);
    assert_int_equal(r.done, 4);
    assert_int_equal(r.seq[6].failed, 1);
    assert_int_equal(r.seq[9].failed, 1);
    run_free(&r);
    tu_log_free(&log);
    free(mp);
}

static void test_source_window_mode(void **state)
{
    char *mp = write_manifest("win.tsv", "sub/b.wav\nd.wav\na.wav\nc.wav\n");
    static const int media_of[] = {1, 3, 0, 2};
    const int64_t T = 4096, A = 160;
    int64_t pts1[8], pts2[8];
    int differs = 0;
    (void)state;
    for (int run = 0; run < 3; run++) {
        clapp_source_params sp;
        tu_log log = {0};
        run_out r;
        clapp_source_default_params(&sp);
        sp.decode = audio_params();
        sp.block = T;
        sp.lanes = 2 + run;   /* windows do not depend on which lane takes a file */
        sp.mode = CLAPP_SOURCE_WINDOW;
        sp.window_align = A;
        sp.epochs = 2;
        sp.seed = run < 2 ? 42 : 43;
        run_source(&sp, mp, NULL, &log, &r);
        /* c.wav (800 samples) is skipped with one warning, in both epochs. */
        assert_int_equal(log.n_warnings, 1);
        assert_int_equal(tu_log_count(&log, "c.wav"), 1);
        assert_int_equal(r.failed, 0);
        assert_int_equal(r.done, 6);
        for (int64_t id = 0; id < 8; id++) {
            const seq_out *s = &r.seq[id];
            int k = media_of[id % 4];
            if (k == 2) {
                assert_int_equal(s->blocks, 0);
                continue;
            }
            /* One window per file and epoch, of T steps, in its own sequence. */
            assert_int_equal(s->blocks, 1);
            assert_int_equal(s->starts, 1);
            assert_int_equal(s->ends, 1);
            assert_int_equal(s->n, T);
            assert_int_equal(s->first_pts % A, 0);
            assert_true(s->first_pts >= A);
            assert_true(s->first_pts + T <= g.ref_n[k]);
            assert_true(tu_max_abs_diff(s->x, g.ref[k] + s->first_pts, (size_t)T) == 0.0);
            if (run == 0)
                pts1[id] = s->first_pts;
            else if (run == 1)
                assert_int_equal(s->first_pts, pts1[id]);   /* same seed, same windows */
            else
                differs += s->first_pts != pts1[id];
            pts2[id] = s->first_pts;
        }
        run_free(&r);
        tu_log_free(&log);
    }
    /* Another seed moves windows (b, d have ~100 starts, a has 24). */
    assert_true(differs >= 2);
    (void)pts2;
    free(mp);
}

/* half.mp3 announces 2 s but holds ~0.94 s: a window drawn from the header's
 * length can run off the end; the source then counts the real length and
 * draws again inside it. Over many seeds every window must be whole. */
static void test_source_window_short_estimate(void **state)
{
    char *mp = write_manifest("half.tsv", "half.mp3\n");
    char *path = tu_path(g.dir, "half.mp3");
    clapp_decode_params dp = audio_params();
    int64_t n_ref;
    float *ref = decode_all(path, &dp, 1, &n_ref);
    const int64_t T = 8000, A = 160;
    clapp_decoder *dec = NULL;
    char err[256];
    (void)state;
    assert_true(n_ref > 12000 && n_ref < 20000);
    /* The premise: the header announces about twice the real length, so
     * most of the starts drawn from it (up to 25280) leave the file. */
    assert_int_equal(clapp_decoder_open(&dec, path, &dp, err, sizeof err), 0);
    assert_true(clapp_decoder_duration_frames(dec) > 32000);
    clapp_decoder_close(dec);
    for (uint64_t seed = 1; seed <= 12; seed++) {
        clapp_source_params sp;
        tu_log log = {0};
        run_out r;
        clapp_source_default_params(&sp);
        sp.decode = dp;
        sp.block = T;
        sp.lanes = 1;
        sp.mode = CLAPP_SOURCE_WINDOW;
        sp.window_align = A;
        sp.seed = seed;
        run_source(&sp, mp, NULL, &log, &r);
        assert_int_equal(r.done, 1);
        assert_int_equal(r.failed, 0);
        assert_int_equal(r.seq[0].n, T);
        assert_int_equal(r.seq[0].first_pts % A, 0);
        assert_true(r.seq[0].first_pts >= A && r.seq[0].first_pts + T <= n_ref);
        assert_true(tu_max_abs_diff(r.seq[0].x, ref + r.seq[0].first_pts, (size_t)T) == 0.0);
        run_free(&r);
        tu_log_free(&log);
    }
    free(ref);
    free(path);
    free(mp);
}

/* An 8 kHz file decoded at 16 kHz: the .phn is in 8 kHz samples (the
 * original audio), labels still equal clapp_alignment_frames at 8 kHz. */
static void test_source_labels_native_rate(void **state)
{
    char err[512] = "";
    clapp_labelset ls = {0};   /* growable: phones added as met */
    clapp_alignment ali;
    clapp_source_params sp;
    tu_log log = {0};
    run_out r;
    char *phn = tu_path(g.dir, "n8.phn");
    char *mp;
    int32_t want[256];
    int64_t n_want;
    (void)state;
    assert_int_equal(tu_run("ffmpeg -nostdin -y -v error -f lavfi -i "
                            "sine=frequency=300:sample_rate=8000 -af atrim=end_sample=9850 -c:a "
                            "pcm_s16le '%s/n8.wav'", g.dir), 0);
    assert_int_equal(tu_write_text(phn, "0 1000 sil\n1000 4000 aa\n4500 9850 bb\n"), 0);
    mp = write_manifest("n8.tsv", "n8.wav\t\tn8.phn\n");
    clapp_source_default_params(&sp);
    sp.decode = audio_params();
    sp.block = 3000;
    sp.lanes = 1;
    sp.label_rate = 100;
    run_source(&sp, mp, &ls, &log, &r);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.seq[0].n, 19700);   /* resampled to 16 kHz */
    /* The growable set got "pau" (with sil, h#, _ as aliases) at create,
     * then the alignment's phones: pau 0, aa 1, bb 2. */
    assert_int_equal(ls.n, 3);
    assert_int_equal(clapp_labelset_find(&ls, "pau"), 0);
    assert_int_equal(clapp_labelset_find(&ls, "sil"), 0);
    assert_int_equal(clapp_labelset_find(&ls, "aa"), 1);
    assert_int_equal(clapp_labelset_find(&ls, "bb"), 2);
    assert_int_equal(clapp_alignment_load(&ali, phn, &ls, err, sizeof err), 0);
    n_want = clapp_alignment_frames(&ali, 8000, 9850, 100, 0, want, 256);
    assert_int_equal(n_want, 124);   /* ceil(9850 / 80) */
    assert_int_equal(r.seq[0].n_lab, n_want);
    for (int64_t i = 0; i < n_want; i++)
        assert_int_equal(r.seq[0].lab[i], want[i]);
    /* 80 input samples per frame: frames 12..49 are aa, 50..55 (centres
     * 4040..4440) the gap, 56..122 bb, 123 (centre 9880) past the labels. */
    for (int64_t i = 0; i < n_want; i++) {
        int32_t e = i < 12 ? 0 : i < 50 ? 1 : i < 56 ? 0 : i < 123 ? 2 : 0;
        assert_int_equal(r.seq[0].lab[i], e);
    }
    run_free(&r);
    tu_log_free(&log);
    clapp_alignment_free(&ali);
    clapp_labelset_free(&ls);
    free(phn);
    free(mp);
}

static void test_source_labels(void **state)
{
    char err[512] = "";
    clapp_labelset ls;
    clapp_alignment ali;
    /* b.wav is 19680 samples: phones with a gap, the last pau ending 80
     * samples (5 ms) past the audio, which is tolerated. */
    char *phn = tu_path(g.dir, "sub/b.phn");
    char *phn_late = tu_path(g.dir, "late.phn");
    char *phn_bad = tu_path(g.dir, "bad.phn");
    char *mp;
    int32_t want[256];
    int64_t n_want;
    static const int64_t blocks[] = {1000, 4096, 20480};
    (void)state;
    assert_int_equal(tu_write_text(phn, "0 2000 h#\n2000 5000 ah\n5300 9000 s\n9000 9000 l\n"
                                        "9000 15000 iy\n15000 19760 pau\n"), 0);
    assert_int_equal(tu_write_text(phn_late, "0 4000 sil\n4000 8800 ah\n"), 0);   /* 50 ms late */
    assert_int_equal(tu_write_text(phn_bad, "0 4000 pau\n4000 4096 qq\n"), 0);
    mp = write_manifest("labels.tsv", "sub/b.wav\t-\tsub/b.phn\n"
                                      "a.wav\t-\tlate.phn\n"
                                      "e.wav\t\tbad.phn\n"
                                      "d.wav\n"
                                      "sub/b.wav\t\tsub/b.phn\n");
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    assert_int_equal(clapp_alignment_load(&ali, phn, &ls, err, sizeof err), 0);
    n_want = clapp_alignment_frames(&ali, 16000, g.ref_n[1], 100, CLAPP_CMU41_PAU, want, 256);
    assert_int_equal(n_want, 123);   /* 19680 / 160 */
    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
        clapp_source_params sp;
        tu_log log = {0};
        run_out r;
        clapp_source_default_params(&sp);
        sp.decode = audio_params();
        sp.block = blocks[bi];
        sp.lanes = 2;
        sp.label_rate = 100;
        run_source(&sp, mp, &ls, &log, &r);
        for (int id = 0; id < 5; id += 4) {
            const seq_out *s = &r.seq[id];
            assert_int_equal(s->n, g.ref_n[1]);
            assert_int_equal(s->n_lab, n_want);
            for (int64_t i = 0; i < n_want; i++)
                assert_int_equal(s->lab[i], want[i]);
        }
        /* a.wav: audio delivered, then the late label is reported with its line. */
        assert_int_equal(r.seq[1].n, g.ref_n[0]);
        assert_int_equal(r.seq[1].ends, 1);
        assert_int_equal(tu_log_count(&log, "late.phn:2: phone 'ah' ends at 0.550 s, 50.0 ms past"),
                         1);
        /* e.wav: the unknown phone fails the file before any audio. */
        assert_int_equal(r.seq[2].blocks, 0);
        assert_int_equal(tu_log_count(&log, "bad.phn:2: unknown phone 'qq'"), 1);
        /* d.wav has no alignment: audio without labels. */
        assert_int_equal(r.seq[3].n, g.ref_n[3]);
        assert_int_equal(r.seq[3].n_lab, 0);
        assert_int_equal(r.failed, 2);
        assert_int_equal(r.done, 3);
        assert_int_equal(log.n_errors, 2);
        run_free(&r);
        tu_log_free(&log);
    }
    clapp_alignment_free(&ali);
    clapp_labelset_free(&ls);
    free(phn);
    free(phn_late);
    free(phn_bad);
    free(mp);
}

static void test_source_video(void **state)
{
    clapp_source_params sp;
    clapp_decode_params dp;
    tu_log log = {0};
    run_out r;
    char *mp;
    float *ref[2];
    int64_t ref_n[2];
    const int64_t F = 3 * 16 * 12;
    (void)state;
    assert_int_equal(tu_run("ffmpeg -nostdin -y -v error -f lavfi -i testsrc=size=40x30:rate=10 "
                            "-frames:v 15 -c:v ffv1 '%s/v1.mkv'", g.dir), 0);
    assert_int_equal(tu_run("ffmpeg -nostdin -y -v error -f lavfi -i "
                            "mandelbrot=size=32x32:rate=10 -frames:v 7 -c:v ffv1 '%s/v2.mkv'",
                            g.dir), 0);
    mp = write_manifest("video.tsv", "v1.mkv\tpattern\nv2.mkv\tfractal\n");
    memset(&dp, 0, sizeof dp);
    dp.kind = CLAPP_MEDIA_VIDEO;
    dp.width = 16;
    dp.height = 12;
    dp.fps = 10;
    dp.channels = 3;
    for (int i = 0; i < 2; i++) {
        char *p = tu_path(g.dir, i ? "v2.mkv" : "v1.mkv");
        ref[i] = decode_all(p, &dp, F, &ref_n[i]);
        free(p);
    }
    assert_int_equal(ref_n[0], 15);
    assert_int_equal(ref_n[1], 7);
    for (int lanes = 1; lanes <= 2; lanes++) {
        clapp_labelset classes = {0};
        clapp_source_default_params(&sp);
        sp.decode = dp;
        sp.block = 4;
        sp.lanes = lanes;
        sp.classes = &classes;
        run_source(&sp, mp, NULL, &log, &r);
        assert_int_equal(r.failed, 0);
        assert_int_equal(r.done, 2);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(r.seq[i].n, ref_n[i]);
            assert_int_equal(r.seq[i].blocks, (ref_n[i] + 3) / 4);
            assert_int_equal(r.seq[i].class_label, i);
            assert_true(tu_max_abs_diff(r.seq[i].x, ref[i], (size_t)(ref_n[i] * F)) == 0.0);
        }
        run_free(&r);
        clapp_labelset_free(&classes);
    }
    tu_log_free(&log);
    free(ref[0]);
    free(ref[1]);
    free(mp);
}

static void test_source_lifecycle(void **state)
{
    char err[512] = "";
    clapp_manifest m;
    clapp_labelset ls;
    clapp_source_params sp;
    clapp_source *src = NULL;
    clapp_host host;
    tu_log log = {0};
    const clapp_block *blk;
    char *mp = write_manifest("life.tsv", "d.wav\nsub/b.wav\tdog\n");
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(clapp_manifest_load(&m, mp, err, sizeof err), 0);
    clapp_source_default_params(&sp);
    sp.decode = audio_params();
    sp.block = 160;
    sp.lanes = 2;
    sp.queue = 2;

    /* Bad parameters. */
    sp.lanes = 0;
    assert_int_equal(clapp_source_create(&src, &sp, &m, NULL, &host), CLAPP_E_INVAL);
    assert_null(src);
    sp.lanes = 2;
    /* A frozen set refuses an unknown class label, naming the manifest line. */
    assert_int_equal(clapp_labelset_init_cmu41(&ls), 0);
    assert_int_equal(clapp_source_create(&src, &sp, &m, &ls, &host), CLAPP_E_FORMAT);
    assert_int_equal(tu_log_count(&log, "life.tsv:2: class label 'dog'"), 1);
    clapp_labelset_free(&ls);

    assert_int_equal(clapp_source_create(&src, &sp, &m, NULL, &host), 0);
    assert_int_equal(clapp_source_next(src, &blk), CLAPP_E_STATE);   /* before start */
    clapp_source_destroy(src);                                       /* never started */

    /* Destroy mid-stream, with the ring full and a block in our hands. */
    assert_int_equal(clapp_source_create(&src, &sp, &m, NULL, &host), 0);
    assert_int_equal(clapp_source_start(src), 0);
    assert_int_equal(clapp_source_start(src), CLAPP_E_STATE);
    assert_int_equal(clapp_source_next(src, &blk), 1);
    assert_int_equal(blk->lane[0].len, 160);
    assert_int_equal(clapp_source_next(src, &blk), 1);
    assert_int_equal(blk->lane[0].pts, 160);
    clapp_source_release(src);
    assert_int_equal(clapp_source_next(src, &blk), 1);
    assert_int_equal(blk->lane[1].pts, 320);
    clapp_source_destroy(src);
    clapp_source_destroy(NULL);
    clapp_manifest_free(&m);
    tu_log_free(&log);
    free(mp);
}

static void test_source_shuffle_epochs(void **state)
{
    char *mp = write_manifest("shuf.tsv", "a.wav\nsub/b.wav\nc.wav\nd.wav\ne.wav\n");
    int64_t order[2][10];
    (void)state;
    for (int run = 0; run < 2; run++) {
        clapp_source_params sp;
        tu_log log = {0};
        run_out r;
        clapp_manifest m;
        clapp_host host;
        clapp_source *src = NULL;
        const clapp_block *blk;
        char err[256];
        int n = 0;
        clapp_source_default_params(&sp);
        sp.decode = audio_params();
        sp.block = 1 << 15;   /* every file fits one block */
        sp.lanes = 1;
        sp.epochs = 2;
        sp.shuffle = 1;
        sp.seed = 5;
        run_source(&sp, mp, NULL, &log, &r);
        assert_int_equal(r.done, 10);
        for (int id = 0; id < 10; id++) {
            assert_int_equal(r.seq[id].n, g.ref_n[id % 5]);
            assert_true(tu_max_abs_diff(r.seq[id].x, g.ref[id % 5], (size_t)r.seq[id].n) == 0.0);
        }
        run_free(&r);
        /* The delivery order: each epoch a permutation, the same for the seed. */
        tu_host_init(&host, &log);
        assert_int_equal(clapp_manifest_load(&m, mp, err, sizeof err), 0);
        assert_int_equal(clapp_source_create(&src, &sp, &m, NULL, &host), 0);
        assert_int_equal(clapp_source_start(src), 0);
        while (clapp_source_next(src, &blk) > 0)
            order[run][n++] = blk->lane[0].seq_id;
        assert_int_equal(n, 10);
        clapp_source_destroy(src);
        clapp_manifest_free(&m);
        tu_log_free(&log);
    }
    {
        int identity = 1;
        for (int i = 0; i < 10; i++) {
            assert_int_equal(order[0][i], order[1][i]);
            assert_true(i < 5 ? order[0][i] < 5 : order[0][i] >= 5);
            identity &= order[0][i] == i;
        }
        assert_false(identity);
    }
    free(mp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_block_size_invariance),
        cmocka_unit_test(test_source_bad_inputs),
        cmocka_unit_test(test_source_window_mode),
        cmocka_unit_test(test_source_window_short_estimate),
        cmocka_unit_test(test_source_labels),
        cmocka_unit_test(test_source_labels_native_rate),
        cmocka_unit_test(test_source_video),
        cmocka_unit_test(test_source_lifecycle),
        cmocka_unit_test(test_source_shuffle_epochs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
