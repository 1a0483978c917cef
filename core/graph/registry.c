/* The element registry and the plugin loader. */
#define _GNU_SOURCE
#include "graph/registry.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "graph/builtin.h"
#include "learning/loss_form.h"

#ifndef CLAPP_INSTALL_PLUGIN_DIR
#define CLAPP_INSTALL_PLUGIN_DIR ""
#endif

/* The oldest descriptor layout we can read: up to and including `finish`. */
#define CLAPP_DESC_MIN_SIZE (offsetof(clapp_plugin_desc, finish) + sizeof(void *))

int clapp_registry_add(clapp_registry *r, const clapp_plugin_desc *desc, const char *file)
{
    if (r->n == r->cap) {
        int32_t cap = r->cap ? r->cap * 2 : 16;
        clapp_registry_item *items = realloc(r->items, (size_t)cap * sizeof *items);
        if (!items)
            return CLAPP_E_NOMEM;
        r->items = items;
        r->cap = cap;
    }
    r->items[r->n].desc = desc;
    r->items[r->n].file = file ? strdup(file) : NULL;
    if (file && !r->items[r->n].file)
        return CLAPP_E_NOMEM;
    r->n++;
    return CLAPP_OK;
}

int clapp_registry_init(clapp_registry *r, const clapp_host *host)
{
    memset(r, 0, sizeof *r);
    r->host = host;
    for (int i = 0; clapp_builtin_descs[i]; i++) {
        int rc = clapp_registry_add(r, clapp_builtin_descs[i], NULL);
        if (rc < 0)
            return rc;
    }
    for (int i = 0; clapp_loss_forms[i]; i++) {
        int rc = clapp_registry_add(r, clapp_loss_forms[i]->desc, NULL);
        if (rc < 0)
            return rc;
    }
    return CLAPP_OK;
}

static int check_desc(const clapp_plugin_desc *d, const char *file, char *err, size_t errlen)
{
    if (!d) {
        snprintf(err, errlen, "%s: NULL descriptor in the plugin list", file);
        return CLAPP_E_ABI;
    }
    if (d->struct_size < CLAPP_DESC_MIN_SIZE) {
        snprintf(err, errlen, "%s: descriptor struct_size %u is smaller than ABI %d.%d needs (%zu)",
                 file, d->struct_size, CLAPP_ABI_MAJOR, CLAPP_ABI_MINOR, (size_t)CLAPP_DESC_MIN_SIZE);
        return CLAPP_E_ABI;
    }
    if (!d->id || !*d->id || !d->create || !d->destroy || !d->configure || !d->forward) {
        snprintf(err, errlen, "%s: descriptor '%s' lacks an id or a required call "
                 "(create, destroy, configure, forward)", file, d->id ? d->id : "?");
        return CLAPP_E_ABI;
    }
    if (d->kind != CLAPP_KIND_LAYER && d->kind != CLAPP_KIND_SINK) {
        snprintf(err, errlen, "%s: element '%s' has kind %d; plugins may only be layers or sinks",
                 file, d->id, (int)d->kind);
        return CLAPP_E_ABI;
    }
    if (d->kind == CLAPP_KIND_LAYER && !d->backward) {
        snprintf(err, errlen, "%s: layer '%s' has no backward", file, d->id);
        return CLAPP_E_ABI;
    }
    if (d->n_params < 0 || (d->n_params > 0 && !d->params)) {
        snprintf(err, errlen, "%s: element '%s' has a bad parameter table", file, d->id);
        return CLAPP_E_ABI;
    }
    return CLAPP_OK;
}

int clapp_plugin_entry_check(const clapp_plugin_entry *e, const char *file, char *err, size_t errlen)
{
    if (e->abi_major != CLAPP_ABI_MAJOR) {
        snprintf(err, errlen, "%s: plugin ABI %u.%u, host ABI %d.%d: the major versions differ; "
                 "rebuild the plugin against this clapp", file, e->abi_major, e->abi_minor,
                 CLAPP_ABI_MAJOR, CLAPP_ABI_MINOR);
        return CLAPP_E_ABI;
    }
    if (e->abi_minor > CLAPP_ABI_MINOR) {
        snprintf(err, errlen, "%s: plugin ABI %u.%u is newer than the host's %d.%d; "
                 "update clapp", file, e->abi_major, e->abi_minor, CLAPP_ABI_MAJOR, CLAPP_ABI_MINOR);
        return CLAPP_E_ABI;
    }
    if (e->struct_size < sizeof(clapp_plugin_entry)) {
        snprintf(err, errlen, "%s: entry struct_size %u is smaller than ABI %d.%d needs (%zu)",
                 file, e->struct_size, CLAPP_ABI_MAJOR, CLAPP_ABI_MINOR, sizeof(clapp_plugin_entry));
        return CLAPP_E_ABI;
    }
    if (e->n_plugins <= 0 || !e->plugins) {
        snprintf(err, errlen, "%s: the plugin lists no elements", file);
        return CLAPP_E_ABI;
    }
    for (int32_t i = 0; i < e->n_plugins; i++) {
        int rc = check_desc(e->plugins[i], file, err, errlen);
        if (rc < 0)
            return rc;
    }
    return CLAPP_OK;
}

static int keep_handle(clapp_registry *r, void *h)
{
    if (r->n_handles == r->cap_handles) {
        int32_t cap = r->cap_handles ? r->cap_handles * 2 : 8;
        void **hs = realloc(r->handles, (size_t)cap * sizeof *hs);
        if (!hs)
            return CLAPP_E_NOMEM;
        r->handles = hs;
        r->cap_handles = cap;
    }
    r->handles[r->n_handles++] = h;
    return CLAPP_OK;
}

int clapp_registry_load_file(clapp_registry *r, const char *path, char *err, size_t errlen)
{
    void *h = NULL;
    const clapp_plugin_entry *e;
    int rc = CLAPP_OK, added = 0;

    /* RTLD_LOCAL keeps plugins from seeing each other's symbols. */
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        struct stat st;
        if (stat(path, &st) != 0) {
            snprintf(err, errlen, "%s: cannot open (%s)", path, strerror(errno));
            return CLAPP_E_NOTFOUND;
        }
        snprintf(err, errlen, "%s: not a loadable plugin (%s)", path, why ? why : "unknown reason");
        return CLAPP_E_IO;
    }
    dlerror();
    e = (const clapp_plugin_entry *)dlsym(h, CLAPP_PLUGIN_ENTRY_SYMBOL);
    if (!e) {
        snprintf(err, errlen, "%s: no '%s' symbol: not a clapp plugin, or built without "
                 "CLAPP_PLUGIN_ENTRY", path, CLAPP_PLUGIN_ENTRY_SYMBOL);
        rc = CLAPP_E_ABI;
        goto fail;
    }
    rc = clapp_plugin_entry_check(e, path, err, errlen);
    if (rc < 0)
        goto fail;
    for (int32_t i = 0; i < e->n_plugins; i++) {
        const clapp_plugin_desc *d = e->plugins[i];
        const clapp_registry_item *prev = clapp_registry_find_item(r, d->id);
        if (prev) {
            clapp_host_log(r->host, CLAPP_LOG_DEBUG, "registry",
                           "%s: element '%s' already provided by %s; ignored", path, d->id,
                           prev->file ? prev->file : "the core");
            continue;
        }
        rc = clapp_registry_add(r, d, path);
        if (rc < 0)
            goto fail;
        added++;
    }
    if (!added) {
        dlclose(h);
        return CLAPP_OK;
    }
    return keep_handle(r, h);
fail:
    /* Descriptors added before a failure point into h: drop them with it. */
    while (added-- > 0) {
        r->n--;
        free(r->items[r->n].file);
    }
    dlclose(h);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Code in a folder or file that every user may write is anyone's code:
 * refused, with a warning naming it. */
static int world_writable(const clapp_registry *r, const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) != 0 || !(st.st_mode & S_IWOTH))
        return 0;
    clapp_host_log(r->host, CLAPP_LOG_WARNING, "registry", "%s: plugin %s writable by every user; "
                   "not loaded (chmod o-w '%s')", path, what, path);
    return 1;
}

int clapp_registry_load_dir(clapp_registry *r, const char *dir)
{
    DIR *d;
    struct dirent *ent;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = CLAPP_OK;

    if (world_writable(r, dir, "folder"))
        return CLAPP_OK;
    if (!(d = opendir(dir)))
        return CLAPP_OK;
    while ((ent = readdir(d))) {
        if (!ends_with(ent->d_name, ".so"))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 16;
            char **t = realloc(names, c * sizeof *t);
            if (!t) {
                rc = CLAPP_E_NOMEM;
                goto done;
            }
            names = t;
            cap = c;
        }
        if (asprintf(&names[n], "%s/%s", dir, ent->d_name) < 0) {
            rc = CLAPP_E_NOMEM;
            goto done;
        }
        n++;
    }
    /* Sorted, so which plugin wins a duplicate id does not depend on readdir order. */
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char err[1024];
        if (world_writable(r, names[i], "file"))
            continue;
        if (clapp_registry_load_file(r, names[i], err, sizeof err) < 0)
            clapp_host_log(r->host, CLAPP_LOG_WARNING, "registry", "plugin refused: %s", err);
    }
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

int clapp_registry_init_default(clapp_registry *r, const clapp_host *host)
{
    return clapp_registry_init_search(r, host, NULL);
}

int clapp_registry_init_search(clapp_registry *r, const clapp_host *host, const char *extra_dir)
{
    const char *env = getenv("CLAPP_PLUGIN_PATH");
    int rc = clapp_registry_init(r, host);
    if (rc < 0)
        return rc;
    if (env && *env) {
        char *copy = strdup(env), *save = NULL;
        if (!copy)
            return CLAPP_E_NOMEM;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
            if (*dir)
                clapp_registry_load_dir(r, dir);
        free(copy);
    }
    if (extra_dir && *extra_dir)
        clapp_registry_load_dir(r, extra_dir);
    if (*CLAPP_INSTALL_PLUGIN_DIR)
        clapp_registry_load_dir(r, CLAPP_INSTALL_PLUGIN_DIR);
    return CLAPP_OK;
}

char *clapp_registry_dir_beside(const char *file, const char *rel)
{
    const char *slash = file ? strrchr(file, '/') : NULL;
    char *dir = NULL;
    if (!slash || !rel)
        return NULL;
    if (asprintf(&dir, "%.*s/%s", (int)(slash - file), file, rel) < 0)
        return NULL;
    return dir;
}

int clapp_registry_init_beside_exe(clapp_registry *r, const clapp_host *host, const char *rel)
{
    char exe[4096], *dir;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    int rc;
    exe[n > 0 ? n : 0] = 0;
    dir = n > 0 ? clapp_registry_dir_beside(exe, rel) : NULL;
    rc = clapp_registry_init_search(r, host, dir);
    free(dir);
    return rc;
}

const clapp_registry_item *clapp_registry_find_item(const clapp_registry *r, const char *id)
{
    for (int32_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i].desc->id, id) == 0)
            return &r->items[i];
    return NULL;
}

const clapp_plugin_desc *clapp_registry_find(const clapp_registry *r, const char *id)
{
    const clapp_registry_item *it = clapp_registry_find_item(r, id);
    return it ? it->desc : NULL;
}

void clapp_registry_free(clapp_registry *r)
{
    if (!r)
        return;
    for (int32_t i = 0; i < r->n; i++)
        free(r->items[i].file);
    free(r->items);
    for (int32_t i = 0; i < r->n_handles; i++)
        dlclose(r->handles[i]);
    free(r->handles);
    memset(r, 0, sizeof *r);
}
