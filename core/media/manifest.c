/* Manifests: TSV lists of media files with optional class label and .phn
 * alignment per line. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/plugin.h"
#include "storage/textline.h"
#include "media/manifest.h"

static int is_url(const char *p)
{
    return strstr(p, "://") != NULL || strncmp(p, "pipe:", 5) == 0;
}

/* Trim spaces at both ends, in place. */
static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\r' || e[-1] == '\n' || e[-1] == '\t'))
        *--e = 0;
    return s;
}

/* A path as written in the manifest, resolved against its folder `dir`
 * (NULL: the manifest is in the current folder). */
static char *resolve(const char *dir, const char *p)
{
    char *out;
    size_t n;
    if (!dir || strcmp(p, "-") == 0 || is_url(p) || p[0] == '/')
        return strdup(p);
    n = strlen(dir) + strlen(p) + 2;
    out = malloc(n);
    if (out)   /* a manifest in "/" has dir "/": no double slash */
        snprintf(out, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", p);
    return out;
}

/* A safe relative output name from a path (see manifest.h). */
static char *make_key(const char *dir_abs, const char *p)
{
    const char *src = p, *q;
    char *out, *o;
    size_t n;
    if (strcmp(p, "-") == 0)
        return strdup("stdin");
    if ((q = strstr(p, "://")) != NULL)
        src = q + 3;
    else if (strncmp(p, "pipe:", 5) == 0)
        src = p;   /* "pipe:0" -> "pipe_0" below */
    else if (p[0] == '/' && dir_abs) {
        size_t dl = strlen(dir_abs);
        if (strncmp(p, dir_abs, dl) == 0 && p[dl] == '/')
            src = p + dl + 1;
    }
    n = strlen(src);
    out = malloc(2 * n + 8);   /* ".." -> "__" keeps the length; room for "stdin" etc */
    if (!out)
        return NULL;
    o = out;
    /* Walk '/'-separated parts, dropping empty and "." parts. */
    while (*src && *src != '?' && *src != '#') {
        size_t len = 0;
        while (src[len] && src[len] != '/' && src[len] != '?' && src[len] != '#')
            len++;
        if (len == 0 || (len == 1 && src[0] == '.')) {
            /* skip */
        } else {
            if (o != out)
                *o++ = '/';
            if (len == 2 && src[0] == '.' && src[1] == '.') {
                *o++ = '_';
                *o++ = '_';
            } else {
                for (size_t i = 0; i < len; i++) {
                    unsigned char c = (unsigned char)src[i];
                    *o++ = (char)(isalnum(c) || c == '.' || c == '_' || c == '-' ? c : '_');
                }
            }
        }
        src += len;
        if (*src == '/')
            src++;
    }
    *o = 0;
    /* Drop the extension of the last part (not a leading dot: ".hidden"). */
    {
        char *last = strrchr(out, '/');
        char *dot;
        last = last ? last + 1 : out;
        dot = strrchr(last, '.');
        if (dot && dot != last)
            *dot = 0;
        /* "...wav" and "..wav" would leave ".." and ".": parts that name
         * folders, not files (found by tests/fuzz/fuzz_manifest.c). */
        if (!strcmp(last, ".") || !strcmp(last, ".."))
            memset(last, '_', strlen(last));
    }
    if (!*out)
        strcpy(out, "_");
    return out;
}

static int cmp_key(const void *x, const void *y)
{
    const clapp_manifest_entry *a = *(const clapp_manifest_entry *const *)x;
    const clapp_manifest_entry *b = *(const clapp_manifest_entry *const *)y;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    return (a->line > b->line) - (a->line < b->line);
}

/* Give later entries with an already used key the suffix "-L<line>". */
static int make_keys_unique(clapp_manifest *m)
{
    clapp_manifest_entry **order = NULL;
    int rc = 0;
    if (m->n < 2)
        return 0;
    order = malloc((size_t)m->n * sizeof *order);
    if (!order)
        return CLAPP_E_NOMEM;
    for (int32_t i = 0; i < m->n; i++)
        order[i] = &m->entries[i];
    qsort(order, (size_t)m->n, sizeof *order, cmp_key);
    for (int32_t i = m->n - 1; i > 0; i--) {
        clapp_manifest_entry *e = order[i];
        size_t n;
        char *k;
        if (strcmp(e->key, order[i - 1]->key) != 0)
            continue;
        n = strlen(e->key) + 16;
        k = malloc(n);
        if (!k) {
            rc = CLAPP_E_NOMEM;
            goto fail;
        }
        snprintf(k, n, "%s-L%d", e->key, e->line);
        free(e->key);
        e->key = k;
    }
fail:
    free(order);
    return rc;
}

int clapp_manifest_load(clapp_manifest *m, const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *line = NULL, *dir = NULL, *dir_abs = NULL;
    size_t linecap = 0;
    ssize_t got;
    int32_t cap = 0;
    int lineno = 0, rc = 0;

    memset(m, 0, sizeof *m);
    if (!path || !*path) {
        snprintf(err, errlen, "manifest: no path given");
        return CLAPP_E_INVAL;
    }
    m->path = strdup(path);
    if (!m->path)
        goto nomem;
    {
        const char *slash = strrchr(path, '/');
        if (slash) {
            size_t dl = slash == path ? 1 : (size_t)(slash - path);
            dir = strndup(path, dl);
            if (!dir)
                goto nomem;
        }
        dir_abs = realpath(dir ? dir : ".", NULL);   /* NULL is fine: keys then keep more */
    }
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open manifest (%s)", path, strerror(errno));
        rc = CLAPP_E_IO;
        goto fail;
    }
    while ((got = clapp_read_line(&line, &linecap, f, CLAPP_TEXT_LINE_MAX)) >= 0) {
        char *fields[3] = {NULL, NULL, NULL};
        char *s = line, *p;
        int nf = 0;
        clapp_manifest_entry *e;
        lineno++;
        if ((size_t)got != strlen(line)) {
            snprintf(err, errlen, "%s:%d: NUL byte in line (not a text manifest?)", path, lineno);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (lineno == 1 && (p = s + clapp_utf8_bom(s)) != s) {
            memmove(s, p, (size_t)got - 2);   /* the BOM and its 3 bytes go, the NUL stays */
            got -= 3;
        }
        /* Only line ends go here: a leading TAB means an empty path. */
        while (got > 0 && (s[got - 1] == '\n' || s[got - 1] == '\r'))
            s[--got] = 0;
        for (p = s; *p == ' ' || *p == '\t'; p++)
            ;
        if (!*p || *p == '#')
            continue;
        {
            int tabs = 0;
            for (p = s; *p; p++)
                tabs += *p == '\t';
            if (tabs > 2) {
                snprintf(err, errlen, "%s:%d: too many columns (%d; expected PATH [TAB LABEL "
                         "[TAB ALIGNMENT]])", path, lineno, tabs + 1);
                rc = CLAPP_E_FORMAT;
                goto fail;
            }
        }
        for (p = s;; p++) {
            if (*p == '\t' || *p == 0) {
                int last = *p == 0;
                *p = 0;
                fields[nf++] = trim(s);
                s = p + 1;
                if (last)
                    break;
            }
        }
        if (!*fields[0]) {
            snprintf(err, errlen, "%s:%d: empty path", path, lineno);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (m->n == cap) {
            int32_t ncap = cap ? cap * 2 : 64;
            clapp_manifest_entry *ne = realloc(m->entries, (size_t)ncap * sizeof *ne);
            if (!ne)
                goto nomem;
            m->entries = ne;
            cap = ncap;
        }
        e = &m->entries[m->n];
        memset(e, 0, sizeof *e);
        m->n++;
        e->line = lineno;
        e->path = resolve(dir, fields[0]);
        if (!e->path)
            goto nomem;
        {
            /* Keys come from the path as written, or from the absolute one. */
            e->key = make_key(dir_abs, fields[0]);
            if (!e->key)
                goto nomem;
        }
        if (fields[1] && *fields[1] && strcmp(fields[1], "-") != 0) {
            e->label = strdup(fields[1]);
            if (!e->label)
                goto nomem;
        }
        if (fields[2] && *fields[2] && strcmp(fields[2], "-") != 0) {
            e->alignment = resolve(dir, fields[2]);
            if (!e->alignment)
                goto nomem;
        }
    }
    if (got == CLAPP_LINE_TOO_LONG || got == CLAPP_LINE_NOMEM) {
        snprintf(err, errlen, "%s:%d: %s", path, lineno + 1, got == CLAPP_LINE_NOMEM ? "out of memory" :
                 "line longer than 1 MiB (not a text manifest?)");
        rc = got == CLAPP_LINE_NOMEM ? CLAPP_E_NOMEM : CLAPP_E_FORMAT;
        goto fail;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read manifest (%s)", path, strerror(errno));
        rc = CLAPP_E_IO;
        goto fail;
    }
    if (m->n == 0) {
        snprintf(err, errlen, "%s: manifest has no entries (only blank or '#' lines)", path);
        rc = CLAPP_E_FORMAT;
        goto fail;
    }
    rc = make_keys_unique(m);
    if (rc < 0)
        goto nomem;
    free(line);
    free(dir);
    free(dir_abs);
    fclose(f);
    return 0;
nomem:
    snprintf(err, errlen, "%s: out of memory", path);
    rc = CLAPP_E_NOMEM;
fail:
    free(line);
    free(dir);
    free(dir_abs);
    if (f)
        fclose(f);
    clapp_manifest_free(m);
    return rc;
}

void clapp_manifest_free(clapp_manifest *m)
{
    if (!m)
        return;
    for (int32_t i = 0; i < m->n; i++) {
        free(m->entries[i].path);
        free(m->entries[i].key);
        free(m->entries[i].label);
        free(m->entries[i].alignment);
    }
    free(m->entries);
    free(m->path);
    memset(m, 0, sizeof *m);
}
