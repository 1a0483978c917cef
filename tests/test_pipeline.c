/* The pipeline language: parsing, positions, errors, typed values, --set,
 * default names and the dump round trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "graph/pipeline.h"
#include "graph/params.h"
#include "graph/registry.h"

/* ---- descriptors used by the tests (parameter tables only) ---------------- */

static const clapp_param_desc conv_params[] = {
    {"out", CLAPP_PARAM_INT, "512", 1, 65536, NULL, "output channels"},
    {"kernel", CLAPP_PARAM_INT, "3", 1, 4096, NULL, "kernel size"},
    {"stride", CLAPP_PARAM_INT, "1", 1, 4096, NULL, "stride"},
    {"pad", CLAPP_PARAM_INT, "0", 0, 4096, NULL, "padding"},
    {"activation", CLAPP_PARAM_ENUM, "relu", 0, 0, "relu|none", "nonlinearity"},
    {"bias", CLAPP_PARAM_BOOL, "true", 0, 1, NULL, "learn a bias"},
    {"init_scale", CLAPP_PARAM_FLOAT, "1", 0, 10, NULL, "weight init scale"},
    {"note", CLAPP_PARAM_STRING, "", 0, 0, NULL, "free text"},
};
static const clapp_plugin_desc conv_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "conv1d",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LAYER,
    .help = "test conv",
    .params = conv_params,
    .n_params = (int32_t)(sizeof conv_params / sizeof conv_params[0]),
};

static const clapp_param_desc probe_params[] = {
    {"out", CLAPP_PARAM_STRING, "probe.jsonl", 0, 0, NULL, "output file"},
    {"every", CLAPP_PARAM_INT, "1", 1, 1000000000, NULL, "write every N blocks"},
};
static const clapp_plugin_desc probe_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "probe",
    .version = "1.0.0",
    .kind = CLAPP_KIND_SINK,
    .help = "test sink",
    .params = probe_params,
    .n_params = (int32_t)(sizeof probe_params / sizeof probe_params[0]),
};

/* A layer without parameters: only host keys apply. */
static const clapp_plugin_desc gate_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "gate",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LAYER,
    .help = "test layer without parameters",
};

typedef struct fixture {
    clapp_host     host;
    tu_log         log;
    clapp_registry reg;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    tu_host_init(&f->host, &f->log);
    if (clapp_registry_init(&f->reg, &f->host) < 0 ||
        clapp_registry_add(&f->reg, &conv_desc, NULL) < 0 ||
        clapp_registry_add(&f->reg, &probe_desc, NULL) < 0 ||
        clapp_registry_add(&f->reg, &gate_desc, NULL) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    clapp_registry_free(&f->reg);
    tu_log_free(&f->log);
    free(f);
    return 0;
}

static const clapp_param_value *val(const clapp_pipe_elem *e, const char *key)
{
    return clapp_param_find(e->values, e->desc->n_params, key);
}

static const char *text_of(const clapp_pipe_elem *e, const char *key)
{
    for (int32_t i = 0; i < e->desc->n_params; i++)
        if (strcmp(e->desc->params[i].name, key) == 0)
            return e->value_text[i];
    return NULL;
}

/* Parse `text`; expect failure with `want` in the message. */
static void expect_parse_error(const char *text, int want_rc, const char *want)
{
    clapp_pipeline_desc pd;
    char err[1024] = "";
    int rc = clapp_pipedesc_parse(&pd, text, "t.pipe", err, sizeof err);
    if (rc != want_rc || !strstr(err, want))
        print_error("input: <<%s>>\n  rc %d (want %d)\n  got:  %s\n  want: %s\n", text, rc,
                    want_rc, err, want);
    assert_int_equal(rc, want_rc);
    assert_non_null(strstr(err, want));
    /* A failed parse leaves nothing to free and a zeroed description. */
    assert_int_equal(pd.n, 0);
    assert_null(pd.elems);
    clapp_pipedesc_free(&pd);
}

/* Parse and resolve `text`; expect resolve to fail with `want`. */
static void expect_resolve_error(fixture *f, const char *text, const char *set, int want_rc,
                                 const char *want)
{
    clapp_pipeline_desc pd;
    char err[2048] = "";
    int rc;
    assert_int_equal(clapp_pipedesc_parse(&pd, text, "t.pipe", err, sizeof err), 0);
    if (set)
        assert_int_equal(clapp_pipedesc_set(&pd, set, err, sizeof err), 0);
    rc = clapp_pipedesc_resolve(&pd, &f->reg, err, sizeof err);
    if (rc != want_rc || !strstr(err, want))
        print_error("input: <<%s>>\n  rc %d (want %d)\n  got:  %s\n  want: %s\n", text, rc,
                    want_rc, err, want);
    assert_int_equal(rc, want_rc);
    assert_non_null(strstr(err, want));
    clapp_pipedesc_free(&pd); /* after a partial resolve */
}

/* ---- tests ------------------------------------------------------------------ */

static void test_parse_good(void **state)
{
    /* Columns are 1-based byte offsets; the layout below is deliberate. */
    static const char text[] =
        "# an encoder\n"                                    /* line 1 */
        "source rate=16k lanes=4   # trailing comment\n"    /* line 2 */
        "! conv1d name=c1 out=64 \\\n"                      /* line 3 */
        "    kernel=5 note='a b ! # c'\n"                   /* line 4 */
        "! clapp target=\"x \\\"y\\\" \\\\z\"\n"            /* line 5 */
        "!conv1d\tkernel=7!probe out=p#q\n";                /* line 6 */
    clapp_pipeline_desc pd;
    char err[512] = "";
    const clapp_pipe_elem *e;

    assert_int_equal(clapp_pipedesc_parse(&pd, text, NULL, err, sizeof err), 0);
    assert_string_equal(pd.file, "<string>");
    assert_int_equal(pd.n, 5);

    e = &pd.elems[0];
    assert_string_equal(e->type, "source");
    assert_string_equal(e->name, "source0");
    assert_int_equal(e->line, 2);
    assert_int_equal(e->col, 1);
    assert_int_equal(e->n_kv, 2);
    assert_string_equal(e->kv[0].key, "rate");
    assert_string_equal(e->kv[0].value, "16k");
    assert_int_equal(e->kv[0].line, 2);
    assert_int_equal(e->kv[0].col, 8);
    assert_string_equal(e->kv[1].key, "lanes");
    assert_int_equal(e->kv[1].col, 17);

    e = &pd.elems[1];
    assert_string_equal(e->type, "conv1d");
    assert_string_equal(e->name, "c1");
    assert_int_equal(e->line, 3);
    assert_int_equal(e->col, 3);
    assert_int_equal(e->n_kv, 3); /* name= is not a kv */
    assert_string_equal(e->kv[0].key, "out");
    assert_int_equal(e->kv[0].col, 18);
    assert_string_equal(e->kv[1].key, "kernel");
    assert_string_equal(e->kv[1].value, "5");
    assert_int_equal(e->kv[1].line, 4);
    assert_int_equal(e->kv[1].col, 5);
    assert_string_equal(e->kv[2].key, "note");
    assert_string_equal(e->kv[2].value, "a b ! # c");
    assert_int_equal(e->kv[2].col, 14);

    e = &pd.elems[2];
    assert_string_equal(e->type, "clapp");
    assert_string_equal(e->name, "clapp0");
    assert_string_equal(e->kv[0].value, "x \"y\" \\z");
    assert_int_equal(e->kv[0].line, 5);
    assert_int_equal(e->kv[0].col, 9);

    e = &pd.elems[3];
    assert_string_equal(e->type, "conv1d");
    assert_string_equal(e->name, "conv1d1"); /* second conv1d, though the first is named */
    assert_int_equal(e->line, 6);
    assert_int_equal(e->col, 2);
    assert_string_equal(e->kv[0].value, "7");
    assert_int_equal(e->kv[0].col, 9);

    e = &pd.elems[4];
    assert_string_equal(e->type, "probe");
    assert_int_equal(e->col, 18);
    assert_string_equal(e->kv[0].value, "p"); /* '#' starts a comment outside quotes */
    assert_int_equal(clapp_pipedesc_find(&pd, "probe0"), 4);
    assert_int_equal(clapp_pipedesc_find(&pd, "c1"), 1);
    assert_int_equal(clapp_pipedesc_find(&pd, "conv1d0"), -1);
    clapp_pipedesc_free(&pd);
}

static void test_parse_errors(void **state)
{
    expect_parse_error("", CLAPP_E_FORMAT, "t.pipe:1:1: empty pipeline");
    expect_parse_error("# only\n  \n", CLAPP_E_FORMAT, "t.pipe:3:1: empty pipeline");
    expect_parse_error("source\n! conv1d\n! ! probe", CLAPP_E_FORMAT,
                       "t.pipe:3:3: empty element between two '!'");
    expect_parse_error("! source", CLAPP_E_FORMAT, "t.pipe:1:1: expected an element before '!'");
    expect_parse_error("source !\n", CLAPP_E_FORMAT,
                       "t.pipe:1:8: expected an element after '!', got end of input");
    expect_parse_error("source\n! conv1d out=3 kernel\n", CLAPP_E_FORMAT,
                       "t.pipe:2:16: expected key=value after 'conv1d', got 'kernel'");
    expect_parse_error("source\n! conv1d =3\n", CLAPP_E_FORMAT,
                       "t.pipe:2:10: expected key=value after 'conv1d', got '=3'");
    expect_parse_error("source\n! conv1d 9k=3\n", CLAPP_E_FORMAT,
                       "t.pipe:2:10: expected key=value after 'conv1d', got '9k=3'");
    expect_parse_error("source ! conv1d.x out=3", CLAPP_E_FORMAT,
                       "t.pipe:1:10: expected an element type ([A-Za-z_][A-Za-z0-9_-]*), got 'conv1d.x'");
    expect_parse_error("source ! 3conv", CLAPP_E_FORMAT, "t.pipe:1:10: expected an element type");
    expect_parse_error("source\n! conv1d note=\"abc\n\n", CLAPP_E_FORMAT,
                       "t.pipe:2:15: unterminated \" quote in the value of 'note'");
    expect_parse_error("source note='it\\'s'", CLAPP_E_FORMAT,
                       "t.pipe:1:18: unexpected 's'' after the closing quote of 'note'");
    expect_parse_error("source a='x", CLAPP_E_FORMAT, "t.pipe:1:10: unterminated ' quote");
    expect_parse_error("source rate= lanes=2", CLAPP_E_FORMAT,
                       "t.pipe:1:13: missing value after 'rate='");
    expect_parse_error("source rate=!conv1d", CLAPP_E_FORMAT, "t.pipe:1:13: missing value");
    expect_parse_error("source name=a\n! conv1d name=b\n  ! conv1d name=a", CLAPP_E_FORMAT,
                       "t.pipe:3:12: duplicate name 'a' (already the name of the source at 1:1)");
    expect_parse_error("source name=a name=b", CLAPP_E_FORMAT,
                       "t.pipe:1:15: key 'name' given twice for source");
    expect_parse_error("source ! conv1d kernel=3 out=4\n    kernel=5", CLAPP_E_FORMAT,
                       "t.pipe:2:5: key 'kernel' given twice for conv1d (first at 1:17)");
    expect_parse_error("source name=1abc", CLAPP_E_FORMAT,
                       "t.pipe:1:8: name=1abc: a name must match");
    expect_parse_error("source name=a.b", CLAPP_E_FORMAT, "name=a.b: a name must match");
}

static void test_default_names(void **state)
{
    clapp_pipeline_desc pd;
    char err[512];
    /* The third conv1d's default, conv1d2, is taken by an explicit name, and so is conv1d2_2. */
    assert_int_equal(clapp_pipedesc_parse(&pd,
                                          "source ! conv1d ! conv1d name=conv1d2 ! conv1d "
                                          "! conv1d name=conv1d2_2 ! probe ! conv1d-x ! conv1d-x",
                                          "t.pipe", err, sizeof err),
                     0);
    assert_int_equal(pd.n, 8);
    assert_string_equal(pd.elems[0].name, "source0");
    assert_string_equal(pd.elems[1].name, "conv1d0");
    assert_string_equal(pd.elems[2].name, "conv1d2");
    assert_string_equal(pd.elems[3].name, "conv1d2_3");
    assert_string_equal(pd.elems[4].name, "conv1d2_2");
    assert_string_equal(pd.elems[5].name, "probe0");
    assert_string_equal(pd.elems[6].name, "conv1d-x0");
    assert_string_equal(pd.elems[7].name, "conv1d-x1");
    clapp_pipedesc_free(&pd);
}

static void test_param_int(void **state)
{
    const clapp_param_desc *kernel = &conv_params[1];
    const clapp_param_desc wide = {"n", CLAPP_PARAM_INT, "0", -5e6, 5e6, NULL, ""};
    const clapp_param_desc open = {"n", CLAPP_PARAM_INT, "0", 0, 0, NULL, ""};
    clapp_param_value v;
    char *owned = NULL, err[256];

    assert_int_equal(clapp_param_parse(kernel, "4096", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, 4096);
    assert_true(v.f == 4096.0);
    assert_ptr_equal(v.name, kernel->name);
    assert_null(owned);
    assert_int_equal(clapp_param_parse(kernel, "1", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, 1);
    assert_int_equal(clapp_param_parse(kernel, "4k", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, 4000);
    assert_int_equal(clapp_param_parse(&wide, "-3M", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, -3000000);
    assert_int_equal(clapp_param_parse(&wide, "+16k", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, 16000);
    assert_int_equal(clapp_param_parse(&open, "-9223372036854775807", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, -9223372036854775807LL);

    static const char *const bad[] = {"abc", "0", "4097", "5k", "1.5", "3x", "", " 3", "0x10",
                                      "16kk", "1e3", "99999999999999999999"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char want[128];
        assert_int_equal(clapp_param_parse(kernel, bad[k], &v, &owned, err, sizeof err),
                         CLAPP_E_INVAL);
        snprintf(want, sizeof want, "kernel=%s: expected an integer in [1, 4096]", bad[k]);
        assert_string_equal(err, want);
        assert_null(owned);
    }
    /* Overflow through the suffix. */
    assert_int_equal(clapp_param_parse(&open, "9223372036854776k", &v, &owned, err, sizeof err),
                     CLAPP_E_INVAL);
    assert_string_equal(err, "n=9223372036854776k: expected an integer");
}

static void test_param_float_bool_enum_string(void **state)
{
    const clapp_param_desc *scale = &conv_params[6];
    const clapp_param_desc *act = &conv_params[4];
    const clapp_param_desc *bias = &conv_params[5];
    const clapp_param_desc *note = &conv_params[7];
    const clapp_param_desc lr = {"lr", CLAPP_PARAM_FLOAT, "0", 0, HUGE_VAL, NULL, ""};
    clapp_param_value v;
    char *owned = NULL, err[256];

    assert_int_equal(clapp_param_parse(scale, "2.5e-1", &v, &owned, err, sizeof err), 0);
    assert_true(v.f == 0.25);
    assert_int_equal(clapp_param_parse(scale, "10", &v, &owned, err, sizeof err), 0);
    assert_true(v.f == 10.0);
    assert_int_equal(clapp_param_parse(scale, "0", &v, &owned, err, sizeof err), 0);
    static const char *const badf[] = {"10.0001", "-1e-9", "nan", "inf", "1.0x", "", "abc"};
    for (size_t k = 0; k < sizeof badf / sizeof badf[0]; k++) {
        char want[128];
        assert_int_equal(clapp_param_parse(scale, badf[k], &v, &owned, err, sizeof err),
                         CLAPP_E_INVAL);
        snprintf(want, sizeof want, "init_scale=%s: expected a finite number in [0, 10]", badf[k]);
        assert_string_equal(err, want);
    }
    assert_int_equal(clapp_param_parse(&lr, "1e300", &v, &owned, err, sizeof err), 0);
    assert_int_equal(clapp_param_parse(&lr, "-0.1", &v, &owned, err, sizeof err), CLAPP_E_INVAL);
    assert_string_equal(err, "lr=-0.1: expected a finite number >= 0");

    static const char *const yes[] = {"true", "1", "yes", "on", "TRUE", "On"};
    static const char *const no[] = {"false", "0", "no", "off", "False", "NO"};
    for (size_t k = 0; k < 6; k++) {
        v.i = 7;
        assert_int_equal(clapp_param_parse(bias, yes[k], &v, &owned, err, sizeof err), 0);
        assert_int_equal(v.i, 1);
        assert_int_equal(clapp_param_parse(bias, no[k], &v, &owned, err, sizeof err), 0);
        assert_int_equal(v.i, 0);
    }
    assert_int_equal(clapp_param_parse(bias, "2", &v, &owned, err, sizeof err), CLAPP_E_INVAL);
    assert_string_equal(err, "bias=2: expected a boolean (true|false|1|0|yes|no|on|off)");

    assert_int_equal(clapp_param_parse(act, "none", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, 1);
    assert_string_equal(v.s, "none");
    assert_ptr_equal(v.s, owned);
    free(owned);
    assert_int_equal(clapp_param_parse(act, "relu", &v, &owned, err, sizeof err), 0);
    assert_int_equal(v.i, 0);
    assert_string_equal(v.s, "relu");
    free(owned);
    static const char *const bade[] = {"tanh", "rel", "relu|none", "", "Relu"};
    for (size_t k = 0; k < sizeof bade / sizeof bade[0]; k++) {
        char want[128];
        assert_int_equal(clapp_param_parse(act, bade[k], &v, &owned, err, sizeof err),
                         CLAPP_E_INVAL);
        snprintf(want, sizeof want, "activation=%s: valid choices are relu|none", bade[k]);
        assert_string_equal(err, want);
        assert_null(owned);
    }

    assert_int_equal(clapp_param_parse(note, "any text! #", &v, &owned, err, sizeof err), 0);
    assert_string_equal(v.s, "any text! #");
    assert_ptr_equal(v.s, owned);
    free(owned);
    assert_int_equal(clapp_param_parse(note, "", &v, &owned, err, sizeof err), 0);
    assert_string_equal(v.s, "");
    free(owned);
}

static void test_param_to_text(void **state)
{
    const clapp_param_desc *scale = &conv_params[6];
    static const double xs[] = {0.1, 1e-4, 1.0 / 3.0, 6.02214076e23, 5e-324, 2.0};
    for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++) {
        clapp_param_value v = {.f = xs[k]};
        char *t = clapp_param_to_text(scale, &v);
        assert_non_null(t);
        assert_true(strtod(t, NULL) == xs[k]); /* exact round trip */
        free(t);
    }
    clapp_param_value v = {.f = 0.1};
    char *t = clapp_param_to_text(scale, &v);
    assert_string_equal(t, "0.1"); /* shortest, not 0.10000000000000001 */
    free(t);
    v.i = -42;
    t = clapp_param_to_text(&conv_params[1], &v);
    assert_string_equal(t, "-42");
    free(t);
}

static void test_resolve_values(void **state)
{
    fixture *f = *state;
    clapp_pipeline_desc pd;
    char err[1024] = "";
    const clapp_pipe_elem *e;
    assert_int_equal(clapp_pipedesc_parse(&pd,
                                          "source rate=22050 lanes=2k\n"
                                          "! conv1d name=c1 kernel=10 stride=5 activation=none "
                                          "bias=off init_scale=0.5 lr=1e-4 learn=no\n"
                                          "! clapp steps=4 target=c1\n"
                                          "! probe every=2M\n",
                                          "t.pipe", err, sizeof err),
                     0);
    assert_int_equal(clapp_pipedesc_resolve(&pd, &f->reg, err, sizeof err), 0);

    e = &pd.elems[0];
    assert_ptr_equal(e->desc, clapp_registry_find(&f->reg, "source"));
    assert_int_equal(val(e, "rate")->i, 22050);
    assert_int_equal(val(e, "lanes")->i, 2000);
    assert_int_equal(val(e, "block")->i, 20480);     /* default */
    assert_string_equal(val(e, "kind")->s, "audio"); /* default enum */
    assert_int_equal(val(e, "kind")->i, 0);
    assert_true(e->lr == -1 && e->learn == 1);

    e = &pd.elems[1];
    assert_ptr_equal(e->desc, &conv_desc);
    for (int32_t p = 0; p < conv_desc.n_params; p++)
        assert_ptr_equal(e->values[p].name, conv_params[p].name); /* same pointers, table order */
    assert_int_equal(val(e, "out")->i, 512); /* default */
    assert_int_equal(val(e, "kernel")->i, 10);
    assert_int_equal(val(e, "stride")->i, 5);
    assert_int_equal(val(e, "pad")->i, 0);
    assert_int_equal(val(e, "activation")->i, 1);
    assert_string_equal(val(e, "activation")->s, "none");
    assert_int_equal(val(e, "bias")->i, 0);
    assert_true(val(e, "init_scale")->f == 0.5);
    assert_string_equal(val(e, "note")->s, "");
    assert_true(e->lr == 1e-4);
    assert_int_equal(e->learn, 0);
    assert_string_equal(text_of(e, "out"), "512");
    assert_string_equal(text_of(e, "bias"), "false");
    assert_string_equal(text_of(e, "init_scale"), "0.5");
    assert_string_equal(text_of(e, "activation"), "none");

    e = &pd.elems[2];
    assert_string_equal(val(e, "target")->s, "c1");
    assert_int_equal(val(e, "steps")->i, 4);
    assert_int_equal(val(e, "negatives")->i, 10);
    assert_string_equal(val(e, "grad_target")->s, "auto");
    assert_string_equal(val(e, "mode")->s, "clapp-s");
    assert_true(e->lr == -1 && e->learn == 1);

    e = &pd.elems[3];
    assert_int_equal(val(e, "every")->i, 2000000);
    assert_string_equal(val(e, "out")->s, "probe.jsonl");

    /* Resolving a second time (after an override) rebuilds the values. */
    assert_int_equal(clapp_pipedesc_set(&pd, "c1.kernel=11", err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_resolve(&pd, &f->reg, err, sizeof err), 0);
    assert_int_equal(val(&pd.elems[1], "kernel")->i, 11);
    clapp_pipedesc_free(&pd);
}

static void test_resolve_errors(void **state)
{
    fixture *f = *state;
    expect_resolve_error(f, "source\n! conv1e out=3", NULL, CLAPP_E_NOTFOUND,
                         "t.pipe:2:3: unknown element 'conv1e'; did you mean 'conv1d'? "
                         "valid elements: clapp, conv1d, gate, probe, source");
    expect_resolve_error(f, "source ! zzzzzzzz", NULL, CLAPP_E_NOTFOUND,
                         "t.pipe:1:10: unknown element 'zzzzzzzz'; valid elements: clapp, conv1d, "
                         "gate, probe, source");
    expect_resolve_error(f, "source\n! conv1d name=conv1 out=3\n    kernal=4", NULL,
                         CLAPP_E_NOTFOUND,
                         "t.pipe:3:5: unknown key 'kernal' for conv1d; did you mean 'kernel'? "
                         "valid keys: out, kernel, stride, pad, activation, bias, init_scale, "
                         "note, name, lr, learn");
    /* Suggestions go up to edit distance 2 for short words, none beyond. */
    expect_resolve_error(f, "source ! conv1d pda=1", NULL, CLAPP_E_NOTFOUND,
                         "unknown key 'pda' for conv1d; did you mean 'pad'? valid keys:");
    expect_resolve_error(f, "source ! conv1d kxyzl=1", NULL, CLAPP_E_NOTFOUND,
                         "unknown key 'kxyzl' for conv1d; valid keys: out, kernel");
    /* lr/learn are host keys only for layers and losses. */
    expect_resolve_error(f, "source ! probe lr=0.1", NULL, CLAPP_E_NOTFOUND,
                         "t.pipe:1:16: unknown key 'lr' for probe; valid keys: out, every, name");
    expect_resolve_error(f, "source lr=1", NULL, CLAPP_E_NOTFOUND, "unknown key 'lr' for source");
    expect_resolve_error(f, "source\n! conv1d name=conv1 kernel=abc", NULL, CLAPP_E_INVAL,
                         "t.pipe:2:21: conv1d 'conv1': kernel=abc: expected an integer in [1, 4096]");
    expect_resolve_error(f, "source ! conv1d activation=tanh", NULL, CLAPP_E_INVAL,
                         "t.pipe:1:17: conv1d 'conv1d0': activation=tanh: valid choices are relu|none");
    expect_resolve_error(f, "source ! conv1d bias=maybe", NULL, CLAPP_E_INVAL,
                         "conv1d 'conv1d0': bias=maybe: expected a boolean");
    expect_resolve_error(f, "source ! conv1d init_scale=11", NULL, CLAPP_E_INVAL,
                         "init_scale=11: expected a finite number in [0, 10]");
    expect_resolve_error(f, "source ! clapp lr=-1", NULL, CLAPP_E_INVAL,
                         "t.pipe:1:16: clapp 'clapp0': lr=-1: expected a finite number >= 0");
    expect_resolve_error(f, "source ! conv1d learn=maybe", NULL, CLAPP_E_INVAL,
                         "conv1d 'conv1d0': learn=maybe: expected a boolean");
    /* Errors in overrides name the --set, not a position. */
    expect_resolve_error(f, "source ! conv1d name=c1", "c1.kernal=4", CLAPP_E_NOTFOUND,
                         "--set c1.kernal=4: unknown key 'kernal' for conv1d; did you mean 'kernel'?");
    expect_resolve_error(f, "source ! conv1d name=c1 kernel=3", "c1.kernel=0", CLAPP_E_INVAL,
                         "--set c1.kernel=0: conv1d 'c1': kernel=0: expected an integer in [1, 4096]");
}

static void test_set(void **state)
{
    fixture *f = *state;
    clapp_pipeline_desc pd;
    char err[1024] = "";
    assert_int_equal(clapp_pipedesc_parse(&pd, "source ! conv1d name=enc.v1 kernel=3", "t.pipe",
                                          err, sizeof err),
                     CLAPP_E_FORMAT); /* '.' is not allowed in names, so --set can split */
    assert_int_equal(clapp_pipedesc_parse(&pd, "source ! conv1d name=c-1 kernel=3 ! clapp",
                                          "t.pipe", err, sizeof err),
                     0);
    /* Replace: the position becomes line 0. */
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.kernel=9", err, sizeof err), 0);
    assert_int_equal(pd.elems[1].n_kv, 1);
    assert_string_equal(pd.elems[1].kv[0].value, "9");
    assert_int_equal(pd.elems[1].kv[0].line, 0);
    /* Append; the value may contain '=' and '.' (split at the first '='). */
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.note=a=b.c d", err, sizeof err), 0);
    assert_int_equal(pd.elems[1].n_kv, 2);
    assert_string_equal(pd.elems[1].kv[1].key, "note");
    assert_string_equal(pd.elems[1].kv[1].value, "a=b.c d");
    assert_int_equal(clapp_pipedesc_set(&pd, "clapp0.lr=5e-4", err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_set(&pd, "source0.rate=8k", err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.note=", err, sizeof err), 0); /* empty value */

    assert_int_equal(clapp_pipedesc_set(&pd, "nope.kernel=3", err, sizeof err), CLAPP_E_NOTFOUND);
    assert_string_equal(err, "--set nope.kernel=3: no element named 'nope'; elements: source0, "
                             "c-1, clapp0");
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.kernel", err, sizeof err), CLAPP_E_INVAL);
    assert_string_equal(err, "--set c-1.kernel: expected NAME.KEY=VALUE");
    assert_int_equal(clapp_pipedesc_set(&pd, "kernel=3", err, sizeof err), CLAPP_E_INVAL);
    assert_string_equal(err, "--set kernel=3: expected NAME.KEY=VALUE");
    assert_int_equal(clapp_pipedesc_set(&pd, ".kernel=3", err, sizeof err), CLAPP_E_INVAL);
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.=3", err, sizeof err), CLAPP_E_INVAL);
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.ker-nel=3", err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "'ker-nel' is not a valid key"));
    assert_int_equal(clapp_pipedesc_set(&pd, "c-1.name=x", err, sizeof err), CLAPP_E_INVAL);
    assert_non_null(strstr(err, "cannot be renamed"));
    assert_int_equal(pd.elems[1].n_kv, 2); /* failed overrides change nothing */

    assert_int_equal(clapp_pipedesc_resolve(&pd, &f->reg, err, sizeof err), 0);
    assert_int_equal(val(&pd.elems[0], "rate")->i, 8000);
    assert_int_equal(val(&pd.elems[1], "kernel")->i, 9);
    assert_string_equal(val(&pd.elems[1], "note")->s, "");
    assert_true(pd.elems[2].lr == 5e-4);
    clapp_pipedesc_free(&pd);
}

/* Every value, every canonical text and the host keys agree. */
static void assert_same_graph(const clapp_pipeline_desc *a, const clapp_pipeline_desc *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const clapp_pipe_elem *x = &a->elems[i], *y = &b->elems[i];
        assert_string_equal(x->type, y->type);
        assert_string_equal(x->name, y->name);
        assert_ptr_equal(x->desc, y->desc);
        assert_true(x->lr == y->lr);
        assert_int_equal(x->learn, y->learn);
        for (int32_t p = 0; p < x->desc->n_params; p++) {
            assert_string_equal(x->value_text[p], y->value_text[p]);
            assert_int_equal(x->values[p].i, y->values[p].i);
            assert_true(x->values[p].f == y->values[p].f);
            if (x->values[p].s || y->values[p].s)
                assert_string_equal(x->values[p].s, y->values[p].s);
        }
    }
}

static void test_dump_roundtrip(void **state)
{
    fixture *f = *state;
    clapp_pipeline_desc a, b;
    char err[1024] = "", *text = NULL, *again = NULL, *path = NULL, *dir = tu_tmpdir("pipe");
    FILE *out;

    assert_non_null(dir);
    assert_int_equal(clapp_pipedesc_parse(&a,
                                          "source lanes=3 # comment\n"
                                          "! conv1d name=c1 note=\"tab\\there \\\"q\\\" back\\\\ "
                                          "new\\nline ! # '\" init_scale=0.1 lr=3e-5\n"
                                          "! clapp learn=off target=c1\n"
                                          "! conv1d kernel=7 ! probe out='my file.jsonl'\n",
                                          "t.pipe", err, sizeof err),
                     0);
    assert_int_equal(clapp_pipedesc_set(&a, "conv1d1.init_scale=0.30000000000000004", err,
                                        sizeof err),
                     0);
    assert_int_equal(clapp_pipedesc_resolve(&a, &f->reg, err, sizeof err), 0);
    text = clapp_pipedesc_to_text(&a);
    assert_non_null(text);

    /* The exact form: one element per line, name= first, all parameters, host keys last. */
    static const char want_first[] =
        "source name=source0 kind=audio rate=16000 block=20480 lanes=3 queue=4 mode=stream "
        "window_align=160 label_rate=100 width=64 height=64 fps=10 color=gray backend=auto io_timeout=0 strict=false "
        "shuffle=false gain=1 offset=0 aug_gain_db=0 aug_snr=\"\" aug_noise=white aug_eq_db=0 "
        "aug_speed=1\n"
        "! conv1d name=c1 out=512 kernel=3 stride=1 pad=0 activation=relu bias=true "
        "init_scale=0.1 note=\"tab\\there \\\"q\\\" back\\\\ new\\nline ! # '\" lr=3e-05\n"
        "! clapp name=clapp0 mode=clapp-s steps=12 negatives=10 neg_draw=per_step "
        "neg_exclude_self=false window=128 retro=false detach_context=false target=c1 "
        "grad_target=auto context=\"\" form=auto pool=shared learn=false\n"
        "! conv1d name=conv1d1 out=512 kernel=7 stride=1 pad=0 activation=relu bias=true "
        "init_scale=0.30000000000000004 note=\"\"\n"
        "! probe name=probe0 out=\"my file.jsonl\" every=1\n";
    if (strcmp(text, want_first) != 0)
        print_error("dump:\n%s\nwant:\n%s\n", text, want_first);
    assert_string_equal(text, want_first);

    /* It parses and resolves back to the same values, and dumps identically. */
    assert_int_equal(clapp_pipedesc_parse(&b, text, "dump", err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_resolve(&b, &f->reg, err, sizeof err), 0);
    assert_same_graph(&a, &b);
    assert_string_equal(val(&b.elems[1], "note")->s, "tab\there \"q\" back\\ new\nline ! # '");
    assert_true(b.elems[1].lr == 3e-5);
    again = clapp_pipedesc_to_text(&b);
    assert_string_equal(again, text);

    /* dump to a FILE writes the same text. */
    path = tu_path(dir, "dump.pipe");
    out = fopen(path, "w");
    assert_non_null(out);
    clapp_pipedesc_dump(&a, out);
    fclose(out);
    clapp_pipedesc_free(&b);
    assert_int_equal(clapp_pipedesc_parse_file(&b, path, err, sizeof err), 0);
    assert_string_equal(b.text, text);
    assert_string_equal(b.file, path);

    clapp_pipedesc_free(&a);
    clapp_pipedesc_free(&b);
    free(text);
    free(again);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* CRLF files, continuations in and out of quotes, and an element with no table. */
static void test_edge_cases(void **state)
{
    fixture *f = *state;
    clapp_pipeline_desc pd;
    char err[1024] = "", *text;
    assert_int_equal(clapp_pipedesc_parse(&pd,
                                          "source \\\r\n  lanes=2\r\n"
                                          "! gate lr=1e-3 learn=0 # c\r\n"
                                          "! probe out=\"a\\\r\nb\" every=3\r\n",
                                          "crlf.pipe", err, sizeof err),
                     0);
    assert_int_equal(pd.n, 3);
    assert_string_equal(pd.elems[0].kv[0].key, "lanes");
    assert_int_equal(pd.elems[0].kv[0].line, 2);
    assert_int_equal(pd.elems[0].kv[0].col, 3);
    assert_string_equal(pd.elems[2].kv[0].value, "ab");
    assert_int_equal(pd.elems[2].kv[1].line, 5);
    assert_int_equal(pd.elems[2].kv[1].col, 4);
    assert_int_equal(clapp_pipedesc_resolve(&pd, &f->reg, err, sizeof err), 0);
    assert_null(pd.elems[1].values);
    assert_true(pd.elems[1].lr == 1e-3);
    assert_int_equal(pd.elems[1].learn, 0);
    text = clapp_pipedesc_to_text(&pd);
    assert_non_null(text);
    assert_non_null(strstr(text, "\n! gate name=gate0 lr=0.001 learn=false\n! probe name=probe0 out=ab every=3\n"));
    free(text);
    clapp_pipedesc_free(&pd);
}

static void test_parse_file(void **state)
{
    fixture *f = *state;
    clapp_pipeline_desc pd;
    char err[1024] = "", *dir = tu_tmpdir("pipe"), *path, *missing;
    assert_non_null(dir);
    path = tu_path(dir, "a.pipe");
    missing = tu_path(dir, "none.pipe");
    assert_int_equal(tu_write_text(path, "source\n! conv1d name=conv1 kernel=5\n"
                                         "! conv1d kernel !\n"),
                     0);
    assert_int_equal(clapp_pipedesc_parse_file(&pd, path, err, sizeof err), CLAPP_E_FORMAT);
    {
        char want[600];
        snprintf(want, sizeof want, "%s:3:10: expected key=value after 'conv1d', got 'kernel'",
                 path);
        assert_string_equal(err, want);
    }
    assert_int_equal(clapp_pipedesc_parse_file(&pd, missing, err, sizeof err), CLAPP_E_IO);
    {
        char want[600];
        snprintf(want, sizeof want, "%s: cannot read (No such file or directory)", missing);
        assert_string_equal(err, want);
    }
    assert_int_equal(pd.n, 0);
    assert_int_equal(tu_write_text(path, "source\n! conv1d name=conv1 kernel=5\n"), 0);
    assert_int_equal(clapp_pipedesc_parse_file(&pd, path, err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_resolve(&pd, &f->reg, err, sizeof err), 0);
    assert_int_equal(val(&pd.elems[1], "kernel")->i, 5);
    clapp_pipedesc_free(&pd);
    clapp_pipedesc_free(&pd); /* freeing twice is harmless: free zeroes */
    free(path);
    free(missing);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_default_names),
        cmocka_unit_test(test_param_int),
        cmocka_unit_test(test_param_float_bool_enum_string),
        cmocka_unit_test(test_param_to_text),
        cmocka_unit_test_setup_teardown(test_resolve_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge_cases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
