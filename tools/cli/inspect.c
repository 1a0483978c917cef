/* clapp inspect [ELEMENT]: list the elements, or describe one. On the host
 * API alone (clapp_catalog). */
#include <stdio.h>
#include <string.h>

#include "clapp/clapp.h"
#include "cli.h"

static const char *kind_name(clapp_plugin_kind k)
{
    switch (k) {
    case CLAPP_KIND_LAYER: return "layer";
    case CLAPP_KIND_SINK: return "sink";
    case CLAPP_KIND_SOURCE: return "source";
    case CLAPP_KIND_LOSS: return "loss";
    }
    return "?";
}

static const char *type_name(clapp_param_type t)
{
    switch (t) {
    case CLAPP_PARAM_INT: return "int";
    case CLAPP_PARAM_FLOAT: return "float";
    case CLAPP_PARAM_BOOL: return "bool";
    case CLAPP_PARAM_STRING: return "string";
    case CLAPP_PARAM_ENUM: return "enum";
    }
    return "?";
}

static void print_param(const clapp_param_desc *p)
{
    char range[128] = "";
    switch (p->type) {
    case CLAPP_PARAM_INT: snprintf(range, sizeof range, "[%.0f, %.0f]", p->min, p->max); break;
    case CLAPP_PARAM_FLOAT: snprintf(range, sizeof range, "[%g, %g]", p->min, p->max); break;
    case CLAPP_PARAM_ENUM: snprintf(range, sizeof range, "%s", p->choices ? p->choices : ""); break;
    case CLAPP_PARAM_BOOL: snprintf(range, sizeof range, "true|false"); break;
    case CLAPP_PARAM_STRING: break;
    }
    printf("  %-16s %-7s default %-10s %-24s %s\n", p->name, type_name(p->type),
           p->def && *p->def ? p->def : "\"\"", range, p->help ? p->help : "");
}

static void print_element(const clapp_plugin_desc *d, const char *file)
{
    printf("%s %s (%s)\n  %s\n  from: %s\n\nparameters:\n", d->id, d->version, kind_name(d->kind),
           d->help ? d->help : "", file ? file : "built in");
    for (int32_t i = 0; i < d->n_params; i++)
        print_param(&d->params[i]);
    if (d->kind == CLAPP_KIND_LAYER || d->kind == CLAPP_KIND_LOSS) {
        printf("\nhost keys:\n");
        printf("  %-16s %-7s default %-10s %-24s %s\n", "lr", "float", "run", "[0, inf)",
               "learning rate of this element (default: the run's --lr)");
        printf("  %-16s %-7s default %-10s %-24s %s\n", "learn", "bool", "true", "true|false",
               "false freezes the element (and stops the gradient below it in its module)");
    }
    printf("  %-16s %-7s default %-10s %-24s %s\n", "name", "string", "TYPEn", "",
           "instance name, for --set NAME.KEY=VALUE and target=");
}

int cli_inspect(int argc, char **argv)
{
    clapp_catalog *cat = NULL;
    const clapp_plugin_desc *d;
    const char *file;
    int status = CLI_OK, n = 0, at = -1;

    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: clapp inspect [ELEMENT]\n"
               "Lists the built-in elements and the plugins found on CLAPP_PLUGIN_PATH and in the\n"
               "plugin folders; with ELEMENT, prints its parameters with types, defaults, ranges and help.\n");
        return CLI_OK;
    }
    if (clapp_catalog_create(&cat, NULL) < 0 || clapp_catalog_count(cat, &n) < 0) {
        fprintf(stderr, "clapp: error: cannot set up the element registry: %s\n", clapp_catalog_error(cat));
        status = CLI_FAILED;
    } else if (argc > 1) {
        if (clapp_catalog_find(cat, argv[1], &at) < 0) {
            fprintf(stderr, "clapp: error: %s\n", clapp_catalog_error(cat));
            status = CLI_USAGE;
        } else if (clapp_catalog_element(cat, at, &d, &file) == CLAPP_OK) {
            print_element(d, file);
        }
    } else {
        for (int i = 0; i < n; i++)
            if (clapp_catalog_element(cat, i, &d, NULL) == CLAPP_OK)
                printf("%-16s %-7s %-8s %s\n", d->id, kind_name(d->kind), d->version,
                       d->help ? d->help : "");
    }
    clapp_catalog_destroy(cat);
    return status;
}
