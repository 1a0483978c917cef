/* The plugin loader: good plugins load, bad ones are refused with a message
 * that names the file and the cause; search order; one exported symbol. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/registry.h"
#include "testutil.h"

#define FIX(name) CLAPP_TEST_FIXTURE_DIR "/" name

static void expect_refused(const char *path, int code, const char *cause)
{
    clapp_registry r;
    clapp_host host;
    tu_log log;
    char err[1024] = "";
    tu_host_init(&host, &log);
    assert_int_equal(clapp_registry_init(&r, &host), 0);
    int n0 = r.n;
    assert_int_equal(clapp_registry_load_file(&r, path, err, sizeof err), code);
    assert_non_null(strstr(err, path));
    if (!strstr(err, cause))
        fail_msg("message '%s' does not say '%s'", err, cause);
    assert_int_equal(r.n, n0);   /* nothing of it was kept */
    clapp_registry_free(&r);
    tu_log_free(&log);
}

static void test_wrong_major_refused(void **state)
{
    (void)state;
    expect_refused(FIX("fixture_wrong_abi.so"), CLAPP_E_ABI, "major versions differ");
}

static void test_newer_minor_refused(void **state)
{
    (void)state;
    expect_refused(FIX("fixture_newer_minor.so"), CLAPP_E_ABI, "newer than the host");
}

static void test_missing_symbol_refused(void **state)
{
    (void)state;
    expect_refused(FIX("fixture_no_symbol.so"), CLAPP_E_ABI, "no 'clapp_plugin_entry_v' symbol");
}

static void test_missing_file_and_not_elf(void **state)
{
    char *dir = tu_tmpdir("registry");
    char *bogus = tu_path(dir, "bogus.so");
    (void)state;
    expect_refused(FIX("no_such_plugin.so"), CLAPP_E_NOTFOUND, "cannot open");
    assert_int_equal(tu_write_text(bogus, "this is text, not a shared object\n"), 0);
    expect_refused(bogus, CLAPP_E_IO, "not a loadable plugin");
    tu_rmtree(dir);
    free(bogus);
    free(dir);
}

static void test_good_plugin_loads(void **state)
{
    clapp_registry r;
    clapp_host host;
    tu_log log;
    char err[1024] = "";
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(clapp_registry_init(&r, &host), 0);
    assert_non_null(clapp_registry_find(&r, "source"));
    assert_non_null(clapp_registry_find(&r, "clapp"));
    assert_null(clapp_registry_find(&r, "fixture_scale"));
    assert_int_equal(clapp_registry_load_file(&r, FIX("fixture_scale.so"), err, sizeof err), 0);
    const clapp_registry_item *it = clapp_registry_find_item(&r, "fixture_scale");
    assert_non_null(it);
    assert_string_equal(it->file, FIX("fixture_scale.so"));
    assert_int_equal(it->desc->kind, CLAPP_KIND_LAYER);
    assert_int_equal(it->desc->n_params, 1);
    assert_string_equal(it->desc->params[0].name, "init");
    clapp_registry_free(&r);
    tu_log_free(&log);
}

static void test_dir_loads_good_and_warns_bad(void **state)
{
    clapp_registry r;
    clapp_host host;
    tu_log log;
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(clapp_registry_init(&r, &host), 0);
    assert_int_equal(clapp_registry_load_dir(&r, CLAPP_TEST_FIXTURE_DIR), 0);
    assert_non_null(clapp_registry_find(&r, "fixture_scale"));
    assert_null(clapp_registry_find(&r, "fixture_wrong_abi"));
    assert_null(clapp_registry_find(&r, "fixture_newer_minor"));
    /* One warning per bad file, naming it. */
    assert_int_equal(log.n_warnings, 3);
    assert_int_equal(tu_log_count(&log, "fixture_wrong_abi.so"), 1);
    assert_int_equal(tu_log_count(&log, "fixture_newer_minor.so"), 1);
    assert_int_equal(tu_log_count(&log, "fixture_no_symbol.so"), 1);
    clapp_registry_free(&r);
    tu_log_free(&log);
}

static void test_search_path_first(void **state)
{
    clapp_registry r;
    clapp_host host;
    tu_log log;
    (void)state;
    tu_host_init(&host, &log);
    setenv("CLAPP_PLUGIN_PATH", "/nonexistent:" CLAPP_TEST_FIXTURE_DIR ":" CLAPP_TEST_PLUGIN_DIR, 1);
    assert_int_equal(clapp_registry_init_default(&r, &host), 0);
    assert_non_null(clapp_registry_find(&r, "fixture_scale"));
    /* Folders are searched in the path's order. */
    const clapp_registry_item *it = clapp_registry_find_item(&r, "features");
    assert_non_null(it);
    assert_non_null(strstr(it->file, CLAPP_TEST_PLUGIN_DIR));
    clapp_registry_free(&r);
    unsetenv("CLAPP_PLUGIN_PATH");
    tu_log_free(&log);
}

/* No build-tree folder is compiled into the library: a plugin planted in
 * the folder the build used to search (BUILD/plugins) loads nothing; without $CLAPP_PLUGIN_PATH the
 * statically linked core finds no plugin of the build tree at all. */
static void test_no_build_folder_compiled_in(void **state)
{
    clapp_registry r;
    clapp_host host;
    tu_log log;
    const char *old = CLAPP_TEST_BINARY_DIR "/plugins";
    const char *env = getenv("CLAPP_PLUGIN_PATH");
    char *saved = env ? strdup(env) : NULL;
    (void)state;
    /* (BUILD/plugins is also CMake's folder for the plugins' build files:
     * only the planted file is added and removed) */
    assert_int_equal(tu_run("mkdir -p '%s' && cp '%s' '%s/planted.so'", old, FIX("fixture_scale.so"), old), 0);
    unsetenv("CLAPP_PLUGIN_PATH");
    tu_host_init(&host, &log);
    assert_int_equal(clapp_registry_init_default(&r, &host), 0);
    assert_null(clapp_registry_find(&r, "fixture_scale"));
    for (int32_t i = 0; i < r.n; i++)
        if (r.items[i].file && strstr(r.items[i].file, CLAPP_TEST_BINARY_DIR))
            fail_msg("%s loaded from the build tree without CLAPP_PLUGIN_PATH", r.items[i].file);
    clapp_registry_free(&r);
    tu_log_free(&log);
    if (saved)
        setenv("CLAPP_PLUGIN_PATH", saved, 1);
    free(saved);
    assert_int_equal(tu_run("rm -f '%s/planted.so'", old), 0);
    /* Neither folder's name is in the library or the static core. */
    assert_int_equal(tu_run("! grep -q -F -e '%s' -e '%s' '%s/lib/libclapp.so' '%s/libclapp_core.a'", old,
                            CLAPP_TEST_PLUGIN_DIR, CLAPP_TEST_BINARY_DIR, CLAPP_TEST_BINARY_DIR), 0);
}

/* A plugin folder, or a plugin, that every user may write is refused with
 * a warning naming it; the same folder with mode 755 loads. */
static void test_world_writable_refused(void **state)
{
    clapp_registry r;
    clapp_host host;
    tu_log log;
    char *dir = tu_tmpdir("registry"), *so = tu_path(dir, "scale.so");
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(tu_run("cp '%s' '%s' && chmod 755 '%s' && chmod 777 '%s'", FIX("fixture_scale.so"), so, so,
                            dir), 0);
    assert_int_equal(clapp_registry_init(&r, &host), 0);
    assert_int_equal(clapp_registry_load_dir(&r, dir), 0);
    assert_null(clapp_registry_find(&r, "fixture_scale"));
    assert_int_equal(log.n_warnings, 1);
    assert_int_equal(tu_log_count(&log, "plugin folder writable by every user"), 1);
    assert_int_equal(tu_log_count(&log, dir), 1);
    clapp_registry_free(&r);
    tu_log_clear(&log);

    assert_int_equal(tu_run("chmod 755 '%s' && chmod 757 '%s'", dir, so), 0);
    assert_int_equal(clapp_registry_init(&r, &host), 0);
    assert_int_equal(clapp_registry_load_dir(&r, dir), 0);
    assert_null(clapp_registry_find(&r, "fixture_scale"));
    assert_int_equal(tu_log_count(&log, "plugin file writable by every user"), 1);
    clapp_registry_free(&r);
    tu_log_clear(&log);

    assert_int_equal(tu_run("chmod 755 '%s'", so), 0);
    assert_int_equal(clapp_registry_init(&r, &host), 0);
    assert_int_equal(clapp_registry_load_dir(&r, dir), 0);
    assert_non_null(clapp_registry_find(&r, "fixture_scale"));
    assert_int_equal(log.n_warnings, 0);
    clapp_registry_free(&r);
    tu_log_free(&log);
    tu_rmtree(dir);
    free(so);
    free(dir);
}

static void test_entry_check_struct_size(void **state)
{
    clapp_plugin_entry e = {CLAPP_ABI_MAJOR, 0, 4, 0, NULL};
    char err[512];
    (void)state;
    assert_int_equal(clapp_plugin_entry_check(&e, "x.so", err, sizeof err), CLAPP_E_ABI);
    assert_non_null(strstr(err, "struct_size"));
}

/* Plugins export exactly one symbol (version script). */
static void test_plugins_export_one_symbol(void **state)
{
    (void)state;
    assert_int_equal(tu_run("test \"$(nm -D --defined-only %s/features.so | awk '{print $3}' | "
                            "grep -v '^_' | sort | tr '\\n' ' ')\" = 'clapp_plugin_entry_v '",
                            CLAPP_TEST_PLUGIN_DIR), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrong_major_refused),
        cmocka_unit_test(test_newer_minor_refused),
        cmocka_unit_test(test_missing_symbol_refused),
        cmocka_unit_test(test_missing_file_and_not_elf),
        cmocka_unit_test(test_good_plugin_loads),
        cmocka_unit_test(test_dir_loads_good_and_warns_bad),
        cmocka_unit_test(test_search_path_first),
        cmocka_unit_test(test_no_build_folder_compiled_in),
        cmocka_unit_test(test_world_writable_refused),
        cmocka_unit_test(test_entry_check_struct_size),
        cmocka_unit_test(test_plugins_export_one_symbol),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
