/* Helpers shared by the tests: temp folders, shell commands (ffmpeg to
 * generate media), raw float files, and a host whose log is captured. */
#ifndef CLAPP_TESTUTIL_H
#define CLAPP_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "clapp/plugin.h"

/* A fresh temp folder (under $TMPDIR or /tmp); removed by tu_rmtree. */
char *tu_tmpdir(const char *tag);
void  tu_rmtree(const char *dir);
/* Run a shell command built printf-style; returns its exit status. Output
 * goes to the test log only on failure. */
int   tu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Read a whole file of float32 values. Caller frees. NULL on error. */
float *tu_read_f32(const char *path, size_t *n);
/* A whole file as a NUL-terminated string ("" when it cannot be read).
 * Caller frees. */
char *tu_read_text(const char *path);
/* Write text to a file; returns 0 on success. */
int   tu_write_text(const char *path, const char *text);
/* How often needle occurs in hay (non-overlapping). */
int   tu_count_substr(const char *hay, const char *needle);
/* Rows of a 2-D float32 .npy whose header's shape accounts for every data
 * byte; -1 if it does not (or the file cannot be read). */
long  tu_npy_rows_consistent(const char *path);
/* Path join into a malloc'd string. */
char *tu_path(const char *dir, const char *name);

/* A host that records every log line in a buffer. */
typedef struct tu_log {
    char  *text;   /* all lines, '\n'-separated */
    size_t len, cap;
    int    n_errors, n_warnings;
} tu_log;
void tu_host_init(clapp_host *host, tu_log *log);
void tu_log_clear(tu_log *log);
void tu_log_free(tu_log *log);
/* Number of lines of the log that contain `needle`. */
int  tu_log_count(const tu_log *log, const char *needle);

/* Max |a - b| over n floats. */
double tu_max_abs_diff(const float *a, const float *b, size_t n);

#endif
