/* clapp core — label sets (class and phone names), TIMIT-style .phn
 * alignments, and frame labels from them (labels.c).
 */
#ifndef CLAPP_CORE_LABELS_H
#define CLAPP_CORE_LABELS_H

#include <stddef.h>
#include <stdint.h>

/* A set of label names, ids 0..n-1 in order of first appearance (or fixed).
 * A zero-initialised struct is an empty, growable set. Names match exactly
 * (case-sensitive); aliases map further names onto existing ids. */
typedef struct clapp_labelset {
    char  **names;
    int32_t n;
    int32_t cap;
    int     frozen;   /* 1: unknown names are errors instead of being added */
    char  **alias;    /* [n_alias] alias names ... */
    int32_t *alias_id;/* ... and the ids they stand for */
    int32_t n_alias;
    int32_t cap_alias;
} clapp_labelset;

/* Id of `name` (added at the end if new). Returns the id, CLAPP_E_NOTFOUND
 * if the set is frozen and does not know the name, CLAPP_E_INVAL for an empty
 * name, or CLAPP_E_NOMEM. */
int     clapp_labelset_add(clapp_labelset *ls, const char *name);
int     clapp_labelset_find(const clapp_labelset *ls, const char *name); /* id or -1 */
/* Make `alias` another name of the existing label `target`. Returns 0,
 * CLAPP_E_NOTFOUND (no such target), CLAPP_E_INVAL (alias is already a
 * label name) or CLAPP_E_NOMEM. */
int     clapp_labelset_alias(clapp_labelset *ls, const char *alias, const char *target);
void    clapp_labelset_free(clapp_labelset *ls);
/* The 41-phone CMU set of flite/CPC, frozen. Ids in this fixed order:
 *   0 aa  1 ae  2 ah  3 ao  4 aw  5 ax  6 ay  7 b   8 ch  9 d  10 dh 11 eh
 *  12 er 13 ey 14 f  15 g  16 hh 17 ih 18 iy 19 jh 20 k  21 l  22 m  23 n
 *  24 ng 25 ow 26 oy 27 p  28 r  29 s  30 sh 31 t  32 th 33 uh 34 uw 35 v
 *  36 w  37 y  38 z  39 zh 40 pau
 * (the 39 CMU phones and ax in alphabetical order, pau last). "sil", "h#"
 * and "_" are aliases of pau. Returns 0 or CLAPP_E_NOMEM. */
#define CLAPP_CMU41_PAU 40
int     clapp_labelset_init_cmu41(clapp_labelset *ls);

/* One phone segment of a .phn file. */
typedef struct clapp_phn_segment {
    int64_t start, end;   /* samples of the original audio, start <= end */
    int32_t label;        /* id in the label set */
    int32_t line;         /* line in the .phn file (for error messages) */
} clapp_phn_segment;

typedef struct clapp_alignment {
    clapp_phn_segment *seg;
    int32_t            n;
} clapp_alignment;

/* Read a .phn file, mapping phone names through `ls` (unknown names are an
 * error naming the file and line when ls->frozen; otherwise they are added).
 * '#' comments and blank lines are skipped. Segments must be in time order
 * and must not overlap (gaps are fine, zero-length segments too). Returns 0,
 * CLAPP_E_IO (cannot read) or CLAPP_E_FORMAT ("file:line: cause"). */
int  clapp_alignment_load(clapp_alignment *a, const char *path, clapp_labelset *ls, char *err,
                          size_t errlen);
void clapp_alignment_free(clapp_alignment *a);

/* Label of frame `i` at label_rate: the segment containing the frame's
 * centre (i + 0.5) / label_rate seconds, or `silence` if none does. */
int32_t clapp_alignment_label_at(const clapp_alignment *a, int in_rate, double label_rate,
                                 int64_t i, int32_t silence);

/* Label per frame at label_rate: frame i covers [i, i+1)/label_rate seconds
 * of the original audio at in_rate Hz; its label is the segment that contains
 * the frame's centre, or `silence` if none does. Returns the frame count
 * written to out (up to max), covering the audio's n_samples (the last
 * partial frame counts: clapp_label_frame_count frames in all). With out
 * NULL, returns that total. */
int64_t clapp_alignment_frames(const clapp_alignment *a, int in_rate, int64_t n_samples,
                               double label_rate, int32_t silence, int32_t *out, int64_t max);

/* Number of label frames that start before sample n at `rate` Hz:
 * ceil(n * label_rate / rate). Frames [count(a), count(b)) are the ones that
 * start inside samples [a, b), so blocks split the frames without overlap. */
int64_t clapp_label_frame_count(int64_t n, double label_rate, double rate);

#endif
