/* make_speech_corpus — a phone-aligned speech corpus synthesised with flite.
 *
 * The paper's probe needs speech with frame-level phone labels (LibriSpeech
 * with forced alignments), which cannot be downloaded here. flite gives both
 * the audio and, in its Segment relation, the phone sequence with end times,
 * so every synthesised sentence comes with an exact alignment.
 *
 *   make_speech_corpus --out DIR [--hours H] [--seed S] [--voices slt,rms,kal16]
 *                      [--test-voices awb] [--text FILE] [--threads N] ...
 *
 * Layout of DIR:
 *   wav/VOICE/NNNNNN.flac   16 kHz mono 16-bit FLAC
 *   wav/VOICE/NNNNNN.phn    TIMIT style "start end phone", samples at 16 kHz
 *   ssl-train.tsv           all training items (path, empty label, phn path)
 *   probe-train.tsv         the first --probe-hours of them (default all)
 *   probe-test.tsv          held-out sentences spoken by held-out voices
 *   items.tsv               per item: path, split, voice, stretch, pitch, text
 *
 * Determinism: item i of a split depends only on (seed, split, i): its
 * sentence, voice, speaking rate and pitch factor. Items are synthesised in
 * rounds by forked workers (flite keeps global state, so processes rather
 * than threads) and the parent keeps the prefix of items that reaches the
 * requested duration, so the corpus does not depend on --threads.
 *
 * Variety: voices; speaking rate through flite's duration_stretch; pitch
 * through flite's f0_shift feature, which scales the F0 contour without
 * changing durations (sample counts and phone times are unchanged on slt and
 * awb; kal16 moves by a few samples, absorbed by the clamp). rms ignores
 * f0_shift, so its items vary in rate only.
 */
#include <errno.h>
#include <flite/flite.h>
#include <math.h>
#include <sndfile.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clapp/plugin.h"
#include "manifest.h"

cst_voice *register_cmu_us_slt(const char *voxdir);
cst_voice *register_cmu_us_rms(const char *voxdir);
cst_voice *register_cmu_us_awb(const char *voxdir);
cst_voice *register_cmu_us_kal16(const char *voxdir);
void unregister_cmu_us_slt(cst_voice *v);
void unregister_cmu_us_rms(cst_voice *v);
void unregister_cmu_us_awb(cst_voice *v);
void unregister_cmu_us_kal16(cst_voice *v);

#define SC_RATE 16000
#define SC_MAX_VOICES 4
#define SC_ROUND 32          /* items per worker per round */
#define SC_MIN_WORDS 3
#define SC_MAX_WORDS 25
#define SC_FORTUNE_DIR "/usr/share/games/fortunes"

typedef struct sc_voice_def {
    const char *name;
    cst_voice *(*reg)(const char *);
    void (*unreg)(cst_voice *);
} sc_voice_def;

static const sc_voice_def sc_voice_defs[SC_MAX_VOICES] = {
    {"slt", register_cmu_us_slt, unregister_cmu_us_slt},
    {"rms", register_cmu_us_rms, unregister_cmu_us_rms},
    {"awb", register_cmu_us_awb, unregister_cmu_us_awb},
    {"kal16", register_cmu_us_kal16, unregister_cmu_us_kal16},
};

typedef struct sc_options {
    const char *out;
    const char *text;
    double      hours, test_share, probe_hours;
    double      stretch_min, stretch_max, pitch_min, pitch_max;
    double      test_sentences;   /* fraction of sentences held out */
    uint64_t    seed;
    int         threads;
    int         quiet;
    int         train_voice[SC_MAX_VOICES], n_train;   /* indices into sc_voice_defs */
    int         test_voice[SC_MAX_VOICES], n_test;
} sc_options;

typedef struct sc_sentences {
    char  **s;
    int64_t n, cap;
} sc_sentences;

/* One planned item and, once synthesised, its length. */
typedef struct sc_item {
    int64_t sentence;   /* index into the sentence pool */
    int     voice;      /* index into sc_voice_defs */
    double  stretch, pitch;
    unsigned noise_seed; /* flite's excitation noise comes from rand() */
    int64_t samples;    /* 0: not synthesised or failed */
} sc_item;

/* What a worker sends back per item. */
typedef struct sc_record {
    int64_t index;
    int64_t samples;    /* > 0 written; 0 skipped (no audio / no phones); < 0 error */
} sc_record;

typedef struct sc_split {
    const char *name;         /* "train" or "test" */
    const int  *voices;
    int         n_voices;
    int64_t    *sent;         /* sentence indices of this split, shuffled */
    int64_t     n_sent;
    uint64_t    salt;
    double      target_s;     /* seconds to generate */
    sc_item    *items;
    int64_t     n_items, cap_items;
    double      done_s;       /* seconds of the kept prefix */
} sc_split;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static uint64_t sc_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) from a 64-bit state (advanced). */
static double sc_unif(uint64_t *st)
{
    *st = sc_mix(*st);
    return (double)(*st >> 11) * (1.0 / 9007199254740992.0);
}

/* Log-uniform in [lo, hi]: rates and pitch factors are ratios. */
static double sc_log_unif(uint64_t *st, double lo, double hi)
{
    double u = sc_unif(st);
    return lo == hi ? lo : exp(log(lo) + u * (log(hi) - log(lo)));
}

static double sc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int sc_mkdirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

static int sc_voice_index(const char *name)
{
    for (int i = 0; i < SC_MAX_VOICES; i++)
        if (strcmp(sc_voice_defs[i].name, name) == 0)
            return i;
    return -1;
}

/* "slt,rms" -> voice indices. Returns the count or -1 (message printed). */
static int sc_parse_voices(const char *list, int *out)
{
    char buf[256], *save = NULL, *tok;
    int n = 0;
    if (strlen(list) >= sizeof buf)
        return -1;
    strcpy(buf, list);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int v = sc_voice_index(tok);
        if (v < 0) {
            fprintf(stderr, "make_speech_corpus: error: unknown voice '%s' (voices: slt, rms, awb, kal16)\n",
                    tok);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (out[i] == v) {
                fprintf(stderr, "make_speech_corpus: error: voice '%s' listed twice\n", tok);
                return -1;
            }
        out[n++] = v;
    }
    if (n == 0)
        fprintf(stderr, "make_speech_corpus: error: empty voice list\n");
    return n > 0 ? n : -1;
}

static int sc_parse_range(const char *s, double *lo, double *hi)
{
    char *end;
    *lo = strtod(s, &end);
    if (*end != ',')
        return -1;
    *hi = strtod(end + 1, &end);
    return *end == '\0' && *lo > 0 && *hi >= *lo ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Sentences                                                                 */

static int sc_sentences_add(sc_sentences *ss, const char *s, size_t len)
{
    char *copy;
    if (ss->n == ss->cap) {
        int64_t cap = ss->cap ? ss->cap * 2 : 1024;
        char **p = realloc(ss->s, (size_t)cap * sizeof *p);
        if (!p)
            return CLAPP_E_NOMEM;
        ss->s = p;
        ss->cap = cap;
    }
    copy = malloc(len + 1);
    if (!copy)
        return CLAPP_E_NOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    ss->s[ss->n++] = copy;
    return 0;
}

static void sc_sentences_free(sc_sentences *ss)
{
    for (int64_t i = 0; i < ss->n; i++)
        free(ss->s[i]);
    free(ss->s);
    memset(ss, 0, sizeof *ss);
}

/* A sentence is kept if it is plain prose flite reads well: letters, digits,
 * spaces and ordinary punctuation only, SC_MIN..SC_MAX words, and at least
 * one letter per word on average (no tables, code or ASCII art). */
static int sc_sentence_ok(const char *s, size_t len)
{
    int words = 0, letters = 0, in_word = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') {
            in_word = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(",.;:'!?\"-()", c)))
            return 0;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            letters++;
        if (!in_word)
            words++;
        in_word = 1;
    }
    return words >= SC_MIN_WORDS && words <= SC_MAX_WORDS && letters >= 2 * words;
}

/* Normalise whitespace of a paragraph, then cut it into sentences at '.',
 * '!' or '?' followed by a space (or the end) and keep the good ones. A
 * paragraph with a tab or a non-printable byte is dropped whole. */
static int sc_paragraph(sc_sentences *ss, const char *p, size_t len)
{
    char *buf = malloc(len + 1);
    size_t n = 0, start = 0;
    int rc = 0;
    if (!buf)
        return CLAPP_E_NOMEM;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\t' || ((c < 32 || c > 126) && c != '\n')) {
            free(buf);
            return 0;
        }
        if (c == '\n')
            c = ' ';
        if (c == ' ' && (n == 0 || buf[n - 1] == ' '))
            continue;
        buf[n++] = (char)c;
    }
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((buf[i] == '.' || buf[i] == '!' || buf[i] == '?') && (i + 1 == n || buf[i + 1] == ' ')) {
            size_t e = i + 1;
            /* keep a closing quote or bracket with its sentence */
            if (e < n && (buf[e] == '"' || buf[e] == ')'))
                e++;
            if (sc_sentence_ok(buf + start, e - start))
                rc = sc_sentences_add(ss, buf + start, e - start);
            start = e;
            while (start < n && buf[start] == ' ')
                start++;
            i = start > 0 ? start - 1 : 0;
        }
    }
    free(buf);
    return rc;
}

/* A fortune file: entries separated by lines "%"; attribution lines (starting
 * with "--" after spaces) are dropped. */
static int sc_load_fortune_file(sc_sentences *ss, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    char *para = NULL;
    size_t plen = 0, pcap = 0;
    int rc = 0;
    if (!f)
        return CLAPP_E_IO;
    while (rc == 0) {
        int eof = fgets(line, sizeof line, f) == NULL;
        const char *t = line;
        if (eof || strcmp(line, "%\n") == 0 || strcmp(line, "%") == 0) {
            if (plen)
                rc = sc_paragraph(ss, para, plen);
            plen = 0;
            if (eof)
                break;
            continue;
        }
        while (*t == ' ' || *t == '\t')
            t++;
        if (t[0] == '-' && t[1] == '-')
            continue;
        size_t l = strlen(line);
        if (plen + l + 1 > pcap) {
            size_t cap = (plen + l + 1) * 2;
            char *np = realloc(para, cap);
            if (!np) {
                rc = CLAPP_E_NOMEM;
                break;
            }
            para = np;
            pcap = cap;
        }
        memcpy(para + plen, line, l);
        plen += l;
    }
    free(para);
    fclose(f);
    return rc;
}

static int sc_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, so the pool does not depend on directory order. */
static int sc_load_fortunes(sc_sentences *ss)
{
    static const char *const files[] = {
        "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education",
        "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux",
        "linuxcookie", "literature", "love", "magic", "medicine", "men-women", "miscellaneous",
        "news", "paradoxum", "people", "pets", "platitudes", "politics", "pratchett", "riddles",
        "science", "songs-poems", "sports", "startrek", "wisdom", "work", "zippy"};
    int found = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[512];
        int rc;
        snprintf(path, sizeof path, "%s/%s", SC_FORTUNE_DIR, files[i]);
        rc = sc_load_fortune_file(ss, path);
        if (rc == CLAPP_E_IO)
            continue;
        if (rc < 0)
            return rc;
        found++;
    }
    if (!found) {
        fprintf(stderr, "make_speech_corpus: error: no fortune files in %s (apt-get install fortunes "
                        "fortunes-min) and no --text FILE\n", SC_FORTUNE_DIR);
        return CLAPP_E_NOTFOUND;
    }
    return 0;
}

/* One sentence per line; lines that fail the filter are skipped. */
static int sc_load_text(sc_sentences *ss, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    int rc = 0;
    if (!f) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot open the text file: %s\n", path,
                strerror(errno));
        return CLAPP_E_IO;
    }
    while (rc == 0 && fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' '))
            l--;
        int ok = l > 0;
        for (size_t i = 0; i < l && ok; i++)
            ok = line[i] >= 32 && line[i] <= 126;
        if (ok && sc_sentence_ok(line, l))
            rc = sc_sentences_add(ss, line, l);
    }
    fclose(f);
    return rc;
}

static int sc_dedupe(sc_sentences *ss)
{
    int64_t w = 0;
    if (ss->n == 0)
        return 0;
    qsort(ss->s, (size_t)ss->n, sizeof *ss->s, sc_cmp_str);
    for (int64_t i = 0; i < ss->n; i++) {
        if (w > 0 && strcmp(ss->s[w - 1], ss->s[i]) == 0) {
            free(ss->s[i]);
            continue;
        }
        ss->s[w++] = ss->s[i];
    }
    ss->n = w;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Planning and synthesis                                                    */

static void sc_shuffle(int64_t *a, int64_t n, uint64_t *st)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(sc_unif(st) * (double)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Item i of a split: pass p = i / n_sent reads every sentence once, in the
 * split's shuffled order; the voice rotates with the pass so that a sentence
 * gets every voice before any (sentence, voice) pair repeats. */
static void sc_plan(const sc_split *sp, const sc_options *o, int64_t i, sc_item *it)
{
    uint64_t st = sc_mix(o->seed ^ sc_mix(sp->salt + (uint64_t)i));
    int64_t pos = i % sp->n_sent, pass = i / sp->n_sent;
    memset(it, 0, sizeof *it);
    it->sentence = sp->sent[pos];
    it->voice = sp->voices[(pos + pass) % sp->n_voices];
    it->stretch = sc_log_unif(&st, o->stretch_min, o->stretch_max);
    it->pitch = sc_log_unif(&st, o->pitch_min, o->pitch_max);
    it->noise_seed = (unsigned)(sc_mix(st) >> 33);
}

static void sc_item_path(char *buf, size_t cap, const sc_item *it, int64_t index, const char *ext)
{
    snprintf(buf, cap, "wav/%s/%06lld.%s", sc_voice_defs[it->voice].name, (long long)index, ext);
}

/* Synthesise one item into OUT/wav/VOICE/NNNNNN.{flac,phn}. Returns the
 * sample count, 0 for an utterance to skip (no audio or no phones), or a
 * negative CLAPP_E_* (message printed). */
static int64_t sc_synth(const sc_options *o, cst_voice *const *voices, const sc_sentences *ss,
                        const clapp_labelset *phones, const sc_item *it, int64_t index)
{
    cst_voice *v = voices[it->voice];
    cst_utterance *u = NULL;
    cst_wave *w;
    const cst_item *seg;
    SNDFILE *sf = NULL;
    SF_INFO info;
    FILE *phn = NULL;
    char rel[128], path[4096];
    int64_t n = 0, start = 0, status;

    feat_set_float(v->features, "duration_stretch", (float)it->stretch);
    feat_set_float(v->features, "f0_shift", (float)it->pitch);
    /* The CG voices draw unvoiced excitation from rand(): seed it per item so
     * that the audio does not depend on which items a process made before. */
    srand(it->noise_seed);
    u = flite_synth_text(ss->s[it->sentence], v);
    if (!u || !(w = utt_wave(u)) || w->num_samples <= 0 || !utt_relation(u, "Segment") ||
        !relation_head(utt_relation(u, "Segment"))) {
        status = 0;
        goto done;
    }
    if (w->sample_rate != SC_RATE || w->num_channels != 1) {
        fprintf(stderr, "make_speech_corpus: error: voice %s gave %d Hz x %d channels, expected %d Hz mono\n",
                sc_voice_defs[it->voice].name, w->sample_rate, w->num_channels, SC_RATE);
        status = CLAPP_E_FORMAT;
        goto done;
    }
    n = w->num_samples;

    sc_item_path(rel, sizeof rel, it, index, "phn");
    snprintf(path, sizeof path, "%s/%s", o->out, rel);
    phn = fopen(path, "w");
    if (!phn) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot write: %s\n", path, strerror(errno));
        status = CLAPP_E_IO;
        goto done;
    }
    /* A phone starts where the previous one ends; the last one is clamped
     * (or extended) to the wave so that the labels cover the audio exactly. */
    for (seg = relation_head(utt_relation(u, "Segment")); seg; seg = item_next(seg)) {
        const char *name = item_name(seg);
        int64_t end = (int64_t)llround((double)item_feat_float(seg, "end") * SC_RATE);
        if (clapp_labelset_find(phones, name) < 0) {
            fprintf(stderr, "make_speech_corpus: error: flite phone '%s' (voice %s, sentence \"%s\") is "
                            "not in the 41-phone set\n", name, sc_voice_defs[it->voice].name,
                    ss->s[it->sentence]);
            status = CLAPP_E_FORMAT;
            goto done;
        }
        if (!item_next(seg) || end > n)
            end = n;
        if (end < start)
            end = start;
        fprintf(phn, "%lld %lld %s\n", (long long)start, (long long)end, name);
        start = end;
    }
    if (fclose(phn) != 0) {
        phn = NULL;
        fprintf(stderr, "make_speech_corpus: error: %s: write failed\n", path);
        status = CLAPP_E_IO;
        goto done;
    }
    phn = NULL;

    sc_item_path(rel, sizeof rel, it, index, "flac");
    snprintf(path, sizeof path, "%s/%s", o->out, rel);
    memset(&info, 0, sizeof info);
    info.samplerate = SC_RATE;
    info.channels = 1;
    info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
    sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot write: %s\n", path, sf_strerror(NULL));
        status = CLAPP_E_IO;
        goto done;
    }
    if (sf_write_short(sf, w->samples, n) != n) {
        fprintf(stderr, "make_speech_corpus: error: %s: write failed: %s\n", path, sf_strerror(sf));
        status = CLAPP_E_IO;
        goto done;
    }
    status = n;
done:
    if (sf && sf_close(sf) != 0 && status > 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: close failed\n", path);
        status = CLAPP_E_IO;
    }
    if (phn)
        fclose(phn);
    if (u)
        delete_utterance(u);
    return status;
}

/* One round: items [first, first + count) of a split, spread over the
 * workers. Fills sp->items[].samples. Returns 0 or a negative CLAPP_E_*. */
static int sc_round(const sc_options *o, cst_voice *const *voices, const sc_sentences *ss,
                    const clapp_labelset *phones, sc_split *sp, int64_t first, int64_t count)
{
    int workers = o->threads < 1 ? 1 : o->threads;
    pid_t pids[64];
    int fds[64];
    int started = 0, status = 0;

    if (workers == 1) {
        for (int64_t i = first; i < first + count; i++) {
            int64_t r = sc_synth(o, voices, ss, phones, &sp->items[i], i);
            if (r < 0)
                return (int)r;
            sp->items[i].samples = r;
        }
        return 0;
    }
    if (workers > 64)
        workers = 64;
    fflush(NULL);
    for (int k = 0; k < workers; k++) {
        int p[2];
        if (pipe(p) != 0) {
            fprintf(stderr, "make_speech_corpus: error: pipe: %s\n", strerror(errno));
            status = CLAPP_E_INTERNAL;
            break;
        }
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "make_speech_corpus: error: fork: %s\n", strerror(errno));
            close(p[0]);
            close(p[1]);
            status = CLAPP_E_INTERNAL;
            break;
        }
        if (pid == 0) {
            int bad = 0;
            close(p[0]);
            for (int64_t i = first + k; i < first + count && !bad; i += workers) {
                sc_record rec = {i, sc_synth(o, voices, ss, phones, &sp->items[i], i)};
                bad = rec.samples < 0;
                if (write(p[1], &rec, sizeof rec) != (ssize_t)sizeof rec)
                    bad = 1;
            }
            close(p[1]);
            _exit(bad ? 1 : 0);
        }
        close(p[1]);
        pids[started] = pid;
        fds[started++] = p[0];
    }
    for (int k = 0; k < started; k++) {
        sc_record rec;
        ssize_t r;
        int ws = 0;
        while ((r = read(fds[k], &rec, sizeof rec)) == (ssize_t)sizeof rec) {
            if (rec.index < first || rec.index >= first + count)
                continue;
            if (rec.samples < 0 && status == 0)
                status = (int)rec.samples;
            sp->items[rec.index].samples = rec.samples > 0 ? rec.samples : 0;
        }
        close(fds[k]);
        if (waitpid(pids[k], &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
            if (status == 0)
                status = CLAPP_E_INTERNAL;
    }
    return status;
}

static void sc_progress(const sc_options *o, const sc_split *tr, const sc_split *te, double t0, int final)
{
    double el = sc_now() - t0, audio = tr->done_s + te->done_s;
    if (o->quiet)
        return;
    fprintf(stderr, "\rmake_speech_corpus: train %.3f/%.3f h, test %.3f/%.3f h, %.0f s elapsed, %.0fx real time%s",
            tr->done_s / 3600, tr->target_s / 3600, te->done_s / 3600, te->target_s / 3600, el,
            el > 0 ? audio / el : 0.0, final ? "\n" : "   ");
}

/* Synthesise items of a split until its kept prefix reaches target_s. */
static int sc_generate(const sc_options *o, cst_voice *const *voices, const sc_sentences *ss,
                       const clapp_labelset *phones, sc_split *sp, const sc_split *other, double t0)
{
    int workers = o->threads < 1 ? 1 : o->threads;
    int64_t next = 0;
    int rc;
    const sc_split *tr = strcmp(sp->name, "train") == 0 ? sp : other;
    const sc_split *te = tr == sp ? other : sp;

    sp->done_s = 0;
    while (sp->done_s < sp->target_s) {
        /* Rounds sized to the remaining duration (mean so far, 3 s at first)
         * so that little is synthesised past the target; the kept prefix
         * does not depend on the round size. */
        double mean = next > 0 && sp->done_s > 0 ? sp->done_s / (double)next : 3.0;
        int64_t count = (int64_t)ceil((sp->target_s - sp->done_s) / mean * 1.1) + 1, keep;
        if (count > (int64_t)SC_ROUND * workers)
            count = (int64_t)SC_ROUND * workers;
        count = (count + workers - 1) / workers * workers;
        if (next + count > sp->cap_items) {
            int64_t cap = (next + count) * 2;
            sc_item *p = realloc(sp->items, (size_t)cap * sizeof *p);
            if (!p)
                return CLAPP_E_NOMEM;
            sp->items = p;
            sp->cap_items = cap;
        }
        for (int64_t i = next; i < next + count; i++)
            sc_plan(sp, o, i, &sp->items[i]);
        rc = sc_round(o, voices, ss, phones, sp, next, count);
        if (rc < 0)
            return rc;
        /* Keep the prefix that reaches the target; delete the files of the rest. */
        keep = next + count;
        for (int64_t i = next; i < next + count; i++) {
            if (sp->done_s >= sp->target_s) {
                keep = i;
                break;
            }
            sp->done_s += (double)sp->items[i].samples / SC_RATE;
        }
        for (int64_t i = keep; i < next + count; i++) {
            char rel[128], path[4096];
            const char *ext[2] = {"flac", "phn"};
            for (int e = 0; e < 2; e++) {
                sc_item_path(rel, sizeof rel, &sp->items[i], i, ext[e]);
                snprintf(path, sizeof path, "%s/%s", o->out, rel);
                unlink(path);
            }
        }
        sp->n_items = keep;
        next = keep;
        sc_progress(o, tr, te, t0, 0);
        if (sp->done_s == 0 && next >= 4 * (int64_t)SC_ROUND * workers) {
            fprintf(stderr, "\nmake_speech_corpus: error: flite produced no audio for %lld %s items\n",
                    (long long)next, sp->name);
            return CLAPP_E_INTERNAL;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

static int sc_write_manifest(const sc_options *o, const char *name, const sc_split *sp, double max_s)
{
    char path[4096], rel[128];
    FILE *f;
    double acc = 0;
    snprintf(path, sizeof path, "%s/%s", o->out, name);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot write: %s\n", path, strerror(errno));
        return CLAPP_E_IO;
    }
    for (int64_t i = 0; i < sp->n_items && (max_s <= 0 || acc < max_s); i++) {
        if (sp->items[i].samples <= 0)
            continue;
        sc_item_path(rel, sizeof rel, &sp->items[i], i, "flac");
        fprintf(f, "%s\t\t", rel);
        sc_item_path(rel, sizeof rel, &sp->items[i], i, "phn");
        fprintf(f, "%s\n", rel);
        acc += (double)sp->items[i].samples / SC_RATE;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: write failed\n", path);
        return CLAPP_E_IO;
    }
    return 0;
}

static int sc_write_items(const sc_options *o, const sc_sentences *ss, const sc_split *const *splits)
{
    char path[4096], rel[128];
    FILE *f;
    snprintf(path, sizeof path, "%s/items.tsv", o->out);
    f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot write: %s\n", path, strerror(errno));
        return CLAPP_E_IO;
    }
    fprintf(f, "# path\tsplit\tvoice\tsamples\tduration_stretch\tf0_shift\ttext\n");
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < splits[s]->n_items; i++) {
            const sc_item *it = &splits[s]->items[i];
            if (it->samples <= 0)
                continue;
            sc_item_path(rel, sizeof rel, it, i, "flac");
            fprintf(f, "%s\t%s\t%s\t%lld\t%.4f\t%.4f\t%s\n", rel, splits[s]->name,
                    sc_voice_defs[it->voice].name, (long long)it->samples, it->stretch, it->pitch,
                    ss->s[it->sentence]);
        }
    if (fclose(f) != 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: write failed\n", path);
        return CLAPP_E_IO;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */

static void sc_usage(void)
{
    printf("usage: make_speech_corpus --out DIR [options]\n"
           "Synthesises a phone-aligned speech corpus with flite (16 kHz FLAC + TIMIT-style .phn).\n"
           "  --out DIR             output folder (created)\n"
           "  --hours H             total audio, train + test (default 1)\n"
           "  --test-share F        part of the hours spoken by the test voices (default 0.1)\n"
           "  --probe-hours H       hours of training items in probe-train.tsv (default: all)\n"
           "  --seed S              the same seed gives the same corpus (default 1)\n"
           "  --voices LIST         training voices (default slt,rms,kal16)\n"
           "  --test-voices LIST    held-out voices (default awb); voices: slt rms awb kal16\n"
           "  --test-sentences F    fraction of sentences held out for the test (default 0.1)\n"
           "  --text FILE           one sentence per line instead of the fortunes files\n"
           "  --stretch MIN,MAX     duration_stretch range, log-uniform (default 0.8,1.25)\n"
           "  --pitch MIN,MAX       f0_shift range, log-uniform (default 0.85,1.18; 1,1: off)\n"
           "  --threads N           worker processes (default 2)\n"
           "  -q                    no progress line\n");
}

static int sc_parse(sc_options *o, int argc, char **argv, int *help)
{
    const char *voices = "slt,rms,kal16", *test_voices = "awb";
    memset(o, 0, sizeof *o);
    o->hours = 1.0;
    o->test_share = 0.1;
    o->probe_hours = 0;
    o->seed = 1;
    o->threads = 2;
    o->test_sentences = 0.1;
    o->stretch_min = 0.8;
    o->stretch_max = 1.25;
    o->pitch_min = 0.85;
    o->pitch_max = 1.18;
    *help = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = 1;
            return 0;
        }
        if (strcmp(a, "-q") == 0) {
            o->quiet = 1;
            continue;
        }
        if (a[0] != '-' || !v) {
            fprintf(stderr, "make_speech_corpus: error: %s '%s' (try --help)\n",
                    a[0] == '-' ? "missing value after" : "unexpected argument", a);
            return CLAPP_E_INVAL;
        }
        i++;
        errno = 0;
        if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--text") == 0)
            o->text = v;
        else if (strcmp(a, "--voices") == 0)
            voices = v;
        else if (strcmp(a, "--test-voices") == 0)
            test_voices = v;
        else if (strcmp(a, "--hours") == 0)
            o->hours = strtod(v, &end);
        else if (strcmp(a, "--test-share") == 0)
            o->test_share = strtod(v, &end);
        else if (strcmp(a, "--probe-hours") == 0)
            o->probe_hours = strtod(v, &end);
        else if (strcmp(a, "--test-sentences") == 0)
            o->test_sentences = strtod(v, &end);
        else if (strcmp(a, "--seed") == 0)
            o->seed = strtoull(v, &end, 10);
        else if (strcmp(a, "--threads") == 0)
            o->threads = (int)strtol(v, &end, 10);
        else if (strcmp(a, "--stretch") == 0) {
            if (sc_parse_range(v, &o->stretch_min, &o->stretch_max) < 0) {
                fprintf(stderr, "make_speech_corpus: error: --stretch wants MIN,MAX with 0 < MIN <= MAX\n");
                return CLAPP_E_INVAL;
            }
        } else if (strcmp(a, "--pitch") == 0) {
            if (sc_parse_range(v, &o->pitch_min, &o->pitch_max) < 0) {
                fprintf(stderr, "make_speech_corpus: error: --pitch wants MIN,MAX with 0 < MIN <= MAX\n");
                return CLAPP_E_INVAL;
            }
        } else {
            fprintf(stderr, "make_speech_corpus: error: unknown option '%s' (try --help)\n", a);
            return CLAPP_E_INVAL;
        }
        if (end && (*end != '\0' || errno)) {
            fprintf(stderr, "make_speech_corpus: error: %s: bad number '%s'\n", a, v);
            return CLAPP_E_INVAL;
        }
    }
    if (!o->out) {
        fprintf(stderr, "make_speech_corpus: error: --out DIR is required (try --help)\n");
        return CLAPP_E_INVAL;
    }
    if (!(o->hours > 0) || !(o->test_share >= 0 && o->test_share < 1) || o->probe_hours < 0 ||
        !(o->test_sentences > 0 && o->test_sentences < 1) || o->threads < 1 || o->threads > 64 ||
        o->stretch_max > 4 || o->pitch_max > 4) {
        fprintf(stderr, "make_speech_corpus: error: out of range: need --hours > 0, 0 <= --test-share < 1, "
                        "0 < --test-sentences < 1, 1 <= --threads <= 64, factors <= 4\n");
        return CLAPP_E_INVAL;
    }
    if ((o->n_train = sc_parse_voices(voices, o->train_voice)) < 0 ||
        (o->n_test = sc_parse_voices(test_voices, o->test_voice)) < 0)
        return CLAPP_E_INVAL;
    for (int i = 0; i < o->n_train; i++)
        for (int j = 0; j < o->n_test; j++)
            if (o->train_voice[i] == o->test_voice[j]) {
                fprintf(stderr, "make_speech_corpus: error: voice '%s' is both a training and a test voice\n",
                        sc_voice_defs[o->train_voice[i]].name);
                return CLAPP_E_INVAL;
            }
    return 0;
}

int main(int argc, char **argv)
{
    sc_options o;
    sc_sentences ss = {0};
    clapp_labelset phones = {0};
    cst_voice *voices[SC_MAX_VOICES] = {0};
    sc_split train = {0}, test = {0};
    int64_t *perm = NULL, n_test_sent;
    int help, rc;
    uint64_t st;
    double t0;

    rc = sc_parse(&o, argc, argv, &help);
    if (rc < 0 || help) {
        if (help)
            sc_usage();
        return rc < 0 ? 2 : 0;
    }
    rc = o.text ? sc_load_text(&ss, o.text) : sc_load_fortunes(&ss);
    if (rc < 0)
        goto fail;
    sc_dedupe(&ss);
    if (ss.n < 2) {
        fprintf(stderr, "make_speech_corpus: error: %s: only %lld usable sentences (need 2+: printable ASCII, "
                        "%d-%d words)\n", o.text ? o.text : SC_FORTUNE_DIR, (long long)ss.n, SC_MIN_WORDS,
                SC_MAX_WORDS);
        rc = CLAPP_E_FORMAT;
        goto fail;
    }
    if (sc_mkdirs(o.out) != 0 || access(o.out, W_OK) != 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot create or write the output folder: %s\n", o.out,
                strerror(errno));
        rc = CLAPP_E_IO;
        goto fail;
    }
    for (int k = 0; k < 2; k++) {
        const int *vl = k ? o.test_voice : o.train_voice;
        for (int i = 0; i < (k ? o.n_test : o.n_train); i++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/wav/%s", o.out, sc_voice_defs[vl[i]].name);
            if (sc_mkdirs(dir) != 0) {
                fprintf(stderr, "make_speech_corpus: error: %s: cannot create: %s\n", dir, strerror(errno));
                rc = CLAPP_E_IO;
                goto fail;
            }
        }
    }
    rc = clapp_labelset_init_cmu41(&phones);
    if (rc < 0)
        goto fail;

    /* Split the sentence pool once, from the seed. */
    perm = malloc((size_t)ss.n * sizeof *perm);
    if (!perm) {
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    for (int64_t i = 0; i < ss.n; i++)
        perm[i] = i;
    st = sc_mix(o.seed ^ 0x5e27e2ce5ull);
    sc_shuffle(perm, ss.n, &st);
    n_test_sent = (int64_t)ceil(o.test_sentences * (double)ss.n);
    if (n_test_sent >= ss.n)
        n_test_sent = ss.n - 1;
    test.name = "test";
    test.voices = o.test_voice;
    test.n_voices = o.n_test;
    test.sent = perm;
    test.n_sent = n_test_sent;
    test.salt = 0x7e57ull << 40;
    test.target_s = o.hours * 3600 * o.test_share;
    train.name = "train";
    train.voices = o.train_voice;
    train.n_voices = o.n_train;
    train.sent = perm + n_test_sent;
    train.n_sent = ss.n - n_test_sent;
    train.salt = 0x7a1eull << 40;
    train.target_s = o.hours * 3600 - test.target_s;

    flite_init();
    for (int i = 0; i < SC_MAX_VOICES; i++)
        voices[i] = sc_voice_defs[i].reg(NULL);
    if (!o.quiet)
        fprintf(stderr, "make_speech_corpus: %lld sentences (%lld held out), voices train %d test %d, "
                        "%.3f h into %s\n", (long long)ss.n, (long long)n_test_sent, o.n_train, o.n_test,
                o.hours, o.out);
    t0 = sc_now();
    rc = sc_generate(&o, voices, &ss, &phones, &train, &test, t0);
    if (rc == 0)
        rc = sc_generate(&o, voices, &ss, &phones, &test, &train, t0);
    sc_progress(&o, &train, &test, t0, 1);
    if (rc < 0)
        goto fail;
    {
        const sc_split *splits[2] = {&train, &test};
        rc = sc_write_manifest(&o, "ssl-train.tsv", &train, 0);
        if (rc == 0)
            rc = sc_write_manifest(&o, "probe-train.tsv", &train, o.probe_hours * 3600);
        if (rc == 0)
            rc = sc_write_manifest(&o, "probe-test.tsv", &test, 0);
        if (rc == 0)
            rc = sc_write_items(&o, &ss, splits);
    }
    if (rc == 0 && !o.quiet) {
        double el = sc_now() - t0;
        fprintf(stderr, "make_speech_corpus: wrote %lld train + %lld test items, %.3f h in %.1f s "
                        "(%.2f h of audio per minute)\n", (long long)train.n_items, (long long)test.n_items,
                (train.done_s + test.done_s) / 3600, el, el > 0 ? (train.done_s + test.done_s) / 60 / el : 0.0);
    }
fail:
    for (int i = 0; i < SC_MAX_VOICES; i++)
        if (voices[i])
            sc_voice_defs[i].unreg(voices[i]);
    free(train.items);
    free(test.items);
    free(perm);
    clapp_labelset_free(&phones);
    sc_sentences_free(&ss);
    return rc < 0 ? 1 : 0;
}
