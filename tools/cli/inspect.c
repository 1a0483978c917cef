/* clapp inspect [ELEMENT]: list the elements, or describe one. */
#include <stdio.h>
#include <string.h>

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

static void print_element(const clapp_registry_item *it)
{
    const clapp_plugin_desc *d = it->desc;
    printf("%s %s (%s)\n  %s\n  from: %s\n\nparameters:\n", d->id, d->version, kind_name(d->kind),
           d->help ? d->help : "", it->file ? it->file : "built in");
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
    clapp_host host;
    clapp_registry reg;
    int status = CLI_OK;

    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: clapp inspect [ELEMENT]\n"
               "Lists the built-in elements and the plugins found on CLAPP_PLUGIN_PATH and in the\n"
               "plugin folders; with ELEMENT, prints its parameters with types, defaults, ranges and help.\n");
        return CLI_OK;
    }
    cli_host_init(&host, 1);
    if (clapp_registry_init_default(&reg, &host) < 0) {
        fprintf(stderr, "clapp: error: cannot set up the element registry\n");
        return CLI_FAILED;
    }
    if (argc > 1) {
        const clapp_registry_item *it = clapp_registry_find_item(&reg, argv[1]);
        if (!it) {
            fprintf(stderr, "clapp: error: unknown element '%s'; valid elements:", argv[1]);
            for (int32_t i = 0; i < reg.n; i++)
                fprintf(stderr, " %s", reg.items[i].desc->id);
            fprintf(stderr, "\n");
            status = CLI_USAGE;
        } else {
            print_element(it);
        }
    } else {
        for (int32_t i = 0; i < reg.n; i++) {
            const clapp_plugin_desc *d = reg.items[i].desc;
            printf("%-16s %-7s %-8s %s\n", d->id, kind_name(d->kind), d->version,
                   d->help ? d->help : "");
        }
    }
    clapp_registry_free(&reg);
    return status;
}
