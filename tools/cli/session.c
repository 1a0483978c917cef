/* Setting up a pipeline over a manifest on core/ (clapp eval). */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void source_params_from(clapp_source_params *sp, const clapp_pipe_elem *pe,
                               const cli_options *o)
{
    clapp_source_params_from_values(sp, pe->values, pe->desc->n_params);
    sp->shuffle = o->shuffle || sp->shuffle;
    sp->seed = o->seed;
    sp->epochs = o->epochs;
}

/* (Re)open the data: manifest and source; the graph is kept. */
int cli_session_use_data(cli_session *s, const cli_options *o, const char *data, int epochs,
                         int force_stream)
{
    char err[2048] = "";
    clapp_source_params sp;
    int rc;

    clapp_source_destroy(s->src);
    s->src = NULL;
    clapp_manifest_free(&s->manifest);
    if (clapp_manifest_load(&s->manifest, data, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        return CLI_USAGE;
    }
    source_params_from(&sp, &s->pd.elems[0], o);
    sp.epochs = epochs;
    if (force_stream) {
        /* eval and extract read the media as they are: augmentation is for
         * self-supervised training only */
        sp.mode = CLAPP_SOURCE_STREAM;
        memset(&sp.aug, 0, sizeof sp.aug);
    }
    sp.classes = &s->classes;
    rc = clapp_source_create(&s->src, &sp, &s->manifest, &s->labels, &s->host);
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s: cannot set up the source (status %d)\n", data, rc);
        return CLI_FAILED;
    }
    return CLI_OK;
}

int cli_session_open(cli_session *s, const cli_options *o, int learn)
{
    char err[2048] = "";
    clapp_stream_info info;
    clapp_graph_params gp;
    int rc;

    memset(s, 0, sizeof *s);
    cli_host_init(&s->host, o->verbosity);
    clapp_labelset_init_cmu41(&s->labels);
    if (clapp_registry_init_default(&s->reg, &s->host) < 0) {
        fprintf(stderr, "clapp: error: cannot set up the element registry\n");
        return CLI_FAILED;
    }
    rc = cli_pipeline_load(&s->pd, o->pipe, o->sets, o->n_sets, o->probes, o->n_probes, &s->reg);
    if (rc != CLI_OK)
        return rc;
    if (s->pd.n < 1 || s->pd.elems[0].desc->kind != CLAPP_KIND_SOURCE) {
        fprintf(stderr, "clapp: error: %s:%d:%d: a pipeline starts with 'source'\n", s->pd.file,
                s->pd.n ? s->pd.elems[0].line : 1, s->pd.n ? s->pd.elems[0].col : 1);
        return CLI_USAGE;
    }
    if (o->dump_graph)
        return CLI_OK;
    if (!o->data) {
        fprintf(stderr, "clapp: error: no data: give --data MANIFEST\n");
        return CLI_USAGE;
    }
    rc = cli_session_use_data(s, o, o->data, o->epochs, 0);
    if (rc != CLI_OK)
        return rc;
    clapp_source_info(s->src, &info);
    clapp_graph_default_params(&gp);
    gp.learn = learn;
    gp.seed = o->seed;
    if (o->lr >= 0)
        gp.optim.lr = o->lr;
    if (learn) {
        gp.optim.eps = o->adam_eps;
        gp.optim.beta1 = o->adam_beta1;
        gp.optim.beta2 = o->adam_beta2;
        gp.optim.warmup = o->warmup;
        gp.optim.clip = o->clip;
        gp.optim.weight_decay = o->weight_decay;
        gp.optim.decoupled_wd = o->weight_decay > 0;   /* AdamW's; L2 only through the library */
        gp.diag_every = o->diag_every;
    }
    rc = clapp_graph_create(&s->graph, &s->pd, &info, &gp, &s->host, err, sizeof err);
    s->have_graph = 1;
    if (rc < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        return rc == CLAPP_E_NOMEM ? CLI_FAILED : CLI_USAGE;
    }
    return CLI_OK;
}

int cli_session_load(cli_session *s, const char *path, int with_optimizer)
{
    clapp_checkpoint_options co = {with_optimizer, 1};
    char err[2048] = "";
    if (clapp_checkpoint_load(&s->graph, path, &co, err, sizeof err) < 0) {
        fprintf(stderr, "clapp: error: %s\n", err);
        return CLI_USAGE;
    }
    return CLI_OK;
}

void cli_session_close(cli_session *s)
{
    if (s->have_graph)
        clapp_graph_destroy(&s->graph);
    clapp_source_destroy(s->src);
    clapp_labelset_free(&s->labels);
    clapp_labelset_free(&s->classes);
    clapp_manifest_free(&s->manifest);
    clapp_pipeline_free(&s->pd);
    clapp_registry_free(&s->reg);
}
