/* align_phones — forced phone alignment of speech with a known transcript.
 *
 * The phoneme probes need frame-level phone labels. For synthetic speech
 * flite gives them exactly; for human recordings they have to be found. This
 * tool looks the transcript's words up in the CMU dictionary that comes with
 * pocketsphinx (flite's letter-to-sound rules for words it lacks), builds a
 * per-utterance grammar in which every phone is a "word" of its own, every
 * pronunciation variant of a word a parallel path, and optional silence
 * sits between words, and lets pocketsphinx's US-English acoustic model
 * decode the audio with that grammar. The decoder's segmentation (10 ms
 * frames) then gives the phone boundaries.
 *
 *   align_phones AUDIO TEXT OUT.phn        align one file
 *   align_phones --list JOBS.tsv           many files, one model load:
 *                                          JOBS lines are AUDIO<TAB>TEXT<TAB>OUT.phn;
 *                                          prints AUDIO<TAB>ok|rejected<TAB>detail
 *   align_phones --evaluate CORPUS [--max N]
 *                                          align a make_speech_corpus corpus's
 *                                          items (their text from items.tsv) and
 *                                          compare with flite's exact .phn files
 *
 * Output .phn: TIMIT style "start end phone", samples of the input audio,
 * contiguous from 0 to the end of the audio, phones of the 41-class CMU set
 * (stress removed, silence "pau"). Alignments that fail are rejected with a
 * reason rather than written: out-of-vocabulary words (with --no-lts), no
 * speech in the transcript, the decoder not reaching the end of the grammar,
 * a decoded phone sequence that is not a pronunciation of the transcript, or
 * implausible durations.
 */
#include <ctype.h>
#include <errno.h>
#include <flite/flite.h>
#include <math.h>
#include <pocketsphinx.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clapp/plugin.h"
#include "media/decode.h"
#include "media/manifest.h"

cst_lexicon *cmu_lex_init(void);

#define AP_RATE 16000          /* the acoustic model's sample rate */
#define AP_FRAME 160           /* samples per 10 ms decoder frame */
#define AP_MODEL_DIR "/usr/share/pocketsphinx/model/en-us"
#define AP_MAX_VARIANTS 6      /* pronunciations kept per word */
#define AP_MAX_VOWEL_S 0.8     /* longer phones mean a failed alignment: */
#define AP_MAX_CONSONANT_S 0.5 /* vowels may be drawn out, consonants less */
#define AP_SIL "<sil>"

/* Decoder frames to samples. A frame t is the 25.6 ms window starting at
 * sample 160 t, centred 205 samples later; the boundary between frames t-1
 * and t therefore lies near sample 160 t + 125 (half-way between the
 * centres). On 52 flite sentences this offset lowers the median boundary
 * error from 11.8 to 7.9 ms (the signed median from -9.6 to -1.8 ms). */
#define AP_FRAME_OFFSET 125

/* The 39 CMU phones; the decoder's dictionary maps each (lower case) onto
 * the acoustic model's phone of the same name (upper case). */
static const char *const ap_phones[] = {
    "aa", "ae", "ah", "ao", "aw", "ay", "b",  "ch", "d",  "dh", "eh", "er", "ey",
    "f",  "g",  "hh", "ih", "iy", "jh", "k",  "l",  "m",  "n",  "ng", "ow", "oy",
    "p",  "r",  "s",  "sh", "t",  "th", "uh", "uw", "v",  "w",  "y",  "z",  "zh",
};
#define AP_N_PHONES ((int)(sizeof ap_phones / sizeof ap_phones[0]))

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static int ap_phone_index(const char *p)
{
    for (int i = 0; i < AP_N_PHONES; i++)
        if (strcmp(ap_phones[i], p) == 0)
            return i;
    return -1;
}

static int ap_is_vowel(int phone)
{
    return strchr("aeiou", ap_phones[phone][0]) != NULL;   /* the 15 CMU vowels */
}

/* "AH0" or "ax0" -> index of "ah"; -1 if not a CMU phone. flite's reduced
 * vowel ax is ah for the acoustic model, which has no ax. */
static int ap_phone_parse(const char *s)
{
    char p[8];
    size_t n = 0;
    for (; s[n] && !isdigit((unsigned char)s[n]); n++) {
        if (n + 1 >= sizeof p)
            return -1;
        p[n] = (char)tolower((unsigned char)s[n]);
    }
    p[n] = 0;
    if (strcmp(p, "ax") == 0)
        return ap_phone_index("ah");
    return ap_phone_index(p);
}

/* ------------------------------------------------------------------------ */
/* Pronunciation dictionary                                                  */

typedef struct ap_entry {
    const char *word;     /* lower case, without the "(2)" variant suffix */
    const char *phones;   /* as in the file: "HH AH0 L OW1" */
    int32_t     order;    /* line number: variants keep the file's order */
} ap_entry;

typedef struct ap_dict {
    char        *text;    /* the whole file, entries point into it */
    ap_entry    *e;
    size_t       n;
    cst_lexicon *lts;     /* flite's lexicon + letter-to-sound, NULL: none */
} ap_dict;

static int ap_entry_cmp(const void *a, const void *b)
{
    const ap_entry *x = a, *y = b;
    int c = strcmp(x->word, y->word);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void ap_dict_free(ap_dict *d)
{
    free(d->text);
    free(d->e);
    memset(d, 0, sizeof *d);
}

static int ap_dict_load(ap_dict *d, const char *path, int use_lts)
{
    FILE *f = NULL;
    long size;
    size_t cap = 0;
    char *p, *line;
    int rc = -1;

    memset(d, 0, sizeof *d);
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "align_phones: error: %s: cannot open the dictionary (%s)\n", path,
                strerror(errno));
        goto done;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "align_phones: error: %s: cannot read the dictionary\n", path);
        goto done;
    }
    d->text = malloc((size_t)size + 1);
    if (!d->text || fread(d->text, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "align_phones: error: %s: cannot read the dictionary\n", path);
        goto done;
    }
    d->text[size] = 0;
    for (line = d->text; line && *line; line = p) {
        char *sp, *paren;
        p = strchr(line, '\n');
        if (p)
            *p++ = 0;
        sp = strchr(line, ' ');
        if (!sp || line[0] == ';')
            continue;
        *sp = 0;
        paren = strchr(line, '(');   /* "word(2)": a variant */
        if (paren && paren != line)
            *paren = 0;
        if (d->n == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 17;
            ap_entry *e = realloc(d->e, ncap * sizeof *e);
            if (!e) {
                fprintf(stderr, "align_phones: error: out of memory reading %s\n", path);
                goto done;
            }
            d->e = e;
            cap = ncap;
        }
        for (char *c = line; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        d->e[d->n].word = line;
        d->e[d->n].phones = sp + 1;
        d->e[d->n].order = (int32_t)d->n;
        d->n++;
    }
    qsort(d->e, d->n, sizeof *d->e, ap_entry_cmp);
    if (use_lts)
        d->lts = cmu_lex_init();
    rc = 0;
done:
    if (f)
        fclose(f);
    if (rc < 0)
        ap_dict_free(d);
    return rc;
}

/* One pronunciation: phone indices. */
typedef struct ap_pron {
    int8_t ph[40];
    int    n;
} ap_pron;

/* One word of the transcript with its pronunciations. */
typedef struct ap_word {
    char    text[64];
    ap_pron var[AP_MAX_VARIANTS];
    int     n_var;
} ap_word;

/* Adds a pronunciation given as phone strings unless it is a duplicate
 * (variants that differ in stress only). Returns 0, or -1 if a phone is
 * not a CMU phone or the word is too long. */
static int ap_word_add_pron(ap_word *w, const char *const *ph, int n)
{
    ap_pron p;
    if (n <= 0 || n > (int)sizeof p.ph)
        return -1;
    for (int i = 0; i < n; i++) {
        int k = ap_phone_parse(ph[i]);
        if (k < 0)
            return -1;
        p.ph[i] = (int8_t)k;
    }
    p.n = n;
    for (int v = 0; v < w->n_var; v++)
        if (w->var[v].n == n && memcmp(w->var[v].ph, p.ph, (size_t)n) == 0)
            return 0;
    if (w->n_var < AP_MAX_VARIANTS)
        w->var[w->n_var++] = p;
    return 0;
}

/* Pronunciations of w->text from the dictionary; with none there and
 * use_lts, from flite's lexicon (letter-to-sound rules). Returns the
 * variant count. */
static int ap_lookup(const ap_dict *d, ap_word *w, int use_lts)
{
    ap_entry key = {w->text, NULL, -1};
    size_t lo = 0, hi = d->n;
    while (lo < hi) {   /* first entry >= key */
        size_t mid = lo + (hi - lo) / 2;
        if (ap_entry_cmp(&d->e[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < d->n && strcmp(d->e[lo].word, w->text) == 0; lo++) {
        char buf[256], *save = NULL, *tok;
        const char *ph[64];
        int n = 0;
        snprintf(buf, sizeof buf, "%s", d->e[lo].phones);
        for (tok = strtok_r(buf, " \t\r", &save); tok && n < 64; tok = strtok_r(NULL, " \t\r", &save))
            ph[n++] = tok;
        (void)ap_word_add_pron(w, ph, n);   /* an entry with odd phones is skipped */
    }
    if (w->n_var == 0 && use_lts && d->lts) {
        cst_val *pr = lex_lookup(d->lts, w->text, NULL, NULL);
        const char *ph[64];
        int n = 0;
        for (const cst_val *v = pr; v && n < 64; v = val_cdr(v))
            ph[n++] = val_string(val_car(v));
        ap_word_add_pron(w, ph, n);
        delete_val(pr);
    }
    return w->n_var;
}

/* ------------------------------------------------------------------------ */
/* Transcript to words                                                       */

typedef struct ap_words {
    ap_word *w;
    int      n, cap;
} ap_words;

static int ap_words_push(ap_words *ws, const char *text)
{
    if (ws->n == ws->cap) {
        int cap = ws->cap ? ws->cap * 2 : 32;
        ap_word *w = realloc(ws->w, (size_t)cap * sizeof *w);
        if (!w)
            return -1;
        ws->w = w;
        ws->cap = cap;
    }
    memset(&ws->w[ws->n], 0, sizeof ws->w[ws->n]);
    snprintf(ws->w[ws->n].text, sizeof ws->w[ws->n].text, "%s", text);
    ws->n++;
    return 0;
}

static const char *const ap_ones[] = {
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
};
static const char *const ap_tens[] = {
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
};

/* Words of 0 <= v < 1000000 ("five hundred", "twenty one"). */
static int ap_number(ap_words *ws, long v)
{
    if (v >= 1000) {
        if (ap_number(ws, v / 1000) < 0 || ap_words_push(ws, "thousand") < 0)
            return -1;
        v %= 1000;
        if (v == 0)
            return 0;
    }
    if (v >= 100) {
        if (ap_words_push(ws, ap_ones[v / 100]) < 0 || ap_words_push(ws, "hundred") < 0)
            return -1;
        v %= 100;
        if (v == 0)
            return 0;
    }
    if (v < 20)
        return ap_words_push(ws, ap_ones[v]);
    if (ap_words_push(ws, ap_tens[v / 10]) < 0)
        return -1;
    return v % 10 ? ap_words_push(ws, ap_ones[v % 10]) : 0;
}

static int ap_is_upper_word(const char *s)
{
    int n = 0;
    for (; *s; s++, n++)
        if (!isupper((unsigned char)*s))
            return 0;
    return n >= 2 && n <= 5;
}

/* One token of letters, digits, apostrophes and inner periods. */
static int ap_token(ap_words *ws, const ap_dict *d, char *tok)
{
    char low[64];
    size_t n = strlen(tok);
    ap_word probe;

    while (n && (tok[n - 1] == '.' || tok[n - 1] == '\''))   /* sentence ends, quotes */
        tok[--n] = 0;
    while (*tok == '.' || *tok == '\'')
        tok++;
    n = strlen(tok);
    if (n == 0)
        return 0;
    if (n >= sizeof low)
        return ap_words_push(ws, tok);   /* will be out of vocabulary */
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)tok[i]);

    /* Letters followed by digits or the other way round ("3D", "IAX2"). */
    for (size_t i = 1; i < n; i++)
        if (!!isdigit((unsigned char)tok[i]) != !!isdigit((unsigned char)tok[i - 1]) &&
            tok[i] != '.' && tok[i - 1] != '.' && tok[i] != '\'' && tok[i - 1] != '\'') {
            char c = tok[i];
            int rc;
            tok[i] = 0;
            rc = ap_token(ws, d, tok);
            tok[i] = c;
            return rc < 0 ? rc : ap_token(ws, d, tok + i);
        }
    if (isdigit((unsigned char)tok[0])) {
        if (n > 6 || strchr(tok, '.')) {   /* digit strings, "323.5": say the digits */
            for (size_t i = 0; i < n; i++)
                if (isdigit((unsigned char)tok[i]) &&
                    ap_words_push(ws, ap_ones[tok[i] - '0']) < 0)
                    return -1;
            return 0;
        }
        return ap_number(ws, strtol(tok, NULL, 10));
    }

    memset(&probe, 0, sizeof probe);
    snprintf(probe.text, sizeof probe.text, "%s", low);
    if (ap_lookup(d, &probe, 0) == 0) {
        /* Not in the dictionary: "A.M."-like and short capitals are spelt. */
        int spelt = ap_is_upper_word(tok);
        char *dot = strchr(low, '.');
        if (dot || spelt) {
            char part[64];
            size_t k = 0;
            for (size_t i = 0; i <= n; i++) {
                if (low[i] == '.' || low[i] == 0 || (spelt && k == 1)) {
                    part[k] = 0;
                    if (k && ap_token(ws, d, part) < 0)
                        return -1;
                    if (low[i] == '.' && k > 1 && ap_words_push(ws, "dot") < 0)
                        return -1;   /* "www.asterisk.org" */
                    k = 0;
                    if (low[i] == '.' || low[i] == 0)
                        continue;
                }
                part[k++] = low[i];
            }
            return 0;
        }
    }
    return ap_words_push(ws, low);
}

/* Splits a transcript into dictionary words. Bracketed remarks ("[beep]",
 * "(note: ...)", "<tone>") are not speech; symbols are read out. */
static int ap_words_from_text(ap_words *ws, const ap_dict *d, const char *text)
{
    static const struct { char c; const char *word; } said[] = {
        {'*', "star"}, {'#', "pound"}, {'&', "and"}, {'%', "percent"},
        {'@', "at"},   {'+', "plus"},  {'=', "equals"},
    };
    char tok[256];
    size_t k = 0;
    int depth = 0;
    ws->n = 0;
    for (const char *p = text;; p++) {
        unsigned char c = (unsigned char)*p;
        int inword = c && !depth && (isalnum(c) || c == '\'' ||
                                     (c == '.' && k > 0 && isalnum((unsigned char)p[1])));
        if (c == '[' || c == '(' || c == '<' || c == '{')
            depth++;
        else if ((c == ']' || c == ')' || c == '>' || c == '}') && depth > 0) {
            depth--;
            continue;
        }
        if (inword && k + 1 < sizeof tok) {
            tok[k++] = (char)c;
            continue;
        }
        if (k) {
            tok[k] = 0;
            if (ap_token(ws, d, tok) < 0)
                return -1;
            k = 0;
        }
        if (!c)
            break;
        if (!depth)
            for (size_t i = 0; i < sizeof said / sizeof said[0]; i++)
                if (said[i].c == (char)c && ap_words_push(ws, said[i].word) < 0)
                    return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Alignment                                                                 */

typedef struct ap_seg {
    int64_t start, end;   /* samples of the input audio */
    int     phone;        /* index into ap_phones, -1 = pau */
} ap_seg;

typedef struct ap_aligner {
    ap_dict       dict;
    cmd_ln_t     *config;
    ps_decoder_t *ps;
    float         silprob;
} ap_aligner;

static void ap_aligner_free(ap_aligner *a)
{
    if (a->ps)
        ps_free(a->ps);
    if (a->config)
        cmd_ln_free_r(a->config);
    ap_dict_free(&a->dict);
    memset(a, 0, sizeof *a);
}

static int ap_aligner_init(ap_aligner *a, int use_lts)
{
    int rc = -1;
    memset(a, 0, sizeof *a);
    a->silprob = 0.1f;
    if (ap_dict_load(&a->dict, AP_MODEL_DIR "/cmudict-en-us.dict", use_lts) < 0)
        goto done;
    /* Wide beams: the grammar allows a single phone sequence (up to word
     * variants and pauses), so pruning only risks losing the final state.
     * No silence removal (it drops frames, shifting every time after it) and
     * no noise removal (its estimate carries over from one utterance to the
     * next, so results would depend on the order of the files). */
    a->config = cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", AP_MODEL_DIR "/en-us",
                            "-samprate", "16000", "-fsgusefiller", "no", "-bestpath", "no",
                            "-beam", "1e-80", "-wbeam", "1e-60", "-pbeam", "1e-80",
                            "-maxhmmpf", "-1", "-remove_silence", "no", "-remove_noise", "no", "-logfn", "/dev/null", NULL);
    if (!a->config) {
        fprintf(stderr, "align_phones: error: cannot configure pocketsphinx\n");
        goto done;
    }
    a->ps = ps_init(a->config);
    if (!a->ps) {
        fprintf(stderr, "align_phones: error: cannot load the acoustic model %s/en-us "
                "(is pocketsphinx-en-us installed?)\n", AP_MODEL_DIR);
        goto done;
    }
    for (int i = 0; i < AP_N_PHONES; i++) {
        char up[8];
        size_t k = 0;
        for (; ap_phones[i][k]; k++)
            up[k] = (char)toupper((unsigned char)ap_phones[i][k]);
        up[k] = 0;
        if (ps_add_word(a->ps, ap_phones[i], up, i == AP_N_PHONES - 1) < 0) {
            fprintf(stderr, "align_phones: error: cannot add phone %s to the decoder\n", up);
            goto done;
        }
    }
    rc = 0;
done:
    if (rc < 0)
        ap_aligner_free(a);
    return rc;
}

/* Decodes pcm with the search `name`. Returns 0, 1 no hypothesis, -1 error. */
static int ap_decode(ap_aligner *a, const char *name, const int16_t *pcm, int64_t n)
{
    if (ps_set_search(a->ps, name) < 0 || ps_start_utt(a->ps) < 0 ||
        ps_process_raw(a->ps, pcm, (size_t)n, FALSE, TRUE) < 0 || ps_end_utt(a->ps) < 0) {
        fprintf(stderr, "align_phones: error: pocketsphinx failed to decode\n");
        return -1;
    }
    return ps_get_hyp(a->ps, NULL) ? 0 : 1;
}

/* The grammar: boundary state b_i before word i (b_0 start, b_n final) with
 * an optional-silence self-loop; from b_i one chain of phone transitions per
 * variant of word i to b_{i+1}. */
static fsg_model_t *ap_grammar(ap_aligner *a, const ap_words *ws)
{
    logmath_t *lmath = ps_get_logmath(a->ps);
    float32 lw = (float32)cmd_ln_float32_r(a->config, "-lw");
    int32_t n_state = ws->n + 1, next;
    fsg_model_t *fsg;
    for (int i = 0; i < ws->n; i++)
        for (int v = 0; v < ws->w[i].n_var; v++)
            n_state += ws->w[i].var[v].n - 1;
    fsg = fsg_model_init("align", lmath, lw, n_state);
    if (!fsg)
        return NULL;
    fsg->start_state = 0;
    fsg->final_state = ws->n;
    next = ws->n + 1;
    for (int i = 0; i < ws->n; i++)
        for (int v = 0; v < ws->w[i].n_var; v++) {
            const ap_pron *p = &ws->w[i].var[v];
            int32_t from = i;
            for (int k = 0; k < p->n; k++) {
                int32_t to = k == p->n - 1 ? i + 1 : next++;
                int wid = fsg_model_word_add(fsg, ap_phones[p->ph[k]]);
                fsg_model_trans_add(fsg, from, to, 0, wid);
                from = to;
            }
        }
    for (int32_t b = 0; b <= ws->n; b++)
        fsg_model_add_silence(fsg, AP_SIL, b, a->silprob);
    return fsg;
}

/* Does the phone sequence ph[0..n) spell the words ws[i..] with variants? */
static int ap_matches(const ap_words *ws, int i, const int *ph, int n)
{
    if (i == ws->n)
        return n == 0;
    for (int v = 0; v < ws->w[i].n_var; v++) {
        const ap_pron *p = &ws->w[i].var[v];
        int k = 0;
        if (p->n > n)
            continue;
        while (k < p->n && p->ph[k] == ph[k])
            k++;
        if (k == p->n && ap_matches(ws, i + 1, ph + p->n, n - p->n))
            return 1;
    }
    return 0;
}

typedef struct ap_result {
    ap_seg *seg;
    int     n;
    char    reason[256];   /* set when rejected */
} ap_result;

static int ap_seg_push(ap_result *r, int *cap, int64_t start, int64_t end, int phone)
{
    if (r->n > 0 && r->seg[r->n - 1].phone < 0 && phone < 0) {   /* merge pauses */
        r->seg[r->n - 1].end = end;
        return 0;
    }
    if (r->n == *cap) {
        int ncap = *cap ? *cap * 2 : 64;
        ap_seg *s = realloc(r->seg, (size_t)ncap * sizeof *s);
        if (!s)
            return -1;
        r->seg = s;
        *cap = ncap;
    }
    r->seg[r->n].start = start;
    r->seg[r->n].end = end;
    r->seg[r->n].phone = phone;
    r->n++;
    return 0;
}

/* Aligns 16 kHz samples pcm[0..n) with the transcript. Returns 0 (r->seg
 * filled, times in 16 kHz samples), 1 rejected (r->reason), -1 error. */
static int ap_align(ap_aligner *a, const int16_t *pcm, int64_t n, const char *text, ap_result *r)
{
    ap_words ws = {0};
    fsg_model_t *fsg = NULL;
    ps_seg_t *it;
    int *ph = NULL, n_ph = 0, cap = 0, rc = -1, drc;
    int64_t prev_end = 0;

    memset(r, 0, sizeof *r);
    if (ap_words_from_text(&ws, &a->dict, text) < 0)
        goto done;
    if (ws.n == 0) {
        snprintf(r->reason, sizeof r->reason, "no speech in the transcript");
        rc = 1;
        goto done;
    }
    for (int i = 0; i < ws.n; i++)
        if (ws.w[i].n_var == 0 && ap_lookup(&a->dict, &ws.w[i], 1) == 0) {
            snprintf(r->reason, sizeof r->reason, "out-of-vocabulary word '%s'", ws.w[i].text);
            rc = 1;
            goto done;
        }
    if (n < 4 * AP_FRAME) {
        snprintf(r->reason, sizeof r->reason, "audio too short");
        rc = 1;
        goto done;
    }
    fsg = ap_grammar(a, &ws);
    if (!fsg || ps_set_fsg(a->ps, "align", fsg) < 0) {
        fprintf(stderr, "align_phones: error: pocketsphinx did not accept the grammar\n");
        goto done;
    }
    drc = ap_decode(a, "align", pcm, n);
    if (drc < 0)
        goto done;
    if (drc == 1) {
        snprintf(r->reason, sizeof r->reason, "no hypothesis (the decoder found no path)");
        rc = 1;
        goto done;
    }
    ph = malloc(sizeof *ph * (size_t)(ps_get_n_frames(a->ps) + 1));
    if (!ph)
        goto done;
    for (it = ps_seg_iter(a->ps); it; it = ps_seg_next(it)) {
        const char *w = ps_seg_word(it);
        int sf, ef, k = ap_phone_index(w);
        int64_t start, end;
        ps_seg_frames(it, &sf, &ef);
        start = sf == 0 ? 0 : (int64_t)sf * AP_FRAME + AP_FRAME_OFFSET;
        end = (int64_t)(ef + 1) * AP_FRAME + AP_FRAME_OFFSET;
        if (start < prev_end)
            start = prev_end;
        if (start > prev_end && ap_seg_push(r, &cap, prev_end, start, -1) < 0) {
            ps_seg_free(it);
            goto done;
        }
        if (end > n)
            end = n;
        if (end <= start)
            continue;
        if (k >= 0)
            ph[n_ph++] = k;
        if (ap_seg_push(r, &cap, start, end, k) < 0) {
            ps_seg_free(it);
            goto done;
        }
        prev_end = end;
    }
    if (prev_end < n && ap_seg_push(r, &cap, prev_end, n, -1) < 0)
        goto done;
    if (!ap_matches(&ws, 0, ph, n_ph)) {
        snprintf(r->reason, sizeof r->reason,
                 "phone sequence mismatch (the decoder did not reach the end of the grammar)");
        rc = 1;
        goto done;
    }
    for (int i = 0; i < r->n; i++)
        if (r->seg[i].phone >= 0 &&
            r->seg[i].end - r->seg[i].start >
                (ap_is_vowel(r->seg[i].phone) ? AP_MAX_VOWEL_S : AP_MAX_CONSONANT_S) * AP_RATE) {
            snprintf(r->reason, sizeof r->reason, "implausible duration: '%s' lasts %.2f s",
                     ap_phones[r->seg[i].phone],
                     (double)(r->seg[i].end - r->seg[i].start) / AP_RATE);
            rc = 1;
            goto done;
        }
    rc = 0;
done:
    if (rc != 0) {
        free(r->seg);
        r->seg = NULL;
        r->n = 0;
    }
    if (fsg)
        fsg_model_free(fsg);
    free(ph);
    free(ws.w);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Audio and .phn files                                                      */

/* Decodes `path` to 16 kHz int16; *in_rate is the file's own rate. */
static int ap_read_audio(const char *path, int16_t **out, int64_t *n_out, int *in_rate)
{
    clapp_decode_params p = {0};
    clapp_decoder *dec = NULL;
    char err[512];
    float buf[4096];
    int16_t *pcm = NULL;
    int64_t n = 0, cap = 0, got;
    int rc = -1;

    p.kind = CLAPP_MEDIA_AUDIO;
    p.backend = CLAPP_DECODE_AUTO;
    p.rate = AP_RATE;
    if (clapp_decoder_open(&dec, path, &p, err, sizeof err) < 0) {
        fprintf(stderr, "align_phones: error: %s\n", err);
        goto done;
    }
    *in_rate = clapp_decoder_input_rate(dec);
    if (*in_rate <= 0)
        *in_rate = AP_RATE;
    while ((got = clapp_decoder_read(dec, buf, 4096, err, sizeof err)) > 0) {
        if (n + got > cap) {
            int64_t ncap = cap ? cap * 2 : 1 << 16;
            int16_t *t;
            while (ncap < n + got)
                ncap *= 2;
            t = realloc(pcm, (size_t)ncap * sizeof *t);
            if (!t) {
                fprintf(stderr, "align_phones: error: %s: out of memory\n", path);
                goto done;
            }
            pcm = t;
            cap = ncap;
        }
        for (int64_t i = 0; i < got; i++) {
            float x = buf[i] * 32768.0f;
            pcm[n++] = (int16_t)(x > 32767.0f ? 32767.0f : x < -32768.0f ? -32768.0f : x);
        }
    }
    if (got < 0) {
        fprintf(stderr, "align_phones: error: %s\n", err);
        goto done;
    }
    *out = pcm;
    *n_out = n;
    pcm = NULL;
    rc = 0;
done:
    free(pcm);
    if (dec)
        clapp_decoder_close(dec);
    return rc;
}

/* Writes the segments in samples of a file at in_rate Hz (the .phn
 * convention); the last segment ends at the file's last sample. */
static int ap_write_phn(const char *path, const ap_result *r, int in_rate, int64_t n16)
{
    FILE *f = fopen(path, "w");
    int64_t total = (int64_t)llround((double)n16 * in_rate / AP_RATE);
    int rc = 0;
    if (!f) {
        fprintf(stderr, "align_phones: error: %s: cannot write (%s)\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < r->n; i++) {
        int64_t s = (int64_t)llround((double)r->seg[i].start * in_rate / AP_RATE);
        int64_t e = i == r->n - 1 ? total : (int64_t)llround((double)r->seg[i].end * in_rate / AP_RATE);
        fprintf(f, "%lld %lld %s\n", (long long)s, (long long)e,
                r->seg[i].phone < 0 ? "pau" : ap_phones[r->seg[i].phone]);
    }
    if (ferror(f))
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    if (rc < 0)
        fprintf(stderr, "align_phones: error: %s: write failed\n", path);
    return rc;
}

/* Aligns one file; 0 written, 1 rejected (reason printed to `report`), -1 error. */
static int ap_align_file(ap_aligner *a, const char *audio, const char *text, const char *out,
                         FILE *report)
{
    int16_t *pcm = NULL;
    int64_t n = 0;
    int in_rate = AP_RATE, rc;
    ap_result r;

    memset(&r, 0, sizeof r);
    rc = ap_read_audio(audio, &pcm, &n, &in_rate);
    if (rc == 0)
        rc = ap_align(a, pcm, n, text, &r);
    if (rc == 0)
        rc = ap_write_phn(out, &r, in_rate, n);
    if (report) {
        if (rc == 0)
            fprintf(report, "%s\tok\t%d segments\n", audio, r.n);
        else if (rc == 1)
            fprintf(report, "%s\trejected\t%s\n", audio, r.reason);
        else
            fprintf(report, "%s\terror\tsee the message above\n", audio);
        fflush(report);
    }
    free(r.seg);
    free(pcm);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Evaluation against flite's exact alignments                               */

static int ap_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ap_quantile(const double *sorted, size_t n, double q)
{
    double pos;
    size_t i;
    if (n == 0)
        return NAN;
    pos = q * (double)(n - 1);
    i = (size_t)pos;
    return i + 1 < n ? sorted[i] + (pos - (double)i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}

typedef struct ap_eval {
    double *err;            /* boundary errors, ms */
    double *signed_err;
    size_t  n_err, cap_err;
    int64_t frames, same, same_fold;
    int     items, aligned, rejected, skipped;
} ap_eval;

static int ap_fold(int label, int ax, int ah)
{
    return label == ax ? ah : label;
}

/* Matches the two phone sequences (edit distance, ax = ah) and records the
 * start-time error of every matched phone but the first; counts frames. */
static int ap_eval_item(ap_eval *ev, const clapp_alignment *ref, const clapp_alignment *hyp,
                        int64_t n_samples, int ax, int ah)
{
    int64_t nf = clapp_alignment_frames(ref, AP_RATE, n_samples, 100.0, CLAPP_CMU41_PAU, NULL, 0);
    int32_t *fr = malloc(sizeof *fr * (size_t)(nf + 1)), *fh = malloc(sizeof *fh * (size_t)(nf + 1));
    int R = ref->n, H = hyp->n, rc = -1;
    int *d = malloc(sizeof *d * (size_t)(R + 1) * (size_t)(H + 1));
    if (!fr || !fh || !d)
        goto done;
    clapp_alignment_frames(ref, AP_RATE, n_samples, 100.0, CLAPP_CMU41_PAU, fr, nf);
    clapp_alignment_frames(hyp, AP_RATE, n_samples, 100.0, CLAPP_CMU41_PAU, fh, nf);
    for (int64_t i = 0; i < nf; i++) {
        ev->same += fr[i] == fh[i];
        ev->same_fold += ap_fold(fr[i], ax, ah) == ap_fold(fh[i], ax, ah);
    }
    ev->frames += nf;

#define D(i, j) d[(size_t)(i) * (size_t)(H + 1) + (size_t)(j)]
    for (int i = 0; i <= R; i++)
        for (int j = 0; j <= H; j++) {
            int best;
            if (i == 0 || j == 0) {
                D(i, j) = i + j;
                continue;
            }
            best = D(i - 1, j - 1) + (ap_fold(ref->seg[i - 1].label, ax, ah) !=
                                      ap_fold(hyp->seg[j - 1].label, ax, ah));
            if (D(i - 1, j) + 1 < best)
                best = D(i - 1, j) + 1;
            if (D(i, j - 1) + 1 < best)
                best = D(i, j - 1) + 1;
            D(i, j) = best;
        }
    for (int i = R, j = H; i > 0 && j > 0;) {
        int same = ap_fold(ref->seg[i - 1].label, ax, ah) == ap_fold(hyp->seg[j - 1].label, ax, ah);
        if (D(i, j) == D(i - 1, j - 1) + !same) {
            if (same && i > 1 && j > 1) {
                double e = (double)(hyp->seg[j - 1].start - ref->seg[i - 1].start) * 1000.0 / AP_RATE;
                if (ev->n_err == ev->cap_err) {
                    size_t cap = ev->cap_err ? ev->cap_err * 2 : 1024;
                    double *a = realloc(ev->err, cap * sizeof *a);
                    double *b = a ? realloc(ev->signed_err, cap * sizeof *b) : NULL;
                    if (a)
                        ev->err = a;
                    if (!b)
                        goto done;
                    ev->signed_err = b;
                    ev->cap_err = cap;
                }
                ev->signed_err[ev->n_err] = e;
                ev->err[ev->n_err++] = fabs(e);
            }
            i--, j--;
        } else if (D(i, j) == D(i - 1, j) + 1)
            i--;
        else
            j--;
    }
#undef D
    rc = 0;
done:
    free(fr);
    free(fh);
    free(d);
    return rc;
}

/* Splits a tab-separated line in place; returns the field count. */
static int ap_fields(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    while (n < max) {
        f[n++] = line;
        line = strchr(line, '\t');
        if (!line)
            break;
        *line++ = 0;
    }
    return n;
}

static int ap_evaluate(ap_aligner *a, const char *corpus, int max_items, const char *tmpdir)
{
    char path[4096], audio[4096], ref_phn[4096], hyp_phn[4096], err[512];
    FILE *f = NULL;
    char *line = NULL;
    size_t linecap = 0;
    ap_eval ev;
    clapp_labelset ls;
    int rc = -1, ax, ah;

    memset(&ev, 0, sizeof ev);
    if (clapp_labelset_init_cmu41(&ls) < 0)
        return -1;
    ax = clapp_labelset_find(&ls, "ax");
    ah = clapp_labelset_find(&ls, "ah");
    snprintf(path, sizeof path, "%s/items.tsv", corpus);
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "align_phones: error: %s: cannot open (%s); is %s a make_speech_corpus "
                "folder?\n", path, strerror(errno), corpus);
        goto done;
    }
    snprintf(hyp_phn, sizeof hyp_phn, "%s/align_phones_eval_%ld.phn", tmpdir, (long)getpid());
    while (getline(&line, &linecap, f) >= 0 && (max_items <= 0 || ev.items < max_items)) {
        char *fld[8], *dot;
        int16_t *pcm = NULL;
        int64_t n = 0;
        int in_rate, arc;
        ap_result r;
        clapp_alignment ref = {0}, hyp = {0};

        if (line[0] == '#' || ap_fields(line, fld, 8) < 7)
            continue;
        if (strncmp(fld[2], "espeak", 6) == 0) {   /* mapped, not exact: no yardstick */
            ev.skipped++;
            continue;
        }
        snprintf(audio, sizeof audio, "%s/%s", corpus, fld[0]);
        snprintf(ref_phn, sizeof ref_phn, "%s", audio);
        dot = strrchr(ref_phn, '.');
        if (dot)
            snprintf(dot, sizeof ref_phn - (size_t)(dot - ref_phn), ".phn");
        ev.items++;
        if (ap_read_audio(audio, &pcm, &n, &in_rate) < 0)
            goto done;
        arc = ap_align(a, pcm, n, fld[6], &r);
        free(pcm);
        if (arc < 0)
            goto done;
        if (arc == 1) {
            printf("%s\trejected\t%s\n", fld[0], r.reason);
            ev.rejected++;
            continue;
        }
        arc = ap_write_phn(hyp_phn, &r, AP_RATE, n);
        free(r.seg);
        if (arc < 0)
            goto done;
        if (clapp_alignment_load(&ref, ref_phn, &ls, err, sizeof err) < 0 ||
            clapp_alignment_load(&hyp, hyp_phn, &ls, err, sizeof err) < 0) {
            fprintf(stderr, "align_phones: error: %s\n", err);
            clapp_alignment_free(&ref);
            goto done;
        }
        arc = ap_eval_item(&ev, &ref, &hyp, n, ax, ah);
        clapp_alignment_free(&ref);
        clapp_alignment_free(&hyp);
        if (arc < 0)
            goto done;
        ev.aligned++;
    }
    if (ev.aligned == 0 || ev.n_err == 0) {
        fprintf(stderr, "align_phones: error: %s: nothing aligned (%d items, %d rejected)\n",
                corpus, ev.items, ev.rejected);
        goto done;
    }
    qsort(ev.err, ev.n_err, sizeof *ev.err, ap_cmp_double);
    qsort(ev.signed_err, ev.n_err, sizeof *ev.signed_err, ap_cmp_double);
    printf("flite items %d, aligned %d, rejected %d (espeak-ng items skipped: %d); "
           "%zu matched boundaries, %lld frames of 10 ms\n",
           ev.items, ev.aligned, ev.rejected, ev.skipped, ev.n_err, (long long)ev.frames);
    printf("boundary error: median %.1f ms, p90 %.1f ms (signed median %+.1f ms)\n",
           ap_quantile(ev.err, ev.n_err, 0.5), ap_quantile(ev.err, ev.n_err, 0.9),
           ap_quantile(ev.signed_err, ev.n_err, 0.5));
    printf("frame agreement: %.1f%% (ax folded into ah: %.1f%%)\n",
           100.0 * (double)ev.same / (double)ev.frames,
           100.0 * (double)ev.same_fold / (double)ev.frames);
    printf("{\"items\": %d, \"aligned\": %d, \"rejected\": %d, \"boundaries\": %zu, "
           "\"median_ms\": %.2f, \"p90_ms\": %.2f, \"frame_agreement\": %.4f, "
           "\"frame_agreement_ax_ah\": %.4f}\n",
           ev.items, ev.aligned, ev.rejected, ev.n_err, ap_quantile(ev.err, ev.n_err, 0.5),
           ap_quantile(ev.err, ev.n_err, 0.9), (double)ev.same / (double)ev.frames,
           (double)ev.same_fold / (double)ev.frames);
    rc = 0;
done:
    remove(hyp_phn);
    free(line);
    if (f)
        fclose(f);
    free(ev.err);
    free(ev.signed_err);
    clapp_labelset_free(&ls);
    return rc;
}

/* ------------------------------------------------------------------------ */

static int ap_run_list(ap_aligner *a, const char *list)
{
    FILE *f = strcmp(list, "-") == 0 ? stdin : fopen(list, "r");
    char *line = NULL;
    size_t cap = 0;
    int rc = 0, lineno = 0;
    if (!f) {
        fprintf(stderr, "align_phones: error: %s: cannot open (%s)\n", list, strerror(errno));
        return -1;
    }
    while (getline(&line, &cap, f) >= 0) {
        char *fld[3];
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (ap_fields(line, fld, 3) != 3) {
            fprintf(stderr, "align_phones: error: %s:%d: expected AUDIO<TAB>TEXT<TAB>OUT.phn\n",
                    list, lineno);
            rc = -1;
            break;
        }
        if (ap_align_file(a, fld[0], fld[1], fld[2], stdout) < 0) {
            rc = -1;
            break;
        }
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* --words: the transcript's words and their pronunciations, for checking
 * what the aligner will look for. */
static int ap_show_words(ap_aligner *a, const char *text)
{
    ap_words ws = {0};
    if (ap_words_from_text(&ws, &a->dict, text) < 0) {
        free(ws.w);
        return -1;
    }
    for (int i = 0; i < ws.n; i++) {
        if (ws.w[i].n_var == 0)
            ap_lookup(&a->dict, &ws.w[i], 1);
        printf("%s", ws.w[i].text);
        if (ws.w[i].n_var == 0)
            printf("\t(out of vocabulary)");
        for (int v = 0; v < ws.w[i].n_var; v++) {
            printf(v ? " |" : "\t");
            for (int k = 0; k < ws.w[i].var[v].n; k++)
                printf(" %s", ap_phones[ws.w[i].var[v].ph[k]]);
        }
        printf("\n");
    }
    free(ws.w);
    return 0;
}

static void ap_usage(void)
{
    printf("usage: align_phones [options] AUDIO TEXT OUT.phn\n"
           "       align_phones [options] --list JOBS.tsv\n"
           "       align_phones [options] --evaluate CORPUS_DIR [--max N]\n"
           "       align_phones [options] --words TEXT\n"
           "Forced phone alignment with pocketsphinx's US-English model: writes a TIMIT-style\n"
           ".phn (samples of the input audio, 41-class CMU phones, silence 'pau').\n"
           "  --list FILE      lines AUDIO<TAB>TEXT<TAB>OUT.phn; prints AUDIO<TAB>ok|rejected<TAB>why\n"
           "  --evaluate DIR   align a make_speech_corpus folder's flite items (text from items.tsv)\n"
           "                   and compare with their exact .phn files: boundary error, frame\n"
           "                   agreement (espeak-ng items are skipped: their phones are mapped)\n"
           "  --words TEXT     print the words of TEXT and their pronunciations\n"
           "  --max N          with --evaluate: the first N items only\n"
           "  --no-lts         reject words missing from the CMU dictionary instead of\n"
           "                   pronouncing them with flite's letter-to-sound rules\n"
           "  --silprob P      probability of a pause between words (default 0.1)\n"

           "Exit status: 0 aligned, 1 rejected (single file), 2 usage or errors.\n");
}

int main(int argc, char **argv)
{
    const char *list = NULL, *corpus = NULL, *show = NULL, *pos[3];
    int n_pos = 0, max_items = 0, use_lts = 1, rc = 2;
    double silprob = 0.1;
    ap_aligner a;

    memset(&a, 0, sizeof a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            ap_usage();
            return 0;
        } else if (strcmp(s, "--list") == 0 && has_val)
            list = argv[++i];
        else if (strcmp(s, "--evaluate") == 0 && has_val)
            corpus = argv[++i];
        else if (strcmp(s, "--words") == 0 && has_val)
            show = argv[++i];
        else if (strcmp(s, "--max") == 0 && has_val)
            max_items = atoi(argv[++i]);
        else if (strcmp(s, "--silprob") == 0 && has_val)
            silprob = atof(argv[++i]);
        else if (strcmp(s, "--no-lts") == 0)
            use_lts = 0;
        else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "align_phones: error: unknown option or missing value: %s\n", s);
            return 2;
        } else if (n_pos < 3)
            pos[n_pos++] = s;
        else {
            fprintf(stderr, "align_phones: error: too many arguments (see --help)\n");
            return 2;
        }
    }
    if ((list != NULL) + (corpus != NULL) + (show != NULL) + (n_pos > 0) != 1 || (n_pos && n_pos != 3) ||
        !(silprob > 0 && silprob < 1)) {
        ap_usage();
        return 2;
    }
    if (ap_aligner_init(&a, use_lts) < 0)
        goto done;
    a.silprob = (float)silprob;
    if (show)
        rc = ap_show_words(&a, show) < 0 ? 2 : 0;
    else if (list)
        rc = ap_run_list(&a, list) < 0 ? 2 : 0;
    else if (corpus) {
        const char *tmp = getenv("TMPDIR");
        rc = ap_evaluate(&a, corpus, max_items, tmp && *tmp ? tmp : "/tmp") < 0 ? 2 : 0;
    } else {
        int r = ap_align_file(&a, pos[0], pos[1], pos[2], stderr);
        rc = r == 0 ? 0 : r == 1 ? 1 : 2;
    }
done:
    ap_aligner_free(&a);
    return rc;
}
