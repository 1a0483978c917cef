/* clapp eval PIPE --checkpoint C --train M --test M: freeze the encoder,
 * train the pipeline's probes (sinks) on the train manifest, measure them on
 * the test manifest, report per probe as a table and JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

static void eval_usage(void)
{
    printf("usage: clapp eval PIPE (--checkpoint C | --random-init) --train MANIFEST --test MANIFEST\n"
           "                  [--probe ELEMENT[:TYPE]]... [--epochs N] [--seed S] [--json FILE]\n"
           "                  [--set NAME.KEY=VALUE]... [-q|-v]\n"
           "Loads the encoder from the checkpoint (or keeps its seeded random initialisation with\n"
           "--random-init), freezes it, trains every probe of the pipeline for N epochs (default 1)\n"
           "over the whole files of the train manifest, in a new seeded random order every epoch,\n"
           "then measures them on the test manifest.\n"
           "--probe attaches a probe (default probe_phoneme) to the output of ELEMENT, named\n"
           "probe_ELEMENT; probes already in the pipeline are measured too.\n"
           "Prints a table, then the report as one JSON line (also written to --json FILE).\n");
}

/* Run one manifest through with the probes learning or frozen. */
static int eval_pass(cli_session *s, cli_options *o, const char *data, int epochs, clapp_mode mode)
{
    int rc;
    /* The probes learn by minibatch steps over the lanes: files in manifest
     * order (often sorted by class) would give batches of one class, and a
     * probe that follows the last class it saw. So the training pass always
     * shuffles (seeded by --seed); the test pass keeps the manifest order. */
    o->shuffle = mode == CLAPP_MODE_LEARN;
    rc = cli_session_use_data(s, o, data, epochs, 1);
    if (rc != CLI_OK)
        return rc;
    clapp_graph_reset(&s->graph);
    if (clapp_graph_set_sink_mode(&s->graph, mode) < 0) {
        fprintf(stderr, "clapp: error: a probe refused to switch mode\n");
        return CLI_FAILED;
    }
    return cli_session_run(s, o);
}

int cli_eval(int argc, char **argv)
{
    cli_options o;
    cli_session s;
    int help = 0, status, probes = 0;
    char report[8192];
    FILE *json = NULL;

    status = cli_options_parse(&o, argc, argv, &help);
    if (status != CLI_OK || help) {
        if (help)
            eval_usage();
        free(o.sets);
    free(o.probes);
        return status;
    }
    if (!o.train || !o.test || (!o.checkpoint && !o.random_init) || (o.checkpoint && o.random_init)) {
        fprintf(stderr, "clapp: error: eval needs --train and --test manifests and exactly one of "
                        "--checkpoint or --random-init\n");
        free(o.sets);
    free(o.probes);
        return CLI_USAGE;
    }
    o.data = o.train;
    status = cli_session_open(&s, &o, 0);
    if (status == CLI_OK && o.checkpoint)
        status = cli_session_load(&s, o.checkpoint, 0);
    if (status == CLI_OK)
        status = eval_pass(&s, &o, o.train, o.epochs, CLAPP_MODE_LEARN);
    if (status == CLI_OK)
        status = eval_pass(&s, &o, o.test, 1, CLAPP_MODE_FROZEN);
    if (status == CLI_OK && o.json && !(json = fopen(o.json, "w"))) {
        perror(o.json);
        status = CLI_FAILED;
    }
    if (status == CLI_OK) {
        /* report() may restart a probe's running means: call it once per probe. */
        char **reports = calloc((size_t)s.graph.n, sizeof *reports);
        if (!reports) {
            status = CLI_FAILED;
            goto out;
        }
        for (int i = 1; i < s.graph.n; i++)
            if (s.graph.nodes[i].kind == CLAPP_KIND_SINK &&
                clapp_graph_report(&s.graph, i, report, sizeof report) >= 0 && report[0])
                reports[i] = strdup(report);
        printf("%-20s %-16s %s\n", "probe", "element", "test report");
        for (int i = 1; i < s.graph.n; i++) {
            int p = s.graph.nodes[i].producer;
            if (reports[i])
                printf("%-20s %-16s %s\n", s.graph.nodes[i].pe->name,
                       p >= 0 ? s.graph.nodes[p].pe->name : "source", reports[i]);
        }
        /* The same JSON line on standard output and, with --json, in the file. */
        FILE *outs[2] = {stdout, json};
        for (int f = 0; f < 2 && outs[f]; f++) {
            fprintf(outs[f], "{\"pipeline\":\"%s\",\"checkpoint\":", o.pipe);
            if (o.checkpoint)
                fprintf(outs[f], "\"%s\"", o.checkpoint);
            else
                fprintf(outs[f], "null");
            fprintf(outs[f], ",\"random_init\":%s,\"train\":\"%s\",\"test\":\"%s\",\"epochs\":%d,\"probes\":{",
                    o.random_init ? "true" : "false", o.train, o.test, o.epochs);
            probes = 0;
            for (int i = 1; i < s.graph.n; i++) {
                int p = s.graph.nodes[i].producer;
                if (!reports[i])
                    continue;
                fprintf(outs[f], "%s\"%s\":{\"element\":\"%s\",\"report\":%s}", probes++ ? "," : "",
                        s.graph.nodes[i].pe->name, p >= 0 ? s.graph.nodes[p].pe->name : "source",
                        reports[i]);
            }
            fprintf(outs[f], "}}\n");
        }
        if (!probes)
            fprintf(stderr, "clapp: warning: the pipeline has no probe that reports anything\n");
        for (int i = 0; i < s.graph.n; i++)
            free(reports[i]);
        free(reports);
    }
out:
    if (json)
        fclose(json);
    cli_session_close(&s);
    free(o.sets);
    free(o.probes);
    return status;
}
