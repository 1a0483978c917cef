/* clapp core — typed parameter values (params.c): pipeline text into
 * clapp_param_value, and values back into canonical text.
 */
#ifndef CLAPP_CORE_PARAMS_H
#define CLAPP_CORE_PARAMS_H

#include <stddef.h>

#include "clapp/plugin.h"

/* Parse one value for a parameter: 0, or CLAPP_E_INVAL with err naming the
 * key, the bad text, the expected type or range, or the valid choices
 * ("kernel=abc: expected an integer in [1, 4096]"). INT: decimal with an
 * optional k (x1000) or M (x1000000) suffix; FLOAT: strtod, finite; both are
 * range-checked unless the table gives min == max == 0. BOOL:
 * true/false/1/0/yes/no/on/off (any case). ENUM: exact choice. String results
 * point into a malloc'd copy stored in *owned (free it after use). */
int clapp_param_parse(const clapp_param_desc *d, const char *text, clapp_param_value *out,
                      char **owned, char *err, size_t errlen);
/* Canonical pipeline text of a value (malloc'd; NULL if out of memory):
 * integers in decimal, floats in the shortest form that reads back exactly,
 * booleans as true/false, strings and enums as their text (unquoted). */
char *clapp_param_to_text(const clapp_param_desc *d, const clapp_param_value *v);

#endif
