/* clapp — the plugin ABI.
 *
 * A plugin is a shared object that exports exactly one symbol,
 *
 *     const clapp_plugin_entry clapp_plugin_entry_v = { ... };   (see CLAPP_PLUGIN_ENTRY)
 *
 * naming its ABI version and the element descriptors it provides. The host
 * accepts it only if abi_major equals the host's and abi_minor is not newer
 * (GStreamer's rule), and reads only the fields that struct_size covers.
 * Nothing runs at load time: no constructors, no registration.
 *
 * Descriptors are static: `clapp inspect` lists them, and the host validates
 * pipeline text against their parameter tables, without creating anything.
 *
 * Thread contract (holds for every call below unless it says otherwise):
 *   - All calls on one instance come from one host thread at a time (the
 *     "compute thread"); the host never calls one instance concurrently.
 *   - Different instances may be called concurrently from different threads,
 *     so a plugin keeps no global mutable state.
 *   - A plugin may use threads inside a call (OpenBLAS does) but none outlive it.
 *
 * Ownership: the host owns blocks (inputs and outputs) and the parameter
 * values array; the plugin owns its weights, gradients, streaming state and
 * scratch, which it sizes in configure so that forward/backward allocate
 * nothing in the steady state.
 *
 * Errors: every call returns 0 or a negative CLAPP_E_*; the detail goes to
 * host->log. A plugin never calls exit() or abort().
 */
#ifndef CLAPP_PLUGIN_H
#define CLAPP_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "clapp/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLAPP_ABI_MAJOR 1
#define CLAPP_ABI_MINOR 0

/* Status codes. */
enum {
    CLAPP_OK            = 0,
    CLAPP_E_INVAL       = -1,  /* bad argument or parameter value */
    CLAPP_E_NOMEM       = -2,
    CLAPP_E_IO          = -3,  /* file or stream could not be read or written */
    CLAPP_E_FORMAT      = -4,  /* malformed data (media, manifest, checkpoint, text) */
    CLAPP_E_SHAPE       = -5,  /* input shape not accepted */
    CLAPP_E_UNSUPPORTED = -6,  /* the call or option is not implemented by this element */
    CLAPP_E_STATE       = -7,  /* call out of lifecycle order */
    CLAPP_E_ABI         = -8,  /* plugin ABI mismatch */
    CLAPP_E_NOTFOUND    = -9,  /* unknown element, plugin, key or file */
    CLAPP_E_INTERNAL    = -10,
};

/* Log levels for clapp_host.log. */
enum { CLAPP_LOG_ERROR = 0, CLAPP_LOG_WARNING = 1, CLAPP_LOG_INFO = 2, CLAPP_LOG_DEBUG = 3 };

/* ------------------------------------------------------------------------ */
/* Parameters                                                                */

typedef enum clapp_param_type {
    CLAPP_PARAM_INT = 0,     /* int64, checked against [min, max] */
    CLAPP_PARAM_FLOAT = 1,   /* double, checked against [min, max] */
    CLAPP_PARAM_BOOL = 2,    /* true/false/1/0/yes/no */
    CLAPP_PARAM_STRING = 3,  /* free text */
    CLAPP_PARAM_ENUM = 4,    /* one of the '|'-separated `choices`; value.i is its index */
} clapp_param_type;

typedef struct clapp_param_desc {
    const char      *name;
    clapp_param_type type;
    const char      *def;      /* default, as text in pipeline syntax ("512", "1e-4", "relu") */
    double           min, max; /* numeric range, inclusive (ignored for other types) */
    const char      *choices;  /* ENUM only: "relu|none" */
    const char      *help;     /* one line */
} clapp_param_desc;

/* A resolved parameter value. The host passes create() one per entry of the
 * descriptor's parameter table, in table order, defaults filled in. */
typedef struct clapp_param_value {
    const char *name;   /* same pointer as the table's name */
    int64_t     i;      /* INT, BOOL (0/1), ENUM (choice index) */
    double      f;      /* FLOAT (INT values are mirrored here too) */
    const char *s;      /* STRING and ENUM: the text; valid until destroy */
} clapp_param_value;

/* Look a value up by name; NULL if absent. */
static inline const clapp_param_value *clapp_param_find(const clapp_param_value *values,
                                                        int32_t n, const char *name)
{
    for (int32_t i = 0; i < n; i++)
        if (values[i].name && strcmp(values[i].name, name) == 0)
            return &values[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Host services                                                             */

typedef struct clapp_host {
    uint32_t struct_size;   /* sizeof(clapp_host) of the host that filled it */
    void    *user;
    /* Thread-safe. `who` is the element's instance name. */
    void (*log)(void *user, int level, const char *who, const char *fmt, va_list ap);
} clapp_host;

static inline void clapp_host_log(const clapp_host *host, int level, const char *who,
                                  const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static inline void clapp_host_log(const clapp_host *host, int level, const char *who,
                                  const char *fmt, ...)
{
    va_list ap;
    if (!host || !host->log)
        return;
    va_start(ap, fmt);
    host->log(host->user, level, who, fmt, ap);
    va_end(ap);
}

/* Everything create() gets. */
typedef struct clapp_create_info {
    uint32_t                 struct_size;
    const clapp_host        *host;
    const char              *instance_name;  /* the element's name= in the pipeline */
    const clapp_param_value *values;         /* [n_values], table order, defaults filled */
    int32_t                  n_values;
    uint64_t                 seed;           /* deterministic initialisation from this seed */
} clapp_create_info;

/* A parameter or state tensor the plugin exposes to the host. `grad` is NULL
 * for state that is saved but not trained (running statistics). The host's
 * optimizer steps `value` from `grad`; checkpoints save `value` under
 * "element.name". Pointers stay valid from configure until destroy. */
typedef struct clapp_named_tensor {
    const char   *name;
    clapp_tensor *value;
    clapp_tensor *grad;
} clapp_named_tensor;

typedef enum clapp_plugin_kind {
    CLAPP_KIND_LAYER = 0,  /* forward + local backward; output is a new stream */
    CLAPP_KIND_SINK = 1,   /* consumes blocks; the stream passes through unchanged */
    CLAPP_KIND_SOURCE = 2, /* host-internal only */
    CLAPP_KIND_LOSS = 3,   /* host-internal only */
} clapp_plugin_kind;

typedef enum clapp_mode {
    CLAPP_MODE_LEARN = 0,   /* training: keep what backward needs, batch statistics */
    CLAPP_MODE_FROZEN = 1,  /* inference: no backward will follow */
} clapp_mode;

/* An element descriptor. Function pointers may be NULL where noted. */
typedef struct clapp_plugin_desc {
    uint32_t                struct_size;  /* sizeof(clapp_plugin_desc) the plugin was built with */
    const char             *id;           /* element name in pipelines: "conv1d" */
    const char             *version;      /* semver of the plugin: "1.0.0" */
    clapp_plugin_kind       kind;
    const char             *help;         /* one line */
    const clapp_param_desc *params;
    int32_t                 n_params;

    /* [main thread] Create an instance. On failure *self may be set and
     * destroy(*self) must still be safe (cleanup after a partial init). */
    int (*create)(const clapp_create_info *info, void **self);

    /* [main thread] Free everything; safe on a partially created instance and on NULL. */
    void (*destroy)(void *self);

    /* [main thread, before streaming, may be called again to re-negotiate]
     * Accept the input stream (shape capacity and rate) and, for layers, give
     * the output stream. Allocates weights, gradients and scratch.
     * Sinks get out == NULL. Returns CLAPP_E_SHAPE with a log message when
     * the input cannot be taken. */
    int (*configure)(void *self, const clapp_stream_info *in, clapp_stream_info *out);

    /* [compute thread] Process one block. Layers write out->x (host-allocated
     * to the configured shape) and set out->lane[b].len and .pts; the host has
     * copied the other lane fields from `in`. A lane with SEQ_START resets its
     * streaming state first. Sinks get out == NULL. */
    int (*forward)(void *self, const clapp_block *in, clapp_block *out);

    /* [compute thread, LEARN mode, after forward of the same block; NULL for sinks]
     * Given dLoss/dout (shape of the last output; steps past each lane's len
     * are zero), ACCUMULATE into the parameter gradients, and, if grad_in is
     * not NULL, ADD dLoss/din into it (shape of the last input; the host
     * zeroes it first, so an input that feeds two paths sums both). Gradients do not
     * cross block boundaries. May be called more than once per forward (a
     * layer serving two loss elements); each call adds. */
    int (*backward)(void *self, const clapp_tensor *grad_out, clapp_tensor *grad_in);

    /* [compute thread] Clear the streaming state of one lane, or all lanes if lane < 0. */
    int (*reset)(void *self, int32_t lane);

    /* [main thread, after configure] List parameters and state tensors. NULL: none. */
    int (*tensors)(void *self, const clapp_named_tensor **list, int32_t *count);

    /* [main thread, between blocks] Switch learning/frozen. NULL: always the same. */
    int (*set_mode)(void *self, clapp_mode mode);

    /* [main thread, after the last block] Flush outputs (sinks). NULL: nothing to do. */
    int (*finish)(void *self);

    /* [main thread, between blocks] Write what the element measured as one
     * JSON object (e.g. a probe's {"accuracy":0.61,"frames":12345}) into
     * buf, NUL-terminated; CLAPP_E_NOMEM if cap is too small. NULL: nothing. */
    int (*report)(void *self, char *buf, size_t cap);
} clapp_plugin_desc;

/* The one exported symbol of a plugin .so. */
typedef struct clapp_plugin_entry {
    uint32_t                        abi_major;
    uint32_t                        abi_minor;
    uint32_t                        struct_size;  /* sizeof(clapp_plugin_entry) */
    int32_t                         n_plugins;
    const clapp_plugin_desc *const *plugins;
} clapp_plugin_entry;

#define CLAPP_PLUGIN_ENTRY_SYMBOL "clapp_plugin_entry_v"

#if defined(__GNUC__)
#define CLAPP_EXPORT __attribute__((visibility("default")))
#else
#define CLAPP_EXPORT
#endif

/* Use once per plugin .so:  CLAPP_PLUGIN_ENTRY(&my_desc_a, &my_desc_b); */
#define CLAPP_PLUGIN_ENTRY(...)                                                        \
    static const clapp_plugin_desc *const clapp_plugin_list_[] = {__VA_ARGS__};       \
    CLAPP_EXPORT const clapp_plugin_entry clapp_plugin_entry_v = {                     \
        CLAPP_ABI_MAJOR, CLAPP_ABI_MINOR, (uint32_t)sizeof(clapp_plugin_entry),        \
        (int32_t)(sizeof(clapp_plugin_list_) / sizeof(clapp_plugin_list_[0])),         \
        clapp_plugin_list_}

#ifdef __cplusplus
}
#endif
#endif /* CLAPP_PLUGIN_H */
