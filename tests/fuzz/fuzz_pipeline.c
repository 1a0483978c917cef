/* Fuzz target: the pipeline parser. Every input is pipeline text; a parse
 * or resolve (against the built-ins and the plugins on $CLAPP_PLUGIN_PATH)
 * that fails must say why, and a pipeline that resolves must survive its
 * own canonical text: printed, parsed and resolved again, it prints the
 * same. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "graph/pipeline.h"
#include "graph/registry.h"

static clapp_registry reg;
static clapp_host host;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_host_init(&host);
    if (clapp_registry_init_default(&reg, &host) < 0)
        abort();
    return 0;
}

static void check(int rc, const char *err, const char *what)
{
    if (rc < 0 && !*err) {
        fprintf(stderr, "%s failed (status %d) without a message\n", what, rc);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clapp_pipeline_desc pd, again;
    char err[1024] = "", *text = malloc(size + 1), *canon = NULL, *canon2 = NULL;
    int rc;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    rc = clapp_pipedesc_parse(&pd, text, "<fuzz>", err, sizeof err);
    check(rc, err, "parse");
    if (rc == 0) {
        rc = clapp_pipedesc_resolve(&pd, &reg, err, sizeof err);
        check(rc, err, "resolve");
        if (rc == 0 && (canon = clapp_pipedesc_to_text(&pd))) {
            err[0] = 0;
            rc = clapp_pipedesc_parse(&again, canon, "<canonical>", err, sizeof err);
            if (rc == 0 && (rc = clapp_pipedesc_resolve(&again, &reg, err, sizeof err)) == 0)
                canon2 = clapp_pipedesc_to_text(&again);
            if (rc < 0 || !canon2 || strcmp(canon, canon2) != 0) {
                fprintf(stderr, "the canonical text does not come back (%s):\n%s\n---\n%s\n", err, canon,
                        canon2 ? canon2 : "(none)");
                abort();
            }
            if (rc == 0)
                clapp_pipedesc_free(&again);
        }
        clapp_pipedesc_free(&pd);
    }
    free(canon);
    free(canon2);
    free(text);
    return 0;
}
