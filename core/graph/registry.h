/* clapp core — the element registry: built-in elements (source, clapp loss)
 * and the descriptors of every plugin .so found on the search path.
 *
 * Search order: each folder of $CLAPP_PLUGIN_PATH (':'-separated), then the
 * folder the caller names (the host API: clapp/plugins beside libclapp),
 * then the install folder (CLAPP_INSTALL_PLUGIN_DIR). No build-tree folder
 * is compiled in: a build tree is found the way an installed copy is
 * (beside its library) or through $CLAPP_PLUGIN_PATH, which the tests and
 * tools set. The first plugin with a given id wins; later ones are reported
 * at debug level. A .so that cannot be loaded (missing entry symbol, ABI
 * mismatch, bad struct sizes) is refused with a warning that names the file
 * and the cause, and the rest still load. A folder or .so that every user
 * may write (mode o+w) is refused with a warning naming it.
 */
#ifndef CLAPP_CORE_REGISTRY_H
#define CLAPP_CORE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "clapp/plugin.h"

typedef struct clapp_registry_item {
    const clapp_plugin_desc *desc;
    char                    *file;    /* .so it came from, NULL for built-ins */
} clapp_registry_item;

typedef struct clapp_registry {
    clapp_registry_item *items;
    int32_t              n;
    int32_t              cap;
    void               **handles;     /* dlopen handles to close */
    int32_t              n_handles;
    int32_t              cap_handles;
    const clapp_host    *host;
} clapp_registry;

/* Built-ins only. */
int  clapp_registry_init(clapp_registry *r, const clapp_host *host);
/* Add built-ins and every plugin on the search path. */
int  clapp_registry_init_default(clapp_registry *r, const clapp_host *host);
/* The same with one more folder searched right after $CLAPP_PLUGIN_PATH
 * (the host API passes the plugin folder beside libclapp, so that an
 * installed prefix finds its plugins wherever it was moved). */
int  clapp_registry_init_search(clapp_registry *r, const clapp_host *host, const char *extra_dir);
/* The same with the folder REL beside this program's executable (tools of
 * the build tree that link the core statically: "lib/clapp/plugins"). */
int  clapp_registry_init_beside_exe(clapp_registry *r, const clapp_host *host, const char *rel);
/* Add a descriptor (built-ins, tests). `file` may be NULL; it is copied. */
int  clapp_registry_add(clapp_registry *r, const clapp_plugin_desc *desc, const char *file);
/* Load one .so; returns 0, or CLAPP_E_ABI / CLAPP_E_NOTFOUND / CLAPP_E_IO
 * with err naming the file and the cause. */
int  clapp_registry_load_file(clapp_registry *r, const char *path, char *err, size_t errlen);
/* Load every *.so of a folder (missing folder: nothing, no error; a
 * world-writable folder or file: a warning, nothing loaded from it). */
int  clapp_registry_load_dir(clapp_registry *r, const char *dir);
/* FILE's folder joined with REL ("/usr/lib/libclapp.so", "clapp/plugins" ->
 * "/usr/lib/clapp/plugins"); malloc'd, NULL if FILE has no '/'. */
char *clapp_registry_dir_beside(const char *file, const char *rel);
const clapp_plugin_desc *clapp_registry_find(const clapp_registry *r, const char *id);
const clapp_registry_item *clapp_registry_find_item(const clapp_registry *r, const char *id);
void clapp_registry_free(clapp_registry *r);

/* Check a loaded entry struct against the host ABI (exposed for tests). */
int  clapp_plugin_entry_check(const clapp_plugin_entry *e, const char *file, char *err, size_t errlen);

#endif
