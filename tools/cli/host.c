/* The CLI's host: log lines on standard error, and pipeline loading. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cli_core.h"

static void cli_log(void *user, int level, const char *who, const char *fmt, va_list ap)
{
    int verbosity = *(const int *)user;
    char line[4096];
    int n;
    if (level > verbosity)
        return;
    n = snprintf(line, sizeof line, "clapp: %s%s%s", level == CLAPP_LOG_ERROR ? "error: " :
                 level == CLAPP_LOG_WARNING ? "warning: " : "", who ? who : "", who ? ": " : "");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    /* One fputs per line, so lines from the decode thread do not interleave. */
    strncat(line, "\n", sizeof line - strlen(line) - 1);
    fputs(line, stderr);
}

void cli_host_init(clapp_host *host, int verbosity)
{
    static const int levels[4] = {CLAPP_LOG_ERROR, CLAPP_LOG_WARNING, CLAPP_LOG_INFO, CLAPP_LOG_DEBUG};
    memset(host, 0, sizeof *host);
    host->struct_size = sizeof *host;
    host->user = (void *)&levels[verbosity < 0 ? 0 : verbosity > 3 ? 3 : verbosity];
    host->log = cli_log;
}

/* --probe NAME[:TYPE]: a probe (default probe_phoneme) named probe_NAME right after element NAME. */
static int attach_probes(clapp_pipeline_desc *pd, char **probes, int n_probes, char *err,
                         size_t errlen)
{
    for (int i = 0; i < n_probes; i++) {
        char *spec = strdup(probes[i]), *colon, name[256];
        const char *type = "probe_phoneme";
        int at, rc;
        if (!spec)
            return CLAPP_E_NOMEM;
        if ((colon = strchr(spec, ':'))) {
            *colon = 0;
            type = colon + 1;
        }
        at = clapp_pipeline_find(pd, spec);
        snprintf(name, sizeof name, "probe_%s", spec);
        if (at < 0) {
            snprintf(err, errlen, "--probe %s: no element named '%s' in %s", probes[i], spec, pd->file);
            rc = CLAPP_E_NOTFOUND;
        } else {
            rc = clapp_pipeline_insert(pd, at, type, name, NULL, 0, err, errlen);
        }
        free(spec);
        if (rc < 0)
            return rc;
    }
    return CLAPP_OK;
}

int cli_pipeline_load(clapp_pipeline_desc *pd, const char *path, char **sets, int n_sets,
                      char **probes, int n_probes, const clapp_registry *reg)
{
    char err[2048] = "";
    if (clapp_pipeline_parse_file(pd, path, err, sizeof err) < 0)
        goto fail;
    if (attach_probes(pd, probes, n_probes, err, sizeof err) < 0)
        goto fail;
    for (int i = 0; i < n_sets; i++)
        if (clapp_pipeline_set(pd, sets[i], err, sizeof err) < 0)
            goto fail;
    if (clapp_pipeline_resolve(pd, reg, err, sizeof err) < 0)
        goto fail;
    return CLI_OK;
fail:
    fprintf(stderr, "clapp: error: %s\n", err);
    return CLI_USAGE;
}
