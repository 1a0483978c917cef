/* clapp core — manifests (TSV lists of media files); label sets and
 * alignments are in labels.h, which this includes.
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

#include "media/labels.h"

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
 * naming the file, the line and the cause (more than 3 columns, an empty
 * path, a NUL byte, no entries at all).
 *
 * Paths: "-", URLs (containing "://" or starting with "pipe:") and absolute
 * paths are kept; relative paths are joined to the manifest's folder.
 * Fields are trimmed of surrounding spaces; "\r\n" line ends are fine.
 * Keys: the path as written, relative to the manifest, without its extension,
 * '/' kept ("a/b.wav" -> "a/b"); an absolute path inside the manifest's
 * folder is made relative to it, others lose the leading '/'; "." parts are
 * dropped, ".." parts become "__" and characters outside [A-Za-z0-9._-/]
 * become '_' so that a key is always a safe relative output name; URLs use
 * the part after "://" (query dropped); "-" is "stdin". A key seen before
 * gets "-L<line>" appended, so keys are unique. */
int  clapp_manifest_load(clapp_manifest *m, const char *path, char *err, size_t errlen);
void clapp_manifest_free(clapp_manifest *m);

#endif
