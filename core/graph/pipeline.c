/* Pipeline descriptions: tokenizer/parser, default names, --set overrides,
 * resolution against the registry, and the canonical dump. */
#include "graph/pipeline.h"
#include "storage/textline.h"
#include "graph/params.h"
#include "clapp/plugin_util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest pipeline file read (a pipeline is a few hundred bytes). */
#define CLAPP_PIPE_FILE_MAX ((size_t)1 << 20)


static int is_ident_start(int c)
{
    return isalpha(c) || c == '_';
}

static int is_ident_char(int c)
{
    return isalnum(c) || c == '_';
}

/* [A-Za-z_][A-Za-z0-9_-]*: element types and names. */
static int valid_elem_name(const char *s)
{
    if (!is_ident_start((unsigned char)*s))
        return 0;
    for (s++; *s; s++)
        if (!is_ident_char((unsigned char)*s) && *s != '-')
            return 0;
    return 1;
}

static int valid_key(const char *s)
{
    if (!is_ident_start((unsigned char)*s))
        return 0;
    for (s++; *s; s++)
        if (!is_ident_char((unsigned char)*s))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Scanner                                                                   */

typedef struct scanner {
    const char *s;
    size_t      i;
    int         line, col;
    const char *file;
    char       *err;
    size_t      errlen;
} scanner;

static int peek(const scanner *sc, size_t k)
{
    /* Reading past the end is safe: we stop at the first NUL. */
    for (size_t j = 0; j < k; j++)
        if (sc->s[sc->i + j] == '\0')
            return '\0';
    return (unsigned char)sc->s[sc->i + k];
}

static void advance(scanner *sc)
{
    if (sc->s[sc->i] == '\0')
        return;
    if (sc->s[sc->i] == '\n') {
        sc->line++;
        sc->col = 1;
    } else {
        sc->col++;
    }
    sc->i++;
}

static void scan_err(const scanner *sc, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void scan_err(const scanner *sc, int line, int col, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    clapp_set_err(sc->err, sc->errlen, "%s:%d:%d: %s", sc->file, line, col, msg);
}

/* Length of a backslash-newline continuation at the cursor ('\', optional
 * blanks or CR, then '\n'), or 0. */
static size_t continuation_len(const scanner *sc)
{
    size_t k = 1;
    if (peek(sc, 0) != '\\')
        return 0;
    while (peek(sc, k) == ' ' || peek(sc, k) == '\t' || peek(sc, k) == '\r')
        k++;
    return peek(sc, k) == '\n' ? k + 1 : 0;
}

/* Whitespace, newlines, continuations and comments. */
static void skip_blank(scanner *sc)
{
    for (;;) {
        int c = peek(sc, 0);
        size_t k;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v') {
            advance(sc);
        } else if (c == '#') {
            while (peek(sc, 0) != '\0' && peek(sc, 0) != '\n')
                advance(sc);
        } else if ((k = continuation_len(sc)) > 0) {
            while (k--)
                advance(sc);
        } else {
            return;
        }
    }
}

/* Characters that end an unquoted word. */
static int ends_word(const scanner *sc)
{
    int c = peek(sc, 0);
    return c == '\0' || isspace(c) || c == '!' || c == '#' || continuation_len(sc) > 0;
}

/* The offending token at the cursor, for messages (at most 40 chars). */
static void token_at(const scanner *sc, char *buf, size_t len)
{
    size_t n = 0;
    scanner t = *sc;
    if (peek(&t, 0) == '!') {
        snprintf(buf, len, "!");
        return;
    }
    if (peek(&t, 0) == '\0') {
        snprintf(buf, len, "end of input");
        return;
    }
    while (!ends_word(&t) && n + 1 < len && n < 40) {
        buf[n++] = (char)peek(&t, 0);
        advance(&t);
    }
    buf[n] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Building the description                                                  */

static void free_values(clapp_pipe_elem *e)
{
    if (e->value_text && e->desc)
        for (int32_t k = 0; k < e->desc->n_params; k++)
            free(e->value_text[k]);
    free(e->value_text);
    free(e->values);
    e->value_text = NULL;
    e->values = NULL;
    e->desc = NULL;
}

static void free_elem(clapp_pipe_elem *e)
{
    free_values(e);
    for (int k = 0; k < e->n_kv; k++) {
        free(e->kv[k].key);
        free(e->kv[k].value);
    }
    free(e->kv);
    free(e->type);
    free(e->name);
    memset(e, 0, sizeof *e);
}

void clapp_pipedesc_free(clapp_pipeline_desc *pd)
{
    if (!pd)
        return;
    for (int i = 0; i < pd->n; i++)
        free_elem(&pd->elems[i]);
    free(pd->elems);
    free(pd->file);
    free(pd->text);
    memset(pd, 0, sizeof *pd);
}

static int add_kv(clapp_pipe_elem *e, char *key, char *value, int line, int col)
{
    clapp_pipe_kv *kv = realloc(e->kv, (size_t)(e->n_kv + 1) * sizeof *kv);
    if (!kv)
        return CLAPP_E_NOMEM;
    e->kv = kv;
    kv[e->n_kv].key = key;
    kv[e->n_kv].value = value;
    kv[e->n_kv].line = line;
    kv[e->n_kv].col = col;
    e->n_kv++;
    return CLAPP_OK;
}

static const clapp_pipe_kv *find_kv(const clapp_pipe_elem *e, const char *key)
{
    for (int k = 0; k < e->n_kv; k++)
        if (strcmp(e->kv[k].key, key) == 0)
            return &e->kv[k];
    return NULL;
}

int clapp_pipedesc_find(const clapp_pipeline_desc *pd, const char *name)
{
    for (int i = 0; i < pd->n; i++)
        if (pd->elems[i].name && strcmp(pd->elems[i].name, name) == 0)
            return i;
    return -1;
}

int clapp_pipedesc_insert(clapp_pipeline_desc *pd, int after, const char *type, const char *name,
                          const char *const *kv, int n_kv, char *err, size_t errlen)
{
    clapp_pipe_elem *elems, e;
    int rc = CLAPP_E_NOMEM;

    if (after < 0 || after >= pd->n || !valid_elem_name(type) || !valid_elem_name(name)) {
        clapp_set_err(err, errlen, "%s: cannot insert '%s' named '%s' after element %d", pd->file,
                type, name, after);
        return CLAPP_E_INVAL;
    }
    if (clapp_pipedesc_find(pd, name) >= 0) {
        clapp_set_err(err, errlen, "%s: an element named '%s' exists already", pd->file, name);
        return CLAPP_E_INVAL;
    }
    memset(&e, 0, sizeof e);
    e.type = strdup(type);
    e.name = strdup(name);
    if (!e.type || !e.name)
        goto fail;
    for (int k = 0; k < n_kv; k++) {
        char *key = strdup(kv[2 * k]), *value = strdup(kv[2 * k + 1]);
        if (!key || !value || add_kv(&e, key, value, 0, 0) < 0) {
            free(key);
            free(value);
            goto fail;
        }
    }
    elems = realloc(pd->elems, (size_t)(pd->n + 1) * sizeof *elems);
    if (!elems)
        goto fail;
    pd->elems = elems;
    memmove(&elems[after + 2], &elems[after + 1], (size_t)(pd->n - after - 1) * sizeof *elems);
    elems[after + 1] = e;
    pd->n++;
    return CLAPP_OK;
fail:
    free_elem(&e);
    clapp_set_err(err, errlen, "%s: out of memory", pd->file);
    return rc;
}

/* Read an identifier-like word ([A-Za-z_] then `more` chars) into a new string. */
static char *read_ident(scanner *sc, int allow_dash)
{
    size_t start = sc->i;
    if (!is_ident_start(peek(sc, 0)))
        return NULL;
    advance(sc);
    while (is_ident_char(peek(sc, 0)) || (allow_dash && peek(sc, 0) == '-'))
        advance(sc);
    return strndup(sc->s + start, sc->i - start);
}

/* A value after '=': quoted ('...' literal, "..." with backslash escapes) or
 * an unquoted run. Returns 0 and *out, or a negative status (message set). */
static int read_value(scanner *sc, const char *key, char **out)
{
    int q = peek(sc, 0);
    int line = sc->line, col = sc->col;
    char *buf = NULL;
    size_t n = 0, cap = 0;

    *out = NULL;
    if (q != '"' && q != '\'') {
        size_t start = sc->i;
        while (!ends_word(sc))
            advance(sc);
        if (sc->i == start) {
            scan_err(sc, line, col, "missing value after '%s=' (write %s=\"\" for an empty value)",
                     key, key);
            return CLAPP_E_FORMAT;
        }
        *out = strndup(sc->s + start, sc->i - start);
        return *out ? CLAPP_OK : CLAPP_E_NOMEM;
    }
    advance(sc);
    cap = 32;
    buf = malloc(cap);
    if (!buf)
        return CLAPP_E_NOMEM;
    for (;;) {
        int c = peek(sc, 0);
        if (c == '\0') {
            scan_err(sc, line, col, "unterminated %c quote in the value of '%s'", q, key);
            free(buf);
            return CLAPP_E_FORMAT;
        }
        if (c == q) {
            advance(sc);
            break;
        }
        if (q == '"' && c == '\\') {
            int e = peek(sc, 1);
            advance(sc);
            if (e == '\0')
                continue; /* reported as unterminated on the next turn */
            if (e == '\n' || (e == '\r' && peek(sc, 1) == '\n')) {
                /* continuation inside "...": dropped */
                if (e == '\r')
                    advance(sc);
                advance(sc);
                continue;
            }
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        }
        advance(sc);
        if (n + 2 > cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return CLAPP_E_NOMEM;
            }
            buf = b;
            cap *= 2;
        }
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    if (!ends_word(sc)) {
        char tok[64];
        token_at(sc, tok, sizeof tok);
        scan_err(sc, sc->line, sc->col, "unexpected '%s' after the closing quote of '%s'", tok,
                 key);
        free(buf);
        return CLAPP_E_FORMAT;
    }
    *out = buf;
    return CLAPP_OK;
}

/* Default names: TYPE + ordinal among the elements of that type (all of
 * them, named or not, so naming one element does not rename the others).
 * A default that collides with a name already taken gets "_2", "_3", ...
 * appended until it is unique. */
static int assign_default_names(clapp_pipeline_desc *pd)
{
    for (int i = 0; i < pd->n; i++) {
        clapp_pipe_elem *e = &pd->elems[i];
        int ordinal = 0, suffix = 1;
        size_t len;
        char *name;
        if (e->name)
            continue;
        for (int j = 0; j < i; j++)
            if (strcmp(pd->elems[j].type, e->type) == 0)
                ordinal++;
        len = strlen(e->type) + 32;
        name = malloc(len);
        if (!name)
            return CLAPP_E_NOMEM;
        snprintf(name, len, "%s%d", e->type, ordinal);
        while (clapp_pipedesc_find(pd, name) >= 0)
            snprintf(name, len, "%s%d_%d", e->type, ordinal, ++suffix);
        e->name = name;
    }
    return CLAPP_OK;
}

static int parse_elements(clapp_pipeline_desc *pd, scanner *sc)
{
    int bang_line = 0, bang_col = 0;
    char tok[64];

    for (;;) {
        clapp_pipe_elem *e;
        clapp_pipe_elem *elems;
        scanner start;
        int line, col;

        skip_blank(sc);
        line = sc->line;
        col = sc->col;
        if (peek(sc, 0) == '\0') {
            if (pd->n == 0)
                scan_err(sc, line, col, "empty pipeline: no elements");
            else
                scan_err(sc, bang_line, bang_col, "expected an element after '!', got end of input");
            return CLAPP_E_FORMAT;
        }
        if (peek(sc, 0) == '!') {
            if (pd->n == 0)
                scan_err(sc, line, col, "expected an element before '!'");
            else
                scan_err(sc, line, col, "empty element between two '!'");
            return CLAPP_E_FORMAT;
        }
        elems = realloc(pd->elems, (size_t)(pd->n + 1) * sizeof *elems);
        if (!elems)
            return CLAPP_E_NOMEM;
        pd->elems = elems;
        e = &pd->elems[pd->n];
        memset(e, 0, sizeof *e);
        e->lr = -1;
        e->learn = 1;
        e->line = line;
        e->col = col;
        pd->n++;

        start = *sc;
        e->type = read_ident(sc, 1);
        if (!e->type || !ends_word(sc)) {
            token_at(&start, tok, sizeof tok);
            scan_err(sc, line, col, "expected an element type ([A-Za-z_][A-Za-z0-9_-]*), got '%s'",
                     tok);
            return CLAPP_E_FORMAT;
        }

        for (;;) {
            char *key = NULL, *value = NULL;
            const clapp_pipe_kv *prev;
            int kline, kcol, rc;

            skip_blank(sc);
            if (peek(sc, 0) == '\0')
                return CLAPP_OK;
            if (peek(sc, 0) == '!') {
                bang_line = sc->line;
                bang_col = sc->col;
                advance(sc);
                break;
            }
            kline = sc->line;
            kcol = sc->col;
            start = *sc;
            key = read_ident(sc, 0);
            if (!key || peek(sc, 0) != '=') {
                free(key);
                token_at(&start, tok, sizeof tok);
                scan_err(sc, kline, kcol, "expected key=value after '%s', got '%s'", e->type, tok);
                return CLAPP_E_FORMAT;
            }
            advance(sc); /* '=' */
            rc = read_value(sc, key, &value);
            if (rc < 0) {
                free(key);
                if (rc == CLAPP_E_NOMEM)
                    clapp_set_err(sc->err, sc->errlen, "%s: out of memory", sc->file);
                return rc;
            }
            if (strcmp(key, "name") == 0) {
                int other;
                if (e->name) {
                    scan_err(sc, kline, kcol, "key 'name' given twice for %s", e->type);
                    free(key);
                    free(value);
                    return CLAPP_E_FORMAT;
                }
                if (!valid_elem_name(value)) {
                    scan_err(sc, kline, kcol,
                             "name=%s: a name must match [A-Za-z_][A-Za-z0-9_-]*", value);
                    free(key);
                    free(value);
                    return CLAPP_E_FORMAT;
                }
                other = clapp_pipedesc_find(pd, value);
                if (other >= 0) {
                    scan_err(sc, kline, kcol, "duplicate name '%s' (already the name of the %s at %d:%d)",
                             value, pd->elems[other].type, pd->elems[other].line,
                             pd->elems[other].col);
                    free(key);
                    free(value);
                    return CLAPP_E_FORMAT;
                }
                free(key);
                e->name = value;
                continue;
            }
            prev = find_kv(e, key);
            if (prev) {
                scan_err(sc, kline, kcol, "key '%s' given twice for %s (first at %d:%d)", key,
                         e->type, prev->line, prev->col);
                free(key);
                free(value);
                return CLAPP_E_FORMAT;
            }
            if (add_kv(e, key, value, kline, kcol) < 0) {
                free(key);
                free(value);
                clapp_set_err(sc->err, sc->errlen, "%s: out of memory", sc->file);
                return CLAPP_E_NOMEM;
            }
        }
    }
}

int clapp_pipedesc_parse(clapp_pipeline_desc *pd, const char *text, const char *file,
                         char *err, size_t errlen)
{
    scanner sc;
    int rc;

    memset(pd, 0, sizeof *pd);
    pd->file = strdup(file ? file : "<string>");
    pd->text = strdup(text ? text : "");
    if (!pd->file || !pd->text) {
        clapp_set_err(err, errlen, "%s: out of memory", file ? file : "<string>");
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    memset(&sc, 0, sizeof sc);
    sc.s = pd->text;
    sc.line = 1;
    sc.col = 1;
    sc.file = pd->file;
    sc.err = err;
    sc.errlen = errlen;
    rc = parse_elements(pd, &sc);
    if (rc < 0)
        goto fail;
    rc = assign_default_names(pd);
    if (rc < 0) {
        clapp_set_err(err, errlen, "%s: out of memory", pd->file);
        goto fail;
    }
    return CLAPP_OK;
fail:
    clapp_pipedesc_free(pd);
    return rc;
}

int clapp_pipedesc_parse_file(clapp_pipeline_desc *pd, const char *path, char *err,
                              size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc;

    memset(pd, 0, sizeof *pd);
    f = fopen(path, "rb");
    if (!f)
        goto io_fail;
    for (;;) {
        size_t got;
        if (cap - n < 4096) {
            char *b = realloc(buf, cap ? cap * 2 : 8192);
            if (!b) {
                clapp_set_err(err, errlen, "%s: out of memory", path);
                rc = CLAPP_E_NOMEM;
                goto fail;
            }
            buf = b;
            cap = cap ? cap * 2 : 8192;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        /* Bounded: /dev/zero or a stray binary is refused at once. */
        if (memchr(buf + n, 0, got)) {
            clapp_set_err(err, errlen, "%s: not a text file (contains a NUL byte)", path);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        n += got;
        if (n > CLAPP_PIPE_FILE_MAX) {
            clapp_set_err(err, errlen, "%s: larger than 1 MiB (not a pipeline file?)", path);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (got == 0)
            break;
    }
    if (ferror(f))
        goto io_fail;
    buf[n] = '\0';
    if (strlen(buf) != n) {
        clapp_set_err(err, errlen, "%s: not a text file (contains a NUL byte)", path);
        rc = CLAPP_E_FORMAT;
        goto fail;
    }
    rc = clapp_pipedesc_parse(pd, buf + clapp_utf8_bom(buf), path, err, errlen);
    goto done;
io_fail:
    clapp_set_err(err, errlen, "%s: cannot read (%s)", path, strerror(errno));
    rc = CLAPP_E_IO;
fail:
done:
    if (f)
        fclose(f);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* --set NAME.KEY=VALUE                                                      */

int clapp_pipedesc_set(clapp_pipeline_desc *pd, const char *assignment, char *err,
                       size_t errlen)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = NULL;
    char *name = NULL, *key = NULL, *value = NULL;
    clapp_pipe_elem *e;
    int idx, rc = CLAPP_E_INVAL;

    if (eq)
        for (const char *p = assignment; p < eq; p++)
            if (*p == '.')
                dot = p;
    if (!eq || !dot || dot == assignment || dot + 1 == eq) {
        clapp_set_err(err, errlen, "--set %s: expected NAME.KEY=VALUE", assignment);
        goto fail;
    }
    name = strndup(assignment, (size_t)(dot - assignment));
    key = strndup(dot + 1, (size_t)(eq - dot - 1));
    value = strdup(eq + 1);
    if (!name || !key || !value) {
        clapp_set_err(err, errlen, "--set %s: out of memory", assignment);
        rc = CLAPP_E_NOMEM;
        goto fail;
    }
    if (!valid_key(key)) {
        clapp_set_err(err, errlen, "--set %s: '%s' is not a valid key ([A-Za-z_][A-Za-z0-9_]*)",
                assignment, key);
        goto fail;
    }
    if (strcmp(key, "name") == 0) {
        clapp_set_err(err, errlen, "--set %s: elements cannot be renamed with --set", assignment);
        goto fail;
    }
    idx = clapp_pipedesc_find(pd, name);
    if (idx < 0) {
        size_t used;
        clapp_set_err(err, errlen, "--set %s: no element named '%s'; elements:", assignment, name);
        for (int i = 0; err && i < pd->n; i++) {
            used = strlen(err);
            if (used + 1 < errlen)
                snprintf(err + used, errlen - used, "%s %s", i ? "," : "", pd->elems[i].name);
        }
        rc = CLAPP_E_NOTFOUND;
        goto fail;
    }
    e = &pd->elems[idx];
    for (int k = 0; k < e->n_kv; k++) {
        if (strcmp(e->kv[k].key, key) == 0) {
            free(e->kv[k].value);
            e->kv[k].value = value;
            e->kv[k].line = 0;
            e->kv[k].col = 0;
            free(key);
            free(name);
            return CLAPP_OK;
        }
    }
    rc = add_kv(e, key, value, 0, 0);
    if (rc < 0) {
        clapp_set_err(err, errlen, "--set %s: out of memory", assignment);
        goto fail;
    }
    free(name);
    return CLAPP_OK;
fail:
    free(name);
    free(key);
    free(value);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Resolution                                                                */

/* Levenshtein distance, for "did you mean" suggestions. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), best;
    size_t *row = malloc((lb + 1) * sizeof *row);
    if (!row)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t sub = diag + (a[i - 1] != b[j - 1]);
            size_t del = row[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            diag = up;
        }
    }
    best = row[lb];
    free(row);
    return best;
}

/* The closest candidate if it is close enough to be a likely typo. */
static const char *suggest(const char *word, const char *const *cands, int n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1, len = strlen(word);
    size_t limit = len / 3 > 2 ? len / 3 : 2;
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(word, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    return best_d <= limit ? best : NULL;
}

static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...)
{
    size_t used;
    va_list ap;
    if (!buf || len == 0)
        return;
    used = strlen(buf);
    if (used + 1 >= len)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Where a kv came from: "FILE:L:C" or "--set NAME.KEY=VALUE". */
static void kv_where(const clapp_pipeline_desc *pd, const clapp_pipe_elem *e,
                     const clapp_pipe_kv *kv, char *buf, size_t len)
{
    if (kv->line > 0)
        snprintf(buf, len, "%s:%d:%d", pd->file, kv->line, kv->col);
    else
        snprintf(buf, len, "--set %s.%s=%s", e->name, kv->key, kv->value);
}

static int has_host_lr(const clapp_plugin_desc *d)
{
    return d->kind == CLAPP_KIND_LAYER || d->kind == CLAPP_KIND_LOSS;
}

static const clapp_param_desc lr_desc = {"lr", CLAPP_PARAM_FLOAT, "-1", 0, HUGE_VAL, NULL,
                                         "learning rate of this element"};
static const clapp_param_desc learn_desc = {"learn", CLAPP_PARAM_BOOL, "true", 0, 1, NULL,
                                            "false freezes the element"};

static int resolve_type(const clapp_pipeline_desc *pd, clapp_pipe_elem *e,
                        const clapp_registry *reg, char *err, size_t errlen)
{
    const char **ids;
    const char *s;
    e->desc = clapp_registry_find(reg, e->type);
    if (e->desc)
        return CLAPP_OK;
    ids = malloc((size_t)(reg->n > 0 ? reg->n : 1) * sizeof *ids);
    if (!ids) {
        clapp_set_err(err, errlen, "%s: out of memory", pd->file);
        return CLAPP_E_NOMEM;
    }
    for (int32_t i = 0; i < reg->n; i++)
        ids[i] = reg->items[i].desc->id;
    qsort(ids, (size_t)reg->n, sizeof *ids, cmp_str);
    clapp_set_err(err, errlen, "%s:%d:%d: unknown element '%s'", pd->file, e->line, e->col, e->type);
    s = suggest(e->type, ids, reg->n);
    if (s)
        append(err, errlen, "; did you mean '%s'?", s);
    append(err, errlen, "%svalid elements:", s ? " " : "; ");
    for (int32_t i = 0; i < reg->n; i++)
        append(err, errlen, "%s %s", i ? "," : "", ids[i]);
    free(ids);
    return CLAPP_E_NOTFOUND;
}

static int unknown_key(const clapp_pipeline_desc *pd, const clapp_pipe_elem *e,
                       const clapp_pipe_kv *kv, char *err, size_t errlen)
{
    const clapp_plugin_desc *d = e->desc;
    int n = 0;
    const char **keys = malloc((size_t)(d->n_params + 3) * sizeof *keys);
    const char *s;
    char where[512];
    if (!keys) {
        clapp_set_err(err, errlen, "%s: out of memory", pd->file);
        return CLAPP_E_NOMEM;
    }
    for (int32_t k = 0; k < d->n_params; k++)
        keys[n++] = d->params[k].name;
    keys[n++] = "name";
    if (has_host_lr(d)) {
        keys[n++] = "lr";
        keys[n++] = "learn";
    }
    kv_where(pd, e, kv, where, sizeof where);
    clapp_set_err(err, errlen, "%s: unknown key '%s' for %s", where, kv->key, e->type);
    s = suggest(kv->key, keys, n);
    if (s)
        append(err, errlen, "; did you mean '%s'?", s);
    append(err, errlen, "%svalid keys:", s ? " " : "; ");
    for (int k = 0; k < n; k++)
        append(err, errlen, "%s %s", k ? "," : "", keys[k]);
    free(keys);
    return CLAPP_E_NOTFOUND;
}

static int resolve_elem(const clapp_pipeline_desc *pd, clapp_pipe_elem *e,
                        const clapp_registry *reg, char *err, size_t errlen)
{
    const clapp_plugin_desc *d;
    char msg[1024], where[512];
    int rc;

    rc = resolve_type(pd, e, reg, err, errlen);
    if (rc < 0)
        return rc;
    d = e->desc;
    e->lr = -1;
    e->learn = 1;
    if (d->n_params > 0) {
        e->values = calloc((size_t)d->n_params, sizeof *e->values);
        e->value_text = calloc((size_t)d->n_params, sizeof *e->value_text);
        if (!e->values || !e->value_text) {
            clapp_set_err(err, errlen, "%s: out of memory", pd->file);
            return CLAPP_E_NOMEM;
        }
    }

    /* Keys first, so a typo is reported as such rather than as a later value error. */
    for (int k = 0; k < e->n_kv; k++) {
        const clapp_pipe_kv *kv = &e->kv[k];
        int known = has_host_lr(d) && (!strcmp(kv->key, "lr") || !strcmp(kv->key, "learn"));
        for (int32_t p = 0; !known && p < d->n_params; p++)
            known = strcmp(d->params[p].name, kv->key) == 0;
        if (!known)
            return unknown_key(pd, e, kv, err, errlen);
    }

    for (int32_t p = 0; p < d->n_params; p++) {
        const clapp_param_desc *pdsc = &d->params[p];
        const clapp_pipe_kv *kv = find_kv(e, pdsc->name);
        char *owned = NULL;
        if (!strcmp(pdsc->name, "name") ||
            (has_host_lr(d) && (!strcmp(pdsc->name, "lr") || !strcmp(pdsc->name, "learn")))) {
            /* A descriptor bug: the host key would hide the parameter. */
            clapp_set_err(err, errlen, "%s:%d:%d: element '%s' declares parameter '%s', which is a "
                    "host key; the plugin must rename it", pd->file, e->line, e->col, d->id,
                    pdsc->name);
            return CLAPP_E_INVAL;
        }
        rc = clapp_param_parse(pdsc, kv ? kv->value : (pdsc->def ? pdsc->def : ""),
                               &e->values[p], &owned, msg, sizeof msg);
        if (rc < 0) {
            if (kv) {
                kv_where(pd, e, kv, where, sizeof where);
                clapp_set_err(err, errlen, "%s: %s '%s': %s", where, e->type, e->name, msg);
            } else {
                clapp_set_err(err, errlen, "%s:%d:%d: %s '%s': the element's default is invalid: %s",
                        pd->file, e->line, e->col, e->type, e->name, msg);
            }
            return rc;
        }
        if (owned) {
            /* STRING and ENUM: the canonical text is the string itself. */
            e->value_text[p] = owned;
        } else {
            e->value_text[p] = clapp_param_to_text(pdsc, &e->values[p]);
            if (!e->value_text[p]) {
                clapp_set_err(err, errlen, "%s: out of memory", pd->file);
                return CLAPP_E_NOMEM;
            }
        }
    }

    for (int k = 0; k < e->n_kv; k++) {
        const clapp_pipe_kv *kv = &e->kv[k];
        const clapp_param_desc *hd = !strcmp(kv->key, "lr")      ? &lr_desc
                                     : !strcmp(kv->key, "learn") ? &learn_desc
                                                                 : NULL;
        clapp_param_value v;
        char *owned = NULL;
        if (!hd || !has_host_lr(d))
            continue;
        rc = clapp_param_parse(hd, kv->value, &v, &owned, msg, sizeof msg);
        free(owned);
        if (rc < 0) {
            kv_where(pd, e, kv, where, sizeof where);
            clapp_set_err(err, errlen, "%s: %s '%s': %s", where, e->type, e->name, msg);
            return rc;
        }
        if (hd == &lr_desc)
            e->lr = v.f;
        else
            e->learn = (int)v.i;
    }
    return CLAPP_OK;
}

int clapp_pipedesc_resolve(clapp_pipeline_desc *pd, const clapp_registry *reg, char *err,
                           size_t errlen)
{
    /* Resolving again (after more --set) starts from scratch. */
    for (int i = 0; i < pd->n; i++)
        free_values(&pd->elems[i]);
    for (int i = 0; i < pd->n; i++) {
        int rc = resolve_elem(pd, &pd->elems[i], reg, err, errlen);
        if (rc < 0)
            return rc;
    }
    return CLAPP_OK;
}

/* ------------------------------------------------------------------------ */
/* Dump                                                                      */

static int needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isspace(c) || iscntrl(c) || c == '!' || c == '#' || c == '"' || c == '\'' || c == '\\')
            return 1;
    }
    return 0;
}

static void put_value(FILE *out, const char *s)
{
    if (!needs_quotes(s)) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        switch (*s) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default: fputc(*s, out); break;
        }
    }
    fputc('"', out);
}

void clapp_pipedesc_dump(const clapp_pipeline_desc *pd, FILE *out)
{
    for (int i = 0; i < pd->n; i++) {
        const clapp_pipe_elem *e = &pd->elems[i];
        const clapp_plugin_desc *d = e->desc;
        fprintf(out, "%s%s name=", i ? "! " : "", e->type);
        put_value(out, e->name ? e->name : "");
        if (d) {
            for (int32_t p = 0; p < d->n_params; p++) {
                fprintf(out, " %s=", d->params[p].name);
                put_value(out, e->value_text && e->value_text[p] ? e->value_text[p] : "");
            }
            if (has_host_lr(d)) {
                clapp_param_value v = {.f = e->lr};
                if (find_kv(e, "lr")) {
                    char *t = clapp_param_to_text(&lr_desc, &v);
                    fprintf(out, " lr=%s", t ? t : "");
                    free(t);
                }
                if (find_kv(e, "learn"))
                    fprintf(out, " learn=%s", e->learn ? "true" : "false");
            }
        } else {
            /* Not resolved: the raw pairs, as given. */
            for (int k = 0; k < e->n_kv; k++) {
                fprintf(out, " %s=", e->kv[k].key);
                put_value(out, e->kv[k].value);
            }
        }
        fputc('\n', out);
    }
}

char *clapp_pipedesc_to_text(const clapp_pipeline_desc *pd)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    clapp_pipedesc_dump(pd, f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
