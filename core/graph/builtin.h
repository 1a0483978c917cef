/* clapp core — descriptors of the elements the core implements itself:
 * `source` (media decoding) and `clapp` (the contrastive loss element).
 * They share the plugin descriptor type so that inspect, the pipeline
 * resolver and error messages treat every element alike; only their
 * parameter tables are used (the function pointers are NULL). */
#ifndef CLAPP_CORE_BUILTIN_H
#define CLAPP_CORE_BUILTIN_H

#include "clapp/plugin.h"

/* NULL-terminated. */
extern const clapp_plugin_desc *const clapp_builtin_descs[];
extern const clapp_plugin_desc clapp_builtin_source_desc;
extern const clapp_plugin_desc clapp_builtin_loss_desc;

#endif
