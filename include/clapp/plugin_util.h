/* clapp/plugin_util.h — header-only helpers for plugin authors (and the core):
 *
 *   random numbers   clapp_mix64, clapp_splitmix64, clapp_uniform53,
 *                    clapp_uniform24, clapp_normal01 (one splitmix64 stream,
 *                    deterministic from the create() seed);
 *   memory           clapp_aligned_calloc (CLAPP_ALIGN-aligned, zeroed);
 *   parameters       clapp_params_bind: copies the resolved values into struct
 *                    fields named by offset, so a default lives only in the
 *                    element's parameter table;
 *   errors           clapp_set_err: printf into a caller's message buffer.
 *
 * Everything is static inline: a plugin that includes this header links
 * nothing more, and nothing here is part of libclapp's exported ABI.
 * Thread contract: every function is reentrant (state is the caller's).
 */
#ifndef CLAPP_PLUGIN_UTIL_H
#define CLAPP_PLUGIN_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clapp/plugin.h"

/* ------------------------------------------------------------------------ */
/* Random numbers: splitmix64                                                */

/* splitmix64's output function (a 64-bit mixer): also a hash of z. */
static inline uint64_t clapp_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The next value of the splitmix64 stream whose state is *state. */
static inline uint64_t clapp_splitmix64(uint64_t *state)
{
    return clapp_mix64(*state += 0x9e3779b97f4a7c15ull);
}

/* Uniform in [0, 1) with 53 random bits (every double k * 2^-53). */
static inline double clapp_uniform53(uint64_t *state)
{
    return (double)(clapp_splitmix64(state) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, 1) with 24 random bits (k * 2^-24: exact in a float). */
static inline double clapp_uniform24(uint64_t *state)
{
    return (double)(clapp_splitmix64(state) >> 40) * 0x1.0p-24;
}

/* Standard normal by Box-Muller, one value per call (two draws). u1 is in
 * (0, 1] ((k + 1) * 2^-53), so the log is finite; u2 in [0, 1). */
static inline double clapp_normal01(uint64_t *state)
{
    double u1 = ((double)(clapp_splitmix64(state) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(clapp_splitmix64(state) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */

/* n * size bytes (at least one byte), rounded up to CLAPP_ALIGN, aligned to
 * CLAPP_ALIGN and zeroed; free() it. NULL when out of memory or n * size
 * overflows. */
static inline void *clapp_aligned_calloc(int64_t n, size_t size)
{
    size_t count = (size_t)(n > 0 ? n : 0), bytes, rounded;
    void *p;
    if (size && count > (SIZE_MAX - CLAPP_ALIGN) / size)
        return NULL;
    bytes = count * size;
    if (bytes == 0)
        bytes = 1;
    rounded = (bytes + CLAPP_ALIGN - 1) / CLAPP_ALIGN * CLAPP_ALIGN;
    p = aligned_alloc(CLAPP_ALIGN, rounded);
    if (p)
        memset(p, 0, rounded);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

static inline void clapp_set_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* printf into err[errlen] (truncated, always terminated); nothing if err is
 * NULL or errlen 0. */
static inline void clapp_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Parameters bound to struct fields                                          */

typedef enum clapp_field_kind {
    CLAPP_FIELD_INT = 0,      /* int: INT, BOOL (0/1), ENUM (choice index) */
    CLAPP_FIELD_LONG = 1,     /* long (int64_t on LP64) */
    CLAPP_FIELD_LLONG = 2,    /* long long */
    CLAPP_FIELD_DOUBLE = 3,   /* double: FLOAT (or INT) */
    CLAPP_FIELD_FLOAT = 4,    /* float */
    CLAPP_FIELD_STRING = 5,   /* const char *: STRING, ENUM text; valid until destroy */
} clapp_field_kind;

/* One field a parameter is copied into: the parameter's name (as in the
 * table), what the field is, and where it is in the struct. */
typedef struct clapp_param_field {
    const char      *name;
    clapp_field_kind kind;
    size_t           offset;
} clapp_param_field;

#define CLAPP_FIELD_KIND_OF(expr)                                                       \
    _Generic((expr), int: CLAPP_FIELD_INT, long: CLAPP_FIELD_LONG,                      \
             long long: CLAPP_FIELD_LLONG, double: CLAPP_FIELD_DOUBLE,                  \
             float: CLAPP_FIELD_FLOAT, const char *: CLAPP_FIELD_STRING)

/* The parameter `pname` into the member `member` of struct type `type`; the
 * field's kind follows the member's C type (int, long, long long, double,
 * float, const char *; any other is a compile error). */
#define CLAPP_FIELD_AS(type, member, pname) \
    {(pname), CLAPP_FIELD_KIND_OF(((type *)0)->member), offsetof(type, member)}
/* The parameter named as the member. */
#define CLAPP_FIELD(type, member) CLAPP_FIELD_AS(type, member, #member)

/* The numeric value of the table's default text (ENUM: the choice index,
 * BOOL: 0/1); 0 if none. */
static inline void clapp_param_default_(const clapp_param_desc *d, int64_t *i, double *f)
{
    const char *t = d->def ? d->def : "";
    *i = 0;
    *f = 0.0;
    if (d->type == CLAPP_PARAM_ENUM) {
        const char *c = d->choices ? d->choices : "";
        size_t n = strlen(t);
        for (int64_t k = 0; *c; k++) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && strncmp(c, t, n) == 0) {
                *i = k;
                break;
            }
            if (!bar)
                break;
            c = bar + 1;
        }
        *f = (double)*i;
    } else if (d->type == CLAPP_PARAM_BOOL) {
        /* true, 1, yes, on (the table's own text, so the first letters decide) */
        *i = t[0] == 't' || t[0] == '1' || t[0] == 'y' || (t[0] == 'o' && t[1] == 'n');
        *f = (double)*i;
    } else if (d->type == CLAPP_PARAM_INT || d->type == CLAPP_PARAM_FLOAT) {
        *f = strtod(t, NULL);
        *i = (int64_t)*f;
    }
}

/* Copy every bound parameter of `info` into `obj`. A value the host did not
 * pass (a host older than the table) takes the table's default text, so the
 * default is written once, in `table`. Returns CLAPP_OK, or CLAPP_E_INVAL for
 * a field whose name is neither passed nor in the table. */
static inline int clapp_params_bind(const clapp_create_info *info, const clapp_param_desc *table,
                                    int32_t n_table, const clapp_param_field *fields,
                                    int32_t n_fields, void *obj)
{
    for (int32_t k = 0; k < n_fields; k++) {
        const clapp_param_value *v = clapp_param_find(info->values, info->n_values, fields[k].name);
        char *at = (char *)obj + fields[k].offset;
        int64_t i;
        double f;
        const char *s;
        if (v) {
            i = v->i;
            f = v->f;
            s = v->s;
        } else {
            const clapp_param_desc *d = NULL;
            for (int32_t j = 0; j < n_table && !d; j++)
                if (strcmp(table[j].name, fields[k].name) == 0)
                    d = &table[j];
            if (!d)
                return CLAPP_E_INVAL;
            clapp_param_default_(d, &i, &f);
            s = d->def;
        }
        switch (fields[k].kind) {
        case CLAPP_FIELD_INT: *(int *)(void *)at = (int)i; break;
        case CLAPP_FIELD_LONG: *(long *)(void *)at = (long)i; break;
        case CLAPP_FIELD_LLONG: *(long long *)(void *)at = (long long)i; break;
        case CLAPP_FIELD_DOUBLE: *(double *)(void *)at = f; break;
        case CLAPP_FIELD_FLOAT: *(float *)(void *)at = (float)f; break;
        case CLAPP_FIELD_STRING: *(const char **)(void *)at = s; break;
        default: return CLAPP_E_INVAL;
        }
    }
    return CLAPP_OK;
}

#endif /* CLAPP_PLUGIN_UTIL_H */
