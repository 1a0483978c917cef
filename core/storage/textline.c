/* Bounded line reading (see textline.h). */
#include "storage/textline.h"

#include <stdlib.h>

ssize_t clapp_read_line(char **line, size_t *cap, FILE *f, size_t max)
{
    size_t n = 0;
    int c = EOF;
    for (;;) {
        c = getc(f);
        if (c == EOF)
            break;
        if (n + 2 > *cap) {
            size_t want = *cap ? *cap * 2 : 256;
            char *b;
            if (want > max + 2)
                want = max + 2;
            if (!(b = realloc(*line, want)))
                return CLAPP_LINE_NOMEM;
            *line = b;
            *cap = want;
        }
        (*line)[n++] = (char)c;
        if (c == '\n')
            break;
        if (n >= max)
            return CLAPP_LINE_TOO_LONG;
    }
    if (n == 0)
        return CLAPP_LINE_EOF;
    (*line)[n] = 0;
    return (ssize_t)n;
}

size_t clapp_utf8_bom(const char *s)
{
    return (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF ? 3 : 0;
}
