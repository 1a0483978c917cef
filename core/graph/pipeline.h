/* clapp core — pipeline descriptions (the .pipe files of pipelines/).
 *
 * Syntax (gst-launch style):
 *     element key=value key=value ! element key=value ...
 *   - '#' starts a comment to the end of the line (outside quotes);
 *   - newlines are plain whitespace; a '\' at the end of a line also continues it;
 *   - values may be quoted with '...' (literal) or "..." (backslash escapes:
 *     \n \t \r, and \X for any other X, e.g. \" and \\); an unquoted value is a
 *     run of characters up to whitespace, '!' or '#'; an empty value must be
 *     quoted (k="");
 *   - keys are [A-Za-z_][A-Za-z0-9_]*, element types and names
 *     [A-Za-z_][A-Za-z0-9_-]* (no '.', so --set NAME.KEY=VALUE is unambiguous);
 *   - host keys, valid on every element of its kind, not in the plugin's table:
 *     name= (all), lr= (float >= 0, LAYER and LOSS), learn= (bool, LAYER and LOSS);
 *   - name=NAME names an element (default: TYPE followed by its ordinal among
 *     elements of that type, from 0: conv1d0, conv1d1, clapp0 ...; every
 *     element of the type counts, named or not). If that default is already an
 *     explicit name, "_2", "_3", ... is appended until it is unique
 *     (conv1d2 -> conv1d2_2).
 *
 * Parsing gives a list of elements with raw key=value text and source
 * positions; resolving checks every element type and key against the
 * registry's descriptors and turns every value into a typed clapp_param_value
 * with defaults filled in. Every error names file:line:col, the element, the
 * key and, where there is a closed set, the valid choices.
 */
#ifndef CLAPP_CORE_PIPELINE_H
#define CLAPP_CORE_PIPELINE_H

#include <stdio.h>

#include "clapp/plugin.h"
#include "graph/registry.h"

typedef struct clapp_pipe_kv {
    char *key;
    char *value;
    int   line, col;       /* position of the key; line 0 for --set overrides */
} clapp_pipe_kv;

typedef struct clapp_pipe_elem {
    char          *type;
    char          *name;
    int            line, col;
    clapp_pipe_kv *kv;              /* raw pairs, in order, name= excluded */
    int            n_kv;
    /* filled by clapp_pipedesc_resolve: */
    double         lr;              /* host key lr= (LAYER and LOSS kinds): -1 = the run's default */
    int            learn;           /* host key learn= (LAYER and LOSS kinds): 0 freezes, default 1 */
    const clapp_plugin_desc *desc;
    clapp_param_value       *values;   /* [desc->n_params], table order */
    char                   **value_text; /* canonical text of each value (for dumps) */
} clapp_pipe_elem;

typedef struct clapp_pipeline_desc {
    char            *file;     /* for messages; "<string>" when parsed from text */
    char            *text;     /* the original text */
    clapp_pipe_elem *elems;
    int              n;
} clapp_pipeline_desc;

/* Parse text (file: the name for messages, NULL = "<string>"). Returns 0 or
 * CLAPP_E_FORMAT with err = "FILE:LINE:COL: message"; on failure *pd is left
 * zeroed (nothing to free). Default names are assigned here. */
int clapp_pipedesc_parse(clapp_pipeline_desc *pd, const char *text, const char *file,
                         char *err, size_t errlen);
/* Read and parse a file (CLAPP_E_IO if unreadable). */
int clapp_pipedesc_parse_file(clapp_pipeline_desc *pd, const char *path, char *err,
                              size_t errlen);
/* Apply an override "NAME.KEY=VALUE" (before resolve). Unknown NAME is an
 * error listing the element names; the key is checked at resolve time. */
int clapp_pipedesc_set(clapp_pipeline_desc *pd, const char *assignment, char *err,
                       size_t errlen);
/* Insert a new element TYPE named NAME right after element `after`, with
 * raw key/value pairs kv[0..2*n_kv) ("key", "value", ...); resolve again
 * afterwards. Used by the CLI to attach probes and feature writers to named
 * elements (eval --probe, extract --element). */
int clapp_pipedesc_insert(clapp_pipeline_desc *pd, int after, const char *type, const char *name,
                          const char *const *kv, int n_kv, char *err, size_t errlen);
/* Check and type everything against the registry: unknown elements and keys
 * (CLAPP_E_NOTFOUND, with a "did you mean" and the valid list), bad values
 * (CLAPP_E_INVAL). Fills desc, values, value_text, lr and learn. May be called
 * again after more --set; after a failure the description can still be freed. */
int clapp_pipedesc_resolve(clapp_pipeline_desc *pd, const clapp_registry *reg, char *err,
                           size_t errlen);
/* Index of the element named `name`, or -1. */
int clapp_pipedesc_find(const clapp_pipeline_desc *pd, const char *name);
/* Print the resolved graph, every parameter with its value (defaults
 * included), as pipeline text that parses back to the same graph. */
void clapp_pipedesc_dump(const clapp_pipeline_desc *pd, FILE *out);
/* The same as one canonical string (malloc'd), for checkpoint metadata. */
char *clapp_pipedesc_to_text(const clapp_pipeline_desc *pd);
void clapp_pipedesc_free(clapp_pipeline_desc *pd);

#endif
