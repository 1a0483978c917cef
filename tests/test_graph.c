/* The graph runtime on synthetic blocks: layers see the previous element's
 * output, sinks see the stream unchanged, lane metadata flows through, and
 * (with the fixture layer) forward values are what the layer computes. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "testutil.h"

typedef struct fixture {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
    char               *dir;
} fixture;

static void setup_graph(fixture *f, const char *text, int learn)
{
    char err[1024] = "";
    clapp_stream_info src = {3, {2, 3, 5, 0, 0, 0}, 100.0};
    clapp_graph_params gp;
    tu_host_init(&f->host, &f->log);
    assert_int_equal(clapp_registry_init_default(&f->reg, &f->host), 0);
    assert_int_equal(clapp_registry_load_dir(&f->reg, CLAPP_TEST_FIXTURE_DIR), 0);
    if (clapp_pipedesc_parse(&f->pd, text, "<test>", err, sizeof err) < 0 ||
        clapp_pipedesc_resolve(&f->pd, &f->reg, err, sizeof err) < 0)
        fail_msg("%s", err);
    clapp_graph_default_params(&gp);
    gp.learn = learn;
    if (clapp_graph_create(&f->g, &f->pd, &src, &gp, &f->host, err, sizeof err) < 0)
        fail_msg("%s", err);
}

static void teardown_graph(fixture *f)
{
    clapp_graph_destroy(&f->g);
    clapp_pipedesc_free(&f->pd);
    clapp_registry_free(&f->reg);
    tu_log_free(&f->log);
}

static void fill_block(clapp_block *b, clapp_lane *lanes, float *data, int len0, int len1, int start)
{
    memset(b, 0, sizeof *b);
    b->x.data = data;
    b->x.ndim = 3;
    b->x.shape[0] = 2;
    b->x.shape[1] = 3;
    b->x.shape[2] = 5;
    b->lanes = 2;
    b->lane = lanes;
    b->rate = 100.0;
    memset(lanes, 0, 2 * sizeof *lanes);
    lanes[0].seq_id = 0;
    lanes[0].seq_name = "a";
    lanes[0].len = len0;
    lanes[1].seq_id = 1;
    lanes[1].seq_name = "sub/b";
    lanes[1].len = len1;
    if (start)
        lanes[0].flags = lanes[1].flags = CLAPP_LANE_SEQ_START;
    for (int i = 0; i < 30; i++) {
        int lane = i / 15, t = i % 5;
        data[i] = t < (lane ? len1 : len0) ? (float)(i + 1) : 0.0f;
    }
}

static void test_chain_forward_and_sink(void **state)
{
    fixture f;
    char text[512], err[512] = "";
    float data[30];
    clapp_lane lanes[2];
    clapp_block blk;
    (void)state;
    memset(&f, 0, sizeof f);
    f.dir = tu_tmpdir("graph");
    snprintf(text, sizeof text,
             "source ! fixture_scale name=s1 init=2 ! features out=%s/raw suffix=.x2 "
             "! fixture_scale init=-0.5 ! features out=%s/half", f.dir, f.dir);
    setup_graph(&f, text, 0);
    assert_int_equal(f.g.n, 5);
    assert_string_equal(f.g.nodes[3].pe->name, "fixture_scale1");

    fill_block(&blk, lanes, data, 5, 3, 1);
    assert_int_equal(clapp_graph_process(&f.g, &blk, err, sizeof err), 0);
    lanes[0].flags = lanes[1].flags = CLAPP_LANE_SEQ_END;
    fill_block(&blk, lanes, data, 2, 0, 0);
    lanes[0].flags = lanes[1].flags = CLAPP_LANE_SEQ_END;
    assert_int_equal(clapp_graph_process(&f.g, &blk, err, sizeof err), 0);
    const clapp_block *out = clapp_graph_output(&f.g, 3);
    /* -0.5 * 2 * x: lane 0 step 0 channel 1 of the second block is x = 6. */
    assert_float_equal(out->x.data[5], -6.0f, 1e-6);
    assert_int_equal(out->lane[0].len, 2);
    assert_string_equal(out->lane[1].seq_name, "sub/b");
    assert_int_equal(clapp_graph_finish(&f.g, err, sizeof err), 0);
    teardown_graph(&f);

    /* The sinks wrote (T, C) rows: lane 0 has 5 + 2 steps, lane 1 3 + 0. */
    assert_int_equal(tu_run("test $(stat -c %%s %s/raw/a.x2.npy) -eq $((128 + 7 * 3 * 4))", f.dir), 0);
    assert_int_equal(tu_run("test $(stat -c %%s %s/half/sub/b.npy) -eq $((128 + 3 * 3 * 4))", f.dir), 0);
    assert_int_equal(tu_run("head -c 128 %s/raw/a.x2.npy | grep -q \"'shape': (7, 3)\"", f.dir), 0);
    size_t n = 0;
    char *p = NULL;
    assert_true(asprintf(&p, "%s/half/sub/b.npy", f.dir) > 0);
    float *rows = tu_read_f32(p, &n);
    assert_non_null(rows);
    /* Row t holds channels 0..2 of step t: lane 1 is data[15 + c*5 + t] = 16 + c*5 + t, times -1. */
    assert_float_equal(rows[32 + 0], -16.0f, 1e-6);  /* t=0, c=0 */
    assert_float_equal(rows[32 + 1], -21.0f, 1e-6);  /* t=0, c=1 */
    assert_float_equal(rows[32 + 3], -17.0f, 1e-6);  /* t=1, c=0 */
    free(rows);
    free(p);
    tu_rmtree(f.dir);
    free(f.dir);
}

static void test_first_element_must_be_source(void **state)
{
    clapp_host host;
    tu_log log;
    clapp_registry reg;
    clapp_pipeline_desc pd;
    clapp_graph g;
    clapp_graph_params gp;
    clapp_stream_info src = {3, {1, 1, 8, 0, 0, 0}, 100.0};
    char err[512] = "";
    (void)state;
    tu_host_init(&host, &log);
    assert_int_equal(clapp_registry_init_default(&reg, &host), 0);
    assert_int_equal(clapp_pipedesc_parse(&pd, "features ! features", "x.pipe", err, sizeof err), 0);
    assert_int_equal(clapp_pipedesc_resolve(&pd, &reg, err, sizeof err), 0);
    clapp_graph_default_params(&gp);
    assert_true(clapp_graph_create(&g, &pd, &src, &gp, &host, err, sizeof err) < 0);
    assert_non_null(strstr(err, "source"));
    clapp_graph_destroy(&g);
    clapp_pipedesc_free(&pd);
    clapp_registry_free(&reg);
    tu_log_free(&log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_forward_and_sink),
        cmocka_unit_test(test_first_element_must_be_source),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
