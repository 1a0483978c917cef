/* make_speech_corpus — a phone-aligned speech corpus synthesised with flite
 * and espeak-ng.
 *
 * The paper's probe needs speech with frame-level phone labels (LibriSpeech
 * with forced alignments), which cannot be downloaded here. Both synthesisers
 * give the audio and the phone sequence with exact times, so every sentence
 * comes with an exact alignment: flite in its Segment relation (end times),
 * espeak-ng in its phoneme events (the start sample of every phone).
 *
 * A self-supervised encoder also learns the speakers, so the corpus has many:
 * flite's four voices and espeak-ng's English accents x voice variants.
 *
 *   make_speech_corpus --out DIR [--hours H] [--seed S] [--voices LIST]
 *                      [--val-voices LIST] [--test-voices LIST] [--text FILE]
 *                      [--threads N] ...
 *
 * Voices: slt, rms, awb, kal16 (flite), espeak:ACCENT or espeak:ACCENT+VARIANT
 * (e.g. espeak:en-gb-scotland+f2; accents en-us en-gb en-gb-scotland
 * en-gb-x-rp en-gb-x-gbclan en-gb-x-gbcwmd en-029 en-us-nyc; a variant is a
 * file of espeak-ng's voices/!v), and the sets espeak-train, espeak-val,
 * espeak-test (every accent with variants m1-m6 f1-f3 klatt-klatt3, with
 * m7 f4 klatt4, with m8 f5 klatt5). "default" in a list stands for that
 * list's default; "none" leaves the validation split empty. Defaults:
 *   --voices      slt,rms,kal16,espeak-train   (99 voices)
 *   --val-voices  espeak-val                   (24 voices)
 *   --test-voices awb,espeak-test              (25 voices)
 * so validation and test speakers are variants (and awb) never heard in
 * training, in every accent. A voice may be in one list only.
 *
 * Layout of DIR:
 *   wav/VOICE/NNNNNN.flac   16 kHz mono 16-bit FLAC (VOICE: slt, espeak-en-us+m3, ...)
 *   wav/VOICE/NNNNNN.phn    TIMIT style "start end phone", samples at 16 kHz
 *   ssl-train.tsv           all training items (path, empty label, phn path)
 *   probe-train.tsv         the first --probe-hours of them (default all)
 *   probe-val.tsv           held-out sentences spoken by the validation voices
 *   probe-test.tsv          held-out sentences spoken by the test voices
 *   items.tsv               per item: path, split, voice, stretch, pitch, text
 * Test and validation sentences are disjoint from each other and from the
 * training sentences.
 *
 * Labels: the 41 classes of clapp_labelset_init_cmu41 (39 CMU phones, ax,
 * pau). flite's phones are these already; espeak-ng's phoneme names are
 * mapped by the table in espeak_cmu41.h. espeak-ng speaks at 22050 Hz: its
 * audio is resampled to 16 kHz with libswresample (a band-limited filter
 * whose output is time-aligned with its input) and the phone start samples
 * are scaled by 16000/22050. Phones that round to no sample get no line.
 *
 * Determinism: item i of a split depends only on (seed, split, i): its
 * sentence, voice, speaking rate and pitch factor. Items are synthesised in
 * rounds by forked workers (flite and espeak-ng keep global state, so
 * processes rather than threads) and the parent keeps the prefix of items
 * that reaches the requested duration. espeak-ng's output also depends on
 * what it said before in the process, so with espeak voices a worker makes
 * a fixed chunk of 32 consecutive items from a fresh fork (see sc_round).
 * The corpus does not depend on --threads. Both synthesisers draw noise from
 * rand(): it is seeded per item.
 *
 * Variety: voices; speaking rate through flite's duration_stretch (espeak:
 * 175 / stretch words per minute); pitch through flite's f0_shift feature,
 * which scales the F0 contour without changing durations (sample counts and
 * phone times are unchanged on slt and awb; kal16 moves by a few samples,
 * absorbed by the clamp; rms ignores f0_shift), and espeak's pitch parameter
 * (50 + 50 log2(factor): espeak scales the voice's base pitch by 2^((p-50)/50)).
 */
#include <errno.h>
#include <espeak-ng/speak_lib.h>
#include <flite/flite.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
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
#include "clapp/plugin_util.h"
#include "espeak_cmu41.h"
#include "media/manifest.h"

cst_voice *register_cmu_us_slt(const char *voxdir);
cst_voice *register_cmu_us_rms(const char *voxdir);
cst_voice *register_cmu_us_awb(const char *voxdir);
cst_voice *register_cmu_us_kal16(const char *voxdir);
void unregister_cmu_us_slt(cst_voice *v);
void unregister_cmu_us_rms(cst_voice *v);
void unregister_cmu_us_awb(cst_voice *v);
void unregister_cmu_us_kal16(cst_voice *v);

#define SC_RATE 16000
#define SC_ESPEAK_RATE 22050
#define SC_N_FLITE 4
#define SC_MAX_VOICES 256
#define SC_CHUNK 32          /* items made in order by one process: see sc_round */
#define SC_MIN_WORDS 3
#define SC_MAX_WORDS 25
#define SC_FORTUNE_DIR "/usr/share/games/fortunes"

typedef struct sc_flite_def {
    const char *name;
    cst_voice *(*reg)(const char *);
    void (*unreg)(cst_voice *);
} sc_flite_def;

static const sc_flite_def sc_flite_defs[SC_N_FLITE] = {
    {"slt", register_cmu_us_slt, unregister_cmu_us_slt},
    {"rms", register_cmu_us_rms, unregister_cmu_us_rms},
    {"awb", register_cmu_us_awb, unregister_cmu_us_awb},
    {"kal16", register_cmu_us_kal16, unregister_cmu_us_kal16},
};

/* English accents only: the phone map covers espeak's English phonemes.
 * espeak-ng 1.51 knows British English as "en", not "en-gb". */
typedef struct sc_accent {
    const char *name;     /* as in espeak:NAME */
    const char *espeak;   /* as espeak_SetVoiceByName wants it */
} sc_accent;

static const sc_accent sc_accents[] = {
    {"en-us", "en-us"},           {"en-gb", "en"},         {"en-gb-scotland", "en-gb-scotland"},
    {"en-gb-x-rp", "en-gb-x-rp"}, {"en-gb-x-gbclan", "en-gb-x-gbclan"},
    {"en-gb-x-gbcwmd", "en-gb-x-gbcwmd"}, {"en-029", "en-029"}, {"en-us-nyc", "en-us-nyc"},
};
#define SC_N_ACCENTS ((int)(sizeof sc_accents / sizeof sc_accents[0]))

/* The espeak sets: every accent with these variants. Disjoint, so that the
 * validation and test speakers are timbres the training never had. */
typedef struct sc_espeak_set {
    const char *name;
    const char *variants;
} sc_espeak_set;

static const sc_espeak_set sc_espeak_sets[] = {
    {"espeak-train", "m1,m2,m3,m4,m5,m6,f1,f2,f3,klatt,klatt2,klatt3"},
    {"espeak-val", "m7,f4,klatt4"},
    {"espeak-test", "m8,f5,klatt5"},
};

#define SC_DEFAULT_TRAIN "slt,rms,kal16,espeak-train"
#define SC_DEFAULT_VAL "espeak-val"
#define SC_DEFAULT_TEST "awb,espeak-test"

typedef struct sc_voice {
    char name[64];     /* as given and in items.tsv: "slt", "espeak:en-us+m3" */
    char dir[64];      /* folder under wav/: "slt", "espeak-en-us+m3" */
    int  flite;        /* index into sc_flite_defs, or -1: espeak */
    char espeak[64];   /* espeak_SetVoiceByName name: "en-us+m3", "en+f2" */
    char variant[32];  /* espeak variant, "" for none */
} sc_voice;

typedef struct sc_voice_list {
    int idx[SC_MAX_VOICES];   /* indices into sc_options.voice */
    int n;
} sc_voice_list;

typedef struct sc_options {
    const char *out;
    const char *text;
    double      hours, test_share, val_share, probe_hours;
    double      stretch_min, stretch_max, pitch_min, pitch_max;
    double      test_sentences, val_sentences;   /* fractions of sentences held out */
    uint64_t    seed;
    int         threads;
    int         quiet;
    sc_voice    voice[SC_MAX_VOICES];   /* every voice named in the lists */
    int         n_voices;
    sc_voice_list train, val, test;
} sc_options;

typedef struct sc_sentences {
    char  **s;
    int64_t n, cap;
} sc_sentences;

/* One planned item and, once synthesised, its length. */
typedef struct sc_item {
    int64_t sentence;   /* index into the sentence pool */
    int     voice;      /* index into sc_options.voice */
    double  stretch, pitch;
    unsigned noise_seed; /* both synthesisers draw noise from rand() */
    int64_t samples;    /* 0: not synthesised or failed */
} sc_item;

/* What a worker sends back per item. */
typedef struct sc_record {
    int64_t index;
    int64_t samples;    /* > 0 written; 0 skipped (no audio / no phones); < 0 error */
} sc_record;

typedef struct sc_split {
    const char *name;         /* "train", "val" or "test" */
    const sc_voice_list *voices;
    int64_t    *sent;         /* sentence indices of this split, shuffled */
    int64_t     n_sent;
    uint64_t    salt;
    double      target_s;     /* seconds to generate */
    sc_item    *items;
    int64_t     n_items, cap_items;
    double      done_s;       /* seconds of the kept prefix */
} sc_split;

/* What synthesis needs besides the options; the same in every worker. */
typedef struct sc_synth_ctx {
    cst_voice            *flite[SC_N_FLITE];   /* registered when used */
    int                   espeak;              /* espeak-ng initialised */
    const sc_sentences   *ss;
    const clapp_labelset *phones;
} sc_synth_ctx;

/* One synthesised utterance at 16 kHz: samples and phone segments, each
 * starting where the previous one ends. */
typedef struct sc_utt {
    int16_t *s;
    int64_t  n, cap;
    int64_t *seg_end;
    int     *seg_label;   /* ids in the 41-phone set */
    int64_t  n_seg, cap_seg;
} sc_utt;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static uint64_t sc_mix(uint64_t z)
{
    return clapp_mix64(z + 0x9e3779b97f4a7c15ull);
}

/* Uniform in [0, 1) from a 64-bit state (advanced). */
static double sc_unif(uint64_t *st)
{
    *st = sc_mix(*st);
    return (double)(*st >> 11) * 0x1.0p-53;
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

/* ------------------------------------------------------------------------ */
/* Voices                                                                    */

/* Fills *v from a voice name ("awb", "espeak:en-gb+f2"). Returns 0 or -1
 * (message printed). Whether an espeak variant exists is checked later,
 * once espeak-ng knows its data folder. */
static int sc_voice_from_name(sc_voice *v, const char *name)
{
    const char *accent, *plus;
    size_t alen;
    memset(v, 0, sizeof *v);
    v->flite = -1;
    if (strlen(name) >= sizeof v->name) {
        fprintf(stderr, "make_speech_corpus: error: voice name '%s' is too long\n", name);
        return -1;
    }
    strcpy(v->name, name);
    for (int i = 0; i < SC_N_FLITE; i++)
        if (strcmp(sc_flite_defs[i].name, name) == 0) {
            v->flite = i;
            strcpy(v->dir, name);
            return 0;
        }
    if (strncmp(name, "espeak:", 7) != 0) {
        fprintf(stderr, "make_speech_corpus: error: unknown voice '%s' (voices: slt, rms, awb, kal16, "
                        "espeak:ACCENT[+VARIANT], espeak-train, espeak-val, espeak-test, default)\n", name);
        return -1;
    }
    accent = name + 7;
    plus = strchr(accent, '+');
    alen = plus ? (size_t)(plus - accent) : strlen(accent);
    for (int i = 0; i < SC_N_ACCENTS; i++)
        if (strlen(sc_accents[i].name) == alen && strncmp(sc_accents[i].name, accent, alen) == 0) {
            const char *var = plus ? plus + 1 : "";
            /* a variant becomes part of a folder name: plain characters only */
            if ((plus && !*var) || strlen(var) >= sizeof v->variant ||
                strspn(var, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(var)) {
                fprintf(stderr, "make_speech_corpus: error: voice '%s': bad variant name '%s'\n", name, var);
                return -1;
            }
            strcpy(v->variant, var);
            snprintf(v->espeak, sizeof v->espeak, "%s%s%s", sc_accents[i].espeak, *var ? "+" : "", var);
            snprintf(v->dir, sizeof v->dir, "espeak-%s", accent);
            return 0;
        }
    fprintf(stderr, "make_speech_corpus: error: voice '%s': unknown espeak accent '%.*s' (accents:", name,
            (int)alen, accent);
    for (int i = 0; i < SC_N_ACCENTS; i++)
        fprintf(stderr, " %s", sc_accents[i].name);
    fprintf(stderr, ")\n");
    return -1;
}

static const char *sc_split_title(const char *split)
{
    return strcmp(split, "train") == 0 ? "training" : strcmp(split, "val") == 0 ? "validation" : "test";
}

/* Adds one voice to a list of split 'split'. A voice may be in one list and
 * once only. Returns 0 or -1 (message printed). */
static int sc_list_add(sc_options *o, sc_voice_list *list, const char *split, const char *name)
{
    sc_voice v;
    int id = -1;
    if (sc_voice_from_name(&v, name) < 0)
        return -1;
    for (int i = 0; i < o->n_voices && id < 0; i++)
        if (strcmp(o->voice[i].name, name) == 0)
            id = i;
    if (id >= 0) {
        const char *other = NULL;
        for (int i = 0; i < list->n; i++)
            if (list->idx[i] == id) {
                fprintf(stderr, "make_speech_corpus: error: voice '%s' listed twice\n", name);
                return -1;
            }
        for (int i = 0; i < o->train.n; i++)
            other = o->train.idx[i] == id ? "train" : other;
        for (int i = 0; i < o->val.n; i++)
            other = o->val.idx[i] == id ? "val" : other;
        for (int i = 0; i < o->test.n; i++)
            other = o->test.idx[i] == id ? "test" : other;
        fprintf(stderr, "make_speech_corpus: error: voice '%s' is both a %s and a %s voice\n", name,
                sc_split_title(other ? other : split), sc_split_title(split));
        return -1;
    }
    if (o->n_voices == SC_MAX_VOICES || list->n == SC_MAX_VOICES) {
        fprintf(stderr, "make_speech_corpus: error: more than %d voices\n", SC_MAX_VOICES);
        return -1;
    }
    o->voice[o->n_voices] = v;
    list->idx[list->n++] = o->n_voices++;
    return 0;
}

/* "slt,espeak:en-us+m3,espeak-val" -> list. 'dflt' is what "default"
 * stands for (NULL inside a default). Returns 0 or -1 (message printed). */
static int sc_parse_voices(sc_options *o, sc_voice_list *list, const char *split, const char *text,
                           const char *dflt)
{
    char buf[1024], *save = NULL, *tok;
    int none = 0;
    if (strlen(text) >= sizeof buf) {
        fprintf(stderr, "make_speech_corpus: error: voice list too long\n");
        return -1;
    }
    strcpy(buf, text);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int set = -1;
        if (strcmp(tok, "default") == 0 && dflt) {
            if (sc_parse_voices(o, list, split, dflt, NULL) < 0)
                return -1;
            continue;
        }
        if (strcmp(tok, "none") == 0) {
            none = 1;
            continue;
        }
        for (int i = 0; i < (int)(sizeof sc_espeak_sets / sizeof sc_espeak_sets[0]); i++)
            if (strcmp(tok, sc_espeak_sets[i].name) == 0)
                set = i;
        if (set < 0) {
            if (sc_list_add(o, list, split, tok) < 0)
                return -1;
            continue;
        }
        /* accents x variants, accent-major so the voices rotate over variants */
        for (int a = 0; a < SC_N_ACCENTS; a++) {
            char vars[256], *vsave = NULL, *var;
            snprintf(vars, sizeof vars, "%s", sc_espeak_sets[set].variants);
            for (var = strtok_r(vars, ",", &vsave); var; var = strtok_r(NULL, ",", &vsave)) {
                char name[64];
                snprintf(name, sizeof name, "espeak:%s+%s", sc_accents[a].name, var);
                if (sc_list_add(o, list, split, name) < 0)
                    return -1;
            }
        }
    }
    if (none && list->n > 0) {
        fprintf(stderr, "make_speech_corpus: error: 'none' with other voices in the %s voice list\n",
                sc_split_title(split));
        return -1;
    }
    if (!none && list->n == 0 && dflt) {
        fprintf(stderr, "make_speech_corpus: error: empty %s voice list\n", sc_split_title(split));
        return -1;
    }
    return 0;
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
    it->voice = sp->voices->idx[(pos + pass) % sp->voices->n];
    it->stretch = sc_log_unif(&st, o->stretch_min, o->stretch_max);
    it->pitch = sc_log_unif(&st, o->pitch_min, o->pitch_max);
    it->noise_seed = (unsigned)(sc_mix(st) >> 33);
}

static void sc_item_path(const sc_options *o, char *buf, size_t cap, const sc_item *it, int64_t index,
                         const char *ext)
{
    snprintf(buf, cap, "wav/%s/%06lld.%s", o->voice[it->voice].dir, (long long)index, ext);
}

static int sc_utt_samples(sc_utt *u, const int16_t *s, int64_t n)
{
    if (u->n + n > u->cap) {
        int64_t cap = (u->n + n) * 2;
        int16_t *p = realloc(u->s, (size_t)cap * sizeof *p);
        if (!p)
            return CLAPP_E_NOMEM;
        u->s = p;
        u->cap = cap;
    }
    memcpy(u->s + u->n, s, (size_t)n * sizeof *s);
    u->n += n;
    return 0;
}

static int sc_utt_phone(sc_utt *u, int64_t end, int label)
{
    if (u->n_seg == u->cap_seg) {
        int64_t cap = u->cap_seg ? u->cap_seg * 2 : 64;
        int64_t *e = realloc(u->seg_end, (size_t)cap * sizeof *e);
        int *l;
        if (!e)
            return CLAPP_E_NOMEM;
        u->seg_end = e;
        l = realloc(u->seg_label, (size_t)cap * sizeof *l);
        if (!l)
            return CLAPP_E_NOMEM;
        u->seg_label = l;
        u->cap_seg = cap;
    }
    u->seg_end[u->n_seg] = end;
    u->seg_label[u->n_seg++] = label;
    return 0;
}

static void sc_utt_free(sc_utt *u)
{
    free(u->s);
    free(u->seg_end);
    free(u->seg_label);
    memset(u, 0, sizeof *u);
}

/* flite: the wave is 16 kHz already; a phone starts where the previous one
 * ends and the last one is clamped (or extended) to the wave so that the
 * labels cover the audio exactly. Returns 1 done, 0 skip, < 0 error. */
static int sc_synth_flite(const sc_options *o, const sc_synth_ctx *cx, const sc_item *it, sc_utt *out)
{
    const sc_voice *vo = &o->voice[it->voice];
    cst_voice *v = cx->flite[vo->flite];
    const char *text = cx->ss->s[it->sentence];
    cst_utterance *u;
    cst_wave *w;
    const cst_item *seg;
    int64_t start = 0;
    int rc = 1;

    feat_set_float(v->features, "duration_stretch", (float)it->stretch);
    feat_set_float(v->features, "f0_shift", (float)it->pitch);
    /* The CG voices draw unvoiced excitation from rand(): seed it per item so
     * that the audio does not depend on which items a process made before. */
    srand(it->noise_seed);
    u = flite_synth_text(text, v);
    if (!u || !(w = utt_wave(u)) || w->num_samples <= 0 || !utt_relation(u, "Segment") ||
        !relation_head(utt_relation(u, "Segment"))) {
        rc = 0;
        goto done;
    }
    if (w->sample_rate != SC_RATE || w->num_channels != 1) {
        fprintf(stderr, "make_speech_corpus: error: voice %s gave %d Hz x %d channels, expected %d Hz mono\n",
                vo->name, w->sample_rate, w->num_channels, SC_RATE);
        rc = CLAPP_E_FORMAT;
        goto done;
    }
    rc = sc_utt_samples(out, w->samples, w->num_samples);
    for (seg = relation_head(utt_relation(u, "Segment")); seg && rc == 0; seg = item_next(seg)) {
        const char *name = item_name(seg);
        int64_t end = (int64_t)llround((double)item_feat_float(seg, "end") * SC_RATE);
        int label = clapp_labelset_find(cx->phones, name);
        if (label < 0) {
            fprintf(stderr, "make_speech_corpus: error: flite phone '%s' (voice %s, sentence \"%s\") is "
                            "not in the 41-phone set\n", name, vo->name, text);
            rc = CLAPP_E_FORMAT;
            goto done;
        }
        if (!item_next(seg) || end > out->n)
            end = out->n;
        if (end < start)
            end = start;
        rc = sc_utt_phone(out, end, label);
        start = end;
    }
    if (rc == 0)
        rc = 1;
done:
    if (u)
        delete_utterance(u);
    return rc;
}

/* espeak-ng's synchronous output: samples and phoneme events of the current
 * message, collected by the callback. One synthesis at a time per process. */
typedef struct sc_espeak_out {
    sc_utt   wave;            /* 22050 Hz samples; segments unused */
    int64_t *ev_sample;       /* phone start, samples from the message start */
    char   (*ev_name)[9];
    int64_t  n_ev, cap_ev;
    int      nomem;
} sc_espeak_out;

static sc_espeak_out *sc_espeak_cur;

static int sc_espeak_cb(short *wav, int n, espeak_EVENT *ev)
{
    sc_espeak_out *out = sc_espeak_cur;
    if (!out)
        return 0;
    if (wav && n > 0 && sc_utt_samples(&out->wave, wav, n) < 0)
        out->nomem = 1;
    for (; ev && ev->type != espeakEVENT_LIST_TERMINATED && !out->nomem; ev++) {
        if (ev->type != espeakEVENT_PHONEME)
            continue;
        if (out->n_ev == out->cap_ev) {
            int64_t cap = out->cap_ev ? out->cap_ev * 2 : 128;
            int64_t *s = realloc(out->ev_sample, (size_t)cap * sizeof *s);
            char(*nm)[9];
            if (!s) {
                out->nomem = 1;
                break;
            }
            out->ev_sample = s;
            nm = realloc(out->ev_name, (size_t)cap * sizeof *nm);
            if (!nm) {
                out->nomem = 1;
                break;
            }
            out->ev_name = nm;
            out->cap_ev = cap;
        }
        /* up to 8 bytes, NUL-terminated only when shorter */
        memcpy(out->ev_name[out->n_ev], ev->id.string, 8);
        out->ev_name[out->n_ev][8] = '\0';
        out->ev_sample[out->n_ev++] = ev->sample;
    }
    return out->nomem;   /* non-zero stops the synthesis */
}

/* 22050 Hz -> 16 kHz, int16 mono. libswresample delays nothing: output
 * sample j is input time j / 16000 s, so phone times just scale. */
static int sc_resample(const int16_t *in, int64_t n, sc_utt *out)
{
    SwrContext *swr = swr_alloc();
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    int64_t cap = n * SC_RATE / SC_ESPEAK_RATE + 64;
    const uint8_t *ip = (const uint8_t *)in;
    uint8_t *op;
    int got, rc = 0;

    if (!swr)
        return CLAPP_E_NOMEM;
    if (n > INT32_MAX / 2) {
        rc = CLAPP_E_INVAL;
        goto done;
    }
    av_opt_set_chlayout(swr, "in_chlayout", &mono, 0);
    av_opt_set_chlayout(swr, "out_chlayout", &mono, 0);
    av_opt_set_int(swr, "in_sample_rate", SC_ESPEAK_RATE, 0);
    av_opt_set_int(swr, "out_sample_rate", SC_RATE, 0);
    av_opt_set_sample_fmt(swr, "in_sample_fmt", AV_SAMPLE_FMT_S16, 0);
    av_opt_set_sample_fmt(swr, "out_sample_fmt", AV_SAMPLE_FMT_S16, 0);
    av_opt_set_int(swr, "exact_rational", 1, 0);   /* the exact 320/441 ratio */
    if (swr_init(swr) < 0) {
        rc = CLAPP_E_INTERNAL;
        goto done;
    }
    if (out->cap < cap) {
        int16_t *p = realloc(out->s, (size_t)cap * sizeof *p);
        if (!p) {
            rc = CLAPP_E_NOMEM;
            goto done;
        }
        out->s = p;
        out->cap = cap;
    }
    op = (uint8_t *)out->s;
    got = swr_convert(swr, &op, (int)cap, &ip, (int)n);
    if (got >= 0) {
        int tail;
        op = (uint8_t *)(out->s + got);
        tail = swr_convert(swr, &op, (int)(cap - got), NULL, 0);   /* flush */
        got = tail < 0 ? tail : got + tail;
    }
    if (got < 0) {
        rc = CLAPP_E_INTERNAL;
        goto done;
    }
    out->n = got;
done:
    swr_free(&swr);
    return rc;
}

/* Prints once per process that an espeak phoneme has no class. */
static void sc_espeak_unmapped(const char *name, const sc_voice *vo, const char *text)
{
    static char seen[32][9];
    static int n_seen;
    for (int i = 0; i < n_seen; i++)
        if (strcmp(seen[i], name) == 0)
            return;
    if (n_seen < 32)
        strcpy(seen[n_seen++], name);
    fprintf(stderr, "make_speech_corpus: warning: espeak phoneme '%s' (voice %s, sentence \"%s\") is not "
                    "in the map to the 41 phones (tools/gen/espeak_cmu41.h): item skipped\n", name, vo->name,
            text);
}

/* espeak-ng: a phone starts at its event's sample and ends where the next
 * one starts; audio before the first event is pau, the last phone ends with
 * the audio. Phones shorter than one 16 kHz sample are dropped and
 * neighbouring pauses merged. Returns 1 done, 0 skip, < 0 error. */
static int sc_synth_espeak(const sc_options *o, const sc_synth_ctx *cx, const sc_item *it, sc_utt *out)
{
    const sc_voice *vo = &o->voice[it->voice];
    const char *text = cx->ss->s[it->sentence];
    const int pau = CLAPP_CMU41_PAU;
    sc_espeak_out eo = {0};
    int64_t prev = 0, n22;   /* start of the open phone, in 22050 Hz samples */
    int label = pau, rc = 1;
    int rate = (int)lround(espeakRATE_NORMAL / it->stretch);
    int pitch = (int)lround(50.0 + 50.0 * log2(it->pitch));
    espeak_ERROR er;

    rate = rate < espeakRATE_MINIMUM ? espeakRATE_MINIMUM : rate > espeakRATE_MAXIMUM ? espeakRATE_MAXIMUM : rate;
    pitch = pitch < 0 ? 0 : pitch > 100 ? 100 : pitch;
    /* The voice is set for every item (0.2 ms) so that nothing carries over
     * from the item a process made before. */
    er = espeak_SetVoiceByName(vo->espeak);
    if (er == EE_OK)
        er = espeak_SetParameter(espeakRATE, rate, 0);
    if (er == EE_OK)
        er = espeak_SetParameter(espeakPITCH, pitch, 0);
    if (er != EE_OK) {
        fprintf(stderr, "make_speech_corpus: error: espeak-ng cannot set voice %s (rate %d, pitch %d)\n",
                vo->name, rate, pitch);
        return CLAPP_E_INTERNAL;
    }
    srand(it->noise_seed);
    sc_espeak_cur = &eo;
    er = espeak_Synth(text, strlen(text) + 1, 0, POS_CHARACTER, 0, espeakCHARS_AUTO, NULL, NULL);
    if (er == EE_OK)
        er = espeak_Synchronize();
    sc_espeak_cur = NULL;
    if (eo.nomem) {
        rc = CLAPP_E_NOMEM;
        goto done;
    }
    if (er != EE_OK) {
        fprintf(stderr, "make_speech_corpus: error: espeak-ng failed on voice %s, sentence \"%s\"\n", vo->name,
                text);
        rc = CLAPP_E_INTERNAL;
        goto done;
    }
    n22 = eo.wave.n;
    if (n22 <= 0 || eo.n_ev == 0) {
        rc = 0;
        goto done;
    }
    rc = sc_resample(eo.wave.s, n22, out);
    for (int64_t k = 0; k <= eo.n_ev && rc == 0; k++) {
        const sc_espeak_phone *ph = NULL;
        int64_t at = n22, end;
        int next = pau;
        if (k < eo.n_ev) {
            ph = sc_espeak_phone_find(eo.ev_name[k]);
            if (!ph) {
                sc_espeak_unmapped(eo.ev_name[k], vo, text);
                rc = 0;   /* skip the item */
                goto done;
            }
            if (!ph->cmu)
                continue;   /* no boundary: stays with the phone before */
            next = clapp_labelset_find(cx->phones, ph->cmu);
            at = eo.ev_sample[k] < prev ? prev : eo.ev_sample[k] > n22 ? n22 : eo.ev_sample[k];
        }
        /* close the open phone [prev, at) */
        end = k == eo.n_ev ? out->n : (int64_t)llround((double)at * SC_RATE / SC_ESPEAK_RATE);
        if (end > out->n)
            end = out->n;
        if (end > (out->n_seg ? out->seg_end[out->n_seg - 1] : 0)) {
            if (out->n_seg && label == pau && out->seg_label[out->n_seg - 1] == pau)
                out->seg_end[out->n_seg - 1] = end;
            else
                rc = sc_utt_phone(out, end, label);
        }
        label = next;
        prev = at;
    }
    if (rc == 0)
        rc = out->n > 0 && out->n_seg > 0 ? 1 : 0;
done:
    sc_utt_free(&eo.wave);
    free(eo.ev_sample);
    free(eo.ev_name);
    return rc;
}

/* Writes OUT/wav/VOICE/NNNNNN.{phn,flac}. Returns 0 or a negative CLAPP_E_*. */
static int sc_write_item(const sc_options *o, const sc_synth_ctx *cx, const sc_item *it, int64_t index,
                         const sc_utt *u)
{
    SNDFILE *sf = NULL;
    SF_INFO info;
    FILE *phn;
    char rel[128], path[4096];
    int64_t start = 0;
    int rc = 0;

    sc_item_path(o, rel, sizeof rel, it, index, "phn");
    snprintf(path, sizeof path, "%s/%s", o->out, rel);
    phn = fopen(path, "w");
    if (!phn) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot write: %s\n", path, strerror(errno));
        return CLAPP_E_IO;
    }
    for (int64_t k = 0; k < u->n_seg; k++) {
        fprintf(phn, "%lld %lld %s\n", (long long)start, (long long)u->seg_end[k],
                cx->phones->names[u->seg_label[k]]);
        start = u->seg_end[k];
    }
    if (fclose(phn) != 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: write failed\n", path);
        return CLAPP_E_IO;
    }

    sc_item_path(o, rel, sizeof rel, it, index, "flac");
    snprintf(path, sizeof path, "%s/%s", o->out, rel);
    memset(&info, 0, sizeof info);
    info.samplerate = SC_RATE;
    info.channels = 1;
    info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
    sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot write: %s\n", path, sf_strerror(NULL));
        return CLAPP_E_IO;
    }
    if (sf_write_short(sf, u->s, u->n) != u->n) {
        fprintf(stderr, "make_speech_corpus: error: %s: write failed: %s\n", path, sf_strerror(sf));
        rc = CLAPP_E_IO;
    }
    if (sf_close(sf) != 0 && rc == 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: close failed\n", path);
        rc = CLAPP_E_IO;
    }
    return rc;
}

/* Synthesises one item into OUT/wav/VOICE/NNNNNN.{flac,phn}. Returns the
 * sample count, 0 for an utterance to skip (no audio, no phones, or an
 * unmapped espeak phoneme), or a negative CLAPP_E_* (message printed). */
static int64_t sc_synth(const sc_options *o, const sc_synth_ctx *cx, const sc_item *it, int64_t index)
{
    sc_utt u = {0};
    int64_t status;
    int rc = o->voice[it->voice].flite >= 0 ? sc_synth_flite(o, cx, it, &u) : sc_synth_espeak(o, cx, it, &u);
    if (rc == 1 && u.n > 0 && u.n_seg > 0) {
        rc = sc_write_item(o, cx, it, index, &u);
        status = rc < 0 ? rc : u.n;
    } else {
        status = rc < 0 ? rc : 0;
    }
    sc_utt_free(&u);
    return status;
}

/* One round: items [first, first + count) of a split in pieces of 'piece'
 * consecutive items, one process per piece, at most 64. Fills
 * sp->items[].samples. Returns 0 or a negative CLAPP_E_*.
 *
 * espeak-ng carries synthesis state from one sentence to the next (the same
 * sentence with the same settings comes out a few samples different after
 * other sentences) and no call resets it (espeak_Terminate then
 * espeak_Initialize hangs). So in a split with espeak voices the pieces are
 * the chunks of SC_CHUNK items from item 0 on, each made in order by its
 * own process, forked from this one, in which no synthesiser has spoken:
 * an item depends on the items before it in its chunk, all fixed by (seed,
 * split), and not on --threads. One process per item would cost about 25 ms
 * of page faults each. flite items depend on nothing else, so flite-only
 * splits are cut into one piece per worker. */
static int sc_round(const sc_options *o, const sc_synth_ctx *cx, sc_split *sp, int64_t first, int64_t count,
                    int64_t piece)
{
    int n_chunks = (int)((count + piece - 1) / piece);
    pid_t pids[64];
    int fds[64];
    int started = 0, status = 0;

    if (n_chunks > 64)
        return CLAPP_E_INTERNAL;
    fflush(NULL);
    for (int k = 0; k < n_chunks; k++) {
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
            int64_t end = first + (int64_t)(k + 1) * piece;
            int bad = 0;
            close(p[0]);
            for (int64_t i = first + (int64_t)k * piece; i < end && i < first + count && !bad; i++) {
                sc_record rec = {i, sc_synth(o, cx, &sp->items[i], i)};
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

static void sc_progress(const sc_options *o, sc_split *const *splits, double t0, int final)
{
    double el = sc_now() - t0, audio = 0;
    if (o->quiet)
        return;
    fprintf(stderr, "\rmake_speech_corpus:");
    for (int s = 0; s < 3; s++) {
        audio += splits[s]->done_s;
        fprintf(stderr, " %s %.3f/%.3f h,", splits[s]->name, splits[s]->done_s / 3600,
                splits[s]->target_s / 3600);
    }
    fprintf(stderr, " %.0f s elapsed, %.0fx real time%s", el, el > 0 ? audio / el : 0.0, final ? "\n" : "   ");
}

/* Synthesise items of a split until its kept prefix reaches target_s. */
static int sc_generate(const sc_options *o, const sc_synth_ctx *cx, sc_split *sp, sc_split *const *splits,
                       double t0)
{
    int workers = o->threads < 1 ? 1 : o->threads;
    int64_t next = 0, piece;
    int rc, espeak = 0;

    for (int v = 0; v < sp->voices->n; v++)
        espeak |= o->voice[sp->voices->idx[v]].flite < 0;
    sp->done_s = 0;
    while (sp->done_s < sp->target_s) {
        /* Rounds sized to the remaining duration (mean so far, 3 s at first)
         * so that little is synthesised past the target; the kept prefix
         * does not depend on the round size. */
        double mean = next > 0 && sp->done_s > 0 ? sp->done_s / (double)next : 3.0;
        int64_t count = (int64_t)ceil((sp->target_s - sp->done_s) / mean * 1.1) + 1, keep;
        if (count > (int64_t)SC_CHUNK * workers)
            count = (int64_t)SC_CHUNK * workers;
        if (espeak) {
            count = (count + SC_CHUNK - 1) / SC_CHUNK * SC_CHUNK;   /* whole chunks: see sc_round */
            piece = SC_CHUNK;
        } else {
            count = (count + workers - 1) / workers * workers;
            piece = count / workers;
        }
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
        rc = sc_round(o, cx, sp, next, count, piece);
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
                sc_item_path(o, rel, sizeof rel, &sp->items[i], i, ext[e]);
                snprintf(path, sizeof path, "%s/%s", o->out, rel);
                unlink(path);
            }
        }
        sp->n_items = keep;
        next = keep;
        sc_progress(o, splits, t0, 0);
        if (sp->done_s == 0 && next >= 4 * (int64_t)SC_CHUNK * workers) {
            fprintf(stderr, "\nmake_speech_corpus: error: the synthesisers produced no audio for %lld %s items\n",
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
        sc_item_path(o, rel, sizeof rel, &sp->items[i], i, "flac");
        fprintf(f, "%s\t\t", rel);
        sc_item_path(o, rel, sizeof rel, &sp->items[i], i, "phn");
        fprintf(f, "%s\n", rel);
        acc += (double)sp->items[i].samples / SC_RATE;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: write failed\n", path);
        return CLAPP_E_IO;
    }
    return 0;
}

static int sc_write_items(const sc_options *o, const sc_sentences *ss, sc_split *const *splits)
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
    for (int s = 0; s < 3; s++)
        for (int64_t i = 0; i < splits[s]->n_items; i++) {
            const sc_item *it = &splits[s]->items[i];
            if (it->samples <= 0)
                continue;
            sc_item_path(o, rel, sizeof rel, it, i, "flac");
            fprintf(f, "%s\t%s\t%s\t%lld\t%.4f\t%.4f\t%s\n", rel, splits[s]->name, o->voice[it->voice].name,
                    (long long)it->samples, it->stretch, it->pitch, ss->s[it->sentence]);
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
           "Synthesises a phone-aligned speech corpus with flite and espeak-ng (16 kHz FLAC + TIMIT-style\n"
           ".phn, 41 phone classes) and the manifests ssl-train, probe-train, probe-val, probe-test.tsv.\n"
           "  --out DIR             output folder (created)\n"
           "  --hours H             total audio, train + val + test (default 1)\n"
           "  --test-share F        part of the hours spoken by the test voices (default 0.1)\n"
           "  --val-share F         part of the hours spoken by the validation voices (default 0.05)\n"
           "  --probe-hours H       hours of training items in probe-train.tsv (default: all)\n"
           "  --seed S              the same seed gives the same corpus (default 1)\n"
           "  --voices LIST         training voices (default " SC_DEFAULT_TRAIN ")\n"
           "  --val-voices LIST     validation voices (default " SC_DEFAULT_VAL "; none: no validation)\n"
           "  --test-voices LIST    test voices (default " SC_DEFAULT_TEST ")\n"
           "                        voices: slt rms awb kal16 (flite); espeak:ACCENT[+VARIANT], e.g.\n"
           "                        espeak:en-gb-scotland+f2, accents en-us en-gb en-gb-scotland en-gb-x-rp\n"
           "                        en-gb-x-gbclan en-gb-x-gbcwmd en-029 en-us-nyc, variants as in\n"
           "                        espeak-ng's voices/!v (m1-m8 f1-f5 klatt-klatt6 ...); sets (every\n"
           "                        accent with these variants): espeak-train (m1-m6 f1-f3 klatt-klatt3),\n"
           "                        espeak-val (m7 f4 klatt4), espeak-test (m8 f5 klatt5); default: the\n"
           "                        list's default. A voice may be in one list only.\n"
           "  --test-sentences F    fraction of sentences held out for the test (default 0.1)\n"
           "  --val-sentences F     fraction held out for the validation (default 0.05)\n"
           "  --text FILE           one sentence per line instead of the fortunes files\n"
           "  --stretch MIN,MAX     duration stretch range, log-uniform (default 0.8,1.25;\n"
           "                        espeak: 175/stretch words per minute)\n"
           "  --pitch MIN,MAX       pitch factor range, log-uniform (default 0.85,1.18; 1,1: off;\n"
           "                        flite f0_shift, espeak pitch 50+50*log2(factor))\n"
           "  --threads N           worker processes (default 2)\n"
           "  -q                    no progress line\n");
}

static int sc_parse(sc_options *o, int argc, char **argv, int *help)
{
    const char *voices = SC_DEFAULT_TRAIN, *val_voices = SC_DEFAULT_VAL, *test_voices = SC_DEFAULT_TEST;
    memset(o, 0, sizeof *o);
    o->hours = 1.0;
    o->test_share = 0.1;
    o->val_share = 0.05;
    o->probe_hours = 0;
    o->seed = 1;
    o->threads = 2;
    o->test_sentences = 0.1;
    o->val_sentences = 0.05;
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
        else if (strcmp(a, "--val-voices") == 0)
            val_voices = v;
        else if (strcmp(a, "--test-voices") == 0)
            test_voices = v;
        else if (strcmp(a, "--hours") == 0)
            o->hours = strtod(v, &end);
        else if (strcmp(a, "--test-share") == 0)
            o->test_share = strtod(v, &end);
        else if (strcmp(a, "--val-share") == 0)
            o->val_share = strtod(v, &end);
        else if (strcmp(a, "--probe-hours") == 0)
            o->probe_hours = strtod(v, &end);
        else if (strcmp(a, "--test-sentences") == 0)
            o->test_sentences = strtod(v, &end);
        else if (strcmp(a, "--val-sentences") == 0)
            o->val_sentences = strtod(v, &end);
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
    if (!(o->hours > 0) || !(o->test_share >= 0 && o->val_share >= 0 && o->test_share + o->val_share < 1) ||
        o->probe_hours < 0 || !(o->test_sentences > 0 && o->val_sentences > 0 &&
                                o->test_sentences + o->val_sentences < 1) ||
        o->threads < 1 || o->threads > 64 || o->stretch_max > 4 || o->pitch_max > 4) {
        fprintf(stderr, "make_speech_corpus: error: out of range: need --hours > 0, 0 <= --test-share, "
                        "--val-share with a sum < 1, 0 < --test-sentences, --val-sentences with a sum < 1, "
                        "1 <= --threads <= 64, factors <= 4\n");
        return CLAPP_E_INVAL;
    }
    if (sc_parse_voices(o, &o->train, "train", voices, SC_DEFAULT_TRAIN) < 0 ||
        sc_parse_voices(o, &o->test, "test", test_voices, SC_DEFAULT_TEST) < 0 ||
        sc_parse_voices(o, &o->val, "val", val_voices, SC_DEFAULT_VAL) < 0)
        return CLAPP_E_INVAL;
    if (o->train.n == 0 || o->test.n == 0) {
        fprintf(stderr, "make_speech_corpus: error: the %s voice list is empty\n", o->train.n ? "test" : "training");
        return CLAPP_E_INVAL;
    }
    return 0;
}

/* espeak-ng, once per run before the workers fork. An unknown variant would
 * silently give the accent's plain voice, so variant files are checked. */
static int sc_espeak_init(const sc_options *o, sc_synth_ctx *cx)
{
    const char *data = NULL;
    if (espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, NULL, espeakINITIALIZE_PHONEME_EVENTS) != SC_ESPEAK_RATE) {
        fprintf(stderr, "make_speech_corpus: error: espeak-ng did not start at %d Hz (apt-get install "
                        "espeak-ng libespeak-ng-dev)\n", SC_ESPEAK_RATE);
        return CLAPP_E_INTERNAL;
    }
    cx->espeak = 1;
    espeak_SetSynthCallback(sc_espeak_cb);
    espeak_Info(&data);
    for (int i = 0; i < o->n_voices; i++) {
        const sc_voice *v = &o->voice[i];
        char path[4096];
        if (v->flite >= 0)
            continue;
        snprintf(path, sizeof path, "%s/voices/!v/%s", data ? data : "", v->variant);
        if ((v->variant[0] && access(path, R_OK) != 0) || espeak_SetVoiceByName(v->espeak) != EE_OK) {
            fprintf(stderr, "make_speech_corpus: error: espeak-ng has no voice %s (%s)\n", v->name,
                    v->variant[0] ? path : v->espeak);
            return CLAPP_E_NOTFOUND;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static sc_options o;   /* large: the voice table */
    sc_sentences ss = {0};
    clapp_labelset phones = {0};
    sc_synth_ctx cx = {0};
    sc_split train = {0}, val = {0}, test = {0};
    sc_split *const splits[3] = {&train, &val, &test};
    int64_t *perm = NULL, n_test_sent, n_val_sent;
    int help, rc, use_espeak = 0;
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
    n_test_sent = (int64_t)ceil(o.test_sentences * (double)ss.n);
    n_val_sent = o.val.n > 0 ? (int64_t)ceil(o.val_sentences * (double)ss.n) : 0;
    if (ss.n < 2 || n_test_sent + n_val_sent >= ss.n) {
        fprintf(stderr, "make_speech_corpus: error: %s: only %lld usable sentences (need %s: printable ASCII, "
                        "%d-%d words)\n", o.text ? o.text : SC_FORTUNE_DIR, (long long)ss.n,
                o.val.n > 0 ? "3+ with a validation split" : "2+", SC_MIN_WORDS, SC_MAX_WORDS);
        rc = CLAPP_E_FORMAT;
        goto fail;
    }
    if (sc_mkdirs(o.out) != 0 || access(o.out, W_OK) != 0) {
        fprintf(stderr, "make_speech_corpus: error: %s: cannot create or write the output folder: %s\n", o.out,
                strerror(errno));
        rc = CLAPP_E_IO;
        goto fail;
    }
    for (int i = 0; i < o.n_voices; i++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/wav/%s", o.out, o.voice[i].dir);
        if (sc_mkdirs(dir) != 0) {
            fprintf(stderr, "make_speech_corpus: error: %s: cannot create: %s\n", dir, strerror(errno));
            rc = CLAPP_E_IO;
            goto fail;
        }
        use_espeak |= o.voice[i].flite < 0;
    }
    rc = clapp_labelset_init_cmu41(&phones);
    if (rc < 0)
        goto fail;

    /* Split the sentence pool once, from the seed: test sentences first (as
     * before the validation split existed), then validation, then training. */
    perm = malloc((size_t)ss.n * sizeof *perm);
    if (!perm) {
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    for (int64_t i = 0; i < ss.n; i++)
        perm[i] = i;
    st = sc_mix(o.seed ^ 0x5e27e2ce5ull);
    sc_shuffle(perm, ss.n, &st);
    test.name = "test";
    test.voices = &o.test;
    test.sent = perm;
    test.n_sent = n_test_sent;
    test.salt = 0x7e57ull << 40;
    test.target_s = o.hours * 3600 * o.test_share;
    val.name = "val";
    val.voices = &o.val;
    val.sent = perm + n_test_sent;
    val.n_sent = n_val_sent;
    val.salt = 0x7a11dull << 40;
    val.target_s = o.val.n > 0 ? o.hours * 3600 * o.val_share : 0;
    train.name = "train";
    train.voices = &o.train;
    train.sent = perm + n_test_sent + n_val_sent;
    train.n_sent = ss.n - n_test_sent - n_val_sent;
    train.salt = 0x7a1eull << 40;
    train.target_s = o.hours * 3600 - test.target_s - val.target_s;

    cx.ss = &ss;
    cx.phones = &phones;
    flite_init();
    for (int i = 0; i < o.n_voices; i++)
        if (o.voice[i].flite >= 0)
            cx.flite[o.voice[i].flite] = sc_flite_defs[o.voice[i].flite].reg(NULL);
    if (use_espeak && (rc = sc_espeak_init(&o, &cx)) < 0)
        goto fail;
    if (!o.quiet)
        fprintf(stderr, "make_speech_corpus: %lld sentences (%lld test, %lld val), voices train %d val %d "
                        "test %d, %.3f h into %s\n", (long long)ss.n, (long long)n_test_sent,
                (long long)n_val_sent, o.train.n, o.val.n, o.test.n, o.hours, o.out);
    t0 = sc_now();
    for (int s = 0; s < 3 && rc == 0; s++)
        rc = sc_generate(&o, &cx, splits[s], splits, t0);
    sc_progress(&o, splits, t0, 1);
    if (rc < 0)
        goto fail;
    rc = sc_write_manifest(&o, "ssl-train.tsv", &train, 0);
    if (rc == 0)
        rc = sc_write_manifest(&o, "probe-train.tsv", &train, o.probe_hours * 3600);
    if (rc == 0)
        rc = sc_write_manifest(&o, "probe-val.tsv", &val, 0);
    if (rc == 0)
        rc = sc_write_manifest(&o, "probe-test.tsv", &test, 0);
    if (rc == 0)
        rc = sc_write_items(&o, &ss, splits);
    if (rc == 0 && !o.quiet) {
        double el = sc_now() - t0, total = train.done_s + val.done_s + test.done_s;
        fprintf(stderr, "make_speech_corpus: wrote %lld train + %lld val + %lld test items, %.3f h in %.1f s "
                        "(%.2f h of audio per minute)\n", (long long)train.n_items, (long long)val.n_items,
                (long long)test.n_items, total / 3600, el, el > 0 ? total / 60 / el : 0.0);
    }
fail:
    if (cx.espeak)
        espeak_Terminate();
    for (int i = 0; i < SC_N_FLITE; i++)
        if (cx.flite[i])
            sc_flite_defs[i].unreg(cx.flite[i]);
    for (int s = 0; s < 3; s++)
        free(splits[s]->items);
    free(perm);
    clapp_labelset_free(&phones);
    sc_sentences_free(&ss);
    return rc < 0 ? 1 : 0;
}
