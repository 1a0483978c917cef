/* clapp core — manifests (TSV lists of media files) and label sets.
 *
 * Manifest line:  PATH [TAB LABEL [TAB ALIGNMENT]]
 *   PATH       a file path (relative paths are relative to the manifest's
 *              folder), "-" for standard input, or a URL FFmpeg opens.
 *   LABEL      class name of the whole file; empty or "-" for none.
 *   ALIGNMENT  a TIMIT-style .phn file ("start end phone" per line, start and
 *              end in samples of the original audio); empty or "-" for none.
 * Lines starting with '#' and empty lines are skipped.
 */
#ifndef CLAPP_CORE_MANIFEST_H
#define CLAPP_CORE_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

/* A set of label names, ids 0..n-1 in order of first appearance (or fixed). */
typedef struct clapp_labelset {
    char  **names;
    int32_t n;
    int32_t cap;
    int     frozen;   /* 1: unknown names are errors instead of being added */
} clapp_labelset;

int     clapp_labelset_add(clapp_labelset *ls, const char *name);  /* id, or <0 */
int     clapp_labelset_find(const clapp_labelset *ls, const char *name); /* id or -1 */
void    clapp_labelset_free(clapp_labelset *ls);
/* The 41-phone CMU set of flite/CPC (39 phones + ax + pau), frozen. */
int     clapp_labelset_init_cmu41(clapp_labelset *ls);

typedef struct clapp_manifest_entry {
    char   *path;        /* resolved path or URL */
    char   *key;         /* stable name for outputs: path relative to the manifest, no extension */
    char   *label;       /* NULL if none */
    char   *alignment;   /* resolved .phn path, NULL if none */
    int     line;        /* line number in the manifest */
} clapp_manifest_entry;

typedef struct clapp_manifest {
    char                 *path;
    clapp_manifest_entry *entries;
    int32_t               n;
} clapp_manifest;

/* Parse a manifest. Returns 0, or CLAPP_E_IO / CLAPP_E_FORMAT with err
 * naming the file, the line and the cause. */
int  clapp_manifest_load(clapp_manifest *m, const char *path, char *err, size_t errlen);
void clapp_manifest_free(clapp_manifest *m);

/* One phone segment of a .phn file. */
typedef struct clapp_phn_segment {
    int64_t start, end;   /* samples of the original audio */
    int32_t label;        /* id in the label set */
} clapp_phn_segment;

typedef struct clapp_alignment {
    clapp_phn_segment *seg;
    int32_t            n;
} clapp_alignment;

/* Read a .phn file, mapping phone names through `ls` (unknown names are an
 * error naming the file and line when ls->frozen). */
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
 * written to out (up to max), covering the audio's n_samples. */
int64_t clapp_alignment_frames(const clapp_alignment *a, int in_rate, int64_t n_samples,
                               double label_rate, int32_t silence, int32_t *out, int64_t max);

#endif
