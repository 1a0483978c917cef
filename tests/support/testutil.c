#define _GNU_SOURCE
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (!base || !*base)
        base = "/tmp";
    if (asprintf(&path, "%s/clapp-test-%s-XXXXXX", base, tag) < 0)
        return NULL;
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

void tu_rmtree(const char *dir)
{
    if (dir && strstr(dir, "clapp-test-"))
        tu_run("rm -rf '%s'", dir);
}

int tu_run(const char *fmt, ...)
{
    char *cmd = NULL, *full = NULL;
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return -1;
    /* The command's own redirections stay inside the parentheses. */
    if (asprintf(&full, "(%s) > /tmp/clapp-tu-%d.log 2>&1", cmd, (int)getpid()) < 0) {
        free(cmd);
        return -1;
    }
    rc = system(full);
    if (rc != 0) {
        char tail[128];
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
        snprintf(tail, sizeof tail, "tail -5 /tmp/clapp-tu-%d.log >&2", (int)getpid());
        if (system(tail) != 0)
            fprintf(stderr, "(no output)\n");
    }
    free(cmd);
    free(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

float *tu_read_f32(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    float *buf = NULL;
    long bytes;
    *n = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (buf && fread(buf, 1, (size_t)bytes, f) == (size_t)bytes)
        *n = (size_t)bytes / sizeof(float);
    fclose(f);
    return buf;
}

char *tu_read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n)
        buf[0] = 0;
    fclose(f);
    return buf;
}

int tu_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

char *tu_path(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

static void tu_log_cb(void *user, int level, const char *who, const char *fmt, va_list ap)
{
    tu_log *log = user;
    char line[2048];
    int n = snprintf(line, sizeof line, "[%s] %s: ", level == CLAPP_LOG_ERROR ? "error" :
                     level == CLAPP_LOG_WARNING ? "warning" : "info", who ? who : "-");
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    if (getenv("CLAPP_TEST_VERBOSE"))
        fprintf(stderr, "%s\n", line);
    if (level == CLAPP_LOG_ERROR)
        log->n_errors++;
    if (level == CLAPP_LOG_WARNING)
        log->n_warnings++;
    if (log->len + len + 2 > log->cap) {
        size_t cap = (log->cap + len + 2) * 2;
        char *t = realloc(log->text, cap);
        if (!t)
            return;
        log->text = t;
        log->cap = cap;
    }
    memcpy(log->text + log->len, line, len);
    log->len += len;
    log->text[log->len++] = '\n';
    log->text[log->len] = 0;
}

void tu_host_init(clapp_host *host, tu_log *log)
{
    memset(host, 0, sizeof *host);
    memset(log, 0, sizeof *log);
    host->struct_size = sizeof *host;
    host->user = log;
    host->log = tu_log_cb;
}

void tu_log_clear(tu_log *log)
{
    log->len = 0;
    if (log->text)
        log->text[0] = 0;
    log->n_errors = log->n_warnings = 0;
}

void tu_log_free(tu_log *log)
{
    free(log->text);
    memset(log, 0, sizeof *log);
}

int tu_log_count(const tu_log *log, const char *needle)
{
    int count = 0;
    const char *p = log->text;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        char *line = strndup(p, l);
        if (line && strstr(line, needle))
            count++;
        free(line);
        p = e ? e + 1 : p + l;
    }
    return count;
}

double tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

int tu_count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

long tu_npy_rows_consistent(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char pre[10];
    char hdr[4096];
    long rows = -1, cols = -1, size;
    size_t hlen;
    const char *shape;
    if (!f)
        return -1;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY\x01\x00", 8) != 0)
        goto bad;
    hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    if (hlen >= sizeof hdr || fread(hdr, 1, hlen, f) != hlen)
        goto bad;
    hdr[hlen] = 0;
    if (!(shape = strstr(hdr, "'shape': (")) || sscanf(shape + 10, "%ld, %ld)", &rows, &cols) != 2)
        goto bad;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    if (getenv("CLAPP_TEST_VERBOSE"))
        fprintf(stderr, "%s: %ld x %ld, %ld bytes\n", path, rows, cols, size);
    return size == 10 + (long)hlen + rows * cols * 4 ? rows : -1;
bad:
    fclose(f);
    return -1;
}
