/* clapp validate: every in-tree plugin passes; the check bites on a layer
 * whose bias gradient is doubled (fixture) and on e-prop's approximate
 * gradient; bad command lines. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

static int validate(const char *file, const char *extra, const char *must_match)
{
    return tu_run("%s validate %s %s > /tmp/clapp-validate-%d.txt 2>&1; s=$?; cat /tmp/clapp-validate-%d.txt; "
                  "grep -q '%s' /tmp/clapp-validate-%d.txt || s=99; rm -f /tmp/clapp-validate-%d.txt; exit $s",
                  CLAPP_BIN, file, extra, (int)getpid(), (int)getpid(), must_match, (int)getpid(), (int)getpid());
}

static void test_validate_in_tree_plugins(void **state)
{
    (void)state;
    static const char *plugins[] = {"conv1d", "conv3d", "features", "probe_phoneme", "probe_action"};
    for (size_t i = 0; i < sizeof plugins / sizeof plugins[0]; i++) {
        char *path = NULL;
        assert_true(asprintf(&path, "%s/%s.so", CLAPP_TEST_PLUGIN_DIR, plugins[i]) > 0);
        if (validate(path, "", "all checks passed") != 0)
            fail_msg("clapp validate %s failed", path);
        free(path);
    }
    /* e-prop approximates the gradient by design; its exact mode must pass */
    assert_int_equal(validate(CLAPP_TEST_PLUGIN_DIR "/gru_eprop.so", "--set mode=bptt",
                              "finite differences of weight_hh: 24/24"), 0);
    /* layers' own options: conv1d without bias, conv3d with BN and pooling */
    assert_int_equal(validate(CLAPP_TEST_PLUGIN_DIR "/conv1d.so", "--set bias=false --set out=8",
                              "all checks passed"), 0);
    assert_int_equal(validate(CLAPP_TEST_PLUGIN_DIR "/conv3d.so", "--set out=4 --set pool=1x3x3",
                              "all checks passed"), 0);
}

static void test_validate_catches_wrong_gradients(void **state)
{
    (void)state;
    /* the doubled bias gradient: FD of b fails, a and the input still agree */
    assert_int_equal(validate(CLAPP_TEST_FIXTURE_DIR "/fixture_bad_grad.so", "",
                              "FAIL\\] finite differences of b: 0/24"), 1);
    assert_int_equal(validate(CLAPP_TEST_FIXTURE_DIR "/fixture_bad_grad.so", "",
                              "ok \\] finite differences of a: 24/24"), 1);
    /* e-prop (the default) is not the gradient of L: finite differences say so */
    assert_int_equal(validate(CLAPP_TEST_PLUGIN_DIR "/gru_eprop.so", "", "FAIL\\] finite differences of the input"), 1);
}

static void test_validate_command_line(void **state)
{
    (void)state;
    assert_int_equal(validate("/nonexistent/x.so", "", "/nonexistent/x.so: cannot open"), 2);
    assert_int_equal(validate(CLAPP_TEST_FIXTURE_DIR "/fixture_no_symbol.so", "", "no .clapp_plugin_entry_v. symbol"), 2);
    assert_int_equal(validate(CLAPP_TEST_PLUGIN_DIR "/conv1d.so", "--set nosuch=1", "nosuch"), 1);
    assert_int_equal(validate("", "", "validate needs a plugin file"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_in_tree_plugins),
        cmocka_unit_test(test_validate_catches_wrong_gradients),
        cmocka_unit_test(test_validate_command_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
