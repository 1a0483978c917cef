/* The CLI's host for plugin instances it makes itself (validate, eval):
 * log lines on standard error. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

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
