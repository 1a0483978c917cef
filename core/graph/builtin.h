/* clapp core — the descriptor of the `source` element (media decoding), which
 * the core implements itself; the loss elements' descriptors are their forms'
 * (learning/loss_form.h), and the registry lists both.
 * They share the plugin descriptor type so that inspect, the pipeline
 * resolver and error messages treat every element alike; only their
 * parameter tables are used (the function pointers are NULL). */
#ifndef CLAPP_CORE_BUILTIN_H
#define CLAPP_CORE_BUILTIN_H

#include "clapp/plugin.h"

/* NULL-terminated. */
extern const clapp_plugin_desc *const clapp_builtin_descs[];
extern const clapp_plugin_desc clapp_builtin_source_desc;

#endif
