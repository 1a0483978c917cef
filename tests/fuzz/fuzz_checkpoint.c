/* Fuzz target: the checkpoint loader. Every input is a checkpoint file,
 * loaded into one learning graph (source ! conv1d ! clapp: weights, the
 * loss's prediction matrices, Adam's moments, counters and PRNG states)
 * with and without the optimizer state (by the input size's parity); a
 * load that fails must say why. With $CLAPP_FUZZ_SEED_DIR set, the
 * graph's own checkpoints (with and without the optimizer) are written
 * there first: the seed corpus. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "graph/graph.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "storage/checkpoint.h"

static const char pipe_text[] =
    "source rate=16000 block=64 lanes=1 ! conv1d name=c out=4 kernel=4 stride=2 "
    "! clapp name=l steps=2 negatives=2 window=0";

static clapp_host host;
static clapp_registry reg;
static clapp_pipeline_desc pd;
static clapp_graph graph;

static void write_seed(const char *dir, const char *name, int with_optimizer)
{
    clapp_ckpt_options co = {with_optimizer, 1};
    char path[4096], err[1024] = "";
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (clapp_ckpt_save(&graph, path, &co, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_checkpoint: %s\n", err);
        exit(1);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    clapp_stream_info src = {3, {1, 1, 64, 0, 0, 0}, 16000.0};
    clapp_graph_params gp;
    char err[1024] = "";
    (void)argc;
    (void)argv;
    fuzz_host_init(&host);
    clapp_graph_default_params(&gp);
    gp.learn = 1;
    if (clapp_registry_init_default(&reg, &host) < 0 ||
        clapp_pipedesc_parse(&pd, pipe_text, "<fuzz>", err, sizeof err) < 0 ||
        clapp_pipedesc_resolve(&pd, &reg, err, sizeof err) < 0 ||
        clapp_graph_create(&graph, &pd, &src, &gp, &host, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_checkpoint: cannot set up the graph (%s; is CLAPP_PLUGIN_PATH the "
                "build's plugin folder?)\n", err);
        exit(1);
    }
    if (fuzz_seed_dir()) {
        write_seed(fuzz_seed_dir(), "with_optimizer.safetensors", 1);
        write_seed(fuzz_seed_dir(), "weights_only.safetensors", 0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clapp_ckpt_options co = {(int)(size % 2), 1};
    char path[64], err[1024] = "", *meta;
    int rc;
    fuzz_memfile(data, size, path);
    rc = clapp_ckpt_load(&graph, path, &co, err, sizeof err);
    if (rc < 0 && !err[0]) {
        fprintf(stderr, "checkpoint load failed (status %d) without a message\n", rc);
        abort();
    }
    err[0] = 0;
    meta = clapp_ckpt_read_meta(path, "pipeline", err, sizeof err);
    if (!meta && !err[0]) {
        fprintf(stderr, "metadata read failed without a message\n");
        abort();
    }
    free(meta);
    return 0;
}
