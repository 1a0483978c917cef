/* The plugin author kit: cmake --install into a temporary prefix, pkg-config
 * gives plugindir, plugins/template builds out of tree with
 * find_package(clapp) against the installed headers, the installed clapp
 * runs it in a pipeline (y = 2x + 0.5 checked against the source's own
 * output) and clapp validate passes it. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static float *read_npy(const char *path, size_t *n)
{
    size_t bytes = 0;
    float *all = tu_read_f32(path, &bytes);   /* count in floats, header included */
    float *data;
    if (!all || bytes < 32)
        return NULL;
    /* the features sink writes a 128-byte header = 32 floats */
    *n = bytes - 32;
    data = malloc(*n * sizeof(float) + 1);
    memcpy(data, all + 32, *n * sizeof(float));
    free(all);
    return data;
}

static void test_kit_template_out_of_tree(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("kit"), *raw_p, *aff_p;
    float *raw, *aff;
    size_t nr = 0, na = 0;
    assert_non_null(dir);
    assert_int_equal(tu_run("cmake --install %s --prefix %s/prefix > /dev/null", CLAPP_TEST_BINARY_DIR, dir), 0);
    assert_int_equal(tu_run("cd %s && test -x prefix/bin/clapp && test -f prefix/include/clapp/plugin.h && "
                            "test -f prefix/lib/clapp/plugins/conv1d.so && "
                            "test -f prefix/lib/cmake/clapp/clappConfig.cmake && "
                            "test -f prefix/lib/cmake/clapp/clappConfigVersion.cmake", dir), 0);
    /* pkg-config: plugindir inside the prefix, flags for the headers */
    assert_int_equal(tu_run("cd %s && export PKG_CONFIG_PATH=$PWD/prefix/lib/pkgconfig && "
                            "test \"$(realpath $(pkg-config --variable=plugindir clapp))\" = \"$(realpath prefix/lib/clapp/plugins)\" && "
                            "pkg-config --cflags clapp | grep -q -- '-I.*/include' && "
                            "pkg-config --libs clapp | grep -q -- '-lclapp'", dir), 0);
    /* the template, out of tree, against the installed package only */
    assert_int_equal(tu_run("cd %s && cp -r %s/plugins/template src && "
                            "cmake -S src -B build -DCMAKE_PREFIX_PATH=$PWD/prefix > /dev/null && "
                            "cmake --build build > /dev/null && test -f build/affine.so && "
                            "grep -q 'prefix/include' build/CMakeFiles/affine.dir/flags.make",
                            dir, CLAPP_TEST_SOURCE_DIR), 0);
    /* a C file of another build using pkg-config alone compiles against the same headers */
    assert_int_equal(tu_run("cd %s && export PKG_CONFIG_PATH=$PWD/prefix/lib/pkgconfig && "
                            "cc -std=c11 -shared -fPIC $(pkg-config --cflags clapp) src/template.c -o pc_affine.so",
                            dir), 0);
    /* the installed clapp (its own RPATH finds libclapp) runs the plugin */
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i 'sine=f=440:r=16000:d=0.7' a.wav && "
                            "echo a.wav > m.tsv && printf '%%s\\n' 'source rate=16000 block=4000 lanes=1' "
                            "'! features out=f suffix=.raw' '! affine scale=2 shift=0.5' '! features out=f suffix=.aff' "
                            "> p.pipe && env -u LD_LIBRARY_PATH CLAPP_PLUGIN_PATH=$PWD/build prefix/bin/clapp run p.pipe "
                            "--data m.tsv -q && CLAPP_PLUGIN_PATH=$PWD/build prefix/bin/clapp inspect affine | "
                            "grep -q 'from: .*build/affine.so'", dir), 0);
    assert_true(asprintf(&raw_p, "%s/f/a.raw.npy", dir) > 0);
    assert_true(asprintf(&aff_p, "%s/f/a.aff.npy", dir) > 0);
    raw = read_npy(raw_p, &nr);
    aff = read_npy(aff_p, &na);
    assert_non_null(raw);
    assert_non_null(aff);
    assert_int_equal(nr, 11200);
    assert_int_equal(na, nr);
    for (size_t i = 0; i < nr; i++)
        if (aff[i] != 2.0f * raw[i] + 0.5f)
            fail_msg("sample %zu: %g != 2 * %g + 0.5", i, aff[i], raw[i]);
    /* and the ABI checks pass on the out-of-tree build */
    assert_int_equal(tu_run("cd %s && prefix/bin/clapp validate build/affine.so | grep -q 'all checks passed'",
                            dir), 0);
    free(raw);
    free(aff);
    free(raw_p);
    free(aff_p);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kit_template_out_of_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
