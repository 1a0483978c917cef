/* Typed parameter values: parsing pipeline text into clapp_param_value and
 * printing values back as canonical text that parses to the same value. */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "graph/params.h"
#include "clapp/plugin_util.h"


/* A table entry with min == max == 0 (or min > max) declares no range. */
static int has_range(const clapp_param_desc *d)
{
    return !(d->min == 0 && d->max == 0) && d->min <= d->max;
}

/* Shortest "%.Ng" text that reads back as exactly x, so dumps round-trip. */
static void format_double(double x, char *buf, size_t len)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

static void format_range(const clapp_param_desc *d, char *buf, size_t len)
{
    char lo[40], hi[40];
    const char *what = d->type == CLAPP_PARAM_INT ? "an integer" : "a finite number";
    if (!has_range(d)) {
        snprintf(buf, len, "%s", what);
        return;
    }
    format_double(d->min, lo, sizeof lo);
    format_double(d->max, hi, sizeof hi);
    if (isinf(d->max) && isinf(d->min))
        snprintf(buf, len, "%s", what);
    else if (isinf(d->max))
        snprintf(buf, len, "%s >= %s", what, lo);
    else if (isinf(d->min))
        snprintf(buf, len, "%s <= %s", what, hi);
    else
        snprintf(buf, len, "%s in [%s, %s]", what, lo, hi);
}

/* Decimal integer with an optional k (x1000) or M (x1000000) suffix. */
static int parse_int(const char *text, int64_t *out)
{
    char *end = NULL;
    long long v;
    int64_t mul = 1;
    if (!(isdigit((unsigned char)text[0]) ||
          ((text[0] == '-' || text[0] == '+') && isdigit((unsigned char)text[1]))))
        return -1;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno == ERANGE)
        return -1;
    if (*end == 'k')
        mul = 1000, end++;
    else if (*end == 'M')
        mul = 1000000, end++;
    if (*end != '\0')
        return -1;
    if (mul > 1 && (v > INT64_MAX / mul || v < INT64_MIN / mul))
        return -1;
    *out = (int64_t)v * mul;
    return 0;
}

/* Index of `text` among the '|'-separated choices, or -1. */
static int enum_index(const char *choices, const char *text, const char **start, size_t *len)
{
    size_t tlen = strlen(text);
    int idx = 0;
    const char *p = choices;
    if (!choices)
        return -1;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == tlen && strncmp(p, text, n) == 0) {
            *start = p;
            *len = n;
            return idx;
        }
        if (!bar)
            return -1;
        p = bar + 1;
        idx++;
    }
}

static char *dup_n(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

int clapp_param_parse(const clapp_param_desc *d, const char *text, clapp_param_value *out,
                      char **owned, char *err, size_t errlen)
{
    char range[128];
    memset(out, 0, sizeof *out);
    out->name = d->name;
    *owned = NULL;
    if (!text)
        text = "";

    switch (d->type) {
    case CLAPP_PARAM_INT: {
        int64_t v;
        if (parse_int(text, &v) < 0 ||
            (has_range(d) && ((double)v < d->min || (double)v > d->max))) {
            format_range(d, range, sizeof range);
            clapp_set_err(err, errlen, "%s=%s: expected %s", d->name, text, range);
            return CLAPP_E_INVAL;
        }
        out->i = v;
        out->f = (double)v;
        return CLAPP_OK;
    }
    case CLAPP_PARAM_FLOAT: {
        char *end = NULL;
        double v;
        errno = 0;
        v = *text && !isspace((unsigned char)*text) ? strtod(text, &end) : 0.0;
        if (!end || end == text || *end != '\0' || !isfinite(v) ||
            (has_range(d) && (v < d->min || v > d->max))) {
            format_range(d, range, sizeof range);
            clapp_set_err(err, errlen, "%s=%s: expected %s", d->name, text, range);
            return CLAPP_E_INVAL;
        }
        out->f = v;
        return CLAPP_OK;
    }
    case CLAPP_PARAM_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "on"};
        static const char *const no[] = {"false", "0", "no", "off"};
        for (int k = 0; k < 4; k++) {
            if (strcasecmp(text, yes[k]) == 0) {
                out->i = 1;
                out->f = 1.0;
                return CLAPP_OK;
            }
            if (strcasecmp(text, no[k]) == 0)
                return CLAPP_OK;
        }
        clapp_set_err(err, errlen, "%s=%s: expected a boolean (true|false|1|0|yes|no|on|off)", d->name,
                text);
        return CLAPP_E_INVAL;
    }
    case CLAPP_PARAM_STRING:
        *owned = strdup(text);
        if (!*owned) {
            clapp_set_err(err, errlen, "%s: out of memory", d->name);
            return CLAPP_E_NOMEM;
        }
        out->s = *owned;
        return CLAPP_OK;
    case CLAPP_PARAM_ENUM: {
        const char *start = NULL;
        size_t len = 0;
        int idx = enum_index(d->choices, text, &start, &len);
        if (idx < 0) {
            clapp_set_err(err, errlen, "%s=%s: valid choices are %s", d->name, text,
                    d->choices ? d->choices : "(none)");
            return CLAPP_E_INVAL;
        }
        *owned = dup_n(start, len);
        if (!*owned) {
            clapp_set_err(err, errlen, "%s: out of memory", d->name);
            return CLAPP_E_NOMEM;
        }
        out->i = idx;
        out->f = (double)idx;
        out->s = *owned;
        return CLAPP_OK;
    }
    }
    clapp_set_err(err, errlen, "%s: parameter type %d is not known", d->name, (int)d->type);
    return CLAPP_E_INVAL;
}

char *clapp_param_to_text(const clapp_param_desc *d, const clapp_param_value *v)
{
    char buf[64];
    switch (d->type) {
    case CLAPP_PARAM_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v->i);
        return strdup(buf);
    case CLAPP_PARAM_FLOAT:
        format_double(v->f, buf, sizeof buf);
        return strdup(buf);
    case CLAPP_PARAM_BOOL:
        return strdup(v->i ? "true" : "false");
    case CLAPP_PARAM_STRING:
    case CLAPP_PARAM_ENUM:
        return strdup(v->s ? v->s : "");
    }
    return NULL;
}
