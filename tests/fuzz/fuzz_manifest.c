/* Fuzz target: manifests. Every input is a manifest file; a load that
 * fails must say why, and one that succeeds gives entries whose keys are
 * safe relative output names (manifest.h): not empty, not absolute, no
 * empty, "." or ".." part, only [A-Za-z0-9._-] and '/'. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "media/manifest.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int safe_key(const char *k)
{
    const char *p = k;
    if (!*k || *k == '/')
        return 0;
    for (const char *c = k; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._-/", *c))
            return 0;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += n;
        p += *p == '/';
        if (!*p && p[-1] == '/')
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clapp_manifest m;
    char path[64], err[1024] = "";
    int rc;
    fuzz_memfile(data, size, path);
    rc = clapp_manifest_load(&m, path, err, sizeof err);
    if (rc < 0 && !err[0]) {
        fprintf(stderr, "manifest load failed (status %d) without a message\n", rc);
        abort();
    }
    if (rc == 0) {
        if (m.n < 1)
            abort();
        for (int32_t i = 0; i < m.n; i++) {
            const clapp_manifest_entry *e = &m.entries[i];
            if (!e->path || !*e->path || !e->key || !safe_key(e->key)) {
                fprintf(stderr, "line %d: path '%s', unsafe key '%s'\n", e->line, e->path ? e->path : "(null)",
                        e->key ? e->key : "(null)");
                abort();
            }
        }
        clapp_manifest_free(&m);
    }
    return 0;
}
