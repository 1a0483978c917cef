/* The source element: manifest entries decoded into blocks of B lanes, by a
 * decode thread that runs ahead of compute through a bounded ring of
 * preallocated blocks. See source.h for the contract. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "media/source.h"
#include "clapp/plugin_util.h"

#define WHO "source"

/* Labels may run this far past the end of the audio (seconds) before the
 * file counts as bad: flite's last pau ends a few ms late. */
#define LABEL_END_SLACK 0.010

typedef struct lane_state {
    clapp_decoder  *dec;        /* open file, NULL if none */
    int32_t         entry;      /* manifest entry of the open file */
    int64_t         seq_id;
    int64_t         pos;        /* steps of this file delivered so far */
    int             started;    /* SEQ_START sent */
    int             has_carry;  /* carry holds the first step of the next block */
    float          *carry;      /* one step: the look-ahead that tells a file ends here */
    clapp_alignment ali;
    int             has_ali;
    int             in_rate;    /* native rate for the alignment's sample units */
} lane_state;

struct clapp_source {
    clapp_source_params   p;
    const clapp_manifest *m;
    clapp_labelset       *labels;
    const clapp_host     *host;
    int32_t              *class_ids;   /* [m->n] */
    int32_t               silence;
    int64_t               step_floats; /* floats per time step: 1 audio, C*H*W video */
    int64_t               hw;          /* video: H*W */
    int                   want_labels;
    int64_t               label_cap;   /* labels per lane per block */
    clapp_stream_info     info;
    clapp_aug            *aug;         /* NULL: no augmentation */

    /* The ring: nslots = queue + 1 (one block can be in the caller's hands). */
    int32_t      nslots;
    clapp_block *slots;
    clapp_lane  *lane_mem;    /* [nslots * B] */
    int32_t     *label_mem;   /* [nslots * B * label_cap] */

    /* Decode-thread state. */
    lane_state *ls;           /* [B] */
    float      *staging;      /* (T + 1) steps, step-major as the decoder writes them */
    int32_t    *order;        /* [n] entry order of the current epoch */
    uint8_t    *skip;         /* [n] bad or too short: not tried again */
    uint8_t    *warned;       /* [n] its damage was reported (once, not every epoch) */
    int64_t     next_pos;     /* position in epochs * n */
    uint64_t    rng;          /* shuffling */

    pthread_mutex_t mu;
    pthread_cond_t  cv_data, cv_space;
    int             sync_init;
    pthread_t       thread;
    int             thread_started;
    int32_t         w, r, filled, held;  /* ring indices (under mu) */
    int             finished, fatal;     /* under mu */
    atomic_int      stop;
    atomic_int      interrupted;  /* the host's interrupt ended a wait: the source stopped */
    atomic_int      failed, done;
};

/* splitmix64 (clapp_splitmix64): small, good enough for shuffles and window starts. */

/* Uniform in [0, n) without modulo bias. */
static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do
        x = clapp_splitmix64(s);
    while (x >= limit);
    return x % n;
}

void clapp_source_default_params(clapp_source_params *p)
{
    memset(p, 0, sizeof *p);
    p->decode.kind = CLAPP_MEDIA_AUDIO;
    p->decode.backend = CLAPP_DECODE_AUTO;
    p->decode.rate = 16000;
    p->decode.width = 64;
    p->decode.height = 64;
    p->decode.fps = 10;
    p->decode.channels = 1;
    p->lanes = 8;
    p->block = 20480;
    p->queue = 4;
    p->mode = CLAPP_SOURCE_STREAM;
    p->window_align = 160;
    p->label_rate = 100;
    p->gain = 1.0f;
    p->offset = 0.0f;
    p->seed = 1;
    p->shuffle = 0;
    p->epochs = 1;
    p->shard = 0;
    p->shards = 1;
    p->classes = NULL;
    p->aug.speed = 1.0;
}

/* The host asked to stop (decode.h: interrupt). */
static int interrupted(const clapp_source *src)
{
    return src->p.decode.interrupt && src->p.decode.interrupt(src->p.decode.interrupt_user);
}

/* "PATH: reason", without repeating the path when the decoder named it. */
static void report_bad(clapp_source *src, int32_t entry, const char *why)
{
    const char *path = src->m->entries[entry].path;
    size_t pl = strlen(path);
    int named = strncmp(why, path, pl) == 0 && why[pl] == ':';
    /* A read cut off because the source is being stopped is no bad file. */
    if (atomic_load(&src->stop))
        return;
    /* Nor is one the host interrupted: said once, naming the file, and the
     * whole source stops (the next file would keep it waiting as well). */
    if (interrupted(src)) {
        atomic_store(&src->interrupted, 1);
        atomic_store(&src->stop, 1);
        clapp_host_log(src->host, CLAPP_LOG_WARNING, WHO, "%s%s%s; reading stopped", named ? "" : path,
                       named ? "" : ": ", why);
        return;
    }
    if (named)
        clapp_host_log(src->host, CLAPP_LOG_ERROR, WHO, "%s", why);
    else
        clapp_host_log(src->host, CLAPP_LOG_ERROR, WHO, "%s: %s", path, why);
    src->skip[entry] = 1;
    atomic_fetch_add(&src->failed, 1);
}

static void lane_close(lane_state *st)
{
    clapp_decoder_close(st->dec);
    st->dec = NULL;
    if (st->has_ali)
        clapp_alignment_free(&st->ali);
    st->has_ali = 0;
    st->has_carry = 0;
    st->started = 0;
    st->pos = 0;
    st->entry = -1;
    st->seq_id = -1;
}

/* The next manifest entry not known to be bad, or -1 when all epochs are
 * through. Shuffles at the start of each epoch when asked; with shards > 1
 * only this shard's positions of the epoch's order (dealt round-robin). */
static int32_t next_entry(clapp_source *src, int64_t *seq_id)
{
    int64_t n = src->m->n, total = n * src->p.epochs;
    while (src->next_pos < total) {
        int64_t i = src->next_pos % n, epoch = src->next_pos / n;
        int32_t e;
        if (i == 0 && src->p.shuffle) {
            for (int32_t k = 0; k < (int32_t)n; k++)
                src->order[k] = k;
            for (int64_t k = n - 1; k > 0; k--) {
                int64_t j = (int64_t)rng_below(&src->rng, (uint64_t)k + 1);
                int32_t t = src->order[k];
                src->order[k] = src->order[j];
                src->order[j] = t;
            }
        }
        src->next_pos++;
        if (i % src->p.shards != src->p.shard)
            continue;
        e = src->order[i];
        if (src->skip[e])
            continue;
        *seq_id = e + epoch * n;
        return e;
    }
    return -1;
}

/* Open entry `e` on lane state `st` (decoder and alignment). Reports and
 * returns <0 on failure. */
static int lane_open(clapp_source *src, lane_state *st, int32_t e, int64_t seq_id)
{
    const clapp_manifest_entry *me = &src->m->entries[e];
    char err[1024] = "";
    int rc = clapp_decoder_open(&st->dec, me->path, &src->p.decode, err, sizeof err);
    if (rc < 0) {
        st->dec = NULL;
        report_bad(src, e, err[0] ? err : "cannot open");
        return rc;
    }
    st->entry = e;
    st->seq_id = seq_id;
    st->pos = 0;
    st->started = 0;
    st->has_carry = 0;
    st->in_rate = clapp_decoder_input_rate(st->dec);
    if (st->in_rate <= 0)
        st->in_rate = src->p.decode.rate;
    if (src->aug)
        clapp_aug_begin(src->aug, (int32_t)(st - src->ls), src->p.seed, seq_id);
    if (src->want_labels && me->alignment) {
        rc = clapp_alignment_load(&st->ali, me->alignment, src->labels, err, sizeof err);
        if (rc < 0) {
            char why[1200];
            snprintf(why, sizeof why, "alignment: %s", err);
            report_bad(src, e, why);
            lane_close(st);
            return rc;
        }
        st->has_ali = 1;
    }
    return 0;
}

/* Read up to `want` steps into dst; stops early only at the end or on an
 * error. Sets *eof / *error (err filled). */
static int64_t read_steps(clapp_decoder *dec, float *dst, int64_t want, int64_t step_floats,
                          int *eof, int *error, char *err, size_t errlen)
{
    int64_t n = 0;
    while (n < want) {
        int64_t r = clapp_decoder_read(dec, dst + n * step_floats, want - n, err, errlen);
        if (r < 0) {
            *error = 1;
            break;
        }
        if (r == 0) {
            *eof = 1;
            break;
        }
        n += r;
    }
    return n;
}

typedef struct pull_ctx {
    clapp_decoder *dec;
    char          *err;
    size_t         errlen;
} pull_ctx;

static int64_t pull_decoder(void *ctx, float *dst, int64_t want, int *eof, int *error)
{
    pull_ctx *pc = ctx;
    return read_steps(pc->dec, dst, want, 1, eof, error, pc->err, pc->errlen);
}

/* read_steps on the lane's file, through the augmentation when there is one. */
static int64_t lane_read(clapp_source *src, lane_state *st, float *dst, int64_t want, int *eof,
                         int *error, char *err, size_t errlen)
{
    pull_ctx pc;
    if (!src->aug)
        return read_steps(st->dec, dst, want, src->step_floats, eof, error, err, errlen);
    pc.dec = st->dec;
    pc.err = err;
    pc.errlen = errlen;
    return clapp_aug_read(src->aug, (int32_t)(st - src->ls), pull_decoder, &pc, dst, want, eof,
                          error);
}

/* Decoded steps of the lane's file so far (before speed perturbation). */
static int64_t lane_input_steps(const clapp_source *src, const lane_state *st)
{
    return src->aug ? clapp_aug_input_steps(src->aug, (int32_t)(st - src->ls)) : st->pos;
}

/* Index of the label frame that holds step n: floor(n * label_rate / rate),
 * with the same tolerance as clapp_label_frame_count. */
static int64_t label_frame_floor(int64_t n, double label_rate, double rate)
{
    double x = (double)n * label_rate / rate;
    return (int64_t)floor(x + 1e-9 * (x > 1 ? x : 1));
}

/* Copy n staged steps into lane b of the block, fill the lane's labels. */
static void lane_emit(clapp_source *src, clapp_block *blk, int32_t b, lane_state *st, int64_t n,
                      int64_t pts, uint32_t flags)
{
    const int64_t T = src->p.block;
    clapp_lane *L = &blk->lane[b];
    float *x = blk->x.data + (size_t)b * (size_t)(T * src->step_floats);
    if (src->p.decode.kind == CLAPP_MEDIA_VIDEO) {
        /* Decoder frames are [C, H, W]; the block lane is [C, T, H, W]. */
        const int64_t C = src->p.decode.channels, hw = src->hw;
        for (int64_t c = 0; c < C; c++)
            for (int64_t t = 0; t < n; t++)
                memcpy(x + (c * T + t) * hw, src->staging + t * src->step_floats + c * hw,
                       (size_t)hw * sizeof(float));
    } else {
        memcpy(x, src->staging, (size_t)n * sizeof(float));
        if (src->aug)
            clapp_aug_add_noise(src->aug, b, x, n);
    }
    if (src->p.gain != 1.0f || src->p.offset != 0.0f) {
        const int64_t per_c = src->p.decode.kind == CLAPP_MEDIA_VIDEO ? src->hw : 1;
        const int64_t C = src->p.decode.kind == CLAPP_MEDIA_VIDEO ? src->p.decode.channels : 1;
        for (int64_t c = 0; c < C; c++) {
            float *xc = x + c * T * per_c;
            for (int64_t i = 0; i < n * per_c; i++)
                xc[i] = src->p.gain * xc[i] + src->p.offset;
        }
    }
    L->seq_id = st->seq_id;
    L->seq_name = src->m->entries[st->entry].key;
    L->flags = flags;
    L->len = (int32_t)n;
    L->pts = pts;
    L->class_label = src->class_ids[st->entry];
    if (st->has_ali) {
        const double lr = src->p.label_rate, rate = src->p.decode.rate;
        /* At speed f, output time tau is input time tau * f: the labels of
         * the input at lr / f frames per second. */
        const double lr_in = src->aug ? lr / clapp_aug_speed(src->aug, b) : lr;
        /* Frames overlapping the span: from the one holding step pts to the
         * last one starting before pts + n. */
        int64_t first = label_frame_floor(pts, lr, rate);
        int64_t last = clapp_label_frame_count(pts + n, lr, rate);
        int32_t *lab = src->label_mem + (size_t)((blk - src->slots) * src->p.lanes + b) *
                                           (size_t)src->label_cap;
        if (last - first > src->label_cap)   /* cannot happen; keeps a bad rate from overflowing */
            last = first + src->label_cap;
        for (int64_t i = first; i < last; i++)
            lab[i - first] = clapp_alignment_label_at(&st->ali, st->in_rate, lr_in, i,
                                                      src->silence);
        L->labels = lab;
        L->n_labels = (int32_t)(last - first);
        L->label_pts = first;
    }
}

/* Damage in a file read to its end: damaged packets the decoder skipped
 * (how many, about how many seconds), and an end before the length its
 * header declares (a cut file: the seconds decoded, declared and missing).
 * 1 and the description in why, or 0. What is there was used either way;
 * the caller makes it a warning, or with strict=true an error. */
static int file_damage(clapp_source *src, lane_state *st, char *why, size_t whylen)
{
    const double rate = src->info.rate;
    int64_t skipped = clapp_decoder_error_count(st->dec);
    int exact = 0;
    double declared = clapp_decoder_declared_seconds(st->dec, &exact);
    double decoded = (double)lane_input_steps(src, st) / rate;   /* before speed perturbation */
    double missing = declared - decoded;
    size_t n = 0;
    why[0] = 0;
    if (skipped > 0)
        n += (size_t)snprintf(why, whylen, "damaged: %lld packet(s) skipped, about %.3f s of media lost",
                              (long long)skipped, clapp_decoder_lost_seconds(st->dec));
    /* A WAV's size field is exact (10 ms of slack for resampling); a
     * container's duration is a few frames off, so only a clear shortfall
     * (10 % and a quarter second) counts there. */
    if (declared > 0 && (exact ? missing > 0.010 : missing > 0.1 * declared && missing > 0.25) && n < whylen)
        snprintf(why + n, whylen - n, "%s%.3f s decoded of the %.3f s its header declares "
                 "(%.3f s missing)", n ? "; " : "truncated: ", decoded, declared, missing);
    return why[0] != 0;
}

/* Labels of a file read to its end that run past its audio: 1 and the
 * reason in why (the .phn file, line and phone), or 0. */
static int labels_past_end(clapp_source *src, lane_state *st, char *why, size_t whylen)
{
    int64_t decoded = lane_input_steps(src, st);
    if (st->has_ali && st->ali.n > 0) {
        const clapp_phn_segment *s = &st->ali.seg[st->ali.n - 1];
        double audio = (double)decoded / src->p.decode.rate;
        double end = (double)s->end / st->in_rate;
        if (end > audio + LABEL_END_SLACK) {
            const char *name = src->labels && s->label >= 0 && s->label < src->labels->n ?
                               src->labels->names[s->label] : "?";
            snprintf(why, whylen, "%s:%d: phone '%s' ends at %.3f s, %.1f ms past the end "
                     "of the audio (%.3f s)", src->m->entries[st->entry].alignment, s->line, name,
                     end, 1000.0 * (end - audio), audio);
            return 1;
        }
    }
    return 0;
}

/* Stream mode: the next run of steps of lane b's file(s). Returns 1 if the
 * lane carries a sequence in this block, 0 if it is idle. */
static int lane_fill_stream(clapp_source *src, clapp_block *blk, int32_t b)
{
    const int64_t T = src->p.block, F = src->step_floats;
    lane_state *st = &src->ls[b];
    char err[1024], why[1200];
    for (;;) {
        int64_t n = 0, pos0;
        int eof = 0, error = 0, bad = 0, damaged = 0;
        uint32_t flags = 0;
        if (atomic_load(&src->stop))
            return 0;
        if (!st->dec) {
            int64_t seq_id;
            int32_t e = next_entry(src, &seq_id);
            if (e < 0)
                return 0;
            if (lane_open(src, st, e, seq_id) < 0)
                continue;
        }
        err[0] = 0;
        if (st->has_carry) {
            memcpy(src->staging, st->carry, (size_t)F * sizeof(float));
            st->has_carry = 0;
            n = 1;
        }
        n += lane_read(src, st, src->staging + n * F, T - n, &eof, &error, err, sizeof err);
        /* One step of look-ahead tells whether this block ends the file. */
        if (!eof && !error) {
            int64_t r = lane_read(src, st, st->carry, 1, &eof, &error, err, sizeof err);
            st->has_carry = r == 1;
        }
        if (n == 0 && !st->started) {
            report_bad(src, st->entry, error ? err : "no media data in the file");
            lane_close(st);
            continue;
        }
        if (!st->started)
            flags |= CLAPP_LANE_SEQ_START;
        if (eof || error)
            flags |= CLAPP_LANE_SEQ_END;
        pos0 = st->pos;
        st->pos += n;
        /* A file reported bad ends its sequence marked failed, so writers
         * do not leave it looking complete; damage is a warning, or with
         * strict=true makes the file bad. */
        if (eof && !error) {
            bad = labels_past_end(src, st, why, sizeof why);
            damaged = !bad && file_damage(src, st, why, sizeof why);
            bad |= damaged && src->p.strict;
        }
        if (error || bad)
            flags |= CLAPP_LANE_SEQ_FAILED;
        lane_emit(src, blk, b, st, n, pos0, flags);
        st->started = 1;
        if (error) {
            report_bad(src, st->entry, err[0] ? err : "read error");
        } else if (bad) {
            if (damaged)
                strncat(why, " (strict: damage fails the file)", sizeof why - strlen(why) - 1);
            report_bad(src, st->entry, why);
        } else if (eof) {
            if (damaged && !atomic_load(&src->stop) && !src->warned[st->entry]) {
                src->warned[st->entry] = 1;
                clapp_host_log(src->host, CLAPP_LOG_WARNING, WHO, "%s: %s; what could be decoded was used",
                               src->m->entries[st->entry].path, why);
            }
            atomic_fetch_add(&src->done, 1);
        }
        if (eof || error)
            lane_close(st);
        return 1;
    }
}

/* Length of the open file in steps, by decoding it (and reopening). */
static int64_t count_steps(clapp_source *src, lane_state *st, char *err, size_t errlen)
{
    const int64_t T = src->p.block;
    int64_t total = 0;
    int eof = 0, error = 0;
    while (!eof && !error)
        total += lane_read(src, st, src->staging, T + 1, &eof, &error, err, errlen);
    clapp_decoder_close(st->dec);
    st->dec = NULL;
    if (error)
        return -1;
    if (clapp_decoder_open(&st->dec, src->m->entries[st->entry].path, &src->p.decode, err,
                           errlen) < 0) {
        st->dec = NULL;
        return -1;
    }
    if (src->aug)   /* the file starts over: so does its augmentation */
        clapp_aug_begin(src->aug, (int32_t)(st - src->ls), src->p.seed, st->seq_id);
    return total;
}

/* Window mode: one random window of T steps from the next usable file. */
static int lane_fill_window(clapp_source *src, clapp_block *blk, int32_t b)
{
    const int64_t T = src->p.block, A = src->p.window_align;
    lane_state *st = &src->ls[b];
    char err[1024];
    for (;;) {
        int64_t seq_id, len, start = 0, got = 0;
        int eof = 0, error = 0, counted = 0, ok = 0;
        uint64_t h;
        int32_t e;
        if (atomic_load(&src->stop))
            return 0;
        e = next_entry(src, &seq_id);
        if (e < 0)
            return 0;
        if (lane_open(src, st, e, seq_id) < 0)
            continue;
        err[0] = 0;
        len = clapp_decoder_duration_frames(st->dec);
        /* Windows are cut from the speed-perturbed sequence. */
        if (len >= 0 && src->aug)
            len = clapp_aug_out_len(len, clapp_aug_speed(src->aug, b));
        /* The start comes from (seed, seq_id) alone, so it does not depend on
         * which lane takes the file or on failures elsewhere. */
        h = src->p.seed ^ ((uint64_t)seq_id * 0xD1B54A32D192ED03ull);
        for (int attempt = 0; attempt < 2 && !ok && !error; attempt++) {
            int64_t k_max, skip;
            if (len < 0) {
                len = count_steps(src, st, err, sizeof err);
                counted = 1;
                if (len < 0) {
                    error = 1;
                    break;
                }
            }
            if (len < T + A) {
                clapp_host_log(src->host, CLAPP_LOG_WARNING, WHO, "%s: %lld steps, too short for "
                               "a window of %lld after an offset of %lld; skipped",
                               src->m->entries[e].path, (long long)len, (long long)T,
                               (long long)A);
                src->skip[e] = 1;
                break;
            }
            k_max = (len - T) / A;   /* starts A, 2A, ..., k_max*A keep the window inside */
            {
                uint64_t hs = h;
                start = A * (1 + (int64_t)rng_below(&hs, (uint64_t)k_max));
            }
            for (skip = start; skip > 0 && !eof && !error;) {
                int64_t want = skip < T + 1 ? skip : T + 1;
                int64_t r = lane_read(src, st, src->staging, want, &eof, &error, err,
                                      sizeof err);
                skip -= r;
            }
            if (!eof && !error)
                got = lane_read(src, st, src->staging, T, &eof, &error, err, sizeof err);
            if (error)
                break;
            if (!eof || got == T) {
                ok = 1;
                break;
            }
            /* The duration estimate was too long: count exactly, then redraw. */
            if (counted)
                break;
            len = -1;
            eof = 0;
            clapp_decoder_close(st->dec);
            st->dec = NULL;
            if (clapp_decoder_open(&st->dec, src->m->entries[e].path, &src->p.decode, err,
                                   sizeof err) < 0) {
                st->dec = NULL;
                error = 1;
            } else if (src->aug) {
                clapp_aug_begin(src->aug, b, src->p.seed, seq_id);
            }
        }
        if (ok) {
            lane_emit(src, blk, b, st, T, start, CLAPP_LANE_SEQ_START | CLAPP_LANE_SEQ_END);
            atomic_fetch_add(&src->done, 1);
            lane_close(st);
            return 1;
        }
        if (error)
            report_bad(src, e, err[0] ? err : "read error");
        else if (!src->skip[e])
            report_bad(src, e, "fewer steps than its duration says");
        lane_close(st);
    }
}

/* Fill one block. Returns 1 if any lane is active, 0 if all are idle. */
static int fill_block(clapp_source *src, clapp_block *blk)
{
    const int64_t lane_floats = src->p.block * src->step_floats;
    int active = 0;
    for (int32_t b = 0; b < blk->lanes; b++) {
        clapp_lane *L = &blk->lane[b];
        memset(blk->x.data + (size_t)b * (size_t)lane_floats, 0, (size_t)lane_floats * sizeof(float));
        memset(L, 0, sizeof *L);
        L->seq_id = -1;
        L->class_label = -1;
        if (atomic_load(&src->stop))
            continue;
        if (src->p.mode == CLAPP_SOURCE_WINDOW)
            active |= lane_fill_window(src, blk, b);
        else
            active |= lane_fill_stream(src, blk, b);
    }
    return active;
}

static void *decode_main(void *arg)
{
    clapp_source *src = arg;
    for (;;) {
        int32_t slot;
        int rc;
        pthread_mutex_lock(&src->mu);
        while (!atomic_load(&src->stop) && src->filled + (src->held >= 0) >= src->nslots)
            pthread_cond_wait(&src->cv_space, &src->mu);
        if (atomic_load(&src->stop)) {
            src->finished = 1;
            pthread_cond_broadcast(&src->cv_data);
            pthread_mutex_unlock(&src->mu);
            break;
        }
        slot = src->w;
        pthread_mutex_unlock(&src->mu);

        rc = fill_block(src, &src->slots[slot]);

        pthread_mutex_lock(&src->mu);
        if (rc <= 0 || atomic_load(&src->stop)) {
            if (rc < 0)
                src->fatal = rc;
            src->finished = 1;
            pthread_cond_broadcast(&src->cv_data);
            pthread_mutex_unlock(&src->mu);
            break;
        }
        src->w = (src->w + 1) % src->nslots;
        src->filled++;
        pthread_cond_signal(&src->cv_data);
        pthread_mutex_unlock(&src->mu);
    }
    return NULL;
}

static int check_params(const clapp_source_params *p, const clapp_host *host)
{
    const char *why = NULL;
    if (p->lanes < 1)
        why = "lanes must be >= 1";
    else if (p->block < 1 || p->block > INT32_MAX - 1)
        why = "block must be in 1..2^31-2";
    else if (p->queue < 1)
        why = "queue must be >= 1";
    else if (p->epochs < 1)
        why = "epochs must be >= 1";
    else if (p->shards < 1 || p->shard < 0 || p->shard >= p->shards)
        why = "shard must be in 0..shards-1";
    else if (p->mode != CLAPP_SOURCE_STREAM && p->mode != CLAPP_SOURCE_WINDOW)
        why = "unknown mode";
    else if (p->mode == CLAPP_SOURCE_WINDOW && p->window_align < 1)
        why = "window_align must be >= 1";
    else if (p->label_rate < 0)
        why = "label_rate must be >= 0";
    else if (p->decode.kind == CLAPP_MEDIA_AUDIO && p->decode.rate < 1)
        why = "rate must be >= 1";
    else if (p->decode.kind == CLAPP_MEDIA_VIDEO &&
             (p->decode.width < 1 || p->decode.height < 1 || !(p->decode.fps > 0) ||
              (p->decode.channels != 1 && p->decode.channels != 3)))
        why = "video needs width, height, fps > 0 and 1 or 3 channels";
    else if (p->decode.kind != CLAPP_MEDIA_AUDIO && p->decode.kind != CLAPP_MEDIA_VIDEO)
        why = "unknown media kind";
    else if (p->decode.kind == CLAPP_MEDIA_VIDEO && clapp_aug_params_active(&p->aug))
        why = "aug_gain_db, aug_snr, aug_eq_db and aug_speed are audio-only: turn them off "
              "(0, empty, 0, 1) for kind=video";
    if (why) {
        clapp_host_log(host, CLAPP_LOG_ERROR, WHO, "bad parameters: %s", why);
        return CLAPP_E_INVAL;
    }
    return 0;
}

int clapp_source_create(clapp_source **out, const clapp_source_params *p,
                        const clapp_manifest *m, clapp_labelset *labels,
                        const clapp_host *host)
{
    clapp_source *src = NULL;
    clapp_labelset *classes;
    int64_t B, T, lane_floats;
    int rc;

    if (!out)
        return CLAPP_E_INVAL;
    *out = NULL;
    if (!p || !m || m->n < 1) {
        clapp_host_log(host, CLAPP_LOG_ERROR, WHO, "no parameters or an empty manifest");
        return CLAPP_E_INVAL;
    }
    rc = check_params(p, host);
    if (rc < 0)
        return rc;
    src = calloc(1, sizeof *src);
    if (!src)
        return CLAPP_E_NOMEM;
    src->p = *p;
    src->p.decode.stop = &src->stop;   /* a destroy ends blocking opens and reads */
    src->m = m;
    src->labels = labels;
    src->host = host;
    src->held = -1;
    src->rng = p->seed;
    atomic_init(&src->stop, 0);
    atomic_init(&src->interrupted, 0);
    atomic_init(&src->failed, 0);
    atomic_init(&src->done, 0);
    B = p->lanes;
    T = p->block;

    if (p->decode.kind == CLAPP_MEDIA_VIDEO) {
        src->hw = (int64_t)p->decode.width * p->decode.height;
        src->step_floats = p->decode.channels * src->hw;
        src->info.ndim = 5;
        src->info.shape[0] = B;
        src->info.shape[1] = p->decode.channels;
        src->info.shape[2] = T;
        src->info.shape[3] = p->decode.height;
        src->info.shape[4] = p->decode.width;
        src->info.rate = p->decode.fps;
    } else {
        src->step_floats = 1;
        src->info.ndim = 3;
        src->info.shape[0] = B;
        src->info.shape[1] = 1;
        src->info.shape[2] = T;
        src->info.rate = p->decode.rate;
    }
    lane_floats = T * src->step_floats;
    /* Guard the products below against overflow from absurd parameters. */
    if ((double)lane_floats * (double)B * (double)(p->queue + 1) > 1e11) {
        clapp_host_log(host, CLAPP_LOG_ERROR, WHO, "bad parameters: block x lanes x queue needs "
                       "%.3g floats", (double)lane_floats * (double)B * (double)(p->queue + 1));
        rc = CLAPP_E_INVAL;
        goto fail;
    }

    /* Augmentation state (audio; video refused it in check_params). */
    if (p->decode.kind == CLAPP_MEDIA_AUDIO) {
        char why[512] = "";
        rc = clapp_aug_create(&src->aug, &p->aug, p->decode.rate, T, p->lanes, why, sizeof why);
        if (rc < 0) {
            clapp_host_log(host, CLAPP_LOG_ERROR, WHO, "%s%s",
                           rc == CLAPP_E_NOMEM ? "" : "bad parameters: ", why);
            goto fail;
        }
    }

    /* Class ids per entry, resolved once here on the calling thread. */
    classes = p->classes ? p->classes : labels;
    src->class_ids = malloc((size_t)m->n * sizeof *src->class_ids);
    if (!src->class_ids)
        goto nomem;
    for (int32_t i = 0; i < m->n; i++) {
        src->class_ids[i] = -1;
        if (!m->entries[i].label || !classes)
            continue;
        rc = clapp_labelset_add(classes, m->entries[i].label);
        if (rc == CLAPP_E_NOTFOUND) {
            clapp_host_log(host, CLAPP_LOG_ERROR, WHO, "%s:%d: class label '%s' is not in the "
                           "label set", m->path ? m->path : "manifest", m->entries[i].line,
                           m->entries[i].label);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (rc < 0)
            goto nomem;
        src->class_ids[i] = rc;
    }

    src->want_labels = labels && p->label_rate > 0 && p->decode.kind == CLAPP_MEDIA_AUDIO;
    src->silence = -1;
    if (src->want_labels) {
        static const char *const silence_names[] = {"pau", "sil", "h#", "_"};
        for (size_t i = 0; i < 4 && src->silence < 0; i++)
            src->silence = clapp_labelset_find(labels, silence_names[i]);
        if (src->silence < 0 && !labels->frozen) {
            /* Gaps and the usual silence names then share one id. */
            rc = clapp_labelset_add(labels, "pau");
            if (rc < 0)
                goto nomem;
            src->silence = rc;
            for (size_t i = 1; i < 4; i++)
                if (clapp_labelset_alias(labels, silence_names[i], "pau") == CLAPP_E_NOMEM)
                    goto nomem;
        }
        /* Frames overlapping T steps: at most ceil(T * lr / rate) + 1. */
        src->label_cap = clapp_label_frame_count(T, p->label_rate, p->decode.rate) + 1;
    }

    src->nslots = p->queue + 1;
    src->slots = calloc((size_t)src->nslots, sizeof *src->slots);
    src->lane_mem = calloc((size_t)(src->nslots * B), sizeof *src->lane_mem);
    if (!src->slots || !src->lane_mem)
        goto nomem;
    if (src->want_labels) {
        src->label_mem = calloc((size_t)(src->nslots * B * src->label_cap), sizeof(int32_t));
        if (!src->label_mem)
            goto nomem;
    }
    for (int32_t s = 0; s < src->nslots; s++) {
        clapp_block *blk = &src->slots[s];
        if (clapp_tensor_alloc_shape(&blk->x, src->info.ndim, src->info.shape) < 0)
            goto nomem;
        blk->lanes = p->lanes;
        blk->lane = src->lane_mem + (size_t)s * (size_t)B;
        blk->rate = src->info.rate;
        blk->label_rate = src->want_labels ? p->label_rate : 0;
        for (int32_t b = 0; b < p->lanes; b++) {
            blk->lane[b].seq_id = -1;
            blk->lane[b].class_label = -1;
        }
    }

    src->ls = calloc((size_t)B, sizeof *src->ls);
    src->staging = malloc((size_t)((T + 1) * src->step_floats) * sizeof(float));
    src->order = malloc((size_t)m->n * sizeof *src->order);
    src->skip = calloc((size_t)m->n, 1);
    src->warned = calloc((size_t)m->n, 1);
    if (!src->ls || !src->staging || !src->order || !src->skip || !src->warned)
        goto nomem;
    for (int32_t b = 0; b < p->lanes; b++) {
        src->ls[b].entry = -1;
        src->ls[b].seq_id = -1;
        src->ls[b].carry = malloc((size_t)src->step_floats * sizeof(float));
        if (!src->ls[b].carry)
            goto nomem;
    }
    for (int32_t i = 0; i < m->n; i++)
        src->order[i] = i;

    if (pthread_mutex_init(&src->mu, NULL) != 0)
        goto nomem;
    if (pthread_cond_init(&src->cv_data, NULL) != 0) {
        pthread_mutex_destroy(&src->mu);
        goto nomem;
    }
    if (pthread_cond_init(&src->cv_space, NULL) != 0) {
        pthread_cond_destroy(&src->cv_data);
        pthread_mutex_destroy(&src->mu);
        goto nomem;
    }
    src->sync_init = 1;
    *out = src;
    return 0;
nomem:
    clapp_host_log(host, CLAPP_LOG_ERROR, WHO, "out of memory setting up %lld lanes x %lld steps",
                   (long long)B, (long long)T);
    rc = CLAPP_E_NOMEM;
fail:
    clapp_source_destroy(src);
    return rc;
}

void clapp_source_info(const clapp_source *src, clapp_stream_info *info)
{
    *info = src->info;
}

int clapp_source_start(clapp_source *src)
{
    if (!src || src->thread_started)
        return CLAPP_E_STATE;
    if (pthread_create(&src->thread, NULL, decode_main, src) != 0) {
        clapp_host_log(src->host, CLAPP_LOG_ERROR, WHO, "cannot start the decode thread");
        return CLAPP_E_INTERNAL;
    }
    src->thread_started = 1;
    return 0;
}

int clapp_source_next(clapp_source *src, const clapp_block **blk)
{
    int rc;
    *blk = NULL;
    if (!src || !src->thread_started)
        return CLAPP_E_STATE;
    pthread_mutex_lock(&src->mu);
    if (src->held >= 0) {
        src->held = -1;
        pthread_cond_signal(&src->cv_space);
    }
    while (src->filled == 0 && !src->finished)
        pthread_cond_wait(&src->cv_data, &src->mu);
    if (src->filled > 0) {
        src->held = src->r;
        src->r = (src->r + 1) % src->nslots;
        src->filled--;
        *blk = &src->slots[src->held];
        rc = 1;
    } else {
        rc = src->fatal < 0 ? src->fatal : 0;
    }
    pthread_mutex_unlock(&src->mu);
    return rc;
}

void clapp_source_release(clapp_source *src)
{
    if (!src || !src->sync_init)
        return;
    pthread_mutex_lock(&src->mu);
    if (src->held >= 0) {
        src->held = -1;
        pthread_cond_signal(&src->cv_space);
    }
    pthread_mutex_unlock(&src->mu);
}

int32_t clapp_source_failed_count(const clapp_source *src)
{
    return src ? atomic_load(&((clapp_source *)src)->failed) : 0;
}

int clapp_source_interrupted(const clapp_source *src)
{
    return src ? atomic_load(&((clapp_source *)src)->interrupted) : 0;
}

int32_t clapp_source_done_count(const clapp_source *src)
{
    return src ? atomic_load(&((clapp_source *)src)->done) : 0;
}

void clapp_source_destroy(clapp_source *src)
{
    if (!src)
        return;
    if (src->thread_started) {
        pthread_mutex_lock(&src->mu);
        atomic_store(&src->stop, 1);
        pthread_cond_broadcast(&src->cv_space);
        pthread_mutex_unlock(&src->mu);
        pthread_join(src->thread, NULL);
    }
    if (src->sync_init) {
        pthread_cond_destroy(&src->cv_space);
        pthread_cond_destroy(&src->cv_data);
        pthread_mutex_destroy(&src->mu);
    }
    if (src->ls) {
        for (int32_t b = 0; b < src->p.lanes; b++) {
            lane_close(&src->ls[b]);
            free(src->ls[b].carry);
        }
    }
    if (src->slots)
        for (int32_t s = 0; s < src->nslots; s++)
            clapp_tensor_free(&src->slots[s].x);
    free(src->ls);
    free(src->slots);
    free(src->lane_mem);
    free(src->label_mem);
    free(src->staging);
    free(src->order);
    free(src->skip);
    free(src->warned);
    free(src->class_ids);
    clapp_aug_destroy(src->aug);
    free(src);
}

static const clapp_param_value *src_value(const clapp_param_value *v, int32_t n, const char *key)
{
    static const clapp_param_value none = {NULL, 0, 0.0, ""};
    const clapp_param_value *f = clapp_param_find(v, n, key);
    return f ? f : &none;
}

void clapp_source_params_from_values(clapp_source_params *sp, const clapp_param_value *v, int32_t n)
{
    clapp_source_default_params(sp);
    sp->decode.kind = src_value(v, n, "kind")->i ? CLAPP_MEDIA_VIDEO : CLAPP_MEDIA_AUDIO;
    sp->decode.backend = (clapp_decode_backend)src_value(v, n, "backend")->i;
    sp->decode.rate = (int)src_value(v, n, "rate")->i;
    sp->decode.width = (int)src_value(v, n, "width")->i;
    sp->decode.height = (int)src_value(v, n, "height")->i;
    sp->decode.fps = src_value(v, n, "fps")->f;
    sp->decode.channels = src_value(v, n, "color")->i ? 3 : 1;
    sp->decode.io_timeout = src_value(v, n, "io_timeout")->f;
    sp->lanes = (int32_t)src_value(v, n, "lanes")->i;
    sp->block = src_value(v, n, "block")->i;
    sp->queue = (int32_t)src_value(v, n, "queue")->i;
    sp->mode = src_value(v, n, "mode")->i ? CLAPP_SOURCE_WINDOW : CLAPP_SOURCE_STREAM;
    sp->window_align = src_value(v, n, "window_align")->i;
    sp->label_rate = src_value(v, n, "label_rate")->f;
    sp->shuffle = (int)src_value(v, n, "shuffle")->i;
    sp->strict = (int)src_value(v, n, "strict")->i;
    sp->gain = (float)src_value(v, n, "gain")->f;
    sp->offset = (float)src_value(v, n, "offset")->f;
    sp->aug.gain_db = src_value(v, n, "aug_gain_db")->f;
    sp->aug.snr = src_value(v, n, "aug_snr")->s;   /* parsed by the source at create */
    sp->aug.noise = (clapp_noise_color)src_value(v, n, "aug_noise")->i;
    sp->aug.eq_db = src_value(v, n, "aug_eq_db")->f;
    sp->aug.speed = src_value(v, n, "aug_speed")->f;
}
