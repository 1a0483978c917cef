/* Label sets, TIMIT-style .phn alignments, and frame labels from them. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clapp/plugin.h"
#include "storage/textline.h"
#include "media/labels.h"

/* ------------------------------------------------------------------------ */
/* Label sets                                                                */

int clapp_labelset_find(const clapp_labelset *ls, const char *name)
{
    if (!ls || !name)
        return -1;
    for (int32_t i = 0; i < ls->n; i++)
        if (strcmp(ls->names[i], name) == 0)
            return i;
    for (int32_t i = 0; i < ls->n_alias; i++)
        if (strcmp(ls->alias[i], name) == 0)
            return ls->alias_id[i];
    return -1;
}

int clapp_labelset_add(clapp_labelset *ls, const char *name)
{
    int id;
    char *copy;
    if (!ls || !name || !*name)
        return CLAPP_E_INVAL;
    id = clapp_labelset_find(ls, name);
    if (id >= 0)
        return id;
    if (ls->frozen)
        return CLAPP_E_NOTFOUND;
    if (ls->n == ls->cap) {
        int32_t cap = ls->cap ? ls->cap * 2 : 16;
        char **names = realloc(ls->names, (size_t)cap * sizeof *names);
        if (!names)
            return CLAPP_E_NOMEM;
        ls->names = names;
        ls->cap = cap;
    }
    copy = strdup(name);
    if (!copy)
        return CLAPP_E_NOMEM;
    ls->names[ls->n] = copy;
    return ls->n++;
}

int clapp_labelset_alias(clapp_labelset *ls, const char *alias, const char *target)
{
    int id = clapp_labelset_find(ls, target);
    char *copy;
    if (id < 0)
        return CLAPP_E_NOTFOUND;
    if (!alias || !*alias)
        return CLAPP_E_INVAL;
    for (int32_t i = 0; i < ls->n; i++)
        if (strcmp(ls->names[i], alias) == 0)
            return CLAPP_E_INVAL;
    for (int32_t i = 0; i < ls->n_alias; i++)
        if (strcmp(ls->alias[i], alias) == 0) {
            ls->alias_id[i] = id;
            return 0;
        }
    if (ls->n_alias == ls->cap_alias) {
        int32_t cap = ls->cap_alias ? ls->cap_alias * 2 : 4;
        char **names = realloc(ls->alias, (size_t)cap * sizeof *names);
        int32_t *ids;
        if (!names)
            return CLAPP_E_NOMEM;
        ls->alias = names;
        ids = realloc(ls->alias_id, (size_t)cap * sizeof *ids);
        if (!ids)
            return CLAPP_E_NOMEM;
        ls->alias_id = ids;
        ls->cap_alias = cap;
    }
    copy = strdup(alias);
    if (!copy)
        return CLAPP_E_NOMEM;
    ls->alias[ls->n_alias] = copy;
    ls->alias_id[ls->n_alias++] = id;
    return 0;
}

void clapp_labelset_free(clapp_labelset *ls)
{
    if (!ls)
        return;
    for (int32_t i = 0; i < ls->n; i++)
        free(ls->names[i]);
    for (int32_t i = 0; i < ls->n_alias; i++)
        free(ls->alias[i]);
    free(ls->names);
    free(ls->alias);
    free(ls->alias_id);
    memset(ls, 0, sizeof *ls);
}

int clapp_labelset_init_cmu41(clapp_labelset *ls)
{
    /* Alphabetical, so ids do not depend on which phones a corpus happens to
     * use first; pau last so 0..39 are the speech sounds. */
    static const char *const phones[] = {
        "aa", "ae", "ah", "ao", "aw", "ax", "ay", "b",  "ch", "d",  "dh", "eh", "er", "ey",
        "f",  "g",  "hh", "ih", "iy", "jh", "k",  "l",  "m",  "n",  "ng", "ow", "oy", "p",
        "r",  "s",  "sh", "t",  "th", "uh", "uw", "v",  "w",  "y",  "z",  "zh", "pau",
    };
    static const char *const silence_aliases[] = {"sil", "h#", "_"};
    int rc = 0;
    memset(ls, 0, sizeof *ls);
    for (size_t i = 0; i < sizeof phones / sizeof phones[0]; i++) {
        rc = clapp_labelset_add(ls, phones[i]);
        if (rc < 0)
            goto fail;
    }
    for (size_t i = 0; i < sizeof silence_aliases / sizeof silence_aliases[0]; i++) {
        rc = clapp_labelset_alias(ls, silence_aliases[i], "pau");
        if (rc < 0)
            goto fail;
    }
    ls->frozen = 1;
    return 0;
fail:
    clapp_labelset_free(ls);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* .phn alignments                                                           */

static int parse_i64(const char **p, int64_t *v)
{
    char *end;
    long long x;
    while (**p == ' ' || **p == '\t')
        (*p)++;
    if (!isdigit((unsigned char)**p) && **p != '-' && **p != '+')
        return -1;
    errno = 0;
    x = strtoll(*p, &end, 10);
    if (end == *p || errno == ERANGE || (*end && !isspace((unsigned char)*end)))
        return -1;
    *v = x;
    *p = end;
    return 0;
}

int clapp_alignment_load(clapp_alignment *a, const char *path, clapp_labelset *ls, char *err,
                         size_t errlen)
{
    FILE *f = NULL;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    int32_t cap = 0, lineno = 0;
    int rc = 0;

    memset(a, 0, sizeof *a);
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open alignment (%s)", path, strerror(errno));
        rc = CLAPP_E_IO;
        goto fail;
    }
    while ((got = clapp_read_line(&line, &linecap, f, CLAPP_TEXT_LINE_MAX)) >= 0) {
        const char *p = line;
        char name[64];
        int64_t start, end;
        size_t nlen;
        int id;
        lineno++;
        if ((size_t)got != strlen(line)) {
            snprintf(err, errlen, "%s:%d: NUL byte in line (not a text file?)", path, lineno);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (lineno == 1)
            p += clapp_utf8_bom(p);
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        if (parse_i64(&p, &start) < 0 || parse_i64(&p, &end) < 0) {
            snprintf(err, errlen, "%s:%d: malformed line (expected 'start end phone' in samples)",
                     path, lineno);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        nlen = 0;
        while (p[nlen] && !isspace((unsigned char)p[nlen]))
            nlen++;
        if (nlen == 0 || nlen >= sizeof name) {
            snprintf(err, errlen, "%s:%d: malformed line (%s phone name)", path, lineno,
                     nlen ? "over-long" : "missing");
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        memcpy(name, p, nlen);
        name[nlen] = 0;
        p += nlen;
        while (*p && isspace((unsigned char)*p))
            p++;
        if (*p && *p != '#') {
            snprintf(err, errlen, "%s:%d: malformed line (extra text after the phone name)", path,
                     lineno);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (start < 0) {
            snprintf(err, errlen, "%s:%d: negative start %lld", path, lineno, (long long)start);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (end < start) {
            snprintf(err, errlen, "%s:%d: end %lld before start %lld", path, lineno,
                     (long long)end, (long long)start);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (a->n > 0 && start < a->seg[a->n - 1].end) {
            snprintf(err, errlen, "%s:%d: segment starts at %lld, before the previous one ends "
                     "(%lld): overlapping or out of order", path, lineno, (long long)start,
                     (long long)a->seg[a->n - 1].end);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        id = clapp_labelset_add(ls, name);
        if (id == CLAPP_E_NOTFOUND) {
            snprintf(err, errlen, "%s:%d: unknown phone '%s' (not in the label set)", path, lineno,
                     name);
            rc = CLAPP_E_FORMAT;
            goto fail;
        }
        if (id < 0) {
            snprintf(err, errlen, "%s:%d: out of memory", path, lineno);
            rc = id;
            goto fail;
        }
        if (a->n == cap) {
            int32_t ncap = cap ? cap * 2 : 64;
            clapp_phn_segment *seg = realloc(a->seg, (size_t)ncap * sizeof *seg);
            if (!seg) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = CLAPP_E_NOMEM;
                goto fail;
            }
            a->seg = seg;
            cap = ncap;
        }
        a->seg[a->n].start = start;
        a->seg[a->n].end = end;
        a->seg[a->n].label = id;
        a->seg[a->n].line = lineno;
        a->n++;
    }
    if (got == CLAPP_LINE_TOO_LONG || got == CLAPP_LINE_NOMEM) {
        snprintf(err, errlen, "%s:%d: %s", path, lineno + 1, got == CLAPP_LINE_NOMEM ? "out of memory" :
                 "line longer than 1 MiB (not a text alignment?)");
        rc = got == CLAPP_LINE_NOMEM ? CLAPP_E_NOMEM : CLAPP_E_FORMAT;
        goto fail;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error (%s)", path, strerror(errno));
        rc = CLAPP_E_IO;
        goto fail;
    }
    free(line);
    fclose(f);
    return 0;
fail:
    free(line);
    if (f)
        fclose(f);
    clapp_alignment_free(a);
    return rc;
}

void clapp_alignment_free(clapp_alignment *a)
{
    if (!a)
        return;
    free(a->seg);
    a->seg = NULL;
    a->n = 0;
}

int64_t clapp_label_frame_count(int64_t n, double label_rate, double rate)
{
    double x;
    if (n <= 0 || label_rate <= 0 || rate <= 0)
        return 0;
    x = (double)n * label_rate / rate;
    /* The tolerance keeps an exact multiple from gaining a frame by rounding. */
    return (int64_t)ceil(x - 1e-9 * (x > 1 ? x : 1));
}

/* Index of the segment whose [start, end) holds sample position c, or -1. */
static int32_t segment_at(const clapp_alignment *a, double c)
{
    int32_t lo = 0, hi = a->n;   /* first segment with end > c */
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if ((double)a->seg[mid].end > c)
            hi = mid;
        else
            lo = mid + 1;
    }
    /* Zero-length segments have end == start and never hold c. */
    if (lo < a->n && (double)a->seg[lo].start <= c)
        return lo;
    return -1;
}

int32_t clapp_alignment_label_at(const clapp_alignment *a, int in_rate, double label_rate,
                                 int64_t i, int32_t silence)
{
    double c;
    int32_t s;
    if (!a || a->n == 0 || in_rate <= 0 || label_rate <= 0 || i < 0)
        return silence;
    c = ((double)i + 0.5) * (double)in_rate / label_rate;
    s = segment_at(a, c);
    return s >= 0 ? a->seg[s].label : silence;
}

int64_t clapp_alignment_frames(const clapp_alignment *a, int in_rate, int64_t n_samples,
                               double label_rate, int32_t silence, int32_t *out, int64_t max)
{
    int64_t total = clapp_label_frame_count(n_samples, label_rate, in_rate);
    if (!out)
        return total;
    if (total > max)
        total = max;
    for (int64_t i = 0; i < total; i++)
        out[i] = clapp_alignment_label_at(a, in_rate, label_rate, i, silence);
    return total;
}
