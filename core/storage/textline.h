/* Bounded line reading for the text inputs (manifests, .phn alignments): a
 * line without a newline cannot grow memory without bound. */
#ifndef CLAPP_STORAGE_TEXTLINE_H
#define CLAPP_STORAGE_TEXTLINE_H

#include <stdio.h>
#include <sys/types.h>

/* The longest line (newline included) any text input may have: 1 MiB. */
#define CLAPP_TEXT_LINE_MAX ((size_t)1 << 20)

enum {
    CLAPP_LINE_EOF = -1,       /* nothing more (or a read error: see ferror) */
    CLAPP_LINE_TOO_LONG = -2,  /* more than max bytes without a newline */
    CLAPP_LINE_NOMEM = -3,
};

/* Read one line of f, with its '\n' if it has one, NUL-terminated, into
 * *line (grown as getline does; free it in any case). Returns its length
 * in bytes or a CLAPP_LINE_* code; never reads more than max + 1 bytes of
 * one line. */
ssize_t clapp_read_line(char **line, size_t *cap, FILE *f, size_t max);

/* Bytes of a UTF-8 byte order mark at the start of s (3, or 0): editors on
 * Windows start text files with one, which is no part of the first line. */
size_t clapp_utf8_bom(const char *s);

#endif
